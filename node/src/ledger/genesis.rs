//! The ledger state at genesis.

use super::keys;
use super::params::ChainParams;
use super::state::Writes;
use aitbc_protocol::model::{Account, Genesis, Totals};
use aitbc_protocol::{Amount, Hash};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis has no validators; run `aitbc-node init --validators N`")]
    NoValidators,
    #[error("genesis allocations overflow the amount type")]
    SupplyOverflow,
    #[error("genesis lists address {0} twice")]
    DuplicateAllocation(String),
    #[error("genesis chain_id is empty")]
    NoChainId,
    #[error("marketplace_fee_bps {0} is above 10000 (100%)")]
    FeeTooHigh(u32),
    #[error("block_time_ms must be at least 10")]
    BlockTimeTooShort,
}

pub fn validate(g: &Genesis) -> Result<(), GenesisError> {
    if g.chain_id.trim().is_empty() {
        return Err(GenesisError::NoChainId);
    }
    if g.validators.is_empty() {
        return Err(GenesisError::NoValidators);
    }
    if g.marketplace_fee_bps > 10_000 {
        return Err(GenesisError::FeeTooHigh(g.marketplace_fee_bps));
    }
    if g.block_time_ms < 10 {
        return Err(GenesisError::BlockTimeTooShort);
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in &g.allocations {
        if !seen.insert(a.address) {
            return Err(GenesisError::DuplicateAllocation(a.address.to_string()));
        }
    }
    g.total_supply().ok_or(GenesisError::SupplyOverflow)?;
    Ok(())
}

/// Hash identifying a genesis: the state root before block 1.
pub fn genesis_hash(g: &Genesis) -> Hash {
    let json = serde_json::to_vec(g).expect("genesis encodes as JSON");
    Hash::domain("aitbc/genesis/v1", &[&json])
}

fn encoded<T: borsh::BorshSerialize>(value: &T) -> Option<Vec<u8>> {
    Some(borsh::to_vec(value).expect("borsh encoding into a Vec"))
}

/// The initial key-value state: allocations, totals, parameters and the initial state root.
pub fn initial_state(g: &Genesis) -> Result<Writes, GenesisError> {
    validate(g)?;
    let mut w: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for a in &g.allocations {
        let acct = Account {
            balance: a.amount,
            nonce: 0,
            escrowed: Amount::ZERO,
        };
        w.insert(keys::account(&a.address), encoded(&acct));
    }
    let totals = Totals {
        genesis_supply: g.total_supply().ok_or(GenesisError::SupplyOverflow)?,
        ..Default::default()
    };
    w.insert(keys::TOTALS.to_vec(), encoded(&totals));
    let balances = super::state::BalanceTotals {
        balances: totals.genesis_supply,
        accounts: g.allocations.len() as u64,
    };
    w.insert(keys::BALANCES.to_vec(), encoded(&balances));
    let params = ChainParams::from_genesis(g);
    w.insert(keys::PARAMS.to_vec(), encoded(&params));
    let root = genesis_hash(g);
    w.insert(keys::STATE_ROOT.to_vec(), encoded(&root));
    Ok(w)
}
