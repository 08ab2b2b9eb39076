//! Multi-process tests on loopback: a real `aitbc-node` (1 validator, 200 ms blocks), real
//! `aitbc-gpu-agent` processes with simulated GPUs, and the `aitbc-scheduler` binary.
//! Build the binaries first: `cargo build --workspace --bins`.

use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::JobStatus;
use aitbc_protocol::registration::register_agent_action;
use aitbc_protocol::scheduler_pb as spb;
use aitbc_protocol::scheduler_pb::scheduler_client::SchedulerClient;
use aitbc_protocol::tx::{object_id, Action, JobKind, JobSpec, Runtime, Serves, ServiceType};
use aitbc_protocol::{Address, Amount, Keypair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    aitbc_protocol::net::free_loopback_port().unwrap()
}

fn read_key(p: &Path) -> Keypair {
    Keypair::from_secret_hex(std::fs::read_to_string(p).unwrap().trim()).unwrap()
}

struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }
    /// SIGKILL: no shutdown code runs.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Waits for the process to exit on its own.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(start.elapsed() < timeout, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct AgentProc {
    id: String,
    key: Keypair,
    port: u16,
    proc: Proc,
}

struct Env {
    root: tempfile::TempDir,
    node: Proc,
    chain: ChainClient,
    ops: Keypair,
    scheduler_key: Keypair,
    provider: Keypair,
    customer: Keypair,
    agents: Vec<AgentProc>,
    sched: Option<Proc>,
    sched_port: u16,
    metrics_port: u16,
    fee: Amount,
    fee_bps: u32,
}

