//! Node: one chain. Validator keys (one Secret per pod, created once), the genesis ConfigMap
//! (written once), the headless peer Service, the client Service, one single-replica
//! StatefulSet and PVC per chain pod (each mounting only its own key: `members.rs`), the
//! chain's NetworkPolicy and a PodDisruptionBudget that keeps a BFT quorum.

use super::members::{self, LegacyStep, Step};
use super::{condition, namespace, write_status, Managed};
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};
use crate::keys::{
    create_key_secret, default_wallet_secret_name, ensure_key_secret, public_key_from_secret,
    scheduler_key_labels, validator_key_labels, wallet_key_meta, wallet_secret_name, MANAGED_LABEL,
    MANAGED_VALUE,
};
use aitbc_crds::node::{NodeGenesis, DEFAULT_IMAGE};
use aitbc_crds::{Node, NodeSpec, NodeStatus, Wallet};
use aitbc_protocol::model::{Allocation, Genesis, GenesisValidator};
use aitbc_protocol::{Address, Amount, PublicKey};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

impl Managed for Node {
    type Status = NodeStatus;
    const CONTROLLER: &'static str = "node";
    fn status_or_default(&self) -> NodeStatus {
        self.status.clone().unwrap_or_default()
    }
    fn conditions(s: &mut NodeStatus) -> &mut Vec<aitbc_crds::Condition> {
        &mut s.conditions
    }
    fn pending(_: &NodeStatus) -> Option<aitbc_crds::PendingTx> {
        None
    }
    fn set_pending(_: &mut NodeStatus, _: Option<aitbc_crds::PendingTx>) {}
}

pub const RPC_PORT: i32 = 9100;
pub const P2P_PORT: i32 = 9200;
pub const HTTP_PORT: i32 = 9300;
/// Genesis file name in the ConfigMap.
pub const GENESIS_KEY: &str = "genesis.json";

pub fn replicas(spec: &NodeSpec) -> i32 {
    spec.replicas
        .unwrap_or(spec.validators)
        .max(spec.validators)
}

/// Faulty validators a chain of `n` tolerates: f = (n-1)/3.
pub fn fault_tolerance(validators: i32) -> i32 {
    (validators.max(1) - 1) / 3
}

/// Validators that must be up for the chain to commit: n - f.
pub fn quorum(validators: i32) -> i32 {
    validators - fault_tolerance(validators)
}

pub fn validator_secret_name(node: &str, i: i32) -> String {
    format!("{node}-validator-{i}")
}

pub fn genesis_configmap_name(node: &str) -> String {
    format!("{node}-genesis")
}

pub fn peers_service_name(node: &str) -> String {
    format!("{node}-peers")
}

pub fn chain_id(node: &Node) -> String {
    node.spec.chain_id.clone().unwrap_or_else(|| {
        let mut id = format!(
            "aitbc-{}-{}",
            node.namespace().unwrap_or_default(),
            node.name_any()
        );
        id.truncate(63);
        id.trim_end_matches('-').to_string()
    })
}

pub fn image(spec: &NodeSpec) -> String {
    spec.image
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

pub fn labels(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "aitbc-node".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), node.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "chain-node".to_string(),
        ),
        (MANAGED_LABEL.to_string(), MANAGED_VALUE.to_string()),
    ])
}

pub(crate) fn selector(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "aitbc-node".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), node.to_string()),
    ])
}

fn owner(node: &Node) -> Vec<OwnerReference> {
    node.controller_owner_ref(&()).into_iter().collect()
}

fn meta(node: &Node, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: node.namespace(),
        labels: Some(labels(&node.name_any())),
        owner_references: Some(owner(node)),
        ..Default::default()
    }
}

fn port(name: &str, p: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: p,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    }
}

