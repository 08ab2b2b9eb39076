//! RocksDB behind HotStuff's `KVStore`. HotStuff writes a block, its state changes and its
//! consensus bookkeeping in one `WriteBatch`, so a node killed at any moment restarts at its last
//! committed block with nothing half-written (RocksDB's write-ahead log replays whole batches).

use hotstuff_rs::block_tree::pluggables::{KVGet, KVStore, WriteBatch};
use hotstuff_rs::types::data_types::{CryptoHash, Data};
use rocksdb::{Direction, IteratorMode, Options, DB};
use std::path::Path;
use std::sync::Arc;

/// Prefix under which HotStuff keeps the committed application state.
pub const COMMITTED_APP_STATE: u8 = 3;

#[derive(Clone)]
pub struct RocksStore {
    db: Arc<DB>,
    sync_writes: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the chain database at {path}: {source}")]
pub struct OpenError {
    path: String,
    source: rocksdb::Error,
}

/// The node's RocksDB settings.
pub fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_max_open_files(512);
    opts.increase_parallelism(2);
    // Compactions run at low CPU priority: under load they must not take the CPU from
    // consensus (a compaction that lags only leaves more level-0 files for a while).
    if let Ok(mut env) = rocksdb::Env::new() {
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);
    }
    opts
}

/// Opens (or creates) a RocksDB database.
pub fn open_db(path: &Path, opts: &Options) -> Result<DB, OpenError> {
    DB::open(opts, path).map_err(|source| OpenError {
        path: path.display().to_string(),
        source,
    })
}

impl RocksStore {
    /// Opens (or creates) the database. With `sync_writes` every block is fsynced before the node
    /// votes on the next one, which also survives power loss; without it, a killed process loses
    /// nothing but a machine crash may lose the last blocks (they are re-synced from peers).
    pub fn open(path: &Path, sync_writes: bool) -> Result<RocksStore, OpenError> {
        Ok(RocksStore {
            db: Arc::new(open_db(path, &db_options())?),
            sync_writes,
        })
    }

    /// Iterates committed application state whose key starts with `prefix`, in key order (or in
    /// reverse), calling `f(key_without_prefix, value)` until it returns false.
    pub fn scan_committed(
        &self,
        prefix: &[u8],
        reverse: bool,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) {
        let mut full = vec![COMMITTED_APP_STATE];
        full.extend_from_slice(prefix);
        let iter = if reverse {
            let mut upper = full.clone();
            // The smallest key greater than every key with this prefix.
            while let Some(last) = upper.pop() {
                if last < 0xff {
                    upper.push(last + 1);
                    break;
                }
            }
            self.db
                .iterator(IteratorMode::From(&upper, Direction::Reverse))
        } else {
            self.db
                .iterator(IteratorMode::From(&full, Direction::Forward))
        };
        for item in iter {
            let Ok((k, v)) = item else { break };
            if !k.starts_with(&full) {
                if reverse && k.as_ref() > full.as_slice() {
                    continue;
                }
                break;
            }
            if !f(&k[1..], &v) {
                break;
            }
        }
    }

    pub fn get_committed(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut full = vec![COMMITTED_APP_STATE];
        full.extend_from_slice(key);
        self.get(&full)
    }

    pub fn flush(&self) {
        if let Err(e) = self.db.flush_wal(true) {
            tracing::warn!(error = %e, "flushing the write-ahead log failed");
        }
    }
}

impl KVGet for RocksStore {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.db.get(key) {
            Ok(v) => v,
            Err(e) => {
                // HotStuff's KVGet cannot return an error; a read failure means the disk is gone.
                tracing::error!(error = %e, "RocksDB read failed; stopping the node");
                std::process::exit(70);
            }
        }
    }
}

/// Reads all data of a block. hotstuff_rs 0.4.0's default `KVGet::block_data` consumes its
/// iterator in a `find` before collecting, so it always returns empty data (which would also break
/// block sync); both our `KVGet` implementations override it with this.
fn read_block_data<G: KVGet + ?Sized>(
    kv: &G,
    block: &CryptoHash,
) -> Result<Option<Data>, hotstuff_rs::block_tree::pluggables::KVGetError> {
    let Some(len) = kv.block_data_len(block)? else {
        return Ok(None);
    };
    let mut data = Vec::with_capacity(len.int() as usize);
    for i in 0..len.int() {
        match kv.block_datum(block, i) {
            Some(d) => data.push(d),
            None => {
                return Err(
                    hotstuff_rs::block_tree::pluggables::KVGetError::ValueExpectedButNotFound {
                        key: hotstuff_rs::block_tree::pluggables::Key::BlockData { block: *block },
                    },
                )
            }
        }
    }
    Ok(Some(Data::new(data)))
}

pub struct RocksBatch(rocksdb::WriteBatch);

impl WriteBatch for RocksBatch {
    fn new() -> Self {
        RocksBatch(rocksdb::WriteBatch::default())
    }
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.0.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.delete(key)
    }
}

/// A consistent read view of the database.
pub struct RocksSnapshot<'a>(rocksdb::Snapshot<'a>);

impl KVGet for RocksSnapshot<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.0.get(key) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "RocksDB snapshot read failed; stopping the node");
                std::process::exit(70);
            }
        }
    }
    fn block_data(
        &self,
        block: &CryptoHash,
    ) -> Result<Option<Data>, hotstuff_rs::block_tree::pluggables::KVGetError> {
        read_block_data(self, block)
    }
}

impl KVStore for RocksStore {
    type WriteBatch = RocksBatch;
    type Snapshot<'a> = RocksSnapshot<'a>;

    fn write(&mut self, wb: Self::WriteBatch) {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(self.sync_writes);
        if let Err(e) = self.db.write_opt(wb.0, &opts) {
            // A lost write would fork this node from its own votes: stop rather than go on.
            tracing::error!(error = %e, "RocksDB write failed; stopping the node");
            std::process::exit(70);
        }
    }

    fn clear(&mut self) {
        let keys: Vec<Box<[u8]>> = self
            .db
            .iterator(IteratorMode::Start)
            .filter_map(|r| r.ok().map(|(k, _)| k))
            .collect();
        let mut wb = rocksdb::WriteBatch::default();
        for k in keys {
            wb.delete(k);
        }
        if let Err(e) = self.db.write(wb) {
            tracing::error!(error = %e, "RocksDB clear failed; stopping the node");
            std::process::exit(70);
        }
    }

    fn snapshot<'b>(&'b self) -> RocksSnapshot<'b> {
        RocksSnapshot(self.db.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_committed_prefix_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RocksStore::open(dir.path(), false).unwrap();
        let mut wb = RocksBatch::new();
        for k in [b"l/a".as_slice(), b"l/b", b"l/c", b"m/x"] {
            let mut full = vec![COMMITTED_APP_STATE];
            full.extend_from_slice(k);
            wb.set(&full, k);
        }
        wb.set(&[COMMITTED_APP_STATE + 1, b'l'], b"other space");
        s.write(wb);
        let mut fwd = vec![];
        s.scan_committed(b"l/", false, |k, _| {
            fwd.push(k.to_vec());
            true
        });
        assert_eq!(fwd, vec![b"l/a".to_vec(), b"l/b".to_vec(), b"l/c".to_vec()]);
        let mut rev = vec![];
        s.scan_committed(b"l/", true, |k, _| {
            rev.push(k.to_vec());
            rev.len() < 2
        });
        assert_eq!(rev, vec![b"l/c".to_vec(), b"l/b".to_vec()]);
        assert_eq!(s.get_committed(b"m/x").unwrap(), b"m/x");
    }
}
