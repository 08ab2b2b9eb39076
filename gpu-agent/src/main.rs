//! `aitbc-gpu-agent`: serves this node's GPUs to the AITBC marketplace.

use aitbc_gpu_agent::config::{default_agent_id, AgentConfig, DeclaredGpu, FileConfig};
use aitbc_gpu_agent::identity::{load_or_create_key, KEY_ENV};
use aitbc_gpu_agent::inventory::Inventory;
use aitbc_gpu_agent::isolation::{
    choose_isolation, decide_serves, parse_serve, probe_sandbox, IsolationChoice, IsolationMode,
    IsolationRequest, ServesDecision,
};
use aitbc_gpu_agent::nvml::{GpuBackend, NvmlBackend};
use aitbc_gpu_agent::pod::PodRunner;
use aitbc_gpu_agent::{api, demo_runtime, metrics, Agent};
use aitbc_protocol::{Address, PublicKey};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "aitbc-gpu-agent",
    version,
    about = "AITBC GPU agent: GPU inventory, leases, job runner and signed receipts over gRPC",
    after_help = "Examples:\n  \
  # A devnet agent with two simulated GPUs, trusting one scheduler key:\n  \
  aitbc-gpu-agent run --listen 127.0.0.1:7070 --metrics-listen 127.0.0.1:9102 \\\n    \
  --state-dir /tmp/agent1 --chain-id aitbc-devnet --scheduler-key <HEX> \\\n    \
  --simulate-gpus 2 --simulated-gpu-memory-mib 16384 --simulated-gpu-model \"Simulated A100\"\n\n  \
  # On a GPU node (NVML found automatically), key from a Kubernetes Secret:\n  \
  AITBC_AGENT_KEY=<secret hex> aitbc-gpu-agent run --listen 0.0.0.0:7070 \\\n    \
  --state-dir /var/lib/aitbc-agent --chain-id aitbc-main --owner ait... --scheduler-key <HEX>\n\n  \
  # Print the agent key and the RegisterAgent action (signed by the agent for this owner and\n  \
  # chain) for the owner wallet to send:\n  \
  aitbc-gpu-agent identity --state-dir /tmp/agent1 --owner ait... --chain-id aitbc-devnet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Print the agent's public key, agent id and, given the owner and chain id, the
    /// RegisterAgent action (borsh hex) carrying the agent's proof for that owner.
    Identity(IdentityArgs),
    /// The built-in demo runtime the agent executes for jobs without a command.
    #[command(hide = true)]
    DemoRuntime,
}

