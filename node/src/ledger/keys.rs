//! Layout of the ledger's key space. Every key starts with a short prefix naming the object kind.

use aitbc_protocol::{Address, Hash, PublicKey};

pub const ACCOUNT: &[u8] = b"a/";
pub const LISTING: &[u8] = b"l/";
pub const BID: &[u8] = b"b/";
pub const JOB: &[u8] = b"j/";
pub const AGENT: &[u8] = b"g/";
pub const RECEIPT: &[u8] = b"r/";
pub const HISTORY: &[u8] = b"h/";
pub const TOTALS: &[u8] = b"m/totals";
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
pub fn agent(k: &PublicKey) -> Vec<u8> {
    key(AGENT, &k.0)
}
pub fn receipt(tx: &Hash) -> Vec<u8> {
    key(RECEIPT, &tx.0)
}
/// `h/ADDRESS HEIGHT(be) INDEX(be)` -> tx hash: an account's history in block order.
pub fn history(a: &Address, height: u64, index: u32) -> Vec<u8> {
    let mut k = key(HISTORY, &a.0);
    k.extend_from_slice(&height.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}
pub fn history_prefix(a: &Address) -> Vec<u8> {
    key(HISTORY, &a.0)
}
