//! The node's transaction index: each committed transaction's receipt by its hash, and each
//! account's history. Both are derived from committed blocks (their transactions, and the
//! receipts the ledger commits as one value per block), so they stay out of the consensus state
//! and out of the chain database: they live in their own RocksDB (`index.db` beside
//! `chain.db`), written by a background thread in the idle scheduling class ([`Indexer`]) after
//! the block is published, so consensus never waits for them. Until a block is written, lookups find its
//! transactions in the indexer's queue.
//!
//! Each write is a sorted table file that RocksDB ingests whole, with the next height to index
//! in the same file, so the height never runs ahead of the entries. A node that stopped before
//! indexing a committed block indexes it when it starts again ([`TxIndex::catch_up`]).
//!
//! Keys: `t TXHASH` -> receipt, `h ADDRESS HEIGHT(be) POSITION(be)` -> transaction hash,
//! `n` -> the next height to index, `g` -> the genesis hash of the chain it indexes.

use crate::chain::CommittedBlock;
use crate::executed::ExecutedBlock;
use crate::priority::Background;
use crate::store::{db_options, open_db, OpenError};
use aitbc_protocol::model::{Event, TxReceipt};
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Address, Hash};
use parking_lot::Mutex;
use rocksdb::{Direction, IngestExternalFileOptions, IteratorMode, SstFileWriter, WriteBatch, DB};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

const RECEIPT: u8 = b't';
const HISTORY: u8 = b'h';
const NEXT_HEIGHT: &[u8] = b"n";
const GENESIS: &[u8] = b"g";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read or write the transaction index: {0}")]
    Db(#[from] rocksdb::Error),
}

#[derive(Clone)]
pub struct TxIndex {
    db: Arc<DB>,
    /// The database's directory, where table files are written before RocksDB takes them.
    dir: PathBuf,
}

/// Name of the table file being built (in the index's directory; RocksDB moves it in).
const INGEST_FILE: &str = "ingest.sst.tmp";

fn receipt_key(tx: &Hash) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 32);
    k.push(RECEIPT);
    k.extend_from_slice(&tx.0);
    k
}

fn history_prefix(a: &Address) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 20 + 12);
    k.push(HISTORY);
    k.extend_from_slice(&a.0);
    k
}

/// Where a transaction sits in the chain: its block's height and its index in the block.
/// History is ordered by it (newest first).
pub type HistoryPosition = (u64, u32);

fn history_key(a: &Address, height: u64, position: u32) -> Vec<u8> {
    let mut k = history_prefix(a);
    k.extend_from_slice(&height.to_be_bytes());
    k.extend_from_slice(&position.to_be_bytes());
    k
}

/// The accounts whose history a transaction belongs to: its sender and every account its events
/// name as the other side, each once.
pub fn accounts_involved(stx: &SignedTransaction, receipt: &TxReceipt) -> Vec<Address> {
    let mut who: Vec<Address> = vec![stx.tx.sender_address()];
    for e in &receipt.events {
        match e {
            Event::Transferred { to, .. } => who.push(*to),
            Event::BidSettled { provider, .. } | Event::JobSettled { provider, .. } => {
                who.push(*provider)
            }
            Event::JobRefunded { customer, .. } => who.push(*customer),
            _ => {}
        }
    }
    who.sort();
    who.dedup();
    who
}

impl TxIndex {
    /// Opens (or creates) the index of the chain with genesis hash `genesis`. An index of
    /// another chain found there is emptied.
    pub fn open(path: &Path, genesis: &Hash) -> Result<TxIndex, IndexError> {
        let index = TxIndex {
            db: Arc::new(open_db(path, &db_options())?),
            dir: path.to_path_buf(),
        };
        let found = index.db.get(GENESIS)?;
        if found.as_deref() != Some(genesis.0.as_slice()) {
            if found.is_some() {
                tracing::warn!(path = %path.display(), "the transaction index belongs to another chain; rebuilding it");
            }
            index.clear()?;
            index.db.put(GENESIS, genesis.0)?;
        }
        Ok(index)
    }

