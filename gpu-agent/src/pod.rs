//! Pod mode: on Kubernetes a job is a Pod bound to the agent's node.
//!
//! [`job_pod`] and [`job_network_policy`] are pure functions of the job; [`PodRunner`] is the
//! thin shell that creates them, follows the Pod from Pending to Succeeded/Failed, reads its
//! log, and deletes both on completion, on cancellation and (for every Pod of this node) when
//! the agent starts again.

use crate::capture::{BoundedCapture, CapturedOutput};
use crate::runner::Termination;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// Label naming the agent's node on every job Pod and policy (restart cleanup selects it).
pub const AGENT_LABEL: &str = "aitbc.io/agent-node";
/// Label carrying the job's Pod name.
pub const JOB_LABEL: &str = "aitbc.io/job";
const CONTAINER: &str = "job";
/// The uid/gid job containers run as when the agent runs as root.
pub const JOB_UID: i64 = 65534;

/// The uid job containers run as: the agent's own (non-root) uid, so that they can write the
/// output directory it created, else [`JOB_UID`].
pub fn job_uid_for(agent_euid: u32) -> i64 {
    match agent_euid {
        0 => JOB_UID,
        uid => i64::from(uid),
    }
}

/// How a job Pod gets its GPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuBinding {
    /// `nvidia.com/gpu: N` limits; the NVIDIA device plugin chooses the devices.
    DevicePlugin,
    /// `NVIDIA_VISIBLE_DEVICES=<the UUIDs the agent chose>` under the NVIDIA runtime class.
    DeviceIds,
}

/// Where and how job Pods run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// The namespace job Pods (and their NetworkPolicies) are created in.
    pub namespace: String,
    /// The node the agent runs on (`spec.nodeName` of every job Pod).
    pub node_name: String,
    /// `runtimeClassName` of job Pods (e.g. `nvidia`), when configured.
    pub runtime_class: Option<String>,
    /// Host path of the agent's state directory on the node (mounted into job Pods).
    pub host_state_dir: PathBuf,
    /// CPU and memory limits of a job Pod (Kubernetes quantities).
    pub cpu_limit: String,
    pub memory_limit: String,
    /// The agent's own image: runs the built-in demo runtime for listings without an image.
    pub demo_image: Option<String>,
    /// uid and gid of job containers ([`job_uid_for`]).
    pub job_uid: i64,
}

impl PodSettings {
    /// Device ids with a runtime class (the runtime honours them), else the device plugin.
    pub fn gpu_binding(&self) -> GpuBinding {
        match self.runtime_class {
            Some(_) => GpuBinding::DeviceIds,
            None => GpuBinding::DevicePlugin,
        }
    }
}

/// One allowed egress destination: an IP block and TCP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressRule {
    pub cidr: String,
    pub port: u16,
}

/// What a job Pod is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodJob {
    pub job_id: String,
    pub image: String,
    /// The listing's command; empty runs the image's entrypoint.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub gpu_uuids: Vec<String>,
    pub time_limit_secs: u64,
    pub has_input: bool,
    /// Bytes the job may write to its work directory and /tmp (emptyDir size limits).
    pub scratch_bytes: u64,
    /// The egress the listing declares (none: no egress at all).
    pub egress: Vec<EgressRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("building the job Pod: {0}")]
    Build(#[from] serde_json::Error),
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// A DNS-1123 name for the job's Pod: `aitbc-job-<sanitized id>-<8 hex of its hash>`.
pub fn pod_name(job_id: &str) -> String {
    let clean: String = job_id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(40)
        .collect();
    let h = <sha2::Sha256 as sha2::Digest>::digest(job_id.as_bytes());
    format!(
        "aitbc-job-{}-{}",
        clean.trim_matches('-'),
        hex::encode(&h[..4])
    )
}

fn labels(s: &PodSettings, name: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "aitbc-gpu-agent",
        AGENT_LABEL: label_value(&s.node_name),
        JOB_LABEL: name,
    })
}

