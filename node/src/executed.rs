//! Blocks this node has executed (as leader or as a validating replica) and not yet published:
//! what the committed-block feed needs, kept from execution so that a commit does not read the
//! block's transactions and receipts back from RocksDB and decode them again.
//!
//! Only an accelerator: the store holds the same data, and a block missing here (evicted, or
//! executed before a restart) is read back from it.

use aitbc_protocol::model::{BlockHeader, TxReceipt};
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::Hash;
use hotstuff_rs::types::data_types::CryptoHash;
use parking_lot::Mutex;
use std::collections::VecDeque;

/// A block's contents and the receipts its execution produced.
#[derive(Clone, Debug)]
pub struct ExecutedBlock {
    pub header: BlockHeader,
    pub txs: Vec<SignedTransaction>,
    pub tx_hashes: Vec<Hash>,
    pub receipts: Vec<TxReceipt>,
}

/// Executed blocks by data hash (which commits to the header, and through it to the
/// transactions and the state root), oldest first.
#[derive(Default)]
pub struct ExecutedBlocks(Mutex<VecDeque<(CryptoHash, ExecutedBlock)>>);

impl ExecutedBlocks {
    /// More blocks than wait for commit at once (HotStuff commits a block three views after it
    /// is proposed), with room for abandoned proposals.
    pub const CAPACITY: usize = 16;

    pub fn put(&self, data_hash: CryptoHash, block: ExecutedBlock) {
        let mut q = self.0.lock();
        if q.iter().any(|(h, _)| *h == data_hash) {
            return;
        }
        if q.len() >= Self::CAPACITY {
            q.pop_front();
        }
        q.push_back((data_hash, block));
    }

    /// Removes and returns the block with `data_hash`, if it is here.
    pub fn take(&self, data_hash: &CryptoHash) -> Option<ExecutedBlock> {
        let mut q = self.0.lock();
        let i = q.iter().position(|(h, _)| h == data_hash)?;
        q.remove(i).map(|(_, b)| b)
    }

    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
impl ExecutedBlock {
    /// A block at `height` of chain "test" with these transactions and receipts (the header's
    /// roots are not computed).
    pub(crate) fn for_test(
        height: u64,
        txs: Vec<SignedTransaction>,
        receipts: Vec<TxReceipt>,
    ) -> ExecutedBlock {
        ExecutedBlock {
            header: BlockHeader {
                chain_id: "test".into(),
                height,
                prev_hash: Hash::ZERO,
                time_ms: 0,
                proposer: aitbc_protocol::PublicKey([0; 32]),
                tx_root: Hash::ZERO,
                state_root: Hash::ZERO,
                tx_count: txs.len() as u32,
            },
            tx_hashes: txs.iter().map(|t| t.hash()).collect(),
            txs,
            receipts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(height: u64) -> ExecutedBlock {
        ExecutedBlock::for_test(height, vec![], vec![])
    }

    fn key(i: u8) -> CryptoHash {
        CryptoHash::new([i; 32])
    }

    #[test]
    fn take_returns_each_block_once() {
        let e = ExecutedBlocks::default();
        e.put(key(1), block(1));
        e.put(key(2), block(2));
        assert_eq!(e.take(&key(2)).map(|b| b.header.height), Some(2));
        assert!(e.take(&key(2)).is_none());
        assert_eq!(e.take(&key(1)).map(|b| b.header.height), Some(1));
        assert!(e.is_empty());
    }

    #[test]
    fn keeps_only_the_newest_blocks() {
        let e = ExecutedBlocks::default();
        for i in 0..(ExecutedBlocks::CAPACITY as u8 + 3) {
            e.put(key(i), block(i as u64));
        }
        assert_eq!(e.len(), ExecutedBlocks::CAPACITY);
        assert!(e.take(&key(0)).is_none(), "oldest evicted");
        assert!(e.take(&key(ExecutedBlocks::CAPACITY as u8 + 2)).is_some());
    }

    #[test]
    fn a_block_executed_twice_is_kept_once() {
        let e = ExecutedBlocks::default();
        e.put(key(7), block(7));
        e.put(key(7), block(7));
        assert_eq!(e.len(), 1);
    }
}
