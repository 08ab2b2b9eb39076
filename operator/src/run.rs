//! `aitbc-operator run`: health/metrics server, leader election, then the five controllers and
//! the scheduler.

use crate::agents::PodAgents;
use crate::chain::{ChainProvider, KubeChains};
use crate::context::{Config, Context, KubeEvents};
use crate::controllers::{aijob, bid, error_policy, instrumented, listing, node, wallet};
use crate::http::Health;
use crate::keys::ensure_key_secret;
use crate::leader::{self, LeaderConfig};
use crate::metrics::Metrics;
use crate::scheduler::SchedulerHandle;
use aitbc_crds::{AiJob, Bid, Node, ServiceListing, Wallet};
use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Chain gRPC endpoint; default: the client Service of the first Node in each namespace.
    #[arg(long, env = "AITBC_CHAIN_ENDPOINT")]
    pub chain_endpoint: Option<String>,
    /// Namespace the operator runs in (Lease, scheduler key Secret).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's identity in leader election.
    #[arg(long, env = "POD_NAME", default_value = "aitbc-operator")]
    pub pod_name: String,
    /// Watch only these namespaces (comma-separated; default: all namespaces). With a list the
    /// operator needs Roles in those namespaces only, no ClusterRole.
    #[arg(long, env = "AITBC_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// Namespace of the gpu-agent DaemonSet pods (default: all namespaces).
    #[arg(long, env = "AITBC_AGENT_NAMESPACE")]
    pub agent_namespace: Option<String>,
    /// HTTP address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "AITBC_OPERATOR_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub http_listen: SocketAddr,
    /// Secret (in the operator's namespace) holding the scheduler key; created when missing.
    #[arg(
        long,
        env = "AITBC_SCHEDULER_SECRET",
        default_value = "aitbc-scheduler-key"
    )]
    pub scheduler_secret: String,
    /// Writable state directory; the scheduler keeps its job records in `<dir>/scheduler`
    /// (rebuilt from the chain when lost).
    #[arg(
        long,
        env = "AITBC_STATE_DIR",
        default_value = "/var/lib/aitbc-operator"
    )]
    pub state_dir: PathBuf,
    /// Label selector of the gpu-agent DaemonSet pods.
    #[arg(long, env = "AITBC_GPU_AGENT_SELECTOR", default_value = crate::agents::AGENT_SELECTOR)]
    pub gpu_agent_selector: String,
    /// Chain id the scheduler expects; it does not start against another chain.
    #[arg(long, env = "AITBC_CHAIN_ID")]
    pub chain_id: Option<String>,
    /// Do not run the scheduler in this process.
    #[arg(long, env = "AITBC_NO_SCHEDULER")]
    pub no_scheduler: bool,
    /// Leader election over a Lease (turn off only with a single replica).
    #[arg(long, env = "AITBC_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease in the operator's namespace.
    #[arg(
        long,
        env = "AITBC_LEADER_ELECTION_LEASE",
        default_value = "aitbc-operator-leader"
    )]
    pub lease_name: String,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (no kubeconfig or in-cluster config)")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_listen))?;
    tracing::info!(addr = %args.http_listen, "serving /healthz /readyz /metrics");
    tokio::spawn(crate::http::serve(
        listener,
        health.clone(),
        metrics.clone(),
    ));

    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.namespace);
    let lcfg = LeaderConfig {
        lease_name: args.lease_name.clone(),
        identity: args.pod_name.clone(),
        lease_duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    };
    if args.leader_election {
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(lease = %lcfg.lease_name, identity = %lcfg.identity, "waiting to become the leader");
        leader::acquire(&leases, &lcfg).await;
    }
    metrics.leader.set(1);
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(identity = %lcfg.identity, "leading: starting controllers");

    let handle = Arc::new(SchedulerHandle::default());
    let reporter = Reporter {
        controller: "aitbc-operator".into(),
        instance: Some(args.pod_name.clone()),
    };
    let chains = Arc::new(KubeChains::new(client.clone(), args.chain_endpoint.clone()));
    let ctx = Arc::new(Context::new(
        client.clone(),
        chains.clone(),
        Arc::new(KubeEvents(Recorder::new(client.clone(), reporter))),
        handle.clone(),
        metrics.clone(),
        Config {
            operator_namespace: args.namespace.clone(),
            scheduler_secret: args.scheduler_secret.clone(),
            ..Config::default()
        },
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !args.no_scheduler {
        tokio::spawn(scheduler_loop(
            client.clone(),
            chains.clone(),
            handle.clone(),
            args.clone(),
            stop_rx.clone(),
        ));
    }

    let scopes = watch_scopes(&args.watch_namespace);
    let controllers = futures::future::join_all(
        scopes
            .iter()
            .map(|ns| controllers(client.clone(), ctx.clone(), ns.as_deref())),
    );
    let result = if !args.leader_election {
        controllers.await;
        Ok(())
    } else {
        tokio::select! {
            _ = controllers => Ok(()),
            _ = leader::hold(&leases, &lcfg) => Err(anyhow::anyhow!("lost the leader Lease; exiting so that another replica leads")),
        }
    };
    metrics.leader.set(0);
    let _ = stop_tx.send(true);
    result
}

/// Pure: the namespaces to run controllers for (`None`: all namespaces, one cluster-wide watch).
pub fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let mut v: Vec<String> = namespaces
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    v.sort();
    v.dedup();
    if v.is_empty() {
        vec![None]
    } else {
        v.into_iter().map(Some).collect()
    }
}

