//! `aitbc-scheduler`: places AITBC jobs on GPU agents and settles them on chain.

use aitbc_scheduler::{AgentEndpoint, SchedulerConfig, StaticAgents};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "aitbc-scheduler",
    version,
    about = "Follows the AITBC chain, places jobs on GPU agents, dispatches them and settles or refunds them",
    after_help = "Examples:\n  \
aitbc-scheduler run --chain http://127.0.0.1:9090 --key-file devnet/scheduler.key \\\n    \
--agent gpu-0=http://127.0.0.1:7070 --agent gpu-1=http://127.0.0.1:7071 \\\n    \
--listen 127.0.0.1:7080 --metrics-listen 127.0.0.1:9180 --state-dir /tmp/aitbc-scheduler\n  \
aitbc-scheduler run --chain http://127.0.0.1:9090 --key-file sched.key --agent gpu-0=http://10.0.0.5:7070 --max-attempts 5"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler until SIGTERM / Ctrl-C.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
}

const RUN_EXAMPLES: &str = "Examples:
  aitbc-scheduler run --chain http://127.0.0.1:9090 --key-file devnet/scheduler.key \\
    --agent gpu-0=http://127.0.0.1:7070 --agent gpu-1=http://127.0.0.1:7071 \\
    --listen 127.0.0.1:7080 --metrics-listen 127.0.0.1:9180 --state-dir /tmp/aitbc-scheduler
  RUST_LOG=aitbc_scheduler=debug aitbc-scheduler run --key-file sched.key --agent gpu-0=http://10.0.0.5:7070 --max-attempts 5

The key's address must be a genesis scheduler and hold AIT for fees; agents must run with
--scheduler-key <its public key> and be registered on chain by their owner.";

#[derive(Parser)]
struct RunArgs {
    /// Chain node gRPC endpoint.
    #[arg(long, env = "AITBC_CHAIN", default_value = "http://127.0.0.1:9090")]
    chain: String,
    /// File with the scheduler key (64 hex digits); its address must be a genesis scheduler.
    #[arg(long, env = "AITBC_SCHEDULER_KEY_FILE")]
    key_file: PathBuf,
    /// An agent as ID=URL (repeatable), e.g. gpu-0=http://127.0.0.1:7070.
    #[arg(long = "agent", value_name = "ID=URL")]
    agents: Vec<String>,
    /// Control API (gRPC) address.
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// Prometheus /metrics and /healthz address.
    #[arg(long, default_value = "127.0.0.1:9180")]
    metrics_listen: SocketAddr,
    /// State directory (state.json, inputs/).
    #[arg(
        long,
        env = "AITBC_SCHEDULER_STATE_DIR",
        default_value = "/var/lib/aitbc-scheduler"
    )]
    state_dir: PathBuf,
    /// Dispatch attempts per job before it is refunded.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Agent health-check interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    agent_refresh_ms: u64,
    /// Consecutive failed health checks after which an agent is lost.
    #[arg(long, default_value_t = 3)]
    agent_loss_checks: u32,
    /// Seconds a job waits before it is placed first and reserves capacity.
    #[arg(long, default_value_t = 30)]
    aging_secs: u64,
    /// Seconds over a job's time limit before its agent is given up on.
    #[arg(long, default_value_t = 30)]
    job_grace_secs: u64,
    /// JSON logs.
    #[arg(long)]
    log_json: bool,
    /// Fault injection for crash-recovery tests: abort right after `assign` or `report` is
    /// committed.
    #[arg(long, hide = true)]
    crash_after: Option<aitbc_scheduler::config::CrashPoint>,
}

fn parse_agent(s: &str) -> Result<AgentEndpoint> {
    let (id, url) = s
        .split_once('=')
        .with_context(|| format!("--agent takes ID=URL, got {s:?}"))?;
    if id.trim().is_empty() || url.trim().is_empty() {
        bail!("--agent takes ID=URL, got {s:?}");
    }
    Ok(AgentEndpoint {
        agent_id: id.trim().into(),
        endpoint: url.trim().into(),
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut t) => {
                t.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let Command::Run(a) = cli.command;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if a.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let agents = a
        .agents
        .iter()
        .map(|s| parse_agent(s))
        .collect::<Result<Vec<_>>>()?;
    let key_hex = std::fs::read_to_string(&a.key_file)
        .with_context(|| format!("cannot read key file {}", a.key_file.display()))?;
    let mut config = SchedulerConfig::new(a.chain, key_hex.trim(), a.state_dir);
    config.listen = Some(a.listen);
    config.metrics_listen = Some(a.metrics_listen);
    config.max_attempts = a.max_attempts;
    config.agent_refresh = Duration::from_millis(a.agent_refresh_ms.max(50));
    config.agent_loss_checks = a.agent_loss_checks;
    config.aging = Duration::from_secs(a.aging_secs);
    config.job_grace = Duration::from_secs(a.job_grace_secs);
    config.crash_after = a.crash_after;
    tracing::info!(agents = agents.len(), "starting the scheduler");
    aitbc_scheduler::run(config, Arc::new(StaticAgents(agents)), shutdown_signal()).await?;
    tracing::info!("scheduler stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_flag_parses() {
        let a = parse_agent("gpu-0=http://127.0.0.1:7070").unwrap();
        assert_eq!(a.agent_id, "gpu-0");
        assert_eq!(a.endpoint, "http://127.0.0.1:7070");
        assert!(parse_agent("nope").is_err());
        assert!(parse_agent("=http://x").is_err());
    }
}