    /// Deletes every entry but the genesis hash: the index is rebuilt from height 0.
    pub fn clear(&self) -> Result<(), rocksdb::Error> {
        let mut wb = WriteBatch::default();
        wb.delete_range(&[HISTORY][..], &[HISTORY + 1][..]);
        wb.delete_range(&[RECEIPT][..], &[RECEIPT + 1][..]);
        wb.delete(NEXT_HEIGHT);
        self.db.write(wb)
    }

    /// The lowest height not indexed yet.
    pub fn next_height(&self) -> Result<u64, rocksdb::Error> {
        Ok(self
            .db
            .get(NEXT_HEIGHT)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Indexes a committed block's transactions, in one write with the next height. A block at
    /// a height already indexed is written again (same keys, same values).
    #[cfg(test)]
    pub fn add_block(&self, block: &ExecutedBlock) -> Result<(), rocksdb::Error> {
        self.add_blocks(&[block])
    }

    /// Indexes committed blocks (in height order) in one write with the next height. The
    /// entries go into a sorted table file that RocksDB takes in whole (`ingest`), not through
    /// its memtable: a skip-list insert per entry, with transaction hashes scattering the keys,
    /// cost about twice the CPU (compactions included). A file is durable once ingested. An
    /// empty block writes nothing (the next height then lags, and `catch_up` walks the empty
    /// blocks again after a restart).
    pub fn add_blocks(&self, blocks: &[&ExecutedBlock]) -> Result<(), rocksdb::Error> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for block in blocks {
            for (stx, receipt) in block.txs.iter().zip(&block.receipts) {
                entries.push((
                    receipt_key(&receipt.tx_hash),
                    borsh::to_vec(receipt).expect("borsh encoding into a Vec"),
                ));
                for a in accounts_involved(stx, receipt) {
                    entries.push((
                        history_key(&a, receipt.height, receipt.index),
                        receipt.tx_hash.0.to_vec(),
                    ));
                }
            }
        }
        let Some(top) = blocks.iter().map(|b| b.header.height).max() else {
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        let next = (top + 1).max(self.next_height()?);
        entries.push((NEXT_HEIGHT.to_vec(), next.to_be_bytes().to_vec()));
        // Stable, so that of equal keys (a block indexed twice) the later one is kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        let file = self.dir.join(INGEST_FILE);
        // A file left by a stop mid-write goes; a new file never shares an ingested one's inode.
        if let Err(e) = std::fs::remove_file(&file) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, file = %file.display(), "cannot remove an old index file");
            }
        }
        let opts = db_options();
        let mut writer = SstFileWriter::create(&opts);
        writer.open(&file)?;
        for (k, v) in &entries {
            writer.put(k, v)?;
        }
        writer.finish()?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        self.db.ingest_external_file_opts(&ingest, vec![&file])
    }

    /// The receipt of a committed transaction.
    pub fn receipt(&self, tx: &Hash) -> Option<TxReceipt> {
        let bytes = self.db.get(receipt_key(tx)).ok()??;
        borsh::from_slice(&bytes).ok()
    }

    /// Hashes of an account's last `limit` transactions, newest first.
    #[cfg(test)]
    pub fn history(&self, a: &Address, limit: usize) -> Vec<Hash> {
        self.history_before(a, None, limit)
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    }

    /// An account's transactions strictly older than `before` (a [`HistoryPosition`]; `None`:
    /// from the newest), newest first, at most `limit`: one page of `GetAccountHistory`.
    pub fn history_before(
        &self,
        a: &Address,
        before: Option<HistoryPosition>,
        limit: usize,
    ) -> Vec<(HistoryPosition, Hash)> {
        let prefix = history_prefix(a);
        // Every history key of this account sorts below the prefix followed by 0xff bytes.
        let upper = match before {
            Some((height, position)) => history_key(a, height, position),
            None => {
                let mut upper = prefix.clone();
                upper.extend_from_slice(&[0xff; 13]);
                upper
            }
        };
        self.db
            .iterator(IteratorMode::From(&upper, Direction::Reverse))
            .map_while(|item| item.ok())
            .skip_while(|(k, _)| k.as_ref() >= upper.as_slice())
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| {
                let at = k.get(prefix.len()..)?;
                let height = u64::from_be_bytes(at.get(..8)?.try_into().ok()?);
                let position = u32::from_be_bytes(at.get(8..12)?.try_into().ok()?);
                let hash = <[u8; 32]>::try_from(v.as_ref()).ok().map(Hash)?;
                Some(((height, position), hash))
            })
            .take(limit)
            .collect()
    }

    /// Indexes the committed blocks from [`Self::next_height`] up to `top`, reading them with
    /// `block_at` (e.g. after a restart that came between a commit and its indexing). Returns
    /// how many blocks it indexed.
    pub fn catch_up(
        &self,
        top: u64,
        mut block_at: impl FnMut(u64) -> Option<ExecutedBlock>,
    ) -> Result<u64, rocksdb::Error> {
        let from = self.next_height()?;
        let mut done = 0;
        let mut batch = Vec::with_capacity(MAX_BLOCKS_PER_WRITE);
        for height in from..=top {
            let Some(block) = block_at(height) else {
                tracing::warn!(
                    height,
                    "committed block missing from the store; index stops here"
                );
                break;
            };
            batch.push(block);
            if batch.len() == MAX_BLOCKS_PER_WRITE || height == top {
                self.add_blocks(&batch.iter().collect::<Vec<_>>())?;
                done += batch.len() as u64;
                batch.clear();
                if done % 1024 == 0 {
                    tracing::info!(height, top, "indexing committed blocks");
                }
            }
        }
        // What was read before a missing block.
        self.add_blocks(&batch.iter().collect::<Vec<_>>())?;
        done += batch.len() as u64;
        Ok(done)
    }
}

