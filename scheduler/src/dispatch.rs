//! Dispatch: the loops that refresh agents, place pending jobs and drive each placed job
//! through AssignJob -> RunJob on the agent -> receipt -> ReportResult -> SettleJob/RefundJob.
//!
//! Rules (README.md, "Retries and refunds"):
//! - the assignment is committed on chain before the job starts on the agent;
//! - before acting the on-chain job is read; a transaction the chain rejects because the work
//!   was already done (duplicate assign/report/settle/refund) counts as done;
//! - a failed attempt (agent refused, failed receipt, time limit + grace exceeded, agent lost)
//!   is retried on an agent not tried before, while fewer than `max_attempts` AssignJobs were
//!   committed for the job;
//! - when attempts are exhausted: a failed receipt is reported and the job refunded at once;
//!   without a receipt (agent lost) the job is refunded when its deadline passes (the chain
//!   accepts `RefundJob` only for failed or expired jobs, and only the assigned agent can sign
//!   a failure). The escrow is paid at most once because settlement and refund are chain state
//!   transitions of the same job.

use crate::placement::{self, AgentCapacity, JobRequest, LeaseCapacity, Policy};
use crate::registry::AgentView;
use crate::state::{now_ms, JobRecord, LeaseRecord, Phase};
use crate::Scheduler;
use aitbc_protocol::client::ClientError;
use aitbc_protocol::model::{Job, JobStatus, RESULT_GRACE_MS};
use aitbc_protocol::receipt::SignedJobReceipt;
use aitbc_protocol::tx::{Action, Runtime, ServiceType};
use aitbc_protocol::Address;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;

/// A record for an on-chain job the scheduler has not seen before.
pub fn new_record(job: &Job) -> JobRecord {
    let now = now_ms();
    JobRecord {
        job_id: job.id.clone(),
        customer: job.customer.to_string(),
        listing_id: job.listing_id.clone(),
        provider: if job.listing_id.is_some() {
            job.provider.map(|p| p.to_string())
        } else {
            None
        },
        spec: job.spec.clone(),
        phase: phase_of(job.status),
        chain_status: job.status.as_str().into(),
        agent_id: None,
        agent_key: job.assigned_agent.map(|k| k.to_string()),
        lease_id: None,
        gpu_indexes: vec![],
        progress: 0,
        attempts: job.assignments,
        failed_agents: vec![],
        pending_reason: String::new(),
        message: String::new(),
        result_digest: job
            .result
            .as_ref()
            .map(|r| r.receipt.output_digest.to_hex())
            .unwrap_or_default(),
        settlement_tx: None,
        refund_tx: None,
        receipt_hex: job
            .result
            .as_ref()
            .map(|r| hex::encode(borsh::to_vec(r).unwrap_or_default())),
        stop_requested: job.stop_requested,
        submitted_height: job.created_height,
        deadline_height: job.deadline_height,
        deadline_ms: job.deadline_ms,
        first_seen_ms: now,
        updated_at_ms: now,
    }
}

fn phase_of(s: JobStatus) -> Phase {
    match s {
        JobStatus::Pending => Phase::Pending,
        JobStatus::Assigned => Phase::Assigned,
        JobStatus::Succeeded => Phase::Succeeded,
        JobStatus::Failed => Phase::Failed,
        JobStatus::Settled => Phase::Settled,
        JobStatus::Refunded => Phase::Refunded,
    }
}

/// Applies `f` to the job's record (if any) and notifies watchers.
pub fn update(s: &Scheduler, job_id: &str, f: impl FnOnce(&mut JobRecord)) {
    {
        let mut st = s.state.lock();
        let Some(r) = st.jobs.get_mut(job_id) else {
            return;
        };
        f(r);
        r.updated_at_ms = now_ms();
    }
    s.touched(job_id);
}

/// Brings the record in line with the chain's view of the job.
pub fn sync_record(s: &Scheduler, job: &Job) {
    {
        let mut st = s.state.lock();
        let r = st
            .jobs
            .entry(job.id.clone())
            .or_insert_with(|| new_record(job));
        r.chain_status = job.status.as_str().into();
        r.attempts = r.attempts.max(job.assignments);
        r.stop_requested |= job.stop_requested;
        r.deadline_height = job.deadline_height;
        r.deadline_ms = job.deadline_ms;
        if let Some(res) = &job.result {
            r.result_digest = res.receipt.output_digest.to_hex();
            r.receipt_hex = Some(hex::encode(borsh::to_vec(res).unwrap_or_default()));
        }
        match job.status {
            JobStatus::Settled | JobStatus::Refunded | JobStatus::Succeeded => {
                r.phase = phase_of(job.status)
            }
            JobStatus::Failed => r.phase = Phase::Failed,
            JobStatus::Pending | JobStatus::Assigned => {}
        }
        r.updated_at_ms = now_ms();
    }
    s.touched(&job.id);
}

// ------------------------------------------------------------------------------------ loops

