//! HotStuff's `Network` over tonic. Every connection is one bidirectional gRPC stream; each side
//! opens with a signed HELLO naming its validator key, and every later envelope is signed too, so
//! a peer cannot speak for another key. Queues are bounded: a slow peer loses messages (HotStuff
//! recovers through timeouts and block sync) instead of exhausting memory. Outbound connections
//! reconnect with exponential backoff.

use crate::metrics::NodeMetrics;
use aitbc_protocol::{Keypair, PublicKey};
use borsh010::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Verifier, VerifyingKey};
use hotstuff_rs::networking::messages::Message;
use hotstuff_rs::networking::network::Network;
use hotstuff_rs::types::{update_sets::ValidatorSetUpdates, validator_set::ValidatorSet};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("aitbc.peer.v1");
}
use pb::{Envelope, Kind};

const SIGNING_DOMAIN: &[u8] = b"aitbc/peer/v1";
/// Capacity of each peer's outbound queue.
pub const PEER_QUEUE: usize = 2048;
/// Capacity of the queue from the network to the consensus thread.
pub const INBOX_QUEUE: usize = 8192;
const HELLO_MAX_AGE_MS: u64 = 60_000;

/// Transactions that arrive from peers go here (into the mempool).
pub type TxSink = Arc<dyn Fn(Vec<Vec<u8>>) + Send + Sync>;

/// Drops all peer traffic while a marker file exists: the fault-injection hook the partition
/// tests use to cut a validator off and heal it.
#[derive(Clone, Default)]
pub struct FaultSwitch(Option<PathBuf>);

impl FaultSwitch {
    pub fn new(path: Option<PathBuf>) -> Self {
        FaultSwitch(path)
    }
    pub fn cut_off(&self) -> bool {
        self.0.as_ref().is_some_and(|p| p.exists())
    }
}

/// Bound on the cache of envelope senders' decompressed keys.
const MAX_ENVELOPE_KEYS: usize = 1024;

/// Capacity of each connection's gossip queue (batches of up to 2048 transactions).
pub const GOSSIP_QUEUE: usize = 64;

/// Which queue of a connection an envelope goes into.
#[derive(Clone, Copy)]
enum Lane {
    Consensus,
    Gossip,
}

/// The sending side of one connection: two queues, drained consensus-first, so that a proposal
/// or vote never waits behind transaction gossip (a late proposal arrives after its view ended
/// and is dropped by HotStuff, which then stalls until block sync).
struct Outbox {
    id: u64,
    consensus: mpsc::Sender<Envelope>,
    gossip: mpsc::Sender<Envelope>,
}

/// Opens the two queues of a new connection and the stream that drains them, consensus first.
/// The hand-over channel holds one envelope, so at most one gossip batch can be ahead of a
/// consensus message that arrives later.
fn lanes() -> (
    mpsc::Sender<Envelope>,
    mpsc::Sender<Envelope>,
    ReceiverStream<Envelope>,
) {
    let (consensus, mut crx) = mpsc::channel(PEER_QUEUE);
    let (gossip, mut grx) = mpsc::channel(GOSSIP_QUEUE);
    let (out, orx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let env = tokio::select! {
                biased;
                Some(e) = crx.recv() => e,
                Some(e) = grx.recv() => e,
                else => break,
            };
            if out.send(env).await.is_err() {
                break;
            }
        }
    });
    (consensus, gossip, ReceiverStream::new(orx))
}

struct Shared {
    me: Keypair,
    chain_id: String,
    /// Open streams per peer key. Two validators usually hold two connections (each dialled one);
    /// both stay registered and messages go out on the first that accepts them.
    outboxes: RwLock<HashMap<[u8; 32], Vec<Outbox>>>,
    peers_seen: RwLock<HashMap<[u8; 32], Instant>>,
    inbox_tx: std_mpsc::SyncSender<(VerifyingKey, Message)>,
    inbox_rx: Mutex<std_mpsc::Receiver<(VerifyingKey, Message)>>,
    tx_sink: RwLock<Option<TxSink>>,
    fault: FaultSwitch,
    metrics: Arc<NodeMetrics>,
    next_id: AtomicU64,
    /// Transactions waiting to be gossiped in the next batch.
    gossip_buffer: Mutex<Vec<Vec<u8>>>,
    /// Decompressed keys of envelope senders (peers: a handful), so that authenticating an
    /// envelope costs one verification and no point decompression.
    envelope_keys: Mutex<HashMap<[u8; 32], VerifyingKey>>,
}

