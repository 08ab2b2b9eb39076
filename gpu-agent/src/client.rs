//! Client helper for the scheduler and the CLI: signs mutating calls with the caller's key.

use crate::auth::{methods, sign_request};
use aitbc_protocol::agent_pb as pb;
use aitbc_protocol::agent_pb::agent_client::AgentClient as RawClient;
use aitbc_protocol::receipt::SignedJobReceipt;
use aitbc_protocol::tx::{JobSpec, Runtime};
use aitbc_protocol::Keypair;
use tonic::transport::Channel;
use tonic::Status;

/// Largest response the client accepts (FetchOutput returns whole files).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// A connection to one agent, signing mutating calls with `key` (a scheduler key the agent
/// was configured with via `--scheduler-key`).
#[derive(Clone)]
pub struct AgentClient {
    inner: RawClient<Channel>,
    key: Keypair,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid agent endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("connecting to the agent: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Decodes a receipt from `JobResult.receipt` and checks its signature. Whether the signing key
/// is the agent assigned to the job is for the caller (and the chain) to check.
pub fn decode_receipt(bytes: &[u8]) -> Result<SignedJobReceipt, Status> {
    let r: SignedJobReceipt = borsh::from_slice(bytes)
        .map_err(|e| Status::data_loss(format!("receipt is not a borsh SignedJobReceipt: {e}")))?;
    r.verify()
        .map_err(|e| Status::data_loss(format!("receipt signature: {e}")))?;
    Ok(r)
}

impl AgentClient {
    /// Connects to `endpoint` (e.g. `http://10.0.0.5:7070`).
    pub async fn connect(endpoint: impl Into<String>, key: Keypair) -> Result<Self, ConnectError> {
        let endpoint = endpoint.into();
        let channel = Channel::from_shared(endpoint.clone())
            .map_err(|e| ConnectError::Endpoint(endpoint, e.to_string()))?
            .connect()
            .await?;
        Ok(Self::new(channel, key))
    }

    pub fn new(channel: Channel, key: Keypair) -> Self {
        AgentClient {
            inner: RawClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
            key,
        }
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&mut self) -> &mut RawClient<Channel> {
        &mut self.inner
    }

    pub async fn inventory(&mut self) -> Result<pb::Inventory, Status> {
        Ok(self
            .inner
            .get_inventory(pb::GetInventoryRequest {})
            .await?
            .into_inner())
    }

    pub async fn status(&mut self) -> Result<pb::AgentStatus, Status> {
        Ok(self
            .inner
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner())
    }

    /// Leases `gpus` GPUs with at least `memory_mib` together for `holder` (an address).
    /// `lease_id` (e.g. an accepted bid's id) makes the call idempotent.
    pub async fn allocate_lease(
        &mut self,
        holder: &str,
        gpus: u32,
        memory_mib: u64,
        duration_secs: u64,
        lease_id: Option<&str>,
    ) -> Result<pb::Lease, Status> {
        let msg = pb::AllocateLeaseRequest {
            holder: holder.into(),
            gpus,
            memory_mib,
            duration_secs,
            lease_id: lease_id.unwrap_or_default().into(),
        };
        Ok(self
            .inner
            .allocate_lease(sign_request(&self.key, methods::ALLOCATE_LEASE, msg))
            .await?
            .into_inner())
    }

    pub async fn deallocate_lease(&mut self, lease_id: &str) -> Result<bool, Status> {
        let msg = pb::DeallocateLeaseRequest {
            lease_id: lease_id.into(),
        };
        Ok(self
            .inner
            .deallocate_lease(sign_request(&self.key, methods::DEALLOCATE_LEASE, msg))
            .await?
            .into_inner()
            .released)
    }

    pub async fn list_leases(&mut self, holder: Option<&str>) -> Result<Vec<pb::Lease>, Status> {
        let msg = pb::ListLeasesRequest {
            holder: holder.unwrap_or_default().into(),
        };
        Ok(self.inner.list_leases(msg).await?.into_inner().leases)
    }

    /// Starts a job; returns once its process has started (phase `running`) or failed to.
    pub async fn run_job(
        &mut self,
        job_id: &str,
        customer: &str,
        spec: &JobSpec,
        runtime: &Runtime,
        input: Vec<u8>,
        lease_id: Option<&str>,
    ) -> Result<pb::RunJobResponse, Status> {
        self.run_job_attempt(job_id, customer, spec, runtime, input, lease_id, 0)
            .await
    }

    /// [`Self::run_job`] for the chain's assignment `attempt` of the job, which the agent signs
    /// into the job's receipt (the chain refuses a receipt of another attempt).
    #[allow(clippy::too_many_arguments)]
    pub async fn run_job_attempt(
        &mut self,
        job_id: &str,
        customer: &str,
        spec: &JobSpec,
        runtime: &Runtime,
        input: Vec<u8>,
        lease_id: Option<&str>,
        attempt: u32,
    ) -> Result<pb::RunJobResponse, Status> {
        let mut msg = run_job_request(job_id, customer, spec, runtime, input, lease_id)?;
        msg.attempt = attempt;
        Ok(self
            .inner
            .run_job(sign_request(&self.key, methods::RUN_JOB, msg))
            .await?
            .into_inner())
    }

    pub async fn cancel_job(&mut self, job_id: &str) -> Result<pb::CancelJobResponse, Status> {
        let msg = pb::CancelJobRequest {
            job_id: job_id.into(),
        };
        Ok(self
            .inner
            .cancel_job(sign_request(&self.key, methods::CANCEL_JOB, msg))
            .await?
            .into_inner())
    }

    /// The job's current state, then each change, ending after its final state.
    pub async fn watch_job(
        &mut self,
        job_id: &str,
    ) -> Result<tonic::Streaming<pb::JobEvent>, Status> {
        Ok(self
            .inner
            .watch_job(pb::WatchJobRequest {
                job_id: job_id.into(),
            })
            .await?
            .into_inner())
    }

    /// Waits for the job's final event.
    pub async fn wait_job(&mut self, job_id: &str) -> Result<pb::JobEvent, Status> {
        let mut stream = self.watch_job(job_id).await?;
        let mut last = None;
        while let Some(ev) = stream.message().await? {
            last = Some(ev);
        }
        last.ok_or_else(|| Status::unavailable("job event stream ended without an event"))
    }

    pub async fn get_job(&mut self, job_id: &str) -> Result<pb::JobResult, Status> {
        Ok(self
            .inner
            .get_job(pb::GetJobRequest {
                job_id: job_id.into(),
            })
            .await?
            .into_inner())
    }

    /// The job's signed receipt (verified), or `None` while it runs.
    pub async fn receipt(&mut self, job_id: &str) -> Result<Option<SignedJobReceipt>, Status> {
        let r = self.get_job(job_id).await?;
        if r.receipt.is_empty() {
            return Ok(None);
        }
        decode_receipt(&r.receipt).map(Some)
    }

    /// Downloads one output file (refused when larger than `max_bytes`; 0 = the agent's cap).
    pub async fn fetch_output(
        &mut self,
        job_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, Status> {
        let msg = pb::FetchOutputRequest {
            job_id: job_id.into(),
            path: path.into(),
            max_bytes,
        };
        Ok(self.inner.fetch_output(msg).await?.into_inner().data)
    }

    pub async fn metrics_history(
        &mut self,
        period: &str,
        max_points: u32,
        gpu_index: Option<u32>,
    ) -> Result<pb::MetricsHistory, Status> {
        let msg = pb::MetricsHistoryRequest {
            period: period.into(),
            max_points,
            gpu_index,
        };
        Ok(self.inner.get_metrics_history(msg).await?.into_inner())
    }

    pub async fn stress_memory(
        &mut self,
        gpu_index: u32,
        memory_mib: u64,
        passes: u32,
    ) -> Result<pb::StressMemoryResponse, Status> {
        let msg = pb::StressMemoryRequest {
            gpu_index,
            memory_mib,
            passes,
        };
        Ok(self
            .inner
            .stress_memory(sign_request(&self.key, methods::STRESS_MEMORY, msg))
            .await?
            .into_inner())
    }
}

/// The `RunJobRequest` message (borsh spec and runtime), e.g. to sign it yourself.
pub fn run_job_request(
    job_id: &str,
    customer: &str,
    spec: &JobSpec,
    runtime: &Runtime,
    input: Vec<u8>,
    lease_id: Option<&str>,
) -> Result<pb::RunJobRequest, Status> {
    Ok(pb::RunJobRequest {
        job_id: job_id.into(),
        customer: customer.into(),
        spec: borsh::to_vec(spec).map_err(|e| Status::internal(e.to_string()))?,
        runtime: borsh::to_vec(runtime).map_err(|e| Status::internal(e.to_string()))?,
        input,
        lease_id: lease_id.unwrap_or_default().into(),
        attempt: 0,
    })
}
