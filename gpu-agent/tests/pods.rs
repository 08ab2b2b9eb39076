//! Pod mode against a mocked Kubernetes API (tower-test): the job Pod and its NetworkPolicy
//! are created, followed from Pending to Succeeded/Failed (status set by the test), their log
//! collected, and deleted on completion, on cancellation and when the agent starts again.

mod common;

use aitbc_gpu_agent::agent::{Agent, JobRequest};
use aitbc_gpu_agent::inventory::Inventory;
use aitbc_gpu_agent::isolation::IsolationMode;
use aitbc_gpu_agent::jobs::JobPhase;
use aitbc_gpu_agent::nvml::{BackendError, GpuBackend};
use aitbc_gpu_agent::pod::{pod_name, PodRunner, PodSettings, AGENT_LABEL};
use aitbc_protocol::tx::Runtime;
use aitbc_protocol::Keypair;
use common::*;
use http::{Request, Response};
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "aitbc-jobs";

/// An in-memory API server for Pods, their logs and NetworkPolicies in one namespace.
#[derive(Default)]
struct FakeKube {
    pods: Mutex<BTreeMap<String, Value>>,
    policies: Mutex<BTreeMap<String, Value>>,
    logs: Mutex<BTreeMap<String, String>>,
    calls: Mutex<Vec<String>>,
}

fn not_found(name: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": format!("{name} not found"), "reason": "NotFound", "code": 404}),
    )
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

impl FakeKube {
    fn handle(&self, method: &str, uri: &str, body: Value) -> (u16, Value) {
        self.calls.lock().push(format!("{method} {uri}"));
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let pods = format!("/api/v1/namespaces/{NS}/pods");
        let nps = format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies");
        let (store, rest) = if let Some(r) = path.strip_prefix(&pods) {
            (&self.pods, r)
        } else if let Some(r) = path.strip_prefix(&nps) {
            (&self.policies, r)
        } else {
            return not_found(path);
        };
        let name = rest.trim_start_matches('/');
        match (method, name) {
            ("POST", "") => {
                let n = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                store.lock().insert(n, body.clone());
                (201, body)
            }
            ("GET", "") => {
                let sel = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(|s| s.replace("%2F", "/").replace("%3D", "="));
                let items = store
                    .lock()
                    .values()
                    .filter(|v| match sel.as_deref().and_then(|s| s.split_once('=')) {
                        Some((k, want)) => v["metadata"]["labels"][k] == want,
                        None => true,
                    })
                    .cloned()
                    .collect();
                (200, list(items))
            }
            ("GET", n) if n.ends_with("/log") => {
                let n = n.trim_end_matches("/log");
                match self.logs.lock().get(n) {
                    Some(l) => (200, Value::String(l.clone())),
                    None => not_found(n),
                }
            }
            ("GET", n) => match store.lock().get(n) {
                Some(v) => (200, v.clone()),
                None => not_found(n),
            },
            ("DELETE", n) => match store.lock().remove(n) {
                Some(v) => (200, v),
                None => not_found(n),
            },
            _ => not_found(name),
        }
    }

    fn set_status(&self, name: &str, status: Value) {
        if let Some(p) = self.pods.lock().get_mut(name) {
            p["status"] = status;
        }
    }

    fn deleted(&self, what: &str, name: &str) -> bool {
        self.calls
            .lock()
            .iter()
            .any(|c| c.starts_with("DELETE") && c.contains(what) && c.contains(name))
    }
}

fn client(api: Arc<FakeKube>) -> kube::Client {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let uri = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let (code, out) = api.handle(parts.method.as_str(), &uri, value);
            // Logs are plain text; everything else JSON.
            let bytes = match out {
                Value::String(s) => s.into_bytes(),
                v => serde_json::to_vec(&v).unwrap_or_default(),
            };
            let resp = Response::builder()
                .status(code)
                .body(Body::from(bytes))
                .unwrap();
            send.send_response(resp);
        }
    });
    kube::Client::new(mock, NS)
}

fn settings(state: &std::path::Path) -> PodSettings {
    PodSettings {
        namespace: NS.into(),
        node_name: "gpu-node-1".into(),
        runtime_class: None,
        host_state_dir: state.into(),
        cpu_limit: "2".into(),
        memory_limit: "4Gi".into(),
        demo_image: Some("ghcr.io/aitbc/agent:dev".into()),
        job_uid: aitbc_gpu_agent::pod::JOB_UID,
    }
}

fn pod_agent(dir: &std::path::Path, api: Arc<FakeKube>) -> Arc<Agent> {
    let mut c = config(dir, 2, vec![]);
    c.isolation = IsolationMode::Pod;
    let inv = Inventory::detect(&c.agent_id, &c.declared_gpus, c.disable_nvml, || {
        Err::<Box<dyn GpuBackend>, _>(BackendError("no NVML in tests".into()))
    });
    let runner = PodRunner::new(client(api), settings(dir)).with_poll(Duration::from_millis(20));
    Agent::open_with_pods(c, Keypair::generate(), inv, Some(runner)).unwrap()
}

fn image_job(id: &str, gpus: u32) -> JobRequest {
    JobRequest {
        runtime: Runtime {
            image: "ghcr.io/acme/model:1".into(),
            command: vec!["python".into(), "run.py".into()],
            env: vec![],
        },
        ..job(id, "", gpus)
    }
}

