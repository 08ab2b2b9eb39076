//! Pending transactions: bounded, deduplicated by hash, ordered per sender by nonce.
//!
//! Every way a stranger could hold the pool is bounded, as in CometBFT's and reth's pools:
//! a total count and byte size; a cap per sender; a small nonce window past the sender's
//! executable run; a cap on transactions queued behind a gap (they pay no fee until the gap
//! fills) and their expiry; a sender must be able to pay the fees of everything it has pending;
//! and when the pool is full a transaction that pays more evicts the lowest-paying (oldest
//! first) sender's last one. Admission decides here under one lock; nothing here does I/O.

mod queue;
#[cfg(test)]
mod tests;

use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Address, Amount, Hash};
use foldhash::HashMap;
use parking_lot::Mutex;
use queue::SenderQueue;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The pool's bounds. [`MempoolLimits::default`] is what a node runs with unless configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Pending transactions in all.
    pub capacity: usize,
    /// Encoded bytes of all pending transactions (a transaction may be up to 64 KiB).
    pub max_bytes: usize,
    /// Pending transactions of one sender.
    pub per_sender: usize,
    /// How far past its executable run (committed nonce plus consecutive pending ones) a
    /// sender's nonce may be.
    pub nonce_window: u64,
    /// Transactions waiting behind a nonce gap, in all.
    pub max_queued: usize,
    /// How long a transaction may wait behind a gap before it is dropped.
    pub queued_ttl: Duration,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits::with_capacity(100_000)
    }
}

impl MempoolLimits {
    /// The default bounds for a pool of `capacity` transactions: 128 MiB, 512 per sender (a
    /// benchmark sender at 22,000 tx/s over 256 senders has ~100-200 pending), a window of 64
    /// nonces, a tenth of the pool for queued transactions, which expire after 30 s.
    pub fn with_capacity(capacity: usize) -> Self {
        MempoolLimits {
            capacity,
            max_bytes: 128 * 1024 * 1024,
            per_sender: 512,
            nonce_window: 64,
            max_queued: (capacity / 10).max(1),
            queued_ttl: Duration::from_secs(30),
        }
    }
}

/// Why a transaction was not admitted. Each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("the mempool is full ({0} transactions) of transactions paying at least this fee; retry shortly or raise the fee")]
    Full(usize),
    #[error("transaction {0} is already pending")]
    Duplicate(Hash),
    #[error("another transaction with nonce {0} from this sender is already pending")]
    NonceTaken(u64),
    #[error("nonce {got} is already used: the sender's next nonce is {next}")]
    Stale { next: u64, got: u64 },
    #[error("nonce {got} is too far ahead: this sender's next nonce is {next} and at most {window} may wait behind it; send the missing nonces first")]
    NonceGap { next: u64, got: u64, window: u64 },
    #[error("this sender already has {0} transactions pending; wait for some to commit")]
    SenderFull(usize),
    #[error(
        "{0} transactions are already waiting behind nonce gaps; send the missing nonces first"
    )]
    QueuedFull(usize),
    #[error("balance {balance} AIT cannot pay the fees of this sender's pending transactions ({pending} AIT) and this one ({fee} AIT)")]
    FeesUnaffordable {
        balance: Amount,
        pending: Amount,
        fee: Amount,
    },
}

impl MempoolError {
    /// A refusal that says the pool (not the transaction) is the problem: retry later.
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self,
            MempoolError::Full(_) | MempoolError::SenderFull(_) | MempoolError::QueuedFull(_)
        )
    }
}

/// What the sender's committed account says at admission.
#[derive(Clone, Copy, Debug)]
pub struct SenderState {
    pub nonce: u64,
    pub balance: Amount,
}

struct Entry {
    tx: SignedTransaction,
    seq: u64,
    bytes: usize,
    /// When the transaction was admitted here.
    admitted: Instant,
    /// When the transaction was last sent to peers (admission counts as sent).
    gossiped: Instant,
}