#[derive(Args)]
struct KeyArgs {
    /// State directory: agent key, leases, job records and outputs.
    #[arg(
        long,
        env = "AITBC_AGENT_STATE_DIR",
        default_value = "/var/lib/aitbc-agent"
    )]
    state_dir: PathBuf,
    /// Read the agent key (64 hex digits) from this file instead of the state directory.
    /// The AITBC_AGENT_KEY environment variable is the other alternative.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Agent id (default: $NODE_NAME, else the host name).
    #[arg(long)]
    agent_id: Option<String>,
    /// Other providers whose listings this agent serves besides its owner's (repeatable or
    /// comma-separated), or `any`. Needs --isolation sandbox or pod. Default: the owner only.
    #[arg(long = "serve", visible_alias = "serves", value_name = "PROVIDER")]
    serves: Vec<String>,
    /// How jobs run: `auto` (the bubblewrap sandbox where it works, else plain processes for
    /// the owner's listings only), `sandbox`, `pod` (Kubernetes) or `process`.
    #[arg(long, default_value = "auto", env = "AITBC_AGENT_ISOLATION")]
    isolation: IsolationRequest,
    /// The bubblewrap binary of the sandbox.
    #[arg(long, default_value = "bwrap")]
    bwrap: PathBuf,
    /// TOML configuration file (agent_id, chain_id, owner, serves, scheduler_keys, [[gpu]]).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct IdentityArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// Owner wallet address the agent registers to (the wallet that sends the action). The agent
    /// signs its registration for this owner only; without it no action is printed.
    #[arg(long)]
    owner: Option<String>,
    /// Chain id the registration is for (the proof is valid on this chain only).
    #[arg(long, env = "AITBC_CHAIN_ID")]
    chain_id: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Prometheus /metrics and /healthz listen address.
    #[arg(long, default_value = "127.0.0.1:9102")]
    metrics_listen: SocketAddr,
    /// Chain id written into every receipt.
    #[arg(long, env = "AITBC_CHAIN_ID")]
    chain_id: Option<String>,
    /// Owner wallet address (shown in status, with the agent's signed RegisterAgent for this
    /// owner; the owner sends it to register the agent on chain).
    #[arg(long)]
    owner: Option<String>,
    /// Public key (hex) allowed to make mutating calls; repeatable.
    #[arg(long = "scheduler-key")]
    scheduler_keys: Vec<String>,
    /// Serve N declared (simulated) GPUs where NVML is unavailable.
    #[arg(long, default_value_t = 0)]
    simulate_gpus: u32,
    /// Memory of each simulated GPU.
    #[arg(long, default_value_t = 16_384)]
    simulated_gpu_memory_mib: u64,
    /// Model name of the simulated GPUs.
    #[arg(long, default_value = "Simulated GPU")]
    simulated_gpu_model: String,
    /// Do not use NVML even where it loads (serve the declared GPUs).
    #[arg(long)]
    no_nvml: bool,
    /// Seconds between GPU samples.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample_interval_secs: u64,
    /// KiB kept from the start and from the end of each job's stdout and stderr.
    #[arg(long, default_value_t = 64)]
    capture_kib: usize,
    /// Largest output file FetchOutput returns, MiB.
    #[arg(long, default_value_t = 16)]
    max_fetch_mib: u64,
    /// Time limit of jobs that do not set one, seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    default_time_limit_secs: u64,
    /// Hours a finished job's record and outputs are kept.
    #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..))]
    job_retention_hours: u64,
    /// Bytes a job may write (work and output directories; the size of its private /tmp), MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    output_quota_mib: u64,
    /// Host path the sandbox mounts read-only at the same place (models, tools); repeatable.
    #[arg(long = "sandbox-ro-bind")]
    sandbox_ro_binds: Vec<PathBuf>,
    /// Pod mode: the namespace job Pods run in.
    #[arg(long, env = "AITBC_JOB_NAMESPACE", default_value = "aitbc-jobs")]
    job_namespace: String,
    /// Pod mode: runtimeClassName of job Pods (e.g. `nvidia`).
    #[arg(long, env = "AITBC_JOB_RUNTIME_CLASS")]
    job_runtime_class: Option<String>,
    /// Pod mode: host path of --state-dir on the node (job Pods mount their job directory).
    #[arg(long, env = "AITBC_HOST_STATE_DIR")]
    host_state_dir: Option<PathBuf>,
    /// Pod mode: CPU and memory limits of a job Pod.
    #[arg(long, default_value = "4")]
    job_cpu_limit: String,
    #[arg(long, default_value = "16Gi")]
    job_memory_limit: String,
    /// Pod mode: the agent's own image, which runs the demo runtime for listings without one.
    #[arg(long, env = "AITBC_AGENT_IMAGE")]
    job_demo_image: Option<String>,
    /// Log as JSON lines (for Kubernetes) instead of text.
    #[arg(long)]
    log_json: bool,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DemoRuntime => {
            if let Err(e) = demo_runtime::run_from_env() {
                eprintln!("demo runtime: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Identity(a) => {
            let file = load_file_config(&a.keys)?;
            let (key, _) = load_key(&a.keys)?;
            let agent_id = a
                .keys
                .agent_id
                .clone()
                .or(file.agent_id.clone())
                .unwrap_or_else(default_agent_id);
            let owner = match a.owner.clone().or(file.owner.clone()) {
                Some(o) => Some(
                    o.parse::<Address>()
                        .with_context(|| format!("--owner {o:?}"))?,
                ),
                None => None,
            };
            let (_, decision) = resolve_serving(&a.keys, &file, owner)?;
            let serves = decision.serves;
            let chain_id = a
                .chain_id
                .or(file.chain_id)
                .filter(|c| !c.trim().is_empty());
            println!("agent_key: {}", key.public());
            println!("agent_id: {agent_id}");
            match (owner, chain_id) {
                (Some(owner), Some(chain_id)) => {
                    let action = aitbc_gpu_agent::identity::register_agent_action(
                        &key, &chain_id, &owner, &agent_id, &serves,
                    );
                    println!("owner: {owner}");
                    println!("chain_id: {chain_id}");
                    println!(
                        "register_action_borsh_hex: {}",
                        hex::encode(borsh::to_vec(&action)?)
                    );
                }
                _ => eprintln!(
                    "no RegisterAgent action printed: the agent signs its registration for one \
                     owner and chain; pass --owner ADDR and --chain-id ID (or set them in --config)"
                ),
            }
            Ok(())
        }
        Command::Run(a) => {
            init_tracing(a.log_json);
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(run(*a))
        }
    }
}