/// Refreshes agents; after the first refresh reconciles with the chain and opens placement.
pub async fn registry_loop(s: Arc<Scheduler>) {
    let mut first = true;
    loop {
        s.registry.refresh(&s.chain).await;
        let snap = s.registry.snapshot();
        s.metrics.agents_total.set(snap.len() as i64);
        s.metrics
            .agents_healthy
            .set(snap.iter().filter(|a| a.healthy).count() as i64);
        if first {
            match reconcile(&s).await {
                Ok(()) => {
                    first = false;
                    let _ = s.ready.send(true);
                    s.wake.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "reconciling with the chain failed; retrying"),
            }
        }
        make_leases(&s).await;
        tokio::time::sleep(s.config.agent_refresh).await;
    }
}

/// At startup: every job that is not terminal on chain or in the state file is brought up to
/// date, and jobs assigned, succeeded or failed on chain get a driver that resumes them.
async fn reconcile(s: &Arc<Scheduler>) -> Result<(), ClientError> {
    let mut ids: Vec<String> = s
        .state
        .lock()
        .jobs
        .values()
        .filter(|r| !r.phase.terminal())
        .map(|r| r.job_id.clone())
        .collect();
    for status in ["pending", "assigned", "succeeded", "failed"] {
        for j in s.chain.jobs(None, status).await? {
            ids.push(j.id);
        }
    }
    ids.sort();
    ids.dedup();
    tracing::info!(jobs = ids.len(), "reconciling jobs with the chain");
    for id in ids {
        let job = match s.chain.job(&id).await {
            Ok(j) => j,
            Err(ClientError::NotFound(_)) => {
                s.state.lock().jobs.remove(&id);
                continue;
            }
            Err(e) => return Err(e),
        };
        sync_record(s, &job);
        match job.status {
            JobStatus::Pending => update(s, &id, |r| {
                if !r.phase.terminal() {
                    r.phase = Phase::Pending;
                }
            }),
            JobStatus::Assigned | JobStatus::Succeeded | JobStatus::Failed => {
                spawn_driver(s, &id, None)
            }
            JobStatus::Settled | JobStatus::Refunded => {}
        }
    }
    s.mark_dirty();
    Ok(())
}