#[derive(Clone)]
pub struct PeerNetwork {
    shared: Arc<Shared>,
    my_vk: VerifyingKey,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn signing_bytes(chain_id: &str, kind: i32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(SIGNING_DOMAIN.len() + chain_id.len() + payload.len() + 8);
    b.extend_from_slice(SIGNING_DOMAIN);
    b.push(0);
    b.extend_from_slice(&(chain_id.len() as u32).to_le_bytes());
    b.extend_from_slice(chain_id.as_bytes());
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

impl PeerNetwork {
    pub fn new(
        me: Keypair,
        chain_id: String,
        fault: FaultSwitch,
        metrics: Arc<NodeMetrics>,
    ) -> PeerNetwork {
        let (inbox_tx, inbox_rx) = std_mpsc::sync_channel(INBOX_QUEUE);
        let my_vk = *me.signing_key().as_ref();
        let shared = Shared {
            me,
            chain_id,
            outboxes: RwLock::new(HashMap::new()),
            peers_seen: RwLock::new(HashMap::new()),
            inbox_tx,
            inbox_rx: Mutex::new(inbox_rx),
            tx_sink: RwLock::new(None),
            fault,
            metrics,
            next_id: AtomicU64::new(1),
            gossip_buffer: Mutex::new(Vec::new()),
            envelope_keys: Mutex::new(HashMap::new()),
        };
        PeerNetwork {
            shared: Arc::new(shared),
            my_vk,
        }
    }

    pub fn set_tx_sink(&self, sink: TxSink) {
        *self.shared.tx_sink.write() = Some(sink);
    }

    /// Keys of peers heard from in the last 30 s.
    pub fn peers_seen(&self) -> Vec<PublicKey> {
        let cutoff = Duration::from_secs(30);
        let mut v: Vec<PublicKey> = self
            .shared
            .peers_seen
            .read()
            .iter()
            .filter(|(_, t)| t.elapsed() < cutoff)
            .map(|(k, _)| PublicKey(*k))
            .collect();
        v.sort();
        v
    }

    fn envelope(&self, kind: Kind, payload: Vec<u8>) -> Envelope {
        let sig = self
            .shared
            .me
            .sign(&signing_bytes(&self.shared.chain_id, kind as i32, &payload));
        Envelope {
            kind: kind as i32,
            sender: self.my_vk.to_bytes().to_vec(),
            payload,
            signature: sig.0.to_vec(),
        }
    }

    fn hello(&self) -> Envelope {
        let mut payload = now_ms().to_le_bytes().to_vec();
        payload.extend_from_slice(self.shared.chain_id.as_bytes());
        self.envelope(Kind::Hello, payload)
    }

    /// Queues `env` for peer `to` on its oldest open connection (one stream per peer keeps that
    /// peer's messages in order); a full queue drops the message and counts it.
    fn push(&self, to: &[u8; 32], env: Envelope, lane: Lane) {
        let boxes = self.shared.outboxes.read();
        let mut env = Some(env);
        for ob in boxes.get(to).into_iter().flatten() {
            let queue = match lane {
                Lane::Consensus => &ob.consensus,
                Lane::Gossip => &ob.gossip,
            };
            match queue.try_send(env.take().expect("envelope present")) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(mpsc::error::TrySendError::Closed(e)) => env = Some(e),
            }
        }
        self.shared.metrics.peer_messages_dropped.inc();
    }

    /// Queues a transaction for the next gossip batch (see [`Self::flush_gossip_forever`]).
    pub fn queue_gossip(&self, tx: Vec<u8>) {
        self.shared.gossip_buffer.lock().push(tx);
    }

    /// Sends queued transactions every few milliseconds as one signed envelope per peer: signing
    /// and verifying per batch instead of per transaction keeps gossip off the crypto budget.
    pub async fn flush_gossip_forever(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let batch = std::mem::take(&mut *self.shared.gossip_buffer.lock());
            for chunk in batch.chunks(2048) {
                self.gossip_transactions(chunk.to_vec());
            }
        }
    }

