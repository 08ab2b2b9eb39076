//! The agent's core: inventory, leases, jobs, history and receipts, independent of gRPC.

use crate::auth::Authenticator;
use crate::capture::CapturedOutput;
use crate::config::{serves_strings, AgentConfig};
use crate::digest;
use crate::history::{History, Sample};
use crate::identity::register_agent_action;
use crate::inventory::{Inventory, InventorySnapshot};
use crate::isolation::IsolationMode;
use crate::jobs::{self, DispatchTimings, JobPaths, JobPhase, JobRecord};
use crate::leases::{Lease, LeaseError, LeaseRequest, ResourceBook};
use crate::metrics::Metrics;
use crate::pod::{PodJob, PodRunner};
use crate::runner::{self, JobEnvironment, OutputQuota, ProcessSpec, RunningProcess, Termination};
use crate::sandbox;
use crate::stress;
use crate::time::now_ms;
use aitbc_protocol::receipt::{JobReceipt, Usage};
use aitbc_protocol::tx::Serves;
use aitbc_protocol::tx::{Action, JobSpec, Runtime};
use aitbc_protocol::{Address, Hash, Keypair};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<LeaseError> for AgentError {
    fn from(e: LeaseError) -> Self {
        let m = e.to_string();
        match e {
            LeaseError::Alloc(_) | LeaseError::LeaseTooSmall { .. } | LeaseError::Busy(_) => {
                AgentError::ResourceExhausted(m)
            }
            LeaseError::ZeroGpus | LeaseError::ZeroDuration => AgentError::InvalidArgument(m),
            LeaseError::NotFound(_) => AgentError::NotFound(m),
            LeaseError::NotHolder(_) => AgentError::PermissionDenied(m),
            LeaseError::IdTaken(_) | LeaseError::JobExists(_) => AgentError::AlreadyExists(m),
            LeaseError::Persist(_) => AgentError::Internal(m),
        }
    }
}

fn internal(context: &str) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::Internal(format!("{context}: {e}"))
}

/// One phase/progress change of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    pub job_id: String,
    pub phase: JobPhase,
    pub progress: Option<u32>,
    pub message: String,
    pub at_ms: u64,
}

/// A request to run a job.
#[derive(Clone, Debug, Default)]
pub struct JobRequest {
    pub job_id: String,
    /// The customer's wallet address.
    pub customer: String,
    pub spec: JobSpec,
    /// The listing's runtime; an empty command runs the built-in demo runtime.
    pub runtime: Runtime,
    /// Bytes written to the file named by `AITBC_INPUT` (not set when empty).
    pub input: Vec<u8>,
    /// Run inside this lease of the customer.
    pub lease_id: Option<String>,
    /// The listing's provider (owner), when the caller says: refused unless this agent serves
    /// it. `None` leaves the check to the scheduler (which places only on agents whose
    /// registered `serves` names the provider).
    pub provider: Option<Address>,
    /// The job's assignment on chain (`Job::attempt`), signed into the receipt so the chain
    /// refuses it for any other attempt.
    pub attempt: u32,
}

/// The answer to a run request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStarted {
    pub job_id: String,
    pub gpu_indexes: Vec<u32>,
    pub gpu_uuids: Vec<String>,
    pub phase: JobPhase,
    pub message: String,
}

/// Status of the agent, for the API and logs.
#[derive(Clone, Debug)]
pub struct AgentStatusInfo {
    pub agent_id: String,
    pub agent_key: String,
    pub owner: Option<Address>,
    pub serves: Vec<String>,
    pub chain_id: String,
    pub gpu_count: u32,
    pub free_gpus: u32,
    pub simulated: bool,
    pub inventory_source: String,
    pub reason: String,
    pub running_jobs: u32,
    pub active_leases: u32,
    pub uptime_secs: u64,
    /// The signed `RegisterAgent` for the configured owner; `None` without an owner.
    pub register_action: Option<Action>,
}

/// Result of a GPU memory stress test.
#[derive(Clone, Debug, PartialEq)]
pub struct StressResult {
    pub gpu_index: u32,
    pub uuid: String,
    pub report: stress::StressReport,
    pub nvml_used_before_mib: u64,
}

struct JobHandle {
    record: Mutex<JobRecord>,
    events: watch::Sender<JobEvent>,
    cancel: watch::Sender<bool>,
    cancel_reason: Mutex<Option<String>>,
    peak_memory_mib: Mutex<Option<u64>>,
}

impl JobHandle {
    fn new(record: JobRecord) -> Arc<Self> {
        let ev = event_of(&record);
        Arc::new(JobHandle {
            record: Mutex::new(record),
            events: watch::channel(ev).0,
            cancel: watch::channel(false).0,
            cancel_reason: Mutex::new(None),
            peak_memory_mib: Mutex::new(None),
        })
    }
    fn publish(&self) {
        let ev = event_of(&self.record.lock());
        self.events.send_replace(ev);
    }
}

