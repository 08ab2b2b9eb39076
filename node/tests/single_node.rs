//! One validator as a real process: drive it over gRPC, kill -9 it under load, restart it, and
//! check that everything reported committed survived with the same block hashes and state roots.

mod common;

use aitbc_protocol::tx::{Action, Runtime, ServiceType, Transaction};
use aitbc_protocol::{Amount, Keypair};
use common::TestNet;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_survive_kill_9_and_restart() {
    let mut net = TestNet::new(1, 0, 100);
    net.start(0);
    net.wait_height(0, 1, WAIT).await;
    let c = net.client(0).await;
    let ops = net.genesis_ops();
    let status = c.status().await.unwrap();

    // A marketplace flow first: listing, bid under price refused with its reason.
    let provider = Keypair::generate();
    let fee: Amount = "0.001".parse().unwrap();
    c.send_and_wait(
        &ops,
        Action::Transfer {
            to: provider.address(),
            amount: "50".parse().unwrap(),
        },
        fee,
        WAIT,
    )
    .await
    .unwrap();
    let listed = c
        .send_and_wait(
            &provider,
            Action::CreateListing {
                name: "Test AI Service".into(),
                service_type: ServiceType::AiInference,
                price: "10".parse().unwrap(),
                description: "demo".into(),
                parameters: vec![],
                runtime: Runtime::default(),
            },
            fee,
            WAIT,
        )
        .await
        .unwrap();
    let listing_id = match &listed.receipt.events[0] {
        aitbc_protocol::model::Event::ListingCreated { listing_id, .. } => listing_id.clone(),
        e => panic!("unexpected event {e:?}"),
    };
    let err = c
        .send(
            &ops,
            Action::PlaceBid {
                listing_id: listing_id.clone(),
                amount: "5".parse().unwrap(),
            },
            fee,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("below the listing's price"),
        "{err}"
    );
    let err = c
        .send(
            &ops,
            Action::PlaceBid {
                listing_id: "svc-unknown".into(),
                amount: "5".parse().unwrap(),
            },
            fee,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown listing"), "{err}");

    // Load: pre-signed transfers with consecutive nonces, submitted while a watcher records every
    // commit it sees; the node is killed with SIGKILL in the middle.
    let base = c.account(&ops.address()).await.unwrap().pending_nonce;
    let txs: Vec<_> = (0..600u64)
        .map(|i| {
            Transaction {
                chain_id: status.chain_id.clone(),
                sender: ops.public(),
                nonce: base + i,
                fee,
                action: Action::Transfer {
                    to: Keypair::generate().address(),
                    amount: Amount(1_000 + i as u128),
                },
            }
            .sign(&ops)
        })
        .collect();
    let mut submitted = Vec::new();
    for stx in &txs[..400] {
        if let Ok(h) = c.submit(stx).await {
            submitted.push(h);
        }
    }
    // Record what the client has seen committed, with heights.
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for h in &submitted[..200] {
        let done = c.wait(h, WAIT).await.unwrap();
        assert!(done.receipt.error.is_none(), "{:?}", done.receipt.error);
        seen.insert(h.to_hex(), done.height);
    }
    let top = c.status().await.unwrap();
    let mut roots = BTreeMap::new();
    for h in 0..=top.height {
        let b = c.block(h).await.unwrap();
        roots.insert(h, (b.hash, b.state_root));
    }
    for stx in &txs[400..] {
        let _ = c.submit(stx).await;
    }
    net.kill9(0);

    net.start(0);
    let c = net.client(0).await;
    net.wait_height(0, top.height + 1, WAIT).await;
    for (h, height) in &seen {
        let info = c.transaction(&h.parse().unwrap(), true).await.unwrap();
        assert_eq!(info.status, "committed", "tx {h} lost after kill -9");
        assert_eq!(info.height, *height, "tx {h} moved to another block");
        assert!(!info.proof.is_empty());
    }
    // The account's history (an index rebuilt from the chain after the kill) lists them too,
    // newest first.
    let history = c.history(&ops.address(), 10_000).await.unwrap();
    let listed: Vec<(u64, u32)> = history.iter().map(|t| (t.height, t.index)).collect();
    let mut newest_first = listed.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, newest_first, "history out of order");
    let in_history: std::collections::HashSet<&str> =
        history.iter().map(|t| t.tx_hash.as_str()).collect();
    for h in seen.keys() {
        assert!(
            in_history.contains(h.as_str()),
            "tx {h} missing from history after kill -9"
        );
    }
    for (h, (hash, root)) in &roots {
        let b = c.block(*h).await.unwrap();
        assert_eq!(&b.hash, hash, "block {h} changed after restart");
        assert_eq!(
            &b.state_root, root,
            "state root at {h} changed after restart"
        );
    }
    // The chain goes on and accepts new work after the restart.
    c.send_and_wait(
        &ops,
        Action::Transfer {
            to: provider.address(),
            amount: "1".parse().unwrap(),
        },
        fee,
        WAIT,
    )
    .await
    .unwrap();
    let supply = c.supply().await.unwrap();
    assert!(supply.conserved, "supply not conserved: {supply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_are_refused_with_a_reason() {
    let mut net = TestNet::new(1, 0, 100);
    net.start(0);
    net.wait_height(0, 1, WAIT).await;
    let c = net.client(0).await;
    let ops = net.genesis_ops();
    let fee: Amount = "0.001".parse().unwrap();
    let mk = |chain: &str, nonce: u64| Transaction {
        chain_id: chain.into(),
        sender: ops.public(),
        nonce,
        fee,
        action: Action::Transfer {
            to: Keypair::generate().address(),
            amount: Amount(1),
        },
    };
    // malformed bytes
    let raw = c.raw();
    let err = raw
        .clone()
        .submit_transaction(aitbc_protocol::pb::SubmitTransactionRequest {
            transaction: vec![1, 2, 3],
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("malformed"), "{}", err.message());
    // wrong chain
    let err = c
        .submit(&mk("other-chain", 0).sign(&ops))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wrong chain"), "{err}");
    // bad signature
    let mut stx = mk("aitbc-test", 0).sign(&ops);
    stx.signature = Keypair::generate().sign(b"x");
    assert!(c
        .submit(&stx)
        .await
        .unwrap_err()
        .to_string()
        .contains("bad signature"));
    // stale nonce after one commit
    let first = mk("aitbc-test", 0).sign(&ops);
    let h = c.submit(&first).await.unwrap();
    c.wait(&h, WAIT).await.unwrap();
    let err = c.submit(&mk("aitbc-test", 0).sign(&ops)).await.unwrap_err();
    assert!(err.to_string().contains("stale nonce"), "{err}");
    // insufficient funds
    let poor = Keypair::generate();
    let err = c
        .send(
            &poor,
            Action::Transfer {
                to: ops.address(),
                amount: Amount(1),
            },
            fee,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("insufficient funds"), "{err}");
}
