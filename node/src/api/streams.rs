//! `SubscribeBlocks`: how many streams a node serves, and what one costs it.
//!
//! A committed block is turned into its API form once, whichever stream asks first, and shared
//! by every stream that sends it ([`EncodedBlocks`]): a hundred followers cost one encoding per
//! block, not a hundred. A stream queues shared handles, so a client that stops reading holds a
//! few pointers and its HTTP/2 window, not copies of blocks; after [`STALLED_STREAM`] without
//! taking a block it is closed and its slot freed ([`serve`]).

use super::block_info;
use crate::chain::{Chain, CommittedBlock};
use crate::metrics::NodeMetrics;
use aitbc_protocol::pb;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Blocks queued for one stream: a client that does not read holds at most this many handles
/// (the blocks themselves are shared with every other stream).
pub const BLOCK_STREAM_QUEUE: usize = 4;
/// A stream whose client has not taken a block for this long is closed: its client is gone or
/// cannot keep up (a full 2 MiB block needs well under a minute on any link a follower uses).
pub const STALLED_STREAM: Duration = Duration::from_secs(30);
/// Encoded blocks kept for the streams, newest first: enough for followers a few blocks apart.
const ENCODED_BLOCKS: usize = 32;
/// ... and the bytes they may take together (the newest block is always kept).
const ENCODED_BYTES: usize = 64 * 1024 * 1024;

pub type BlockStream = Pin<Box<dyn Stream<Item = Result<pb::CommittedBlock, Status>> + Send>>;

/// Open `SubscribeBlocks` streams, in all and per client IP address (`None`: transports without
/// one). A stream holds a [`BlockStreamSlot`] until it ends.
pub struct BlockStreams {
    max: usize,
    per_client: usize,
    open: parking_lot::Mutex<(usize, HashMap<Option<IpAddr>, usize>)>,
    metrics: Arc<NodeMetrics>,
}

pub struct BlockStreamSlot {
    streams: Arc<BlockStreams>,
    client: Option<IpAddr>,
}

impl BlockStreams {
    pub fn new(max: usize, per_client: usize, metrics: Arc<NodeMetrics>) -> Arc<BlockStreams> {
        Arc::new(BlockStreams {
            max,
            per_client,
            open: parking_lot::Mutex::new((0, HashMap::new())),
            metrics,
        })
    }

    /// A slot for one more stream from `client`, or `resource_exhausted` saying which limit.
    pub fn open(self: &Arc<Self>, client: Option<IpAddr>) -> Result<BlockStreamSlot, Status> {
        let client = client.map(|ip| ip.to_canonical());
        let mut open = self.open.lock();
        let from_client = open.1.get(&client).copied().unwrap_or(0);
        let refused = if open.0 >= self.max {
            Some(format!(
                "this node already serves {} block streams (SubscribeBlocks), its limit; \
                 retry later or follow another node",
                self.max
            ))
        } else if from_client >= self.per_client {
            Some(format!(
                "{} block streams (SubscribeBlocks) already open from {}, the limit per client \
                 address; close one (each follower or `--wait` holds one) or share one stream",
                self.per_client,
                client.map_or("this client".to_string(), |ip| ip.to_string())
            ))
        } else {
            None
        };
        if let Some(message) = refused {
            drop(open);
            self.metrics.api_block_streams_refused.inc();
            return Err(Status::resource_exhausted(message));
        }
        open.0 += 1;
        *open.1.entry(client).or_insert(0) += 1;
        self.metrics.api_block_streams.set(open.0 as u64);
        Ok(BlockStreamSlot {
            streams: self.clone(),
            client,
        })
    }
}

impl Drop for BlockStreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.client);
            }
        }
        self.streams.metrics.api_block_streams.set(open.0 as u64);
    }
}

/// Committed blocks in their API form, built once and shared by every stream that sends them.
pub struct EncodedBlocks {
    /// By height, with the encoded size of each.
    kept: parking_lot::Mutex<BTreeMap<u64, (Arc<pb::CommittedBlock>, usize)>>,
}

impl EncodedBlocks {
    pub fn new() -> Arc<EncodedBlocks> {
        Arc::new(EncodedBlocks {
            kept: parking_lot::Mutex::new(BTreeMap::new()),
        })
    }

    /// `chain`'s committed block at `height`, if there is one yet.
    pub fn at(&self, chain: &Chain, height: u64) -> Option<Arc<pb::CommittedBlock>> {
        if let Some(b) = self.kept(height) {
            return Some(b);
        }
        let top = chain.committed_height()?;
        if height > top {
            return None;
        }
        chain.block_at(height).map(|b| self.of(&b))
    }

    /// `b` in its API form: the kept one, or built now and kept.
    pub fn of(&self, b: &CommittedBlock) -> Arc<pb::CommittedBlock> {
        let height = b.contents.header.height;
        if let Some(kept) = self.kept(height) {
            return kept;
        }
        // Built outside the lock; two streams asking at once may both build it, once.
        let encoded = Arc::new(committed_block(b));
        let size = encoded.encoded_len();
        let mut kept = self.kept.lock();
        let entry = kept.entry(height).or_insert((encoded, size)).0.clone();
        evict(&mut kept, ENCODED_BLOCKS, ENCODED_BYTES);
        entry
    }

    fn kept(&self, height: u64) -> Option<Arc<pb::CommittedBlock>> {
        self.kept.lock().get(&height).map(|(b, _)| b.clone())
    }
}