/// Blocks published and not yet indexed at most; publishing waits beyond (bounded memory when
/// the disk or the CPU falls behind for long).
const MAX_QUEUED_BLOCKS: usize = 128;
/// The index thread runs in the idle class: under a burst the index lags (lookups see the
/// pending blocks) instead of taking CPU from consensus. From this many blocks or transactions
/// waiting it runs at low priority (nice 5) instead, until the backlog is down to
/// [`IDLE_AT_BLOCKS`] again, so that a long overload does not reach [`MAX_QUEUED_BLOCKS`]
/// (leaving the idle class needs CAP_SYS_NICE or a nice rlimit; without, publishing waits at
/// the bound).
const CATCH_UP_AT_BLOCKS: u64 = 96;
const CATCH_UP_AT_TXS: u64 = 200_000;
const IDLE_AT_BLOCKS: u64 = 16;
/// Blocks written to the index in one table file at most.
const MAX_BLOCKS_PER_WRITE: usize = 32;

struct IndexThread {
    stopping: Arc<AtomicBool>,
    index: TxIndex,
    written: Arc<AtomicU64>,
    pushed: Arc<AtomicU64>,
    pushed_txs: Arc<AtomicU64>,
}

impl IndexThread {
    fn run(self, blocks: Receiver<Arc<CommittedBlock>>) {
        let mut class = Background::Idle;
        crate::priority::set_this_thread(class);
        let mut done = 0u64;
        let mut done_txs = 0u64;
        while let Ok(first) = blocks.recv() {
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            // Whatever else is queued goes into the same write (one table file).
            let mut batch = vec![first];
            while batch.len() < MAX_BLOCKS_PER_WRITE {
                match blocks.try_recv() {
                    Ok(b) => batch.push(b),
                    Err(_) => break,
                }
            }
            let contents: Vec<&ExecutedBlock> = batch.iter().map(|b| &b.contents).collect();
            if let Err(e) = self.index.add_blocks(&contents) {
                tracing::error!(error = %e, "writing the transaction index failed; stopping the node");
                std::process::exit(70);
            }
            done += batch.len() as u64;
            done_txs += contents.iter().map(|c| c.txs.len() as u64).sum::<u64>();
            let top = contents
                .iter()
                .map(|c| c.header.height + 1)
                .max()
                .unwrap_or(0);
            self.written.fetch_max(top, Ordering::Release);
            let blocks_behind = self.pushed.load(Ordering::Relaxed).saturating_sub(done);
            let txs_behind = self
                .pushed_txs
                .load(Ordering::Relaxed)
                .saturating_sub(done_txs);
            let wanted = match class {
                Background::Idle
                    if blocks_behind >= CATCH_UP_AT_BLOCKS || txs_behind >= CATCH_UP_AT_TXS =>
                {
                    Background::Low
                }
                Background::Low if blocks_behind <= IDLE_AT_BLOCKS => Background::Idle,
                c => c,
            };
            if wanted != class {
                tracing::info!(blocks_behind, txs_behind, priority = ?wanted, "transaction index");
                class = wanted;
                crate::priority::set_this_thread(class);
            }
        }
    }
}