    /// Sends transactions to every connected peer now (mempool gossip; the mesh is full, so no
    /// re-forwarding is needed).
    pub fn gossip_transactions(&self, txs: Vec<Vec<u8>>) {
        if self.shared.fault.cut_off() || txs.is_empty() {
            return;
        }
        let payload = match borsh010::to_vec(&txs) {
            Ok(p) => p,
            Err(_) => return,
        };
        let env = self.envelope(Kind::Transactions, payload);
        let keys: Vec<[u8; 32]> = self.shared.outboxes.read().keys().copied().collect();
        for k in keys {
            self.push(&k, env.clone(), Lane::Gossip);
        }
    }

    /// Verifies an envelope and returns its sender.
    fn verify(&self, env: &Envelope) -> Option<PublicKey> {
        let sender: [u8; 32] = env.sender.as_slice().try_into().ok()?;
        let sig: [u8; 64] = env.signature.as_slice().try_into().ok()?;
        let key = PublicKey(sender);
        // Envelopes are transport authentication, checked one at a time, never part of the
        // chain's state: ed25519-dalek's (cofactorless) check is deterministic here and cheaper
        // than ZIP-215's, which transaction signatures use (see aitbc_protocol::crypto).
        let ok = self.envelope_key(&key).is_some_and(|vk| {
            vk.verify(
                &signing_bytes(&self.shared.chain_id, env.kind, &env.payload),
                &ed25519_dalek::Signature::from_bytes(&sig),
            )
            .is_ok()
        });
        if !ok {
            self.shared.metrics.peer_messages_bad_signature.inc();
            tracing::debug!(peer = %key, "ignoring peer message with a bad signature");
            return None;
        }
        Some(key)
    }

    fn envelope_key(&self, key: &PublicKey) -> Option<VerifyingKey> {
        if let Some(vk) = self.shared.envelope_keys.lock().get(&key.0) {
            return Some(*vk);
        }
        let vk = key.verifying_key().ok()?;
        let mut keys = self.shared.envelope_keys.lock();
        // Anyone can open a connection and send a HELLO: bound what strangers can add.
        if keys.len() >= MAX_ENVELOPE_KEYS {
            keys.clear();
        }
        keys.insert(key.0, vk);
        Some(vk)
    }

    fn verify_hello(&self, env: &Envelope) -> Option<PublicKey> {
        if env.kind != Kind::Hello as i32 || env.payload.len() < 8 {
            return None;
        }
        let key = self.verify(env)?;
        let ts = u64::from_le_bytes(env.payload[..8].try_into().ok()?);
        let chain = std::str::from_utf8(&env.payload[8..]).ok()?;
        if chain != self.shared.chain_id
            || now_ms().abs_diff(ts) > HELLO_MAX_AGE_MS
            || key.0 == self.my_vk.to_bytes()
        {
            return None;
        }
        Some(key)
    }

    /// Handles one envelope received from `from` (already known from its HELLO).
    fn handle(&self, from: &PublicKey, env: Envelope) {
        if self.shared.fault.cut_off() {
            return;
        }
        let Some(sender) = self.verify(&env) else {
            return;
        };
        if sender != *from {
            self.shared.metrics.peer_messages_bad_signature.inc();
            return;
        }
        self.shared
            .peers_seen
            .write()
            .insert(sender.0, Instant::now());
        match Kind::try_from(env.kind) {
            Ok(Kind::Consensus) => {
                let Ok(msg) = Message::try_from_slice(&env.payload) else {
                    tracing::debug!(peer = %sender, "ignoring consensus message that does not decode");
                    return;
                };
                let Ok(vk) = sender.verifying_key() else {
                    return;
                };
                if self.shared.inbox_tx.try_send((vk, msg)).is_err() {
                    self.shared.metrics.peer_messages_dropped.inc();
                }
            }
            Ok(Kind::Transactions) => {
                if let Ok(txs) = Vec::<Vec<u8>>::try_from_slice(&env.payload) {
                    if let Some(sink) = self.shared.tx_sink.read().clone() {
                        // Admitting a batch verifies up to thousands of signatures: off the
                        // stream's task, so consensus messages behind it are not held up.
                        tokio::task::spawn_blocking(move || sink(txs));
                    }
                }
            }
            _ => {}
        }
    }

    fn register(
        &self,
        key: &PublicKey,
        consensus: mpsc::Sender<Envelope>,
        gossip: mpsc::Sender<Envelope>,
    ) -> u64 {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared
            .outboxes
            .write()
            .entry(key.0)
            .or_default()
            .push(Outbox {
                id,
                consensus,
                gossip,
            });
        self.shared.peers_seen.write().insert(key.0, Instant::now());
        self.shared
            .metrics
            .peers_connected
            .set(self.shared.outboxes.read().len() as u64);
        id
    }

