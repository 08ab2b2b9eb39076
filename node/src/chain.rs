//! The node's view of its committed chain: reads for the API, the committed-block feed, and the
//! glue that keeps the mempool in step with what committed.

use crate::block;
use crate::executed::{ExecutedBlock, ExecutedBlocks};
use crate::index::{Indexer, TxIndex};
use crate::ledger::{self, keys, ChainParams, StateRead};
use crate::mempool::Mempool;
use crate::metrics::NodeMetrics;
use crate::store::RocksStore;
use crate::verifier::BatchVerifier;
use aitbc_protocol::model::{Account, TxReceipt};
use aitbc_protocol::{Address, Hash};
use hotstuff_rs::block_tree::accessors::public::BlockTreeCamera;
use hotstuff_rs::types::data_types::{BlockHeight, CryptoHash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// A committed block: its hash, decoded contents and receipts.
#[derive(Clone, Debug)]
pub struct CommittedBlock {
    pub hash: Hash,
    pub contents: ExecutedBlock,
}

/// Committed state read straight from RocksDB.
pub struct CommittedState<'a>(pub &'a RocksStore);

impl StateRead for CommittedState<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get_committed(key)
    }
}

/// Committed blocks the feed holds for subscribers that are behind.
const FEED_BLOCKS: usize = 64;

/// Signatures verified together at most (a larger request is still one batch).
const VERIFY_BATCH: usize = 1024;

pub struct Chain {
    pub store: RocksStore,
    pub params: ChainParams,
    pub mempool: Arc<Mempool>,
    pub metrics: Arc<NodeMetrics>,
    camera: BlockTreeCamera<RocksStore>,
    feed: broadcast::Sender<Arc<CommittedBlock>>,
    /// Height of the last block the feed has published, plus one (0 = none yet).
    published: AtomicU64,
    pub syncing: AtomicBool,
    /// Blocks executed by consensus and not yet published (shared with the `App`).
    pub executed: Arc<ExecutedBlocks>,
    /// Verifies the signatures of transactions offered for admission, batched across requests.
    pub verifier: BatchVerifier,
    /// Committed accounts read since the last commit (admission reads each sender many times).
    accounts: AccountCache,
    /// Receipts by transaction hash and account histories, written as blocks are published.
    pub index: Indexer,
}

/// Committed accounts, emptied on every commit. A value read from the store is kept only if no
/// commit happened while it was being read, so the cache never holds a state older than the
/// last commit it saw.
#[derive(Default)]
struct AccountCache(parking_lot::Mutex<(u64, foldhash::HashMap<Address, Account>)>);

impl AccountCache {
    const CAPACITY: usize = 1 << 16;

    /// The cached account, or the cache's version to [`Self::put`] what the store holds.
    fn get(&self, a: &Address) -> Result<Account, u64> {
        let c = self.0.lock();
        c.1.get(a).cloned().ok_or(c.0)
    }

    fn put(&self, version: u64, a: Address, acct: Account) {
        let mut c = self.0.lock();
        if c.0 != version {
            return;
        }
        if c.1.len() >= Self::CAPACITY {
            c.1.clear();
        }
        c.1.insert(a, acct);
    }

    fn invalidate(&self) {
        let mut c = self.0.lock();
        c.0 += 1;
        c.1.clear();
    }
}

impl Chain {
    pub fn new(
        store: RocksStore,
        index: TxIndex,
        params: ChainParams,
        mempool: Arc<Mempool>,
        metrics: Arc<NodeMetrics>,
    ) -> Chain {
        // A subscriber that stops reading keeps the blocks of the channel alive until they are
        // overwritten: 64 blocks (~64 MiB full) rather than 1,024. A subscriber that falls
        // further behind catches up from storage (`SubscribeBlocks` replays on lag).
        let (feed, _) = broadcast::channel(FEED_BLOCKS);
        let camera = BlockTreeCamera::new(store.clone());
        let chain = Chain {
            store,
            params,
            mempool,
            metrics,
            camera,
            feed,
            published: AtomicU64::new(0),
            syncing: AtomicBool::new(false),
            executed: Arc::new(ExecutedBlocks::default()),
            accounts: AccountCache::default(),
            index: Indexer::start(index),
            verifier: BatchVerifier::start(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
                VERIFY_BATCH,
            ),
        };
        if let Err(e) = chain.catch_up_index() {
            index_write_failed(e);
        }
        let next = chain.committed_height().map(|h| h + 1).unwrap_or(0);
        chain.published.store(next, Ordering::SeqCst);
        chain
            .metrics
            .height
            .set(chain.committed_height().unwrap_or(0));
        chain
    }

