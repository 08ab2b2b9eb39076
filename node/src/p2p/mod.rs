//! HotStuff's `Network` over tonic. Every connection is one bidirectional gRPC stream opened by
//! a challenge-response handshake (`handshake.rs`) in which each side proves its key on a fresh
//! nonce; only validators of the current set and allowed listener keys are admitted
//! (`policy.rs`), everyone else is refused at HELLO before any signature check. Every later
//! envelope is signed too, so a peer cannot speak for another key, and consensus progress
//! messages are taken from validators only. Queues are bounded in messages and bytes: a slow
//! peer loses messages (HotStuff recovers through timeouts and block sync) instead of
//! exhausting memory. Outbound connections reconnect with exponential backoff.

pub mod handshake;
mod lanes;
pub mod policy;
pub mod raw;

use crate::metrics::NodeMetrics;
use aitbc_protocol::{Keypair, PublicKey};
use borsh010::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Verifier, VerifyingKey};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use handshake::{proof_bytes, Hello, Side};
use hotstuff_rs::networking::messages::Message;
use hotstuff_rs::networking::network::Network;
use hotstuff_rs::types::{update_sets::ValidatorSetUpdates, validator_set::ValidatorSet};
use lanes::{Lane, Lanes, PushError};
use parking_lot::{Mutex, RwLock};
use policy::PeerPolicy;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
/// Encoded bytes waiting in the consensus inbox at most (a peer may send messages up to
/// [`MAX_PEER_MESSAGE`]: without this, 8,192 of them would be hundreds of GB).
pub const INBOX_BYTES: usize = 256 * 1024 * 1024;
/// Encoded bytes queued for one connection at most (block-sync responses are large).
pub const PEER_QUEUE_BYTES: usize = 96 * 1024 * 1024;
/// Largest peer message. A block's transactions are at most 2 MiB
/// ([`crate::app::MAX_BLOCK_TX_BYTES`]) and a sync response carries at most 16 blocks.
pub const MAX_PEER_MESSAGE: usize = 40 * 1024 * 1024;
/// How long a dialer has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at most (each holds a stream until it authenticates or times out).
const MAX_HANDSHAKES: usize = 64;
/// Open connections per peer key at most (two validators usually hold two: each dials one).
const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// Gossip batches waiting for admission at most, and the threads admitting them.
const GOSSIP_BACKLOG: usize = 32;
const GOSSIP_WORKERS: usize = 2;
/// Block-sync requests one peer may have answered per second (and in a burst). An honest
/// sync client sends one and waits for its answer; each answer is up to 16 blocks to read,
/// encode and sign, so a peer flooding requests would otherwise take the node's CPU.
const SYNC_REQUESTS_PER_SECOND: NonZeroU32 = match NonZeroU32::new(10) {
    Some(n) => n,
    None => panic!("a positive rate"),
};
/// How long a dialer waits before trying a node that refused its key again.
const REFUSED_DIAL_BACKOFF: Duration = Duration::from_secs(30);

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

/// One open connection's sending side.
struct Outbox {
    id: u64,
    lanes: Lanes,
}

/// A consensus message for HotStuff, with the bytes it counts against [`INBOX_BYTES`].
type Inbound = (VerifyingKey, Message, usize);

/// Why an outbound connection ended.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("the peer refused our key: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<tonic::transport::Error> for DialError {
    fn from(e: tonic::transport::Error) -> Self {
        DialError::Failed(e.to_string())
    }
}

impl From<Status> for DialError {
    fn from(s: Status) -> Self {
        match s.code() {
            tonic::Code::PermissionDenied => DialError::Refused(s.message().to_string()),
            _ => DialError::Failed(s.to_string()),
        }
    }
}

