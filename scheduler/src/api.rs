//! The control API (`aitbc.scheduler.v1.Scheduler`, protocol/proto/scheduler.proto).

use crate::registry::AgentView;
use crate::state::{JobRecord, Phase};
use crate::{Scheduler, SchedulerError};
use aitbc_protocol::agent_pb as apb;
use aitbc_protocol::model::Job;
use aitbc_protocol::scheduler_pb as pb;
use aitbc_protocol::scheduler_pb::scheduler_server::{Scheduler as SchedulerApi, SchedulerServer};
use aitbc_protocol::Hash;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Largest input accepted by UploadJobInput (the agent's own cap may be lower).
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;
const AGENT_CALL: Duration = Duration::from_secs(5);

/// The tonic service over a running scheduler.
#[derive(Clone)]
pub struct ControlApi {
    s: Arc<Scheduler>,
}

impl ControlApi {
    pub fn new(s: Arc<Scheduler>) -> ControlApi {
        ControlApi { s }
    }
    pub fn into_server(self) -> SchedulerServer<ControlApi> {
        SchedulerServer::new(self)
            .max_encoding_message_size(256 * 1024 * 1024)
            .max_decoding_message_size(MAX_INPUT_BYTES + 4096)
    }
}

/// Serves the control API on `listener` until `shutdown` resolves.
pub async fn serve(
    s: Arc<Scheduler>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(ControlApi::new(s).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| SchedulerError::Serve(e.to_string()))
}

fn job_info(r: &JobRecord) -> pb::JobInfo {
    pb::JobInfo {
        job_id: r.job_id.clone(),
        phase: r.phase.as_str().into(),
        chain_status: r.chain_status.clone(),
        agent_id: r.agent_id.clone().unwrap_or_default(),
        agent_key: r.agent_key.clone().unwrap_or_default(),
        progress_percent: r.progress.min(100),
        attempts: r.attempts,
        pending_reason: r.pending_reason.clone(),
        message: r.message.clone(),
        result_digest: r.result_digest.clone(),
        settlement_tx: r.settlement_tx.clone().unwrap_or_default(),
        refund_tx: r.refund_tx.clone().unwrap_or_default(),
        receipt: r
            .receipt_hex
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_default(),
        stdout: None,
        stderr: None,
        customer: r.customer.clone(),
        listing_id: r.listing_id.clone().unwrap_or_default(),
        provider: r.provider.clone().unwrap_or_default(),
        gpus: r.spec.gpus,
        memory_mib: r.spec.memory_mib,
        submitted_height: r.submitted_height,
        deadline_height: r.deadline_height,
        updated_at_ms: r.updated_at_ms,
        terminal: r.phase.terminal(),
    }
}

fn tail(c: Option<apb::CapturedStream>) -> Option<pb::OutputTail> {
    c.map(|c| pb::OutputTail {
        tail: if c.tail.is_empty() { c.head } else { c.tail },
        total_bytes: c.total_bytes,
        dropped_bytes: c.dropped_bytes,
    })
}

fn summary(a: &AgentView) -> Option<pb::InventorySummary> {
    let inv = a.inventory.as_ref()?;
    let leased: std::collections::HashSet<u32> = a
        .leases
        .iter()
        .flat_map(|l| l.gpu_indexes.iter().copied())
        .collect();
    let free = |g: &&apb::Gpu| !g.busy && !g.leased && !leased.contains(&g.index);
    let mut models: Vec<String> = inv.gpus.iter().map(|g| g.model.clone()).collect();
    models.dedup();
    Some(pb::InventorySummary {
        gpus_total: inv.gpus.len() as u32,
        gpus_free: inv.gpus.iter().filter(free).count() as u32,
        memory_total_mib: inv.gpus.iter().map(|g| g.memory_total_mib).sum(),
        memory_free_mib: inv
            .gpus
            .iter()
            .filter(free)
            .map(|g| g.memory_total_mib)
            .sum(),
        simulated: inv.simulated,
        source: inv.source.clone(),
        gpu_models: models,
    })
}

fn lease(agent_id: &str, l: apb::Lease) -> pb::Lease {
    pb::Lease {
        agent_id: agent_id.into(),
        lease_id: l.id,
        holder: l.holder,
        gpu_indexes: l.gpu_indexes,
        memory_mib: l.memory_mib,
        created_at_ms: l.created_at_ms,
        expires_at_ms: l.expires_at_ms,
    }
}

impl ControlApi {
    fn record(&self, id: &str) -> Option<JobRecord> {
        self.s.state.lock().jobs.get(id).cloned()
    }

    async fn info(&self, id: &str, with_output: bool) -> Result<pb::JobInfo, Status> {
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("job_id is required"));
        }
        let Some(rec) = self.record(id) else {
            // Not seen yet (e.g. submitted in the block being processed): the chain's view.
            let job = self.chain_job(id).await?;
            return Ok(job_info(&crate::dispatch::new_record(&job)));
        };
        let mut info = job_info(&rec);
        if with_output {
            if let Some(view) = rec.agent_id.as_deref().and_then(|a| self.s.registry.get(a)) {
                let mut c = view.client.clone();
                if let Ok(Ok(r)) = tokio::time::timeout(AGENT_CALL, c.get_job(id)).await {
                    info.stdout = tail(r.stdout);
                    info.stderr = tail(r.stderr);
                    if let Some(p) = r.progress_percent {
                        info.progress_percent = info.progress_percent.max(p.min(100));
                    }
                }
            }
        }
        Ok(info)
    }

    async fn chain_job(&self, id: &str) -> Result<Job, Status> {
        self.s.chain.job(id).await.map_err(|e| match e {
            aitbc_protocol::client::ClientError::NotFound(m) => Status::not_found(m),
            e => Status::unavailable(e.to_string()),
        })
    }

    fn agent(&self, agent_id: &str) -> Result<AgentView, Status> {
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id is required"));
        }
        self.s.registry.get(agent_id).ok_or_else(|| {
            Status::not_found(format!("no agent {agent_id:?} is known to the scheduler"))
        })
    }

    fn agents(&self, agent_id: &str) -> Result<Vec<AgentView>, Status> {
        if agent_id.is_empty() {
            Ok(self.s.registry.snapshot())
        } else {
            Ok(vec![self.agent(agent_id)?])
        }
    }
}