/// Runs placement whenever woken (new job, finished job, agent change) or every interval.
pub async fn placement_loop(s: Arc<Scheduler>) {
    let mut ready = s.ready.subscribe();
    let _ = ready.wait_for(|r| *r).await;
    loop {
        let t = std::time::Instant::now();
        place_round(&s);
        // With a huge backlog a round costs real CPU: leave at least 4x its time between rounds.
        let pause = s.config.placement_interval.max(t.elapsed() * 4);
        tokio::select! {
            _ = s.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Refunds expired jobs, resumes jobs whose result is on chain, prunes old records and
/// updates the job gauges.
pub async fn sweep_loop(s: Arc<Scheduler>) {
    let mut ready = s.ready.subscribe();
    let _ = ready.wait_for(|r| *r).await;
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if tick >= 15 {
            tick = 0;
            adopt_unknown_jobs(&s).await;
        }
        if let Ok(st) = s.chain.status().await {
            s.height
                .fetch_max(st.height, std::sync::atomic::Ordering::AcqRel);
        }
        let height = s.height.load(std::sync::atomic::Ordering::Acquire);
        let block_time = s.block_time_ms.load(std::sync::atomic::Ordering::Acquire);
        let (expired_jobs, resume, counts) = {
            let mut st = s.state.lock();
            let cutoff = now_ms().saturating_sub(s.config.retain_terminal.as_millis() as u64);
            st.jobs
                .retain(|_, r| !(r.phase.terminal() && r.updated_at_ms < cutoff));
            let mut expired_jobs = vec![];
            let mut resume = vec![];
            let mut counts: HashMap<Phase, u64> = HashMap::new();
            for r in st.jobs.values() {
                *counts.entry(r.phase).or_default() += 1;
                if r.phase.terminal() {
                    continue;
                }
                if expired(r.deadline_ms, r.deadline_height, block_time, height)
                    && matches!(r.chain_status.as_str(), "pending" | "assigned")
                {
                    expired_jobs.push(r.job_id.clone());
                } else if !st.active.contains(&r.job_id)
                    && (matches!(r.chain_status.as_str(), "succeeded" | "failed")
                        || (r.chain_status == "assigned"
                            && matches!(
                                r.phase,
                                Phase::Assigned | Phase::Running | Phase::Reporting
                            )))
                {
                    // A result on chain to settle/refund, or a job on an agent whose driver
                    // stopped on an error: resume it.
                    resume.push(r.job_id.clone());
                }
            }
            (expired_jobs, resume, counts)
        };
        let counts: Vec<(Phase, u64)> = Phase::ALL
            .iter()
            .map(|p| (*p, counts.get(p).copied().unwrap_or(0)))
            .collect();
        s.metrics.set_phases(&counts);
        for id in resume {
            spawn_driver(&s, &id, None);
        }
        for id in expired_jobs {
            if let Err(e) = refund_expired(&s, &id, height, block_time).await {
                tracing::warn!(job = %id, error = %e, "refunding an expired job failed");
            }
        }
    }
}

/// Safety net for a `JobSubmitted` the follower could not read: adopts open jobs the chain
/// lists but the state does not hold.
async fn adopt_unknown_jobs(s: &Arc<Scheduler>) {
    for status in ["pending", "assigned"] {
        let Ok(jobs) = s.chain.jobs(None, status).await else {
            return;
        };
        for job in jobs {
            if !s.state.lock().jobs.contains_key(&job.id) {
                tracing::info!(job = %job.id, status, "adopting a job missed from the block stream");
                sync_record(s, &job);
            }
        }
    }
}

/// Whether a job with no result is past its deadline and the result grace, so that the chain
/// refunds it. By the time of the latest block followed (the chain decides by block time); by
/// height (an estimate) only before any block was followed or for a record without its deadline
/// time.
fn expired(deadline_ms: u64, deadline_height: u64, block_time_ms: u64, height: u64) -> bool {
    if deadline_ms > 0 && block_time_ms > 0 {
        block_time_ms > deadline_ms.saturating_add(RESULT_GRACE_MS)
    } else {
        height > deadline_height
    }
}

async fn refund_expired(
    s: &Arc<Scheduler>,
    id: &str,
    height: u64,
    block_time_ms: u64,
) -> Result<(), String> {
    let job = s.chain.job(id).await.map_err(|e| e.to_string())?;
    sync_record(s, &job);
    if !matches!(job.status, JobStatus::Pending | JobStatus::Assigned)
        || !expired(job.deadline_ms, job.deadline_height, block_time_ms, height)
    {
        return Ok(());
    }
    tracing::info!(job = %id, deadline = job.deadline_height, "job expired; refunding");
    cancel_on_agent(s, id).await;
    refund(s, id).await
}

// ------------------------------------------------------------------------------- placement

/// One placement round over the current pending jobs and agent capacity.
pub fn place_round(s: &Arc<Scheduler>) {
    let agents: Vec<AgentView> = s
        .registry
        .snapshot()
        .into_iter()
        .filter(|a| a.placeable())
        .collect();
    let index: HashMap<&str, usize> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| (a.agent_id.as_str(), i))
        .collect();
    let mut st = s.state.lock();
    // Capacity held by the scheduler's own jobs on each agent.
    let mut held: Vec<HashSet<u32>> = vec![HashSet::new(); agents.len()];
    let mut unstarted: Vec<Vec<(u32, u64, Option<String>)>> = vec![Vec::new(); agents.len()];
    for r in st.jobs.values() {
        if !r.phase.on_agent() {
            continue;
        }
        let Some(&a) = r.agent_id.as_deref().and_then(|id| index.get(id)) else {
            continue;
        };
        if r.gpu_indexes.is_empty() {
            unstarted[a].push((r.spec.gpus, r.spec.memory_mib, r.lease_id.clone()));
        } else {
            held[a].extend(r.gpu_indexes.iter().copied());
        }
    }
    let mut caps: Vec<AgentCapacity> = Vec::with_capacity(agents.len());
    for (a, view) in agents.iter().enumerate() {
        let (Some(record), Some(inv)) = (&view.record, &view.inventory) else {
            continue;
        };
        let busy = |g: &aitbc_protocol::agent_pb::Gpu| g.busy || held[a].contains(&g.index);
        let mut leases: Vec<LeaseCapacity> = view
            .leases
            .iter()
            .filter_map(|l| {
                let holder = l.holder.parse::<Address>().ok()?;
                let mut free: Vec<u64> = inv
                    .gpus
                    .iter()
                    .filter(|g| l.gpu_indexes.contains(&g.index) && !busy(g))
                    .map(|g| g.memory_total_mib)
                    .collect();
                free.sort_unstable();
                Some(LeaseCapacity {
                    lease_id: l.id.clone(),
                    holder,
                    free_devices: free,
                })
            })
            .collect();
        let leased: HashSet<u32> = view
            .leases
            .iter()
            .flat_map(|l| l.gpu_indexes.iter().copied())
            .collect();
        let mut free: Vec<u64> = inv
            .gpus
            .iter()
            .filter(|g| !g.leased && !leased.contains(&g.index) && !busy(g))
            .map(|g| g.memory_total_mib)
            .collect();
        free.sort_unstable();
        // Jobs assigned but not started yet: take their modelled devices.
        for (gpus, memory, lease) in &unstarted[a] {
            let pool = match lease {
                Some(id) => match leases.iter_mut().find(|l| &l.lease_id == id) {
                    Some(l) => &mut l.free_devices,
                    None => &mut free,
                },
                None => &mut free,
            };
            if let Some(s0) = placement::choose_window(pool, *gpus as usize, *memory) {
                pool.drain(s0..s0 + *gpus as usize);
            }
        }
        caps.push(AgentCapacity {
            owner: record.owner,
            serves: record.serves.clone(),
            devices: inv.gpus.iter().map(|g| g.memory_total_mib).collect(),
            free_devices: free,
            leases,
        });
    }
    let now = now_ms();
    let mut ids: Vec<String> = Vec::new();
    let mut reqs: Vec<JobRequest> = Vec::new();
    let inputs_dir = s.store.inputs_dir();
    let mut waiting_input: Vec<String> = Vec::new();
    for r in st.jobs.values() {
        if r.phase != Phase::Pending || st.active.contains(&r.job_id) {
            continue;
        }
        if (r.spec.input_digest.is_some() || r.spec.dataset_digest.is_some())
            && !inputs_dir.join(&r.job_id).exists()
        {
            waiting_input.push(r.job_id.clone());
            continue;
        }
        let (Ok(customer), provider) = (
            r.customer.parse::<Address>(),
            r.provider.as_deref().map(str::parse::<Address>),
        ) else {
            continue;
        };
        let provider = match provider {
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => continue,
            None => None,
        };
        ids.push(r.job_id.clone());
        reqs.push(JobRequest {
            job_id: r.job_id.clone(),
            customer,
            provider,
            gpus: r.spec.gpus,
            memory_mib: r.spec.memory_mib,
            time_limit_secs: r.spec.time_limit_secs,
            waiting_ms: now.saturating_sub(r.first_seen_ms),
            avoid: r
                .failed_agents
                .iter()
                .filter_map(|id| index.get(id.as_str()).copied())
                .collect(),
        });
    }
    s.metrics
        .queue_length
        .set((reqs.len() + waiting_input.len()) as i64);
    for id in waiting_input {
        if let Some(r) = st.jobs.get_mut(&id) {
            r.pending_reason = "waiting for the job's input (UploadJobInput)".into();
        }
    }
    if reqs.is_empty() {
        return;
    }
    // Place without holding the state lock (API readers and drivers go on meanwhile). Only
    // this loop adds jobs to agents, so capacity can only have grown when the plan is applied;
    // jobs that left the queue in between are skipped.
    drop(st);
    let policy = Policy {
        aging_ms: s.config.aging.as_millis() as u64,
        ..Policy::default()
    };
    let plan = placement::place(&reqs, &caps, &policy);
    let mut st = s.state.lock();
    let mut start = Vec::new();
    for asg in &plan.assignments {
        let id = &ids[asg.job];
        let agent = &agents[asg.agent];
        if st.active.contains(id) {
            continue;
        }
        if let Some(r) = st.jobs.get_mut(id).filter(|r| r.phase == Phase::Pending) {
            r.phase = Phase::Assigning;
            r.agent_id = Some(agent.agent_id.clone());
            r.agent_key = agent.key.map(|k| k.to_string());
            r.lease_id = asg.lease_id.clone();
            r.gpu_indexes.clear();
            r.progress = 0;
            r.pending_reason.clear();
            r.updated_at_ms = now;
            st.active.insert(id.clone());
            start.push((id.clone(), agent.agent_id.clone()));
        }
    }
    for u in &plan.unplaced {
        if let Some(r) = st
            .jobs
            .get_mut(&ids[u.job])
            .filter(|r| r.phase == Phase::Pending)
        {
            let tried = !r.failed_agents.is_empty();
            r.pending_reason = if tried && !u.impossible {
                format!(
                    "{} (agents already tried: {})",
                    u.reason,
                    r.failed_agents.join(", ")
                )
            } else {
                u.reason.clone()
            };
        }
    }
    drop(st);
    s.mark_dirty();
    for (id, agent_id) in start {
        tracing::info!(job = %id, agent = %agent_id, "placed");
        s.touched(&id);
        let s2 = s.clone();
        tokio::spawn(async move { drive(s2, id, Some(agent_id)).await });
    }
}

// ---------------------------------------------------------------------------------- driver

/// Starts a driver for `id` unless one is running.
pub fn spawn_driver(s: &Arc<Scheduler>, id: &str, target: Option<String>) {
    if !s.state.lock().active.insert(id.to_string()) {
        return;
    }
    let s2 = s.clone();
    let id = id.to_string();
    tokio::spawn(async move { drive(s2, id, target).await });
}

async fn drive(s: Arc<Scheduler>, id: String, target: Option<String>) {
    if let Err(e) = drive_job(&s, &id, target).await {
        tracing::warn!(job = %id, error = %e, "dispatch step failed; will retry");
        update(&s, &id, |r| {
            r.message = e.clone();
            if matches!(r.phase, Phase::Assigning) {
                r.phase = Phase::Pending;
            }
        });
    }
    s.state.lock().active.remove(&id);
    s.mark_dirty();
    s.wake.notify_one();
}

async fn drive_job(s: &Arc<Scheduler>, id: &str, target: Option<String>) -> Result<(), String> {
    let job = s.chain.job(id).await.map_err(|e| e.to_string())?;
    sync_record(s, &job);
    match job.status {
        JobStatus::Settled | JobStatus::Refunded => return Ok(()),
        JobStatus::Succeeded => return settle(s, id).await,
        JobStatus::Failed => return refund(s, id).await,
        JobStatus::Pending | JobStatus::Assigned => {}
    }
    let agent = match target {
        Some(agent_id) => {
            let Some(view) = s.registry.get(&agent_id) else {
                update(s, id, |r| r.phase = Phase::Pending);
                return Err(format!("agent {agent_id} disappeared before assignment"));
            };
            let Some(key) = view.key else {
                return Err(format!("agent {agent_id} has no key yet"));
            };
            let already = job.status == JobStatus::Assigned && job.assigned_agent == Some(key);
            if !already && !assign(s, &job, &view).await? {
                return Ok(());
            }
            view
        }
        None => {
            if job.status == JobStatus::Pending {
                update(s, id, |r| r.phase = Phase::Pending);
                return Ok(());
            }
            let known = s
                .state
                .lock()
                .jobs
                .get(id)
                .map(|r| r.phase == Phase::Failed)
                .unwrap_or(false);
            let found = job.assigned_agent.and_then(|k| s.registry.by_key(&k));
            match found {
                Some(view) => {
                    update(s, id, |r| {
                        r.agent_id = Some(view.agent_id.clone());
                        if !known {
                            r.phase = Phase::Assigned;
                        }
                    });
                    view
                }
                None => {
                    let key = job
                        .assigned_agent
                        .map(|k| k.to_string())
                        .unwrap_or_default();
                    // An agent that has not answered yet may be the one: wait for it (the
                    // sweeper resumes the job) until it answers or counts as lost.
                    let unanswered = s
                        .registry
                        .snapshot()
                        .iter()
                        .any(|a| a.key.is_none() && !s.registry.is_lost(&a.agent_id));
                    if unanswered {
                        return Err(format!(
                            "assigned agent {key} not identified yet; waiting for agents to answer"
                        ));
                    }
                    if !known {
                        attempt_failed(
                            s,
                            id,
                            None,
                            &format!("assigned agent {key} is not known to this scheduler"),
                        )
                        .await;
                    }
                    return Ok(());
                }
            }
        }
    };
    run_on_agent(s, id, &agent).await
}

/// Commits AssignJob; `Ok(false)` when the job should go back to placement.
async fn assign(s: &Arc<Scheduler>, job: &Job, agent: &AgentView) -> Result<bool, String> {
    let Some(key) = agent.key else {
        return Ok(false);
    };
    update(s, &job.id, |r| r.phase = Phase::Assigning);
    let action = Action::AssignJob {
        job_id: job.id.clone(),
        agent_key: key,
    };
    match s.sender.send_and_wait(action, s.config.tx_timeout).await {
        Ok(_) => {}
        Err(ClientError::Rejected(reason)) => {
            let now = s.chain.job(&job.id).await.map_err(|e| e.to_string())?;
            sync_record(s, &now);
            if now.status != JobStatus::Assigned || now.assigned_agent != Some(key) {
                tracing::warn!(job = %job.id, agent = %agent.agent_id, %reason, "AssignJob refused");
                update(s, &job.id, |r| {
                    if matches!(now.status, JobStatus::Pending | JobStatus::Assigned) {
                        r.phase = Phase::Pending;
                    }
                    r.failed_agents.push(agent.agent_id.clone());
                    r.message = format!("assignment to {} refused: {reason}", agent.agent_id);
                });
                return Ok(false);
            }
        }
        Err(e) => {
            update(s, &job.id, |r| {
                r.phase = Phase::Pending;
                r.message = format!("AssignJob not committed: {e}");
            });
            return Ok(false);
        }
    }
    let first = job.assignments == 0;
    let now = s.chain.job(&job.id).await.map_err(|e| e.to_string())?;
    sync_record(s, &now);
    let mut latency = None;
    update(s, &job.id, |r| {
        r.phase = Phase::Assigned;
        r.agent_id = Some(agent.agent_id.clone());
        r.agent_key = Some(key.to_string());
        r.attempts = now.assignments;
        if first {
            latency = Some(now_ms().saturating_sub(r.first_seen_ms) as f64);
        }
    });
    if let Some(ms) = latency {
        s.metrics.observe_placement(ms);
    }
    tracing::info!(job = %job.id, agent = %agent.agent_id, attempt = now.assignments, "assignment committed");
    crash_point(s, crate::config::CrashPoint::Assign);
    Ok(true)
}

/// Starts (or finds) the job on its assigned agent and follows it to its receipt.
async fn run_on_agent(s: &Arc<Scheduler>, id: &str, agent: &AgentView) -> Result<(), String> {
    let mut client = agent.client.clone();
    let Some(rec) = s.state.lock().jobs.get(id).cloned() else {
        return Ok(());
    };
    let limit = match rec.spec.time_limit_secs {
        0 => Duration::from_secs(3600),
        t => Duration::from_secs(t),
    };
    let give_up = Instant::now() + limit + s.config.job_grace;
    let mut lease_id = rec.lease_id.clone();
    // Already on the agent (a restart of the scheduler)? Else start it.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.get_job(id)).await {
            Ok(Ok(existing)) => {
                update(s, id, |r| {
                    r.gpu_indexes = existing.gpu_indexes.clone();
                    if r.phase != Phase::Failed {
                        r.phase = Phase::Running;
                    }
                });
                break;
            }
            Ok(Err(st)) if st.code() == Code::NotFound => {
                let customer = rec.customer.clone();
                let runtime = match &rec.listing_id {
                    Some(l) => s.chain.listing(l).await.map_err(|e| e.to_string())?.runtime,
                    None => Runtime::default(),
                };
                let input = if rec.spec.input_digest.is_some() || rec.spec.dataset_digest.is_some()
                {
                    std::fs::read(s.store.input_path(id))
                        .map_err(|e| format!("reading the job's input: {e}"))?
                } else {
                    Vec::new()
                };
                let started = tokio::time::timeout(
                    Duration::from_secs(30),
                    client.run_job_attempt(
                        id,
                        &customer,
                        &rec.spec,
                        &runtime,
                        input,
                        lease_id.as_deref(),
                        rec.attempts,
                    ),
                )
                .await;
                match started {
                    Ok(Ok(resp)) => {
                        s.metrics.dispatched.inc();
                        tracing::info!(job = %id, agent = %agent.agent_id, gpus = ?resp.gpu_indexes, phase = %resp.phase, "job started");
                        update(s, id, |r| {
                            r.gpu_indexes = resp.gpu_indexes.clone();
                            r.phase = Phase::Running;
                            r.message = resp.message.clone();
                        });
                        break;
                    }
                    Ok(Err(st)) if st.code() == Code::AlreadyExists => continue,
                    Ok(Err(st)) if st.code() == Code::ResourceExhausted => {
                        // The agent is momentarily fuller than the scheduler's model (e.g. a
                        // lease made elsewhere): the assignment stands; try again shortly.
                        update(s, id, |r| {
                            r.message = format!(
                                "waiting for capacity on {}: {}",
                                agent.agent_id,
                                st.message()
                            )
                        });
                    }
                    Ok(Err(st)) if st.code() == Code::NotFound && lease_id.is_some() => {
                        // The customer's lease expired or was released: run outside it.
                        tracing::info!(job = %id, lease = ?lease_id, "lease gone; running the job outside it");
                        update(s, id, |r| r.lease_id = None);
                        lease_id = None;
                        continue;
                    }
                    Ok(Err(st))
                        if matches!(
                            st.code(),
                            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
                        ) => {}
                    Ok(Err(st)) => {
                        attempt_failed(
                            s,
                            id,
                            Some(agent),
                            &format!("agent refused the job: {}", st.message()),
                        )
                        .await;
                        return Ok(());
                    }
                    Err(_) => {}
                }
            }
            Ok(Err(_)) | Err(_) => {}
        }
        if s.registry.is_lost(&agent.agent_id) || Instant::now() > give_up {
            attempt_failed(
                s,
                id,
                Some(agent),
                &format!("agent {} lost before the job started", agent.agent_id),
            )
            .await;
            return Ok(());
        }
        if terminal_now(s, id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Follow it to the end.
    loop {
        if terminal_now(s, id) {
            cancel_on_agent(s, id).await;
            return Ok(());
        }
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(5), client.watch_job(id)).await
        {
            loop {
                let next = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
                match next {
                    Ok(Ok(Some(ev))) => {
                        let p = ev.progress_percent.unwrap_or(0).min(100);
                        update(s, id, |r| {
                            r.progress = r.progress.max(p);
                            if !ev.message.is_empty() {
                                r.message = ev.message.clone();
                            }
                        });
                    }
                    Ok(Ok(None)) => break,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        if terminal_now(s, id)
                            || Instant::now() > give_up
                            || s.registry.is_lost(&agent.agent_id)
                        {
                            break;
                        }
                    }
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), client.get_job(id)).await {
            Ok(Ok(res)) if !res.receipt.is_empty() => {
                let receipt = aitbc_gpu_agent::client::decode_receipt(&res.receipt)
                    .map_err(|e| e.message().to_string())?;
                return handle_receipt(s, id, agent, receipt).await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(st)) if st.code() == Code::NotFound => {
                attempt_failed(
                    s,
                    id,
                    Some(agent),
                    &format!("agent {} no longer knows the job", agent.agent_id),
                )
                .await;
                return Ok(());
            }
            Ok(Err(_)) | Err(_) => s
                .registry
                .note_failure(&agent.agent_id, "job status call failed"),
        }
        if s.registry.is_lost(&agent.agent_id) {
            attempt_failed(
                s,
                id,
                Some(agent),
                &format!("agent {} lost while running the job", agent.agent_id),
            )
            .await;
            return Ok(());
        }
        if Instant::now() > give_up {
            cancel_on_agent(s, id).await;
            attempt_failed(
                s,
                id,
                Some(agent),
                "no result within the time limit plus grace",
            )
            .await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Test fault injection: abort (no shutdown code, like kill -9) after `point`.
fn crash_point(s: &Scheduler, point: crate::config::CrashPoint) {
    if s.config.crash_after == Some(point) {
        s.flush();
        tracing::error!(?point, "crash point reached; aborting (fault injection)");
        std::process::abort();
    }
}

fn terminal_now(s: &Scheduler, id: &str) -> bool {
    s.state
        .lock()
        .jobs
        .get(id)
        .map(|r| r.phase.terminal())
        .unwrap_or(true)
}

async fn handle_receipt(
    s: &Arc<Scheduler>,
    id: &str,
    agent: &AgentView,
    receipt: SignedJobReceipt,
) -> Result<(), String> {
    let ok = receipt.receipt.success;
    let (attempts, stop_requested) = s
        .state
        .lock()
        .jobs
        .get(id)
        .map_or((0, false), |r| (r.attempts, r.stop_requested));
    let max = s.config.max_attempts;
    tracing::info!(job = %id, agent = %agent.agent_id, success = ok, message = %receipt.receipt.message, "receipt");
    update(s, id, |r| {
        r.result_digest = receipt.receipt.output_digest.to_hex();
        r.receipt_hex = Some(hex::encode(borsh::to_vec(&receipt).unwrap_or_default()));
        r.phase = Phase::Reporting;
        if ok {
            r.progress = 100;
        } else {
            r.message = receipt.receipt.message.clone();
        }
    });
    // A job the customer asked to stop is not retried: its receipt (the usage so far) is what
    // the chain settles.
    if !ok && !stop_requested && attempts < max && has_alternative(s, id, &agent.agent_id) {
        attempt_failed(
            s,
            id,
            Some(agent),
            &format!(
                "job failed on {}: {}",
                agent.agent_id, receipt.receipt.message
            ),
        )
        .await;
        return Ok(());
    }
    report(s, id, receipt).await?;
    crash_point(s, crate::config::CrashPoint::Report);
    // The chain settles (or refunds) a job in the transaction that reports its result; a chain
    // from before that rule leaves it to SettleJob or RefundJob.
    let job = s.chain.job(id).await.map_err(|e| e.to_string())?;
    match job.status {
        JobStatus::Settled => {
            s.metrics.settled.inc();
        }
        JobStatus::Refunded => {
            s.metrics.refunds.inc();
        }
        _ if ok => return settle(s, id).await,
        _ => return refund(s, id).await,
    }
    sync_record(s, &job);
    Ok(())
}

/// Whether an agent other than `failing` and those already tried could ever hold the job
/// (registered, answering, serving its provider, enough devices). Without one, a failed
/// receipt is reported at once (and the job refunded) instead of waiting for the deadline.
fn has_alternative(s: &Scheduler, id: &str, failing: &str) -> bool {
    let Some(rec) = s.state.lock().jobs.get(id).cloned() else {
        return false;
    };
    let provider = rec
        .provider
        .as_deref()
        .and_then(|p| p.parse::<Address>().ok());
    s.registry.snapshot().iter().any(|a| {
        if a.agent_id == failing || rec.failed_agents.contains(&a.agent_id) || !a.placeable() {
            return false;
        }
        let serves = match (&a.record, &provider) {
            (Some(r), Some(p)) => r.serves.serves(p),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let mut devices: Vec<u64> = a
            .inventory
            .as_ref()
            .map(|inv| inv.gpus.iter().map(|g| g.memory_total_mib).collect())
            .unwrap_or_default();
        devices.sort_unstable();
        serves
            && placement::choose_window(&devices, rec.spec.gpus as usize, rec.spec.memory_mib)
                .is_some()
    })
}

/// The attempt on `agent` failed: retry elsewhere, or give up (refund at the deadline).
async fn attempt_failed(s: &Arc<Scheduler>, id: &str, agent: Option<&AgentView>, why: &str) {
    s.metrics.dispatch_failures.inc();
    if let Some(a) = agent {
        let mut c = a.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), c.cancel_job(id)).await;
    }
    let max = s.config.max_attempts;
    let mut retry = false;
    update(s, id, |r| {
        if let Some(a) = agent {
            if !r.failed_agents.contains(&a.agent_id) {
                r.failed_agents.push(a.agent_id.clone());
            }
        }
        r.gpu_indexes.clear();
        r.message = why.to_string();
        if r.attempts < max {
            retry = true;
            r.phase = Phase::Pending;
            r.pending_reason = format!("retrying after: {why}");
        } else {
            r.phase = Phase::Failed;
            r.pending_reason = format!(
                "gave up after {} attempt(s) ({why}); refunded once the deadline height {} passes",
                r.attempts, r.deadline_height
            );
        }
    });
    if retry {
        s.metrics.retries.inc();
    }
    tracing::warn!(job = %id, retry, "attempt failed: {why}");
}

async fn report(s: &Arc<Scheduler>, id: &str, receipt: SignedJobReceipt) -> Result<(), String> {
    match s
        .sender
        .send_and_wait(Action::ReportResult { receipt }, s.config.tx_timeout)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let job = s.chain.job(id).await.map_err(|e| e.to_string())?;
            sync_record(s, &job);
            match job.status {
                JobStatus::Succeeded
                | JobStatus::Failed
                | JobStatus::Settled
                | JobStatus::Refunded => Ok(()),
                _ => Err(format!("ReportResult: {e}")),
            }
        }
    }
}