struct Shared {
    me: Keypair,
    chain_id: String,
    policy: PeerPolicy,
    /// Open streams per peer key. Two validators usually hold two connections (each dialled one);
    /// both stay registered and messages go out on the first that accepts them.
    outboxes: RwLock<HashMap<[u8; 32], Vec<Outbox>>>,
    peers_seen: RwLock<HashMap<[u8; 32], Instant>>,
    inbox_tx: std_mpsc::SyncSender<Inbound>,
    inbox_rx: Mutex<std_mpsc::Receiver<Inbound>>,
    inbox_bytes: AtomicUsize,
    /// Gossip batches waiting for the admission workers (see [`PeerNetwork::set_tx_sink`]).
    gossip_admission: RwLock<Option<std_mpsc::SyncSender<Vec<Vec<u8>>>>>,
    /// Handshakes that may be in progress at once.
    handshakes: Arc<tokio::sync::Semaphore>,
    fault: FaultSwitch,
    metrics: Arc<NodeMetrics>,
    next_id: AtomicU64,
    /// Transactions waiting to be gossiped in the next batch.
    gossip_buffer: Mutex<Vec<Vec<u8>>>,
    /// Block-sync request budget per admitted peer key (a token bucket, `governor`).
    sync_budget: DefaultKeyedRateLimiter<[u8; 32]>,
    /// Decompressed keys of envelope senders (admitted peers: a handful), so that
    /// authenticating an envelope costs one verification and no point decompression.
    envelope_keys: Mutex<HashMap<[u8; 32], VerifyingKey>>,
}

#[derive(Clone)]
pub struct PeerNetwork {
    shared: Arc<Shared>,
    my_vk: VerifyingKey,
}

