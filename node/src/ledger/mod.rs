//! The ledger: state layout, the pure state transition, and genesis.

mod actions;
pub mod apply;
pub mod genesis;
pub mod keys;
pub mod params;
pub mod state;

#[cfg(test)]
mod tests;

pub use apply::{
    apply_block, apply_block_with_hashes, check_envelope, check_stateless, BlockContext,
    BlockOutcome, TxError,
};
pub use params::ChainParams;
pub use state::{StateRead, Writes};
