//! Hostile peers against a real node on loopback: strangers, replayed and impersonated
//! handshakes, consensus messages from non-validators, forged envelopes, and block-sync
//! requests of any size. Each must leave the node up and committing.

mod common;

use aitbc_node::p2p::handshake::Hello;
use aitbc_node::p2p::pb::Kind;
use aitbc_protocol::Keypair;
use borsh010::{BorshDeserialize, BorshSerialize};
use common::peer::{self, Conn};
use common::TestNet;
use hotstuff_rs::block_sync::messages::{BlockSyncMessage, BlockSyncRequest};
use hotstuff_rs::networking::messages::Message;
use hotstuff_rs::types::data_types::BlockHeight;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// One validator, with `listener` allowed as a peer.
async fn net_with_listener(listener: &Keypair) -> (TestNet, String) {
    let mut net = TestNet::new(1, 0, 100);
    net.allow_peers.push(listener.public());
    net.start_all();
    net.wait_height(0, 2, WAIT).await;
    let chain_id = net.client(0).await.status().await.unwrap().chain_id;
    (net, chain_id)
}

async fn still_committing(net: &TestNet) {
    let h = net.client(0).await.status().await.unwrap().height;
    net.wait_height(0, h + 3, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strangers_are_refused_at_hello_and_handshakes_cannot_be_replayed() {
    let listener = Keypair::generate();
    let (net, chain_id) = net_with_listener(&listener).await;
    let (p2p, http) = (net.nodes[0].p2p, net.nodes[0].http);

    // A stranger is refused at HELLO, counted, and then backed off.
    let stranger = Keypair::generate();
    for expect in ["neither a validator", "refused recently"] {
        let hello = peer::hello(&stranger.public(), &Hello::fresh(&chain_id));
        let err = Conn::open(p2p, hello)
            .await
            .err()
            .expect("a stranger must be refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains(expect), "{}", err.message());
    }
    assert!(peer::metric(http, "aitbc_node_peers_refused_total").await >= 2.0);

    // The allowed listener completes the handshake and receives consensus traffic.
    let (mut conn, node_key, _, old_auth) =
        peer::handshake(p2p, &listener, &chain_id).await.unwrap();
    assert!(conn.receives_consensus(Duration::from_secs(10)).await);
    drop(conn);

    // Replaying the listener's AUTH in a new handshake: the node's nonce is fresh, so the old
    // proof does not match it and the node closes the stream without admitting us.
    let mut replay = Conn::open(
        p2p,
        peer::hello(&listener.public(), &Hello::fresh(&chain_id)),
    )
    .await
    .unwrap();
    replay
        .next(Duration::from_secs(5))
        .await
        .expect("the node's HELLO");
    replay.out.send(old_auth).await.unwrap();
    assert!(!replay.receives_consensus(Duration::from_secs(8)).await);

    // Impersonating the validator's own key or the listener's without its secret key.
    let mine = Hello::fresh(&chain_id);
    let mut fake = Conn::open(p2p, peer::hello(&listener.public(), &mine))
        .await
        .unwrap();
    let theirs = fake.next(Duration::from_secs(5)).await.unwrap();
    let theirs = Hello::decode(&theirs.payload).unwrap();
    let forged = peer::auth(
        &stranger,
        &listener.public(),
        &chain_id,
        &node_key,
        &theirs.nonce,
        &mine.nonce,
    );
    fake.out.send(forged).await.unwrap();
    assert!(!fake.receives_consensus(Duration::from_secs(8)).await);
    let refused = peer::metric(http, "aitbc_node_peers_refused_total").await;
    assert!(refused >= 4.0, "failed handshakes are counted ({refused})");
    still_committing(&net).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admitted_listener_cannot_vote_forge_or_ask_for_unbounded_sync() {
    let listener = Keypair::generate();
    let (net, chain_id) = net_with_listener(&listener).await;
    let (p2p, http) = (net.nodes[0].p2p, net.nodes[0].http);
    let validator = common::read_key(&net.nodes[0].key_file);
    let (mut conn, _, _, _) = peer::handshake(p2p, &listener, &chain_id).await.unwrap();
    assert!(conn.receives_consensus(Duration::from_secs(10)).await);

    // Progress messages (proposals, votes, view changes) from a non-validator are dropped
    // before they are verified or buffered; forged envelopes are counted as bad signatures.
    for i in 0..20u8 {
        let progress = [vec![0u8], vec![i; 99]].concat();
        conn.out
            .send(peer::signed(
                &listener,
                &chain_id,
                Kind::Consensus,
                progress,
            ))
            .await
            .unwrap();
        let sync_like = vec![1u8; 100];
        let mut bad = peer::signed(&listener, &chain_id, Kind::Consensus, sync_like.clone());
        bad.signature = Keypair::generate().sign(&sync_like).0.to_vec();
        conn.out.send(bad).await.unwrap();
        // Claims the validator's key on the listener's stream.
        let claimed = peer::signed(&validator, &chain_id, Kind::Consensus, sync_like);
        conn.out.send(claimed).await.unwrap();
    }

    // A block-sync request for u32::MAX blocks gets at most the configured number, and the
    // node stays up (before the fix it tried to allocate for u32::MAX blocks and aborted, and
    // answered max(asked, configured) blocks). The chain first grows past that number.
    net.wait_height(0, 24, WAIT).await;
    let request: Message = BlockSyncRequest {
        chain_id: aitbc_node::node::hotstuff_chain_id(&chain_id),
        start_height: BlockHeight::new(0),
        limit: u32::MAX,
    }
    .into();
    let payload = request.try_to_vec().unwrap();
    conn.out
        .send(peer::signed(&listener, &chain_id, Kind::Consensus, payload))
        .await
        .unwrap();
    let mut blocks = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while blocks.is_none() && tokio::time::Instant::now() < deadline {
        let Some(env) = conn.next(Duration::from_secs(5)).await else {
            break;
        };
        if let Ok(Message::BlockSyncMessage(BlockSyncMessage::BlockSyncResponse(r))) =
            Message::try_from_slice(&env.payload)
        {
            blocks = Some(r.blocks.len());
        }
    }
    let blocks = blocks.expect("a block-sync response");
    assert!(
        blocks == 16,
        "a sync response holds exactly the configured 16 blocks of the 24 there are, got {blocks}"
    );

    assert!(peer::metric(http, "aitbc_node_peer_messages_not_validator_total").await >= 20.0);
    assert!(peer::metric(http, "aitbc_node_peer_messages_bad_signature_total").await >= 40.0);
    still_committing(&net).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_one_key_cannot_hold_more_than_four_connections() {
    let listener = Keypair::generate();
    let (net, chain_id) = net_with_listener(&listener).await;
    let p2p = net.nodes[0].p2p;
    let mut held = Vec::new();
    for i in 0..4 {
        let (mut conn, _, _, _) = peer::handshake(p2p, &listener, &chain_id).await.unwrap();
        // Admitted once the AUTH is in. Traffic for a key goes out on its oldest connection,
        // so only the first one hears consensus; give the others a moment to register.
        if i == 0 {
            assert!(conn.receives_consensus(Duration::from_secs(10)).await);
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        held.push(conn);
    }
    let fifth = Conn::open(
        p2p,
        peer::hello(&listener.public(), &Hello::fresh(&chain_id)),
    )
    .await
    .err()
    .expect("a fifth connection for the same key must be refused");
    assert_eq!(fifth.code(), tonic::Code::ResourceExhausted, "{fifth:?}");
    // Dropping one frees its place.
    drop(held.pop());
    let start = std::time::Instant::now();
    loop {
        match peer::handshake(p2p, &listener, &chain_id).await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(10), "{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    still_committing(&net).await;
}
