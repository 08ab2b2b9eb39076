//! The gRPC API on a real server (127.0.0.1:0, in process): authentication and the main calls.

mod common;

use aitbc_gpu_agent::api;
use aitbc_gpu_agent::auth::{methods, sign_request, sign_request_at};
use aitbc_gpu_agent::client::{decode_receipt, run_job_request, AgentClient};
use aitbc_gpu_agent::time::now_ms;
use aitbc_protocol::agent_pb as pb;
use aitbc_protocol::registration::verify_registration;
use aitbc_protocol::tx::{Action, JobSpec, Serves};
use aitbc_protocol::{Address, Keypair};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

async fn start(
    gpus: usize,
    scheduler: &Keypair,
) -> (
    tempfile::TempDir,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), gpus, vec![scheduler.public()]);
    let owner = Keypair::generate().address();
    c.owner = Some(owner);
    c.serves = Serves::Providers(vec![owner]);
    let agent = open(c, Keypair::generate());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, _h) = api::spawn_server(agent, "127.0.0.1:0".parse().unwrap(), async {
        let _ = rx.await;
    })
    .await
    .unwrap();
    (dir, addr, tx)
}

fn spec(gpus: u32) -> JobSpec {
    JobSpec {
        gpus,
        time_limit_secs: 30,
        ..Default::default()
    }
}