/// The bytes an envelope of `kind` carrying `payload` is signed over.
pub fn signing_bytes(chain_id: &str, kind: i32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(SIGNING_DOMAIN.len() + chain_id.len() + payload.len() + 8);
    b.extend_from_slice(SIGNING_DOMAIN);
    b.push(0);
    b.extend_from_slice(&(chain_id.len() as u32).to_le_bytes());
    b.extend_from_slice(chain_id.as_bytes());
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

/// Whether a consensus payload is a progress message (proposal, vote, view change, advert):
/// borsh writes the `Message` variant first, and `ProgressMessage` is variant 0. Only
/// validators may send these; block-sync requests and responses (variant 1) come from any
/// admitted peer.
fn is_progress_message(payload: &[u8]) -> bool {
    payload.first() == Some(&0)
}

/// Whether a consensus payload is a block-sync request (`Message::BlockSyncMessage`, variant 1,
/// holding `BlockSyncMessage::BlockSyncRequest`, variant 0).
fn is_sync_request(payload: &[u8]) -> bool {
    payload.get(..2) == Some(&[1, 0])
}

/// [`SYNC_REQUESTS_PER_SECOND`] per peer key, in bursts of as many.
fn sync_budget() -> DefaultKeyedRateLimiter<[u8; 32]> {
    RateLimiter::keyed(Quota::per_second(SYNC_REQUESTS_PER_SECOND))
}

impl PeerNetwork {
    /// The peer network of key `me` on `chain_id`, admitting peers by `policy`.
    pub fn new(
        me: Keypair,
        chain_id: String,
        policy: PeerPolicy,
        fault: FaultSwitch,
        metrics: Arc<NodeMetrics>,
    ) -> PeerNetwork {
        let (inbox_tx, inbox_rx) = std_mpsc::sync_channel(INBOX_QUEUE);
        let my_vk = *me.signing_key().as_ref();
        let shared = Shared {
            me,
            chain_id,
            policy,
            outboxes: RwLock::new(HashMap::new()),
            peers_seen: RwLock::new(HashMap::new()),
            inbox_tx,
            inbox_rx: Mutex::new(inbox_rx),
            inbox_bytes: AtomicUsize::new(0),
            gossip_admission: RwLock::new(None),
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            fault,
            metrics,
            next_id: AtomicU64::new(1),
            gossip_buffer: Mutex::new(Vec::new()),
            envelope_keys: Mutex::new(HashMap::new()),
            sync_budget: sync_budget(),
        };
        PeerNetwork {
            shared: Arc::new(shared),
            my_vk,
        }
    }

    /// Where transactions gossiped by peers go (the mempool). A small pool of threads admits
    /// them (each batch verifies up to thousands of signatures); when they fall behind, further
    /// batches are dropped and counted rather than queued without bound (pending transactions
    /// are gossiped again every few seconds).
    pub fn set_tx_sink(&self, sink: TxSink) {
        let (tx, rx) = std_mpsc::sync_channel::<Vec<Vec<u8>>>(GOSSIP_BACKLOG);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..GOSSIP_WORKERS {
            let (rx, sink) = (rx.clone(), sink.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("gossip-admit-{i}"))
                .spawn(move || loop {
                    let Ok(batch) = rx.lock().recv() else { return };
                    sink(batch);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a gossip admission thread");
            }
        }
        *self.shared.gossip_admission.write() = Some(tx);
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

    /// A handshake envelope of ours: `signature` is a proof over [`proof_bytes`] (or nothing,
    /// for the dialer's opening HELLO).
    fn handshake_envelope(&self, kind: Kind, payload: Vec<u8>, proof: Option<Vec<u8>>) -> Envelope {
        Envelope {
            kind: kind as i32,
            sender: self.my_vk.to_bytes().to_vec(),
            payload,
            signature: proof
                .map(|b| self.shared.me.sign(&b).0.to_vec())
                .unwrap_or_default(),
        }
    }

    /// Queues `env` for peer `to` on its oldest open connection (one stream per peer keeps that
    /// peer's messages in order); a full queue drops the message and counts it.
    fn push(&self, to: &[u8; 32], env: Envelope, lane: Lane) {
        let boxes = self.shared.outboxes.read();
        let mut env = Some(env);
        for ob in boxes.get(to).into_iter().flatten() {
            match ob
                .lanes
                .try_push(env.take().expect("envelope present"), lane)
            {
                Ok(()) => return,
                Err(PushError::Full) => break,
                Err(PushError::Closed(e)) => env = Some(e),
            }
        }
        self.shared.metrics.peer_messages_dropped.inc();
    }

    /// Hands a consensus message to HotStuff, unless the inbox is full in messages or bytes.
    fn deliver(&self, from: VerifyingKey, msg: Message, bytes: usize) {
        let inbox = &self.shared.inbox_bytes;
        if inbox.fetch_add(bytes, Ordering::Relaxed) + bytes > INBOX_BYTES {
            inbox.fetch_sub(bytes, Ordering::Relaxed);
            self.shared.metrics.peer_messages_dropped.inc();
            return;
        }
        if self.shared.inbox_tx.try_send((from, msg, bytes)).is_err() {
            inbox.fetch_sub(bytes, Ordering::Relaxed);
            self.shared.metrics.peer_messages_dropped.inc();
        }
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

    /// Checks `signature` by `key` over `message`.
    fn signed_by(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        // Envelopes are transport authentication, checked one at a time, never part of the
        // chain's state: ed25519-dalek's (cofactorless) check is deterministic here and cheaper
        // than ZIP-215's, which transaction signatures use (see aitbc_protocol::crypto).
        self.envelope_key(key).is_some_and(|vk| {
            vk.verify(message, &ed25519_dalek::Signature::from_bytes(&sig))
                .is_ok()
        })
    }

    /// Verifies an envelope and returns its sender.
    fn verify(&self, env: &Envelope) -> Option<PublicKey> {
        let sender: [u8; 32] = env.sender.as_slice().try_into().ok()?;
        let key = PublicKey(sender);
        let message = signing_bytes(&self.shared.chain_id, env.kind, &env.payload);
        if !self.signed_by(&key, &message, &env.signature) {
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
        // Only admitted peers get here, but bound it anyway.
        if keys.len() >= MAX_ENVELOPE_KEYS {
            keys.clear();
        }
        keys.insert(key.0, vk);
        Some(vk)
    }

    /// A HELLO's sender and payload, if it is one for our chain from another key.
    fn parse_hello(&self, env: &Envelope) -> Option<(PublicKey, Hello)> {
        if env.kind != Kind::Hello as i32 {
            return None;
        }
        let key = PublicKey(env.sender.as_slice().try_into().ok()?);
        let hello = Hello::decode(&env.payload)?;
        if hello.chain_id != self.shared.chain_id || key.0 == self.my_vk.to_bytes() {
            return None;
        }
        Some((key, hello))
    }

    /// Acceptor, step 2: who is dialling, refused at once unless its key has a role here.
    #[allow(clippy::result_large_err)]
    fn accept_hello(&self, env: &Envelope) -> Result<(PublicKey, Hello), Status> {
        let (key, hello) = self.parse_hello(env).ok_or_else(|| {
            Status::invalid_argument(format!(
                "expected a HELLO for chain {} from another key",
                self.shared.chain_id
            ))
        })?;
        if let Err(refusal) = self.shared.policy.admit(&key, Instant::now()) {
            self.shared.metrics.peers_refused.inc();
            tracing::debug!(peer = %key, reason = %refusal, "refused a peer at HELLO");
            return Err(Status::permission_denied(refusal.to_string()));
        }
        let open = self
            .shared
            .outboxes
            .read()
            .get(&key.0)
            .map_or(0, |v| v.len());
        if open >= MAX_CONNECTIONS_PER_PEER {
            self.shared.metrics.peers_refused.inc();
            return Err(Status::resource_exhausted(format!(
                "key {key} already holds {open} connections"
            )));
        }
        Ok((key, hello))
    }

    /// Dialer, step 3: the acceptor's key has a role here and it signed our nonce.
    fn check_acceptor_hello(
        &self,
        env: &Envelope,
        mine: &Hello,
    ) -> Result<(PublicKey, Hello), DialError> {
        let (key, theirs) = self
            .parse_hello(env)
            .ok_or_else(|| DialError::Failed("the peer sent no valid HELLO".into()))?;
        if self.shared.policy.role(&key.0).is_none() {
            self.shared.metrics.peers_refused.inc();
            return Err(DialError::Failed(format!(
                "the peer's key {key} is neither a validator nor an allowed peer"
            )));
        }
        let proof = proof_bytes(
            Side::Acceptor,
            &self.shared.chain_id,
            &key.0,
            &self.my_vk.to_bytes(),
            &mine.nonce,
            &theirs.nonce,
        );
        if !self.signed_by(&key, &proof, &env.signature) {
            self.shared.metrics.peer_messages_bad_signature.inc();
            return Err(DialError::Failed(format!(
                "the peer did not prove it holds key {key}"
            )));
        }
        Ok((key, theirs))
    }

    /// Acceptor, step 4: the dialer's AUTH signs our nonce.
    fn check_auth(&self, env: &Envelope, key: &PublicKey, mine: &Hello, theirs: &Hello) -> bool {
        if env.kind != Kind::Auth as i32 || env.sender != key.0 {
            return false;
        }
        let proof = proof_bytes(
            Side::Dialer,
            &self.shared.chain_id,
            &key.0,
            &self.my_vk.to_bytes(),
            &mine.nonce,
            &theirs.nonce,
        );
        self.signed_by(key, &proof, &env.signature)
    }

    /// Handles one envelope received from `from` (authenticated by the handshake).
    fn handle(&self, from: &PublicKey, env: Envelope) {
        if self.shared.fault.cut_off() {
            return;
        }
        if env.sender != from.0 {
            self.shared.metrics.peer_messages_bad_signature.inc();
            return;
        }
        let progress = env.kind == Kind::Consensus as i32 && is_progress_message(&env.payload);
        if progress && !self.shared.policy.is_validator(&from.0) {
            // Before the signature check and before anything is buffered.
            self.shared.metrics.peer_messages_not_validator.inc();
            return;
        }
        // Over its budget, a sync request is dropped before its signature is checked: it counts
        // against the stream's own key, so a forged one only spends the forger's budget.
        if env.kind == Kind::Consensus as i32
            && is_sync_request(&env.payload)
            && !self.sync_request_allowed(from)
        {
            self.shared.metrics.peer_sync_requests_limited.inc();
            return;
        }
        let Some(sender) = self.verify(&env) else {
            return;
        };
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
                self.deliver(vk, msg, env.payload.len());
            }
            Ok(Kind::Transactions) => {
                if let Ok(txs) = Vec::<Vec<u8>>::try_from_slice(&env.payload) {
                    self.admit_gossip(txs);
                }
            }
            _ => {}
        }
    }

    /// Takes one block-sync request from `peer`'s budget.
    fn sync_request_allowed(&self, peer: &PublicKey) -> bool {
        let budget = &self.shared.sync_budget;
        if budget.len() > MAX_ENVELOPE_KEYS {
            budget.retain_recent();
        }
        budget.check_key(&peer.0).is_ok()
    }

    /// Queues a gossip batch for the admission workers, or drops it when they are behind.
    fn admit_gossip(&self, txs: Vec<Vec<u8>>) {
        let Some(queue) = self.shared.gossip_admission.read().clone() else {
            return;
        };
        if queue.try_send(txs).is_err() {
            self.shared.metrics.gossip_batches_dropped.inc();
        }
    }

    fn register(&self, key: &PublicKey, lanes: Lanes) -> Option<u64> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut boxes = self.shared.outboxes.write();
            let list = boxes.entry(key.0).or_default();
            if list.len() >= MAX_CONNECTIONS_PER_PEER {
                return None;
            }
            list.push(Outbox { id, lanes });
            self.shared.metrics.peers_connected.set(boxes.len() as u64);
        }
        self.shared.peers_seen.write().insert(key.0, Instant::now());
        Some(id)
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
            let wait = match self.dial_once(&addr).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    backoff
                }
                Err(DialError::Refused(why)) => {
                    tracing::warn!(peer = %addr, reason = %why, "peer refused our key; retrying in {REFUSED_DIAL_BACKOFF:?}");
                    REFUSED_DIAL_BACKOFF
                }
                Err(e) => {
                    tracing::debug!(peer = %addr, error = %e, "peer connection failed");
                    backoff
                }
            };
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn next_envelope(inbound: &mut Streaming<Envelope>) -> Result<Envelope, DialError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, inbound.next()).await {
            Err(_) => Err(DialError::Failed("handshake timed out".into())),
            Ok(None) => Err(DialError::Failed("peer closed during the handshake".into())),
            Ok(Some(r)) => Ok(r?),
        }
    }

    async fn dial_once(&self, addr: &str) -> Result<(), DialError> {
        if self.shared.fault.cut_off() {
            return Err(DialError::Failed("cut off by the fault switch".into()));
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
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE);
        let (lanes, outbound) = Lanes::open(PEER_QUEUE, GOSSIP_QUEUE, PEER_QUEUE_BYTES);
        let mine = Hello::fresh(&self.shared.chain_id);
        let hello = self.handshake_envelope(Kind::Hello, mine.encode(), None);
        if lanes.try_push(hello, Lane::Consensus).is_err() {
            return Err(DialError::Failed("connection closed".into()));
        }
        let mut inbound = client.exchange(outbound).await?.into_inner();
        let first = Self::next_envelope(&mut inbound).await?;
        let (key, theirs) = self.check_acceptor_hello(&first, &mine)?;
        let proof = proof_bytes(
            Side::Dialer,
            &self.shared.chain_id,
            &self.my_vk.to_bytes(),
            &key.0,
            &theirs.nonce,
            &mine.nonce,
        );
        let auth = self.handshake_envelope(Kind::Auth, vec![], Some(proof));
        if lanes.try_push(auth, Lane::Consensus).is_err() {
            return Err(DialError::Failed("connection closed".into()));
        }
        let Some(id) = self.register(&key, lanes) else {
            return Err(DialError::Failed(format!(
                "already {MAX_CONNECTIONS_PER_PEER} connections to {key}"
            )));
        };
        tracing::info!(peer = %addr, key = %key, "connected to peer");
        self.pump(key, inbound).await;
        self.unregister(&key, id);
        tracing::info!(peer = %addr, "peer connection closed");
        Ok(())
    }

    pub fn server(&self) -> pb::peer_server::PeerServer<PeerService> {
        pb::peer_server::PeerServer::new(PeerService { net: self.clone() })
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }

    /// Acceptor, after its HELLO went out: registers the connection once the dialer's AUTH
    /// proves its key, or drops it (closing the stream) when the AUTH is wrong or late.
    async fn finish_accept(
        self,
        key: PublicKey,
        mine: Hello,
        theirs: Hello,
        lanes: Lanes,
        mut inbound: Streaming<Envelope>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let authenticated = matches!(
            Self::next_envelope(&mut inbound).await,
            Ok(env) if self.check_auth(&env, &key, &mine, &theirs)
        );
        drop(permit);
        if !authenticated {
            self.shared.metrics.peers_refused.inc();
            tracing::debug!(peer = %key, "peer failed the handshake (no valid AUTH for our nonce)");
            return;
        }
        let Some(id) = self.register(&key, lanes) else {
            return;
        };
        self.pump(key, inbound).await;
        self.unregister(&key, id);
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
        let Ok(permit) = net.shared.handshakes.clone().try_acquire_owned() else {
            net.shared.metrics.peers_refused.inc();
            return Err(Status::resource_exhausted(
                "too many peer handshakes in progress; retry shortly",
            ));
        };
        let mut inbound = request.into_inner();
        let first = PeerNetwork::next_envelope(&mut inbound)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (key, theirs) = net.accept_hello(&first)?;
        let mine = Hello::fresh(&net.shared.chain_id);
        let proof = proof_bytes(
            Side::Acceptor,
            &net.shared.chain_id,
            &net.my_vk.to_bytes(),
            &key.0,
            &theirs.nonce,
            &mine.nonce,
        );
        let (lanes, outbound) = Lanes::open(PEER_QUEUE, GOSSIP_QUEUE, PEER_QUEUE_BYTES);
        let hello = net.handshake_envelope(Kind::Hello, mine.encode(), Some(proof));
        if lanes.try_push(hello, Lane::Consensus).is_err() {
            return Err(Status::internal("stream closed"));
        }
        tokio::spawn(net.finish_accept(key, mine, theirs, lanes, inbound, permit));
        Ok(Response::new(Box::pin(outbound.map(Ok))))
    }
}