fn event_of(r: &JobRecord) -> JobEvent {
    JobEvent {
        job_id: r.job_id.clone(),
        phase: r.phase,
        progress: r.progress,
        message: r.message.clone(),
        at_ms: now_ms(),
    }
}

/// How a finished job is described in its record and receipt.
struct Ending {
    phase: JobPhase,
    message: String,
    exit_code: Option<i32>,
    wall_ms: u64,
}

pub struct Agent {
    config: AgentConfig,
    key: Keypair,
    inventory: Inventory,
    book: ResourceBook,
    history: History,
    auth: Authenticator,
    metrics: Metrics,
    jobs: Mutex<BTreeMap<String, Arc<JobHandle>>>,
    started_at: Instant,
    /// Pod mode: creates and follows job Pods.
    pods: Option<PodRunner>,
}

/// How long past its time limit a job Pod may take to be scheduled and pull its image.
const POD_START_GRACE: Duration = Duration::from_secs(120);

impl Agent {
    /// Opens the agent over its state directory: loads leases and job records; jobs that were
    /// running when the agent stopped are sealed as failed ("agent restarted").
    pub fn open(
        config: AgentConfig,
        key: Keypair,
        inventory: Inventory,
    ) -> Result<Arc<Agent>, AgentError> {
        Self::open_with_pods(config, key, inventory, None)
    }

    /// [`Agent::open`] with the Pod runner of `--isolation pod`.
    pub fn open_with_pods(
        config: AgentConfig,
        key: Keypair,
        inventory: Inventory,
        pods: Option<PodRunner>,
    ) -> Result<Arc<Agent>, AgentError> {
        std::fs::create_dir_all(config.state_dir.join("jobs"))
            .map_err(internal("creating the state directory"))?;
        restrict_permissions(&config.state_dir);
        let now = now_ms();
        let book = ResourceBook::open(
            inventory.device_caps(),
            Some(config.state_dir.join("leases.json")),
            now,
        )?;
        let history = History::new(
            inventory.device_caps().len(),
            config.sample_interval.as_millis() as u64,
            config.history_retention.as_millis() as u64,
        );
        let auth = Authenticator::new(
            config.scheduler_keys.iter().copied(),
            config.max_clock_skew.as_millis() as u64,
        );
        let agent = Agent {
            metrics: Metrics::new(),
            config,
            key,
            inventory,
            book,
            history,
            auth,
            jobs: Mutex::new(BTreeMap::new()),
            started_at: Instant::now(),
            pods,
        };
        let records =
            jobs::load_records(&agent.config.state_dir).map_err(internal("loading job records"))?;
        for mut rec in records {
            if rec.phase == JobPhase::Running {
                let wall_ms = now.saturating_sub(rec.started_at_ms);
                let ending = Ending {
                    phase: JobPhase::Failed,
                    message: "agent restarted while the job was running".into(),
                    exit_code: None,
                    wall_ms,
                };
                agent.seal(&mut rec, ending, None);
                tracing::warn!(job = %rec.job_id, "job was running when the agent stopped; reported failed");
            }
            let id = rec.job_id.clone();
            agent.jobs.lock().insert(id, JobHandle::new(rec));
        }
        Ok(Arc::new(agent))
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }
    pub fn public_key(&self) -> aitbc_protocol::PublicKey {
        self.key.public()
    }
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub fn history(&self) -> &History {
        &self.history
    }
    pub fn simulated(&self) -> bool {
        self.inventory.simulated()
    }

    /// A fresh reading of the GPUs.
    pub fn inventory(&self) -> InventorySnapshot {
        let now = now_ms();
        self.inventory.snapshot(&self.book.device_use(now), now)
    }

    pub fn status(&self) -> AgentStatusInfo {
        let now = now_ms();
        let running = self
            .jobs
            .lock()
            .values()
            .filter(|h| h.record.lock().phase == JobPhase::Running)
            .count();
        AgentStatusInfo {
            agent_id: self.config.agent_id.clone(),
            agent_key: self.key.public().to_hex(),
            owner: self.config.owner,
            serves: serves_strings(&self.config.serves),
            chain_id: self.config.chain_id.clone(),
            gpu_count: self.book.devices().len() as u32,
            free_gpus: self.book.free_gpus(now) as u32,
            simulated: self.inventory.simulated(),
            inventory_source: self.inventory.source().as_str().into(),
            reason: self.inventory.reason(),
            running_jobs: running as u32,
            active_leases: self.book.leases(None, now).len() as u32,
            uptime_secs: self.started_at.elapsed().as_secs(),
            register_action: self.register_action(),
        }
    }

    /// The `RegisterAgent` action for the configured owner wallet to send (in a transaction
    /// it signs), carrying this agent's proof for the owner, chain id, agent id and serves.
    /// `None` when no owner is configured: the proof names the owner.
    pub fn register_action(&self) -> Option<Action> {
        let owner = self.config.owner?;
        Some(register_agent_action(
            &self.key,
            &self.config.chain_id,
            &owner,
            &self.config.agent_id,
            &self.config.serves,
        ))
    }