#[tokio::test]
async fn unsigned_stranger_and_tampered_run_calls_are_refused_and_a_signed_one_runs() {
    let scheduler = Keypair::generate();
    let (_dir, addr, _stop) = start(2, &scheduler).await;
    let url = format!("http://{addr}");
    let who = customer();
    let rt = shell("echo out > $AITBC_OUTPUT_DIR/result.txt; echo AITBC_PROGRESS 60");

    let mut raw = pb::agent_client::AgentClient::connect(url.clone())
        .await
        .unwrap();
    let msg = run_job_request("job-a", &who, &spec(1), &rt, vec![], None).unwrap();
    let e = raw.run_job(msg.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    let mut stranger = AgentClient::connect(url.clone(), Keypair::generate())
        .await
        .unwrap();
    let e = stranger
        .run_job("job-a", &who, &spec(1), &rt, vec![], None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        e.message().contains("not an authorized scheduler key"),
        "{}",
        e.message()
    );

    // Signed for one message, sent with another.
    let signed = sign_request(&scheduler, methods::RUN_JOB, msg.clone());
    let mut swapped = tonic::Request::new(pb::RunJobRequest {
        job_id: "job-b".into(),
        ..msg.clone()
    });
    *swapped.metadata_mut() = signed.metadata().clone();
    assert_eq!(
        raw.run_job(swapped).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Signed for another method.
    let wrong_method = sign_request(&scheduler, methods::CANCEL_JOB, msg.clone());
    assert_eq!(
        raw.run_job(wrong_method).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Too old.
    let stale = sign_request_at(
        &scheduler,
        methods::RUN_JOB,
        msg.clone(),
        now_ms() - 120_000,
    );
    assert_eq!(
        raw.run_job(stale).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A signed call runs; replaying the identical signed request is refused.
    let ts = now_ms();
    let ok = raw
        .run_job(sign_request_at(
            &scheduler,
            methods::RUN_JOB,
            msg.clone(),
            ts,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.phase, "running");
    assert_eq!(ok.gpu_indexes.len(), 1);
    let replay = raw
        .run_job(sign_request_at(&scheduler, methods::RUN_JOB, msg, ts))
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated);
    assert!(replay.message().contains("replay"));

    let mut client = AgentClient::connect(url, scheduler.clone()).await.unwrap();
    let last = client.wait_job("job-a").await.unwrap();
    assert_eq!(last.phase, "succeeded");
    let result = client.get_job("job-a").await.unwrap();
    assert_eq!(result.outputs.len(), 1);
    assert_eq!(result.stdout.unwrap().head, b"AITBC_PROGRESS 60\n");
    let receipt = client.receipt("job-a").await.unwrap().unwrap();
    assert_eq!(receipt.receipt.output_digest.to_hex(), result.output_digest);
    let mut bad = result.receipt.clone();
    let last_byte = bad.len() - 1;
    bad[last_byte] ^= 1;
    assert!(decode_receipt(&bad).is_err());
    assert_eq!(
        client.fetch_output("job-a", "result.txt", 0).await.unwrap(),
        b"out\n"
    );
    assert_eq!(
        client
            .fetch_output("job-a", "nope", 0)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // A signed job that runs long can be cancelled by the scheduler only.
    client
        .run_job("job-long", &who, &spec(1), &shell("sleep 30"), vec![], None)
        .await
        .unwrap();
    assert_eq!(
        stranger.cancel_job("job-long").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(client.cancel_job("job-long").await.unwrap().cancelled);
    assert_eq!(
        client.wait_job("job-long").await.unwrap().phase,
        "cancelled"
    );
    let listed = client
        .raw()
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn read_only_calls_leases_history_and_stress_over_grpc() {
    let scheduler = Keypair::generate();
    let (_dir, addr, _stop) = start(2, &scheduler).await;
    let mut client = AgentClient::connect(format!("http://{addr}"), scheduler.clone())
        .await
        .unwrap();

    let inv = client.inventory().await.unwrap();
    assert!(inv.simulated);
    assert_eq!(inv.source, "declared");
    assert_eq!(inv.gpus.len(), 2);
    assert!(inv
        .gpus
        .iter()
        .all(|g| g.simulated && g.model == "Simulated A100" && g.memory_total_mib == 16_384));

    let st = client.status().await.unwrap();
    assert_eq!(
        (st.agent_id.as_str(), st.chain_id.as_str(), st.gpu_count),
        ("test-node", "aitbc-test", 2)
    );
    // The registration the owner sends, with the agent's proof for that owner and chain; the
    // agent serves its owner's listings only.
    let owner: Address = st.owner.parse().unwrap();
    assert_eq!(st.serves, vec![owner.to_string()]);
    match borsh::from_slice::<Action>(&st.register_action).unwrap() {
        Action::RegisterAgent {
            agent_key,
            agent_id,
            serves,
            proof,
        } => {
            assert_eq!(
                (agent_key.to_hex(), agent_id.as_str(), &serves),
                (
                    st.agent_key.clone(),
                    "test-node",
                    &Serves::Providers(vec![owner])
                )
            );
            let verify = |o: &Address| {
                verify_registration(&agent_key, &st.chain_id, o, &agent_id, &serves, &proof)
            };
            assert!(verify(&owner).is_ok());
            assert!(verify(&customer().parse().unwrap()).is_err());
        }
        other => panic!("unexpected {other:?}"),
    }
    // Without an owner there is nothing to sign for: the field is empty.
    let bare = tempfile::tempdir().unwrap();
    let unowned = open(config(bare.path(), 0, vec![]), Keypair::generate());
    assert!(unowned.status().register_action.is_none());

    let holder = customer();
    let lease = client
        .allocate_lease(&holder, 2, 20_000, 60, Some("bid-1"))
        .await
        .unwrap();
    assert_eq!(lease.gpu_indexes, vec![0, 1]);
    let e = client
        .allocate_lease(&customer(), 1, 0, 60, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(client.list_leases(Some(&holder)).await.unwrap().len(), 1);
    let mut stranger = AgentClient::connect(format!("http://{addr}"), Keypair::generate())
        .await
        .unwrap();
    assert_eq!(
        stranger.deallocate_lease("bid-1").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(client.deallocate_lease("bid-1").await.unwrap());
    assert!(!client.deallocate_lease("bid-1").await.unwrap());

    let hist = client.metrics_history("5m", 10, None).await.unwrap();
    assert!(hist.simulated && hist.gpus.len() == 2);
    let e = client
        .metrics_history("5 parsecs", 0, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = client.stress_memory(0, 1024, 1).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("simulated"), "{}", e.message());

    let e = client.get_job("missing").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn metrics_and_health_are_served_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), 1);
    a.sample();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, aitbc_gpu_agent::metrics::router(a)).await });
    for (path, want) in [
        ("/healthz", "ok"),
        ("/metrics", "aitbc_agent_gpu_memory_total_mib{"),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.0 200"), "{body}");
        assert!(body.contains(want), "{body}");
    }
}
