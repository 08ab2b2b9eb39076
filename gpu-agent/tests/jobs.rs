//! Jobs end to end through the agent library: outputs, digests, receipts, limits, restarts.

mod common;

use aitbc_gpu_agent::agent::{AgentError, JobRequest};
use aitbc_gpu_agent::digest;
use aitbc_gpu_agent::jobs::JobPhase;
use aitbc_gpu_agent::leases::LeaseRequest;
use aitbc_protocol::tx::{JobKind, JobSpec, Runtime};
use aitbc_protocol::Keypair;
use common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_successful_job_keeps_outputs_digest_and_a_verifiable_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 2);
    let mut req = job(
        "job-ok",
        "echo hello > $AITBC_OUTPUT_DIR/a.txt; mkdir -p $AITBC_OUTPUT_DIR/d; printf x > $AITBC_OUTPUT_DIR/d/b; \
         echo AITBC_PROGRESS 50; cat \"$AITBC_INPUT\"; echo \"prompt=$AITBC_PROMPT k=$AITBC_PARAM_TOP_K\"",
        1,
    );
    req.input = b"input bytes\n".to_vec();
    req.spec.params = vec![("top-k".into(), "5".into())];
    let started = a.run_job(req).unwrap();
    assert_eq!(started.phase, JobPhase::Running);
    assert_eq!(started.gpu_indexes.len(), 1);
    let rec = a.wait_job("job-ok").await.unwrap();
    assert_eq!(rec.phase, JobPhase::Succeeded, "{rec:?}");
    assert_eq!(rec.exit_code, Some(0));
    assert_eq!(rec.progress, Some(100));
    assert_eq!(
        rec.stdout.to_text(),
        "AITBC_PROGRESS 50\ninput bytes\nprompt=a test k=5\n"
    );
    let paths: Vec<&str> = rec.outputs.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["a.txt", "d/b"]);
    let out_dir = dir.path().join("jobs/job-ok/output");
    assert_eq!(
        rec.output_digest,
        Some(digest::digest_dir(&out_dir).unwrap().1)
    );

    let receipt = rec.receipt.clone().unwrap();
    assert!(receipt.verify().is_ok());
    assert_eq!(receipt.receipt.agent_key, a.public_key());
    assert_eq!(receipt.receipt.job_id, "job-ok");
    assert_eq!(receipt.receipt.chain_id, "aitbc-test");
    assert!(receipt.receipt.success);
    assert_eq!(receipt.receipt.output_digest, rec.output_digest.unwrap());
    assert_eq!(
        receipt.receipt.usage.gpu_seconds,
        receipt.receipt.usage.wall_ms.div_ceil(1000)
    );
    let mut tampered = receipt.clone();
    tampered.receipt.output_digest = aitbc_protocol::Hash::ZERO;
    assert!(tampered.verify().is_err());
    let mut forged = receipt;
    forged.receipt.agent_key = Keypair::generate().public();
    assert!(forged.verify().is_err());

    let (data, _) = a.read_output("job-ok", "a.txt", 0).unwrap();
    assert_eq!(data, b"hello\n");
    assert!(matches!(
        a.read_output("job-ok", "a.txt", 3),
        Err(AgentError::OutOfRange(_))
    ));
    assert!(matches!(
        a.read_output("job-ok", "../job.json", 0),
        Err(AgentError::NotFound(_))
    ));
    // The GPU is free again and the id cannot be reused.
    assert_eq!(a.status().free_gpus, 2);
    assert!(matches!(
        a.run_job(job("job-ok", "true", 0)),
        Err(AgentError::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn failure_time_limit_cancellation_and_unstartable_commands() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 1);
    a.run_job(job("fails", "echo bad >&2; exit 7", 0)).unwrap();
    let rec = a.wait_job("fails").await.unwrap();
    assert_eq!((rec.phase, rec.exit_code), (JobPhase::Failed, Some(7)));
    assert_eq!(rec.stderr.to_text(), "bad\n");
    let r = rec.receipt.unwrap();
    assert!(!r.receipt.success && r.verify().is_ok());
    assert_eq!(r.receipt.exit_code, Some(7));

    let mut slow = job("slow", "sleep 30", 1);
    slow.spec.time_limit_secs = 1;
    let t = Instant::now();
    a.run_job(slow).unwrap();
    let rec = a.wait_job("slow").await.unwrap();
    assert_eq!(rec.phase, JobPhase::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(rec.exit_code, None);
    assert!(rec.message.contains("time limit"), "{}", rec.message);

    a.run_job(job("cancel-me", "sleep 30", 1)).unwrap();
    assert_eq!(a.status().free_gpus, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.cancel_job("cancel-me", "customer withdrew").unwrap(),
        (true, JobPhase::Running)
    );
    let rec = a.wait_job("cancel-me").await.unwrap();
    assert_eq!(rec.phase, JobPhase::Cancelled);
    assert_eq!(rec.message, "customer withdrew");
    assert!(!rec.receipt.unwrap().receipt.success);
    assert_eq!(
        a.cancel_job("cancel-me", "again").unwrap(),
        (false, JobPhase::Cancelled)
    );
    assert_eq!(a.status().free_gpus, 1);

    let mut bad = job("no-such-program", "", 1);
    bad.runtime.command = vec!["/nonexistent/runtime".into()];
    let started = a.run_job(bad).unwrap();
    assert_eq!(started.phase, JobPhase::Failed);
    assert!(
        started.message.contains("cannot start"),
        "{}",
        started.message
    );
    assert!(a
        .job("no-such-program")
        .unwrap()
        .receipt
        .unwrap()
        .verify()
        .is_ok());
    assert_eq!(a.status().free_gpus, 1);
}

#[tokio::test]
async fn huge_output_is_bounded_and_says_how_much_was_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 0);
    a.run_job(job(
        "loud",
        "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo END",
        0,
    ))
    .unwrap();
    let rec = a.wait_job("loud").await.unwrap();
    assert_eq!(rec.phase, JobPhase::Succeeded);
    assert_eq!(rec.stdout.total_bytes, 3_000_005);
    assert_eq!(rec.stdout.head.len(), 1024);
    assert_eq!(rec.stdout.tail.len(), 1024);
    assert_eq!(rec.stdout.dropped_bytes, 3_000_005 - 2048);
    assert!(rec.stdout.tail.ends_with(b"\nEND\n"));
    assert!(rec.stdout.to_text().contains("bytes dropped"));
}

