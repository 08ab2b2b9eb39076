//! Reading and buffering ledger state. The state machine reads through [`StateRead`] and writes
//! into an [`Overlay`]; nothing touches storage until a block commits.

use super::keys;
use aitbc_protocol::model::{Account, AgentRecord, Bid, Job, Listing, Totals};
use aitbc_protocol::{Address, PublicKey};
use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeMap;

/// Read access to a consistent version of the ledger state.
pub trait StateRead {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

impl StateRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}

/// Failure to decode a stored value: the store is corrupt or from another version.
#[derive(Debug, thiserror::Error)]
#[error("stored value under key {key} does not decode: {reason}")]
pub struct CorruptState {
    pub key: String,
    pub reason: String,
}

/// Writes buffered over a base state; `None` marks a deletion. Ordered, so that iteration (and
/// thus the state root) is deterministic.
pub struct Overlay<'a, S: StateRead + ?Sized> {
    base: &'a S,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

impl<'a, S: StateRead + ?Sized> Overlay<'a, S> {
    pub fn new(base: &'a S) -> Self {
        Overlay { base, writes: BTreeMap::new() }
    }
    pub fn into_writes(self) -> Writes {
        self.writes
    }
    /// Start of a transaction: everything written afterwards can be undone with [`Self::rollback`].
    pub fn checkpoint(&self) -> Writes {
        self.writes.clone()
    }
    pub fn rollback(&mut self, checkpoint: Writes) {
        self.writes = checkpoint;
    }
    pub fn raw_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.base.get(key),
        }
    }
    pub fn raw_put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
    pub fn read<T: BorshDeserialize>(&self, key: &[u8]) -> Result<Option<T>, CorruptState> {
        decode(key, self.raw_get(key))
    }
    pub fn write<T: BorshSerialize>(&mut self, key: Vec<u8>, value: &T) {
        let bytes = borsh::to_vec(value).expect("borsh encoding into a Vec");
        self.raw_put(key, bytes);
    }

    pub fn account(&self, a: &Address) -> Result<Account, CorruptState> {
        Ok(self.read(&keys::account(a))?.unwrap_or_default())
    }
    pub fn put_account(&mut self, a: &Address, acct: &Account) {
        self.write(keys::account(a), acct)
    }
    pub fn listing(&self, id: &str) -> Result<Option<Listing>, CorruptState> {
        self.read(&keys::listing(id))
    }
    pub fn put_listing(&mut self, l: &Listing) {
        self.write(keys::listing(&l.id), l)
    }
    pub fn bid(&self, id: &str) -> Result<Option<Bid>, CorruptState> {
        self.read(&keys::bid(id))
    }
    pub fn put_bid(&mut self, b: &Bid) {
        self.write(keys::bid(&b.id), b)
    }
    pub fn job(&self, id: &str) -> Result<Option<Job>, CorruptState> {
        self.read(&keys::job(id))
    }
    pub fn put_job(&mut self, j: &Job) {
        self.write(keys::job(&j.id), j)
    }
    pub fn agent(&self, k: &PublicKey) -> Result<Option<AgentRecord>, CorruptState> {
        self.read(&keys::agent(k))
    }
    pub fn put_agent(&mut self, a: &AgentRecord) {
        self.write(keys::agent(&a.key), a)
    }
    pub fn totals(&self) -> Result<Totals, CorruptState> {
        Ok(self.read(keys::TOTALS)?.unwrap_or_default())
    }
    pub fn put_totals(&mut self, t: &Totals) {
        self.write(keys::TOTALS.to_vec(), t)
    }
}

pub fn decode<T: BorshDeserialize>(key: &[u8], bytes: Option<Vec<u8>>) -> Result<Option<T>, CorruptState> {
    match bytes {
        None => Ok(None),
        Some(b) => borsh::from_slice(&b)
            .map(Some)
            .map_err(|e| CorruptState { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() }),
    }
}
