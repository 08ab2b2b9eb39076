//! The reconcilers against a real `aitbc-node` on loopback, with Kubernetes mocked: Wallet
//! funding, ServiceListing, Bid (auto-accepted) and AIJob (submitted with escrow, then deleted:
//! cancelled and refunded) go through their phases on a real chain.

mod common;

use aitbc_crds::{AiJob, AiJobPhase, Bid, BidPhase, ListingPhase, ServiceListing, Wallet};
use aitbc_operator::controllers::{aijob, bid, listing, wallet};
use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::JobStatus;
use aitbc_protocol::{Amount, Keypair};
use common::World;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    aitbc_protocol::net::free_loopback_port().unwrap()
}

struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-validator chain: returns the process guard, a client and the genesis-ops key.
async fn start_chain(dir: &std::path::Path) -> (NodeProcess, ChainClient, Keypair) {
    let node = binary("aitbc-node");
    let out = Command::new(&node)
        .args(["init", "--dir"])
        .arg(dir)
        .args([
            "--validators",
            "1",
            "--chain-id",
            "aitbc-operator-test",
            "--block-time-ms",
            "100",
        ])
        .output()
        .expect("aitbc-node init runs");
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rpc = free_port();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = Command::new(&node)
        .arg("run")
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .arg("--key-file")
        .arg(dir.join("validator-0.key"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--rpc-listen", &format!("127.0.0.1:{rpc}")])
        .args(["--p2p-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("aitbc-node starts");
    let guard = NodeProcess(child);
    let start = Instant::now();
    let client = loop {
        if let Ok(c) = ChainClient::connect(&format!("127.0.0.1:{rpc}")).await {
            if c.status().await.is_ok_and(|s| s.height >= 1) {
                break c;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node did not commit a block: see {}",
            dir.join("node.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (guard, client, read_key(&dir.join("genesis-ops.key")))
}

fn read_key(p: &std::path::Path) -> Keypair {
    Keypair::from_secret_hex(std::fs::read_to_string(p).unwrap().trim()).unwrap()
}

/// Runs reconcile passes over every resource until `done` holds (or fails after 30 s).
async fn drive(w: &World, what: &str, done: impl Fn(&World) -> bool) {
    let start = Instant::now();
    while !done(w) {
        for (plural, name) in resources(w) {
            let res = match plural.as_str() {
                "wallets" => {
                    wallet::reconcile(Arc::new(w.obj::<Wallet>(&plural, &name)), w.ctx.clone())
                        .await
                        .map(|_| ())
                }
                "servicelistings" => listing::reconcile(
                    Arc::new(w.obj::<ServiceListing>(&plural, &name)),
                    w.ctx.clone(),
                )
                .await
                .map(|_| ()),
                "bids" => bid::reconcile(Arc::new(w.obj::<Bid>(&plural, &name)), w.ctx.clone())
                    .await
                    .map(|_| ()),
                "aijobs" => match w.try_obj::<AiJob>(&plural, &name) {
                    Some(j) => aijob::reconcile(Arc::new(j), w.ctx.clone())
                        .await
                        .map(|_| ()),
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(e) = res {
                // Dependencies not ready yet are expected while things settle.
                assert!(
                    e.is_user_error() || e.reason() == "ChainError",
                    "{plural}/{name}: {e}"
                );
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; events: {:?}",
            w.event_reasons()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn resources(w: &World) -> Vec<(String, String)> {
    w.api
        .objects
        .lock()
        .keys()
        .filter(|k| k.starts_with("/apis/aitbc.io/"))
        .filter_map(|k| {
            let parts: Vec<&str> = k.rsplitn(3, '/').collect();
            Some((parts.get(1)?.to_string(), parts.first()?.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn marketplace_resources_go_through_their_phases_on_a_real_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, client, ops) = start_chain(dir.path()).await;
    let w = World::with_chain(Arc::new(client.clone()));
    w.wallet_with_given_key(
        "genesis-ops",
        &ops,
        json!({"allowFunding": ["provider", "customer"]}),
    );
    w.add(
        "Wallet",
        "wallets",
        "provider",
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "1000"}}),
    );
    w.add(
        "Wallet",
        "wallets",
        "customer",
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "500"}}),
    );
    drive(&w, "funding", |w| {
        ["provider", "customer"].iter().all(|n| {
            w.obj::<Wallet>("wallets", n)
                .status
                .is_some_and(|s| s.funded && s.balance.is_some())
        })
    })
    .await;
    let customer: Wallet = w.obj("wallets", "customer");
    let customer_addr = customer
        .status
        .as_ref()
        .unwrap()
        .address
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        client.balance(&customer_addr).await.unwrap().0,
        Amount::from_ait(500).unwrap()
    );

    w.add(
        "ServiceListing",
        "servicelistings",
        "sdxl",
        json!({"wallet": "provider", "name": "SDXL", "type": "ai-inference", "price": "25", "acceptPolicy": "auto"}),
    );
    w.add(
        "Bid",
        "bids",
        "b1",
        json!({"listing": "sdxl", "wallet": "customer", "amount": "30"}),
    );
    drive(&w, "the listing and an accepted bid", |w| {
        w.obj::<ServiceListing>("servicelistings", "sdxl")
            .status
            .is_some_and(|s| s.phase == ListingPhase::Active)
            && w.obj::<Bid>("bids", "b1")
                .status
                .is_some_and(|s| s.phase == BidPhase::Accepted)
    })
    .await;
    let service_id = w
        .obj::<ServiceListing>("servicelistings", "sdxl")
        .status
        .unwrap()
        .service_id
        .unwrap();
    let bid_id = w.obj::<Bid>("bids", "b1").status.unwrap().bid_id.unwrap();
    assert_eq!(client.bid(&bid_id).await.unwrap().listing_id, service_id);

    w.add("AIJob", "aijobs", "img", json!({"wallet": "customer", "listing": "sdxl", "type": "inference", "payment": "25", "prompt": "a lighthouse"}));
    drive(&w, "the job on chain", |w| {
        w.obj::<AiJob>("aijobs", "img")
            .status
            .is_some_and(|s| s.phase == AiJobPhase::Submitted)
    })
    .await;
    let job_id = w
        .obj::<AiJob>("aijobs", "img")
        .status
        .unwrap()
        .job_id
        .unwrap();
    let job = client.job(&job_id).await.unwrap();
    assert_eq!(job.escrow, Amount::from_ait(25).unwrap());
    assert_eq!(job.listing_id.as_deref(), Some(service_id.as_str()));
    let (_, escrowed) = client.balance(&customer_addr).await.unwrap();
    assert_eq!(
        escrowed,
        Amount::from_ait(55).unwrap(),
        "bid 30 + job 25 in escrow"
    );

    w.delete("aijobs", "img");
    drive(&w, "the job's cancellation", |w| {
        w.try_obj::<AiJob>("aijobs", "img").is_none()
    })
    .await;
    assert_eq!(
        client.job(&job_id).await.unwrap().status,
        JobStatus::Refunded
    );
    let (_, escrowed) = client.balance(&customer_addr).await.unwrap();
    assert_eq!(
        escrowed,
        Amount::from_ait(30).unwrap(),
        "the job's escrow came back"
    );
    let submits = client
        .history(&customer_addr, 100)
        .await
        .unwrap()
        .iter()
        .filter_map(|t| aitbc_protocol::tx::SignedTransaction::decode(&t.transaction).ok())
        .filter(|s| matches!(s.tx.action, aitbc_protocol::tx::Action::SubmitJob { .. }))
        .count();
    assert_eq!(submits, 1, "one job submission on chain");
}

/// A GPU agent process (simulated GPU) owned by `owner`, accepting `scheduler`.
fn start_agent(
    dir: &std::path::Path,
    owner: &Keypair,
    scheduler: &Keypair,
    port: u16,
) -> (NodeProcess, Keypair) {
    let key = Keypair::generate();
    let key_file = dir.join("agent.key");
    std::fs::write(&key_file, key.secret_hex()).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Command::new(binary("aitbc-gpu-agent"))
        .arg("run")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(dir.join("agent-state"))
        .args([
            "--chain-id",
            "aitbc-operator-test",
            "--agent-id",
            "gpu-node-1",
        ])
        .arg("--key-file")
        .arg(&key_file)
        .args(["--scheduler-key", &scheduler.public().to_hex()])
        .args(["--owner", &owner.address().to_string(), "--serves", "any"])
        .args([
            "--simulate-gpus",
            "1",
            "--simulated-gpu-memory-mib",
            "16384",
            "--no-nvml",
            "--sample-interval-secs",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("aitbc-gpu-agent starts");
    (NodeProcess(child), key)
}

#[tokio::test]
async fn aijob_runs_on_a_gpu_agent_pod_through_the_in_process_scheduler() {
    use aitbc_operator::agents::PodAgents;
    use aitbc_operator::scheduler::SchedulerHandle;
    use aitbc_protocol::registration::register_agent_action;
    use aitbc_protocol::tx::Serves;

    let dir = tempfile::tempdir().unwrap();
    let (_node, client, ops) = start_chain(dir.path()).await;
    let scheduler_key = read_key(&dir.path().join("scheduler.key"));
    let handle = Arc::new(SchedulerHandle::default());
    let w = World::with_chain_and_jobs(Arc::new(client.clone()), handle.clone());
    w.wallet_with_given_key(
        "genesis-ops",
        &ops,
        json!({"allowFunding": ["provider", "customer", "scheduler"]}),
    );
    let provider = Keypair::generate();
    w.wallet_with_given_key(
        "provider",
        &provider,
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "100"}}),
    );
    w.add(
        "Wallet",
        "wallets",
        "customer",
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "100"}}),
    );
    // The scheduler pays fees for AssignJob / ReportResult / SettleJob (a Node's genesis funds it).
    w.wallet_with_given_key(
        "scheduler",
        &scheduler_key,
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "10"}}),
    );
    drive(&w, "funding", |w| {
        ["provider", "customer", "scheduler"].iter().all(|n| {
            w.obj::<Wallet>("wallets", n)
                .status
                .is_some_and(|s| s.funded)
        })
    })
    .await;

    // The agent registers on chain (its owner signs), and runs as a "DaemonSet pod" the
    // operator discovers through the (mocked) Kubernetes API.
    let port = free_port();
    let (_agent, agent_key) = start_agent(dir.path(), &provider, &scheduler_key, port);
    // The action carries the agent key's proof for this owner and chain.
    let register = register_agent_action(
        &agent_key,
        "aitbc-operator-test",
        &provider.address(),
        "gpu-node-1",
        &Serves::AnyProvider,
    );
    client
        .send_and_wait(
            &provider,
            register,
            "0.001".parse().unwrap(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gpu-agent-x7k2p", "namespace": common::NS, "labels": {"app.kubernetes.io/component": "gpu-agent"}},
        "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "agent", "ports": [{"name": "grpc", "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"}
    });
    w.api.put(common::CORE, "pods", pod);
    let mut config = aitbc_scheduler::SchedulerConfig::new(
        client.endpoint(),
        scheduler_key.secret_hex(),
        dir.path().join("scheduler"),
    );
    config.agent_refresh = Duration::from_millis(200);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let agents = Arc::new(PodAgents::new(
        w.ctx.client.clone(),
        Some(common::NS),
        aitbc_operator::agents::AGENT_SELECTOR,
    ));
    let sched = tokio::spawn(aitbc_operator::scheduler::run(
        handle.clone(),
        config,
        agents,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));

    let start = Instant::now();
    while handle.get().is_none() {
        if sched.is_finished() {
            panic!("the scheduler stopped: {:?}", sched.await);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the scheduler did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.add(
        "ServiceListing",
        "servicelistings",
        "render",
        json!({"wallet": "provider", "name": "Render", "type": "ai-inference", "price": "10",
               "runtime": {"command": ["/bin/sh", "-c", "echo AITBC_PROGRESS 50; sleep 1; echo done > \"$AITBC_OUTPUT_DIR/out.txt\""]}}),
    );
    w.add(
        "AIJob",
        "aijobs",
        "frame",
        json!({"wallet": "customer", "listing": "render", "type": "inference", "payment": "10", "gpus": 1, "memoryMiB": 1024, "timeLimitSeconds": 60}),
    );
    let created = Instant::now();
    drive(&w, "the job on chain", |w| {
        w.obj::<AiJob>("aijobs", "frame")
            .status
            .is_some_and(|s| s.job_id.is_some())
    })
    .await;
    let submitted = created.elapsed();
    drive(&w, "the job to succeed and settle", |w| {
        w.obj::<AiJob>("aijobs", "frame")
            .status
            .is_some_and(|s| s.phase == AiJobPhase::Succeeded && s.settlement_tx_hash.is_some())
    })
    .await;
    eprintln!(
        "AIJob timings: on chain after {submitted:?}, succeeded and settled after {:?}",
        created.elapsed()
    );
    let st = w.obj::<AiJob>("aijobs", "frame").status.unwrap();
    assert_eq!(st.agent.as_deref(), Some("gpu-node-1"));
    assert_eq!(st.progress, Some(100));
    assert!(st.result_digest.is_some());
    let job = client.job(st.job_id.as_deref().unwrap()).await.unwrap();
    assert_eq!(job.status, JobStatus::Settled);
    let reasons = w.event_reasons();
    for r in ["JobSubmitted", "JobSucceeded"] {
        assert!(reasons.contains(&r.to_string()), "{r} in {reasons:?}");
    }
    let _ = stop_tx.send(true);
    let _ = sched.await;
}