impl Env {
    async fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        let out = Command::new(bin("aitbc-node"))
            .args(["init", "--dir"])
            .arg(root.path())
            .args([
                "--validators",
                "1",
                "--chain-id",
                "aitbc-test",
                "--block-time-ms",
                "200",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rpc = free_port();
        let args: Vec<String> = vec![
            "run".into(),
            "--genesis".into(),
            root.path().join("genesis.json").display().to_string(),
            "--key-file".into(),
            root.path().join("validator-0.key").display().to_string(),
            "--data-dir".into(),
            root.path().join("node").display().to_string(),
            "--rpc-listen".into(),
            format!("127.0.0.1:{rpc}"),
            "--p2p-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--http-listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        let node = Proc::spawn(
            "aitbc-node",
            &bin("aitbc-node"),
            &args,
            root.path().join("node.log"),
        );
        let endpoint = format!("http://127.0.0.1:{rpc}");
        let start = Instant::now();
        let chain = loop {
            if let Ok(c) = ChainClient::connect(&endpoint).await {
                if let Ok(s) = c.status().await {
                    if !s.block_hash.is_empty() {
                        break c;
                    }
                }
            }
            assert!(start.elapsed() < WAIT, "node did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let status = chain.status().await.unwrap();
        let fee: Amount = status.min_fee.parse().unwrap();
        let ops = read_key(&root.path().join("genesis-ops.key"));
        let scheduler_key = read_key(&root.path().join("scheduler.key"));
        let provider = Keypair::generate();
        let customer = Keypair::generate();
        let env = Env {
            root,
            node,
            chain,
            ops,
            scheduler_key,
            provider,
            customer,
            agents: vec![],
            sched: None,
            sched_port: free_port(),
            metrics_port: free_port(),
            fee,
            fee_bps: status.marketplace_fee_bps,
        };
        for to in [
            env.provider.address(),
            env.customer.address(),
            env.scheduler_key.address(),
        ] {
            env.send(
                &env.ops.clone(),
                Action::Transfer {
                    to,
                    amount: Amount::from_ait(1000).unwrap(),
                },
            )
            .await;
        }
        env
    }

    async fn send(&self, key: &Keypair, action: Action) -> aitbc_protocol::Hash {
        let name = action.name();
        let c = self
            .chain
            .send_and_wait(key, action, self.fee, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        c.hash
    }

    /// Starts an agent owned by `owner` serving `serves`, and registers it on chain.
    async fn agent(&mut self, id: &str, owner: &Keypair, serves: Serves, gpus: u32) -> usize {
        let key = Keypair::generate();
        let dir = self.root.path().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("agent.key.hex");
        std::fs::write(&key_file, key.secret_hex()).unwrap();
        let port = free_port();
        let serves_arg = match &serves {
            Serves::AnyProvider => "any".to_string(),
            Serves::Providers(p) => p
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        let args: Vec<String> = vec![
            "run".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--chain-id".into(),
            "aitbc-test".into(),
            "--agent-id".into(),
            id.into(),
            "--key-file".into(),
            key_file.display().to_string(),
            "--scheduler-key".into(),
            self.scheduler_key.public().to_hex(),
            "--owner".into(),
            owner.address().to_string(),
            "--serves".into(),
            serves_arg,
            "--simulate-gpus".into(),
            gpus.to_string(),
            "--simulated-gpu-memory-mib".into(),
            "16384".into(),
            "--no-nvml".into(),
            "--sample-interval-secs".into(),
            "1".into(),
        ];
        let proc = Proc::spawn(
            id,
            &bin("aitbc-gpu-agent"),
            &args,
            self.root.path().join(format!("{id}.log")),
        );
        self.send(
            owner,
            register_agent_action(&key, "aitbc-test", &owner.address(), id, &serves),
        )
        .await;
        self.agents.push(AgentProc {
            id: id.into(),
            key,
            port,
            proc,
        });
        self.agents.len() - 1
    }

    fn start_scheduler(&mut self) {
        self.start_scheduler_with(&[]);
    }

    fn start_scheduler_with(&mut self, extra: &[&str]) {
        let key_file = self.root.path().join("scheduler.key");
        let mut args: Vec<String> = vec![
            "run".into(),
            "--chain".into(),
            self.chain.endpoint().to_string(),
            "--key-file".into(),
            key_file.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.sched_port),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", self.metrics_port),
            "--state-dir".into(),
            self.root
                .path()
                .join("scheduler-state")
                .display()
                .to_string(),
            "--max-attempts".into(),
            "3".into(),
            "--job-grace-secs".into(),
            "10".into(),
        ];
        if !extra.contains(&"--agent-refresh-ms") {
            args.extend(["--agent-refresh-ms".into(), "300".into()]);
        }
        for a in &self.agents {
            args.push("--agent".into());
            args.push(format!("{}=http://127.0.0.1:{}", a.id, a.port));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.sched = Some(Proc::spawn(
            "aitbc-scheduler",
            &bin("aitbc-scheduler"),
            &args,
            self.root.path().join("scheduler.log"),
        ));
    }

    async fn api(&self) -> SchedulerClient<Channel> {
        let start = Instant::now();
        loop {
            if let Ok(c) =
                SchedulerClient::connect(format!("http://127.0.0.1:{}", self.sched_port)).await
            {
                return c;
            }
            assert!(start.elapsed() < WAIT, "scheduler API did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn listing(
        &self,
        name: &str,
        service_type: ServiceType,
        price: u128,
        runtime: Runtime,
    ) -> String {
        self.listing_with(name, service_type, price, runtime, vec![])
            .await
    }

    async fn listing_with(
        &self,
        name: &str,
        service_type: ServiceType,
        price: u128,
        runtime: Runtime,
        parameters: Vec<(String, String)>,
    ) -> String {
        let h = self
            .send(
                &self.provider,
                Action::CreateListing {
                    name: name.into(),
                    service_type,
                    price: Amount::from_ait(price).unwrap(),
                    description: "test".into(),
                    parameters,
                    runtime,
                },
            )
            .await;
        object_id("svc", &h)
    }

    async fn submit(
        &self,
        listing: &str,
        payment: u128,
        spec: JobSpec,
        deadline_blocks: u64,
    ) -> String {
        let h = self
            .send(
                &self.customer,
                Action::SubmitJob {
                    listing_id: Some(listing.into()),
                    bid_id: None,
                    payment: Amount::from_ait(payment).unwrap(),
                    spec,
                    deadline_blocks,
                },
            )
            .await;
        object_id("job", &h)
    }

    async fn wait_status(
        &self,
        job: &str,
        want: &[JobStatus],
        timeout: Duration,
    ) -> aitbc_protocol::model::Job {
        let start = Instant::now();
        loop {
            let j = self.chain.job(job).await.unwrap();
            if want.contains(&j.status) {
                return j;
            }
            if start.elapsed() > timeout {
                self.dump_logs();
                panic!("job {job} is {:?}, wanted {want:?}", j.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_assigned_to(&self, job: &str, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let j = self.chain.job(job).await.unwrap();
            if let Some(k) = j.assigned_agent {
                if let Some(i) = self.agents.iter().position(|a| a.key.public() == k) {
                    return i;
                }
            }
            if start.elapsed() > timeout {
                self.dump_logs();
                panic!("job {job} not assigned ({:?})", j.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn assert_conserved(&self) {
        let s = self.chain.supply().await.unwrap();
        assert!(s.conserved, "supply not conserved: {s:?}");
    }

    fn dump_logs(&self) {
        let mut logs = vec![self.node.log.clone()];
        logs.extend(self.agents.iter().map(|a| a.proc.log.clone()));
        logs.push(self.root.path().join("scheduler.log"));
        for l in logs {
            if let Ok(text) = std::fs::read_to_string(&l) {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!(
                    "--- {} ---\n{}",
                    l.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

fn sleep_runtime(secs: u32) -> Runtime {
    Runtime {
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo AITBC_PROGRESS 10; sleep {secs}; echo AITBC_PROGRESS 90; echo done > \"$AITBC_OUTPUT_DIR/out.txt\""),
        ],
        image: String::new(),
        env: vec![],
    }
}

fn spec(kind: JobKind, gpus: u32, memory_mib: u64) -> JobSpec {
    JobSpec {
        kind: Some(kind),
        prompt: "a red square".into(),
        model: "demo".into(),
        gpus,
        memory_mib,
        time_limit_secs: 120,
        ..JobSpec::default()
    }
}

fn paid_for(escrow: Amount, bps: u32) -> Amount {
    escrow.checked_sub(escrow.basis_points(bps)).unwrap()
}

/// The seed scenario: listing, bid above price, accept, job on the bid, demo runtime on the
/// provider's agent, result committed, settlement, balances and supply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_end_to_end() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    let other_owner = Keypair::generate();
    env.send(
        &env.ops.clone(),
        Action::Transfer {
            to: other_owner.address(),
            amount: Amount::from_ait(10).unwrap(),
        },
    )
    .await;
    // The provider's agent serves only the provider; another owner's agent serves only its owner.
    let pa = env
        .agent(
            "provider-gpu",
            &provider,
            Serves::Providers(vec![provider.address()]),
            2,
        )
        .await;
    env.agent(
        "other-gpu",
        &other_owner,
        Serves::Providers(vec![other_owner.address()]),
        4,
    )
    .await;
    env.start_scheduler();
    let mut api = env.api().await;

    let listing = env
        .listing("sdxl", ServiceType::AiInference, 10, Runtime::default())
        .await;
    let bid_hash = env
        .send(
            &env.customer.clone(),
            Action::PlaceBid {
                listing_id: listing.clone(),
                amount: Amount::from_ait(12).unwrap(),
            },
        )
        .await;
    let bid = object_id("bid", &bid_hash);
    env.send(
        &provider,
        Action::AcceptBid {
            bid_id: bid.clone(),
        },
    )
    .await;
    let (provider_before, _) = env.chain.balance(&provider.address()).await.unwrap();

    let h = env
        .send(
            &env.customer.clone(),
            Action::SubmitJob {
                listing_id: Some(listing.clone()),
                bid_id: Some(bid),
                payment: Amount::ZERO,
                spec: spec(JobKind::Inference, 1, 1024),
                deadline_blocks: 600,
            },
        )
        .await;
    let job_id = object_id("job", &h);
    let submitted = Instant::now();
    let on = env.wait_assigned_to(&job_id, WAIT).await;
    assert_eq!(on, pa, "the listing's job runs on the provider's agent");
    let job = env
        .wait_status(&job_id, &[JobStatus::Settled], Duration::from_secs(60))
        .await;
    let settled_after = submitted.elapsed();
    let receipt = job.result.expect("result on chain");
    // End-to-end figure: submit committed (block time) -> process started (agent clock).
    let submit_height = env.chain.transaction(&h, false).await.unwrap().height;
    let block_ms = env.chain.block(submit_height).await.unwrap().time_ms;
    let mut agent = aitbc_gpu_agent::AgentClient::connect(
        format!("http://127.0.0.1:{}", env.agents[pa].port),
        env.scheduler_key.clone(),
    )
    .await
    .unwrap();
    let on_agent = agent.get_job(&job_id).await.unwrap();
    eprintln!(
        "e2e: submit committed -> process start {} ms; submit sent -> settled seen {} ms",
        on_agent.started_at_ms.saturating_sub(block_ms),
        settled_after.as_millis()
    );
    assert!(receipt.receipt.success);
    assert_eq!(receipt.receipt.agent_key, env.agents[pa].key.public());

    // The provider got the escrow minus the burned fee; the customer's escrow is gone.
    let (provider_after, _) = env.chain.balance(&provider.address()).await.unwrap();
    let expected = paid_for(Amount::from_ait(12).unwrap(), env.fee_bps);
    assert_eq!(
        provider_after.checked_sub(provider_before).unwrap(),
        expected
    );
    let (_, customer_escrow) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(customer_escrow, Amount::ZERO);
    env.assert_conserved().await;

    // The scheduler's view: settled, a settlement tx, the receipt, and the output file.
    let start = Instant::now();
    let info = loop {
        let info = api
            .get_job(spb::GetJobRequest {
                job_id: job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if info.terminal {
            break info;
        }
        assert!(
            start.elapsed() < WAIT,
            "scheduler did not see the settlement: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.phase, "settled");
    assert_eq!(info.agent_id, "provider-gpu");
    assert!(!info.settlement_tx.is_empty());
    assert!(!info.receipt.is_empty());
    assert_eq!(info.result_digest, receipt.receipt.output_digest.to_hex());
    assert_eq!(info.progress_percent, 100);
    let files = api
        .fetch_result(spb::FetchResultRequest {
            job_id: job_id.clone(),
            path: String::new(),
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let png = files
        .files
        .iter()
        .find(|f| f.path.ends_with(".png"))
        .expect("a PNG output");
    let file = api
        .fetch_result(spb::FetchResultRequest {
            job_id: job_id.clone(),
            path: png.path.clone(),
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        file.data.starts_with(b"\x89PNG"),
        "the demo runtime wrote a PNG"
    );
    assert_eq!(file.sha256, png.sha256);

    // WatchJob on a finished job: one message, terminal.
    let mut stream = api
        .watch_job(spb::WatchJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.terminal);
    assert!(stream.message().await.unwrap().is_none());

    // Agents and metrics.
    let agents = api
        .list_agents(spb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 2);
    let pag = agents
        .iter()
        .find(|a| a.agent_id == "provider-gpu")
        .unwrap();
    assert!(pag.healthy && pag.registered);
    assert_eq!(pag.owner, provider.address().to_string());
    let inv = pag.inventory.as_ref().unwrap();
    assert_eq!(inv.gpus_total, 2);
    assert!(inv.simulated);
    let m = api
        .get_metrics(spb::GetMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(m.dispatched_total >= 1 && m.settled_total >= 1, "{m:?}");
    assert!(m.placement_latency_p99_ms > 0.0);

    // Prometheus text on the metrics port.
    let text = http_get(env.metrics_port, "/metrics").await;
    assert!(text.contains("aitbc_scheduler_queue_length"), "{text}");
    assert!(
        text.contains("aitbc_scheduler_placement_latency_seconds_count"),
        "{text}"
    );
    assert!(text.contains("aitbc_scheduler_settled_total 1"), "{text}");

    // SIGTERM stops the scheduler cleanly.
    let st = env.sched.as_mut().unwrap().sigterm();
    assert!(st.success(), "scheduler exit status {st:?}");
}

/// A 2-GPU training job lands only where 2 GPUs are free; a job larger than any agent stays
/// pending with a reason (and the customer's cancellation refunds it); resource calls reach
/// the agents through the scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_job_needs_two_free_gpus_and_big_job_stays_pending() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent("a", &provider, Serves::AnyProvider, 2).await;
    let b = env.agent("b", &provider, Serves::AnyProvider, 2).await;
    env.start_scheduler();
    let mut api = env.api().await;
    // Wait until the scheduler sees both agents, then lease one GPU of agent a.
    let start = Instant::now();
    loop {
        let agents = api
            .list_agents(spb::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents;
        if agents.len() == 2 && agents.iter().all(|a| a.healthy && a.registered) {
            break;
        }
        assert!(start.elapsed() < WAIT, "agents not healthy: {agents:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let holder = Keypair::generate().address().to_string();
    let lease = api
        .allocate_resources(spb::AllocateResourcesRequest {
            agent_id: "a".into(),
            holder,
            gpus: 1,
            memory_mib: 0,
            duration_secs: 600,
            lease_id: "hold-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    assert_eq!(lease.gpu_indexes.len(), 1);
    // The next status shows the lease at once (read your own writes), not at the next refresh.
    let status = api
        .resource_status(spb::ResourceStatusRequest {
            agent_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.agents.len(), 2);
    let a_status = status.agents.iter().find(|x| x.agent_id == "a").unwrap();
    assert_eq!(a_status.leases.len(), 1, "lease not visible: {a_status:?}");
    assert_eq!(a_status.inventory.as_ref().unwrap().gpus_free, 1);
    let util = api
        .resource_utilization(spb::ResourceUtilizationRequest {
            agent_id: "b".into(),
            period: "5m".into(),
            max_points: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(util.agents.len(), 1);
    assert!(util.agents[0].error.is_empty(), "{:?}", util.agents[0]);
    // Stress tests are refused on simulated GPUs; the refusal is passed through.
    assert!(api
        .stress_test(spb::StressTestRequest {
            agent_id: "b".into(),
            gpu_index: 0,
            memory_mib: 16,
            passes: 1
        })
        .await
        .is_err());

    let listing = env
        .listing("train", ServiceType::AiTraining, 5, sleep_runtime(1))
        .await;
    let train = env
        .submit(&listing, 5, spec(JobKind::Training, 2, 8192), 600)
        .await;
    let big = env
        .submit(&listing, 5, spec(JobKind::Training, 4, 1024), 600)
        .await;
    let on = env.wait_assigned_to(&train, WAIT).await;
    assert_eq!(on, b, "only agent b has 2 free GPUs");
    env.wait_status(&train, &[JobStatus::Settled], Duration::from_secs(60))
        .await;

    let info = api
        .get_job(spb::GetJobRequest {
            job_id: big.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.phase, "pending");
    assert!(
        info.pending_reason.contains("needs 4 GPU(s)"),
        "reason: {:?}",
        info.pending_reason
    );
    assert_eq!(
        env.chain.job(&big).await.unwrap().status,
        JobStatus::Pending
    );
    // Releasing the lease is passed through too.
    let released = api
        .deallocate_resources(spb::DeallocateResourcesRequest {
            agent_id: "a".into(),
            lease_id: "hold-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .released;
    assert!(released);
    // The customer cancels the big job: refunded, and the scheduler records it.
    env.send(
        &env.customer.clone(),
        Action::CancelJob {
            job_id: big.clone(),
        },
    )
    .await;
    let start = Instant::now();
    loop {
        let info = api
            .get_job(spb::GetJobRequest {
                job_id: big.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if info.phase == "refunded" {
            assert!(!info.refund_tx.is_empty());
            break;
        }
        assert!(start.elapsed() < WAIT, "cancellation not seen: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, escrow) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(escrow, Amount::ZERO);
    env.assert_conserved().await;
}

/// kill -9 of the agent running a job: the job moves to another agent of the same provider and
/// settles; with no agent left, it is refunded once its deadline passes.
/// Read your own writes: with health checks a minute apart, an allocation shows in the very next
/// ResourceStatus, and a release too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_is_visible_to_the_next_status_call() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent("a", &provider, Serves::AnyProvider, 2).await;
    env.start_scheduler_with(&["--agent-refresh-ms", "60000"]);
    let mut api = env.api().await;
    let start = Instant::now();
    loop {
        let agents = api
            .list_agents(spb::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents;
        if agents.len() == 1 && agents[0].healthy && agents[0].registered {
            break;
        }
        assert!(start.elapsed() < WAIT, "agent not healthy: {agents:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = |api: &mut SchedulerClient<Channel>| {
        let mut api = api.clone();
        async move {
            api.resource_status(spb::ResourceStatusRequest {
                agent_id: "a".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .agents
            .remove(0)
        }
    };
    let lease = api
        .allocate_resources(spb::AllocateResourcesRequest {
            agent_id: "a".into(),
            holder: provider.address().to_string(),
            gpus: 1,
            memory_mib: 0,
            duration_secs: 600,
            lease_id: "ryw-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    let a = status(&mut api).await;
    assert_eq!(a.leases.len(), 1, "lease not visible: {a:?}");
    assert_eq!(a.leases[0].lease_id, lease.lease_id);
    assert_eq!(a.inventory.as_ref().unwrap().gpus_free, 1);
    assert!(
        api.deallocate_resources(spb::DeallocateResourcesRequest {
            agent_id: "a".into(),
            lease_id: lease.lease_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .released
    );
    let a = status(&mut api).await;
    assert!(a.leases.is_empty(), "release not visible: {a:?}");
    assert_eq!(a.inventory.as_ref().unwrap().gpus_free, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_job_moves_to_another_agent_or_is_refunded() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent(
        "p1",
        &provider,
        Serves::Providers(vec![provider.address()]),
        1,
    )
    .await;
    env.agent(
        "p2",
        &provider,
        Serves::Providers(vec![provider.address()]),
        1,
    )
    .await;
    env.start_scheduler();
    let listing = env
        .listing("slow", ServiceType::AiInference, 3, sleep_runtime(4))
        .await;

    let job = env
        .submit(&listing, 3, spec(JobKind::Inference, 1, 0), 600)
        .await;
    // Watch it through the scheduler's API from the start.
    let mut api = env.api().await;
    let mut stream = api
        .watch_job(spb::WatchJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(info)) = stream.message().await {
            seen.push(info);
        }
        seen
    });
    let first = env.wait_assigned_to(&job, WAIT).await;
    // Let it start, then kill its agent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.agents[first].proc.kill9();
    let j = env
        .wait_status(&job, &[JobStatus::Settled], Duration::from_secs(60))
        .await;
    let second = env
        .agents
        .iter()
        .position(|a| Some(a.key.public()) == j.result.as_ref().map(|r| r.receipt.agent_key))
        .unwrap();
    assert_ne!(first, second, "the job finished on the other agent");
    assert_eq!(j.assignments, 2);
    let seen = tokio::time::timeout(WAIT, watcher).await.unwrap().unwrap();
    let phases: Vec<&str> = seen.iter().map(|i| i.phase.as_str()).collect();
    assert!(phases.contains(&"running"), "phases seen: {phases:?}");
    let last = seen.last().unwrap();
    assert!(last.terminal && last.phase == "settled", "last: {last:?}");
    assert_eq!(last.attempts, 2);
    assert!(
        seen.iter().any(|i| i.agent_id == env.agents[first].id)
            && last.agent_id == env.agents[second].id
    );

    // Now only one agent is left: kill it mid-job; the job is refunded after its deadline.
    let (_, escrow_before) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(escrow_before, Amount::ZERO);
    let job2 = env
        .submit(&listing, 3, spec(JobKind::Inference, 1, 0), 40)
        .await;
    let on = env.wait_assigned_to(&job2, WAIT).await;
    assert_eq!(on, second);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    env.agents[second].proc.kill9();
    // Refundable once its deadline (40 block times) and the result grace (30 s) have passed in
    // block time; the scheduler notices by height, which may come later when blocks are slow.
    let j2 = env
        .wait_status(&job2, &[JobStatus::Refunded], Duration::from_secs(150))
        .await;
    assert!(j2.result.is_none());
    let (_, escrow) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(escrow, Amount::ZERO);
    env.assert_conserved().await;
}

/// kill -9 of the scheduler in the middle of dispatching, then a restart: every job ends
/// settled exactly once (no double payment, no lost job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_scheduler_restarts_without_double_payment_or_lost_jobs() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent("g1", &provider, Serves::AnyProvider, 2).await;
    env.agent("g2", &provider, Serves::AnyProvider, 2).await;
    env.start_scheduler();
    let listing = env
        .listing("work", ServiceType::AiInference, 2, sleep_runtime(2))
        .await;
    let (provider_before, _) = env.chain.balance(&provider.address()).await.unwrap();
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(
            env.submit(&listing, 2, spec(JobKind::Inference, 1, 0), 600)
                .await,
        );
    }
    // Kill once the first assignment is committed (jobs are running or being dispatched).
    env.wait_assigned_to(&jobs[0], WAIT).await;
    env.sched.as_mut().unwrap().kill9();
    // More work arrives while it is down.
    for _ in 0..2 {
        jobs.push(
            env.submit(&listing, 2, spec(JobKind::Inference, 1, 0), 600)
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.start_scheduler();
    for j in &jobs {
        env.wait_status(j, &[JobStatus::Settled], Duration::from_secs(90))
            .await;
    }
    let (provider_after, _) = env.chain.balance(&provider.address()).await.unwrap();
    let per_job = paid_for(Amount::from_ait(2).unwrap(), env.fee_bps);
    let expected = Amount(per_job.base_units() * jobs.len() as u128);
    assert_eq!(
        provider_after.checked_sub(provider_before).unwrap(),
        expected,
        "each job paid exactly once"
    );
    let (_, escrow) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(escrow, Amount::ZERO);
    env.assert_conserved().await;
    let _: Address = provider.address();
}

/// An accepted gpu-rental bid becomes a lease of the provider's GPUs for the bidder, and the
/// bidder's jobs run inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rental_bid_becomes_a_lease_used_by_the_bidders_jobs() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    let pa = env
        .agent(
            "rent-gpu",
            &provider,
            Serves::Providers(vec![provider.address()]),
            2,
        )
        .await;
    env.start_scheduler();
    let mut api = env.api().await;
    let listing = env
        .listing_with(
            "rent",
            ServiceType::GpuRental,
            4,
            Runtime::default(),
            vec![
                ("gpus".into(), "1".into()),
                ("duration_secs".into(), "600".into()),
            ],
        )
        .await;
    let bid_hash = env
        .send(
            &env.customer.clone(),
            Action::PlaceBid {
                listing_id: listing.clone(),
                amount: Amount::from_ait(4).unwrap(),
            },
        )
        .await;
    let bid = object_id("bid", &bid_hash);
    env.send(
        &provider,
        Action::AcceptBid {
            bid_id: bid.clone(),
        },
    )
    .await;
    let start = Instant::now();
    loop {
        let st = api
            .resource_status(spb::ResourceStatusRequest {
                agent_id: "rent-gpu".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(l) = st.agents[0].leases.iter().find(|l| l.lease_id == bid) {
            assert_eq!(l.holder, env.customer.address().to_string());
            assert_eq!(l.gpu_indexes.len(), 1);
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "no lease for the accepted rental bid: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A job of the bidder without a listing runs inside the lease.
    let h = env
        .send(
            &env.customer.clone(),
            Action::SubmitJob {
                listing_id: None,
                bid_id: None,
                payment: Amount::from_ait(1).unwrap(),
                spec: spec(JobKind::Inference, 1, 0),
                deadline_blocks: 600,
            },
        )
        .await;
    let job = object_id("job", &h);
    let j = env
        .wait_status(&job, &[JobStatus::Settled], Duration::from_secs(60))
        .await;
    assert_eq!(
        j.provider,
        Some(provider.address()),
        "a job without a listing pays the agent's owner"
    );
    let mut agent = aitbc_gpu_agent::AgentClient::connect(
        format!("http://127.0.0.1:{}", env.agents[pa].port),
        env.scheduler_key.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        agent.get_job(&job).await.unwrap().lease_id,
        bid,
        "the job ran in the bidder's lease"
    );
    env.assert_conserved().await;
}

/// A job whose runtime fails is retried on the other agent, then (no untried agent left) its
/// failed receipt is reported and it is refunded at once, long before its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_is_retried_then_refunded() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent("f1", &provider, Serves::AnyProvider, 1).await;
    env.agent("f2", &provider, Serves::AnyProvider, 1).await;
    env.start_scheduler();
    let failing = Runtime {
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo broken >&2; exit 3".into(),
        ],
        image: String::new(),
        env: vec![],
    };
    let listing = env
        .listing("broken", ServiceType::AiInference, 2, failing)
        .await;
    let (balance_before, _) = env.chain.balance(&env.customer.address()).await.unwrap();
    let job = env
        .submit(&listing, 2, spec(JobKind::Inference, 1, 0), 7200)
        .await;
    let j = env
        .wait_status(&job, &[JobStatus::Refunded], Duration::from_secs(60))
        .await;
    assert_eq!(j.assignments, 2, "tried on both agents");
    let r = j.result.expect("the failed receipt is on chain");
    assert!(!r.receipt.success);
    assert!(
        env.chain.status().await.unwrap().height < j.deadline_height,
        "refunded before the deadline"
    );
    let (balance_after, escrow) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(escrow, Amount::ZERO);
    // The customer paid only the submit transaction's fee.
    assert_eq!(balance_before.checked_sub(balance_after).unwrap(), env.fee);
    let mut api = env.api().await;
    let info = api
        .get_job(spb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.phase, "refunded");
    assert!(!info.refund_tx.is_empty());
    assert_eq!(info.attempts, 2);
    let stderr = info.stderr.map(|t| t.tail).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&stderr).contains("broken"),
        "stderr tail: {stderr:?}"
    );
    env.assert_conserved().await;
}

/// UploadJobInput accepts only bytes matching the job's on-chain input digest; the job waits
/// for its input, then runs with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_input_is_checked_and_delivered() {
    use sha2::Digest;
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent("in1", &provider, Serves::AnyProvider, 1).await;
    env.start_scheduler();
    let mut api = env.api().await;
    let copy = Runtime {
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "cp \"$AITBC_INPUT\" \"$AITBC_OUTPUT_DIR/copy.bin\"".into(),
        ],
        image: String::new(),
        env: vec![],
    };
    let listing = env
        .listing("copy", ServiceType::DataProcessing, 1, copy)
        .await;
    let data = b"input bytes for the job".to_vec();
    let mut s = spec(JobKind::Inference, 1, 0);
    s.input_digest = Some(aitbc_protocol::Hash(sha2::Sha256::digest(&data).into()));
    let job = env.submit(&listing, 1, s, 600).await;
    // Without its input the job waits, saying why.
    let start = Instant::now();
    loop {
        let info = api
            .get_job(spb::GetJobRequest {
                job_id: job.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if info.pending_reason.contains("UploadJobInput") {
            break;
        }
        assert!(start.elapsed() < WAIT, "no input reason: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wrong = api
        .upload_job_input(spb::UploadJobInputRequest {
            job_id: job.clone(),
            data: b"other".to_vec(),
        })
        .await;
    assert_eq!(wrong.unwrap_err().code(), tonic::Code::InvalidArgument);
    let ok = api
        .upload_job_input(spb::UploadJobInputRequest {
            job_id: job.clone(),
            data: data.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.matched, "input_digest");
    env.wait_status(&job, &[JobStatus::Settled], Duration::from_secs(60))
        .await;
    let file = api
        .fetch_result(spb::FetchResultRequest {
            job_id: job.clone(),
            path: "copy.bin".into(),
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(file.data, data);
}

/// The scheduler dies (abort, like kill -9) right after AssignJob is committed and before the
/// job starts, then right after ReportResult is committed and before settlement. Each restart
/// resumes from the chain: the job starts on its assigned agent, then is settled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_crash_between_chain_steps_is_recovered() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    let a = env.agent("c1", &provider, Serves::AnyProvider, 1).await;
    let listing = env
        .listing("crash", ServiceType::AiInference, 5, sleep_runtime(1))
        .await;
    let (provider_before, _) = env.chain.balance(&provider.address()).await.unwrap();
    env.start_scheduler_with(&["--crash-after", "assign"]);
    let job = env
        .submit(&listing, 5, spec(JobKind::Inference, 1, 0), 600)
        .await;
    let st = env.sched.as_mut().unwrap().wait_exit(WAIT);
    assert!(!st.success(), "the scheduler aborted: {st:?}");
    let j = env.chain.job(&job).await.unwrap();
    assert_eq!(j.status, JobStatus::Assigned);
    let mut agent = aitbc_gpu_agent::AgentClient::connect(
        format!("http://127.0.0.1:{}", env.agents[a].port),
        env.scheduler_key.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        agent.get_job(&job).await.unwrap_err().code(),
        tonic::Code::NotFound,
        "not started before the crash"
    );

    env.start_scheduler_with(&["--crash-after", "report"]);
    let st = env
        .sched
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(60));
    assert!(!st.success());
    // The report settles the job in the same transaction: nothing is left for the restart to
    // pay, and it must not pay again.
    let j = env.chain.job(&job).await.unwrap();
    assert_eq!(j.status, JobStatus::Settled, "the report settles the job");

    env.start_scheduler();
    let j = env.wait_status(&job, &[JobStatus::Settled], WAIT).await;
    assert_eq!(
        j.assignments, 1,
        "resumed on the same agent, never re-assigned"
    );
    let (provider_after, _) = env.chain.balance(&provider.address()).await.unwrap();
    assert_eq!(
        provider_after.checked_sub(provider_before).unwrap(),
        paid_for(Amount::from_ait(5).unwrap(), env.fee_bps),
        "paid exactly once"
    );
    let (_, escrow) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(escrow, Amount::ZERO);
    env.assert_conserved().await;
}

/// Jobs submitted before the scheduler's first start are adopted; so are jobs submitted while
/// it was down after its state directory was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_jobs_are_adopted_on_first_start_and_after_state_loss() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent("ad1", &provider, Serves::AnyProvider, 2).await;
    let listing = env
        .listing("adopt", ServiceType::AiInference, 1, sleep_runtime(0))
        .await;
    let early = vec![
        env.submit(&listing, 1, spec(JobKind::Inference, 1, 0), 600)
            .await,
        env.submit(&listing, 1, spec(JobKind::Inference, 1, 0), 600)
            .await,
    ];
    env.start_scheduler();
    for j in &early {
        env.wait_status(j, &[JobStatus::Settled], WAIT).await;
    }
    env.sched.as_mut().unwrap().kill9();
    std::fs::remove_dir_all(env.root.path().join("scheduler-state")).unwrap();
    let late = env
        .submit(&listing, 1, spec(JobKind::Inference, 1, 0), 600)
        .await;
    env.start_scheduler();
    let j = env.wait_status(&late, &[JobStatus::Settled], WAIT).await;
    assert_eq!(j.assignments, 1);
    for j in &early {
        assert_eq!(
            env.chain.job(j).await.unwrap().assignments,
            1,
            "settled jobs are left alone"
        );
    }
    env.assert_conserved().await;
}

/// The customer stops a running job: the scheduler stops it on its agent and reports the agent's
/// receipt (the usage so far) without retrying it elsewhere; the provider is paid the listing's
/// minimum charge for it, the customer gets back the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_exchange_a_stopped_job_pays_its_usage_and_is_not_retried() {
    let mut env = Env::new().await;
    let provider = env.provider.clone();
    env.agent("s1", &provider, Serves::AnyProvider, 1).await;
    env.agent("s2", &provider, Serves::AnyProvider, 1).await;
    env.start_scheduler();
    let slow = Runtime {
        command: vec!["/bin/sh".into(), "-c".into(), "sleep 60".into()],
        image: String::new(),
        env: vec![],
    };
    let listing = env
        .listing_with(
            "slow",
            ServiceType::AiInference,
            10,
            slow,
            vec![("minimum_charge".into(), "3".into())],
        )
        .await;
    let (provider_before, _) = env.chain.balance(&provider.address()).await.unwrap();
    let (customer_before, _) = env.chain.balance(&env.customer.address()).await.unwrap();
    let job = env
        .submit(&listing, 10, spec(JobKind::Inference, 1, 0), 7200)
        .await;
    env.wait_assigned_to(&job, Duration::from_secs(30)).await;
    // Let it start on the agent. Its outputs are not released before its result is on chain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut api = env.api().await;
    let fetch = || spb::FetchResultRequest {
        job_id: job.clone(),
        ..Default::default()
    };
    let early = api.fetch_result(fetch()).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early}");
    // Then ask to stop.
    let customer = env.customer.clone();
    env.send(
        &customer,
        Action::CancelJob {
            job_id: job.clone(),
        },
    )
    .await;
    let j = env
        .wait_status(&job, &[JobStatus::Refunded, JobStatus::Settled], WAIT)
        .await;
    assert!(j.stop_requested);
    assert_eq!(j.assignments, 1, "a stopped job was retried elsewhere");
    let r = j.result.expect("the agent's receipt is on chain");
    assert!(!r.receipt.success);
    let (customer_after, escrow) = env.chain.balance(&env.customer.address()).await.unwrap();
    assert_eq!(escrow, Amount::ZERO, "something stays escrowed");
    let (provider_after, _) = env.chain.balance(&provider.address()).await.unwrap();
    let three = Amount::from_ait(3).unwrap();
    // The customer paid two fees (submit, cancel) and the minimum charge.
    let fees = Amount(env.fee.0 * 2);
    assert_eq!(
        customer_before.checked_sub(customer_after).unwrap(),
        three.checked_add(fees).unwrap()
    );
    // The provider got the minimum charge less the marketplace's share (if any), never the price.
    let earned = provider_after.checked_sub(provider_before).unwrap();
    assert!(
        earned > Amount::ZERO && earned <= three,
        "provider earned {earned:?}"
    );
    // With the receipt on chain the outputs are released.
    api.fetch_result(fetch()).await.unwrap();
    env.assert_conserved().await;
}