/// A sender's last pending transaction, ranked for eviction: lowest fee first, then oldest.
type EvictionKey = (Amount, u64, Hash);

#[derive(Default)]
struct Inner {
    by_hash: HashMap<Hash, Entry>,
    by_sender: HashMap<Address, SenderQueue>,
    /// The eviction key of every sender's tail (highest pending nonce): evicting a tail never
    /// opens a gap in a sender's run.
    tails: BTreeSet<EvictionKey>,
    seq: u64,
    bytes: usize,
    queued: usize,
}

pub struct Mempool {
    inner: Mutex<Inner>,
    limits: MempoolLimits,
}

impl Inner {
    fn tail_key(&self, sender: &Address) -> Option<EvictionKey> {
        let (_, h) = self.by_sender.get(sender)?.tail()?;
        let e = self.by_hash.get(&h)?;
        Some((e.tx.tx.fee, e.seq, h))
    }

    /// Runs `f` on a sender's queue, keeping the tail index, the queued count and the empty
    /// queues in step with it.
    fn with_sender<R>(&mut self, sender: Address, f: impl FnOnce(&mut SenderQueue) -> R) -> R {
        if let Some(k) = self.tail_key(&sender) {
            self.tails.remove(&k);
        }
        let q = self.by_sender.entry(sender).or_default();
        let before = q.queued();
        let r = f(q);
        let after = q.queued();
        let empty = q.nonces.is_empty();
        self.queued = (self.queued + after).saturating_sub(before);
        if empty {
            self.by_sender.remove(&sender);
        }
        if let Some(k) = self.tail_key(&sender) {
            self.tails.insert(k);
        }
        r
    }

    /// Removes a transaction from the pool entirely.
    fn remove(&mut self, hash: &Hash) -> Option<Entry> {
        let e = self.by_hash.get(hash)?;
        let (sender, nonce, fee) = (e.tx.tx.sender_address(), e.tx.tx.nonce, e.tx.tx.fee);
        // The tail key is read from `by_hash`, so the entry leaves it only afterwards.
        self.with_sender(sender, |q| q.remove(nonce, fee));
        let e = self.by_hash.remove(hash)?;
        self.bytes -= e.bytes;
        Some(e)
    }

    /// Raises a sender's committed floor and drops what it passed.
    fn raise_floor(&mut self, sender: Address, committed: u64) -> usize {
        let stale = self.with_sender(sender, |q| q.raise_floor(committed));
        for h in &stale {
            if let Some(e) = self.by_hash.remove(h) {
                self.bytes -= e.bytes;
                if let Some(q) = self.by_sender.get_mut(&sender) {
                    q.release_fee(e.tx.tx.fee);
                }
            }
        }
        stale.len()
    }

    fn is_full(&self, limits: &MempoolLimits, incoming: usize) -> bool {
        self.by_hash.len() >= limits.capacity || self.bytes + incoming > limits.max_bytes
    }

    /// Makes room for a transaction paying `fee` from `sender` by evicting the lowest-paying
    /// senders' last transactions, each paying strictly less (an equal fee cannot push out
    /// what arrived first, so a flood at the minimum fee cannot flush honest transactions).
    fn make_room(
        &mut self,
        limits: &MempoolLimits,
        sender: &Address,
        fee: Amount,
        bytes: usize,
    ) -> Result<Vec<Hash>, MempoolError> {
        let mut evicted = Vec::new();
        while self.is_full(limits, bytes) {
            let victim = self
                .tails
                .iter()
                .find(|(_, _, h)| {
                    self.by_hash
                        .get(h)
                        .is_some_and(|e| e.tx.tx.sender_address() != *sender)
                })
                .copied();
            match victim {
                Some((vfee, _, h)) if vfee < fee && evicted.len() < 64 => {
                    self.remove(&h);
                    evicted.push(h);
                }
                _ => return Err(MempoolError::Full(limits.capacity)),
            }
        }
        Ok(evicted)
    }
}