#[tokio::test]
async fn only_the_assigned_gpus_are_visible() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 4);
    let lease = a
        .allocate_lease(LeaseRequest {
            holder: customer(),
            gpus: 1,
            memory_mib: 0,
            duration_ms: 60_000,
            lease_id: None,
        })
        .unwrap();
    let script = "echo \"$CUDA_VISIBLE_DEVICES|$AITBC_GPU_INDEXES\" > $AITBC_OUTPUT_DIR/env";
    let mut req = job("two-gpus", script, 2);
    req.runtime.env = vec![("CUDA_VISIBLE_DEVICES".into(), "0,1,2,3".into())];
    let started = a.run_job(req).unwrap();
    assert!(
        !started
            .gpu_indexes
            .iter()
            .any(|g| lease.gpu_indexes.contains(g)),
        "job must not use leased GPUs"
    );
    a.wait_job("two-gpus").await.unwrap();
    let (env, _) = a.read_output("two-gpus", "env", 0).unwrap();
    let idx: Vec<String> = started.gpu_indexes.iter().map(u32::to_string).collect();
    assert_eq!(
        String::from_utf8(env).unwrap(),
        format!("{}|{}\n", idx.join(","), idx.join(","))
    );

    a.run_job(job("no-gpus", script, 0)).unwrap();
    a.wait_job("no-gpus").await.unwrap();
    assert_eq!(a.read_output("no-gpus", "env", 0).unwrap().0, b"|\n");

    // Inside the customer's lease the job gets the lease's GPU.
    let mut inside = job("in-lease", script, 1);
    inside.customer = lease.holder.clone();
    inside.lease_id = Some(lease.id.clone());
    assert_eq!(a.run_job(inside).unwrap().gpu_indexes, lease.gpu_indexes);
    let mut stranger = job("not-yours", script, 1);
    stranger.lease_id = Some(lease.id.clone());
    assert!(matches!(
        a.run_job(stranger),
        Err(AgentError::PermissionDenied(_))
    ));
    let mut too_many = job("too-many", script, 4);
    too_many.spec.gpus = 4;
    assert!(matches!(
        a.run_job(too_many),
        Err(AgentError::ResourceExhausted(_))
    ));
    a.wait_job("in-lease").await.unwrap();
}