type InfoStream = Pin<Box<dyn Stream<Item = Result<pb::JobInfo, Status>> + Send>>;

#[tonic::async_trait]
impl SchedulerApi for ControlApi {
    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        Ok(Response::new(
            self.info(&req.into_inner().job_id, true).await?,
        ))
    }

    type WatchJobStream = InfoStream;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<InfoStream>, Status> {
        let id = req.into_inner().job_id;
        let mut changes = self.s.changes.subscribe();
        let first = self.info(&id, false).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let mut last = first.clone();
            if tx.send(Ok(first)).await.is_err() || last.terminal {
                return;
            }
            loop {
                let changed = tokio::time::timeout(Duration::from_secs(2), changes.recv()).await;
                match changed {
                    Ok(Ok(j)) if j != id => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                    _ => {}
                }
                let Ok(now) = api.info(&id, false).await else {
                    continue;
                };
                if now != last {
                    last = now.clone();
                    if tx.send(Ok(now)).await.is_err() || last.terminal {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn upload_job_input(
        &self,
        req: Request<pb::UploadJobInputRequest>,
    ) -> Result<Response<pb::UploadJobInputResponse>, Status> {
        let req = req.into_inner();
        if req.data.len() > MAX_INPUT_BYTES {
            return Err(Status::invalid_argument(format!(
                "input is {} bytes; at most {MAX_INPUT_BYTES}",
                req.data.len()
            )));
        }
        let job = self.chain_job(&req.job_id).await?;
        let digest = Hash(Sha256::digest(&req.data).into());
        let matched = if job.spec.input_digest == Some(digest) {
            "input_digest"
        } else if job.spec.dataset_digest == Some(digest) {
            "dataset_digest"
        } else if job.spec.input_digest.is_none() && job.spec.dataset_digest.is_none() {
            return Err(Status::failed_precondition(format!(
                "job {} declares no input_digest or dataset_digest",
                job.id
            )));
        } else {
            return Err(Status::invalid_argument(format!(
                "the data's SHA-256 {digest} matches neither the job's input_digest nor its dataset_digest"
            )));
        };
        crate::state::write_atomic(&self.s.store.input_path(&job.id), &req.data)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(job = %job.id, bytes = req.data.len(), matched, "job input stored");
        self.s.wake.notify_one();
        Ok(Response::new(pb::UploadJobInputResponse {
            job_id: job.id,
            sha256: digest.to_hex(),
            size: req.data.len() as u64,
            matched: matched.into(),
        }))
    }

    async fn fetch_result(
        &self,
        req: Request<pb::FetchResultRequest>,
    ) -> Result<Response<pb::FetchResultResponse>, Status> {
        let req = req.into_inner();
        let rec = self.record(&req.job_id).ok_or_else(|| {
            Status::not_found(format!("job {} is not known to the scheduler", req.job_id))
        })?;
        let agent_id = rec.agent_id.clone().ok_or_else(|| {
            Status::failed_precondition(format!("job {} has not run on an agent", rec.job_id))
        })?;
        // Fair exchange: the outputs are the customer's once the result (and with it the
        // payment) is on chain, not before: otherwise a customer could take them and stop the
        // job before the provider's receipt lands.
        let job = self.chain_job(&rec.job_id).await?;
        result_released(&job)?;
        let view = self.agent(&agent_id)?;
        let mut c = view.client.clone();
        let r = tokio::time::timeout(AGENT_CALL, c.get_job(&rec.job_id))
            .await
            .map_err(|_| Status::unavailable(format!("agent {agent_id} did not answer")))??;
        let mut out = pb::FetchResultResponse {
            job_id: rec.job_id.clone(),
            agent_id: agent_id.clone(),
            files: r
                .outputs
                .iter()
                .map(|f| pb::ResultFile {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
            output_digest: r.output_digest.clone(),
            ..Default::default()
        };
        if !req.path.is_empty() {
            let data = tokio::time::timeout(
                Duration::from_secs(60),
                c.fetch_output(&rec.job_id, &req.path, req.max_bytes),
            )
            .await
            .map_err(|_| Status::unavailable(format!("agent {agent_id} did not answer")))??;
            out.sha256 = hex::encode(Sha256::digest(&data));
            out.path = req.path;
            out.data = data;
        }
        Ok(Response::new(out))
    }

    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = self
            .s
            .registry
            .snapshot()
            .iter()
            .map(|a| pb::AgentInfo {
                agent_id: a.agent_id.clone(),
                endpoint: a.endpoint.clone(),
                agent_key: a.key.map(|k| k.to_string()).unwrap_or_default(),
                owner: a
                    .record
                    .as_ref()
                    .map(|r| r.owner.to_string())
                    .unwrap_or_default(),
                registered: a.record.is_some(),
                serves: match a.record.as_ref().map(|r| &r.serves) {
                    Some(aitbc_protocol::tx::Serves::AnyProvider) => vec!["any".into()],
                    Some(aitbc_protocol::tx::Serves::Providers(p)) => {
                        p.iter().map(|a| a.to_string()).collect()
                    }
                    None => vec![],
                },
                healthy: a.healthy,
                last_error: a.last_error.clone(),
                inventory: summary(a),
                running_jobs: a.status.as_ref().map(|s| s.running_jobs).unwrap_or(0),
                active_leases: a.leases.len() as u32,
                last_seen_ms: a.last_seen_ms,
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn allocate_resources(
        &self,
        req: Request<pb::AllocateResourcesRequest>,
    ) -> Result<Response<pb::AllocateResourcesResponse>, Status> {
        let req = req.into_inner();
        let view = self.agent(&req.agent_id)?;
        let mut c = view.client.clone();
        let lease_id = if req.lease_id.is_empty() {
            None
        } else {
            Some(req.lease_id.as_str())
        };
        let l = tokio::time::timeout(
            AGENT_CALL,
            c.allocate_lease(
                &req.holder,
                req.gpus,
                req.memory_mib,
                req.duration_secs,
                lease_id,
            ),
        )
        .await
        .map_err(|_| Status::unavailable(format!("agent {} did not answer", req.agent_id)))??;
        // The next ResourceStatus must show the lease (read your own writes).
        self.s.registry.refresh_agent(&req.agent_id).await;
        self.s.wake.notify_one();
        Ok(Response::new(pb::AllocateResourcesResponse {
            lease: Some(lease(&req.agent_id, l)),
        }))
    }

    async fn deallocate_resources(
        &self,
        req: Request<pb::DeallocateResourcesRequest>,
    ) -> Result<Response<pb::DeallocateResourcesResponse>, Status> {
        let req = req.into_inner();
        let view = self.agent(&req.agent_id)?;
        let mut c = view.client.clone();
        let released = tokio::time::timeout(AGENT_CALL, c.deallocate_lease(&req.lease_id))
            .await
            .map_err(|_| Status::unavailable(format!("agent {} did not answer", req.agent_id)))??;
        self.s.registry.refresh_agent(&req.agent_id).await;
        self.s.wake.notify_one();
        Ok(Response::new(pb::DeallocateResourcesResponse { released }))
    }

    async fn resource_status(
        &self,
        req: Request<pb::ResourceStatusRequest>,
    ) -> Result<Response<pb::ResourceStatusResponse>, Status> {
        let agents = self.agents(&req.into_inner().agent_id)?;
        let out = agents
            .iter()
            .map(|a| pb::AgentResources {
                agent_id: a.agent_id.clone(),
                healthy: a.healthy,
                error: a.last_error.clone(),
                inventory: summary(a),
                gpus: a
                    .inventory
                    .as_ref()
                    .map(|inv| {
                        inv.gpus
                            .iter()
                            .map(|g| pb::GpuStatus {
                                index: g.index,
                                uuid: g.uuid.clone(),
                                model: g.model.clone(),
                                memory_total_mib: g.memory_total_mib,
                                memory_used_mib: g.memory_used_mib,
                                utilization_percent: g.utilization_percent,
                                leased: g.leased,
                                busy: g.busy,
                                simulated: g.simulated,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                leases: a
                    .leases
                    .iter()
                    .cloned()
                    .map(|l| lease(&a.agent_id, l))
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ResourceStatusResponse { agents: out }))
    }

    async fn resource_utilization(
        &self,
        req: Request<pb::ResourceUtilizationRequest>,
    ) -> Result<Response<pb::ResourceUtilizationResponse>, Status> {
        let req = req.into_inner();
        let period = if req.period.is_empty() {
            "1h".to_string()
        } else {
            req.period.clone()
        };
        let mut out = Vec::new();
        for a in self.agents(&req.agent_id)? {
            let mut c = a.client.clone();
            let r =
                tokio::time::timeout(AGENT_CALL, c.metrics_history(&period, req.max_points, None))
                    .await;
            let entry = match r {
                Ok(Ok(h)) => pb::AgentUtilization {
                    agent_id: a.agent_id.clone(),
                    error: String::new(),
                    simulated: h.simulated,
                    interval_ms: h.interval_ms,
                    gpus: h
                        .gpus
                        .into_iter()
                        .map(|g| {
                            let avg = if g.samples.is_empty() {
                                0.0
                            } else {
                                g.samples
                                    .iter()
                                    .map(|s| f64::from(s.utilization_percent))
                                    .sum::<f64>()
                                    / g.samples.len() as f64
                            };
                            pb::GpuUtilization {
                                index: g.index,
                                uuid: g.uuid,
                                samples: g
                                    .samples
                                    .into_iter()
                                    .map(|s| pb::UtilizationSample {
                                        at_ms: s.at_ms,
                                        utilization_percent: s.utilization_percent,
                                        memory_used_mib: s.memory_used_mib,
                                    })
                                    .collect(),
                                average_utilization_percent: avg,
                            }
                        })
                        .collect(),
                },
                Ok(Err(e)) => pb::AgentUtilization {
                    agent_id: a.agent_id.clone(),
                    error: e.message().to_string(),
                    ..Default::default()
                },
                Err(_) => pb::AgentUtilization {
                    agent_id: a.agent_id.clone(),
                    error: "agent did not answer".into(),
                    ..Default::default()
                },
            };
            out.push(entry);
        }
        Ok(Response::new(pb::ResourceUtilizationResponse {
            agents: out,
        }))
    }

    async fn stress_test(
        &self,
        req: Request<pb::StressTestRequest>,
    ) -> Result<Response<pb::StressTestResponse>, Status> {
        let req = req.into_inner();
        let view = self.agent(&req.agent_id)?;
        let mut c = view.client.clone();
        let r = tokio::time::timeout(
            Duration::from_secs(300),
            c.stress_memory(req.gpu_index, req.memory_mib, req.passes),
        )
        .await
        .map_err(|_| Status::unavailable(format!("agent {} did not answer", req.agent_id)))??;
        Ok(Response::new(pb::StressTestResponse {
            agent_id: req.agent_id,
            gpu_index: r.gpu_index,
            uuid: r.uuid,
            allocated_mib: r.allocated_mib,
            passes: r.passes,
            fill_seconds: r.fill_seconds,
            bandwidth_gib_per_s: r.bandwidth_gib_per_s,
            verified: r.verified,
            message: r.message,
        }))
    }

    async fn get_metrics(
        &self,
        _req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::SchedulerMetrics>, Status> {
        let m = &self.s.metrics;
        let (p50, p99) = m.placement_percentiles();
        let (queue, phases) = {
            let st = self.s.state.lock();
            let mut counts = std::collections::BTreeMap::new();
            for r in st.jobs.values() {
                *counts.entry(r.phase.as_str()).or_insert(0u64) += 1;
            }
            let queue = st
                .jobs
                .values()
                .filter(|r| r.phase == Phase::Pending)
                .count() as u64;
            (queue, counts)
        };
        let agents = self.s.registry.snapshot();
        Ok(Response::new(pb::SchedulerMetrics {
            queue_length: queue,
            placement_latency_p50_ms: p50,
            placement_latency_p99_ms: p99,
            jobs_by_phase: phases
                .into_iter()
                .map(|(p, c)| pb::PhaseCount {
                    phase: p.into(),
                    count: c,
                })
                .collect(),
            dispatched_total: m.dispatched.get(),
            dispatch_failures_total: m.dispatch_failures.get(),
            retries_total: m.retries.get(),
            settled_total: m.settled.get(),
            refunds_total: m.refunds.get(),
            agents_total: agents.len() as u64,
            agents_healthy: agents.iter().filter(|a| a.healthy).count() as u64,
            last_height: self.s.state.lock().next_height.saturating_sub(1),
            uptime_secs: m.uptime_secs(),
        }))
    }
}

/// Whether a job's outputs may be released: only once its result is on chain.
#[allow(clippy::result_large_err)]
fn result_released(job: &Job) -> Result<(), Status> {
    if job.result.is_some() {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "job {} has no result on chain yet ({}): its outputs are released once the agent's \
             receipt is committed; wait for it (`ai-status`) and fetch again",
            job.id,
            job.status.as_str()
        )))
    }
}
