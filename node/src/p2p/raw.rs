//! A raw peer for hostile tests and the attack benchmark: it speaks the node's peer protocol
//! (or breaks it on purpose) from a key of the caller's choosing. Not used by the node itself.

use super::handshake::{proof_bytes, Hello, Side};
use super::pb::{peer_client::PeerClient, Envelope, Kind};
use super::signing_bytes;
use aitbc_protocol::{Keypair, PublicKey};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Streaming;

/// An envelope signed by `key` as the node signs its own.
pub fn signed(key: &Keypair, chain_id: &str, kind: Kind, payload: Vec<u8>) -> Envelope {
    Envelope {
        kind: kind as i32,
        sender: key.public().0.to_vec(),
        signature: key
            .sign(&signing_bytes(chain_id, kind as i32, &payload))
            .0
            .to_vec(),
        payload,
    }
}

/// A peer stream opened on a node's p2p port: what we send and what it answers.
pub struct Conn {
    pub out: mpsc::Sender<Envelope>,
    pub inbound: Streaming<Envelope>,
}

impl Conn {
    /// Opens the stream with `first` as our first envelope; the node's refusal (if it refuses
    /// at HELLO) is the error.
    pub async fn open(port: u16, first: Envelope) -> Result<Conn, tonic::Status> {
        let mut client = PeerClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?
            .max_decoding_message_size(super::MAX_PEER_MESSAGE);
        let (out, rx) = mpsc::channel(1024);
        out.send(first)
            .await
            .map_err(|_| tonic::Status::internal("stream closed"))?;
        let inbound = client.exchange(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Conn { out, inbound })
    }

    /// The next envelope, or `None` when the stream ends or nothing comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Envelope> {
        match tokio::time::timeout(wait, self.inbound.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            _ => None,
        }
    }

    /// Whether the node sends anything but handshake envelopes within `wait` (it streams
    /// consensus messages to every admitted peer), as opposed to closing or staying silent.
    pub async fn receives_consensus(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
            match self.next(left).await {
                Some(e) if e.kind == Kind::Consensus as i32 => return true,
                Some(_) => continue,
                None => return false,
            }
        }
        false
    }
}

/// The dialer's HELLO for `key`: unsigned, with a fresh nonce.
pub fn hello(key: &PublicKey, hello: &Hello) -> Envelope {
    Envelope {
        kind: Kind::Hello as i32,
        sender: key.0.to_vec(),
        payload: hello.encode(),
        signature: vec![],
    }
}

/// The dialer's AUTH: `signer` signs the acceptor's nonce, claiming key `claimed`.
pub fn auth(
    signer: &Keypair,
    claimed: &PublicKey,
    chain_id: &str,
    acceptor: &PublicKey,
    acceptor_nonce: &[u8; 32],
    own_nonce: &[u8; 32],
) -> Envelope {
    let proof = proof_bytes(
        Side::Dialer,
        chain_id,
        &claimed.0,
        &acceptor.0,
        acceptor_nonce,
        own_nonce,
    );
    Envelope {
        kind: Kind::Auth as i32,
        sender: claimed.0.to_vec(),
        payload: vec![],
        signature: signer.sign(&proof).0.to_vec(),
    }
}

/// A full, honest handshake as `key`. Returns the connection, the node's key and nonce, and
/// the AUTH we sent (for replay tests).
pub async fn handshake(
    port: u16,
    key: &Keypair,
    chain_id: &str,
) -> anyhow::Result<(Conn, PublicKey, Hello, Envelope)> {
    use anyhow::{anyhow, ensure};
    let mine = Hello::fresh(chain_id);
    let mut conn = Conn::open(port, hello(&key.public(), &mine))
        .await
        .map_err(|s| anyhow!("the node refused the HELLO: {s}"))?;
    let theirs_env = conn
        .next(Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow!("no HELLO from the node"))?;
    let node_key = PublicKey(
        theirs_env
            .sender
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("the node's HELLO has no 32-byte key"))?,
    );
    let theirs =
        Hello::decode(&theirs_env.payload).ok_or_else(|| anyhow!("malformed HELLO payload"))?;
    let proof = proof_bytes(
        Side::Acceptor,
        chain_id,
        &node_key.0,
        &key.public().0,
        &mine.nonce,
        &theirs.nonce,
    );
    let sig = aitbc_protocol::crypto::Signature(
        theirs_env
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("the node's HELLO has no 64-byte signature"))?,
    );
    ensure!(
        node_key.verify(&proof, &sig).is_ok(),
        "the node's HELLO does not prove its key on our nonce"
    );
    let a = auth(
        key,
        &key.public(),
        chain_id,
        &node_key,
        &theirs.nonce,
        &mine.nonce,
    );
    conn.out
        .send(a.clone())
        .await
        .map_err(|_| anyhow!("the stream closed"))?;
    Ok((conn, node_key, theirs, a))
}
