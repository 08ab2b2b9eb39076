//! Agent registry: where agents are ([`AgentSource`]), whether they answer, what they have, and
//! which on-chain [`AgentRecord`] each one is (matched by key).

use crate::state::now_ms;
use aitbc_gpu_agent::AgentClient;
use aitbc_protocol::agent_pb as apb;
use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::AgentRecord;
use aitbc_protocol::{Keypair, PublicKey};
use async_trait::async_trait;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Where one agent's gRPC API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEndpoint {
    pub agent_id: String,
    pub endpoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("agent discovery failed: {0}")]
    Discovery(String),
}

/// Discovers agents. The binary uses [`StaticAgents`] (`--agent ID=URL`); the operator
/// implements it over Kubernetes (the gpu-agent DaemonSet's pods).
#[async_trait]
pub trait AgentSource: Send + Sync {
    async fn agents(&self) -> Result<Vec<AgentEndpoint>, SourceError>;
}

/// A fixed list of agents.
pub struct StaticAgents(pub Vec<AgentEndpoint>);

#[async_trait]
impl AgentSource for StaticAgents {
    async fn agents(&self) -> Result<Vec<AgentEndpoint>, SourceError> {
        Ok(self.0.clone())
    }
}

/// What the scheduler knows about one agent.
#[derive(Clone)]
pub struct AgentView {
    pub agent_id: String,
    pub endpoint: String,
    pub client: AgentClient,
    pub key: Option<PublicKey>,
    pub record: Option<AgentRecord>,
    pub healthy: bool,
    /// Consecutive failed health checks.
    pub failures: u32,
    pub last_error: String,
    pub last_seen_ms: u64,
    pub status: Option<apb::AgentStatus>,
    pub inventory: Option<apb::Inventory>,
    pub leases: Vec<apb::Lease>,
    /// Sequence number of the health check this view shows (a check started earlier than the
    /// one shown, finishing later, is dropped rather than overwrite newer state).
    pub probe_seq: u64,
}

impl AgentView {
    /// A configured agent before its first health check.
    fn unchecked(agent_id: &str, endpoint: &str, client: AgentClient) -> AgentView {
        AgentView {
            agent_id: agent_id.into(),
            endpoint: endpoint.into(),
            client,
            key: None,
            record: None,
            healthy: false,
            failures: 0,
            last_error: "not checked yet".into(),
            last_seen_ms: 0,
            status: None,
            inventory: None,
            leases: vec![],
            probe_seq: 0,
        }
    }

