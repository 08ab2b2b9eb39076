//! `Node`: one AITBC chain, run as a StatefulSet of `aitbc-node` validators (and listeners).

use crate::common::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Image used when `spec.image` is empty: the chain node of this release.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/aitbc/aitbc-node:", env!("CARGO_PKG_VERSION"));

/// A chain: `validators` BFT validators (tolerating `(validators-1)/3` faults), plus listener
/// nodes up to `replicas`, with a genesis the operator generates once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "aitbc.io",
    version = "v1alpha1",
    kind = "Node",
    namespaced,
    status = "NodeStatus",
    shortname = "chainnode",
    shortname = "chainnodes",
    printcolumn = r#"{"name":"REPLICAS","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"READY","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"HEIGHT","type":"integer","jsonPath":".status.height"}"#,
    printcolumn = r#"{"name":"CHAIN","type":"string","jsonPath":".status.chainId","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.replicas) || self.replicas >= self.validators").message("replicas must be at least validators (pods beyond the validators run as listener nodes)"))]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Number of BFT validators, fixed at genesis. 4 tolerates one faulty validator.
    #[schemars(range(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("validators is fixed at genesis and cannot change"))]
    pub validators: i32,
    /// Pods to run; those past `validators` are listener nodes. Defaults to `validators`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 128))]
    pub replicas: Option<i32>,
    /// Container image of aitbc-node; defaults to the release's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Chain id; defaults to `aitbc-<namespace>-<name>`. Fixed at genesis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][-a-z0-9]{0,62}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("chainId is fixed at genesis and cannot change"))]
    pub chain_id: Option<String>,
    /// Target block time in milliseconds (fixed at genesis).
    #[serde(default = "default_block_time_ms")]
    #[schemars(range(min = 50, max = 60000))]
    pub block_time_ms: u64,
    #[serde(default)]
    pub storage: NodeStorage,
    /// Compute resources of each node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<NodeResources>,
    #[serde(default)]
    pub genesis: NodeGenesis,
    /// The NetworkPolicy the operator renders for the chain's pods: only the chain's own pods
    /// reach the peer port; the RPC and HTTP ports take clients from the Node's namespace, the
    /// operator's namespace and namespaces or pods labelled `aitbc.io/chain-client: "true"`.
    #[serde(default)]
    pub network_policy: NodeNetworkPolicy,
}

fn default_block_time_ms() -> u64 {
    500
}

/// Whether the operator renders the chain's NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetworkPolicy {
    /// On by default (needs a CNI that enforces NetworkPolicy to have an effect).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for NodeNetworkPolicy {
    fn default() -> Self {
        NodeNetworkPolicy { enabled: true }
    }
}

fn default_true() -> bool {
    true
}

/// Persistent volume of each node (one PVC per pod, `data-<name>-<i>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStorage {
    /// Volume size, a Kubernetes quantity such as `10Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    pub size: String,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for NodeStorage {
    fn default() -> Self {
        NodeStorage {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".into()
}

/// Requests and limits of the node container (`cpu`, `memory`, …) as quantities.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// What goes into the genesis the operator writes once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGenesis {
    /// Balances at genesis, e.g. `{name: genesis-ops, wallet: genesis-ops, amount: "1000000"}`.
    #[serde(default)]
    pub allocations: Vec<GenesisAllocation>,
    /// Smallest transaction fee in AIT (default 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,30}(\.[0-9]{1,6})?$"), length(max = 37))]
    pub min_fee: Option<String>,
    /// Marketplace fee burned at settlement, in basis points (default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10000))]
    pub marketplace_fee_bps: Option<u32>,
    /// Default job deadline in blocks (default 7200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub job_deadline_blocks: Option<u64>,
    /// Scheduler addresses allowed to assign jobs, besides the operator's own scheduler key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_schedulers: Vec<String>,
}

/// A genesis balance, for a `Wallet` of this namespace (its key Secret is created if needed)
/// or for a literal address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.wallet) != has(self.address)").message("give exactly one of wallet and address"))]
#[serde(rename_all = "camelCase")]
pub struct GenesisAllocation {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Name of a Wallet resource in the Node's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<String>,
    /// A chain address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// AIT, e.g. `1000000` or `0.5`.
    #[schemars(regex(pattern = r"^[0-9]{1,30}(\.[0-9]{1,6})?$"), length(max = 37))]
    pub amount: String,
}

/// Observed state of a chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods desired.
    #[serde(default)]
    pub replicas: i32,
    /// Pods passing /readyz.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Latest committed height reported by the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Validator public keys (hex), in genesis order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<String>,
    /// The gRPC endpoint of the chain inside the cluster (`http://<name>.<ns>.svc:9100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Image the StatefulSet runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