/// A label value (63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends).
fn label_value(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn job_dir(s: &PodSettings, job_id: &str) -> PathBuf {
    s.host_state_dir.join("jobs").join(job_id)
}

/// The job's Pod: on this node, the listing's image and command, input read-only, output
/// writable, GPUs, limits, deadline, restricted security context, no service-account token.
pub fn job_pod(s: &PodSettings, j: &PodJob) -> Result<Pod, PodError> {
    let name = pod_name(&j.job_id);
    let dir = job_dir(s, &j.job_id);
    let mut env: Vec<Value> = j
        .env
        .iter()
        .filter(|(k, _)| k != "NVIDIA_VISIBLE_DEVICES")
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    let mut limits = json!({"cpu": s.cpu_limit, "memory": s.memory_limit});
    let gpus = j.gpu_uuids.len();
    match (s.gpu_binding(), gpus) {
        (_, 0) => env.push(json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})),
        (GpuBinding::DevicePlugin, n) => limits["nvidia.com/gpu"] = json!(n.to_string()),
        (GpuBinding::DeviceIds, _) => {
            env.push(json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": j.gpu_uuids.join(",")}))
        }
    }
    let scratch = j.scratch_bytes.to_string();
    let mut mounts = vec![
        json!({"name": "output", "mountPath": crate::sandbox::JOB_OUTPUT}),
        json!({"name": "work", "mountPath": crate::sandbox::JOB_WORK}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut volumes = vec![
        json!({"name": "output", "hostPath": {"path": dir.join("output"), "type": "Directory"}}),
        json!({"name": "work", "emptyDir": {"sizeLimit": scratch}}),
        json!({"name": "tmp", "emptyDir": {"sizeLimit": scratch}}),
    ];
    if j.has_input {
        mounts.push(
            json!({"name": "input", "mountPath": crate::sandbox::JOB_INPUT, "readOnly": true}),
        );
        volumes.push(
            json!({"name": "input", "hostPath": {"path": dir.join("input"), "type": "File"}}),
        );
    }
    let mut container = json!({
        "name": CONTAINER,
        "image": j.image,
        "env": env,
        "workingDir": crate::sandbox::JOB_WORK,
        "resources": {"limits": limits, "requests": limits},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": s.job_uid,
            "runAsGroup": s.job_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if !j.command.is_empty() {
        container["command"] = json!(j.command);
    }
    let mut spec = json!({
        "nodeName": s.node_name,
        "restartPolicy": "Never",
        "activeDeadlineSeconds": j.time_limit_secs.max(1),
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "hostNetwork": false,
        "hostPID": false,
        "hostIPC": false,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": s.job_uid,
            "runAsGroup": s.job_uid,
            "fsGroup": s.job_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    });
    if let Some(rc) = &s.runtime_class {
        spec["runtimeClassName"] = json!(rc);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels(s, &name)},
        "spec": spec,
    }))?)
}

/// The job Pod's NetworkPolicy: no ingress, egress only to what the listing declares.
pub fn job_network_policy(s: &PodSettings, j: &PodJob) -> Result<NetworkPolicy, PodError> {
    let name = pod_name(&j.job_id);
    let egress: Vec<Value> = j
        .egress
        .iter()
        .map(|r| {
            json!({
                "to": [{"ipBlock": {"cidr": r.cidr}}],
                "ports": [{"protocol": "TCP", "port": r.port}],
            })
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels(s, &name)},
        "spec": {
            "podSelector": {"matchLabels": {JOB_LABEL: name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }))?)
}

/// Where a followed Pod stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    Waiting,
    Done {
        termination: Termination,
        /// Milliseconds the job's container really ran (start to finish), when known.
        run_ms: Option<u64>,
    },
}

