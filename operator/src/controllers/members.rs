//! The pods of a chain. Each validator (and each listener) is its own single-replica
//! StatefulSet `<node>-validator-<i>` (`<node>-listener-<i>`) that mounts only its own key
//! Secret and its own PVC `data-<node>-<i>`: one compromised pod holds one key, never a quorum.
//! The StatefulSet keeps "at most one pod with this key" (a validator key running twice could
//! vote twice). Because Kubernetes rolls each StatefulSet on its own, the operator rolls them
//! one at a time ([`rollout`]); it also migrates a chain of older operators (one StatefulSet
//! `<node>` of n pods, each of which mounted every key) to this layout ([`legacy_step`]).

use super::node::{
    genesis_configmap_name, image, labels, peers_service_name, selector, GENESIS_KEY, HTTP_PORT,
    P2P_PORT, RPC_PORT,
};
use crate::podsecurity::{container_context, pod_context};
use aitbc_crds::Node;
use aitbc_protocol::PublicKey;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Annotation on each member StatefulSet: a digest of its pod template, so the rollout can tell
/// which members run an outdated template without comparing whole objects.
pub const TEMPLATE_HASH_ANNOTATION: &str = "aitbc.io/pod-template-hash";
/// Label with a member's index on its StatefulSet, pod and PVC.
pub const MEMBER_LABEL: &str = "aitbc.io/member";
/// Where a member's own key is mounted (one file, nothing else in the directory).
pub const KEY_FILE: &str = "/etc/aitbc/key/node.key";
/// Group that owns the data volume (fsGroup).
pub const FS_GROUP: i64 = 10001;

/// The StatefulSet (and, with `-0`, the pod) of member `i`.
pub fn member_name(node: &str, i: i32, validators: i32) -> String {
    let role = if i < validators {
        "validator"
    } else {
        "listener"
    };
    format!("{node}-{role}-{i}")
}

/// The PVC of member `i`: the name the StatefulSet of older operators gave it, so an upgraded
/// chain keeps its ledger.
pub fn data_claim_name(node: &str, i: i32) -> String {
    format!("data-{node}-{i}")
}

/// The p2p address of member `i` (its pod on the headless peer Service).
pub fn peer_address(node: &str, i: i32, validators: i32) -> String {
    format!(
        "{}-0.{}:{P2P_PORT}",
        member_name(node, i, validators),
        peers_service_name(node)
    )
}

/// Labels selecting member `i` only.
pub fn member_selector(node: &str, i: i32) -> BTreeMap<String, String> {
    let mut s = selector(node);
    s.insert(MEMBER_LABEL.into(), i.to_string());
    s
}

fn member_labels(node: &str, i: i32) -> BTreeMap<String, String> {
    let mut l = labels(node);
    l.insert(MEMBER_LABEL.into(), i.to_string());
    l
}

fn owner_meta(node: &Node, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: node.namespace(),
        labels: Some(labels),
        owner_references: Some(node.controller_owner_ref(&()).into_iter().collect()),
        ..Default::default()
    }
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