#[tokio::test]
async fn demo_runtime_renders_a_png_and_trains_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 1);
    let inference = JobRequest {
        job_id: "demo-image".into(),
        customer: customer(),
        spec: JobSpec {
            kind: Some(JobKind::Inference),
            prompt: "a lighthouse at dusk".into(),
            gpus: 1,
            params: vec![("resolution".into(), "64x48".into())],
            ..Default::default()
        },
        runtime: Runtime::default(),
        ..Default::default()
    };
    a.run_job(inference).unwrap();
    let rec = a.wait_job("demo-image").await.unwrap();
    assert_eq!(rec.phase, JobPhase::Succeeded, "{}", rec.stderr.to_text());
    assert!(rec.stdout.to_text().contains("AITBC_PROGRESS 100"));
    let (png_bytes, _) = a.read_output("demo-image", "image.png", 0).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (64, 48));
    let (result, _) = a.read_output("demo-image", "result.txt", 0).unwrap();
    assert!(String::from_utf8(result)
        .unwrap()
        .contains("prompt: a lighthouse at dusk"));

    let training = JobRequest {
        job_id: "demo-train".into(),
        customer: customer(),
        spec: JobSpec {
            kind: Some(JobKind::Training),
            params: vec![("epochs".into(), "300".into())],
            ..Default::default()
        },
        input: b"x1,x2,y\n0,0,1\n1,0,3\n0,1,0\n1,1,2\n2,1,4\n1,2,1\n".to_vec(),
        ..Default::default()
    };
    a.run_job(training).unwrap();
    let rec = a.wait_job("demo-train").await.unwrap();
    assert_eq!(rec.phase, JobPhase::Succeeded, "{}", rec.stderr.to_text());
    let (model, _) = a.read_output("demo-train", "model.json", 0).unwrap();
    let model: serde_json::Value = serde_json::from_slice(&model).unwrap();
    assert_eq!(model["kind"], "linear");
    assert_eq!(model["samples"], 6);
    // y = 1 + 2*x1 - x2 exactly.
    let w = model["weights"].as_array().unwrap();
    assert!((w[0].as_f64().unwrap() - 2.0).abs() < 0.05, "{model}");
    assert!((w[1].as_f64().unwrap() + 1.0).abs() < 0.05, "{model}");
    assert!(model["loss"].as_f64().unwrap() < model["initial_loss"].as_f64().unwrap());
}

#[tokio::test]
async fn results_and_leases_survive_a_restart_and_running_jobs_are_failed() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::generate();
    let first = open(config(dir.path(), 2, vec![]), key.clone());
    first
        .run_job(job("done-before", "echo kept > $AITBC_OUTPUT_DIR/out", 0))
        .unwrap();
    let done = first.wait_job("done-before").await.unwrap();
    first.run_job(job("interrupted", "sleep 30", 1)).unwrap();
    let holder = customer();
    let lease = first
        .allocate_lease(LeaseRequest {
            holder: holder.clone(),
            gpus: 1,
            memory_mib: 0,
            duration_ms: 600_000,
            lease_id: Some("bid-7".into()),
        })
        .unwrap();

    // A second agent over the same state directory behaves as the restarted agent.
    let second = open(config(dir.path(), 2, vec![]), key);
    let kept = second.job("done-before").unwrap();
    assert_eq!(kept.receipt, done.receipt);
    assert_eq!(
        second.read_output("done-before", "out", 0).unwrap().0,
        b"kept\n"
    );
    let lost = second.job("interrupted").unwrap();
    assert_eq!(lost.phase, JobPhase::Failed);
    assert!(lost.message.contains("agent restarted"));
    let r = lost.receipt.unwrap();
    assert!(r.verify().is_ok() && !r.receipt.success);
    assert_eq!(second.leases(Some(&holder)), vec![lease]);
    first.cancel_job("interrupted", "test cleanup").unwrap();
    first.wait_job("interrupted").await.unwrap();
}

