//! `ServiceListing`: a provider's service on the marketplace.

use crate::common::{Condition, PendingTx};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kind of service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceType {
    AiInference,
    AiTraining,
    GpuRental,
    DataProcessing,
}

/// How the provider accepts bids.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AcceptPolicy {
    /// Accept every bid whose amount is at least the price.
    #[default]
    Auto,
    /// Accept a Bid when it carries the annotation `aitbc.io/accept: "true"` (or by
    /// `aitbc-cli marketplace --action accept-bid`).
    Manual,
}

/// What runs the listing's jobs on a GPU agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListingRuntime {
    /// argv; empty means the agent's built-in demo runtime for the listing's type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Container image, when the agent runs jobs in containers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A service on the marketplace, owned by `wallet`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "aitbc.io",
    version = "v1alpha1",
    kind = "ServiceListing",
    namespaced,
    status = "ServiceListingStatus",
    shortname = "listing",
    shortname = "sl",
    printcolumn = r#"{"name":"TYPE","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"PRICE","type":"string","jsonPath":".spec.price"}"#,
    printcolumn = r#"{"name":"SERVICE-ID","type":"string","jsonPath":".status.serviceId"}"#,
    printcolumn = r#"{"name":"PHASE","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceListingSpec {
    /// Provider Wallet (same namespace) that owns the listing and is paid.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("the owning wallet cannot change"))]
    pub wallet: String,
    /// Name shown on the marketplace.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("type cannot change; create a new listing"))]
    pub service_type: ServiceType,
    /// Price in AIT, e.g. `25` or `0.5`.
    #[schemars(regex(pattern = r"^[0-9]{1,30}(\.[0-9]{1,6})?$"), length(max = 37))]
    pub price: String,
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub description: String,
    /// Free-form parameters shown to customers (e.g. `model: sdxl`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub runtime: ListingRuntime,
    #[serde(default)]
    pub accept_policy: AcceptPolicy,
}

/// Lifecycle of a listing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ListingPhase {
    #[default]
    Pending,
    Active,
    Closed,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceListingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: ListingPhase,
    /// On-chain listing id (`svc-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// Hash of the create-listing transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    /// Hash of the latest update-listing transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_tx_hash: Option<String>,
    /// Hash of the close-listing transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_tx_hash: Option<String>,
    /// Provider address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Transaction in flight, recorded before it is submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_tx: Option<PendingTx>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
