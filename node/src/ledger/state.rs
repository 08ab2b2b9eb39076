//! Reading and buffering ledger state. The state machine reads through [`StateRead`] and writes
//! into an [`Overlay`]; nothing touches storage until a block commits.

use super::keys;
use aitbc_protocol::model::{Account, AgentRecord, Bid, Job, Listing, Totals};
use aitbc_protocol::{Address, Amount, PublicKey};
use borsh::{BorshDeserialize, BorshSerialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The sum of every account's balance and how many accounts there are, kept incrementally by
/// [`Overlay::balance_totals`] at the end of each block, so that the supply audit is one read
/// instead of a scan of every account. A chain whose genesis predates it has no such value and
/// keeps none (every validator agrees on that); its audit scans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
#[borsh(crate = "borsh")]
pub struct BalanceTotals {
    pub balances: Amount,
    pub accounts: u64,
}

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
    /// Undo log of the open checkpoint: each key's entry in `writes` before its first change.
    journal: Option<Vec<UndoEntry>>,
    /// Balance of each account as the base state holds it (`None`: no account), recorded on
    /// its first read, for [`Self::balance_totals`].
    base_balances: RefCell<BTreeMap<Vec<u8>, Option<Amount>>>,
}

/// A key and its entry in the overlay's writes before the first change since the checkpoint
/// (`None`: the overlay had no entry for it).
type UndoEntry = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A point to roll back to (see [`Overlay::checkpoint`]).
pub struct Checkpoint(());

pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

impl<'a, S: StateRead + ?Sized> Overlay<'a, S> {
    pub fn new(base: &'a S) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
            journal: None,
            base_balances: RefCell::new(BTreeMap::new()),
        }
    }
    pub fn into_writes(self) -> Writes {
        self.writes
    }
    /// Start of a transaction: everything written afterwards can be undone with [`Self::rollback`]
    /// (an undo log, so the cost is proportional to the transaction, not to the block).
    pub fn checkpoint(&mut self) -> Checkpoint {
        self.journal = Some(Vec::new());
        Checkpoint(())
    }
    /// Keeps everything written since the checkpoint.
    pub fn commit(&mut self, _: Checkpoint) {
        self.journal = None;
    }
    pub fn rollback(&mut self, _: Checkpoint) {
        for (key, before) in self.journal.take().unwrap_or_default().into_iter().rev() {
            match before {
                Some(v) => self.writes.insert(key, v),
                None => self.writes.remove(&key),
            };
        }
    }
    pub fn raw_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.base.get(key),
        }
    }
    pub fn raw_put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let before = self.writes.insert(key.clone(), Some(value));
        if let Some(j) = &mut self.journal {
            j.push((key, before));
        }
    }
    pub fn read<T: BorshDeserialize>(&self, key: &[u8]) -> Result<Option<T>, CorruptState> {
        decode(key, self.raw_get(key))
    }
    pub fn write<T: BorshSerialize>(&mut self, key: Vec<u8>, value: &T) {
        let bytes = borsh::to_vec(value).expect("borsh encoding into a Vec");
        self.raw_put(key, bytes);
    }

    pub fn account(&self, a: &Address) -> Result<Account, CorruptState> {
        let key = keys::account(a);
        if let Some(v) = self.writes.get(&key) {
            return Ok(decode::<Account>(&key, v.clone())?.unwrap_or_default());
        }
        let acct: Option<Account> = decode(&key, self.base.get(&key))?;
        self.base_balances
            .borrow_mut()
            .entry(key)
            .or_insert(acct.as_ref().map(|x| x.balance));
        Ok(acct.unwrap_or_default())
    }

    /// `before` updated by this overlay's account writes: each written account's balance now
    /// minus what the base state held (read once more only for an account written unread).
    pub fn balance_totals(&self, before: BalanceTotals) -> Result<BalanceTotals, CorruptState> {
        let corrupt = |reason: &str| CorruptState {
            key: String::from_utf8_lossy(keys::BALANCES).into_owned(),
            reason: reason.into(),
        };
        let (mut added, mut removed) = (0u128, 0u128);
        let mut accounts = before.accounts as i128;
        let base = self.base_balances.borrow();
        let prefix = keys::ACCOUNT;
        for (k, v) in self.writes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            let now: Option<Account> = decode(k, v.clone())?;
            let was = match base.get(k) {
                Some(b) => *b,
                None => decode::<Account>(k, self.base.get(k))?.map(|x| x.balance),
            };
            added = added
                .checked_add(now.as_ref().map_or(0, |x| x.balance.0))
                .ok_or_else(|| corrupt("balance total overflows"))?;
            removed = removed
                .checked_add(was.map_or(0, |x| x.0))
                .ok_or_else(|| corrupt("balance total overflows"))?;
            accounts += now.is_some() as i128 - was.is_some() as i128;
        }
        let balances = before
            .balances
            .0
            .checked_add(added)
            .and_then(|b| b.checked_sub(removed))
            .ok_or_else(|| corrupt("balance total out of range"))?;
        Ok(BalanceTotals {
            balances: Amount(balances),
            accounts: u64::try_from(accounts).map_err(|_| corrupt("negative account count"))?,
        })
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

pub fn decode<T: BorshDeserialize>(
    key: &[u8],
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, CorruptState> {
    match bytes {
        None => Ok(None),
        Some(b) => borsh::from_slice(&b).map(Some).map_err(|e| CorruptState {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_restores_exactly_the_writes_before_the_checkpoint() {
        let base: BTreeMap<Vec<u8>, Vec<u8>> =
            [(b"k1".to_vec(), b"base".to_vec())].into_iter().collect();
        let mut ov = Overlay::new(&base);
        ov.raw_put(b"k1".to_vec(), b"before".to_vec());
        let cp = ov.checkpoint();
        ov.raw_put(b"k1".to_vec(), b"during".to_vec());
        ov.raw_put(b"k2".to_vec(), b"new".to_vec());
        ov.raw_put(b"k1".to_vec(), b"again".to_vec());
        ov.rollback(cp);
        assert_eq!(ov.raw_get(b"k1"), Some(b"before".to_vec()));
        assert_eq!(ov.raw_get(b"k2"), None);
        let cp = ov.checkpoint();
        ov.raw_put(b"k2".to_vec(), b"kept".to_vec());
        ov.commit(cp);
        assert_eq!(
            ov.into_writes().get(b"k2".as_slice()),
            Some(&Some(b"kept".to_vec()))
        );
    }
}