impl Network for PeerNetwork {
    fn init_validator_set(&mut self, vs: ValidatorSet) {
        self.shared
            .policy
            .set_validators(vs.validators().map(|v| v.to_bytes()));
    }

    fn update_validator_set(&mut self, updates: ValidatorSetUpdates) {
        for (vk, _) in updates.inserts() {
            self.shared.policy.add_validator(vk.to_bytes());
        }
        for vk in updates.deletes() {
            self.shared.policy.remove_validator(&vk.to_bytes());
        }
    }

    fn broadcast(&mut self, message: Message) {
        if let Ok(payload) = message.try_to_vec() {
            // Deliver to ourselves as well: HotStuff counts its own vote and proposal.
            self.deliver(self.my_vk, message, 0);
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
            self.deliver(peer, message, 0);
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
        let (from, msg, bytes) = self
            .shared
            .inbox_rx
            .lock()
            .recv_timeout(Duration::from_millis(10))
            .ok()?;
        self.shared.inbox_bytes.fetch_sub(bytes, Ordering::Relaxed);
        Some((from, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_messages_are_told_from_block_sync_by_their_first_byte() {
        use hotstuff_rs::block_sync::messages::{
            AdvertisePC, BlockSyncAdvertiseMessage, BlockSyncRequest,
        };
        use hotstuff_rs::hotstuff::types::PhaseCertificate;
        use hotstuff_rs::types::data_types::{BlockHeight, ChainID};
        let sync: Message = BlockSyncRequest {
            chain_id: ChainID::new(1),
            start_height: BlockHeight::new(0),
            limit: 1,
        }
        .into();
        assert!(!is_progress_message(&sync.try_to_vec().unwrap()));
        assert!(is_sync_request(&sync.try_to_vec().unwrap()));
        let advert: Message = BlockSyncAdvertiseMessage::AdvertisePC(AdvertisePC {
            highest_pc: PhaseCertificate::genesis_pc(),
        })
        .into();
        assert!(is_progress_message(&advert.try_to_vec().unwrap()));
        assert!(!is_sync_request(&advert.try_to_vec().unwrap()));
        assert!(!is_progress_message(&[]));
    }

    #[test]
    fn hostile_sync_requests_are_rate_limited_per_peer() {
        let budget = sync_budget();
        let (flooder, other) = ([1u8; 32], [2u8; 32]);
        let burst = (0..100)
            .filter(|_| budget.check_key(&flooder).is_ok())
            .count();
        assert_eq!(burst, SYNC_REQUESTS_PER_SECOND.get() as usize);
        // Another peer has a budget of its own.
        assert!(budget.check_key(&other).is_ok());
        // A tenth of a second later, one more.
        std::thread::sleep(Duration::from_millis(110));
        assert!(budget.check_key(&flooder).is_ok());
        assert!(budget.check_key(&flooder).is_err());
    }
}
