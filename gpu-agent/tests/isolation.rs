//! Hostile jobs (issue 17): each attack fails safely and the agent runs the next job.
//!
//! The sandbox tests need a working `bwrap` (Debian package `bubblewrap`, user namespaces).
//! Where it does not work they print why and pass, unless `AITBC_REQUIRE_SANDBOX=1`, which
//! makes them fail (CI sets it).

mod common;

use aitbc_gpu_agent::agent::{Agent, AgentError, JobRequest};
use aitbc_gpu_agent::config::AgentConfig;
use aitbc_gpu_agent::isolation::{probe_sandbox, IsolationMode};
use aitbc_gpu_agent::jobs::{JobPhase, JobRecord};
use aitbc_protocol::tx::{JobSpec, Runtime, Serves};
use aitbc_protocol::Keypair;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `true` where the sandbox works; otherwise a skip message (or a failure when required).
fn sandbox_available(test: &str) -> bool {
    match probe_sandbox(Path::new("bwrap")) {
        Ok(()) => true,
        Err(e) if std::env::var("AITBC_REQUIRE_SANDBOX").as_deref() == Ok("1") => {
            panic!("{test}: AITBC_REQUIRE_SANDBOX=1 but the sandbox does not work: {e}")
        }
        Err(e) => {
            // Straight to the process's stderr, past the test harness's capture, so that
            // `cargo test` shows it even for a passing test.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: the bubblewrap sandbox does not work here ({e}); set \
                 AITBC_REQUIRE_SANDBOX=1 to make this a failure"
            );
            false
        }
    }
}

fn sandbox_config(dir: &Path) -> AgentConfig {
    let mut c = config(dir, 1, vec![]);
    c.isolation = IsolationMode::Sandbox;
    c
}

/// An agent whose key lives in its state directory, as on a default install.
fn agent_with_key_file(c: AgentConfig) -> (Arc<Agent>, String) {
    let key = Keypair::generate();
    let secret = key.secret_hex();
    std::fs::create_dir_all(&c.state_dir).unwrap();
    std::fs::write(c.state_dir.join("agent.key"), &secret).unwrap();
    (open(c, key), secret)
}

async fn run(a: &Arc<Agent>, req: JobRequest) -> JobRecord {
    let id = req.job_id.clone();
    a.run_job(req).unwrap();
    a.wait_job(&id).await.unwrap()
}

/// The next ordinary job still runs and succeeds.
async fn next_job_runs(a: &Arc<Agent>, id: &str) {
    let rec = run(a, job(id, "echo fine > $AITBC_OUTPUT_DIR/ok", 0)).await;
    assert_eq!(rec.phase, JobPhase::Succeeded, "{rec:?}");
    assert_eq!(a.status().running_jobs, 0);
}

/// Secrets a hostile job looks for, outside the job directory.
struct Secrets {
    _root: tempfile::TempDir,
    keystore_file: PathBuf,
    home: PathBuf,
}

fn plant_secrets() -> Secrets {
    let root = tempfile::tempdir().unwrap();
    let keystore = root.path().join("aitbc-home/keystore");
    std::fs::create_dir_all(&keystore).unwrap();
    let keystore_file = keystore.join("alice.json");
    std::fs::write(&keystore_file, "wallet-secret").unwrap();
    let home = std::env::var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.path().into());
    Secrets {
        _root: root,
        keystore_file,
        home,
    }
}

/// A job that reports `LEAK <what>` for every secret it can read or place it can write.
fn thief(id: &str, state_dir: &Path, s: &Secrets) -> JobRequest {
    let script = format!(
        r#"
        cat '{state}/agent.key' >/dev/null 2>&1 && echo "LEAK agent key"
        ls '{state}/jobs' >/dev/null 2>&1 && echo "LEAK state dir"
        cat '{keystore}' >/dev/null 2>&1 && echo "LEAK keystore"
        ls '{home}' >/dev/null 2>&1 && echo "LEAK home"
        ls /root >/dev/null 2>&1 && echo "LEAK /root"
        touch '{state}/planted' 2>/dev/null && echo "LEAK wrote state dir"
        touch /usr/planted /etc/planted 2>/dev/null && echo "LEAK wrote system"
        echo ran > "$AITBC_OUTPUT_DIR/ran"
        "#,
        state = state_dir.display(),
        keystore = s.keystore_file.display(),
        home = s.home.display(),
    );
    job(id, &script, 0)
}

