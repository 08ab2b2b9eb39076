//! The sending side of one connection: two queues, drained consensus-first, so that a proposal
//! or vote never waits behind transaction gossip (a late proposal arrives after its view ended
//! and is dropped by HotStuff, which then stalls until block sync). Both are bounded in
//! envelopes, and together in bytes: block-sync responses run to tens of MB, so a peer that
//! stops reading could otherwise pin gigabytes of them.

use super::pb::Envelope;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Which queue of a connection an envelope goes into.
#[derive(Clone, Copy)]
pub(super) enum Lane {
    Consensus,
    Gossip,
}

/// Why an envelope was not queued.
pub(super) enum PushError {
    /// The queue or the connection's byte budget is full: the envelope is dropped.
    Full,
    /// The connection is gone.
    Closed(Envelope),
}

/// Bytes an envelope holds, roughly (what the byte budget counts).
fn size(env: &Envelope) -> usize {
    env.payload.len() + env.signature.len() + env.sender.len() + 16
}

#[derive(Clone)]
pub(super) struct Lanes {
    consensus: mpsc::Sender<Envelope>,
    gossip: mpsc::Sender<Envelope>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Lanes {
    /// Opens the two queues of a new connection (`consensus` and `gossip` envelopes at most,
    /// `max_bytes` in all) and the stream that drains them, consensus first. The hand-over
    /// channel holds one envelope, so at most one gossip batch can be ahead of a consensus
    /// message that arrives later.
    pub fn open(
        consensus: usize,
        gossip: usize,
        max_bytes: usize,
    ) -> (Lanes, ReceiverStream<Envelope>) {
        let (ctx, mut crx) = mpsc::channel(consensus);
        let (gtx, mut grx) = mpsc::channel(gossip);
        let (out, orx) = mpsc::channel(1);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let drained = queued_bytes.clone();
        tokio::spawn(async move {
            loop {
                let env: Envelope = tokio::select! {
                    biased;
                    Some(e) = crx.recv() => e,
                    Some(e) = grx.recv() => e,
                    else => break,
                };
                let n = size(&env);
                if out.send(env).await.is_err() {
                    break;
                }
                drained.fetch_sub(n, Ordering::Relaxed);
            }
        });
        let lanes = Lanes {
            consensus: ctx,
            gossip: gtx,
            queued_bytes,
            max_bytes,
        };
        (lanes, ReceiverStream::new(orx))
    }

    /// Queues an envelope if its lane and the byte budget have room.
    pub fn try_push(&self, env: Envelope, lane: Lane) -> Result<(), PushError> {
        let n = size(&env);
        if self.queued_bytes.fetch_add(n, Ordering::Relaxed) + n > self.max_bytes {
            self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            return Err(PushError::Full);
        }
        let queue = match lane {
            Lane::Consensus => &self.consensus,
            Lane::Gossip => &self.gossip,
        };
        queue.try_send(env).map_err(|e| {
            self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => PushError::Full,
                mpsc::error::TrySendError::Closed(e) => PushError::Closed(e),
            }
        })
    }

    /// Bytes queued and not yet handed to the connection.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn env(bytes: usize) -> Envelope {
        Envelope {
            kind: 2,
            sender: vec![0; 32],
            payload: vec![0; bytes],
            signature: vec![0; 64],
        }
    }

    #[tokio::test]
    async fn hostile_a_peer_that_stops_reading_pins_a_bounded_number_of_bytes() {
        let (lanes, mut stream) = Lanes::open(1000, 10, 10_000);
        let mut queued = 0;
        for _ in 0..1000 {
            if lanes.try_push(env(1000), Lane::Consensus).is_ok() {
                queued += 1;
            }
        }
        // One envelope can sit in the hand-over channel; the budget holds the rest.
        assert!(queued <= 11, "{queued} envelopes of 1 kB queued");
        assert!(lanes.queued_bytes() <= 10_000);
        // Reading frees the budget again.
        for _ in 0..queued {
            stream.next().await.unwrap();
        }
        tokio::task::yield_now().await;
        assert!(lanes.try_push(env(1000), Lane::Gossip).is_ok());
    }

    #[tokio::test]
    async fn consensus_goes_before_gossip() {
        let (lanes, mut stream) = Lanes::open(10, 10, 1 << 20);
        // Fill the hand-over slot first so the two queues are drained by priority.
        assert!(lanes.try_push(env(1), Lane::Gossip).is_ok());
        tokio::task::yield_now().await;
        assert!(lanes.try_push(env(2), Lane::Gossip).is_ok());
        assert!(lanes.try_push(env(3), Lane::Consensus).is_ok());
        let sizes: Vec<usize> = [
            stream.next().await.unwrap(),
            stream.next().await.unwrap(),
            stream.next().await.unwrap(),
        ]
        .iter()
        .map(|e| e.payload.len())
        .collect();
        assert_eq!(sizes[0], 1);
        assert_eq!(
            &sizes[1..],
            &[3, 2],
            "the consensus message overtakes queued gossip"
        );
    }
}
