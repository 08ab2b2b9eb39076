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
}

impl ChainParams {
    pub fn from_genesis(g: &Genesis) -> ChainParams {
        ChainParams {
            chain_id: g.chain_id.clone(),
            min_fee: g.min_fee,
            marketplace_fee_bps: g.marketplace_fee_bps,
            default_job_deadline_blocks: g.default_job_deadline_blocks,
            schedulers: g.schedulers.clone(),
            max_block_txs: 4000,
        }
    }
}
