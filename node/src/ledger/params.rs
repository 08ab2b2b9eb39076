//! Chain parameters fixed at genesis and stored in the state.

use aitbc_protocol::model::Genesis;
use aitbc_protocol::{Address, Amount};
use borsh::{BorshDeserialize, BorshSerialize};

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
#[borsh(crate = "borsh")]
pub struct ChainParams {
    pub chain_id: String,
    pub min_fee: Amount,
    pub marketplace_fee_bps: u32,
    pub default_job_deadline_blocks: u64,
    pub schedulers: Vec<Address>,
    pub max_block_txs: u32,
    /// Genesis block time: the unit of `SubmitJob::deadline_blocks`, turned into BFT time.
    pub block_time_ms: u64,
    /// How long after a job's deadline (BFT time) `ReportResult` is still accepted; a job
    /// without a result is refundable only after it.
    pub result_grace_ms: u64,
    /// Slack the default deadline leaves beyond a job's time limit (queueing, start-up).
    pub deadline_slack_ms: u64,
}

/// Grace for results after a job's deadline (the protocol's, which the scheduler reads too).
pub const RESULT_GRACE_MS: u64 = aitbc_protocol::model::RESULT_GRACE_MS;
/// Slack of the default deadline beyond the job's time limit.
pub const DEADLINE_SLACK_MS: u64 = 60_000;

impl ChainParams {
    pub fn from_genesis(g: &Genesis) -> ChainParams {
        ChainParams {
            chain_id: g.chain_id.clone(),
            min_fee: g.min_fee,
            marketplace_fee_bps: g.marketplace_fee_bps,
            default_job_deadline_blocks: g.default_job_deadline_blocks,
            schedulers: g.schedulers.clone(),
            max_block_txs: 4000,
            block_time_ms: g.block_time_ms.max(1),
            result_grace_ms: RESULT_GRACE_MS,
            deadline_slack_ms: DEADLINE_SLACK_MS,
        }
    }
}