/// Waits until the fake holds the job's Pod.
async fn created(api: &FakeKube, name: &str) -> Value {
    for _ in 0..200 {
        if let Some(p) = api.pods.lock().get(name) {
            return p.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pod {name} was not created; calls: {:?}", api.calls.lock());
}

fn terminated(phase: &str, code: i32, secs: u32) -> Value {
    json!({"phase": phase, "containerStatuses": [{
        "name": "job", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code,
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": format!("2026-01-01T00:00:{secs:02}Z")}}}]})
}

#[tokio::test]
async fn job_isolation_pod_job_is_followed_to_success_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let api = Arc::new(FakeKube::default());
    let a = pod_agent(dir.path(), api.clone());
    a.run_job(image_job("pod-ok", 2)).unwrap();
    let name = pod_name("pod-ok");
    let pod = created(&api, &name).await;
    assert_eq!(pod["spec"]["nodeName"], "gpu-node-1");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "ghcr.io/acme/model:1"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "2"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert!(
        api.policies.lock().contains_key(&name),
        "the NetworkPolicy comes first"
    );
    let env = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert!(env.contains(&json!({"name": "AITBC_OUTPUT_DIR", "value": "/job/output"})));

    // Pending, then Running: the job stays running.
    api.set_status(&name, json!({"phase": "Pending"}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.set_status(&name, json!({"phase": "Running"}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.job("pod-ok").unwrap().phase, JobPhase::Running);
    // The container wrote an output and ran 3 s.
    std::fs::write(dir.path().join("jobs/pod-ok/output/result.txt"), "42").unwrap();
    api.logs
        .lock()
        .insert(name.clone(), "hello from the pod\n".into());
    api.set_status(&name, terminated("Succeeded", 0, 3));
    let rec = tokio::time::timeout(Duration::from_secs(10), a.wait_job("pod-ok"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.phase, JobPhase::Succeeded, "{rec:?}");
    assert_eq!(rec.stdout.to_text(), "hello from the pod\n");
    assert_eq!(
        rec.outputs
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["result.txt"]
    );
    let r = rec.receipt.unwrap();
    assert!(r.verify().is_ok() && r.receipt.success);
    assert_eq!(r.receipt.usage.wall_ms, 3000, "the Pod's real run time");
    assert_eq!(r.receipt.usage.gpu_seconds, 6);
    assert!(
        api.pods.lock().is_empty() && api.policies.lock().is_empty(),
        "deleted"
    );
    assert_eq!(a.status().free_gpus, 2);
}

#[tokio::test]
async fn job_isolation_pod_failure_and_deadline_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let api = Arc::new(FakeKube::default());
    let a = pod_agent(dir.path(), api.clone());
    a.run_job(image_job("pod-fail", 1)).unwrap();
    let name = pod_name("pod-fail");
    created(&api, &name).await;
    api.set_status(&name, terminated("Failed", 3, 1));
    let rec = a.wait_job("pod-fail").await.unwrap();
    assert_eq!((rec.phase, rec.exit_code), (JobPhase::Failed, Some(3)));

    a.run_job(image_job("pod-late", 1)).unwrap();
    let name = pod_name("pod-late");
    created(&api, &name).await;
    api.set_status(
        &name,
        json!({"phase": "Failed", "reason": "DeadlineExceeded"}),
    );
    let rec = a.wait_job("pod-late").await.unwrap();
    assert_eq!(rec.phase, JobPhase::TimedOut, "{rec:?}");
    assert!(api.deleted("pods", &name));
}

#[tokio::test]
async fn job_isolation_cancelled_pod_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let api = Arc::new(FakeKube::default());
    let a = pod_agent(dir.path(), api.clone());
    a.run_job(image_job("pod-cancel", 1)).unwrap();
    let name = pod_name("pod-cancel");
    created(&api, &name).await;
    api.set_status(&name, json!({"phase": "Running"}));
    a.cancel_job("pod-cancel", "customer withdrew").unwrap();
    let rec = tokio::time::timeout(Duration::from_secs(10), a.wait_job("pod-cancel"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.phase, rec.message.as_str()),
        (JobPhase::Cancelled, "customer withdrew")
    );
    assert!(api.deleted("pods", &name) && api.deleted("networkpolicies", &name));
    assert!(api.pods.lock().is_empty());
}

#[tokio::test]
async fn job_isolation_agent_restart_deletes_this_nodes_job_pods() {
    let dir = tempfile::tempdir().unwrap();
    let api = Arc::new(FakeKube::default());
    let mine = |n: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": n, "namespace": NS, "labels": {AGENT_LABEL: node}}})
    };
    for (n, node) in [
        ("old-1", "gpu-node-1"),
        ("old-2", "gpu-node-1"),
        ("other", "gpu-node-2"),
    ] {
        api.pods.lock().insert(n.into(), mine(n, node));
    }
    let runner = PodRunner::new(client(api.clone()), settings(dir.path()));
    let mut gone = runner.cleanup_node().await.unwrap();
    gone.sort();
    assert_eq!(gone, ["old-1", "old-2"]);
    assert_eq!(
        api.pods.lock().keys().collect::<Vec<_>>(),
        ["other"],
        "another node's Pod stays"
    );
}

#[tokio::test]
async fn pod_mode_runs_the_demo_runtime_in_the_agent_image_and_refuses_bare_commands() {
    let dir = tempfile::tempdir().unwrap();
    let api = Arc::new(FakeKube::default());
    let a = pod_agent(dir.path(), api.clone());
    a.run_job(JobRequest {
        runtime: Runtime::default(),
        ..job("demo", "", 0)
    })
    .unwrap();
    let pod = created(&api, &pod_name("demo")).await;
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/aitbc/agent:dev");
    assert_eq!(c["command"], json!(["aitbc-gpu-agent", "demo-runtime"]));
    a.cancel_job("demo", "done").unwrap();
    let e = a.run_job(job("bare", "echo hi", 0)).unwrap_err();
    assert!(e.to_string().contains("no image"), "{e}");
}
