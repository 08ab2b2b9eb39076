//! What every reconciler shares: the Kubernetes client, the chain, the event sink, the
//! scheduler's view of jobs, metrics, and one lock per signing key (nonces are sequential).

use crate::chain::{ChainApi, ChainProvider};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use aitbc_protocol::{Address, Amount};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

/// Field manager of everything the operator writes.
pub const MANAGER: &str = "aitbc-operator";

/// Operator settings the reconcilers use.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace the operator runs in (holds the scheduler key Secret).
    pub operator_namespace: String,
    /// Secret of the scheduler key.
    pub scheduler_secret: String,
    /// AIT the scheduler key gets at genesis, for its transaction fees.
    pub scheduler_genesis_funds: Amount,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            operator_namespace: "default".into(),
            scheduler_secret: "aitbc-scheduler-key".into(),
            scheduler_genesis_funds: Amount::from_ait(10_000).unwrap_or(Amount::ZERO),
        }
    }
}

/// Where events go: the Kubernetes Recorder in the operator, a list in tests.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    );
}

pub struct KubeEvents(pub Recorder);

#[async_trait]
impl EventSink for KubeEvents {
    async fn publish(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.0.publish(&ev, object).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }
}

/// Events recorded in memory (tests, dry runs).
#[derive(Default)]
pub struct MemoryEvents(pub Mutex<Vec<(String, String)>>);

#[async_trait]
impl EventSink for MemoryEvents {
    async fn publish(
        &self,
        _object: &ObjectReference,
        _warning: bool,
        reason: &str,
        _action: &str,
        note: String,
    ) {
        self.0.lock().push((reason.to_string(), note));
    }
}

/// What the scheduler knows of a job beyond the chain: agent, progress, settlement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackedJob {
    pub agent_id: Option<String>,
    pub progress: u32,
    /// The scheduler's phase name (`running`, `settled`, …).
    pub phase: String,
    pub settlement_tx: Option<String>,
    pub refund_tx: Option<String>,
    pub message: String,
}

/// The scheduler as the AIJob reconciler sees it.
#[async_trait]
pub trait JobTracker: Send + Sync {
    fn job(&self, job_id: &str) -> Option<TrackedJob>;
    /// Stops the job on its agent (best effort).
    async fn cancel(&self, job_id: &str);
}

/// No scheduler (yet): the chain alone tells the job's state.
pub struct NoTracker;

#[async_trait]
impl JobTracker for NoTracker {
    fn job(&self, _job_id: &str) -> Option<TrackedJob> {
        None
    }
    async fn cancel(&self, _job_id: &str) {}
}

pub struct Context {
    pub client: Client,
    pub chains: Arc<dyn ChainProvider>,
    pub events: Arc<dyn EventSink>,
    pub jobs: Arc<dyn JobTracker>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    locks: Mutex<HashMap<Address, Arc<tokio::sync::Mutex<()>>>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        chains: Arc<dyn ChainProvider>,
        events: Arc<dyn EventSink>,
        jobs: Arc<dyn JobTracker>,
        metrics: Arc<Metrics>,
        config: Config,
    ) -> Context {
        Context {
            client,
            chains,
            events,
            jobs,
            metrics,
            config,
            locks: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Consecutive failures of the object `key` so far (and counts this one).
    pub fn failure(&self, key: &str) -> u32 {
        let mut f = self.failures.lock();
        let n = f.entry(key.to_string()).or_insert(0);
        let before = *n;
        *n = n.saturating_add(1);
        before
    }

    pub fn reset_failures(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// The lock a reconciler holds while it picks a nonce for `address` and records/submits.
    pub fn key_lock(&self, address: &Address) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(*address).or_default().clone()
    }

    pub async fn chain(&self, namespace: &str, node: Option<&str>) -> Result<Arc<dyn ChainApi>> {
        self.chains.chain(namespace, node).await
    }

    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        self.events
            .publish(&obj.object_ref(&()), false, reason, action, note.into())
            .await;
    }

    pub async fn warning<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        self.events
            .publish(&obj.object_ref(&()), true, reason, action, note.into())
            .await;
    }
}

/// Writes `status` of `obj` (server-side apply on the status subresource: fields the operator
/// no longer sets are removed).
pub async fn patch_status<K, S>(client: &Client, obj: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize,
{
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("resource without a namespace".into()))?;
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// RFC 3339 now, for conditions.
pub fn now() -> String {
    format!("{:.0}", k8s_openapi::jiff::Timestamp::now())
}
