//! Hostile clients of the public API against a real node on loopback: account history for
//! `u32::MAX` entries, more block streams than a client may hold, and a flood of supply audits.
//! Each is answered within the node's limits (docs/ARCHITECTURE.md, "Public API").

mod common;

use aitbc_protocol::pb;
use aitbc_protocol::tx::{Action, Transaction};
use aitbc_protocol::{Amount, Keypair};
use common::{peer, TestNet};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// The node's limits (node/src/api.rs).
const HISTORY_PAGE_MAX: usize = 100;
const BLOCK_STREAMS_PER_CLIENT: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_history_limit_is_capped_and_paged() {
    let mut net = TestNet::new(1, 0, 100);
    net.start(0);
    net.wait_height(0, 1, WAIT).await;
    let c = net.client(0).await;
    let ops = net.genesis_ops();
    let chain_id = c.status().await.unwrap().chain_id;
    let fee: Amount = "0.001".parse().unwrap();
    // 250 transfers: two and a half pages, over several blocks.
    let base = c.account(&ops.address()).await.unwrap().pending_nonce;
    let txs: Vec<_> = (0..250u64)
        .map(|i| {
            Transaction {
                chain_id: chain_id.clone(),
                sender: ops.public(),
                nonce: base + i,
                fee,
                action: Action::Transfer {
                    to: Keypair::generate().address(),
                    amount: Amount(1),
                },
            }
            .sign(&ops)
        })
        .collect();
    for chunk in txs.chunks(50) {
        for r in c.submit_many(chunk).await.unwrap() {
            r.unwrap();
        }
    }
    c.wait(&txs.last().unwrap().hash(), WAIT).await.unwrap();

    // Asking for everything returns one capped page and a token.
    let mut raw = c.raw();
    let first = raw
        .get_account_history(pb::GetAccountHistoryRequest {
            address: ops.address().to_string(),
            limit: u32::MAX,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.transactions.len(), HISTORY_PAGE_MAX);
    assert!(!first.next_page_token.is_empty());

    // Following the tokens walks the whole history once, newest first, without overlap.
    let mut all = first.transactions.clone();
    let mut token = first.next_page_token.clone();
    let mut pages = 1;
    while !token.is_empty() {
        let page = raw
            .get_account_history(pb::GetAccountHistoryRequest {
                address: ops.address().to_string(),
                limit: u32::MAX,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.transactions.len() <= HISTORY_PAGE_MAX);
        all.extend(page.transactions);
        token = page.next_page_token;
        pages += 1;
        assert!(pages < 20, "paging does not end");
    }
    let positions: Vec<(u64, u32)> = all.iter().map(|t| (t.height, t.index)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "pages overlap or are out of order: {positions:?}"
    );
    let hashes: HashSet<&str> = all.iter().map(|t| t.tx_hash.as_str()).collect();
    for stx in &txs {
        assert!(
            hashes.contains(stx.hash().to_hex().as_str()),
            "a transaction is missing"
        );
    }
    assert!(pages >= 3);

    // The client follows the tokens up to its limit.
    let some = c.history(&ops.address(), 130).await.unwrap();
    assert_eq!(some.len(), 130);
    assert_eq!(
        some.iter().map(|t| &t.tx_hash).collect::<Vec<_>>(),
        all[..130].iter().map(|t| &t.tx_hash).collect::<Vec<_>>()
    );
    let everything = c.history(&ops.address(), 10_000).await.unwrap();
    assert_eq!(everything.len(), all.len());

    // A forged token is refused with a reason, not taken for a position.
    let err = raw
        .get_account_history(pb::GetAccountHistoryRequest {
            address: ops.address().to_string(),
            limit: 10,
            page_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_too_many_block_streams_are_refused() {
    let mut net = TestNet::new(1, 0, 100);
    net.start(0);
    net.wait_height(0, 1, WAIT).await;
    let c = net.client(0).await;
    let mut held = Vec::new();
    for _ in 0..BLOCK_STREAMS_PER_CLIENT {
        held.push(c.subscribe(0).await.unwrap());
    }
    // One more from the same address is refused, saying which limit.
    let err = c
        .raw()
        .subscribe_blocks(pb::SubscribeBlocksRequest { from_height: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("per client address"),
        "{}",
        err.message()
    );
    let http = net.nodes[0].http;
    assert!(peer::metric(http, "aitbc_node_api_block_streams_refused_total").await >= 1.0);
    // The streams held still deliver blocks.
    let b = tokio::time::timeout(WAIT, held[0].message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(b.block.is_some());

    // Closing one frees its slot.
    drop(held.pop());
    let start = Instant::now();
    let reopened = loop {
        match c.subscribe(0).await {
            Ok(s) => break s,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "a closed stream's slot was not released: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(reopened);
    // Unary calls are not affected.
    c.status().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_supply_flood_costs_no_account_scan() {
    let mut net = TestNet::new(1, 0, 100);
    net.start(0);
    net.wait_height(0, 1, WAIT).await;
    let c = net.client(0).await;
    let http = net.nodes[0].http;
    let scans = || peer::metric(http, "aitbc_node_api_supply_scans_total");
    // Money moves first, so the kept total has changed since genesis.
    let ops = net.genesis_ops();
    let fee: Amount = "0.001".parse().unwrap();
    for _ in 0..3 {
        let to = Keypair::generate().address();
        let amount = "2".parse().unwrap();
        c.send_and_wait(&ops, Action::Transfer { to, amount }, fee, WAIT)
            .await
            .unwrap();
    }
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.supply().await.unwrap() })
        })
        .collect();
    for call in calls {
        let s = call.await.unwrap();
        assert!(s.conserved, "{s:?}");
        // Genesis-ops, the scheduler's and the three new accounts.
        assert!(s.accounts >= 4, "{s:?}");
    }
    // Every block keeps the balance total: 64 audits read it and scan nothing (before, each
    // call scanned every account).
    assert_eq!(scans().await, 0.0);
}

/// A client that keeps reading past its budget, many reads at once, is paced, then refused, then
/// cut off (its connection closed and new ones closed at accept), while a client from another
/// address is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_client_that_ignores_refusals_is_cut_off_and_others_are_served() {
    let mut net = TestNet::new(1, 0, 100);
    net.start(0);
    net.wait_height(0, 1, WAIT).await;
    let honest = net.client(0).await;
    let endpoint = format!("http://127.0.0.1:{}", net.nodes[0].rpc);
    let greedy_addr: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let connect = move || {
        let endpoint = endpoint.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)
                .unwrap()
                .local_address(Some(greedy_addr))
                .connect()
                .await;
            channel.map(pb::chain_client::ChainClient::new)
        }
    };
    let ops = net.genesis_ops().address().to_string();
    let history = move || pb::GetAccountHistoryRequest {
        address: ops.clone(),
        limit: 10,
        page_token: String::new(),
    };
    // 256 reads at once on one connection, each repeated until the node stops answering.
    let greedy = connect().await.unwrap();
    let loops: Vec<_> = (0..256)
        .map(|_| {
            let (mut c, history) = (greedy.clone(), history.clone());
            tokio::spawn(async move {
                let (mut served, mut refused) = (0u32, 0u32);
                let deadline = Instant::now() + WAIT;
                while Instant::now() < deadline {
                    match c.get_account_history(history()).await {
                        Ok(_) => served += 1,
                        Err(e) if e.code() == tonic::Code::ResourceExhausted => refused += 1,
                        Err(_) => return Some((served, refused)),
                    }
                }
                None
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for l in loops {
        let (s, r) = l
            .await
            .unwrap()
            .expect("the greedy client was never cut off");
        served += s;
        refused += r;
    }
    assert!(served >= 100, "the burst was not served: {served}");
    assert!(refused >= 100, "cut off before being refused: {refused}");
    // A new connection from the banned address gets nothing either.
    let again = match connect().await {
        Ok(mut c) => c
            .get_node_status(pb::GetNodeStatusRequest {})
            .await
            .map(|_| ()),
        Err(_) => Ok(()),
    };
    assert!(
        again.is_err(),
        "a banned address was served on a new connection"
    );
    // Another address is served throughout.
    honest.status().await.unwrap();
    let page = honest.raw().get_account_history(history()).await;
    assert!(page.is_ok(), "{page:?}");
    let http = net.nodes[0].http;
    assert!(peer::metric(http, "aitbc_node_api_clients_banned_total").await >= 1.0);
}