/// SettleJob; a job already settled counts as done.
pub async fn settle(s: &Arc<Scheduler>, id: &str) -> Result<(), String> {
    release_escrow(s, id, Release::Settle).await
}

/// RefundJob; a job already refunded (or settled) counts as done.
pub async fn refund(s: &Arc<Scheduler>, id: &str) -> Result<(), String> {
    release_escrow(s, id, Release::Refund).await
}

/// Which way a job's escrow leaves it: to the provider or back to the customer.
#[derive(Clone, Copy)]
enum Release {
    Settle,
    Refund,
}

/// Sends SettleJob or RefundJob and records the outcome. Either way the escrow is released at
/// most once on chain, so a job found already settled or refunded counts as done.
async fn release_escrow(s: &Arc<Scheduler>, id: &str, how: Release) -> Result<(), String> {
    let (action, name, phase, status) = match how {
        Release::Settle => (
            Action::SettleJob { job_id: id.into() },
            "SettleJob",
            Phase::Settled,
            "settled",
        ),
        Release::Refund => (
            Action::RefundJob { job_id: id.into() },
            "RefundJob",
            Phase::Refunded,
            "refunded",
        ),
    };
    match s.sender.send_and_wait(action, s.config.tx_timeout).await {
        Ok(c) => {
            match how {
                Release::Settle => s.metrics.settled.inc(),
                Release::Refund => s.metrics.refunds.inc(),
            };
            tracing::info!(job = %id, tx = %c.hash, "{status}");
            update(s, id, |r| {
                r.phase = phase;
                r.chain_status = status.into();
                let tx = Some(c.hash.to_hex());
                match how {
                    Release::Settle => r.settlement_tx = tx,
                    Release::Refund => r.refund_tx = tx,
                }
            });
            Ok(())
        }
        Err(e) => {
            let job = s.chain.job(id).await.map_err(|e| e.to_string())?;
            sync_record(s, &job);
            match job.status {
                JobStatus::Settled | JobStatus::Refunded => Ok(()),
                _ => Err(format!("{name}: {e}")),
            }
        }
    }
}