#[tokio::test]
async fn inventory_status_history_and_metrics_of_simulated_and_empty_agents() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 2);
    let st = a.status();
    assert_eq!((st.gpu_count, st.free_gpus, st.simulated), (2, 2, true));
    assert_eq!(st.inventory_source, "declared");
    assert!(st.reason.contains("simulated"));
    a.run_job(job("busy", "sleep 2", 1)).unwrap();
    a.sample();
    let inv = a.inventory();
    assert!(inv.gpus.iter().all(|g| g.simulated));
    assert_eq!(
        inv.gpus
            .iter()
            .filter(|g| g.busy && g.reading.utilization_percent == 100)
            .count(),
        1
    );
    assert_eq!(
        inv.gpus
            .iter()
            .map(|g| g.reading.memory_used_mib)
            .sum::<u64>(),
        1024
    );
    let hist: usize = (0..2)
        .map(|g| a.history().query(g, u64::MAX / 2, u64::MAX / 2, 0).len())
        .sum();
    assert_eq!(hist, 2);
    let text = a.metrics().render();
    assert!(
        text.contains("aitbc_agent_gpu_utilization_percent{"),
        "{text}"
    );
    assert!(text.contains("simulated=\"true\""));
    let err = a.stress_memory(0, 1024, 1).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::FailedPrecondition(m) if m.contains("simulated")),
        "{err}"
    );
    a.cancel_job("busy", "done").unwrap();
    a.wait_job("busy").await.unwrap();

    let empty_dir = tempfile::tempdir().unwrap();
    let empty = agent(empty_dir.path(), 0);
    let st = empty.status();
    assert_eq!((st.gpu_count, st.inventory_source.as_str()), (0, "none"));
    assert!(st.reason.contains("zero GPUs"), "{}", st.reason);
    assert!(matches!(
        empty.run_job(job("needs-gpu", "true", 1)),
        Err(AgentError::ResourceExhausted(_))
    ));
    empty.run_job(job("cpu-only", "true", 0)).unwrap();
    assert_eq!(
        empty.wait_job("cpu-only").await.unwrap().phase,
        JobPhase::Succeeded
    );
}

#[tokio::test]
async fn invalid_requests_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 1);
    assert!(matches!(
        a.run_job(job("../escape", "true", 0)),
        Err(AgentError::InvalidArgument(_))
    ));
    let mut r = job("bad-customer", "true", 0);
    r.customer = "alice".into();
    assert!(matches!(a.run_job(r), Err(AgentError::InvalidArgument(_))));
    let lease = LeaseRequest {
        holder: "bob".into(),
        gpus: 1,
        memory_mib: 0,
        duration_ms: 60_000,
        lease_id: None,
    };
    assert!(matches!(
        a.allocate_lease(lease),
        Err(AgentError::InvalidArgument(_))
    ));
    let lease = LeaseRequest {
        holder: customer(),
        gpus: 1,
        memory_mib: 999_999,
        duration_ms: 60_000,
        lease_id: None,
    };
    assert!(matches!(
        a.allocate_lease(lease),
        Err(AgentError::ResourceExhausted(_))
    ));
}

#[tokio::test]
async fn shutdown_cancels_running_jobs_and_old_jobs_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 1);
    a.run_job(job("finished", "true", 0)).unwrap();
    let done = a.wait_job("finished").await.unwrap();
    a.run_job(job("long", "sleep 30", 1)).unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let rec = a.job("long").unwrap();
    assert_eq!(rec.phase, JobPhase::Cancelled);
    assert_eq!(rec.message, "agent shutting down");
    assert!(rec.receipt.unwrap().verify().is_ok());

    // Nothing is pruned within the retention; past it, the record and files go.
    let finished_at = done.finished_at_ms.unwrap();
    assert_eq!(a.prune_finished_jobs(finished_at + 1000), 0);
    let week = 7 * 24 * 3600 * 1000;
    assert_eq!(a.prune_finished_jobs(finished_at + week + 60_000), 2);
    assert!(matches!(a.job("finished"), Err(AgentError::NotFound(_))));
    assert!(!dir.path().join("jobs/finished").exists());
}