/// Drops the lowest heights until at most `blocks` remain within `bytes` (the highest is kept
/// whatever its size).
fn evict<T>(kept: &mut BTreeMap<u64, (T, usize)>, blocks: usize, bytes: usize) {
    let mut total: usize = kept.values().map(|(_, size)| size).sum();
    while kept.len() > blocks.max(1) || (kept.len() > 1 && total > bytes) {
        match kept.pop_first() {
            Some((_, (_, size))) => total -= size,
            None => break,
        }
    }
}

pub fn committed_block(b: &CommittedBlock) -> pb::CommittedBlock {
    pb::CommittedBlock {
        block: Some(block_info(b)),
        receipts: b.contents.receipts.iter().map(super::enc).collect(),
    }
}

/// Why a stream's task ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    ClientGone,
    Stalled,
    NodeStopping,
}

/// Starts the task that feeds one stream from `from`: committed blocks from storage, then each
/// new commit. The task holds `slot` until it ends.
pub fn serve(
    slot: BlockStreamSlot,
    from: u64,
    chain: Arc<Chain>,
    blocks: Arc<EncodedBlocks>,
    metrics: Arc<NodeMetrics>,
) -> BlockStream {
    let (tx, rx) = mpsc::channel(BLOCK_STREAM_QUEUE);
    tokio::spawn(async move {
        let _slot = slot;
        if follow(from, &chain, &blocks, &tx).await == Ended::Stalled {
            metrics.api_block_streams_stalled.inc();
            tracing::debug!("closed a block stream whose client stopped reading");
        }
    });
    // Each stream gets its own copy only when its client can take it.
    Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b: Arc<pb::CommittedBlock>| Ok(Arc::unwrap_or_clone(b))),
    )
}

async fn follow(
    mut next: u64,
    chain: &Chain,
    blocks: &EncodedBlocks,
    tx: &mpsc::Sender<Arc<pb::CommittedBlock>>,
) -> Ended {
    // Subscribe first, then replay from storage, so nothing falls between the two.
    let mut live = chain.subscribe();
    loop {
        // Replay whatever is committed and not yet sent.
        while let Some(b) = blocks.at(chain, next) {
            if let Err(ended) = send(tx, b, STALLED_STREAM).await {
                return ended;
            }
            next += 1;
        }
        // Waiting for the next commit, notice a client that went away at once (its slot is
        // released), not only at the next send.
        let received = tokio::select! {
            r = live.recv() => r,
            _ = tx.closed() => return Ended::ClientGone,
        };
        match received {
            Ok(b) if b.contents.header.height == next => {
                if let Err(ended) = send(tx, blocks.of(&b), STALLED_STREAM).await {
                    return ended;
                }
                next += 1;
            }
            // Behind the feed: the replay above catches up from storage.
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return Ended::NodeStopping,
        }
    }
}

/// Queues `b` for the client, or says why the stream ends: the client went away, or it took
/// nothing for `stall`.
async fn send<T>(tx: &mpsc::Sender<T>, b: T, stall: Duration) -> Result<(), Ended> {
    match tokio::time::timeout(stall, tx.send(b)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::ClientGone),
        Err(_) => Err(Ended::Stalled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executed::ExecutedBlock;

    fn committed(height: u64) -> CommittedBlock {
        CommittedBlock {
            hash: aitbc_protocol::Hash([height as u8; 32]),
            contents: ExecutedBlock::for_test(height, vec![], vec![]),
        }
    }

    #[test]
    fn hostile_a_block_is_encoded_once_for_every_stream() {
        let blocks = EncodedBlocks::new();
        let b = committed(7);
        let first = blocks.of(&b);
        let second = blocks.of(&b);
        assert!(Arc::ptr_eq(&first, &second), "encoded twice");
        assert_eq!(first.block.as_ref().map(|i| i.height), Some(7));
        // Only the newest blocks are kept.
        for h in 8..8 + ENCODED_BLOCKS as u64 {
            blocks.of(&committed(h));
        }
        assert!(blocks.kept(7).is_none());
        assert!(blocks.kept(8 + ENCODED_BLOCKS as u64 - 1).is_some());
    }

    #[tokio::test]
    async fn hostile_a_client_that_stops_reading_has_its_stream_closed() {
        let (tx, rx) = mpsc::channel(1);
        send(&tx, 1, Duration::from_millis(20)).await.unwrap();
        // The queue is full and nobody reads: the stream ends as stalled, not after forever.
        assert_eq!(
            send(&tx, 2, Duration::from_millis(20)).await,
            Err(Ended::Stalled)
        );
        drop(rx);
        assert_eq!(
            send(&tx, 3, Duration::from_millis(20)).await,
            Err(Ended::ClientGone)
        );
    }

    fn kept(sizes: &[(u64, usize)]) -> BTreeMap<u64, ((), usize)> {
        sizes.iter().map(|(h, s)| (*h, ((), *s))).collect()
    }

    #[test]
    fn eviction_drops_the_lowest_heights_beyond_the_count() {
        let mut k = kept(&[(1, 1), (2, 1), (3, 1), (4, 1)]);
        evict(&mut k, 2, usize::MAX);
        assert_eq!(k.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn eviction_keeps_within_the_byte_budget_but_always_the_newest() {
        let mut k = kept(&[(1, 10), (2, 10), (3, 10)]);
        evict(&mut k, 8, 25);
        assert_eq!(k.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        let mut huge = kept(&[(5, 100), (6, 1000)]);
        evict(&mut huge, 8, 25);
        assert_eq!(huge.keys().copied().collect::<Vec<_>>(), vec![6]);
    }
}