/// Reads a Pod's phase: Pending/Running/unknown wait; Succeeded and Failed end with the
/// container's exit code, `DeadlineExceeded` is the time limit.
pub fn pod_state(pod: &Pod) -> PodState {
    let Some(st) = &pod.status else {
        return PodState::Waiting;
    };
    let terminated = st
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let run_ms = terminated.and_then(|t| {
        let (a, b) = (t.started_at.as_ref()?, t.finished_at.as_ref()?);
        u64::try_from(b.0.as_millisecond() - a.0.as_millisecond()).ok()
    });
    let code = terminated.map(|t| t.exit_code);
    let termination = match (st.phase.as_deref(), st.reason.as_deref(), code) {
        (Some("Succeeded"), _, c) => Termination::Exited(c.unwrap_or(0)),
        (Some("Failed"), Some("DeadlineExceeded"), _) => Termination::TimedOut,
        (Some("Failed"), _, Some(c)) => Termination::Exited(c),
        (Some("Failed"), _, None) => Termination::Signalled(libc::SIGKILL),
        _ => return PodState::Waiting,
    };
    PodState::Done {
        termination,
        run_ms,
    }
}

/// What a finished job Pod left.
#[derive(Debug)]
pub struct PodOutcome {
    pub termination: Termination,
    /// The container's log (stdout and stderr together), bounded like a process's.
    pub log: CapturedOutput,
    pub run_ms: Option<u64>,
}

/// Creates, follows and deletes job Pods in one namespace.
#[derive(Clone)]
pub struct PodRunner {
    pods: Api<Pod>,
    policies: Api<NetworkPolicy>,
    settings: PodSettings,
    poll: Duration,
}

impl PodRunner {
    pub fn new(client: kube::Client, settings: PodSettings) -> Self {
        PodRunner {
            pods: Api::namespaced(client.clone(), &settings.namespace),
            policies: Api::namespaced(client, &settings.namespace),
            settings,
            poll: Duration::from_secs(1),
        }
    }

    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    pub fn settings(&self) -> &PodSettings {
        &self.settings
    }

    /// Creates the job's NetworkPolicy, then its Pod.
    pub async fn start(&self, job: &PodJob) -> Result<String, PodError> {
        let pp = PostParams::default();
        self.policies
            .create(&pp, &job_network_policy(&self.settings, job)?)
            .await?;
        let pod = job_pod(&self.settings, job)?;
        if let Err(e) = self.pods.create(&pp, &pod).await {
            self.delete(&pod_name(&job.job_id)).await;
            return Err(e.into());
        }
        Ok(pod_name(&job.job_id))
    }

    /// Follows the Pod until it ends, `limit` passes (a Pod stuck Pending counts too) or
    /// `cancel` turns true; reads its log and deletes it and its policy in every case.
    pub async fn follow(
        &self,
        name: &str,
        limit: Duration,
        capture_bytes: usize,
        mut cancel: watch::Receiver<bool>,
    ) -> PodOutcome {
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let (termination, run_ms) = tokio::select! {
            r = self.wait_done(name) => r,
            _ = &mut deadline => (Termination::TimedOut, None),
            _ = async { let _ = cancel.wait_for(|c| *c).await; } => (Termination::Cancelled, None),
        };
        let log = self.read_log(name, capture_bytes).await;
        self.delete(name).await;
        PodOutcome {
            termination,
            log,
            run_ms,
        }
    }