#[tokio::test]
async fn job_isolation_sandboxed_job_reads_no_key_home_keystore_or_state() {
    if !sandbox_available("job_isolation_sandboxed_job_reads_no_key_home_keystore_or_state") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, secret) = agent_with_key_file(sandbox_config(dir.path()));
    let s = plant_secrets();
    let rec = run(&a, thief("thief", dir.path(), &s)).await;
    assert_eq!(rec.phase, JobPhase::Succeeded, "{}", rec.stderr.to_text());
    let out = rec.stdout.to_text();
    assert!(!out.contains("LEAK"), "the sandbox leaked:\n{out}");
    assert!(!out.contains(&secret));
    assert!(!dir.path().join("planted").exists());
    assert_eq!(
        rec.outputs
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["ran"],
        "the job still wrote its own output"
    );
    next_job_runs(&a, "after-thief").await;
}

/// The same thief as a plain process reads everything: why process mode is owner-only.
#[tokio::test]
async fn job_isolation_plain_processes_are_not_isolated_hence_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = agent_with_key_file(config(dir.path(), 1, vec![]));
    let s = plant_secrets();
    let rec = run(&a, thief("thief", dir.path(), &s)).await;
    let out = rec.stdout.to_text();
    assert!(
        out.contains("LEAK agent key") && out.contains("LEAK keystore"),
        "{out}"
    );
}

#[tokio::test]
async fn job_isolation_sandboxed_job_cannot_connect_to_a_local_port() {
    if !sandbox_available("job_isolation_sandboxed_job_cannot_connect_to_a_local_port") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = open(sandbox_config(dir.path()), Keypair::generate());
    let mut req = job(
        "dialer",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"),
        0,
    );
    req.runtime.command[0] = "/bin/bash".into();
    let rec = run(&a, req).await;
    assert!(!rec.stdout.to_text().contains("CONNECTED"));
    assert_ne!(rec.phase, JobPhase::Succeeded, "{}", rec.stderr.to_text());
    assert!(
        listener.accept().is_err(),
        "the job reached the host's port"
    );
    next_job_runs(&a, "after-dialer").await;
}

/// A job that leaves a `setsid` child and a double-forked grandchild behind and sleeps past
/// its one-second limit; the strays would write `late*` into the output two seconds in.
fn escapee(id: &str) -> JobRequest {
    let mut r = job(
        id,
        "setsid sh -c 'sleep 5; echo late > \"$AITBC_OUTPUT_DIR/late\"' & \
         (sh -c 'sleep 5; echo late > \"$AITBC_OUTPUT_DIR/late2\"' &) ; sleep 30",
        0,
    );
    r.spec.time_limit_secs = 1;
    r
}

#[tokio::test]
async fn job_isolation_setsid_and_double_fork_die_at_the_time_limit() {
    if !sandbox_available("job_isolation_setsid_and_double_fork_die_at_the_time_limit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = open(sandbox_config(dir.path()), Keypair::generate());
    let rec = run(&a, escapee("escapee")).await;
    assert_eq!(rec.phase, JobPhase::TimedOut, "{rec:?}");
    // The escapees write 5 s after they start, 4 s after the 1 s limit: room for a loaded
    // machine to be slow killing them, none for them to survive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = dir.path().join("jobs/escapee/output");
    assert!(
        !out.join("late").exists(),
        "the setsid child outlived the job"
    );
    assert!(
        !out.join("late2").exists(),
        "the double-forked child outlived the job"
    );
    next_job_runs(&a, "after-escapee").await;
}

#[tokio::test]
async fn job_isolation_output_over_quota_fails_with_a_clear_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 1, vec![]);
    c.output_quota_bytes = 1024 * 1024;
    let a = open(c, Keypair::generate());
    // One big file: stopped at the quota by the file-size limit.
    let big = run(
        &a,
        job(
            "big",
            "head -c 5000000 /dev/zero > $AITBC_OUTPUT_DIR/big",
            0,
        ),
    )
    .await;
    // Many small files and a sleep: stopped by the quota watch.
    let many = run(
        &a,
        job(
            "many",
            "for i in 1 2 3 4 5 6 7 8 9 10; do head -c 300000 /dev/zero > $AITBC_OUTPUT_DIR/f$i; done; sleep 30",
            0,
        ),
    )
    .await;
    for rec in [&big, &many] {
        assert_eq!(rec.phase, JobPhase::Failed, "{rec:?}");
        assert!(
            rec.message
                .contains("output quota of 1048576 bytes exceeded"),
            "{}",
            rec.message
        );
        let r = rec.receipt.as_ref().unwrap();
        assert!(!r.receipt.success && r.verify().is_ok());
        assert!(r.receipt.message.contains("quota"));
    }
    // The file-size limit stopped the writer one byte past the quota.
    assert!(big.outputs.iter().map(|f| f.size).sum::<u64>() <= 1024 * 1024 + 1);
    next_job_runs(&a, "after-quota").await;
}