    /// Indexes the blocks that committed after the last one indexed (the node stopped in
    /// between), after emptying an index that is ahead of the chain (its database was replaced).
    fn catch_up_index(&self) -> Result<(), rocksdb::Error> {
        let top = self.committed_height();
        let index = self.index.index();
        if index.next_height()? > top.map_or(0, |t| t + 1) {
            tracing::warn!("the transaction index is ahead of the chain database; rebuilding it");
            index.clear()?;
        }
        let Some(top) = top else { return Ok(()) };
        let n = index.catch_up(top, |h| self.block_at(h).map(|b| b.contents))?;
        if n > 0 {
            tracing::info!(blocks = n, top, "indexed committed blocks");
        }
        Ok(())
    }

    pub fn read<T: borsh::BorshDeserialize>(&self, key: &[u8]) -> Option<T> {
        ledger::state::decode(key, self.store.get_committed(key))
            .ok()
            .flatten()
    }

    /// The committed account (from the cache of accounts read since the last commit).
    pub fn account(&self, a: &Address) -> Account {
        let version = match self.accounts.get(a) {
            Ok(acct) => return acct,
            Err(version) => version,
        };
        let acct: Account = self.read(&keys::account(a)).unwrap_or_default();
        self.accounts.put(version, *a, acct.clone());
        acct
    }