fn load_file_config(k: &KeyArgs) -> Result<FileConfig> {
    Ok(match &k.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    })
}

fn load_key(
    k: &KeyArgs,
) -> Result<(
    aitbc_protocol::Keypair,
    aitbc_gpu_agent::identity::KeySource,
)> {
    std::fs::create_dir_all(&k.state_dir)
        .with_context(|| format!("creating the state directory {}", k.state_dir.display()))?;
    let env = std::env::var(KEY_ENV).ok();
    Ok(load_or_create_key(
        &k.state_dir,
        k.key_file.as_deref(),
        env.as_deref(),
    )?)
}

/// The isolation mode (probing the sandbox) and, from it, whose listings are served.
fn resolve_serving(
    k: &KeyArgs,
    file: &FileConfig,
    owner: Option<Address>,
) -> Result<(IsolationChoice, ServesDecision)> {
    let probe = match k.isolation {
        IsolationRequest::Auto | IsolationRequest::Exactly(IsolationMode::Sandbox) => {
            probe_sandbox(&k.bwrap)
        }
        _ => Ok(()),
    };
    let iso = choose_isolation(k.isolation, &probe)?;
    let items = if k.serves.is_empty() {
        file.serves.clone().unwrap_or_default()
    } else {
        k.serves.clone()
    };
    let decision = decide_serves(owner, &parse_serve(&items)?, &iso)?;
    Ok((iso, decision))
}

fn build_config(a: &RunArgs) -> Result<AgentConfig> {
    let file = load_file_config(&a.keys)?;
    let chain_id = a
        .chain_id
        .clone()
        .or(file.chain_id.clone())
        .context("--chain-id (or chain_id in --config) is required")?;
    if chain_id.trim().is_empty() {
        bail!("--chain-id must not be empty");
    }
    let agent_id = a
        .keys
        .agent_id
        .clone()
        .or(file.agent_id.clone())
        .unwrap_or_else(default_agent_id);
    if agent_id.trim().is_empty() {
        bail!("--agent-id must not be empty");
    }
    let mut c = AgentConfig::new(&a.keys.state_dir, chain_id, agent_id);
    c.owner = match a.owner.clone().or(file.owner.clone()) {
        Some(o) => Some(
            o.parse::<Address>()
                .with_context(|| format!("--owner {o:?}"))?,
        ),
        None => None,
    };
    let (iso, decision) = resolve_serving(&a.keys, &file, c.owner)?;
    match &iso.fallback_reason {
        Some(why) => {
            tracing::warn!(reason = %why, "this machine cannot sandbox jobs: they run as plain processes, for the owner's listings only")
        }
        None => tracing::info!(isolation = iso.mode.as_str(), "jobs run isolated"),
    }
    if let Some(n) = &decision.notice {
        tracing::warn!("{n}");
    }
    c.isolation = iso.mode;
    c.serves = decision.serves;
    c.output_quota_bytes = a.output_quota_mib.saturating_mul(1024 * 1024);
    c.sandbox.bwrap = a.keys.bwrap.clone();
    c.sandbox.extra_ro = a.sandbox_ro_binds.clone();
    if let Some(k) = &a.keys.key_file {
        c.sandbox.hidden.push(k.clone());
    }
    if iso.mode == IsolationMode::Pod {
        c.pod = Some(aitbc_gpu_agent::pod::PodSettings {
            namespace: a.job_namespace.clone(),
            node_name: std::env::var("NODE_NAME")
                .context("--isolation pod needs NODE_NAME (the DaemonSet's spec.nodeName)")?,
            runtime_class: a.job_runtime_class.clone(),
            host_state_dir: a
                .host_state_dir
                .clone()
                .unwrap_or_else(|| a.keys.state_dir.clone()),
            cpu_limit: a.job_cpu_limit.clone(),
            memory_limit: a.job_memory_limit.clone(),
            demo_image: a.job_demo_image.clone(),
            // SAFETY: geteuid(2) has no preconditions and touches no memory.
            job_uid: aitbc_gpu_agent::pod::job_uid_for(unsafe { libc::geteuid() }),
        });
    }
    let keys = a
        .scheduler_keys
        .iter()
        .chain(&file.scheduler_keys)
        .flat_map(|s| s.split(','));
    c.scheduler_keys = keys
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.parse::<PublicKey>()
                .with_context(|| format!("--scheduler-key {s:?}"))
        })
        .collect::<Result<_>>()?;
    c.declared_gpus = file.gpus;
    for _ in 0..a.simulate_gpus {
        if a.simulated_gpu_memory_mib == 0 {
            bail!("--simulated-gpu-memory-mib must be positive");
        }
        c.declared_gpus.push(DeclaredGpu {
            model: a.simulated_gpu_model.clone(),
            memory_mib: a.simulated_gpu_memory_mib,
            uuid: None,
        });
    }
    c.disable_nvml = a.no_nvml;
    c.sample_interval = Duration::from_secs(
        file.sample_interval_secs
            .unwrap_or(a.sample_interval_secs)
            .max(1),
    );
    c.capture_bytes = a.capture_kib.saturating_mul(1024);
    c.max_fetch_bytes = a.max_fetch_mib.saturating_mul(1024 * 1024);
    c.default_time_limit = Duration::from_secs(a.default_time_limit_secs);
    c.job_retention = Duration::from_secs(a.job_retention_hours.saturating_mul(3600));
    let exe = std::env::current_exe().context("locating this binary for the demo runtime")?;
    c.demo_runtime = vec![exe.display().to_string(), "demo-runtime".into()];
    Ok(c)
}