async fn controllers(client: Client, ctx: Arc<Context>, ns: Option<&str>) {
    let wc = watcher::Config::default;
    let nodes = Controller::new(api::<Node>(&client, ns), wc())
        .owns(api::<StatefulSet>(&client, ns), wc())
        .shutdown_on_signal()
        .run(
            |o, c| instrumented(o, c, node::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let wallets = Controller::new(api::<Wallet>(&client, ns), wc())
        .shutdown_on_signal()
        .run(
            |o, c| instrumented(o, c, wallet::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let listings = Controller::new(api::<ServiceListing>(&client, ns), wc())
        .watches(api::<Bid>(&client, ns), wc(), |b: Bid| {
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            b.spec
                .listing
                .clone()
                .map(|l| ObjectRef::<ServiceListing>::new(&l).within(&ns))
        })
        .shutdown_on_signal()
        .run(
            |o, c| instrumented(o, c, listing::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let bids = Controller::new(api::<Bid>(&client, ns), wc())
        .shutdown_on_signal()
        .run(
            |o, c| instrumented(o, c, bid::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let jobs = Controller::new(api::<AiJob>(&client, ns), wc())
        .shutdown_on_signal()
        .run(
            |o, c| instrumented(o, c, aijob::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    tokio::join!(nodes, wallets, listings, bids, jobs);
}

/// Runs the scheduler once the chain is reachable; restarts it after a failure.
async fn scheduler_loop(
    client: Client,
    chains: Arc<KubeChains>,
    handle: Arc<SchedulerHandle>,
    args: RunArgs,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let agents = Arc::new(PodAgents::new(
        client.clone(),
        args.agent_namespace.as_deref(),
        &args.gpu_agent_selector,
    ));
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = async {
            let endpoint = chains
                .endpoint(&args.namespace, None)
                .await
                .map_err(|e| e.to_string())?;
            let (key, _) = ensure_key_secret(
                &secrets,
                &args.namespace,
                &args.scheduler_secret,
                crate::keys::scheduler_key_labels(),
            )
            .await
            .map_err(|e| e.to_string())?;
            if let Some(expected) = &args.chain_id {
                let chain = chains
                    .chain(&args.namespace, None)
                    .await
                    .map_err(|e| e.to_string())?;
                let actual = chain.info().await.map_err(|e| e.to_string())?.chain_id;
                if &actual != expected {
                    return Err(format!(
                        "the chain at {endpoint} is {actual}, not {expected} (AITBC_CHAIN_ID)"
                    ));
                }
            }
            let config = aitbc_scheduler::SchedulerConfig::new(
                endpoint,
                key.secret_hex(),
                args.state_dir.join("scheduler"),
            );
            let mut rx = stop.clone();
            crate::scheduler::run(handle.clone(), config, agents.clone(), async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "scheduler not running; retrying in 10s"),
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_custody_watch_namespaces_scope_the_controllers() {
        assert_eq!(watch_scopes(&[]), [None]);
        assert_eq!(watch_scopes(&["".into()]), [None]);
        assert_eq!(
            watch_scopes(&["b".into(), "a".into(), "b".into()]),
            [Some("a".to_string()), Some("b".to_string())]
        );
    }
}
