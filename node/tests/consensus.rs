//! Four validators (and a listener) as real processes on loopback: agreement, crash faults,
//! loss of quorum, network partition, forged messages.

mod common;

use aitbc_protocol::client::ChainClient;
use aitbc_protocol::tx::{Action, Transaction};
use aitbc_protocol::{Amount, Hash, Keypair};
use common::TestNet;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);

async fn height(net: &TestNet, i: usize) -> u64 {
    net.client(i).await.status().await.unwrap().height
}

/// Every node in `nodes` has the same block hash and state root at every height up to the
/// lowest height among them.
async fn assert_agree(net: &TestNet, nodes: &[usize]) -> u64 {
    let mut clients = Vec::new();
    for &i in nodes {
        clients.push(net.client(i).await);
    }
    let mut top = u64::MAX;
    for c in &clients {
        top = top.min(c.status().await.unwrap().height);
    }
    for h in 0..=top {
        let first = clients[0].block(h).await.unwrap();
        for (k, c) in clients.iter().enumerate().skip(1) {
            let b = c.block(h).await.unwrap();
            assert_eq!(
                b.hash, first.hash,
                "fork at height {h}: node {} vs node {}",
                nodes[0], nodes[k]
            );
            assert_eq!(
                b.state_root, first.state_root,
                "state root differs at height {h}"
            );
        }
    }
    top
}

/// Background load: pre-signed transfers submitted round-robin to the nodes that are up, and the
/// set of transactions the client saw committed (with their heights).
struct Load {
    seen: Arc<Mutex<BTreeMap<Hash, u64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

fn start_load(
    endpoints: Vec<String>,
    up: Arc<Mutex<Vec<bool>>>,
    key: Keypair,
    chain_id: String,
) -> Load {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, st2) = (seen.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut nonce = None;
        let mut i = 0usize;
        while !st2.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            let pick = (0..endpoints.len())
                .map(|k| (i + k) % endpoints.len())
                .find(|k| up.lock().unwrap()[*k]);
            let Some(k) = pick else { break };
            let Ok(c) = ChainClient::connect(&endpoints[k]).await else {
                continue;
            };
            let n = match nonce {
                Some(n) => n,
                None => match c.account(&key.address()).await {
                    Ok(a) => a.pending_nonce,
                    Err(_) => continue,
                },
            };
            let stx = Transaction {
                chain_id: chain_id.clone(),
                sender: key.public(),
                nonce: n,
                fee: "0.001".parse().unwrap(),
                action: Action::Transfer {
                    to: Keypair::generate().address(),
                    amount: Amount(1 + i as u128),
                },
            }
            .sign(&key);
            match c.submit(&stx).await {
                Ok(h) => {
                    nonce = Some(n + 1);
                    if let Ok(done) = c.wait(&h, Duration::from_secs(20)).await {
                        assert!(
                            done.receipt.error.is_none(),
                            "transfer rejected: {:?}",
                            done.receipt.error
                        );
                        s2.lock().unwrap().insert(h, done.height);
                    } else {
                        // Not committed in time (its node died): ask again for the next nonce.
                        nonce = None;
                    }
                }
                Err(_) => nonce = None,
            }
        }
    });
    Load { seen, stop, task }
}

impl Load {
    async fn finish(self) -> BTreeMap<Hash, u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        let s = self.seen.lock().unwrap().clone();
        s
    }
}

async fn assert_all_committed(net: &TestNet, nodes: &[usize], seen: &BTreeMap<Hash, u64>) {
    assert!(!seen.is_empty(), "the load generator saw nothing committed");
    for &i in nodes {
        let c = net.client(i).await;
        for (h, height) in seen {
            let info = c
                .transaction(h, false)
                .await
                .unwrap_or_else(|e| panic!("node {i} lost tx {h}: {e}"));
            assert_eq!(info.status, "committed");
            assert_eq!(
                info.height, *height,
                "node {i} has tx {h} at another height"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_agree_through_crashes_and_loss_of_quorum() {
    let mut net = TestNet::new(4, 0, 200);
    net.start_all();
    net.wait_height(0, 2, WAIT).await;
    let chain_id = net.client(0).await.status().await.unwrap().chain_id;
    let up = Arc::new(Mutex::new(vec![true; 4]));
    let endpoints: Vec<String> = (0..4).map(|i| net.endpoint(i)).collect();
    let load = start_load(endpoints, up.clone(), net.genesis_ops(), chain_id);

    // kill -9 one validator under load: the other three keep committing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    up.lock().unwrap()[3] = false;
    net.kill9(3);
    let h = height(&net, 0).await;
    net.wait_height(0, h + 5, WAIT).await;
    // Restart it: it catches up and agrees.
    net.start(3);
    let target = height(&net, 0).await;
    net.wait_height(3, target, WAIT).await;
    up.lock().unwrap()[3] = true;
    assert_agree(&net, &[0, 1, 2, 3]).await;
    let seen = load.finish().await;

    // Two of four down: no quorum, so no new blocks, and no fork.
    net.kill9(2);
    net.kill9(3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = (height(&net, 0).await, height(&net, 1).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        (height(&net, 0).await, height(&net, 1).await),
        stalled,
        "blocks committed without a quorum"
    );
    assert_agree(&net, &[0, 1]).await;
    // Bring one back: progress resumes.
    net.start(2);
    net.wait_height(0, stalled.0 + 3, WAIT).await;
    net.start(3);
    let target = height(&net, 0).await;
    net.wait_height(3, target, WAIT).await;
    assert_agree(&net, &[0, 1, 2, 3]).await;
    assert_all_committed(&net, &[0, 1, 2, 3], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_validator_heals_and_listener_follows() {
    // Four validators plus one listener (node 4), which is not in the validator set.
    let mut net = TestNet::new(4, 1, 200);
    net.start_all();
    net.wait_height(0, 2, WAIT).await;
    let chain_id = net.client(0).await.status().await.unwrap().chain_id;

    // Cut validator 1 off: the others go on; it does not move.
    net.cut_off(1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cut_at = height(&net, 1).await;
    let h = height(&net, 0).await;
    net.wait_height(0, h + 5, WAIT).await;
    assert!(
        height(&net, 1).await <= cut_at + 1,
        "a cut-off validator kept committing"
    );
    // A transaction sent to the listener reaches the proposers and commits.
    let ops = net.genesis_ops();
    let listener = net.client(4).await;
    let sent = listener
        .send_and_wait(
            &ops,
            Action::Transfer {
                to: Keypair::generate().address(),
                amount: Amount(7),
            },
            "0.001".parse().unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    // Heal: it catches up, with no fork.
    net.heal(1);
    let target = height(&net, 0).await;
    net.wait_height(1, target, WAIT).await;
    net.wait_height(4, target, WAIT).await;
    assert_agree(&net, &[0, 1, 2, 3, 4]).await;
    let mut seen = BTreeMap::new();
    seen.insert(sent.hash, sent.height);
    assert_all_committed(&net, &[0, 1, 2, 3, 4], &seen).await;
    let _ = chain_id;
}