/// `aitbc-node run` arguments of member `i`: its own key file, every other validator as a peer,
/// and the listener keys admitted to the peer network.
pub fn node_args(node: &Node, i: i32, listeners: &[PublicKey]) -> Vec<String> {
    let name = node.name_any();
    let validators = node.spec.validators;
    let mut args: Vec<String> = [
        "run",
        "--genesis",
        "/etc/aitbc/genesis.json",
        "--key-file",
        KEY_FILE,
        "--data-dir",
        "/data",
        "--rpc-listen",
        "0.0.0.0:9100",
        "--p2p-listen",
        "0.0.0.0:9200",
        "--http-listen",
        "0.0.0.0:9300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peers: Vec<String> = (0..validators)
        .filter(|j| *j != i)
        .map(|j| peer_address(&name, j, validators))
        .collect();
    if !peers.is_empty() {
        args.extend(["--peer".to_string(), peers.join(",")]);
    }
    if !listeners.is_empty() {
        let keys: Vec<String> = listeners.iter().map(|k| k.to_string()).collect();
        args.extend(["--allow-peer".to_string(), keys.join(",")]);
    }
    args
}

fn probe(path: &str, delay: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        sub_path: sub_path.map(Into::into),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn node_container(node: &Node, i: i32, listeners: &[PublicKey]) -> Container {
    let spec = &node.spec;
    Container {
        name: "node".into(),
        image: Some(image(spec)),
        command: Some(vec!["aitbc-node".into()]),
        args: Some(node_args(node, i, listeners)),
        env: Some(vec![EnvVar {
            name: "AITBC_LOG_FORMAT".into(),
            value: Some("json".into()),
            ..Default::default()
        }]),
        ports: Some(vec![
            container_port("rpc", RPC_PORT),
            container_port("p2p", P2P_PORT),
            container_port("http", HTTP_PORT),
        ]),
        readiness_probe: Some(probe("/readyz", 2, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: spec.resources.as_ref().map(|r| ResourceRequirements {
            requests: quantities(&r.requests),
            limits: quantities(&r.limits),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount(
                "genesis",
                "/etc/aitbc/genesis.json",
                Some(GENESIS_KEY),
                true,
            ),
            mount("key", "/etc/aitbc/key", None, true),
            mount("data", "/data", None, false),
            mount("tmp", "/tmp", None, false),
        ]),
        security_context: Some(container_context()),
        ..Default::default()
    }
}

/// Member `i`'s volumes: the genesis, its own key Secret (one entry, 0400), its PVC, scratch.
fn volumes(node: &str, i: i32) -> Vec<Volume> {
    vec![
        Volume {
            name: "genesis".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: genesis_configmap_name(node),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "key".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(super::node::validator_secret_name(node, i)),
                items: Some(vec![KeyToPath {
                    key: aitbc_crds::wallet::SECRET_KEY_FIELD.into(),
                    path: "node.key".into(),
                    mode: Some(0o400),
                    ..Default::default()
                }]),
                default_mode: Some(0o400),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: data_claim_name(node, i),
                read_only: None,
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

/// The pod template of member `i`.
pub fn pod_template(node: &Node, i: i32, listeners: &[PublicKey]) -> PodTemplateSpec {
    let name = node.name_any();
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(member_labels(&name, i)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![node_container(node, i, listeners)],
            volumes: Some(volumes(&name, i)),
            security_context: Some(pod_context(FS_GROUP)),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        }),
    }
}

/// Pure: a short digest of a pod template.
pub fn template_hash(t: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    let mut hex = aitbc_protocol::Hash::domain("aitbc-operator/pod-template", &[&bytes]).to_hex();
    hex.truncate(16);
    hex
}

/// The single-replica StatefulSet of member `i`.
pub fn statefulset(node: &Node, i: i32, listeners: &[PublicKey]) -> StatefulSet {
    let name = node.name_any();
    let template = pod_template(node, i, listeners);
    let mut meta = owner_meta(
        node,
        member_name(&name, i, node.spec.validators),
        member_labels(&name, i),
    );
    meta.annotations = Some(BTreeMap::from([(
        TEMPLATE_HASH_ANNOTATION.to_string(),
        template_hash(&template),
    )]));
    StatefulSet {
        metadata: meta,
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(peers_service_name(&name)),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..Default::default()
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(member_selector(&name, i)),
                ..Default::default()
            },
            template,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The PVC of member `i` (created once, never owned: deleting the Node keeps the ledger).
pub fn data_claim(node: &Node, i: i32) -> PersistentVolumeClaim {
    let name = node.name_any();
    let storage = &node.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(data_claim_name(&name, i)),
            namespace: node.namespace(),
            labels: Some(member_selector(&name, i)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the operator saw of a member's StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The template digest it runs (none on objects of older operators).
    pub template_hash: Option<String>,
    /// Its pod is ready and runs its current template.
    pub ready: bool,
}

/// Pure: a member StatefulSet as the rollout sees it.
pub fn observe(s: &StatefulSet) -> Observed {
    let st = s.status.clone().unwrap_or_default();
    let generation = s.metadata.generation.unwrap_or(0);
    Observed {
        template_hash: s.annotations().get(TEMPLATE_HASH_ANNOTATION).cloned(),
        ready: st.observed_generation.unwrap_or(0) >= generation
            && st.ready_replicas.unwrap_or(0) >= 1
            && st.updated_replicas.unwrap_or(0) >= 1,
    }
}

/// What to do with one member this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// It does not exist: create it (a new chain starts every member at once).
    Create,
    /// It runs the desired template: apply (a no-op for the pod).
    Apply,
    /// It runs an outdated template and may roll now.
    Update,
    /// It runs an outdated template and waits for the others.
    Hold,
}

/// Pure: one member at a time rolls to a new template, and only while every other member is
/// ready, so a voluntary change never takes more than one validator down. A chain that has lost
/// its quorum (fewer than `quorum` of the first `validators` members ready) has nothing left
/// to protect: then every outdated member rolls at once (a fixed image can bring it back).
pub fn rollout(
    desired: &[String],
    observed: &[Option<Observed>],
    validators: usize,
    quorum: usize,
) -> Vec<Step> {
    let ready = |o: &Option<Observed>| o.as_ref().is_some_and(|o| o.ready);
    let ready_validators = observed
        .iter()
        .take(validators)
        .filter(|o| ready(o))
        .count();
    let chain_down = ready_validators < quorum;
    let mut steps: Vec<Option<Step>> = desired
        .iter()
        .zip(observed)
        .map(|(want, o)| match o {
            None => Some(Step::Create),
            Some(o) if o.template_hash.as_deref() == Some(want.as_str()) => Some(Step::Apply),
            Some(_) => None,
        })
        .collect();
    let mut rolled = false;
    for (i, step) in steps.iter_mut().enumerate() {
        if step.is_some() {
            continue;
        }
        let others_ready = observed.iter().enumerate().all(|(j, o)| j == i || ready(o));
        let go = chain_down || (!rolled && others_ready);
        rolled |= go;
        *step = Some(if go { Step::Update } else { Step::Hold });
    }
    steps.into_iter().map(|s| s.unwrap_or(Step::Hold)).collect()
}

/// What to do about the StatefulSet `<node>` of an older operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyStep {
    /// There is none (or it is not this Node's): go on with the member StatefulSets.
    None,
    /// Delete it, in the foreground (it goes only once its pods are gone), and wait.
    Delete,
    /// It is being deleted: wait until its pods have released the PVCs and the keys.
    Wait,
}

/// Pure: the migration step for `legacy`, the StatefulSet named like the Node, if any. Only one
/// owned by this very Node (its uid) is touched. The member StatefulSets start only once it is
/// gone, so no validator key ever runs in two pods at once and each PVC has one user.
pub fn legacy_step(legacy: Option<&StatefulSet>, node_uid: Option<&str>) -> LegacyStep {
    let Some(s) = legacy else {
        return LegacyStep::None;
    };
    let ours = node_uid.is_some_and(|uid| s.owner_references().iter().any(|o| o.uid == uid));
    match (ours, s.metadata.deletion_timestamp.is_some()) {
        (false, _) => LegacyStep::None,
        (true, false) => LegacyStep::Delete,
        (true, true) => LegacyStep::Wait,
    }
}

/// The chain's NetworkPolicy: its peer port only from its own pods; its RPC and HTTP ports from
/// the Node's namespace, the operator's namespace, and namespaces or pods labelled
/// `aitbc.io/chain-client: "true"`.
pub fn network_policy(node: &Node, operator_namespace: &str) -> NetworkPolicy {
    let name = node.name_any();
    let by_labels = |m: BTreeMap<String, String>| {
        Some(LabelSelector {
            match_labels: Some(m),
            ..Default::default()
        })
    };
    let client = BTreeMap::from([("aitbc.io/chain-client".to_string(), "true".to_string())]);
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let peers = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: by_labels(selector(&name)),
            ..Default::default()
        }]),
        ports: Some(vec![port(P2P_PORT)]),
    };
    let clients = NetworkPolicyIngressRule {
        from: Some(vec![
            NetworkPolicyPeer {
                pod_selector: Some(LabelSelector::default()),
                ..Default::default()
            },
            NetworkPolicyPeer {
                namespace_selector: by_labels(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    operator_namespace.to_string(),
                )])),
                ..Default::default()
            },
            NetworkPolicyPeer {
                namespace_selector: by_labels(client.clone()),
                ..Default::default()
            },
            NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector::default()),
                pod_selector: by_labels(client),
                ..Default::default()
            },
        ]),
        ports: Some(vec![port(RPC_PORT), port(HTTP_PORT)]),
    };
    NetworkPolicy {
        metadata: owner_meta(node, name.clone(), labels(&name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: by_labels(selector(&name)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![peers, clients]),
            ..Default::default()
        }),
    }
}