    fn unregister(&self, key: &PublicKey, id: u64) {
        let mut boxes = self.shared.outboxes.write();
        if let Some(list) = boxes.get_mut(&key.0) {
            list.retain(|o| o.id != id);
            if list.is_empty() {
                boxes.remove(&key.0);
            }
        }
        self.shared.metrics.peers_connected.set(boxes.len() as u64);
    }

    /// Reads a connection's inbound stream until it ends.
    async fn pump(&self, key: PublicKey, mut inbound: Streaming<Envelope>) {
        while let Some(item) = inbound.next().await {
            match item {
                Ok(env) => self.handle(&key, env),
                Err(_) => break,
            }
        }
    }

    /// Keeps an outbound connection to `addr` open for as long as the process lives.
    pub async fn dial_forever(self, addr: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.dial_once(&addr).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::debug!(peer = %addr, error = %e, "peer connection failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn dial_once(&self, addr: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.shared.fault.cut_off() {
            return Err("cut off by the fault switch".into());
        }
        let url = if addr.starts_with("http") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await?;
        let mut client = pb::peer_client::PeerClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let (tx, gossip, outbound) = lanes();
        tx.send(self.hello()).await?;
        let mut inbound = client.exchange(outbound).await?.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or("peer closed before its hello")??;
        let key = self
            .verify_hello(&first)
            .ok_or("peer sent an invalid hello")?;
        let id = self.register(&key, tx, gossip);
        tracing::info!(peer = %addr, key = %key, "connected to peer");
        self.pump(key, inbound).await;
        self.unregister(&key, id);
        tracing::info!(peer = %addr, "peer connection closed");
        Ok(())
    }

    pub fn server(&self) -> pb::peer_server::PeerServer<PeerService> {
        pb::peer_server::PeerServer::new(PeerService { net: self.clone() })
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

pub struct PeerService {
    net: PeerNetwork,
}

type EnvelopeStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type ExchangeStream = EnvelopeStream;

    async fn exchange(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let net = self.net.clone();
        if net.shared.fault.cut_off() {
            return Err(Status::unavailable("node is cut off"));
        }
        let mut inbound = request.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("stream closed before hello"))??;
        let key = net
            .verify_hello(&first)
            .ok_or_else(|| Status::unauthenticated("invalid hello"))?;
        let (tx, gossip, outbound) = lanes();
        tx.send(net.hello())
            .await
            .map_err(|_| Status::internal("stream closed"))?;
        let id = net.register(&key, tx, gossip);
        tokio::spawn(async move {
            net.pump(key, inbound).await;
            net.unregister(&key, id);
        });
        Ok(Response::new(Box::pin(outbound.map(Ok))))
    }
}

impl Network for PeerNetwork {
    fn init_validator_set(&mut self, _: ValidatorSet) {}
    fn update_validator_set(&mut self, _: ValidatorSetUpdates) {}

    fn broadcast(&mut self, message: Message) {
        if let Ok(payload) = message.try_to_vec() {
            // Deliver to ourselves as well: HotStuff counts its own vote and proposal.
            if self
                .shared
                .inbox_tx
                .try_send((self.my_vk, message))
                .is_err()
            {
                self.shared.metrics.peer_messages_dropped.inc();
            }
            if self.shared.fault.cut_off() {
                return;
            }
            let env = self.envelope(Kind::Consensus, payload);
            let keys: Vec<[u8; 32]> = self.shared.outboxes.read().keys().copied().collect();
            for k in keys {
                self.push(&k, env.clone(), Lane::Consensus);
            }
        }
    }

    fn send(&mut self, peer: VerifyingKey, message: Message) {
        if peer == self.my_vk {
            if self.shared.inbox_tx.try_send((peer, message)).is_err() {
                self.shared.metrics.peer_messages_dropped.inc();
            }
            return;
        }
        if self.shared.fault.cut_off() {
            return;
        }
        if let Ok(payload) = message.try_to_vec() {
            let env = self.envelope(Kind::Consensus, payload);
            self.push(&peer.to_bytes(), env, Lane::Consensus);
        }
    }

    fn recv(&mut self) -> Option<(VerifyingKey, Message)> {
        self.shared
            .inbox_rx
            .lock()
            .recv_timeout(Duration::from_millis(10))
            .ok()
    }
}
