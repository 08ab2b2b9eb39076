//! `AIJob`: a customer's AI job, paid into escrow and run by a GPU agent.

use crate::common::{Condition, PendingTx};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kind of job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobType {
    #[default]
    Inference,
    Training,
}

/// A job paid by `wallet`: with `payment` locked in escrow, or drawing on an accepted `bid`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "aitbc.io",
    version = "v1alpha1",
    kind = "AIJob",
    root = "AiJob",
    namespaced,
    status = "AiJobStatus",
    shortname = "aijob",
    shortname = "aj",
    printcolumn = r#"{"name":"PHASE","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"AGENT","type":"string","jsonPath":".status.agent"}"#,
    printcolumn = r#"{"name":"PAYMENT","type":"string","jsonPath":".spec.payment"}"#,
    printcolumn = r#"{"name":"JOB-ID","type":"string","jsonPath":".status.jobId","priority":1}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!(has(self.listing) && has(self.listingId))").message("give at most one of listing and listingId"))]
#[x_kube(validation = Rule::new("has(self.payment) || has(self.bid)").message("give payment, or bid to draw on an accepted bid's escrow"))]
#[serde(rename_all = "camelCase")]
pub struct AiJobSpec {
    /// Customer Wallet in this namespace (pays, and receives refunds).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a job cannot change once created; delete it (cancels and refunds) and create another"))]
    pub wallet: String,
    /// ServiceListing in this namespace whose provider runs the job; any agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a job cannot change once created; delete it (cancels and refunds) and create another"))]
    pub listing: Option<String>,
    /// On-chain listing id instead of a ServiceListing name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^svc-[0-9a-f]{16}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a job cannot change once created; delete it (cancels and refunds) and create another"))]
    pub listing_id: Option<String>,
    /// Accepted Bid (this namespace) whose escrow pays for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a job cannot change once created; delete it (cancels and refunds) and create another"))]
    pub bid: Option<String>,
    #[serde(rename = "type", default)]
    pub job_type: JobType,
    /// AIT locked in escrow for the job (ignored, and may be omitted, with `bid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,30}(\.[0-9]{1,6})?$"), length(max = 37))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("a job cannot change once created; delete it (cancels and refunds) and create another"))]
    pub payment: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub prompt: String,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub model: String,
    /// GPUs the job needs.
    #[serde(default = "default_gpus")]
    #[schemars(range(min = 0, max = 64))]
    pub gpus: u32,
    /// GPU memory the job needs, MiB.
    #[serde(default, rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Wall-clock limit the agent enforces.
    #[serde(default = "default_time_limit")]
    #[schemars(range(min = 1, max = 604800))]
    pub time_limit_seconds: u64,
    /// Extra parameters handed to the runtime (e.g. `resolution: 1024x1024`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub params: BTreeMap<String, String>,
    /// Blocks until the job expires and may be refunded; the chain default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub deadline_blocks: Option<u64>,
}

fn default_gpus() -> u32 {
    1
}

fn default_time_limit() -> u64 {
    3600
}

/// Lifecycle of a job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AiJobPhase {
    /// Not yet on chain.
    #[default]
    Pending,
    /// Escrowed on chain, waiting for the scheduler.
    Submitted,
    /// An agent was assigned.
    Assigned,
    /// The agent runs it.
    Running,
    /// The agent reported success; the escrow is (being) paid to the provider.
    Succeeded,
    /// The job failed or could not be submitted.
    Failed,
    /// The escrow went back to the customer.
    Refunded,
    /// The customer withdrew the job.
    Cancelled,
}

impl AiJobPhase {
    /// No further change will happen.
    pub fn is_final(self) -> bool {
        matches!(self, AiJobPhase::Refunded | AiJobPhase::Cancelled)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: AiJobPhase,
    /// Agent id running (or that ran) the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Percent done, as the agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u32>,
    /// SHA-256 of the job's outputs, signed by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_digest: Option<String>,
    /// On-chain job id (`job-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_tx_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_tx_hash: Option<String>,
    /// Hash of the cancel-job or refund-job transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_tx_hash: Option<String>,
    /// AIT held in escrow for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<String>,
    /// Transaction in flight, recorded before it is submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_tx: Option<PendingTx>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
