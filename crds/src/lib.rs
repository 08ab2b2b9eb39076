//! Custom resources of AITBC (`aitbc.io/v1alpha1`): `Node` (a chain), `Wallet`,
//! `ServiceListing`, `Bid` and `AIJob`, as kube `CustomResource` types with schemars schemas.
//!
//! The generated CRD YAML lives in `charts/aitbc/crds/` and is written by the `crdgen` binary;
//! a test keeps it in sync with these types.

pub mod aijob;
pub mod bid;
pub mod common;
pub mod gen;
pub mod listing;
pub mod node;
pub mod wallet;

pub use aijob::{AiJob, AiJobPhase, AiJobSpec, AiJobStatus, JobType};
pub use bid::{Bid, BidPhase, BidSpec, BidStatus};
pub use common::{Condition, ConditionStatus, PendingTx};
pub use listing::{
    AcceptPolicy, ListingPhase, ListingRuntime, ServiceListing, ServiceListingSpec,
    ServiceListingStatus, ServiceType,
};
pub use node::{Node, NodeSpec, NodeStatus};
pub use wallet::{Wallet, WalletSpec, WalletStatus};

/// API group of every AITBC resource.
pub const GROUP: &str = "aitbc.io";
/// API version of every AITBC resource.
pub const VERSION: &str = "v1alpha1";
/// Regular expression an AIT amount in a spec must match: digits with at most 6 decimals.
pub const AMOUNT_PATTERN: &str = r"^[0-9]{1,30}(\.[0-9]{1,6})?$";
/// Regular expression of a Kubernetes object name a spec refers to (DNS-1123 subdomain).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$";