    /// Usable for new jobs: answering and registered on chain.
    pub fn placeable(&self) -> bool {
        self.healthy && self.record.is_some() && self.inventory.is_some()
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The set of agents, refreshed by [`Registry::refresh`].
pub struct Registry {
    source: Arc<dyn AgentSource>,
    key: Keypair,
    agents: RwLock<BTreeMap<String, AgentView>>,
    loss_checks: u32,
    probes_started: AtomicU64,
}

fn channel(endpoint: &str) -> Result<Channel, String> {
    let url = if endpoint.starts_with("http") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

async fn probe(mut client: AgentClient) -> Probe {
    let t = |e: tokio::time::error::Elapsed| e.to_string();
    let status = tokio::time::timeout(CALL_TIMEOUT, client.status())
        .await
        .map_err(t)?
        .map_err(|e| e.message().to_string())?;
    let inventory = tokio::time::timeout(CALL_TIMEOUT, client.inventory())
        .await
        .map_err(t)?
        .map_err(|e| e.message().to_string())?;
    let leases = tokio::time::timeout(CALL_TIMEOUT, client.list_leases(None))
        .await
        .map_err(t)?
        .map_err(|e| e.message().to_string())?;
    Ok((status, inventory, leases))
}

type Probe = Result<(apb::AgentStatus, apb::Inventory, Vec<apb::Lease>), String>;

/// Records the outcome of health check number `seq` in the agent's view, unless the view already
/// shows a check that started later.
fn apply_probe(a: &mut AgentView, id: &str, seq: u64, result: Probe) {
    if seq <= a.probe_seq {
        return;
    }
    a.probe_seq = seq;
    match result {
        Ok((status, inventory, leases)) => {
            let key = status.agent_key.parse::<PublicKey>().ok();
            if !a.healthy {
                tracing::info!(agent = %id, "agent is healthy");
            }
            a.key = key;
            a.healthy = true;
            a.failures = 0;
            a.last_error.clear();
            a.last_seen_ms = now_ms();
            a.status = Some(status);
            a.inventory = Some(inventory);
            a.leases = leases;
        }
        Err(e) => {
            a.failures = a.failures.saturating_add(1);
            if a.healthy {
                tracing::warn!(agent = %id, error = %e, "agent health check failed");
            }
            a.healthy = false;
            a.last_error = e;
        }
    }
}

impl Registry {
    pub fn new(source: Arc<dyn AgentSource>, key: Keypair, loss_checks: u32) -> Registry {
        Registry {
            source,
            key,
            agents: RwLock::new(BTreeMap::new()),
            loss_checks: loss_checks.max(1),
            probes_started: AtomicU64::new(0),
        }
    }

    /// Discovers agents, health-checks each (status, inventory, leases) and matches it to its
    /// on-chain record. Agents the source no longer lists are dropped.
    pub async fn refresh(&self, chain: &ChainClient) {
        let endpoints = match self.source.agents().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "agent discovery failed; keeping the known agents");
                return;
            }
        };
        let records = match chain.agents().await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "listing agents on chain failed");
                None
            }
        };
        // Clients for new or moved agents.
        let mut probes = tokio::task::JoinSet::new();
        {
            let mut agents = self.agents.write();
            agents.retain(|id, _| endpoints.iter().any(|e| &e.agent_id == id));
            for ep in &endpoints {
                let stale = agents
                    .get(&ep.agent_id)
                    .map(|a| a.endpoint != ep.endpoint)
                    .unwrap_or(true);
                if stale {
                    match channel(&ep.endpoint) {
                        Ok(ch) => {
                            agents.insert(
                                ep.agent_id.clone(),
                                AgentView::unchecked(
                                    &ep.agent_id,
                                    &ep.endpoint,
                                    AgentClient::new(ch, self.key.clone()),
                                ),
                            );
                        }
                        Err(e) => {
                            tracing::warn!(agent = %ep.agent_id, endpoint = %ep.endpoint, error = %e, "bad agent endpoint")
                        }
                    }
                }
                if let Some(a) = agents.get(&ep.agent_id) {
                    let client = a.client.clone();
                    let id = ep.agent_id.clone();
                    let seq = self.next_probe_seq();
                    probes.spawn(async move { (id, seq, probe(client).await) });
                }
            }
        }
        while let Some(joined) = probes.join_next().await {
            let Ok((id, seq, result)) = joined else {
                continue;
            };
            let mut agents = self.agents.write();
            let Some(a) = agents.get_mut(&id) else {
                continue;
            };
            apply_probe(a, &id, seq, result);
            if let (Some(records), Some(key)) = (&records, a.key) {
                a.record = records.iter().find(|r| r.key == key).cloned();
            }
        }
    }

    /// Health-checks one known agent now (after a call that changed it, such as a lease), so that
    /// the next read shows the change: read your own writes. Its on-chain record is kept.
    pub async fn refresh_agent(&self, agent_id: &str) {
        let Some(client) = self.get(agent_id).map(|a| a.client) else {
            return;
        };
        let seq = self.next_probe_seq();
        let result = probe(client).await;
        if let Some(a) = self.agents.write().get_mut(agent_id) {
            apply_probe(a, agent_id, seq, result);
        }
    }

    fn next_probe_seq(&self) -> u64 {
        self.probes_started.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn snapshot(&self) -> Vec<AgentView> {
        self.agents.read().values().cloned().collect()
    }

    pub fn get(&self, agent_id: &str) -> Option<AgentView> {
        self.agents.read().get(agent_id).cloned()
    }

    pub fn by_key(&self, key: &PublicKey) -> Option<AgentView> {
        self.agents
            .read()
            .values()
            .find(|a| a.key.as_ref() == Some(key))
            .cloned()
    }

    /// The agent failed `loss_checks` health checks in a row (or is not known at all).
    pub fn is_lost(&self, agent_id: &str) -> bool {
        self.agents
            .read()
            .get(agent_id)
            .map(|a| a.failures >= self.loss_checks)
            .unwrap_or(true)
    }

    /// Marks a failed call outside the periodic checks (speeds up loss detection).
    pub fn note_failure(&self, agent_id: &str, error: &str) {
        if let Some(a) = self.agents.write().get_mut(agent_id) {
            a.healthy = false;
            a.last_error = error.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> AgentView {
        let ch = channel("127.0.0.1:9").expect("endpoint");
        AgentView::unchecked(
            "a",
            "127.0.0.1:9",
            AgentClient::new(ch, Keypair::generate()),
        )
    }

    fn with_leases(n: usize) -> Probe {
        let lease = apb::Lease::default();
        Ok((
            apb::AgentStatus::default(),
            apb::Inventory::default(),
            vec![lease; n],
        ))
    }

    #[tokio::test]
    async fn a_check_that_started_earlier_never_overwrites_a_newer_one() {
        let mut a = view();
        // Check 2 (after an allocation) lands first, then the periodic check 1 that began before it.
        apply_probe(&mut a, "a", 2, with_leases(1));
        apply_probe(&mut a, "a", 1, with_leases(0));
        assert_eq!(a.leases.len(), 1);
        assert!(a.healthy);
        apply_probe(&mut a, "a", 3, Err("down".into()));
        assert!(!a.healthy);
        assert_eq!(a.last_error, "down");
        assert_eq!(a.failures, 1);
    }
}