    // ---- leases ----

    pub fn allocate_lease(&self, req: LeaseRequest) -> Result<Lease, AgentError> {
        req.holder
            .parse::<Address>()
            .map_err(|e| AgentError::InvalidArgument(format!("lease holder: {e}")))?;
        if let Some(id) = &req.lease_id {
            if !jobs::valid_job_id(id) {
                return Err(AgentError::InvalidArgument(format!(
                    "lease id {id:?} must be 1-128 of [A-Za-z0-9._-]"
                )));
            }
        }
        let lease = self.book.allocate_lease(req, now_ms())?;
        tracing::info!(lease = %lease.id, holder = %lease.holder, gpus = ?lease.gpu_indexes, "lease allocated");
        Ok(lease)
    }

    pub fn deallocate_lease(&self, id: &str) -> Result<bool, AgentError> {
        let released = self.book.release_lease(id, now_ms())?;
        if released {
            tracing::info!(lease = %id, "lease released");
        }
        Ok(released)
    }

    pub fn leases(&self, holder: Option<&str>) -> Vec<Lease> {
        self.book.leases(holder, now_ms())
    }

    // ---- jobs ----

    /// Starts a job and returns once its process has started (or could not be started, in
    /// which case the job is recorded as failed with a signed receipt).
    pub fn run_job(self: &Arc<Self>, req: JobRequest) -> Result<JobStarted, AgentError> {
        let t0 = Instant::now();
        if !jobs::valid_job_id(&req.job_id) {
            return Err(AgentError::InvalidArgument(format!(
                "job id {:?} must be 1-128 of [A-Za-z0-9._-]",
                req.job_id
            )));
        }
        req.customer
            .parse::<Address>()
            .map_err(|e| AgentError::InvalidArgument(format!("customer: {e}")))?;
        if req.input.len() > self.config.max_input_bytes {
            return Err(AgentError::InvalidArgument(format!(
                "input is {} bytes; this agent accepts at most {}",
                req.input.len(),
                self.config.max_input_bytes
            )));
        }
        if self.jobs.lock().contains_key(&req.job_id) {
            return Err(AgentError::AlreadyExists(format!(
                "job {} already exists on this agent",
                req.job_id
            )));
        }
        let argv = if req.runtime.command.is_empty() {
            if self.config.demo_runtime.is_empty() {
                return Err(AgentError::FailedPrecondition(
                    "the job has no command and no demo runtime is configured".into(),
                ));
            }
            self.config.demo_runtime.clone()
        } else {
            req.runtime.command.clone()
        };
        check_provider(&self.config.serves, req.provider.as_ref())?;
        check_image(self.config.isolation, &req.runtime.image)?;
        let pod_launch = match (self.config.isolation, &self.pods) {
            (IsolationMode::Pod, Some(p)) => {
                let demo = p.settings().demo_image.as_deref();
                Some((p.clone(), pod_image_and_command(&req.runtime, demo)?))
            }
            (IsolationMode::Pod, None) => {
                return Err(AgentError::FailedPrecondition(
                    "this agent is in pod mode but has no Kubernetes client".into(),
                ))
            }
            _ => None,
        };
        let time_limit = match req.spec.time_limit_secs {
            0 => self.config.default_time_limit,
            s => Duration::from_secs(s).min(self.config.max_time_limit),
        };
        let now = now_ms();
        let claim = self.book.claim_for_job(
            &req.job_id,
            &req.customer,
            req.spec.gpus,
            req.spec.memory_mib,
            req.lease_id.as_deref(),
            now,
        )?;
        let prepared = self.prepare_job(&req, &claim, argv, time_limit, now);
        let (handle, proc_spec) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.book.release_job(&req.job_id);
                return Err(e);
            }
        };
        if let Some((pods, (image, command))) = pod_launch {
            let job = PodJob {
                job_id: req.job_id.clone(),
                image,
                command,
                env: proc_spec.env,
                gpu_uuids: claim.gpu_uuids.clone(),
                time_limit_secs: time_limit.as_secs(),
                has_input: !req.input.is_empty(),
                scratch_bytes: self.config.output_quota_bytes,
                // Runtime declares no egress yet: job Pods get none.
                egress: Vec::new(),
            };
            let paths = JobPaths::new(&self.config.state_dir, &req.job_id);
            if sandbox::running_as_root() {
                give_to_job_user(&paths.output_dir(), pods.settings().job_uid);
            }
            self.metrics.job_started();
            tokio::spawn(self.clone().supervise_pod(handle, pods, job, time_limit));
            return Ok(JobStarted {
                job_id: req.job_id,
                gpu_indexes: claim.gpu_indexes,
                gpu_uuids: claim.gpu_uuids,
                phase: JobPhase::Running,
                message: String::new(),
            });
        }
        let progress_handle = Arc::downgrade(&handle);
        let on_progress: runner::ProgressFn = Arc::new(move |p| {
            if let Some(h) = progress_handle.upgrade() {
                h.record.lock().progress = Some(p);
                h.publish();
            }
        });
        match runner::spawn(&proc_spec, on_progress) {
            Ok(running) => {
                let request_to_spawn_us = t0.elapsed().as_micros() as u64;
                tracing::info!(job = %req.job_id, pid = running.pid(), gpus = ?claim.gpu_indexes, "job started");
                self.metrics.job_started();
                let agent = self.clone();
                let h = handle.clone();
                tokio::spawn(async move {
                    agent
                        .supervise(h, running, time_limit, request_to_spawn_us)
                        .await
                });
                Ok(JobStarted {
                    job_id: req.job_id,
                    gpu_indexes: claim.gpu_indexes,
                    gpu_uuids: claim.gpu_uuids,
                    phase: JobPhase::Running,
                    message: String::new(),
                })
            }
            Err(e) => {
                tracing::warn!(job = %req.job_id, error = %e, "job could not start");
                let ending = Ending {
                    phase: JobPhase::Failed,
                    message: e.to_string(),
                    exit_code: None,
                    wall_ms: 0,
                };
                let rec = {
                    let mut rec = handle.record.lock();
                    self.seal(&mut rec, ending, None);
                    rec.clone()
                };
                handle.publish();
                self.book.release_job(&req.job_id);
                self.metrics.job_finished(rec.phase);
                Ok(JobStarted {
                    job_id: rec.job_id,
                    gpu_indexes: rec.gpu_indexes,
                    gpu_uuids: rec.gpu_uuids,
                    phase: rec.phase,
                    message: rec.message,
                })
            }
        }
    }

    fn prepare_job(
        &self,
        req: &JobRequest,
        claim: &crate::leases::JobClaim,
        argv: Vec<String>,
        time_limit: Duration,
        now: u64,
    ) -> Result<(Arc<JobHandle>, ProcessSpec), AgentError> {
        let paths = JobPaths::new(&self.config.state_dir, &req.job_id);
        if paths.dir.exists() {
            std::fs::remove_dir_all(&paths.dir)
                .map_err(internal("clearing a stale job directory"))?;
        }
        std::fs::create_dir_all(paths.output_dir())
            .map_err(internal("creating the output directory"))?;
        std::fs::create_dir_all(paths.work_dir())
            .map_err(internal("creating the work directory"))?;
        let input_path = if req.input.is_empty() {
            None
        } else {
            std::fs::write(paths.input(), &req.input).map_err(internal("writing the job input"))?;
            Some(paths.input())
        };
        let visible: Vec<String> = if self.inventory.simulated() {
            claim.gpu_indexes.iter().map(u32::to_string).collect()
        } else {
            claim.gpu_uuids.clone()
        };
        let sandboxed = self.config.isolation == IsolationMode::Sandbox;
        let (seen_input, seen_output) = if self.config.isolation.isolates() {
            (
                input_path
                    .as_ref()
                    .map(|_| PathBuf::from(sandbox::JOB_INPUT)),
                PathBuf::from(sandbox::JOB_OUTPUT),
            )
        } else {
            (input_path.clone(), paths.output_dir())
        };
        let mut env = runner::job_environment(&JobEnvironment {
            job_id: &req.job_id,
            spec: &req.spec,
            input_path: seen_input.as_deref(),
            output_dir: &seen_output,
            visible_devices: &visible,
            gpu_indexes: &claim.gpu_indexes,
            runtime_env: &req.runtime.env,
            simulated: self.inventory.simulated(),
        });
        let record = JobRecord {
            job_id: req.job_id.clone(),
            customer: req.customer.clone(),
            spec: req.spec.clone(),
            runtime: req.runtime.clone(),
            lease_id: req.lease_id.clone(),
            attempt: req.attempt,
            gpu_indexes: claim.gpu_indexes.clone(),
            gpu_uuids: claim.gpu_uuids.clone(),
            phase: JobPhase::Running,
            progress: None,
            message: String::new(),
            exit_code: None,
            started_at_ms: now,
            finished_at_ms: None,
            stdout: Default::default(),
            stderr: Default::default(),
            outputs: Vec::new(),
            output_digest: None,
            receipt: None,
            timings: DispatchTimings::default(),
        };
        jobs::save_record(&self.config.state_dir, &record)
            .map_err(internal("writing the job record"))?;
        let handle = JobHandle::new(record);
        {
            let mut map = self.jobs.lock();
            if map.contains_key(&req.job_id) {
                return Err(AgentError::AlreadyExists(format!(
                    "job {} already exists on this agent",
                    req.job_id
                )));
            }
            map.insert(req.job_id.clone(), handle.clone());
        }
        if self.config.isolation.isolates() {
            env.push(("HOME".into(), sandbox::JOB_WORK.into()));
            env.push(("TMPDIR".into(), "/tmp".into()));
        }
        let argv = if sandboxed {
            let layout = self.sandbox_layout(&paths, input_path, &claim.gpu_indexes);
            let mut full = vec![self.config.sandbox.bwrap.display().to_string()];
            full.extend(sandbox::bwrap_argv(&layout, &argv));
            full
        } else {
            argv
        };
        let spec = ProcessSpec {
            argv,
            env,
            cwd: paths.work_dir(),
            time_limit,
            capture_bytes: self.config.capture_bytes,
            quota: Some(OutputQuota {
                dirs: vec![paths.work_dir(), paths.output_dir()],
                max_bytes: self.config.output_quota_bytes,
            }),
        };
        Ok((handle, spec))
    }

    /// The sandbox of one job: its directories, the demo binary, the GPUs it was given.
    fn sandbox_layout(
        &self,
        paths: &JobPaths,
        input: Option<PathBuf>,
        gpu_indexes: &[u32],
    ) -> sandbox::SandboxLayout {
        let s = &self.config.sandbox;
        let mut hidden = s.hidden.clone();
        hidden.push(self.config.state_dir.clone());
        let devices = if self.inventory.simulated() {
            Vec::new()
        } else {
            sandbox::gpu_devices(gpu_indexes, |p| p.exists())
        };
        sandbox::SandboxLayout {
            work_dir: paths.work_dir(),
            output_dir: paths.output_dir(),
            input,
            demo_exe: self.config.demo_runtime.first().map(PathBuf::from),
            extra_ro: s.extra_ro.clone(),
            hidden,
            tmp_bytes: self.config.output_quota_bytes,
            as_root: sandbox::running_as_root(),
            devices,
        }
    }

    async fn supervise(
        self: Arc<Self>,
        handle: Arc<JobHandle>,
        running: RunningProcess,
        limit: Duration,
        spawn_us: u64,
    ) {
        let outcome = running.wait(handle.cancel.subscribe()).await;
        let ending = self.ending(&handle, &outcome.termination, limit, outcome.wall);
        let streams = (outcome.stdout, outcome.stderr);
        self.finish(handle, ending, streams, outcome.exited_at, spawn_us)
            .await;
    }

    /// How a termination is described in the record and receipt.
    fn ending(
        &self,
        handle: &JobHandle,
        termination: &Termination,
        limit: Duration,
        wall: Duration,
    ) -> Ending {
        let (phase, message, exit_code) = match termination {
            Termination::Exited(0) => (JobPhase::Succeeded, String::new(), Some(0)),
            Termination::Exited(c) => (JobPhase::Failed, format!("exited with code {c}"), Some(*c)),
            Termination::Signalled(s) if *s == libc::SIGXFSZ => (
                JobPhase::Failed,
                format!(
                    "output quota of {} bytes exceeded (a file reached the limit)",
                    self.config.output_quota_bytes
                ),
                None,
            ),
            Termination::Signalled(s) => (JobPhase::Failed, format!("killed by signal {s}"), None),
            Termination::QuotaExceeded { used, limit } => (
                JobPhase::Failed,
                format!("output quota of {limit} bytes exceeded: the job wrote {used} bytes"),
                None,
            ),
            Termination::TimedOut => (
                JobPhase::TimedOut,
                format!("time limit of {}s exceeded", limit.as_secs_f64()),
                None,
            ),
            Termination::Cancelled => {
                let why = handle
                    .cancel_reason
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "cancelled".into());
                (JobPhase::Cancelled, why, None)
            }
        };
        Ending {
            phase,
            message,
            exit_code,
            wall_ms: wall.as_millis() as u64,
        }
    }

    /// Stores the streams, seals the record, frees the GPUs and publishes the final state.
    async fn finish(
        self: &Arc<Self>,
        handle: Arc<JobHandle>,
        ending: Ending,
        (stdout, stderr): (CapturedOutput, CapturedOutput),
        exited_at: Instant,
        spawn_us: u64,
    ) {
        let agent = self.clone();
        let h = handle.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            let peak = *h.peak_memory_mib.lock();
            let mut rec = h.record.lock();
            rec.stdout = stdout;
            rec.stderr = stderr;
            rec.timings.request_to_spawn_us = spawn_us;
            agent.seal(&mut rec, ending, peak);
            rec.timings.exit_to_receipt_us = exited_at.elapsed().as_micros() as u64;
            rec.phase
        })
        .await;
        self.book.release_job(&handle.record.lock().job_id);
        handle.publish();
        match sealed {
            Ok(phase) => {
                self.metrics.job_finished(phase);
                tracing::info!(job = %handle.record.lock().job_id, phase = phase.as_str(), "job finished");
            }
            Err(e) => tracing::error!(error = %e, "sealing a job panicked"),
        }
    }

    /// Pod mode: creates the job's Pod and policy, follows the Pod, seals the job from it.
    /// GPU-seconds count the container's real run time.
    async fn supervise_pod(
        self: Arc<Self>,
        handle: Arc<JobHandle>,
        pods: PodRunner,
        job: PodJob,
        limit: Duration,
    ) {
        let t0 = Instant::now();
        let outcome = match pods.start(&job).await {
            Ok(name) => {
                tracing::info!(job = %job.job_id, pod = %name, "job Pod created");
                let cancel = handle.cancel.subscribe();
                pods.follow(
                    &name,
                    limit + POD_START_GRACE,
                    self.config.capture_bytes,
                    cancel,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(job = %job.job_id, error = %e, "job Pod could not be created");
                let ending = Ending {
                    phase: JobPhase::Failed,
                    message: format!("creating the job Pod failed: {e}"),
                    exit_code: None,
                    wall_ms: 0,
                };
                let none = (CapturedOutput::default(), CapturedOutput::default());
                self.finish(handle, ending, none, Instant::now(), 0).await;
                return;
            }
        };
        let wall = outcome
            .run_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| t0.elapsed());
        let ending = self.ending(&handle, &outcome.termination, limit, wall);
        let streams = (outcome.log, CapturedOutput::default());
        self.finish(handle, ending, streams, Instant::now(), 0)
            .await;
    }

    /// Finalizes a record: hashes the outputs, signs the receipt and stores the record.
    fn seal(&self, rec: &mut JobRecord, mut ending: Ending, peak_memory_mib: Option<u64>) {
        let paths = JobPaths::new(&self.config.state_dir, &rec.job_id);
        let digest = match digest::digest_dir(&paths.output_dir()) {
            Ok((files, d)) => {
                rec.outputs = files;
                d
            }
            Err(e) => {
                ending.phase = JobPhase::Failed;
                ending.message = format!("hashing the outputs failed: {e}");
                rec.outputs = Vec::new();
                Hash::ZERO
            }
        };
        let finished = now_ms();
        let gpus = rec.gpu_indexes.len() as u64;
        let receipt = JobReceipt {
            chain_id: self.config.chain_id.clone(),
            job_id: rec.job_id.clone(),
            attempt: rec.attempt,
            agent_key: self.key.public(),
            success: ending.phase == JobPhase::Succeeded,
            exit_code: ending.exit_code,
            output_digest: digest,
            usage: Usage {
                wall_ms: ending.wall_ms,
                gpu_seconds: (ending.wall_ms.saturating_mul(gpus)).div_ceil(1000),
                peak_memory_mib,
            },
            message: ending.message.clone(),
            finished_at_ms: finished,
        };
        rec.phase = ending.phase;
        if rec.phase == JobPhase::Succeeded {
            rec.progress = Some(100);
        }
        rec.message = ending.message;
        rec.exit_code = ending.exit_code;
        rec.finished_at_ms = Some(finished);
        rec.output_digest = Some(digest);
        rec.receipt = Some(receipt.sign(&self.key));
        if let Err(e) = jobs::save_record(&self.config.state_dir, rec) {
            tracing::error!(job = %rec.job_id, error = %e, "could not store the finished job record");
        }
    }

    fn handle(&self, job_id: &str) -> Result<Arc<JobHandle>, AgentError> {
        self.jobs
            .lock()
            .get(job_id)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("job {job_id} not found")))
    }

    /// Asks a running job to stop (its process group is killed). Returns whether a running job
    /// was told to stop, and the phase at the time.
    pub fn cancel_job(&self, job_id: &str, reason: &str) -> Result<(bool, JobPhase), AgentError> {
        let h = self.handle(job_id)?;
        let phase = h.record.lock().phase;
        if phase.is_final() {
            return Ok((false, phase));
        }
        *h.cancel_reason.lock() = Some(reason.to_string());
        h.cancel.send_replace(true);
        tracing::info!(job = %job_id, reason, "job cancellation requested");
        Ok((true, phase))
    }

    pub fn job(&self, job_id: &str) -> Result<JobRecord, AgentError> {
        Ok(self.handle(job_id)?.record.lock().clone())
    }

    /// Latest state of every job.
    pub fn list_jobs(&self) -> Vec<JobEvent> {
        self.jobs
            .lock()
            .values()
            .map(|h| event_of(&h.record.lock()))
            .collect()
    }

    /// The job's current event, then every change.
    pub fn watch_job(&self, job_id: &str) -> Result<watch::Receiver<JobEvent>, AgentError> {
        Ok(self.handle(job_id)?.events.subscribe())
    }

    /// Waits until the job has ended and returns its record.
    pub async fn wait_job(&self, job_id: &str) -> Result<JobRecord, AgentError> {
        let h = self.handle(job_id)?;
        let mut rx = h.events.subscribe();
        rx.wait_for(|e| e.phase.is_final())
            .await
            .map_err(|_| AgentError::Internal("job event channel closed".into()))?;
        let rec = h.record.lock().clone();
        Ok(rec)
    }

    /// One output file of a finished job, refusing files larger than `max_bytes` (capped by the
    /// agent's own limit).
    pub fn read_output(
        &self,
        job_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, Hash), AgentError> {
        let rec = self.job(job_id)?;
        if !rec.phase.is_final() {
            return Err(AgentError::FailedPrecondition(format!(
                "job {job_id} is still running"
            )));
        }
        let cap = if max_bytes == 0 {
            self.config.max_fetch_bytes
        } else {
            max_bytes.min(self.config.max_fetch_bytes)
        };
        let listed = rec.outputs.iter().find(|f| f.path == path).ok_or_else(|| {
            AgentError::NotFound(format!("job {job_id} has no output file {path:?}"))
        })?;
        if listed.size > cap {
            return Err(AgentError::OutOfRange(format!(
                "{path} is {} bytes; the cap is {cap}",
                listed.size
            )));
        }
        let out_dir = JobPaths::new(&self.config.state_dir, job_id).output_dir();
        let full = digest::resolve_output(&out_dir, path).ok_or_else(|| {
            AgentError::NotFound(format!("job {job_id} has no output file {path:?}"))
        })?;
        let data = std::fs::read(&full).map_err(internal("reading the output file"))?;
        if data.len() as u64 > cap {
            return Err(AgentError::OutOfRange(format!(
                "{path} is {} bytes; the cap is {cap}",
                data.len()
            )));
        }
        let sha = Hash(
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&data)).into(),
        );
        if sha != listed.sha256 {
            return Err(AgentError::FailedPrecondition(format!(
                "{path} changed since the job's receipt was signed"
            )));
        }
        Ok((data, sha))
    }

    // ---- sampling ----

    /// One sampling step: expires leases, reads the GPUs, records history and metrics and the
    /// running jobs' peak GPU memory (NVML only).
    pub fn sample(&self) {
        let now = now_ms();
        match self.book.expire(now) {
            Ok(expired) => {
                for l in expired {
                    tracing::info!(lease = %l.id, holder = %l.holder, "lease expired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "persisting expired leases failed"),
        }
        let snap = self.inventory(); // fresh reading with current use
        let samples: Vec<Sample> = snap
            .gpus
            .iter()
            .map(|g| Sample {
                at_ms: now,
                utilization_percent: g.reading.utilization_percent,
                memory_used_mib: g.reading.memory_used_mib,
            })
            .collect();
        self.history.record(&samples);
        let running: Vec<Arc<JobHandle>> = self
            .jobs
            .lock()
            .values()
            .filter(|h| h.record.lock().phase == JobPhase::Running)
            .cloned()
            .collect();
        if !snap.simulated {
            for h in &running {
                let idx = h.record.lock().gpu_indexes.clone();
                if idx.is_empty() {
                    continue;
                }
                let used: u64 = snap
                    .gpus
                    .iter()
                    .filter(|g| idx.contains(&g.reading.index))
                    .map(|g| g.reading.memory_used_mib)
                    .sum();
                let mut peak = h.peak_memory_mib.lock();
                *peak = Some(peak.unwrap_or(0).max(used));
            }
        }
        self.metrics.observe(
            &snap,
            running.len(),
            self.book.leases(None, now).len(),
            self.book.free_gpus(now),
        );
        self.prune_finished_jobs(now);
    }

    /// Deletes finished jobs that ended more than `job_retention` ago (records and files).
    /// Returns how many were deleted.
    pub fn prune_finished_jobs(&self, now_ms: u64) -> usize {
        let cutoff = now_ms.saturating_sub(self.config.job_retention.as_millis() as u64);
        let old: Vec<String> = self
            .jobs
            .lock()
            .iter()
            .filter(|(_, h)| {
                let r = h.record.lock();
                r.phase.is_final() && r.finished_at_ms.is_some_and(|f| f < cutoff)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            self.jobs.lock().remove(id);
            let dir = JobPaths::new(&self.config.state_dir, id).dir;
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(job = %id, "deleted a finished job past its retention"),
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "could not delete an old job directory")
                }
            }
        }
        old.len()
    }

    /// Samples every `sample_interval` until `shutdown` turns true.
    pub fn spawn_sampler(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let agent = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(agent.config.sample_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let a = agent.clone();
                        if let Err(e) = tokio::task::spawn_blocking(move || a.sample()).await {
                            tracing::error!(error = %e, "sampling panicked");
                        }
                    }
                    _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                }
            }
        })
    }

    /// Cancels every running job ("agent shutting down") and waits (up to `grace`) for their
    /// receipts.
    pub async fn shutdown(&self, grace: Duration) {
        let running: Vec<String> = self
            .jobs
            .lock()
            .iter()
            .filter(|(_, h)| h.record.lock().phase == JobPhase::Running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &running {
            let _ = self.cancel_job(id, "agent shutting down");
        }
        let waits = running.iter().map(|id| self.wait_job(id));
        let all = async {
            for w in waits {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("some jobs did not finish within the shutdown grace period");
        }
    }

    // ---- memory stress ----

    /// Allocates and fills `memory_mib` on a real GPU. Refused on simulated devices.
    pub async fn stress_memory(
        self: &Arc<Self>,
        gpu_index: u32,
        memory_mib: u64,
        passes: u32,
    ) -> Result<StressResult, AgentError> {
        if self.inventory.simulated() {
            return Err(AgentError::FailedPrecondition(format!(
                "cannot stress GPU memory: this agent's devices are simulated ({})",
                self.inventory.reason()
            )));
        }
        let dev = self
            .book
            .devices()
            .iter()
            .find(|d| d.index == gpu_index)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("no GPU with index {gpu_index}")))?;
        if memory_mib == 0 || memory_mib > dev.memory_mib {
            return Err(AgentError::InvalidArgument(format!(
                "memory_mib must be 1..={} for GPU {gpu_index}",
                dev.memory_mib
            )));
        }
        let claim_id = format!("stress-{}", hex::encode(rand::random::<[u8; 6]>()));
        self.book.claim_device(&claim_id, gpu_index, now_ms())?;
        let before = self.gpu_used_mib(gpu_index).unwrap_or(0);
        let agent = self.clone();
        let uuid = dev.uuid.clone();
        let passes = if passes == 0 { 3 } else { passes.min(100) };
        let result = tokio::task::spawn_blocking(move || {
            stress::run(&uuid, memory_mib * 1024 * 1024, passes, || {
                agent.gpu_used_mib(gpu_index)
            })
        })
        .await;
        self.book.release_job(&claim_id);
        let report = match result {
            Ok(Ok(r)) => r,
            Ok(Err(stress::StressError::Unavailable(m))) => {
                return Err(AgentError::Unavailable(format!(
                    "CUDA driver unavailable: {m}"
                )))
            }
            Ok(Err(e)) => return Err(AgentError::Internal(e.to_string())),
            Err(e) => return Err(AgentError::Internal(format!("stress test panicked: {e}"))),
        };
        tracing::info!(
            gpu = gpu_index,
            mib = memory_mib,
            gib_per_s = report.bandwidth_gib_per_s,
            "memory stress test done"
        );
        Ok(StressResult {
            gpu_index,
            uuid: dev.uuid,
            report,
            nvml_used_before_mib: before,
        })
    }

    fn gpu_used_mib(&self, index: u32) -> Option<u64> {
        self.inventory()
            .gpus
            .iter()
            .find(|g| g.reading.index == index)
            .map(|g| g.reading.memory_used_mib)
    }
}

