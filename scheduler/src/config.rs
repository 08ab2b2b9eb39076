//! Scheduler configuration (the binary's flags map onto this; the operator builds it directly).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Chain node gRPC endpoint, e.g. `http://127.0.0.1:9090`.
    pub chain_endpoint: String,
    /// Hex secret of the scheduler key (its address must be in genesis `schedulers`, and the
    /// account needs a balance for transaction fees).
    pub key_hex: String,
    /// State directory: `state.json` (last processed height, job records) and `inputs/`.
    pub state_dir: PathBuf,
    /// Control API (gRPC) address; `None` = do not serve it from [`crate::run`].
    pub listen: Option<SocketAddr>,
    /// Prometheus `/metrics` and `/healthz`; `None` = not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Dispatch attempts (AssignJob transactions) per job before it is refunded.
    pub max_attempts: u32,
    /// How often agents are health-checked and their inventory refreshed.
    pub agent_refresh: Duration,
    /// Consecutive failed health checks after which an agent counts as lost.
    pub agent_loss_checks: u32,
    /// How often placement runs when nothing else wakes it.
    pub placement_interval: Duration,
    /// A job waiting longer than this is placed first and reserves capacity.
    pub aging: Duration,
    /// Extra time over a job's time limit before the scheduler gives up on its agent.
    pub job_grace: Duration,
    /// How long to wait for a transaction to commit.
    pub tx_timeout: Duration,
    /// Terminal job records older than this are dropped from the state file.
    pub retain_terminal: Duration,
    /// Fault injection for crash-recovery tests: abort the process right after this step is
    /// committed on chain ([`CrashPoint`]). `None` in normal operation.
    pub crash_after: Option<CrashPoint>,
}

/// Steps after which [`SchedulerConfig::crash_after`] aborts the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// AssignJob committed, RunJob not sent.
    Assign,
    /// ReportResult committed, SettleJob/RefundJob not sent.
    Report,
}

impl std::str::FromStr for CrashPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "assign" => Ok(CrashPoint::Assign),
            "report" => Ok(CrashPoint::Report),
            _ => Err(format!("unknown crash point {s:?}; use assign or report")),
        }
    }
}

impl SchedulerConfig {
    pub fn new(
        chain_endpoint: impl Into<String>,
        key_hex: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        SchedulerConfig {
            chain_endpoint: chain_endpoint.into(),
            key_hex: key_hex.into(),
            state_dir: state_dir.into(),
            listen: None,
            metrics_listen: None,
            max_attempts: 3,
            agent_refresh: Duration::from_millis(500),
            agent_loss_checks: 3,
            placement_interval: Duration::from_millis(250),
            aging: Duration::from_secs(30),
            job_grace: Duration::from_secs(30),
            tx_timeout: Duration::from_secs(30),
            retain_terminal: Duration::from_secs(24 * 3600),
            crash_after: None,
        }
    }
}
