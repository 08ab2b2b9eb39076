//! `devnet up | status | down`: a local network of validators, GPU agents and the scheduler, as
//! processes started from the binaries next to `aitbc-cli` (else on PATH). Everything lives in
//! DIR (default `$AITBC_HOME/devnet`): genesis, keys, data, logs, and `devnet.json` with the
//! ports and PIDs; `up` on an existing DIR resumes the same chain.

use crate::cli::DevnetUpArgs;
use crate::context::Ctx;
use crate::output::Report;
use crate::password;
use aitbc_protocol::agent_pb;
use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::Genesis;
use aitbc_protocol::registration::verify_registration;
use aitbc_protocol::scheduler_pb as spb;
use aitbc_protocol::tx::Action;
use aitbc_protocol::{Address, Amount, Keypair, PublicKey};
use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const GENESIS_OPS: &str = "genesis-ops";
/// The scheduler pays fees for AssignJob, ReportResult and settlement; devnet tops it up.
const SCHEDULER_FUNDS: Amount = Amount(10_000_000_000);
const SCHEDULER_FUNDS_MIN: Amount = Amount(100_000_000);
/// How long `up` waits for the agents to be health-checked and registered before it returns.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub endpoint: String,
    pub log: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodePorts {
    pub rpc: u16,
    pub p2p: u16,
    pub http: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentPorts {
    pub id: String,
    pub grpc: u16,
    pub metrics: u16,
}

/// `DIR/devnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetState {
    pub chain_id: String,
    pub nodes: Vec<NodePorts>,
    pub agents: Vec<AgentPorts>,
    pub scheduler_grpc: u16,
    pub scheduler_metrics: u16,
    #[serde(default)]
    pub processes: Vec<Proc>,
}

impl DevnetState {
    fn load(dir: &Path) -> Result<Option<DevnetState>> {
        let p = dir.join("devnet.json");
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Some(serde_json::from_str(&t).with_context(|| {
                format!("{} is not a devnet state file", p.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("cannot read {}: {e}", p.display())),
        }
    }
    fn save(&self, dir: &Path) -> Result<()> {
        let p = dir.join("devnet.json");
        let tmp = dir.join("devnet.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(())
    }
    fn rpc_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.rpc))
            .collect()
    }
}

/// A sibling binary: next to this executable, else on PATH.
pub fn find_bin(name: &str) -> Result<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(d) = &exe_dir {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "cannot find `{name}` next to aitbc-cli ({}) or on PATH; build it with `cargo build --workspace --bins`",
        exe_dir.map(|d| d.display().to_string()).unwrap_or_else(|| "?".into())
    )
}

/// The name of the devnet's `i`-th agent (from 0): `gpu-worker-1`, `gpu-worker-2`, … as the old
/// scripts address them.
pub fn agent_name(i: usize) -> String {
    format!("gpu-worker-{}", i + 1)
}

fn free_port() -> Result<u16> {
    Ok(aitbc_protocol::net::free_loopback_port()?)
}

pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    // Reap it first when it is our own exited child (foreground devnet), so that a zombie does not
    // count as running; for other processes waitpid fails with ECHILD and changes nothing.
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on one PID never blocks and only reaps that PID.
    if unsafe { libc::waitpid(p, &mut status, libc::WNOHANG) } == p {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    unsafe { libc::kill(p, 0) == 0 }
}

fn signal(pid: u32, sig: i32) {
    if let Ok(p) = i32::try_from(pid) {
        // SAFETY: sends a signal to a PID this devnet started and recorded in devnet.json.
        unsafe {
            libc::kill(p, sig);
        }
    }
}

/// A devnet child's command line: never with the wallet password in its environment (the
/// children get what they need as files; a password there is readable in /proc by the user's
/// other processes and inherited by whatever they start, jobs included).
fn child_command(bin: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove(crate::password::ENV_PASSWORD);
    cmd
}