/// Image and command of a job Pod: the listing's image (and command, else its entrypoint), or
/// for a listing with neither the agent's own image running the demo runtime.
pub fn pod_image_and_command(
    runtime: &Runtime,
    demo_image: Option<&str>,
) -> Result<(String, Vec<String>), AgentError> {
    match (
        runtime.image.as_str(),
        runtime.command.is_empty(),
        demo_image,
    ) {
        ("", true, Some(img)) => Ok((
            img.to_string(),
            vec!["aitbc-gpu-agent".into(), "demo-runtime".into()],
        )),
        ("", true, None) => Err(AgentError::FailedPrecondition(
            "the listing has no image, and this pod-mode agent has no demo image \
             (--job-demo-image) to run the built-in demo runtime"
                .into(),
        )),
        ("", false, _) => Err(AgentError::FailedPrecondition(
            "the listing has a command but no image: in pod mode a job runs in the listing's \
             image; the provider must set one"
                .into(),
        )),
        (img, _, _) => Ok((img.to_string(), runtime.command.clone())),
    }
}

/// Pod mode under a root agent: the job's container (`uid`) writes the output directory.
fn give_to_job_user(dir: &std::path::Path, uid: i64) {
    let id = u32::try_from(uid).unwrap_or(crate::sandbox::JOB_UID);
    if let Err(e) = std::os::unix::fs::chown(dir, Some(id), Some(id)) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not hand the output directory to the job's user");
    }
}

/// Refuses a job of a provider this agent does not serve.
pub fn check_provider(serves: &Serves, provider: Option<&Address>) -> Result<(), AgentError> {
    match provider {
        Some(p) if !serves.serves(p) => Err(AgentError::PermissionDenied(format!(
            "this agent does not serve provider {p}'s listings; its owner serves other \
             providers with --serve {p} (sandbox or pod isolation only)"
        ))),
        _ => Ok(()),
    }
}

/// A listing's image runs only as a Pod; elsewhere it is refused, never ignored.
pub fn check_image(mode: IsolationMode, image: &str) -> Result<(), AgentError> {
    if image.is_empty() || mode == IsolationMode::Pod {
        return Ok(());
    }
    Err(AgentError::FailedPrecondition(format!(
        "the listing's runtime image {image:?} cannot be honoured: this agent runs jobs in {} \
         mode, without a container runtime (images run on agents with --isolation pod on \
         Kubernetes); the listing must clear its image to run its command here",
        match mode {
            IsolationMode::Sandbox => "sandbox",
            _ => "process",
        }
    )))
}

fn restrict_permissions(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not restrict the state directory to 0700");
    }
}
