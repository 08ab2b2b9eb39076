//! Layout of the ledger's key space. Every key starts with a short prefix naming the object kind.

use aitbc_protocol::{Address, PublicKey};

pub const ACCOUNT: &[u8] = b"a/";
pub const LISTING: &[u8] = b"l/";
pub const BID: &[u8] = b"b/";
pub const JOB: &[u8] = b"j/";
pub const AGENT: &[u8] = b"g/";
/// `e/BID_ID` -> the lease of an accepted `gpu-rental` bid.
pub const LEASE: &[u8] = b"e/";
/// `r/HEIGHT(be)` -> the block's receipts, in transaction order (one value per block).
pub const BLOCK_RECEIPTS: &[u8] = b"r/";
pub const TOTALS: &[u8] = b"m/totals";
/// Sum of all account balances and the number of accounts, kept by every block (chains made
/// before it existed lack it; see `ledger::state::BalanceTotals`).
pub const BALANCES: &[u8] = b"m/balances";
pub const PARAMS: &[u8] = b"m/params";
pub const STATE_ROOT: &[u8] = b"m/state_root";

fn key(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + body.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(body);
    k
}

pub fn account(a: &Address) -> Vec<u8> {
    key(ACCOUNT, &a.0)
}
pub fn listing(id: &str) -> Vec<u8> {
    key(LISTING, id.as_bytes())
}
pub fn bid(id: &str) -> Vec<u8> {
    key(BID, id.as_bytes())
}
pub fn job(id: &str) -> Vec<u8> {
    key(JOB, id.as_bytes())
}
pub fn lease(bid_id: &str) -> Vec<u8> {
    key(LEASE, bid_id.as_bytes())
}
pub fn agent(k: &PublicKey) -> Vec<u8> {
    key(AGENT, &k.0)
}
pub fn block_receipts(height: u64) -> Vec<u8> {
    key(BLOCK_RECEIPTS, &height.to_be_bytes())
}