    pub fn committed_state(&self) -> CommittedState<'_> {
        CommittedState(&self.store)
    }

    /// Height of the highest committed block, if any block committed yet.
    pub fn committed_height(&self) -> Option<u64> {
        let snap = self.camera.snapshot();
        let hash = snap.highest_committed_block().ok().flatten()?;
        snap.block_height(&hash).ok().flatten().map(|h| h.int())
    }

    pub fn view(&self) -> u64 {
        self.camera
            .snapshot()
            .highest_view_entered()
            .map(|v| v.int())
            .unwrap_or(0)
    }

    pub fn validators(&self) -> Vec<aitbc_protocol::PublicKey> {
        self.camera
            .snapshot()
            .committed_validator_set()
            .map(|vs| {
                vs.validators()
                    .map(|v| aitbc_protocol::PublicKey(v.to_bytes()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hash of the committed block at `height`.
    fn committed_hash_at(&self, height: u64) -> Option<CryptoHash> {
        if self.committed_height().is_none_or(|top| height > top) {
            return None;
        }
        self.camera
            .snapshot()
            .block_at_height(BlockHeight::new(height))
            .ok()
            .flatten()
    }

    /// The committed block at `height`, decoded, with its receipts.
    pub fn block_at(&self, height: u64) -> Option<CommittedBlock> {
        self.block_by_hash(&self.committed_hash_at(height)?)
    }

    /// The encoded transaction at `index` of the committed block at `height`, with the block's
    /// hash: one datum read, where [`Self::block_at`] decodes and hashes the whole block (up to
    /// 4,000 transactions) and reads all its receipts.
    pub fn committed_tx_bytes(&self, height: u64, index: u32) -> Option<(Hash, Vec<u8>)> {
        let hash = self.committed_hash_at(height)?;
        // Datum 0 is the header; transaction i is datum i + 1.
        let datum = self
            .camera
            .snapshot()
            .block_datum(&hash, index.checked_add(1)?)?;
        Some((Hash(hash.bytes()), datum.bytes().clone()))
    }

    pub fn block_by_hash(&self, hash: &CryptoHash) -> Option<CommittedBlock> {
        let snap = self.camera.snapshot();
        let data = snap.block_data(hash).ok().flatten()?;
        let (header, txs) = block::decode(&data).ok()?;
        if self.committed_height().is_none_or(|c| header.height > c) {
            return None;
        }
        let tx_hashes: Vec<Hash> = txs.iter().map(|t| t.hash()).collect();
        let receipts: Vec<TxReceipt> = if txs.is_empty() {
            vec![]
        } else {
            self.read(&keys::block_receipts(header.height))?
        };
        Some(CommittedBlock {
            hash: Hash(hash.bytes()),
            contents: ExecutedBlock {
                header,
                txs,
                tx_hashes,
                receipts,
            },
        })
    }

    /// The committed block at `height`: from what execution left in `executed` when it is there,
    /// otherwise read back from the store.
    fn committed_block_for_feed(&self, height: u64) -> Option<CommittedBlock> {
        let snap = self.camera.snapshot();
        let hash = snap
            .block_at_height(BlockHeight::new(height))
            .ok()
            .flatten()?;
        let data_hash = snap.block_data_hash(&hash).ok().flatten()?;
        match self.executed.take(&data_hash) {
            Some(contents) if contents.header.height == height => Some(CommittedBlock {
                hash: Hash(hash.bytes()),
                contents,
            }),
            _ => self.block_by_hash(&hash),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBlock>> {
        self.feed.subscribe()
    }

    /// Publishes every committed block not yet published, in height order, and drops their
    /// transactions from the mempool. Called on each HotStuff commit event.
    pub fn publish_committed(&self) {
        let Some(top) = self.committed_height() else {
            return;
        };
        let mut next = self.published.load(Ordering::SeqCst);
        if next <= top {
            // The store already holds the state as of `top`.
            self.accounts.invalidate();
        }
        while next <= top {
            let Some(b) = self.committed_block_for_feed(next) else {
                break;
            };
            let applied = b
                .contents
                .receipts
                .iter()
                .filter(|r| r.error.is_none())
                .count() as u64;
            self.metrics.txs_committed.inc_by(applied);
            self.metrics
                .txs_rejected
                .inc_by(b.contents.receipts.len() as u64 - applied);
            self.metrics.blocks_committed.inc();
            let b = Arc::new(b);
            // Queued for the index before its transactions leave the mempool: a status query
            // finds each transaction in one or the other.
            self.index.push(b.clone());
            self.mempool
                .remove_committed(&b.contents.txs, &b.contents.tx_hashes, |a| {
                    self.account(a).nonce
                });
            let _ = self.feed.send(b);
            next += 1;
            self.published.store(next, Ordering::SeqCst);
        }
        self.metrics.height.set(top);
        self.metrics.mempool_size.set(self.mempool.len() as u64);
    }
}

/// The index's RocksDB sits beside the chain's, on the same disk: a failed write means the disk
/// is gone, as for HotStuff's own writes (`store.rs`).
fn index_write_failed(e: rocksdb::Error) -> ! {
    tracing::error!(error = %e, "writing the transaction index failed; stopping the node");
    std::process::exit(70);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(nonce: u64) -> Account {
        Account {
            nonce,
            ..Default::default()
        }
    }

    #[test]
    fn account_cache_keeps_reads_until_the_next_commit() {
        let c = AccountCache::default();
        let a = Address([1; 20]);
        let version = c.get(&a).unwrap_err();
        c.put(version, a, acct(3));
        assert_eq!(c.get(&a).map(|x| x.nonce), Ok(3));
        c.invalidate();
        assert!(c.get(&a).is_err());
    }

    #[test]
    fn a_read_that_overlapped_a_commit_is_not_cached() {
        let c = AccountCache::default();
        let a = Address([2; 20]);
        let before = c.get(&a).unwrap_err();
        c.invalidate(); // a commit lands while the store is being read
        c.put(before, a, acct(1));
        assert!(c.get(&a).is_err());
    }
}
