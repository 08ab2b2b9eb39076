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
}

impl AgentView {
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

async fn probe(
    mut client: AgentClient,
) -> Result<(apb::AgentStatus, apb::Inventory, Vec<apb::Lease>), String> {
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

impl Registry {
    pub fn new(source: Arc<dyn AgentSource>, key: Keypair, loss_checks: u32) -> Registry {
        Registry {
            source,
            key,
            agents: RwLock::new(BTreeMap::new()),
            loss_checks: loss_checks.max(1),
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
                                AgentView {
                                    agent_id: ep.agent_id.clone(),
                                    endpoint: ep.endpoint.clone(),
                                    client: AgentClient::new(ch, self.key.clone()),
                                    key: None,
                                    record: None,
                                    healthy: false,
                                    failures: 0,
                                    last_error: "not checked yet".into(),
                                    last_seen_ms: 0,
                                    status: None,
                                    inventory: None,
                                    leases: vec![],
                                },
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
                    probes.spawn(async move { (id, probe(client).await) });
                }
            }
        }
        while let Some(joined) = probes.join_next().await {
            let Ok((id, result)) = joined else { continue };
            let mut agents = self.agents.write();
            let Some(a) = agents.get_mut(&id) else {
                continue;
            };
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
            if let (Some(records), Some(key)) = (&records, a.key) {
                a.record = records.iter().find(|r| r.key == key).cloned();
            }
        }
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
