//! The gRPC service (`aitbc.agent.v1.Agent`) over [`crate::agent::Agent`].

use crate::agent::{Agent, AgentError, JobEvent, JobRequest};
use crate::auth::methods;
use crate::capture::CapturedOutput;
use crate::leases::{Lease, LeaseRequest};
use crate::time::{now_ms, parse_period_ms};
use aitbc_protocol::agent_pb as pb;
use aitbc_protocol::agent_pb::agent_server::{Agent as AgentRpc, AgentServer};
use aitbc_protocol::tx::{JobSpec, Runtime};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// Most bytes of a request beyond the job input (spec, runtime, ids).
const REQUEST_OVERHEAD: usize = 1024 * 1024;

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        match e {
            AgentError::InvalidArgument(m) => Status::invalid_argument(m),
            AgentError::NotFound(m) => Status::not_found(m),
            AgentError::AlreadyExists(m) => Status::already_exists(m),
            AgentError::ResourceExhausted(m) => Status::resource_exhausted(m),
            AgentError::FailedPrecondition(m) => Status::failed_precondition(m),
            AgentError::PermissionDenied(m) => Status::permission_denied(m),
            AgentError::OutOfRange(m) => Status::out_of_range(m),
            AgentError::Unavailable(m) => Status::unavailable(m),
            AgentError::Internal(m) => Status::internal(m),
        }
    }
}

pub struct AgentService {
    agent: Arc<Agent>,
}

impl AgentService {
    pub fn new(agent: Arc<Agent>) -> Self {
        AgentService { agent }
    }

    /// The tonic server for this service, accepting requests as large as the agent's input cap.
    pub fn into_server(self) -> AgentServer<AgentService> {
        let max = self
            .agent
            .config()
            .max_input_bytes
            .saturating_add(REQUEST_OVERHEAD);
        AgentServer::new(self).max_decoding_message_size(max)
    }

    fn authorize<T: prost::Message>(&self, method: &str, req: &Request<T>) -> Result<(), Status> {
        self.agent
            .authenticator()
            .verify(method, req.metadata(), req.get_ref(), now_ms())
            .map(|caller| tracing::debug!(%caller, method, "authorized call"))
            .map_err(|e| {
                tracing::warn!(method, error = %e, "refused unauthenticated call");
                Status::unauthenticated(e.to_string())
            })
    }
}

/// Serves the agent's gRPC API on `listener` until `shutdown` completes.
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(AgentService::new(agent).into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// Binds `addr` and serves in the background; returns the bound address (useful with port 0).
pub async fn spawn_server(
    agent: Arc<Agent>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(agent, listener, shutdown))))
}

fn lease_pb(l: Lease) -> pb::Lease {
    pb::Lease {
        id: l.id,
        holder: l.holder,
        gpu_indexes: l.gpu_indexes,
        gpu_uuids: l.gpu_uuids,
        memory_mib: l.memory_mib,
        created_at_ms: l.created_at_ms,
        expires_at_ms: l.expires_at_ms,
    }
}

fn event_pb(e: JobEvent) -> pb::JobEvent {
    pb::JobEvent {
        job_id: e.job_id,
        phase: e.phase.as_str().into(),
        progress_percent: e.progress,
        message: e.message,
        at_ms: e.at_ms,
    }
}

fn captured_pb(c: CapturedOutput) -> pb::CapturedStream {
    pb::CapturedStream {
        head: c.head,
        tail: c.tail,
        total_bytes: c.total_bytes,
        dropped_bytes: c.dropped_bytes,
    }
}