    async fn wait_done(&self, name: &str) -> (Termination, Option<u64>) {
        loop {
            match self.pods.get(name).await {
                Ok(p) => {
                    if let PodState::Done {
                        termination,
                        run_ms,
                    } = pod_state(&p)
                    {
                        return (termination, run_ms);
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    tracing::warn!(pod = name, "job Pod disappeared");
                    return (Termination::Signalled(libc::SIGKILL), None);
                }
                Err(e) => tracing::warn!(pod = name, error = %e, "reading the job Pod failed"),
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn read_log(&self, name: &str, capture_bytes: usize) -> CapturedOutput {
        let lp = LogParams {
            container: Some(CONTAINER.into()),
            limit_bytes: i64::try_from(capture_bytes.saturating_mul(2)).ok(),
            ..Default::default()
        };
        let mut cap = BoundedCapture::new(capture_bytes);
        match self.pods.logs(name, &lp).await {
            Ok(text) => cap.push(text.as_bytes()),
            Err(e) => tracing::warn!(pod = name, error = %e, "reading the job Pod's log failed"),
        }
        cap.finish()
    }

    /// Deletes the Pod and its policy (a missing one is fine).
    pub async fn delete(&self, name: &str) {
        let dp = DeleteParams::background().grace_period(0);
        if let Err(e) = self.pods.delete(name, &dp).await {
            log_delete_error("Pod", name, &e);
        }
        if let Err(e) = self.policies.delete(name, &dp).await {
            log_delete_error("NetworkPolicy", name, &e);
        }
    }

    /// Deletes every job Pod and policy of this node: run at start, when no job of an earlier
    /// run is running any more (they were all reported failed). Returns the Pods deleted.
    pub async fn cleanup_node(&self) -> Result<Vec<String>, PodError> {
        let lp = ListParams::default().labels(&format!(
            "{AGENT_LABEL}={}",
            label_value(&self.settings.node_name)
        ));
        let names: Vec<String> = self
            .pods
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        for n in &names {
            self.delete(n).await;
        }
        for p in self.policies.list(&lp).await?.items {
            if let Some(n) = p.metadata.name.filter(|n| !names.contains(n)) {
                let _ = self.policies.delete(&n, &DeleteParams::background()).await;
            }
        }
        Ok(names)
    }
}

fn log_delete_error(kind: &str, name: &str, e: &kube::Error) {
    match e {
        kube::Error::Api(s) if s.code == 404 => {}
        e => tracing::warn!(kind, name, error = %e, "deleting a job object failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(runtime_class: Option<&str>) -> PodSettings {
        PodSettings {
            namespace: "aitbc-jobs".into(),
            node_name: "gpu-node-1".into(),
            runtime_class: runtime_class.map(String::from),
            host_state_dir: "/var/lib/aitbc-agent".into(),
            cpu_limit: "4".into(),
            memory_limit: "16Gi".into(),
            demo_image: None,
            job_uid: JOB_UID,
        }
    }

    fn job() -> PodJob {
        PodJob {
            job_id: "job-Ab_1".into(),
            image: "ghcr.io/acme/model:1".into(),
            command: vec!["python".into(), "run.py".into()],
            env: vec![
                ("AITBC_JOB_ID".into(), "job-Ab_1".into()),
                ("NVIDIA_VISIBLE_DEVICES".into(), "all".into()),
            ],
            gpu_uuids: vec!["GPU-a".into(), "GPU-b".into()],
            time_limit_secs: 600,
            has_input: true,
            scratch_bytes: 1 << 30,
            egress: vec![],
        }
    }

    #[test]
    fn pod_names_are_dns_labels_and_distinct() {
        let n = pod_name("job-Ab_1");
        assert!(n.starts_with("aitbc-job-job-ab-1-"), "{n}");
        assert!(
            n.len() <= 63
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(pod_name("a.b"), pod_name("a_b"));
        assert!(pod_name(&"x".repeat(128)).len() <= 63);
    }

    #[test]
    fn job_isolation_pod_spec_is_restricted_bound_and_limited() {
        let pod = serde_json::to_value(job_pod(&settings(None), &job()).unwrap()).unwrap();
        let spec = &pod["spec"];
        assert_eq!(pod["metadata"]["namespace"], "aitbc-jobs");
        assert_eq!(pod["metadata"]["labels"][AGENT_LABEL], "gpu-node-1");
        assert_eq!(spec["nodeName"], "gpu-node-1");
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["activeDeadlineSeconds"], 600);
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["enableServiceLinks"], false);
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["securityContext"]["runAsUser"], 65534);
        assert_eq!((job_uid_for(0), job_uid_for(65532)), (65534, 65532));
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert!(spec.get("runtimeClassName").is_none());
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "ghcr.io/acme/model:1");
        assert_eq!(c["command"], json!(["python", "run.py"]));
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
        assert_eq!(c["resources"]["limits"]["cpu"], "4");
        assert_eq!(c["resources"]["limits"]["memory"], "16Gi");
        // The listing cannot pick devices itself.
        assert!(!c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "NVIDIA_VISIBLE_DEVICES"));
        let mounts = c["volumeMounts"].as_array().unwrap();
        let input = mounts.iter().find(|m| m["name"] == "input").unwrap();
        assert_eq!(
            (input["mountPath"].as_str(), input["readOnly"].as_bool()),
            (Some("/job/input"), Some(true))
        );
        let vols = spec["volumes"].as_array().unwrap();
        let out = vols.iter().find(|v| v["name"] == "output").unwrap();
        assert_eq!(
            out["hostPath"]["path"],
            "/var/lib/aitbc-agent/jobs/job-Ab_1/output"
        );
        assert_eq!(
            vols.iter().filter(|v| v.get("hostPath").is_some()).count(),
            2,
            "only the job's input and output"
        );
        assert_eq!(
            vols.iter().find(|v| v["name"] == "work").unwrap()["emptyDir"]["sizeLimit"],
            "1073741824"
        );
    }

    #[test]
    fn device_ids_with_a_runtime_class_and_no_gpus_see_none() {
        let pod =
            serde_json::to_value(job_pod(&settings(Some("nvidia")), &job()).unwrap()).unwrap();
        assert_eq!(pod["spec"]["runtimeClassName"], "nvidia");
        let c = &pod["spec"]["containers"][0];
        assert!(c["resources"]["limits"].get("nvidia.com/gpu").is_none());
        let env = c["env"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": "GPU-a,GPU-b"})));
        let mut j = job();
        j.gpu_uuids.clear();
        j.has_input = false;
        j.command.clear();
        let pod = serde_json::to_value(job_pod(&settings(None), &j).unwrap()).unwrap();
        let c = &pod["spec"]["containers"][0];
        assert!(c.get("command").is_none(), "the image's entrypoint runs");
        assert!(c["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})));
        assert!(!c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "input"));
    }

    #[test]
    fn job_isolation_network_policy_denies_ingress_and_undeclared_egress() {
        let mut j = job();
        let np = serde_json::to_value(job_network_policy(&settings(None), &j).unwrap()).unwrap();
        assert_eq!(
            np["spec"]["podSelector"]["matchLabels"][JOB_LABEL],
            pod_name(&j.job_id)
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["ingress"], json!([]));
        assert_eq!(np["spec"]["egress"], json!([]));
        j.egress = vec![EgressRule {
            cidr: "10.1.0.0/16".into(),
            port: 443,
        }];
        let np = serde_json::to_value(job_network_policy(&settings(None), &j).unwrap()).unwrap();
        assert_eq!(
            np["spec"]["egress"],
            json!([{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 443}]}])
        );
    }

    fn pod_with(status: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn pod_states_follow_the_phase_and_the_container() {
        assert_eq!(
            pod_state(&pod_with(json!({"phase": "Pending"}))),
            PodState::Waiting
        );
        assert_eq!(
            pod_state(&pod_with(json!({"phase": "Running"}))),
            PodState::Waiting
        );
        let term = |phase: &str, reason: Option<&str>, code: i32| {
            pod_with(
                json!({"phase": phase, "reason": reason, "containerStatuses": [{
                "name": "job", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code,
                    "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:42Z"}}}]}),
            )
        };
        assert_eq!(
            pod_state(&term("Succeeded", None, 0)),
            PodState::Done {
                termination: Termination::Exited(0),
                run_ms: Some(42_000)
            }
        );
        assert_eq!(
            pod_state(&term("Failed", None, 3)),
            PodState::Done {
                termination: Termination::Exited(3),
                run_ms: Some(42_000)
            }
        );
        assert!(matches!(
            pod_state(&term("Failed", Some("DeadlineExceeded"), 137)),
            PodState::Done {
                termination: Termination::TimedOut,
                ..
            }
        ));
    }
}
