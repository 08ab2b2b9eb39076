//! `Bid`: an escrowed offer on a listing.

use crate::common::{Condition, PendingTx};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Annotation a provider sets on a Bid to accept it under a `manual` accept policy.
pub const ACCEPT_ANNOTATION: &str = "aitbc.io/accept";

/// A bid of `amount` AIT from `wallet` on a listing: a ServiceListing of this namespace
/// (`listing`) or any on-chain listing (`listingId`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "aitbc.io",
    version = "v1alpha1",
    kind = "Bid",
    namespaced,
    status = "BidStatus",
    shortname = "aitbcbid",
    printcolumn = r#"{"name":"LISTING","type":"string","jsonPath":".spec.listing"}"#,
    printcolumn = r#"{"name":"AMOUNT","type":"string","jsonPath":".spec.amount"}"#,
    printcolumn = r#"{"name":"PHASE","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"BID-ID","type":"string","jsonPath":".status.bidId","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.listing) != has(self.listingId)").message("give exactly one of listing (a ServiceListing name) and listingId (an on-chain id)"))]
#[serde(rename_all = "camelCase")]
pub struct BidSpec {
    /// ServiceListing in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a bid cannot change once placed; delete it (cancels and refunds) and create another"))]
    pub listing: Option<String>,
    /// On-chain listing id (`svc-…`), for listings not managed in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^svc-[0-9a-f]{16}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a bid cannot change once placed; delete it (cancels and refunds) and create another"))]
    pub listing_id: Option<String>,
    /// Bidding Wallet in this namespace; the amount is locked in escrow from it.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a bid cannot change once placed; delete it (cancels and refunds) and create another"))]
    pub wallet: String,
    /// AIT; at least the listing's price.
    #[schemars(regex(pattern = r"^[0-9]{1,30}(\.[0-9]{1,6})?$"), length(max = 37))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a bid cannot change once placed; delete it (cancels and refunds) and create another"))]
    pub amount: String,
}

/// Lifecycle of a bid (mirrors the chain's bid status).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum BidPhase {
    /// Not yet on chain.
    #[default]
    Pending,
    /// Escrowed on chain, waiting for the provider.
    Placed,
    Accepted,
    Rejected,
    Cancelled,
    /// The escrow was paid to the provider.
    Settled,
    /// The escrow moved into an AIJob.
    UsedByJob,
    /// The bid could not be placed (see conditions).
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BidStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: BidPhase,
    /// On-chain bid id (`bid-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_id: Option<String>,
    /// On-chain listing id the bid is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_id: Option<String>,
    /// Transaction hashes by action (`place-bid`, `accept-bid`, `cancel-bid`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tx_hashes: BTreeMap<String, String>,
    /// Transaction in flight, recorded before it is submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_tx: Option<PendingTx>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
