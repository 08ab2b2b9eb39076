//! One sender's pending transactions: its nonces, the run of them that can execute now, and the
//! fees they commit it to. Pure bookkeeping; the pool ([`super::Mempool`]) holds the entries.

use aitbc_protocol::{Amount, Hash};
use std::collections::BTreeMap;

#[derive(Default)]
pub(super) struct SenderQueue {
    /// Pending transactions by nonce.
    pub nonces: BTreeMap<u64, Hash>,
    /// The sender's next nonce in the committed state, as last seen; nonces below it are stale.
    pub floor: u64,
    /// The first nonce after the consecutive run that starts at `floor`: transactions from
    /// `floor` up to here can execute in order; those at or above it wait behind a gap (queued).
    pub ready_end: u64,
    /// Sum of the pending transactions' fees.
    pub fees: Amount,
}

impl SenderQueue {
    /// Moves the committed floor up to `committed` and returns the hashes of the transactions
    /// whose nonces it passed (committed, or replaced by another transaction with the same
    /// nonce): the caller drops them and releases their fees.
    pub fn raise_floor(&mut self, committed: u64) -> Vec<Hash> {
        if committed <= self.floor && self.ready_end >= self.floor {
            return vec![];
        }
        self.floor = self.floor.max(committed);
        let keep = self.nonces.split_off(&self.floor);
        let stale = std::mem::replace(&mut self.nonces, keep);
        self.ready_end = self.ready_end.max(self.floor);
        self.advance_ready();
        stale.into_values().collect()
    }

    fn advance_ready(&mut self) {
        while self.nonces.contains_key(&self.ready_end) {
            self.ready_end += 1;
        }
    }

    /// How many of the sender's transactions wait behind a gap.
    pub fn queued(&self) -> usize {
        self.nonces.range(self.ready_end..).count()
    }

    /// The highest pending nonce (whose transaction is the sender's eviction candidate).
    pub fn tail(&self) -> Option<(u64, Hash)> {
        self.nonces.last_key_value().map(|(n, h)| (*n, *h))
    }

    pub fn add(&mut self, nonce: u64, hash: Hash, fee: Amount) {
        self.nonces.insert(nonce, hash);
        self.fees = Amount(self.fees.0.saturating_add(fee.0));
        self.advance_ready();
    }

    /// Takes a dropped transaction's fee off the sender's commitments.
    pub fn release_fee(&mut self, fee: Amount) {
        self.fees = Amount(self.fees.0.saturating_sub(fee.0));
    }

    /// Forgets `nonce`. Removing one inside the executable run turns the rest into a queue.
    pub fn remove(&mut self, nonce: u64, fee: Amount) -> Option<Hash> {
        let h = self.nonces.remove(&nonce)?;
        self.release_fee(fee);
        if nonce >= self.floor && nonce < self.ready_end {
            self.ready_end = nonce;
        }
        Some(h)
    }

    /// The nonces waiting behind a gap.
    pub fn queued_nonces(&self) -> Vec<u64> {
        self.nonces
            .range(self.ready_end..)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The sender's next nonce counting its consecutive pending transactions from `committed`.
    pub fn next_nonce(&self, committed: u64) -> u64 {
        let mut next = committed;
        for n in self.nonces.range(committed..).map(|(n, _)| *n) {
            if n != next {
                break;
            }
            next += 1;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> Hash {
        Hash([i; 32])
    }

    #[test]
    fn the_executable_run_follows_gaps_and_commits() {
        let mut q = SenderQueue::default();
        q.add(0, h(0), Amount(1));
        q.add(2, h(2), Amount(1));
        assert_eq!((q.ready_end, q.queued()), (1, 1), "nonce 2 waits for 1");
        q.add(1, h(1), Amount(1));
        assert_eq!((q.ready_end, q.queued()), (3, 0));
        assert_eq!(q.fees, Amount(3));
        assert_eq!(q.raise_floor(2), vec![h(0), h(1)]);
        assert_eq!((q.floor, q.ready_end, q.nonces.len()), (2, 3, 1));
        q.add(4, h(4), Amount(1));
        assert_eq!(q.queued_nonces(), vec![4]);
        assert_eq!(q.remove(2, Amount(1)), Some(h(2)));
        assert_eq!(q.ready_end, 2, "removing the head queues the rest");
        assert_eq!(q.queued(), 1);
    }
}