/// Writes published blocks to the [`TxIndex`] on a background thread in the idle scheduling
/// class, and answers lookups from the index and from the blocks not yet written. The thread
/// takes no lock that publishing or lookups take (it may be preempted at any point): blocks
/// reach it through a bounded channel, and it reports progress in an atomic. [`Indexer::stop`]
/// (or dropping it) stops the thread after its current write; blocks not yet written are
/// indexed when the node starts again.
pub struct Indexer {
    index: TxIndex,
    /// Published blocks, oldest first, that may not be written yet. A block leaves only once
    /// the thread reports it written, so every published transaction is here or in the index.
    pending: Mutex<VecDeque<Arc<CommittedBlock>>>,
    /// `None` once stopped (closing the channel stops the thread). Locked by the publisher and
    /// by `stop` only.
    to_thread: Mutex<Option<SyncSender<Arc<CommittedBlock>>>>,
    /// Set by `stop`: the thread ends after its current write.
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// One more than the height of the last block the thread wrote (0: none yet).
    written: Arc<AtomicU64>,
    /// Blocks and transactions handed to the thread so far.
    pushed: Arc<AtomicU64>,
    pushed_txs: Arc<AtomicU64>,
}

impl Indexer {
    pub fn start(index: TxIndex) -> Indexer {
        let (to_thread, from_publisher) = sync_channel::<Arc<CommittedBlock>>(MAX_QUEUED_BLOCKS);
        let written = Arc::new(AtomicU64::new(0));
        let pushed = Arc::new(AtomicU64::new(0));
        let pushed_txs = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = IndexThread {
            index: index.clone(),
            written: written.clone(),
            pushed: pushed.clone(),
            pushed_txs: pushed_txs.clone(),
            stopping: stopping.clone(),
        };
        let thread = match std::thread::Builder::new()
            .name("tx-index".into())
            .spawn(move || worker.run(from_publisher))
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the transaction index thread; stopping the node");
                std::process::exit(70);
            }
        };
        Indexer {
            index,
            pending: Mutex::new(VecDeque::new()),
            to_thread: Mutex::new(Some(to_thread)),
            stopping,
            thread: Mutex::new(Some(thread)),
            written,
            pushed,
            pushed_txs,
        }
    }

    pub fn index(&self) -> &TxIndex {
        &self.index
    }

    /// Hands a published block to the index thread; waits while [`MAX_QUEUED_BLOCKS`] wait
    /// for it. Blocks are pushed in height order, by one publisher at a time.
    pub fn push(&self, block: Arc<CommittedBlock>) {
        {
            let mut pending = self.pending.lock();
            let written = self.written.load(Ordering::Acquire);
            while pending
                .front()
                .is_some_and(|b| b.contents.header.height < written)
            {
                pending.pop_front();
            }
            pending.push_back(block.clone());
        }
        if let Some(tx) = &*self.to_thread.lock() {
            self.pushed.fetch_add(1, Ordering::Relaxed);
            self.pushed_txs
                .fetch_add(block.contents.txs.len() as u64, Ordering::Relaxed);
            // Fails only when the thread is gone, i.e. the node is stopping.
            let _ = tx.send(block);
        }
    }

    /// The receipt of a committed transaction.
    pub fn receipt(&self, tx: &Hash) -> Option<TxReceipt> {
        // The pending blocks first: a block leaves them only once it is in the index.
        let pending = self.pending.lock().iter().find_map(|b| {
            let i = b.contents.tx_hashes.iter().position(|h| h == tx)?;
            b.contents.receipts.get(i).cloned()
        });
        pending.or_else(|| self.index.receipt(tx))
    }

    /// Hashes of an account's last `limit` transactions, newest first.
    #[cfg(test)]
    pub fn history(&self, a: &Address, limit: usize) -> Vec<Hash> {
        self.history_before(a, None, limit)
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    }

    /// [`TxIndex::history_before`], including the published blocks not written yet.
    pub fn history_before(
        &self,
        a: &Address,
        before: Option<HistoryPosition>,
        limit: usize,
    ) -> Vec<(HistoryPosition, Hash)> {
        let older_than = |p: HistoryPosition| before.is_none_or(|b| p < b);
        let mut out: Vec<(HistoryPosition, Hash)> = Vec::new();
        for b in self.pending.lock().iter().rev() {
            let c = &b.contents;
            for (stx, r) in c.txs.iter().zip(&c.receipts).rev() {
                if out.len() < limit
                    && older_than((r.height, r.index))
                    && accounts_involved(stx, r).contains(a)
                {
                    out.push(((r.height, r.index), r.tx_hash));
                }
            }
        }
        // A pending block may be written already: keep each transaction once.
        let seen: HashSet<Hash> = out.iter().map(|(_, h)| *h).collect();
        let older = self.index.history_before(a, before, limit);
        out.extend(older.into_iter().filter(|(_, h)| !seen.contains(h)));
        out.truncate(limit);
        out
    }

    /// One more than the height of the last block written to the index by this `Indexer`.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Stops the index thread after its current write and waits for it (a process must not
    /// exit with it inside RocksDB). Blocks published later are not indexed until a restart.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        *self.to_thread.lock() = None;
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::tx::{Action, Transaction};
    use aitbc_protocol::{Amount, Keypair};

    const GENESIS_A: Hash = Hash([1; 32]);

    fn transfer(from: &Keypair, to: Address, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: "test".into(),
            sender: from.public(),
            nonce,
            fee: Amount(1),
            action: Action::Transfer {
                to,
                amount: Amount(5),
            },
        }
        .sign(from)
    }

    /// A block at `height` of transfers `from -> to`, receipts as the ledger would write them.
    fn block(height: u64, txs: Vec<SignedTransaction>, to: Address) -> ExecutedBlock {
        let receipts = txs
            .iter()
            .enumerate()
            .map(|(i, t)| TxReceipt {
                tx_hash: t.hash(),
                height,
                index: i as u32,
                error: None,
                fee_paid: Amount(1),
                events: vec![Event::Transferred {
                    from: t.tx.sender_address(),
                    to,
                    amount: Amount(5),
                }],
            })
            .collect();
        ExecutedBlock::for_test(height, txs, receipts)
    }

    /// Alice, Bob, and a block at height 0 of one transfer from Alice to Bob.
    fn first_transfer() -> (Keypair, Address, ExecutedBlock) {
        let alice = Keypair::generate();
        let bob = Keypair::generate().address();
        let b0 = block(0, vec![transfer(&alice, bob, 0)], bob);
        (alice, bob, b0)
    }

    fn open() -> (tempfile::TempDir, TxIndex) {
        let dir = tempfile::tempdir().unwrap();
        let index = TxIndex::open(dir.path(), &GENESIS_A).unwrap();
        (dir, index)
    }

    #[test]
    fn receipts_by_hash_and_history_newest_first() {
        let (_dir, index) = open();
        let alice = Keypair::generate();
        let bob = Keypair::generate().address();
        let b0 = block(
            0,
            vec![transfer(&alice, bob, 0), transfer(&alice, bob, 1)],
            bob,
        );
        let b1 = block(1, vec![transfer(&alice, bob, 2)], bob);
        assert_eq!(index.next_height().unwrap(), 0);
        index.add_block(&b0).unwrap();
        index.add_block(&b1).unwrap();
        assert_eq!(index.next_height().unwrap(), 2);

        let r = index.receipt(&b0.tx_hashes[1]).unwrap();
        assert_eq!((r.height, r.index), (0, 1));
        assert_eq!(index.receipt(&Hash([7; 32])), None);

        let newest_first = vec![b1.tx_hashes[0], b0.tx_hashes[1], b0.tx_hashes[0]];
        assert_eq!(index.history(&alice.address(), 10), newest_first);
        // The recipient's history holds the same transactions; a limit keeps the newest.
        assert_eq!(index.history(&bob, 2), newest_first[..2].to_vec());
        assert!(index.history(&Keypair::generate().address(), 10).is_empty());
    }

    #[test]
    fn catch_up_indexes_exactly_the_missing_heights() {
        let (_dir, index) = open();
        let alice = Keypair::generate();
        let bob = Keypair::generate().address();
        let blocks: Vec<ExecutedBlock> = (0..5)
            .map(|h| block(h, vec![transfer(&alice, bob, h)], bob))
            .collect();
        index.add_block(&blocks[0]).unwrap();
        index.add_block(&blocks[1]).unwrap();
        let mut asked = vec![];
        let done = index
            .catch_up(4, |h| {
                asked.push(h);
                blocks.get(h as usize).cloned()
            })
            .unwrap();
        assert_eq!((done, asked), (3, vec![2, 3, 4]));
        assert_eq!(index.next_height().unwrap(), 5);
        assert_eq!(index.history(&alice.address(), 100).len(), 5);
        // Re-indexing an old block neither duplicates its history nor moves the height back.
        index.add_block(&blocks[1]).unwrap();
        assert_eq!(index.next_height().unwrap(), 5);
        assert_eq!(index.history(&bob, 100).len(), 5);
    }

    #[test]
    fn a_long_catch_up_writes_in_batches_and_stops_at_a_missing_block() {
        let (_dir, index) = open();
        let alice = Keypair::generate();
        let bob = Keypair::generate().address();
        let blocks: Vec<ExecutedBlock> = (0..70)
            .map(|h| block(h, vec![transfer(&alice, bob, h)], bob))
            .collect();
        // Block 50 is missing: 0..=49 are indexed (two full batches and part of a third).
        let done = index
            .catch_up(69, |h| (h != 50).then(|| blocks[h as usize].clone()))
            .unwrap();
        assert_eq!(done, 50);
        assert_eq!(index.next_height().unwrap(), 50);
        assert_eq!(index.history(&alice.address(), 1000).len(), 50);
        let done = index
            .catch_up(69, |h| Some(blocks[h as usize].clone()))
            .unwrap();
        assert_eq!((done, index.next_height().unwrap()), (20, 70));
    }

    #[test]
    fn blocks_written_together_are_each_indexed_once() {
        let (_dir, index) = open();
        let (alice, bob, b0) = first_transfer();
        let b1 = block(1, vec![transfer(&alice, bob, 1)], bob);
        let empty = block(2, vec![], bob);
        // An empty block alone writes nothing; with others, the height covers it.
        index.add_blocks(&[&empty]).unwrap();
        assert_eq!(index.next_height().unwrap(), 0);
        index.add_blocks(&[&b0, &b1, &empty, &b0]).unwrap();
        assert_eq!(index.next_height().unwrap(), 3);
        assert_eq!(
            index.history(&alice.address(), 10),
            vec![b1.tx_hashes[0], b0.tx_hashes[0]]
        );
        assert_eq!(
            index.receipt(&b1.tx_hashes[0]),
            Some(b1.receipts[0].clone())
        );
    }

    #[test]
    fn what_was_indexed_is_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, b0) = first_transfer();
        {
            let index = TxIndex::open(dir.path(), &GENESIS_A).unwrap();
            index.add_block(&b0).unwrap();
        }
        let index = TxIndex::open(dir.path(), &GENESIS_A).unwrap();
        assert_eq!(index.next_height().unwrap(), 1);
        assert_eq!(
            index.receipt(&b0.tx_hashes[0]),
            Some(b0.receipts[0].clone())
        );
    }

    #[test]
    fn an_index_of_another_chain_or_one_cleared_starts_from_height_0() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bob, b0) = first_transfer();
        {
            let index = TxIndex::open(dir.path(), &GENESIS_A).unwrap();
            index.add_block(&b0).unwrap();
            index.clear().unwrap();
            assert_eq!(index.next_height().unwrap(), 0);
            assert_eq!(index.receipt(&b0.tx_hashes[0]), None);
            assert!(index.history(&bob, 10).is_empty());
            index.add_block(&b0).unwrap();
        }
        let other = TxIndex::open(dir.path(), &Hash([2; 32])).unwrap();
        assert_eq!(other.next_height().unwrap(), 0);
        assert_eq!(other.receipt(&b0.tx_hashes[0]), None);
    }

    /// Waits until the indexer's thread has written up to `height`.
    fn wait_written(indexer: &Indexer, height: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while indexer.written() <= height {
            assert!(std::time::Instant::now() < deadline, "index thread stuck");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn committed(b: ExecutedBlock) -> Arc<CommittedBlock> {
        Arc::new(CommittedBlock {
            hash: Hash([b.header.height as u8; 32]),
            contents: b,
        })
    }

    #[test]
    fn the_indexer_answers_for_every_pushed_block_before_and_after_writing_it() {
        let (_dir, index) = open();
        let indexer = Indexer::start(index.clone());
        let alice = Keypair::generate();
        let bob = Keypair::generate().address();
        let blocks: Vec<ExecutedBlock> = (0..20)
            .map(|h| {
                block(
                    h,
                    vec![
                        transfer(&alice, bob, 2 * h),
                        transfer(&alice, bob, 2 * h + 1),
                    ],
                    bob,
                )
            })
            .collect();
        let all_newest_first: Vec<Hash> = blocks
            .iter()
            .rev()
            .flat_map(|b| b.tx_hashes.iter().rev().copied())
            .collect();
        for (i, b) in blocks.iter().enumerate() {
            indexer.push(committed(b.clone()));
            // Right after the push, written or not, every transaction so far is found once.
            for h in &b.tx_hashes {
                assert_eq!(indexer.receipt(h).map(|r| r.tx_hash), Some(*h));
            }
            let so_far = &all_newest_first[all_newest_first.len() - 2 * (i + 1)..];
            assert_eq!(indexer.history(&alice.address(), 1000), so_far);
            assert_eq!(indexer.history(&bob, 3), so_far[..3.min(so_far.len())]);
        }
        wait_written(&indexer, 19);
        // Written: the index alone has them all.
        assert_eq!(index.next_height().unwrap(), 20);
        assert_eq!(index.history(&alice.address(), 1000), all_newest_first);
        assert_eq!(indexer.history(&bob, 1000), all_newest_first);
        // Pushing again drops what is written from the pending list.
        indexer.push(committed(block(20, vec![], bob)));
        assert_eq!(indexer.pending.lock().len(), 1);
    }

    #[test]
    fn a_transaction_belongs_to_its_sender_and_the_accounts_its_events_name() {
        let alice = Keypair::generate();
        let bob = Keypair::generate().address();
        let stx = transfer(&alice, bob, 0);
        let mut b = block(0, vec![stx.clone()], bob);
        let mut expected = vec![alice.address(), bob];
        expected.sort();
        assert_eq!(accounts_involved(&stx, &b.receipts[0]), expected);
        // A rejected transaction has no events: only its sender.
        b.receipts[0].events.clear();
        assert_eq!(
            accounts_involved(&stx, &b.receipts[0]),
            vec![alice.address()]
        );
        // A transfer to oneself is listed once.
        b.receipts[0].events = vec![Event::Transferred {
            from: alice.address(),
            to: alice.address(),
            amount: Amount(1),
        }];
        assert_eq!(
            accounts_involved(&stx, &b.receipts[0]),
            vec![alice.address()]
        );
    }
}