#[tonic::async_trait]
impl AgentRpc for AgentService {
    async fn get_inventory(
        &self,
        _req: Request<pb::GetInventoryRequest>,
    ) -> Result<Response<pb::Inventory>, Status> {
        let agent = self.agent.clone();
        let snap = tokio::task::spawn_blocking(move || agent.inventory())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::Inventory {
            gpus: snap
                .gpus
                .into_iter()
                .map(|g| pb::Gpu {
                    index: g.reading.index,
                    uuid: g.reading.uuid,
                    model: g.reading.model,
                    memory_total_mib: g.reading.memory_total_mib,
                    memory_used_mib: g.reading.memory_used_mib,
                    utilization_percent: g.reading.utilization_percent,
                    temperature_celsius: g.reading.temperature_celsius,
                    power_milliwatts: g.reading.power_milliwatts,
                    simulated: g.simulated,
                    leased: g.leased,
                    busy: g.busy,
                })
                .collect(),
            simulated: snap.simulated,
            source: snap.source.as_str().into(),
            driver_version: snap.driver.driver_version,
            cuda_version: snap.driver.cuda_version,
            reason: snap.reason,
            sampled_at_ms: snap.sampled_at_ms,
        }))
    }

    async fn get_status(
        &self,
        _req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        let s = self.agent.status();
        Ok(Response::new(pb::AgentStatus {
            agent_id: s.agent_id,
            agent_key: s.agent_key,
            owner: s.owner.map(|a| a.to_string()).unwrap_or_default(),
            serves: s.serves,
            chain_id: s.chain_id,
            gpu_count: s.gpu_count,
            free_gpus: s.free_gpus,
            simulated: s.simulated,
            inventory_source: s.inventory_source,
            reason: s.reason,
            running_jobs: s.running_jobs,
            active_leases: s.active_leases,
            uptime_secs: s.uptime_secs,
            version: env!("CARGO_PKG_VERSION").into(),
            register_action: match &s.register_action {
                Some(a) => borsh::to_vec(a).map_err(|e| Status::internal(e.to_string()))?,
                None => Vec::new(),
            },
        }))
    }

    async fn allocate_lease(
        &self,
        req: Request<pb::AllocateLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        self.authorize(methods::ALLOCATE_LEASE, &req)?;
        let r = req.into_inner();
        let lease = self.agent.allocate_lease(LeaseRequest {
            holder: r.holder,
            gpus: r.gpus,
            memory_mib: r.memory_mib,
            duration_ms: r.duration_secs.saturating_mul(1000),
            lease_id: Some(r.lease_id).filter(|s| !s.is_empty()),
        })?;
        Ok(Response::new(lease_pb(lease)))
    }

    async fn deallocate_lease(
        &self,
        req: Request<pb::DeallocateLeaseRequest>,
    ) -> Result<Response<pb::DeallocateLeaseResponse>, Status> {
        self.authorize(methods::DEALLOCATE_LEASE, &req)?;
        let released = self.agent.deallocate_lease(&req.get_ref().lease_id)?;
        Ok(Response::new(pb::DeallocateLeaseResponse { released }))
    }

    async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let holder = Some(req.get_ref().holder.as_str()).filter(|h| !h.is_empty());
        let leases = self
            .agent
            .leases(holder)
            .into_iter()
            .map(lease_pb)
            .collect();
        Ok(Response::new(pb::ListLeasesResponse { leases }))
    }

    async fn run_job(
        &self,
        req: Request<pb::RunJobRequest>,
    ) -> Result<Response<pb::RunJobResponse>, Status> {
        self.authorize(methods::RUN_JOB, &req)?;
        let r = req.into_inner();
        let spec: JobSpec = borsh::from_slice(&r.spec)
            .map_err(|e| Status::invalid_argument(format!("spec is not a borsh JobSpec: {e}")))?;
        let runtime: Runtime = if r.runtime.is_empty() {
            Runtime::default()
        } else {
            borsh::from_slice(&r.runtime).map_err(|e| {
                Status::invalid_argument(format!("runtime is not a borsh Runtime: {e}"))
            })?
        };
        let started = self.agent.run_job(JobRequest {
            job_id: r.job_id,
            customer: r.customer,
            spec,
            runtime,
            input: r.input,
            lease_id: Some(r.lease_id).filter(|s| !s.is_empty()),
            // RunJobRequest carries no provider yet; the scheduler places by `serves`.
            provider: None,
            attempt: r.attempt,
        })?;
        Ok(Response::new(pb::RunJobResponse {
            job_id: started.job_id,
            gpu_indexes: started.gpu_indexes,
            gpu_uuids: started.gpu_uuids,
            phase: started.phase.as_str().into(),
            message: started.message,
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        self.authorize(methods::CANCEL_JOB, &req)?;
        let (cancelled, phase) = self
            .agent
            .cancel_job(&req.get_ref().job_id, "cancelled by the scheduler")?;
        Ok(Response::new(pb::CancelJobResponse {
            cancelled,
            phase: phase.as_str().into(),
        }))
    }

    type WatchJobStream = ReceiverStream<Result<pb::JobEvent, Status>>;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let mut rx = self.agent.watch_job(&req.get_ref().job_id)?;
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let ev = rx.borrow_and_update().clone();
                let last = ev.phase.is_final();
                if tx.send(Ok(event_pb(ev))).await.is_err() || last {
                    break;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobResult>, Status> {
        let r = self.agent.job(&req.get_ref().job_id)?;
        let receipt = match &r.receipt {
            Some(rc) => borsh::to_vec(rc).map_err(|e| Status::internal(e.to_string()))?,
            None => Vec::new(),
        };
        Ok(Response::new(pb::JobResult {
            job_id: r.job_id,
            phase: r.phase.as_str().into(),
            progress_percent: r.progress,
            message: r.message,
            exit_code: r.exit_code,
            receipt,
            stdout: Some(captured_pb(r.stdout)),
            stderr: Some(captured_pb(r.stderr)),
            outputs: r
                .outputs
                .into_iter()
                .map(|f| pb::OutputFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256.to_hex(),
                })
                .collect(),
            output_digest: r.output_digest.map(|d| d.to_hex()).unwrap_or_default(),
            gpu_indexes: r.gpu_indexes,
            lease_id: r.lease_id.unwrap_or_default(),
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms.unwrap_or(0),
            customer: r.customer,
        }))
    }

    async fn list_jobs(
        &self,
        _req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Ok(Response::new(pb::ListJobsResponse {
            jobs: self.agent.list_jobs().into_iter().map(event_pb).collect(),
        }))
    }

    async fn fetch_output(
        &self,
        req: Request<pb::FetchOutputRequest>,
    ) -> Result<Response<pb::FetchOutputResponse>, Status> {
        let r = req.into_inner();
        let agent = self.agent.clone();
        let (data, sha) =
            tokio::task::spawn_blocking(move || agent.read_output(&r.job_id, &r.path, r.max_bytes))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::FetchOutputResponse {
            size: data.len() as u64,
            data,
            sha256: sha.to_hex(),
        }))
    }

    async fn get_metrics_history(
        &self,
        req: Request<pb::MetricsHistoryRequest>,
    ) -> Result<Response<pb::MetricsHistory>, Status> {
        let r = req.into_inner();
        let period = if r.period.is_empty() {
            "1h"
        } else {
            r.period.as_str()
        };
        let period_ms = parse_period_ms(period).ok_or_else(|| {
            Status::invalid_argument(format!("period {period:?} is not like 5m, 1h or 24h"))
        })?;
        let now = now_ms();
        let inv = self.agent.inventory();
        let gpus = inv
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, g)| r.gpu_index.is_none_or(|i| i == g.reading.index))
            .map(|(pos, g)| pb::GpuHistory {
                index: g.reading.index,
                uuid: g.reading.uuid.clone(),
                samples: self
                    .agent
                    .history()
                    .query(pos, now, period_ms, r.max_points as usize)
                    .into_iter()
                    .map(|s| pb::MetricsSample {
                        at_ms: s.at_ms,
                        utilization_percent: s.utilization_percent,
                        memory_used_mib: s.memory_used_mib,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::MetricsHistory {
            gpus,
            simulated: inv.simulated,
            interval_ms: self.agent.history().interval_ms(),
        }))
    }

    async fn stress_memory(
        &self,
        req: Request<pb::StressMemoryRequest>,
    ) -> Result<Response<pb::StressMemoryResponse>, Status> {
        self.authorize(methods::STRESS_MEMORY, &req)?;
        let r = req.into_inner();
        let res = self
            .agent
            .stress_memory(r.gpu_index, r.memory_mib, r.passes)
            .await?;
        let rep = res.report;
        Ok(Response::new(pb::StressMemoryResponse {
            gpu_index: res.gpu_index,
            uuid: res.uuid,
            allocated_mib: rep.allocated_bytes / (1024 * 1024),
            passes: rep.passes,
            fill_seconds: rep.fill_seconds,
            bandwidth_gib_per_s: rep.bandwidth_gib_per_s,
            verified: rep.verified,
            nvml_used_before_mib: res.nvml_used_before_mib,
            nvml_used_during_mib: rep.during.unwrap_or(0),
            message: if rep.verified {
                "memory allocated, filled and read back".into()
            } else {
                "memory allocated and filled, but the read-back did not match the pattern".into()
            },
        }))
    }
}