/// Everything the operator renders for `node` that runs or guards pods (the member
/// StatefulSets with placeholder listener keys, and the NetworkPolicy), for `aitbc-operator
/// render` and the chart check.
pub fn rendered_pod_objects(node: &Node, operator_namespace: &str) -> Vec<serde_json::Value> {
    let n = super::node::replicas(&node.spec);
    let listeners: Vec<PublicKey> = (node.spec.validators..n)
        .map(|_| aitbc_protocol::Keypair::generate().public())
        .collect();
    let typed = |v: serde_json::Value, api: &str, kind: &str| {
        let mut v = v;
        v["apiVersion"] = api.into();
        v["kind"] = kind.into();
        v
    };
    let mut out: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let s = serde_json::to_value(statefulset(node, i, &listeners)).unwrap_or_default();
            typed(s, "apps/v1", "StatefulSet")
        })
        .collect();
    if node.spec.network_policy.enabled {
        let np = serde_json::to_value(network_policy(node, operator_namespace)).unwrap_or_default();
        out.push(typed(np, "networking.k8s.io/v1", "NetworkPolicy"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::node::tests::node;
    use crate::podsecurity::restricted_violations;
    use aitbc_crds::node::DEFAULT_IMAGE;
    use aitbc_protocol::Keypair;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn pod(s: &StatefulSet) -> PodSpec {
        s.spec.clone().template.spec.unwrap()
    }

    fn secrets_mounted(p: &PodSpec) -> Vec<String> {
        p.volumes
            .iter()
            .flatten()
            .filter_map(|v| {
                let direct = v.secret.as_ref().and_then(|s| s.secret_name.clone());
                let projected = v.projected.as_ref().map(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .filter_map(|s| s.secret.as_ref().map(|s| s.name.clone()))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                direct.or(projected)
            })
            .collect()
    }

    #[test]
    fn key_custody_each_validator_pod_mounts_only_its_own_key() {
        let n = node(4, Some(5));
        let listener = Keypair::generate().public();
        for i in 0..5 {
            let s = statefulset(&n, i, &[listener]);
            let p = pod(&s);
            assert_eq!(
                secrets_mounted(&p),
                [format!("aitbc-validator-{i}")],
                "member {i} mounts exactly one Secret: its own key"
            );
            let key = p
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == "key")
                .unwrap();
            let items = key.secret.as_ref().unwrap().items.clone().unwrap();
            assert_eq!(items.len(), 1, "one entry of the Secret, the private key");
            assert_eq!(items[0].mode, Some(0o400));
            let args = p.containers[0].args.clone().unwrap().join(" ");
            assert!(args.contains(&format!("--key-file {KEY_FILE}")), "{args}");
            assert!(!args.contains("--key-dir"), "{args}");
            assert_eq!(s.spec.replicas, Some(1));
        }
    }

    #[test]
    fn key_custody_member_statefulsets_run_aitbc_node_with_genesis_probes_peers_and_their_pvc() {
        let n = node(4, Some(5));
        let listener = Keypair::generate().public();
        let s = statefulset(&n, 2, &[listener]);
        assert_eq!(s.metadata.name.as_deref(), Some("aitbc-validator-2"));
        assert_eq!(
            statefulset(&n, 4, &[]).metadata.name.as_deref(),
            Some("aitbc-listener-4")
        );
        let spec = s.spec.clone();
        assert_eq!(spec.service_name.as_deref(), Some("aitbc-peers"));
        assert_eq!(
            spec.selector.match_labels.unwrap()[MEMBER_LABEL],
            "2",
            "each StatefulSet selects its own pod only"
        );
        let p = pod(&s);
        let c = &p.containers[0];
        assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE));
        let args = c.args.clone().unwrap().join(" ");
        assert!(
            args.contains("--peer aitbc-validator-0-0.aitbc-peers:9200,aitbc-validator-1-0.aitbc-peers:9200,aitbc-validator-3-0.aitbc-peers:9200"),
            "every other validator is a peer: {args}"
        );
        assert!(
            args.ends_with(&format!("--allow-peer {listener}")),
            "{args}"
        );
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"],
            Quantity("250m".into())
        );
        let data = p
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            data.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-aitbc-2",
            "the PVC name of older operators' StatefulSet: an upgraded chain keeps its ledger"
        );
        let claim = data_claim(&n, 2);
        let cs = claim.spec.unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert!(
            claim.metadata.owner_references.is_none(),
            "the ledger outlives the Node"
        );
        assert_eq!(s.metadata.owner_references.unwrap()[0].kind, "Node");
        assert!(s.metadata.annotations.unwrap()[TEMPLATE_HASH_ANNOTATION].len() == 16);
    }

    #[test]
    fn key_custody_every_operator_pod_meets_restricted() {
        let n = node(4, Some(5));
        for i in 0..5 {
            let p = pod(&statefulset(&n, i, &[]));
            assert_eq!(
                restricted_violations(&p),
                Vec::<String>::new(),
                "member {i}"
            );
            assert_eq!(p.automount_service_account_token, Some(false));
        }
    }

    fn seen(hash: &str, ready: bool) -> Option<Observed> {
        Some(Observed {
            template_hash: Some(hash.into()),
            ready,
        })
    }

    #[test]
    fn key_custody_members_roll_one_at_a_time_while_the_others_are_ready() {
        let want: Vec<String> = (0..4).map(|_| "new".to_string()).collect();
        let all_old: Vec<_> = (0..4).map(|_| seen("old", true)).collect();
        assert_eq!(
            rollout(&want, &all_old, 4, 3),
            [Step::Update, Step::Hold, Step::Hold, Step::Hold]
        );
        let rolling = vec![
            seen("new", false),
            seen("old", true),
            seen("old", true),
            seen("old", true),
        ];
        assert_eq!(
            rollout(&want, &rolling, 4, 3),
            [Step::Apply, Step::Hold, Step::Hold, Step::Hold],
            "the next waits until the rolled one is ready"
        );
        let next = vec![
            seen("new", true),
            seen("old", true),
            seen("old", true),
            seen("old", true),
        ];
        assert_eq!(
            rollout(&want, &next, 4, 3),
            [Step::Apply, Step::Update, Step::Hold, Step::Hold]
        );
        let new_chain: Vec<Option<Observed>> = vec![None; 4];
        assert_eq!(rollout(&want, &new_chain, 4, 3), [Step::Create; 4]);
        let down = vec![
            seen("old", false),
            seen("old", false),
            seen("old", true),
            seen("old", true),
        ];
        assert_eq!(
            rollout(&want, &down, 4, 3),
            [Step::Update; 4],
            "a chain without quorum rolls everything"
        );
    }

    #[test]
    fn key_custody_the_legacy_statefulset_goes_first_and_only_if_it_is_this_nodes() {
        let n = node(4, None);
        let mut legacy = StatefulSet::default();
        legacy.metadata.name = Some("aitbc".into());
        assert_eq!(
            legacy_step(Some(&legacy), n.uid().as_deref()),
            LegacyStep::None
        );
        legacy.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-1".into(),
            ..Default::default()
        }]);
        assert_eq!(
            legacy_step(Some(&legacy), Some("uid-1")),
            LegacyStep::Delete
        );
        legacy.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(legacy_step(Some(&legacy), Some("uid-1")), LegacyStep::Wait);
        assert_eq!(legacy_step(None, Some("uid-1")), LegacyStep::None);
        assert_eq!(legacy_step(Some(&legacy), Some("uid-2")), LegacyStep::None);
    }

    #[test]
    fn key_custody_render_lists_every_member_and_the_policy() {
        let items = rendered_pod_objects(&node(4, Some(5)), "aitbc-system");
        let kinds: Vec<&str> = items.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "StatefulSet",
                "StatefulSet",
                "StatefulSet",
                "StatefulSet",
                "StatefulSet",
                "NetworkPolicy"
            ]
        );
        let mut off = node(4, None);
        off.spec.network_policy.enabled = false;
        assert_eq!(rendered_pod_objects(&off, "aitbc-system").len(), 4);
    }

    #[test]
    fn key_custody_only_peers_reach_p2p_and_clients_rpc() {
        let np = network_policy(&node(4, None), "aitbc-system");
        let spec = np.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        let rules = spec.ingress.unwrap();
        let ports = |r: &NetworkPolicyIngressRule| -> Vec<i32> {
            r.ports
                .iter()
                .flatten()
                .filter_map(|p| match p.port {
                    Some(IntOrString::Int(p)) => Some(p),
                    _ => None,
                })
                .collect()
        };
        let p2p: Vec<_> = rules
            .iter()
            .filter(|r| ports(r).contains(&P2P_PORT))
            .collect();
        assert_eq!(p2p.len(), 1);
        assert_eq!(
            ports(p2p[0]),
            [P2P_PORT],
            "the peer rule opens the peer port only"
        );
        let from = p2p[0].from.clone().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0].pod_selector.clone().unwrap().match_labels.unwrap(),
            selector("aitbc"),
            "only the chain's own pods"
        );
        assert!(
            from[0].namespace_selector.is_none(),
            "and only in its namespace"
        );
        let rpc: Vec<_> = rules
            .iter()
            .filter(|r| ports(r).contains(&RPC_PORT))
            .collect();
        assert_eq!(rpc.len(), 1);
        assert!(
            !ports(rpc[0]).contains(&P2P_PORT),
            "clients never reach p2p"
        );
    }
}
