//! AITBC scheduler: follows the chain's committed events, places pending jobs on GPU agents
//! ([`placement::place`], a pure function), records each assignment on chain (`AssignJob`)
//! before starting the job on the agent, carries the agent's signed receipt to the chain
//! (`ReportResult`), then settles or refunds. Retries on another agent when an attempt fails or
//! an agent is lost. Serves a gRPC control API (`aitbc.scheduler.v1.Scheduler`) and Prometheus
//! metrics.
//!
//! Library entry point (used by the binary and by the operator):
//!
//! ```no_run
//! # async fn example() -> Result<(), aitbc_scheduler::SchedulerError> {
//! use aitbc_scheduler::{run, AgentEndpoint, SchedulerConfig, StaticAgents};
//! use std::sync::Arc;
//! let mut config = SchedulerConfig::new("http://127.0.0.1:9090", "<hex secret>", "/var/lib/aitbc-scheduler");
//! config.listen = Some("127.0.0.1:7080".parse().unwrap());
//! let agents = StaticAgents(vec![AgentEndpoint { agent_id: "gpu-0".into(), endpoint: "http://127.0.0.1:7070".into() }]);
//! run(config, Arc::new(agents), async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod api;
pub mod config;
pub mod dispatch;
pub mod follow;
pub mod metrics;
pub mod placement;
pub mod registry;
pub mod sender;
pub mod state;

pub use config::SchedulerConfig;
pub use registry::{AgentEndpoint, AgentSource, SourceError, StaticAgents};

use aitbc_protocol::client::{ChainClient, ClientError};
use aitbc_protocol::{Amount, Keypair};
use metrics::Metrics;
use parking_lot::Mutex;
use registry::Registry;
use sender::TxSender;
use state::{State, StateError, StateStore};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Chain(#[from] ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(String),
}

/// Everything the scheduler's tasks share.
pub struct Scheduler {
    pub config: SchedulerConfig,
    pub chain: ChainClient,
    pub chain_id: String,
    pub key: Keypair,
    pub sender: TxSender,
    pub store: StateStore,
    pub state: Mutex<State>,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// Latest committed chain height seen.
    pub height: AtomicU64,
    /// Time (unix ms) of the latest committed block followed: deadlines go by block time.
    pub block_time_ms: AtomicU64,
    /// Job ids whose record changed (for WatchJob).
    pub changes: broadcast::Sender<String>,
    /// Wakes the placement loop.
    pub wake: Notify,
    dirty: AtomicBool,
    /// Set once the first agent refresh and the startup reconciliation are done.
    pub ready: watch::Sender<bool>,
}

impl Scheduler {
    /// Connects to the chain, loads the state directory and builds the shared scheduler. Call
    /// [`Scheduler::run`] to start it, and [`api::serve`] for the control API.
    pub async fn new(
        config: SchedulerConfig,
        source: Arc<dyn AgentSource>,
    ) -> Result<Arc<Scheduler>, SchedulerError> {
        let key = Keypair::from_secret_hex(config.key_hex.trim())
            .map_err(|e| SchedulerError::Config(format!("scheduler key: {e}")))?;
        if config.max_attempts == 0 {
            return Err(SchedulerError::Config(
                "max attempts must be at least 1".into(),
            ));
        }
        let chain = ChainClient::connect(&config.chain_endpoint).await?;
        let status = chain.status().await?;
        let me = key.address().to_string();
        if !status.schedulers.is_empty() && !status.schedulers.contains(&me) {
            return Err(SchedulerError::Config(format!(
                "the scheduler key's address {me} is not a scheduler of chain {} (genesis schedulers: {})",
                status.chain_id,
                status.schedulers.join(", ")
            )));
        }
        let fee = status
            .min_fee
            .parse::<Amount>()
            .map_err(|e| SchedulerError::Config(format!("node min fee: {e}")))?;
        let store = StateStore::open(&config.state_dir)?;
        let fresh = !store.path().exists();
        let mut state = store.load()?;
        if fresh {
            // First start: no need to replay the chain's history; the startup reconciliation
            // adopts every open job, and the stream starts after the current height.
            state.next_height = status.height + 1;
        }
        tracing::info!(address = %me, next_height = state.next_height, jobs = state.jobs.len(), "scheduler state loaded");
        let (changes, _) = broadcast::channel(1024);
        let registry = Registry::new(source, key.clone(), config.agent_loss_checks);
        Ok(Arc::new(Scheduler {
            sender: TxSender::new(chain.clone(), key.clone(), status.chain_id.clone(), fee),
            chain_id: status.chain_id,
            height: AtomicU64::new(status.height),
            block_time_ms: AtomicU64::new(0),
            chain,
            key,
            store,
            state: Mutex::new(state),
            registry,
            metrics: Arc::new(Metrics::new()),
            changes,
            wake: Notify::new(),
            dirty: AtomicBool::new(false),
            ready: watch::channel(false).0,
            config,
        }))
    }

    /// Marks the state changed (persisted by the flusher) and tells watchers about `job_id`.
    pub fn touched(&self, job_id: &str) {
        self.dirty.store(true, Ordering::Release);
        let _ = self.changes.send(job_id.to_string());
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Writes the state file now if anything changed.
    pub fn flush(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let snapshot = self.state.lock().clone();
        if let Err(e) = self.store.save(&snapshot) {
            self.dirty.store(true, Ordering::Release);
            tracing::error!(error = %e, "persisting the scheduler state failed");
        }
    }

    /// Runs the scheduler's loops until `shutdown` resolves; the state is flushed on the way out.
    pub async fn run(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(follow::run(self.clone()));
        tasks.spawn(dispatch::registry_loop(self.clone()));
        tasks.spawn(dispatch::placement_loop(self.clone()));
        tasks.spawn(dispatch::sweep_loop(self.clone()));
        let me = self.clone();
        tasks.spawn(async move {
            let mut pause = std::time::Duration::from_millis(200);
            loop {
                tokio::time::sleep(pause).await;
                let t = std::time::Instant::now();
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.flush()).await;
                // A large state file is written less often (at most ~20% of the time).
                pause = std::time::Duration::from_millis(200).max(t.elapsed() * 5);
            }
        });
        shutdown.await;
        tracing::info!("scheduler shutting down");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.mark_dirty();
        self.flush();
        Ok(())
    }
}

/// Runs a scheduler with `config` and agents from `source` until `shutdown` resolves: follows
/// the chain, places and dispatches jobs, and serves the control API on `config.listen` and
/// metrics on `config.metrics_listen` when they are set.
pub async fn run(
    config: SchedulerConfig,
    source: Arc<dyn AgentSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let sched = Scheduler::new(config, source).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = sched.config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SchedulerError::Listen { addr, source })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "control API listening");
        servers.spawn(api::serve(sched.clone(), listener, stopped()));
    }
    if let Some(addr) = sched.config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SchedulerError::Listen { addr, source })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics listening");
        let router = metrics::router(sched.metrics.clone());
        let stop = stopped();
        servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| SchedulerError::Serve(e.to_string()))
        });
    }
    let result = sched.run(shutdown).await;
    let _ = stop_tx.send(true);
    while let Some(r) = servers.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "server ended with an error");
        }
    }
    result
}