/// Headless Service giving each pod a stable DNS name for p2p (`<name>-<i>.<name>-peers`).
/// Not-ready pods are published: validators must find each other before any block commits.
pub fn peers_service(node: &Node) -> Service {
    let name = node.name_any();
    Service {
        metadata: meta(node, peers_service_name(&name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(&name)),
            ports: Some(vec![port("p2p", P2P_PORT), port("rpc", RPC_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Client Service: the chain's gRPC API (9100) and HTTP status/metrics (9300) on ready pods.
pub fn client_service(node: &Node) -> Service {
    let name = node.name_any();
    Service {
        metadata: meta(node, name.clone()),
        spec: Some(ServiceSpec {
            selector: Some(selector(&name)),
            ports: Some(vec![port("rpc", RPC_PORT), port("http", HTTP_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Voluntary disruptions may take down at most f = (n-1)/3 validators at once.
pub fn pdb(node: &Node) -> PodDisruptionBudget {
    let name = node.name_any();
    PodDisruptionBudget {
        metadata: meta(node, name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(fault_tolerance(node.spec.validators))),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pure: the genesis of a new chain.
pub fn genesis(
    chain_id: &str,
    time_ms: u64,
    spec: &NodeSpec,
    validators: &[PublicKey],
    allocations: Vec<Allocation>,
    schedulers: Vec<Address>,
) -> Result<Genesis> {
    let g: &NodeGenesis = &spec.genesis;
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = allocations.iter().find(|a| !seen.insert(a.address)) {
        return Err(Error::InvalidSpec(format!(
            "spec.genesis.allocations: address {} ({}) is allocated twice",
            dup.address, dup.name
        )));
    }
    let min_fee = match &g.min_fee {
        Some(f) => f
            .parse()
            .map_err(|e| Error::InvalidSpec(format!("spec.genesis.minFee: {e}")))?,
        None => "0.001"
            .parse()
            .map_err(|e| Error::InvalidSpec(format!("default min fee: {e}")))?,
    };
    Ok(Genesis {
        chain_id: chain_id.to_string(),
        genesis_time_ms: time_ms,
        block_time_ms: spec.block_time_ms,
        min_fee,
        marketplace_fee_bps: g.marketplace_fee_bps.unwrap_or(250),
        default_job_deadline_blocks: g.job_deadline_blocks.unwrap_or(7200),
        schedulers,
        allocations,
        validators: validators
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisValidator {
                name: format!("validator-{i}"),
                key: *k,
                power: 1,
            })
            .collect(),
    })
}

/// The addresses of the spec's allocations; Wallet allocations get their key Secret created
/// here when the Wallet reconciler has not done it yet (same Secret name, never overwritten).
async fn allocations(ctx: &Context, node: &Node, ns: &str) -> Result<Vec<Allocation>> {
    let wallets: Api<Wallet> = Api::namespaced(ctx.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = Vec::new();
    for a in &node.spec.genesis.allocations {
        let amount: Amount = a
            .amount
            .parse()
            .map_err(|e| Error::InvalidSpec(format!("allocation {}: {e}", a.name)))?;
        let address = match (&a.address, &a.wallet) {
            (Some(addr), _) => addr
                .parse()
                .map_err(|e| Error::InvalidSpec(format!("allocation {}: {e}", a.name)))?,
            (None, Some(w)) => {
                let wallet = wallets.get_opt(w).await?;
                let secret = match &wallet {
                    Some(wallet) => wallet_secret_name(wallet),
                    None => default_wallet_secret_name(w),
                };
                let uid = wallet.as_ref().and_then(|w| w.uid());
                allocation_address(&secrets, ns, &secret, w, uid.as_deref()).await?
            }
            (None, None) => {
                return Err(Error::InvalidSpec(format!(
                    "allocation {} needs wallet or address",
                    a.name
                )))
            }
        };
        out.push(Allocation {
            name: a.name.clone(),
            address,
            amount,
        });
    }
    Ok(out)
}

/// The address a genesis allocation to Wallet `wallet` pays: its key Secret's (created for the
/// Wallet when missing; adopted by the Wallet of that name when it did not exist yet).
async fn allocation_address(
    secrets: &Api<Secret>,
    ns: &str,
    secret: &str,
    wallet: &str,
    uid: Option<&str>,
) -> Result<Address> {
    if let Some(s) = secrets.get_opt(secret).await? {
        return Ok(public_key_from_secret(&s)?.address());
    }
    let (labels, annotations) = wallet_key_meta(wallet, uid);
    let (key, _) = create_key_secret(secrets, ns, secret, labels, annotations).await?;
    Ok(key.address())
}

/// The genesis ConfigMap: read back when it exists (the chain's identity never changes),
/// otherwise built from the validator keys and written once.
async fn ensure_genesis(
    ctx: &Context,
    node: &Node,
    ns: &str,
    validators: &[PublicKey],
) -> Result<Genesis> {
    let name = genesis_configmap_name(&node.name_any());
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(cm) = cms.get_opt(&name).await? {
        return parse_genesis(&cm);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config.operator_namespace);
    let (sched, _) = ensure_key_secret(
        &secrets,
        &ctx.config.operator_namespace,
        &ctx.config.scheduler_secret,
        scheduler_key_labels(),
    )
    .await?;
    let mut allocs = allocations(ctx, node, ns).await?;
    if !ctx.config.scheduler_genesis_funds.is_zero() {
        allocs.push(Allocation {
            name: "scheduler".into(),
            address: sched.address(),
            amount: ctx.config.scheduler_genesis_funds,
        });
    }
    let mut schedulers = vec![sched.address()];
    for s in &node.spec.genesis.extra_schedulers {
        schedulers.push(
            s.parse()
                .map_err(|e| Error::InvalidSpec(format!("spec.genesis.extraSchedulers: {e}")))?,
        );
    }
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond().max(0) as u64;
    let g = genesis(
        &chain_id(node),
        now_ms,
        &node.spec,
        validators,
        allocs,
        schedulers,
    )?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.into()),
            labels: Some(labels_of(node)),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            GENESIS_KEY.to_string(),
            serde_json::to_string_pretty(&g)?,
        )])),
        immutable: Some(true),
        ..Default::default()
    };
    match cms.create(&PostParams::default(), &cm).await {
        Ok(_) => {
            ctx.event(
                node,
                "GenesisCreated",
                "CreateGenesis",
                format!("chain {} with {} validators", g.chain_id, validators.len()),
            )
            .await;
            Ok(g)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => parse_genesis(&cms.get(&name).await?),
        Err(e) => Err(e.into()),
    }
}

fn labels_of(node: &Node) -> BTreeMap<String, String> {
    labels(&node.name_any())
}

fn parse_genesis(cm: &ConfigMap) -> Result<Genesis> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(GENESIS_KEY))
        .ok_or_else(|| {
            Error::InvalidSpec(format!("ConfigMap {} has no {GENESIS_KEY}", cm.name_any()))
        })?;
    serde_json::from_str(text).map_err(|e| {
        Error::InvalidSpec(format!(
            "ConfigMap {} holds no valid genesis: {e}",
            cm.name_any()
        ))
    })
}

async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let mut body = serde_json::to_value(obj)?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// The public keys of the chain's pods, creating each pod's key Secret once. Only public keys
/// are read back (the `public-key` entry; derived from the secret only for Secrets of older
/// operators).
async fn member_keys(ctx: &Context, node: &Node, ns: &str, n: i32) -> Result<Vec<PublicKey>> {
    let name = node.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut keys = Vec::new();
    for i in 0..n {
        let secret_name = validator_secret_name(&name, i);
        if let Some(s) = secrets.get_opt(&secret_name).await? {
            keys.push(public_key_from_secret(&s)?);
            continue;
        }
        let (k, created) = create_key_secret(
            &secrets,
            ns,
            &secret_name,
            validator_key_labels(&name),
            BTreeMap::new(),
        )
        .await?;
        if created {
            ctx.event(
                node,
                "KeyCreated",
                "CreateKey",
                format!("node key {i} created ({})", k.public()),
            )
            .await;
        }
        keys.push(k.public());
    }
    Ok(keys)
}

/// Moves a chain of an older operator (one StatefulSet `<name>` whose pods mounted every key)
/// to the member layout: that StatefulSet is deleted in the foreground first. Returns whether
/// the member StatefulSets may run now.
async fn migrate_legacy(ctx: &Context, node: &Node, ns: &str) -> Result<bool> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let name = node.name_any();
    let legacy = api.get_opt(&name).await?;
    match members::legacy_step(legacy.as_ref(), node.uid().as_deref()) {
        LegacyStep::None => Ok(true),
        LegacyStep::Wait => Ok(false),
        LegacyStep::Delete => {
            api.delete(&name, &DeleteParams::foreground()).await?;
            ctx.event(
                node,
                "MigratingToOneKeyPerPod",
                "Migrate",
                format!("deleting StatefulSet {name} (every pod held every key); one StatefulSet per validator follows once its pods are gone, on the same PVCs and keys"),
            )
            .await;
            Ok(false)
        }
    }
}

/// Creates the PVC of each member that lacks one (an upgraded chain already has them).
async fn ensure_claims(ctx: &Context, node: &Node, ns: &str, n: i32) -> Result<()> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for i in 0..n {
        let claim = members::data_claim(node, i);
        if api.get_opt(&claim.name_any()).await?.is_some() {
            continue;
        }
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Applies the member StatefulSets by the rollout's plan; returns the number of ready pods and
/// whether a member still waits to roll.
async fn apply_members(
    ctx: &Context,
    node: &Node,
    ns: &str,
    listeners: &[PublicKey],
) -> Result<(i32, bool)> {
    let n = replicas(&node.spec);
    ensure_claims(ctx, node, ns, n).await?;
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let desired: Vec<StatefulSet> = (0..n)
        .map(|i| members::statefulset(node, i, listeners))
        .collect();
    let mut observed = Vec::new();
    for d in &desired {
        let current = api.get_opt(&d.name_any()).await?;
        if let Some(c) = &current {
            owned_by(c, node)?;
        }
        observed.push(current.as_ref().map(members::observe));
    }
    let hashes: Vec<String> = desired
        .iter()
        .map(|d| {
            d.annotations()
                .get(members::TEMPLATE_HASH_ANNOTATION)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let validators = node.spec.validators.max(1) as usize;
    let steps = members::rollout(
        &hashes,
        &observed,
        validators,
        quorum(node.spec.validators) as usize,
    );
    for (d, step) in desired.iter().zip(&steps) {
        if *step != Step::Hold {
            apply(ctx, ns, d).await?;
        }
    }
    let ready = observed.iter().flatten().filter(|o| o.ready).count() as i32;
    Ok((
        ready,
        steps.iter().any(|s| matches!(s, Step::Hold | Step::Update)),
    ))
}

/// A member StatefulSet that exists must be this Node's: never take over another's.
fn owned_by(s: &StatefulSet, node: &Node) -> Result<()> {
    let uid = node.uid().unwrap_or_default();
    if s.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    Err(Error::InvalidSpec(format!(
        "StatefulSet {} exists and does not belong to this Node; rename or delete it",
        s.name_any()
    )))
}

pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = namespace(&*node)?;
    let name = node.name_any();
    let n = replicas(&node.spec);
    let keys = member_keys(&ctx, &node, &ns, n).await?;
    let validators = node.spec.validators.max(1) as usize;
    let g = ensure_genesis(&ctx, &node, &ns, &keys[..validators.min(keys.len())]).await?;
    if g.validators.len() != validators {
        return Err(Error::InvalidSpec(format!(
            "the genesis has {} validators but spec.validators is {validators}; the validator set is fixed at genesis",
            g.validators.len()
        )));
    }
    apply(&ctx, &ns, &peers_service(&node)).await?;
    apply(&ctx, &ns, &client_service(&node)).await?;
    if node.spec.network_policy.enabled {
        let np = members::network_policy(&node, &ctx.config.operator_namespace);
        apply(&ctx, &ns, &np).await?;
    }
    apply(&ctx, &ns, &pdb(&node)).await?;
    let (ready, rolling) = if migrate_legacy(&ctx, &node, &ns).await? {
        apply_members(&ctx, &node, &ns, &keys[validators.min(keys.len())..]).await?
    } else {
        (0, true)
    };

    let mut st = node.status_or_default();
    let before = st.ready_replicas;
    st.observed_generation = node.metadata.generation;
    st.replicas = n;
    st.ready_replicas = ready;
    st.chain_id = Some(g.chain_id.clone());
    st.validators = g.validators.iter().map(|v| v.key.to_string()).collect();
    st.endpoint = Some(crate::chain::node_endpoint(&name, &ns));
    st.image = Some(image(&node.spec));
    if ready > 0 {
        let height = tokio::time::timeout(Duration::from_secs(3), async {
            let chain = ctx.chain(&ns, Some(&name)).await.ok()?;
            chain.info().await.ok().map(|i| i.height)
        })
        .await
        .ok()
        .flatten();
        st.height = height.or(st.height);
    }
    let q = quorum(node.spec.validators);
    let ok = ready >= q;
    let msg = format!("{ready}/{n} pods ready; {q} validators make a quorum");
    condition(
        &*node,
        &mut st,
        "Ready",
        ok,
        if ok {
            "QuorumReady"
        } else {
            "WaitingForQuorum"
        },
        msg.clone(),
    );
    if before < q && ok {
        ctx.event(&*node, "QuorumReady", "Observe", msg).await;
    }
    write_status(&ctx, &*node, &st).await?;
    Ok(Requeue::requeue(Duration::from_secs(if ok && !rolling {
        30
    } else {
        5
    })))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aitbc_crds::node::{GenesisAllocation, NodeResources, NodeStorage};
    use aitbc_protocol::Keypair;

    pub fn node(validators: i32, replicas: Option<i32>) -> Node {
        let mut n = Node::new(
            "aitbc",
            NodeSpec {
                validators,
                replicas,
                image: None,
                chain_id: None,
                block_time_ms: 500,
                storage: NodeStorage {
                    size: "5Gi".into(),
                    storage_class_name: Some("fast".into()),
                },
                resources: Some(NodeResources {
                    requests: BTreeMap::from([("cpu".into(), "250m".into())]),
                    limits: BTreeMap::new(),
                }),
                genesis: NodeGenesis {
                    allocations: vec![GenesisAllocation {
                        name: "genesis-ops".into(),
                        wallet: Some("genesis-ops".into()),
                        address: None,
                        amount: "1000000".into(),
                    }],
                    ..Default::default()
                },
                network_policy: Default::default(),
            },
        );
        n.metadata.namespace = Some("chain".into());
        n.metadata.uid = Some("uid-1".into());
        n
    }

    #[test]
    fn quorum_arithmetic() {
        assert_eq!((fault_tolerance(1), quorum(1)), (0, 1));
        assert_eq!((fault_tolerance(4), quorum(4)), (1, 3));
        assert_eq!((fault_tolerance(7), quorum(7)), (2, 5));
        assert_eq!(fault_tolerance(3), 0);
    }

    #[test]
    fn services_expose_rpc_and_peers() {
        let n = node(4, None);
        let peers = peers_service(&n);
        assert_eq!(peers.metadata.name.as_deref(), Some("aitbc-peers"));
        let ps = peers.spec.unwrap();
        assert_eq!(ps.cluster_ip.as_deref(), Some("None"));
        assert_eq!(ps.publish_not_ready_addresses, Some(true));
        assert!(ps.ports.unwrap().iter().any(|p| p.port == 9200));
        let client = client_service(&n);
        assert_eq!(client.metadata.name.as_deref(), Some("aitbc"));
        assert!(client
            .spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .any(|p| p.port == 9100 && p.name.as_deref() == Some("rpc")));
    }

    #[test]
    fn pdb_keeps_a_quorum() {
        let p = pdb(&node(4, None)).spec.unwrap();
        assert_eq!(p.max_unavailable, Some(IntOrString::Int(1)));
        let p = pdb(&node(7, Some(9))).spec.unwrap();
        assert_eq!(p.max_unavailable, Some(IntOrString::Int(2)));
        assert_eq!(
            pdb(&node(1, None)).spec.unwrap().max_unavailable,
            Some(IntOrString::Int(0))
        );
    }

    #[test]
    fn genesis_has_the_validators_allocations_and_scheduler() {
        let n = node(4, None);
        let keys: Vec<PublicKey> = (0..4).map(|_| Keypair::generate().public()).collect();
        let ops = Keypair::generate().address();
        let sched = Keypair::generate().address();
        let g = genesis(
            &chain_id(&n),
            1,
            &n.spec,
            &keys,
            vec![Allocation {
                name: "genesis-ops".into(),
                address: ops,
                amount: Amount::from_ait(1_000_000).unwrap(),
            }],
            vec![sched],
        )
        .unwrap();
        assert_eq!(g.chain_id, "aitbc-chain-aitbc");
        assert_eq!(g.validators.len(), 4);
        assert_eq!(g.validators[2].key, keys[2]);
        assert_eq!(g.schedulers, vec![sched]);
        assert_eq!(g.allocations[0].address, ops);
        assert_eq!(g.block_time_ms, 500);
        assert_eq!(g.min_fee, "0.001".parse().unwrap());
        let twice = vec![
            Allocation {
                name: "a".into(),
                address: ops,
                amount: Amount(1),
            },
            Allocation {
                name: "b".into(),
                address: ops,
                amount: Amount(2),
            },
        ];
        assert!(matches!(
            genesis("c", 1, &n.spec, &keys, twice, vec![sched]),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn key_custody_image_changes_change_the_template_hash_but_never_the_selector_or_the_claim() {
        let before = members::statefulset(&node(4, None), 1, &[]);
        let mut changed = node(4, None);
        changed.spec.image = Some("registry.example/aitbc-node:0.2.0".into());
        let after = members::statefulset(&changed, 1, &[]);
        let hash = |s: &StatefulSet| s.annotations()[members::TEMPLATE_HASH_ANNOTATION].clone();
        assert_ne!(hash(&before), hash(&after), "the rollout sees the change");
        let (b, a) = (before.spec, after.spec);
        assert_eq!(b.selector, a.selector, "the selector never changes");
        let claim = |s: &k8s_openapi::api::apps::v1::StatefulSetSpec| {
            s.template.spec.as_ref().unwrap().volumes.clone()
        };
        assert_eq!(claim(&b), claim(&a), "the PVC and key stay");
        assert_eq!(
            pdb(&node(4, None)).spec,
            pdb(&changed).spec,
            "the quorum budget depends on validators only"
        );
    }

    #[test]
    fn listener_replicas_never_fall_below_validators() {
        assert_eq!(replicas(&node(4, None).spec), 4);
        assert_eq!(replicas(&node(4, Some(6)).spec), 6);
        assert_eq!(replicas(&node(4, Some(2)).spec), 4);
    }
}