fn spawn(bin: &Path, args: &[String], log: &Path, name: &str) -> Result<Proc> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let err = out.try_clone()?;
    let child = child_command(bin, args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        // Own process group: a Ctrl-C in the terminal reaches aitbc-cli, which stops them in order.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Proc {
        name: name.to_string(),
        pid: child.id(),
        endpoint: String::new(),
        log: log.to_path_buf(),
    })
}

fn write_key(path: &Path, k: &Keypair) -> Result<()> {
    crate::keystore::write_new_private(path, format!("{}\n", k.secret_hex()).as_bytes())
        .with_context(|| format!("cannot write key {}", path.display()))
}

fn read_key(path: &Path) -> Result<Keypair> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key {}", path.display()))?;
    Keypair::from_secret_hex(s.trim()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn default_dir(ctx: &Ctx) -> PathBuf {
    ctx.config
        .devnet_dir
        .clone()
        .unwrap_or_else(|| ctx.home.join("devnet"))
}

async fn wait_node(
    url: &str,
    min_height: u64,
    timeout: Duration,
    log: &Path,
) -> Result<ChainClient> {
    let start = Instant::now();
    loop {
        if let Ok(c) = ChainClient::connect(url).await {
            if let Ok(s) = c.status().await {
                if s.height >= min_height {
                    return Ok(c);
                }
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "node {url} did not come up within {timeout:?}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_agent(url: &str, timeout: Duration, log: &Path) -> Result<agent_pb::AgentStatus> {
    let start = Instant::now();
    loop {
        if let Ok(mut a) = crate::commands::ai::agent_client(url).await {
            if let Ok(s) = a.get_status(agent_pb::GetStatusRequest {}).await {
                return Ok(s.into_inner());
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "agent {url} did not come up within {timeout:?}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent's own `RegisterAgent` from its status: it carries the agent key's proof for `owner`
/// on `chain_id` (the agent was started with `--owner` and `--chain-id`). Checked here so that a
/// mismatch is reported before a transaction is spent on it.
fn registration_from_status(
    st: &agent_pb::AgentStatus,
    key: &PublicKey,
    chain_id: &str,
    owner: &Address,
) -> Result<Action> {
    let action: Action = borsh::from_slice(&st.register_action)
        .map_err(|_| anyhow!("its status carries no registration action (no --owner?)"))?;
    match &action {
        Action::RegisterAgent {
            agent_key,
            agent_id,
            serves,
            proof,
        } if agent_key == key => {
            verify_registration(agent_key, chain_id, owner, agent_id, serves, proof).map_err(
                |_| anyhow!("its registration is not signed for owner {owner} on chain {chain_id}"),
            )?;
            Ok(action)
        }
        other => bail!(
            "its status carries a {} action, not its own registration",
            other.name()
        ),
    }
}

async fn wait_scheduler(url: &str, timeout: Duration, log: &Path) -> Result<()> {
    use aitbc_protocol::scheduler_pb::{scheduler_client::SchedulerClient, GetMetricsRequest};
    let start = Instant::now();
    loop {
        if let Ok(mut s) = SchedulerClient::connect(url.to_string()).await {
            if s.get_metrics(GetMetricsRequest {}).await.is_ok() {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "scheduler {url} did not come up within {timeout:?}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Why an agent is not ready for jobs yet (known to the scheduler, health-checked, registered on
/// chain, inventory read), or `None` when it is.
pub fn agent_not_ready(info: Option<&spb::AgentInfo>) -> Option<String> {
    let Some(a) = info else {
        return Some("not known to the scheduler yet".into());
    };
    if !a.healthy {
        let why = if a.last_error.is_empty() {
            "not checked yet"
        } else {
            a.last_error.as_str()
        };
        return Some(format!("not healthy yet: {why}"));
    }
    if !a.registered {
        return Some("not registered on chain yet".into());
    }
    if a.inventory.is_none() {
        return Some("no GPU inventory yet".into());
    }
    None
}

/// What is still starting, one `NAME (why)` per part; empty when everything is ready.
pub fn still_starting(
    expected_agents: &[String],
    agents: &[spb::AgentInfo],
    nodes_down: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = nodes_down
        .iter()
        .map(|n| format!("{n} (not answering yet)"))
        .collect();
    for id in expected_agents {
        if let Some(why) = agent_not_ready(agents.iter().find(|a| &a.agent_id == id)) {
            out.push(format!("{id} ({why})"));
        }
    }
    out
}

/// One look at the devnet: the parts [`still_starting`] names.
async fn readiness(state: &DevnetState, scheduler_url: &str) -> Vec<String> {
    let mut nodes_down = Vec::new();
    for (i, url) in state.rpc_urls().iter().enumerate() {
        let up = match ChainClient::connect(url).await {
            Ok(c) => c.status().await.is_ok(),
            Err(_) => false,
        };
        if !up {
            nodes_down.push(format!("validator-{i}"));
        }
    }
    let agents =
        match spb::scheduler_client::SchedulerClient::connect(scheduler_url.to_string()).await {
            Ok(mut s) => s
                .list_agents(spb::ListAgentsRequest {})
                .await
                .map(|r| r.into_inner().agents)
                .unwrap_or_default(),
            Err(_) => vec![],
        };
    let expected: Vec<String> = state.agents.iter().map(|a| a.id.clone()).collect();
    still_starting(&expected, &agents, &nodes_down)
}

/// Waits until every validator answers and the scheduler has health-checked every agent and
/// matched it to its on-chain registration; returns what is still starting after `timeout`.
async fn wait_ready(state: &DevnetState, scheduler_url: &str, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let pending = readiness(state, scheduler_url).await;
        if pending.is_empty() || start.elapsed() > timeout {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn genesis_password(ctx: &Ctx, a: &DevnetUpArgs) -> Result<String> {
    if let Some(p) = &a.genesis_password {
        return Ok(p.clone());
    }
    password::resolve(ctx.password.as_deref(), GENESIS_OPS)
        .map_err(|_| anyhow!("devnet up needs the genesis-ops wallet's password: pass --genesis-password P, set AITBC_PASSWORD, or run on a terminal to be prompted"))
}

pub async fn up(ctx: &Ctx, a: &DevnetUpArgs) -> Result<Report> {
    if a.validators == 0 {
        bail!("--validators must be at least 1");
    }
    let node_bin = find_bin("aitbc-node")?;
    let agent_bin = find_bin("aitbc-gpu-agent")?;
    let sched_bin = find_bin("aitbc-scheduler")?;
    let dir = a.dir.clone().unwrap_or_else(|| default_dir(ctx));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let existing = DevnetState::load(&dir)?;
    if let Some(s) = &existing {
        let running: Vec<String> = s
            .processes
            .iter()
            .filter(|p| pid_alive(p.pid))
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect();
        if !running.is_empty() {
            bail!("the devnet in {} is already running: {}; stop it with `aitbc-cli devnet down --dir {}`", dir.display(), running.join(", "), dir.display());
        }
    }
    let genesis_path = dir.join("genesis.json");
    let sched_key_path = dir.join("scheduler.key");
    let resumed = genesis_path.exists();
    let mut password: Option<String> = None;
    let mut state = if resumed {
        let genesis: Genesis = serde_json::from_str(&std::fs::read_to_string(&genesis_path)?)
            .with_context(|| format!("{} is not a genesis file", genesis_path.display()))?;
        match existing {
            Some(s) => s,
            None => bail!("{} holds a genesis but no devnet.json; it was not made by `aitbc-cli devnet up` (validators: {})", dir.display(), genesis.validators.len()),
        }
    } else {
        let ops = match ctx.keystore.info(GENESIS_OPS) {
            Ok(w) => w.address,
            Err(crate::keystore::KeystoreError::Unknown { .. }) => {
                let pw = genesis_password(ctx, a)?;
                let w = ctx.keystore.create(GENESIS_OPS, &pw)?;
                password = Some(pw);
                w.address
            }
            Err(e) => return Err(e.into()),
        };
        if !sched_key_path.exists() {
            write_key(&sched_key_path, &Keypair::generate())?;
        }
        let sched = read_key(&sched_key_path)?;
        let out = Command::new(&node_bin)
            .arg("init")
            .arg("--dir")
            .arg(&dir)
            .args([
                "--validators",
                &a.validators.to_string(),
                "--chain-id",
                &a.chain_id,
                "--block-time-ms",
                &a.block_time_ms.to_string(),
            ])
            .args([
                "--genesis-ops-address",
                &ops.to_string(),
                "--scheduler",
                &sched.address().to_string(),
            ])
            .output()
            .with_context(|| format!("cannot run {}", node_bin.display()))?;
        if !out.status.success() {
            bail!(
                "aitbc-node init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut nodes = Vec::new();
        for _ in 0..a.validators {
            nodes.push(NodePorts {
                rpc: free_port()?,
                p2p: free_port()?,
                http: free_port()?,
            });
        }
        let mut agents = Vec::new();
        for i in 0..a.agents {
            agents.push(AgentPorts {
                id: agent_name(i),
                grpc: free_port()?,
                metrics: free_port()?,
            });
        }
        DevnetState {
            chain_id: a.chain_id.clone(),
            nodes,
            agents,
            scheduler_grpc: free_port()?,
            scheduler_metrics: free_port()?,
            processes: vec![],
        }
    };
    state.processes.clear();
    let sched = read_key(&sched_key_path)?;
    let mut r = ctx.report();
    r.field("dir", dir.display().to_string())
        .field("resumed", resumed)
        .field("chain_id", &state.chain_id);
    let result = start_all(
        ctx,
        a,
        &dir,
        &mut state,
        &node_bin,
        &agent_bin,
        &sched_bin,
        &sched,
        &mut password,
        &mut r,
    )
    .await;
    state.save(&dir)?;
    if let Err(e) = result {
        stop(&state, Duration::from_secs(5));
        state.processes.clear();
        state.save(&dir)?;
        return Err(e.context(format!("devnet up failed; logs are in {}", dir.display())));
    }
    let urls = state.rpc_urls();
    let mut cfg = ctx.config.clone();
    cfg.node = urls.first().cloned();
    cfg.nodes = urls;
    cfg.scheduler = Some(format!("http://127.0.0.1:{}", state.scheduler_grpc));
    cfg.agents = state
        .agents
        .iter()
        .map(|x| (x.id.clone(), format!("http://127.0.0.1:{}", x.grpc)))
        .collect();
    cfg.devnet_dir = Some(dir.clone());
    cfg.save(&ctx.home)?;
    r.field(
        "config",
        crate::config::config_path(&ctx.home).display().to_string(),
    );
    if a.detach {
        r.text(format!(
            "stop it with: aitbc-cli devnet down --dir {}",
            dir.display()
        ));
        return Ok(r);
    }
    r.text("running in the foreground; press Ctrl-C to stop everything");
    r.print();
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping the devnet...");
    stop(&state, Duration::from_secs(10));
    state.processes.clear();
    state.save(&dir)?;
    let mut r = ctx.report();
    r.field("stopped", dir.display().to_string());
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn start_all(
    ctx: &Ctx,
    a: &DevnetUpArgs,
    dir: &Path,
    state: &mut DevnetState,
    node_bin: &Path,
    agent_bin: &Path,
    sched_bin: &Path,
    sched: &Keypair,
    password: &mut Option<String>,
    r: &mut Report,
) -> Result<()> {
    let genesis: Genesis =
        serde_json::from_str(&std::fs::read_to_string(dir.join("genesis.json"))?)?;
    let ops_addr = genesis
        .allocations
        .first()
        .map(|x| x.address)
        .ok_or_else(|| anyhow!("genesis has no genesis-ops allocation"))?;
    for (i, n) in state.nodes.clone().iter().enumerate() {
        let peers: Vec<String> = state
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("127.0.0.1:{}", p.p2p))
            .collect();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--genesis".into(),
            dir.join("genesis.json").display().to_string(),
            "--key-file".into(),
            dir.join(format!("validator-{i}.key")).display().to_string(),
            "--data-dir".into(),
            dir.join(format!("node-{i}")).display().to_string(),
            "--rpc-listen".into(),
            format!("127.0.0.1:{}", n.rpc),
            "--p2p-listen".into(),
            format!("127.0.0.1:{}", n.p2p),
            "--http-listen".into(),
            format!("127.0.0.1:{}", n.http),
        ];
        if !peers.is_empty() {
            args.push("--peer".into());
            args.push(peers.join(","));
        }
        let mut p = spawn(
            node_bin,
            &args,
            &dir.join(format!("node-{i}.log")),
            &format!("validator-{i}"),
        )?;
        p.endpoint = format!("http://127.0.0.1:{}", n.rpc);
        state.processes.push(p);
    }
    state.save(dir)?;
    let rpc0 = format!("http://127.0.0.1:{}", state.nodes[0].rpc);
    let chain = wait_node(&rpc0, 1, Duration::from_secs(60), &dir.join("node-0.log")).await?;
    // Agents.
    let mut agent_keys: Vec<(String, PublicKey, Action)> = Vec::new();
    for x in state.agents.clone() {
        let state_dir = dir.join(&x.id);
        let args: Vec<String> = vec![
            "run".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", x.grpc),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", x.metrics),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--chain-id".into(),
            state.chain_id.clone(),
            "--agent-id".into(),
            x.id.clone(),
            "--scheduler-key".into(),
            sched.public().to_hex(),
            "--owner".into(),
            ops_addr.to_string(),
            // Devnet listings come from any wallet: the agents sandbox their jobs (bubblewrap)
            // and serve every provider; where the sandbox cannot run they say so and serve
            // only genesis-ops.
            "--serve".into(),
            "any".into(),
            "--simulate-gpus".into(),
            a.simulate_gpus.to_string(),
            "--simulated-gpu-memory-mib".into(),
            a.simulated_gpu_memory_mib.to_string(),
        ];
        let log = dir.join(format!("{}.log", x.id));
        let mut p = spawn(agent_bin, &args, &log, &x.id)?;
        let url = format!("http://127.0.0.1:{}", x.grpc);
        p.endpoint = url.clone();
        state.processes.push(p);
        state.save(dir)?;
        let st = wait_agent(&url, Duration::from_secs(30), &log).await?;
        let key: PublicKey = st
            .agent_key
            .parse()
            .map_err(|e| anyhow!("agent {} reports a bad key: {e}", x.id))?;
        let register = registration_from_status(&st, &key, &genesis.chain_id, &ops_addr)
            .map_err(|e| anyhow!("agent {}: {e}; see {}", x.id, log.display()))?;
        agent_keys.push((x.id.clone(), key, register));
    }
    // Register unregistered agents on chain, and fund the scheduler's fees, signed by genesis-ops.
    let registered: Vec<PublicKey> = chain.agents().await?.into_iter().map(|x| x.key).collect();
    let missing: Vec<&(String, PublicKey, Action)> = agent_keys
        .iter()
        .filter(|(_, k, _)| !registered.contains(k))
        .collect();
    let (sched_balance, _) = chain.balance(&sched.address()).await?;
    let sched_low = sched_balance < SCHEDULER_FUNDS_MIN;
    if !missing.is_empty() || sched_low {
        let pw = match password.clone() {
            Some(p) => p,
            None => genesis_password(ctx, a)?,
        };
        let ops = ctx.keystore.unlock(GENESIS_OPS, &pw)?;
        if ops.address() != ops_addr {
            bail!(
                "the keystore's genesis-ops wallet ({}) is not this devnet's genesis-ops ({ops_addr}); use another AITBC_HOME",
                ops.address()
            );
        }
        let fee = genesis.min_fee;
        // Each agent signed its registration for genesis-ops on this chain (its status).
        for (id, _, action) in missing {
            chain
                .send_and_wait(&ops, action.clone(), fee, Duration::from_secs(60))
                .await
                .map_err(|e| anyhow!("registering agent {id} on chain: {e}"))?;
        }
        if sched_low {
            let action = Action::Transfer {
                to: sched.address(),
                amount: SCHEDULER_FUNDS,
            };
            chain
                .send_and_wait(&ops, action, fee, Duration::from_secs(60))
                .await
                .map_err(|e| anyhow!("funding the scheduler's transaction fees: {e}"))?;
        }
    }
    // Scheduler.
    let mut args: Vec<String> = vec![
        "run".into(),
        "--chain".into(),
        rpc0.clone(),
        "--key-file".into(),
        dir.join("scheduler.key").display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", state.scheduler_grpc),
        "--metrics-listen".into(),
        format!("127.0.0.1:{}", state.scheduler_metrics),
        "--state-dir".into(),
        dir.join("scheduler").display().to_string(),
    ];
    for x in &state.agents {
        args.push("--agent".into());
        args.push(format!("{}=http://127.0.0.1:{}", x.id, x.grpc));
    }
    let log = dir.join("scheduler.log");
    let mut p = spawn(sched_bin, &args, &log, "scheduler")?;
    let surl = format!("http://127.0.0.1:{}", state.scheduler_grpc);
    p.endpoint = surl.clone();
    state.processes.push(p);
    state.save(dir)?;
    wait_scheduler(&surl, Duration::from_secs(30), &log).await?;
    let pending = wait_ready(state, &surl, READY_TIMEOUT).await;
    for p in &state.processes {
        r.row(
            "processes",
            format!(
                "process: {} pid: {} endpoint: {} log: {}",
                p.name,
                p.pid,
                p.endpoint,
                p.log.display()
            ),
            p,
        );
    }
    r.field("node", &rpc0)
        .field("scheduler", &surl)
        .field("genesis_ops", ops_addr.to_string());
    report_readiness(r, &pending);
    Ok(())
}

/// `ready: true`, or `ready: false` and one `starting: NAME (why)` line per part still starting.
fn report_readiness(r: &mut Report, pending: &[String]) {
    r.field("ready", pending.is_empty());
    r.list("starting");
    for p in pending {
        r.row("starting", format!("starting: {p}"), p);
    }
    if !pending.is_empty() {
        eprintln!(
            "the devnet is up but {} part(s) were still starting after {}s; `aitbc-cli resource status` shows the agents",
            pending.len(),
            READY_TIMEOUT.as_secs()
        );
    }
}

/// SIGTERM to every recorded process (scheduler and agents first), then SIGKILL after `grace`.
fn stop(state: &DevnetState, grace: Duration) -> Vec<(String, u32, bool)> {
    let mut order: Vec<&Proc> = state.processes.iter().collect();
    order.reverse();
    let mut out = Vec::new();
    for p in &order {
        if pid_alive(p.pid) {
            signal(p.pid, libc::SIGTERM);
        }
    }
    let start = Instant::now();
    while order.iter().any(|p| pid_alive(p.pid)) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &order {
        let forced = pid_alive(p.pid);
        if forced {
            signal(p.pid, libc::SIGKILL);
        }
        out.push((p.name.clone(), p.pid, forced));
    }
    out
}

pub async fn down(ctx: &Ctx, dir: Option<&Path>) -> Result<Report> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_dir(ctx));
    let Some(mut state) = DevnetState::load(&dir)? else {
        bail!(
            "no devnet in {} (no devnet.json); start one with `aitbc-cli devnet up`",
            dir.display()
        );
    };
    let mut r = ctx.report();
    r.field("dir", dir.display().to_string());
    for (name, pid, forced) in stop(&state, Duration::from_secs(10)) {
        r.row(
            "stopped",
            format!(
                "stopped: {name} pid: {pid}{}",
                if forced { " (killed)" } else { "" }
            ),
            json!({"name": name, "pid": pid, "killed": forced}),
        );
    }
    state.processes.clear();
    state.save(&dir)?;
    r.text(format!(
        "data kept in {}; `aitbc-cli devnet up --dir {}` resumes it",
        dir.display(),
        dir.display()
    ));
    Ok(r)
}

pub async fn status(ctx: &Ctx, dir: Option<&Path>) -> Result<Report> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_dir(ctx));
    let Some(state) = DevnetState::load(&dir)? else {
        bail!(
            "no devnet in {} (no devnet.json); start one with `aitbc-cli devnet up`",
            dir.display()
        );
    };
    let mut r = ctx.report();
    r.field("dir", dir.display().to_string())
        .field("chain_id", &state.chain_id);
    let mut up = 0;
    for p in &state.processes {
        let alive = pid_alive(p.pid);
        up += usize::from(alive);
        r.row("processes", format!("process: {} pid: {} running: {} endpoint: {} log: {}", p.name, p.pid, alive, p.endpoint, p.log.display()), json!({"name": p.name, "pid": p.pid, "running": alive, "endpoint": p.endpoint, "log": p.log}));
    }
    r.field("running", format!("{up}/{}", state.processes.len()));
    for url in state.rpc_urls() {
        match ChainClient::connect(&url).await {
            Ok(c) => match c.status().await {
                Ok(s) => {
                    r.row(
                        "nodes",
                        format!(
                            "node: {url} height: {} peers: {}",
                            s.height,
                            s.peers_seen.len()
                        ),
                        json!({"node": url, "height": s.height}),
                    );
                }
                Err(e) => {
                    r.row(
                        "nodes",
                        format!("node: {url} error: {e}"),
                        json!({"node": url, "error": e.to_string()}),
                    );
                }
            },
            Err(e) => {
                r.row(
                    "nodes",
                    format!("node: {url} down: {e}"),
                    json!({"node": url, "error": e.to_string()}),
                );
            }
        }
    }
    if up == 0 {
        r.text(format!(
            "the devnet is stopped; `aitbc-cli devnet up --dir {}` resumes it",
            dir.display()
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_plane_no_password_reaches_a_devnet_child() {
        let cmd = child_command(Path::new("/bin/true"), &["x".into()]);
        let removed = cmd
            .get_envs()
            .any(|(k, v)| k == crate::password::ENV_PASSWORD && v.is_none());
        assert!(removed, "AITBC_PASSWORD is passed on to devnet children");
    }

    fn agent(name: &str, healthy: bool, registered: bool, inventory: bool) -> spb::AgentInfo {
        spb::AgentInfo {
            agent_id: name.into(),
            healthy,
            registered,
            last_error: if healthy {
                String::new()
            } else {
                "not checked yet".into()
            },
            inventory: inventory.then(spb::InventorySummary::default),
            ..Default::default()
        }
    }

    #[test]
    fn agents_are_named_as_the_old_scripts_address_them() {
        assert_eq!(agent_name(0), "gpu-worker-1");
        assert_eq!(agent_name(1), "gpu-worker-2");
    }

    #[test]
    fn up_waits_for_every_agent_to_be_checked_and_registered() {
        let expected = vec![agent_name(0), agent_name(1)];
        let ready = vec![
            agent("gpu-worker-1", true, true, true),
            agent("gpu-worker-2", true, true, true),
        ];
        assert!(still_starting(&expected, &ready, &[]).is_empty());
        let starting = vec![
            agent("gpu-worker-1", false, false, false),
            agent("gpu-worker-2", true, false, true),
        ];
        assert_eq!(
            still_starting(&expected, &starting, &["validator-2".into()]),
            vec![
                "validator-2 (not answering yet)",
                "gpu-worker-1 (not healthy yet: not checked yet)",
                "gpu-worker-2 (not registered on chain yet)",
            ]
        );
        assert_eq!(
            still_starting(&expected, &ready[..1], &[]),
            vec!["gpu-worker-2 (not known to the scheduler yet)"]
        );
        assert_eq!(
            agent_not_ready(Some(&agent("x", true, true, false))).as_deref(),
            Some("no GPU inventory yet")
        );
    }
}