/// Pod mode: the in-cluster client, and the Pods an earlier run of this agent left deleted.
async fn pod_runner(settings: aitbc_gpu_agent::pod::PodSettings) -> Result<PodRunner> {
    let client = kube::Client::try_default().await.context(
        "--isolation pod: no Kubernetes client (in-cluster service account or kubeconfig)",
    )?;
    let runner = PodRunner::new(client, settings);
    let gone = runner
        .cleanup_node()
        .await
        .context("deleting job Pods left by an earlier run")?;
    if !gone.is_empty() {
        tracing::warn!(pods = ?gone, "deleted job Pods left by an earlier run of this agent");
    }
    Ok(runner)
}

async fn run(a: RunArgs) -> Result<()> {
    let config = build_config(&a)?;
    let (key, source) = load_key(&a.keys)?;
    let inventory = Inventory::detect(
        &config.agent_id,
        &config.declared_gpus,
        config.disable_nvml,
        || NvmlBackend::load().map(|b| Box::new(b) as Box<dyn GpuBackend>),
    );
    if config.scheduler_keys.is_empty() {
        tracing::warn!("no --scheduler-key given: every mutating call (run, cancel, leases, stress) will be refused");
    }
    let pods = match &config.pod {
        Some(settings) => Some(pod_runner(settings.clone()).await?),
        None => None,
    };
    let agent = Agent::open_with_pods(config, key, inventory, pods)?;
    let st = agent.status();
    tracing::info!(
        agent_id = %st.agent_id, agent_key = %st.agent_key, key_source = ?source, chain_id = %st.chain_id,
        gpus = st.gpu_count, source = %st.inventory_source, simulated = st.simulated, reason = %st.reason,
        "agent starting"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let sampler = agent.spawn_sampler(stop_rx.clone());
    let (grpc_addr, grpc) = api::spawn_server(agent.clone(), a.listen, stopped(stop_rx.clone()))
        .await
        .with_context(|| format!("binding gRPC on {}", a.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(a.metrics_listen)
        .await
        .with_context(|| format!("binding metrics on {}", a.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let http_shutdown = stopped(stop_rx.clone());
    let router = metrics::router(agent.clone());
    let http = tokio::spawn(async move {
        axum::serve(metrics_listener, router)
            .with_graceful_shutdown(http_shutdown)
            .await
    });
    tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, "agent listening");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; shutting down"),
    }
    agent.shutdown(Duration::from_secs(10)).await;
    stop_tx.send_replace(true);
    let _ = sampler.await;
    if let Ok(Err(e)) = grpc.await {
        tracing::warn!(error = %e, "gRPC server ended with an error");
    }
    if let Ok(Err(e)) = http.await {
        tracing::warn!(error = %e, "metrics server ended with an error");
    }
    tracing::info!("agent stopped");
    Ok(())
}