#[tokio::test]
async fn job_isolation_sandboxed_job_cannot_fill_the_disk_through_tmp() {
    if !sandbox_available("job_isolation_sandboxed_job_cannot_fill_the_disk_through_tmp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = sandbox_config(dir.path());
    c.output_quota_bytes = 1024 * 1024;
    let a = open(c, Keypair::generate());
    let rec = run(
        &a,
        job(
            "tmp-fill",
            "head -c 5000000 /dev/zero > /tmp/fill; echo rc=$?; wc -c < /tmp/fill",
            0,
        ),
    )
    .await;
    let out = rec.stdout.to_text();
    let written: u64 = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(written <= 1024 * 1024, "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    next_job_runs(&a, "after-tmp-fill").await;
}

#[tokio::test]
async fn job_isolation_printing_without_end_is_bounded_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(config(dir.path(), 1, vec![]), Keypair::generate());
    let mut r = job("yes", "yes", 0);
    r.spec.time_limit_secs = 1;
    let rec = run(&a, r).await;
    assert_eq!(rec.phase, JobPhase::TimedOut);
    assert!(rec.stdout.head.len() + rec.stdout.tail.len() <= 2 * 1024);
    assert!(rec.stdout.dropped_bytes > 0);
    next_job_runs(&a, "after-yes").await;
}

#[tokio::test]
async fn job_isolation_a_strangers_listing_is_refused_without_serve() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Keypair::generate().address();
    let mut c = config(dir.path(), 1, vec![]);
    c.owner = Some(owner);
    // What `aitbc-gpu-agent run --owner OWNER` decides without --serve.
    c.serves = aitbc_gpu_agent::isolation::decide_serves(
        Some(owner),
        &aitbc_gpu_agent::isolation::ServeRequest::Providers(vec![]),
        &aitbc_gpu_agent::isolation::IsolationChoice {
            mode: IsolationMode::Sandbox,
            fallback_reason: None,
        },
    )
    .unwrap()
    .serves;
    assert_eq!(c.serves, Serves::Providers(vec![owner]));
    let a = open(c, Keypair::generate());
    assert_eq!(a.status().serves, vec![owner.to_string()]);
    let mut stranger = job("stranger", "echo ran", 0);
    stranger.provider = Some(Keypair::generate().address());
    let e = a.run_job(stranger).unwrap_err();
    assert!(
        matches!(&e, AgentError::PermissionDenied(m) if m.contains("--serve")),
        "{e:?}"
    );
    let mut own = job("own", "echo ran", 0);
    own.provider = Some(owner);
    assert_eq!(run(&a, own).await.phase, JobPhase::Succeeded);
}

#[tokio::test]
async fn job_isolation_an_image_is_refused_where_it_cannot_be_honoured() {
    for mode in [IsolationMode::Process, IsolationMode::Sandbox] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), 1, vec![]);
        c.isolation = mode;
        let a = open(c, Keypair::generate());
        let req = JobRequest {
            runtime: Runtime {
                image: "ghcr.io/acme/model:1".into(),
                ..shell("echo ran")
            },
            ..job("imaged", "", 0)
        };
        let e = a.run_job(req).unwrap_err();
        assert!(
            matches!(&e, AgentError::FailedPrecondition(m) if m.contains("cannot be honoured") && m.contains("ghcr.io/acme/model:1")),
            "{mode:?}: {e:?}"
        );
        assert_eq!(a.status().free_gpus, 1, "nothing stays claimed");
    }
}

#[tokio::test]
async fn sandbox_runs_the_demo_runtime_with_input_and_outputs() {
    if !sandbox_available("sandbox_runs_the_demo_runtime_with_input_and_outputs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = open(sandbox_config(dir.path()), Keypair::generate());
    let req = JobRequest {
        job_id: "demo".into(),
        customer: customer(),
        spec: JobSpec {
            kind: Some(aitbc_protocol::tx::JobKind::Training),
            params: vec![("epochs".into(), "50".into())],
            ..Default::default()
        },
        input: b"x1,y\n0,1\n1,3\n2,5\n".to_vec(),
        ..Default::default()
    };
    let rec = run(&a, req).await;
    assert_eq!(rec.phase, JobPhase::Succeeded, "{}", rec.stderr.to_text());
    assert!(
        rec.outputs.iter().any(|f| f.path == "model.json"),
        "{rec:?}"
    );
    let (model, _) = a.read_output("demo", "model.json", 0).unwrap();
    assert!(
        String::from_utf8_lossy(&model).contains("\"samples\": 3")
            || String::from_utf8_lossy(&model).contains("\"samples\":3")
    );
}