/// What an admission did besides adding the transaction.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Transactions evicted to make room.
    pub evicted: Vec<Hash>,
}

impl Mempool {
    pub fn new(capacity: usize) -> Mempool {
        Mempool::with_limits(MempoolLimits::with_capacity(capacity))
    }

    pub fn with_limits(limits: MempoolLimits) -> Mempool {
        Mempool {
            inner: Mutex::new(Inner::default()),
            limits,
        }
    }

    pub fn limits(&self) -> &MempoolLimits {
        &self.limits
    }

    /// Adds a transaction that passed the stateless checks and whose signature verified;
    /// `committed` is its sender's committed account.
    pub fn insert(
        &self,
        tx: SignedTransaction,
        hash: Hash,
        committed: SenderState,
    ) -> Result<Admitted, MempoolError> {
        let limits = &self.limits;
        let mut m = self.inner.lock();
        if m.by_hash.contains_key(&hash) {
            return Err(MempoolError::Duplicate(hash));
        }
        let sender = tx.tx.sender_address();
        let nonce = tx.tx.nonce;
        let fee = tx.tx.fee;
        m.raise_floor(sender, committed.nonce);
        let (next, taken, pending, pending_fees) = match m.by_sender.get(&sender) {
            Some(q) => (
                q.ready_end.max(committed.nonce),
                q.nonces.contains_key(&nonce),
                q.nonces.len(),
                q.fees,
            ),
            None => (committed.nonce, false, 0, Amount::ZERO),
        };
        if taken {
            return Err(MempoolError::NonceTaken(nonce));
        }
        if nonce < committed.nonce {
            return Err(MempoolError::Stale {
                next: committed.nonce,
                got: nonce,
            });
        }
        if nonce >= next.saturating_add(limits.nonce_window) {
            return Err(MempoolError::NonceGap {
                next,
                got: nonce,
                window: limits.nonce_window,
            });
        }
        if pending >= limits.per_sender {
            return Err(MempoolError::SenderFull(pending));
        }
        if nonce > next && m.queued >= limits.max_queued {
            return Err(MempoolError::QueuedFull(m.queued));
        }
        if pending_fees
            .checked_add(fee)
            .is_none_or(|all| all > committed.balance)
        {
            return Err(MempoolError::FeesUnaffordable {
                balance: committed.balance,
                pending: pending_fees,
                fee,
            });
        }
        let bytes = borsh::object_length(&tx).unwrap_or(aitbc_protocol::tx::MAX_TX_BYTES);
        let evicted = m.make_room(limits, &sender, fee, bytes)?;
        m.seq += 1;
        let now = Instant::now();
        let entry = Entry {
            tx,
            seq: m.seq,
            bytes,
            admitted: now,
            gossiped: now,
        };
        m.by_hash.insert(hash, entry);
        m.bytes += bytes;
        m.with_sender(sender, |q| {
            // A sender seen for the first time (or again after its queue emptied) starts at
            // its committed nonce, not at 0.
            q.raise_floor(committed.nonce);
            q.add(nonce, hash, fee)
        });
        Ok(Admitted { evicted })
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

    /// Encoded bytes of all pending transactions.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Transactions waiting behind a nonce gap.
    pub fn queued(&self) -> usize {
        self.inner.lock().queued
    }

    /// Drops transactions that have waited behind a gap for longer than the limit allows;
    /// returns how many.
    pub fn expire_queued(&self, now: Instant) -> usize {
        let ttl = self.limits.queued_ttl;
        let mut m = self.inner.lock();
        if m.queued == 0 {
            return 0;
        }
        let expired: Vec<Hash> = m
            .by_sender
            .values()
            .flat_map(|q| {
                q.queued_nonces()
                    .into_iter()
                    .filter_map(|n| q.nonces.get(&n).copied())
                    .collect::<Vec<_>>()
            })
            .filter(|h| {
                m.by_hash
                    .get(h)
                    .is_some_and(|e| now.saturating_duration_since(e.admitted) >= ttl)
            })
            .collect();
        for h in &expired {
            m.remove(h);
        }
        expired.len()
    }

    /// Drops transactions outright (e.g. ones a leader found it cannot include).
    pub fn remove(&self, hashes: &[Hash]) {
        let mut m = self.inner.lock();
        for h in hashes {
            m.remove(h);
        }
    }

    /// Encoded transactions pending for longer than `age` since they were last gossiped (at most
    /// `max`, oldest first); marks them gossiped now. A gossip message lost on a full peer queue
    /// is thus repeated instead of leaving the transaction stranded on one node.
    pub fn due_for_regossip(&self, age: Duration, max: usize) -> Vec<Vec<u8>> {
        let mut m = self.inner.lock();
        let now = Instant::now();
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
        m.by_sender
            .get(sender)
            .map_or(committed_nonce, |q| q.next_nonce(committed_nonce))
    }

    /// Picks up to `max` transactions for a block: per sender, the consecutive run starting at its
    /// next nonce in `nonce_of` (the state the block builds on); senders in arrival order.
    pub fn select(
        &self,
        max: usize,
        nonce_of: impl FnMut(&Address) -> u64,
    ) -> Vec<SignedTransaction> {
        self.select_aged(max, usize::MAX, Duration::ZERO, nonce_of)
    }

    /// [`Self::select`], taking only transactions admitted at least `min_age` ago (a sender's
    /// run stops at its first younger one) and at most `max_bytes` of them, encoded.
    pub fn select_aged(
        &self,
        max: usize,
        max_bytes: usize,
        min_age: Duration,
        mut nonce_of: impl FnMut(&Address) -> u64,
    ) -> Vec<SignedTransaction> {
        let now = Instant::now();
        let m = self.inner.lock();
        let mut senders: Vec<(u64, &Address, &SenderQueue)> = m
            .by_sender
            .iter()
            .filter_map(|(a, q)| {
                q.nonces
                    .values()
                    .next()
                    .and_then(|h| m.by_hash.get(h))
                    .map(|e| (e.seq, a, q))
            })
            .collect();
        senders.sort_by_key(|(seq, _, _)| *seq);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        'senders: for (_, addr, q) in senders {
            let first = nonce_of(addr);
            // Take the run of consecutive nonces starting at `first`; stop at the first gap.
            for (expected, (n, h)) in (first..).zip(q.nonces.range(first..)) {
                if out.len() >= max || *n != expected {
                    break;
                }
                let Some(e) = m.by_hash.get(h) else { break };
                if now.duration_since(e.admitted) < min_age {
                    break;
                }
                if bytes + e.bytes > max_bytes {
                    // Smaller transactions of other senders may still fit.
                    continue 'senders;
                }
                bytes += e.bytes;
                out.push(e.tx.clone());
            }
            if out.len() >= max {
                break;
            }
        }
        out
    }

    /// Drops a committed block's transactions (`hashes[i]` is `txs[i]`'s) and every pending one
    /// whose nonce is now used, for every sender in the block: also those whose committed
    /// transactions never reached this pool, so that what waited behind them counts as
    /// executable again.
    pub fn remove_committed(
        &self,
        txs: &[SignedTransaction],
        hashes: &[Hash],
        mut committed_nonce: impl FnMut(&Address) -> u64,
    ) {
        let mut senders: Vec<Address> = txs.iter().map(|t| t.tx.sender_address()).collect();
        senders.sort_unstable();
        senders.dedup();
        let mut m = self.inner.lock();
        for sender in senders {
            if m.by_sender.contains_key(&sender) {
                let floor = committed_nonce(&sender);
                m.raise_floor(sender, floor);
            }
        }
        for h in hashes {
            // Committed under a nonce the sender's floor has not passed (should not happen).
            m.remove(h);
        }
    }
}
