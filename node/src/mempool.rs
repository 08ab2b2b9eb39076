//! Pending transactions: bounded, deduplicated by hash, ordered per sender by nonce.

use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Address, Hash};
use foldhash::HashMap;
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// How far ahead of its committed nonce a sender may queue transactions.
pub const MAX_NONCE_GAP: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("the mempool is full ({0} transactions); retry shortly")]
    Full(usize),
    #[error("transaction {0} is already pending")]
    Duplicate(Hash),
    #[error("another transaction with nonce {0} from this sender is already pending")]
    NonceTaken(u64),
    #[error("nonce {got} is too far ahead of the account's next nonce {next}")]
    NonceGap { next: u64, got: u64 },
}

struct Entry {
    tx: SignedTransaction,
    seq: u64,
    /// When the transaction was admitted here.
    admitted: std::time::Instant,
    /// When the transaction was last sent to peers (admission counts as sent).
    gossiped: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<Hash, Entry>,
    by_sender: HashMap<Address, BTreeMap<u64, Hash>>,
    seq: u64,
}

pub struct Mempool {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Mempool {
    pub fn new(capacity: usize) -> Mempool {
        Mempool {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// Adds a transaction that passed the stateless checks; `committed_nonce` is the sender's
    /// next nonce in the committed state.
    pub fn insert(
        &self,
        tx: SignedTransaction,
        hash: Hash,
        committed_nonce: u64,
    ) -> Result<(), MempoolError> {
        let mut m = self.inner.lock();
        if m.by_hash.contains_key(&hash) {
            return Err(MempoolError::Duplicate(hash));
        }
        if m.by_hash.len() >= self.capacity {
            return Err(MempoolError::Full(self.capacity));
        }
        let nonce = tx.tx.nonce;
        if nonce > committed_nonce.saturating_add(MAX_NONCE_GAP) {
            return Err(MempoolError::NonceGap {
                next: committed_nonce,
                got: nonce,
            });
        }
        let sender = tx.tx.sender_address();
        if m.by_sender
            .get(&sender)
            .is_some_and(|q| q.contains_key(&nonce))
        {
            return Err(MempoolError::NonceTaken(nonce));
        }
        m.seq += 1;
        let seq = m.seq;
        m.by_sender.entry(sender).or_default().insert(nonce, hash);
        let now = std::time::Instant::now();
        m.by_hash.insert(
            hash,
            Entry {
                tx,
                seq,
                admitted: now,
                gossiped: now,
            },
        );
        Ok(())
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.inner.lock().by_hash.contains_key(hash)
    }

    pub fn get(&self, hash: &Hash) -> Option<SignedTransaction> {
        self.inner.lock().by_hash.get(hash).map(|e| e.tx.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded transactions pending for longer than `age` since they were last gossiped (at most
    /// `max`, oldest first); marks them gossiped now. A gossip message lost on a full peer queue
    /// is thus repeated instead of leaving the transaction stranded on one node.
    pub fn due_for_regossip(&self, age: std::time::Duration, max: usize) -> Vec<Vec<u8>> {
        let mut m = self.inner.lock();
        let now = std::time::Instant::now();
        let mut due: Vec<(u64, Hash)> = m
            .by_hash
            .iter()
            .filter(|(_, e)| now.duration_since(e.gossiped) >= age)
            .map(|(h, e)| (e.seq, *h))
            .collect();
        due.sort_unstable();
        due.truncate(max);
        due.into_iter()
            .filter_map(|(_, h)| {
                let e = m.by_hash.get_mut(&h)?;
                e.gossiped = now;
                Some(e.tx.encode())
            })
            .collect()
    }

    /// The next nonce a sender should use, counting its consecutive pending transactions.
    pub fn next_nonce(&self, sender: &Address, committed_nonce: u64) -> u64 {
        let m = self.inner.lock();
        let mut next = committed_nonce;
        if let Some(q) = m.by_sender.get(sender) {
            for n in q.range(committed_nonce..).map(|(n, _)| *n) {
                if n != next {
                    break;
                }
                next += 1;
            }
        }
        next
    }

    /// Picks up to `max` transactions for a block: per sender, the consecutive run starting at its
    /// next nonce in `nonce_of` (the state the block builds on); senders in arrival order.
    pub fn select(
        &self,
        max: usize,
        nonce_of: impl FnMut(&Address) -> u64,
    ) -> Vec<SignedTransaction> {
        self.select_aged(max, std::time::Duration::ZERO, nonce_of)
    }

    /// [`Self::select`], taking only transactions admitted at least `min_age` ago (a sender's
    /// run stops at its first younger one).
    pub fn select_aged(
        &self,
        max: usize,
        min_age: std::time::Duration,
        mut nonce_of: impl FnMut(&Address) -> u64,
    ) -> Vec<SignedTransaction> {
        let now = std::time::Instant::now();
        let m = self.inner.lock();
        let mut senders: Vec<(u64, &Address, &BTreeMap<u64, Hash>)> = m
            .by_sender
            .iter()
            .filter_map(|(a, q)| {
                q.values()
                    .next()
                    .and_then(|h| m.by_hash.get(h))
                    .map(|e| (e.seq, a, q))
            })
            .collect();
        senders.sort_by_key(|(seq, _, _)| *seq);
        let mut out = Vec::new();
        for (_, addr, q) in senders {
            let first = nonce_of(addr);
            // Take the run of consecutive nonces starting at `first`; stop at the first gap.
            for (expected, (n, h)) in (first..).zip(q.range(first..)) {
                if out.len() >= max || *n != expected {
                    break;
                }
                let Some(e) = m.by_hash.get(h) else { break };
                if now.duration_since(e.admitted) < min_age {
                    break;
                }
                out.push(e.tx.clone());
            }
            if out.len() >= max {
                break;
            }
        }
        out
    }

    /// Drops the given transactions (committed) and every pending one whose nonce is now used.
    pub fn remove_committed(
        &self,
        hashes: &[Hash],
        mut committed_nonce: impl FnMut(&Address) -> u64,
    ) {
        let mut m = self.inner.lock();
        let mut touched = Vec::new();
        for h in hashes {
            if let Some(e) = m.by_hash.remove(h) {
                let sender = e.tx.tx.sender_address();
                if let Some(q) = m.by_sender.get_mut(&sender) {
                    q.remove(&e.tx.tx.nonce);
                }
                touched.push(sender);
            }
        }
        touched.sort();
        touched.dedup();
        for sender in touched {
            let floor = committed_nonce(&sender);
            let stale: Vec<Hash> = match m.by_sender.get_mut(&sender) {
                Some(q) => {
                    let keep = q.split_off(&floor);
                    let stale = q.values().copied().collect();
                    *q = keep;
                    stale
                }
                None => vec![],
            };
            for h in stale {
                m.by_hash.remove(&h);
            }
            if m.by_sender.get(&sender).is_some_and(|q| q.is_empty()) {
                m.by_sender.remove(&sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::tx::{Action, Transaction};
    use aitbc_protocol::{Amount, Keypair};

    fn tx(k: &Keypair, nonce: u64) -> (SignedTransaction, Hash) {
        let s = Transaction {
            chain_id: "c".into(),
            sender: k.public(),
            nonce,
            fee: Amount(1),
            action: Action::Transfer {
                to: k.address(),
                amount: Amount(1),
            },
        }
        .sign(k);
        let h = s.hash();
        (s, h)
    }

    #[test]
    fn aged_selection_skips_what_just_arrived() {
        let m = Mempool::new(100);
        let k = Keypair::generate();
        let (stx, h) = tx(&k, 0);
        m.insert(stx, h, 0).unwrap();
        let long = std::time::Duration::from_secs(3600);
        assert!(m.select_aged(10, long, |_| 0).is_empty());
        assert_eq!(m.select_aged(10, std::time::Duration::ZERO, |_| 0).len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(
            m.select_aged(10, std::time::Duration::from_millis(5), |_| 0)
                .len(),
            1
        );
    }

    #[test]
    fn dedups_bounds_and_selects_consecutive_nonces() {
        let m = Mempool::new(3);
        let k = Keypair::generate();
        let (t0, h0) = tx(&k, 0);
        let (t2, h2) = tx(&k, 2);
        m.insert(t0.clone(), h0, 0).unwrap();
        assert_eq!(m.insert(t0, h0, 0), Err(MempoolError::Duplicate(h0)));
        m.insert(t2, h2, 0).unwrap();
        assert_eq!(
            m.select(10, |_| 0).len(),
            1,
            "nonce 1 missing: only nonce 0 is selectable"
        );
        assert_eq!(m.next_nonce(&k.address(), 0), 1);
        let (t1, h1) = tx(&k, 1);
        m.insert(t1, h1, 0).unwrap();
        assert_eq!(m.select(10, |_| 0).len(), 3);
        assert_eq!(
            m.select(10, |_| 1).len(),
            2,
            "selection starts at the state's nonce"
        );
        let (t3, h3) = tx(&k, 3);
        assert_eq!(m.insert(t3, h3, 0), Err(MempoolError::Full(3)));
        m.remove_committed(&[h0], |_| 2);
        assert_eq!(m.len(), 1, "committed and stale nonces dropped");
        assert!(m.contains(&h2));
        assert!(m
            .due_for_regossip(std::time::Duration::from_secs(60), 10)
            .is_empty());
        assert_eq!(m.due_for_regossip(std::time::Duration::ZERO, 10).len(), 1);
    }
}