/// Best effort: stops the job on the agent the record names.
pub async fn cancel_on_agent(s: &Scheduler, id: &str) {
    let agent_id = s.state.lock().jobs.get(id).and_then(|r| r.agent_id.clone());
    if let Some(view) = agent_id.and_then(|a| s.registry.get(&a)) {
        let mut c = view.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), c.cancel_job(id)).await;
    }
}

// ----------------------------------------------------------------------------------- leases

/// Lease terms from a gpu-rental listing's parameters: `gpus` (default 1), `memory_mib`
/// (default 0), `duration_secs` or `hours` (default 1 hour).
pub fn lease_terms(params: &[(String, String)]) -> (u32, u64, u64) {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    let gpus = get("gpus").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mem = get("memory_mib").and_then(|v| v.parse().ok()).unwrap_or(0);
    let secs = get("duration_secs")
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            get("hours")
                .and_then(|v| v.parse::<u64>().ok())
                .map(|h| h.saturating_mul(3600))
        })
        .unwrap_or(3600);
    (gpus, mem, secs)
}

/// Turns accepted gpu-rental bids into leases on the provider's agent.
async fn make_leases(s: &Arc<Scheduler>) {
    let pending: Vec<(String, String)> = s
        .state
        .lock()
        .pending_leases
        .iter()
        .map(|(b, l)| (b.clone(), l.clone()))
        .collect();
    for (bid_id, listing_id) in pending {
        let (bid, listing) = match (
            s.chain.bid(&bid_id).await,
            s.chain.listing(&listing_id).await,
        ) {
            (Ok(b), Ok(l)) => (b, l),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(bid = %bid_id, error = %e, "reading a rental bid failed");
                continue;
            }
        };
        if listing.service_type != ServiceType::GpuRental
            || bid.status != aitbc_protocol::model::BidStatus::Accepted
        {
            s.state.lock().pending_leases.remove(&bid_id);
            s.mark_dirty();
            continue;
        }
        let (gpus, mem, secs) = lease_terms(&listing.parameters);
        let mut candidates: Vec<AgentView> = s
            .registry
            .snapshot()
            .into_iter()
            .filter(|a| {
                a.placeable()
                    && a.record
                        .as_ref()
                        .map(|r| r.serves.serves(&listing.owner))
                        .unwrap_or(false)
            })
            .collect();
        // The provider's own agents first.
        candidates.sort_by_key(|a| {
            a.record
                .as_ref()
                .map(|r| r.owner != listing.owner)
                .unwrap_or(true)
        });
        for a in candidates {
            let mut c = a.client.clone();
            let holder = bid.bidder.to_string();
            match tokio::time::timeout(
                Duration::from_secs(5),
                c.allocate_lease(&holder, gpus, mem, secs, Some(&bid_id)),
            )
            .await
            {
                Ok(Ok(lease)) => {
                    tracing::info!(bid = %bid_id, agent = %a.agent_id, lease = %lease.id, "lease allocated for an accepted rental bid");
                    let mut st = s.state.lock();
                    st.pending_leases.remove(&bid_id);
                    st.leases.insert(
                        bid_id.clone(),
                        LeaseRecord {
                            bid_id: bid_id.clone(),
                            holder,
                            agent_id: a.agent_id.clone(),
                            lease_id: lease.id,
                        },
                    );
                    drop(st);
                    s.mark_dirty();
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(bid = %bid_id, agent = %a.agent_id, error = %e.message(), "lease not possible here")
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_exchange_a_job_expires_by_block_time_not_by_how_many_blocks_came() {
        let deadline = 1_000_000;
        let grace_end = deadline + RESULT_GRACE_MS;
        // Many fast blocks (height far past the estimate) do not expire a job early...
        assert!(!expired(deadline, 10, grace_end, 10_000));
        // ... and few slow ones do not keep it open: block time past deadline and grace does.
        assert!(expired(deadline, 10_000, grace_end + 1, 11));
        // Before any block was followed, or for an old record, the height estimate decides.
        assert!(expired(deadline, 10, 0, 11));
        assert!(!expired(0, 10, grace_end + 1, 10));
    }

    #[test]
    fn lease_terms_from_listing_parameters() {
        assert_eq!(lease_terms(&[]), (1, 0, 3600));
        let p = vec![
            ("gpus".to_string(), "2".to_string()),
            ("hours".to_string(), "3".to_string()),
            ("memory_mib".into(), "100".into()),
        ];
        assert_eq!(lease_terms(&p), (2, 100, 10800));
        let p = vec![
            ("duration_secs".to_string(), "60".to_string()),
            ("gpus".to_string(), "x".to_string()),
        ];
        assert_eq!(lease_terms(&p), (1, 0, 60));
    }
}
