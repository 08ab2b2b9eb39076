//! The scheduler library running inside the operator (on the leader only): it follows the
//! chain, places submitted jobs on GPU agents found by [`crate::agents::PodAgents`], records
//! assignments and results on chain, and settles or refunds. The AIJob reconciler reads its
//! per-job records (agent, progress, settlement) through [`SchedulerHandle`].

use crate::context::{JobTracker, TrackedJob};
use aitbc_scheduler::{AgentSource, Scheduler, SchedulerConfig};
use async_trait::async_trait;
use parking_lot::RwLock;
use std::sync::Arc;

/// The running scheduler, once it has started.
#[derive(Default)]
pub struct SchedulerHandle(RwLock<Option<Arc<Scheduler>>>);

impl SchedulerHandle {
    pub fn set(&self, s: Arc<Scheduler>) {
        *self.0.write() = Some(s);
    }
    pub fn get(&self) -> Option<Arc<Scheduler>> {
        self.0.read().clone()
    }
}

#[async_trait]
impl JobTracker for SchedulerHandle {
    fn job(&self, job_id: &str) -> Option<TrackedJob> {
        let s = self.get()?;
        let state = s.state.lock();
        let r = state.jobs.get(job_id)?;
        Some(TrackedJob {
            agent_id: r.agent_id.clone(),
            progress: r.progress,
            phase: r.phase.as_str().to_string(),
            settlement_tx: r.settlement_tx.clone(),
            refund_tx: r.refund_tx.clone(),
            message: r.message.clone(),
        })
    }

    async fn cancel(&self, job_id: &str) {
        if let Some(s) = self.get() {
            aitbc_scheduler::dispatch::cancel_on_agent(&s, job_id).await;
        }
    }
}

/// Starts the scheduler with `config` and `agents`, publishes it in `handle`, and runs it until
/// `shutdown`.
pub async fn run(
    handle: Arc<SchedulerHandle>,
    config: SchedulerConfig,
    agents: Arc<dyn AgentSource>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), aitbc_scheduler::SchedulerError> {
    let s = Scheduler::new(config, agents).await?;
    handle.set(s.clone());
    tracing::info!(chain = %s.chain_id, "scheduler started");
    s.run(shutdown).await
}
