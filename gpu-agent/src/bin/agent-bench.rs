//! Job dispatch overhead of the agent: runs N tiny jobs (`/bin/true`) one after another and
//! prints p50/p99 of (a) run request accepted -> process started and (b) process exited ->
//! signed receipt stored, as measured inside the agent, plus (c) the scheduler's view: a signed
//! RunJob gRPC round trip (which returns once the process has started).
//!
//! cargo run --release -p aitbc-gpu-agent --bin agent-bench -- [--jobs 1000]

use aitbc_gpu_agent::agent::{Agent, JobRequest};
use aitbc_gpu_agent::config::{AgentConfig, DeclaredGpu};
use aitbc_gpu_agent::inventory::Inventory;
use aitbc_gpu_agent::nvml::{BackendError, GpuBackend};
use aitbc_gpu_agent::{api, AgentClient};
use aitbc_protocol::tx::{JobSpec, Runtime};
use aitbc_protocol::Keypair;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut us: Vec<u64>) {
    us.sort_unstable();
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name:<44} n={:<5} p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms",
        us.len(),
        ms(percentile(&us, 50.0)),
        ms(percentile(&us, 99.0)),
        ms(*us.last().unwrap_or(&0))
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut jobs = 1000usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--jobs" => {
                jobs = args
                    .next()
                    .context("--jobs needs a number")?
                    .parse()
                    .context("--jobs needs a number")?
            }
            other => anyhow::bail!("unknown argument {other:?}; usage: agent-bench [--jobs N]"),
        }
    }
    let state_dir = std::env::temp_dir().join(format!("aitbc-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)?;
    let scheduler = Keypair::generate();
    let mut c = AgentConfig::new(&state_dir, "aitbc-bench", "bench-node");
    c.declared_gpus = vec![DeclaredGpu {
        model: "Simulated GPU".into(),
        memory_mib: 16_384,
        uuid: None,
    }];
    c.disable_nvml = true;
    c.scheduler_keys = vec![scheduler.public()];
    let inv = Inventory::detect(&c.agent_id, &c.declared_gpus, true, || {
        Err::<Box<dyn GpuBackend>, _>(BackendError("bench".into()))
    });
    let agent = Agent::open(c, Keypair::generate(), inv)?;
    let customer = Keypair::generate().address().to_string();
    let runtime = Runtime {
        command: vec!["/bin/true".into()],
        ..Default::default()
    };
    let spec = JobSpec {
        gpus: 1,
        memory_mib: 1024,
        time_limit_secs: 60,
        ..Default::default()
    };

    let mut spawn_us = Vec::with_capacity(jobs);
    let mut receipt_us = Vec::with_capacity(jobs);
    let t = Instant::now();
    for i in 0..jobs {
        let id = format!("bench-{i}");
        agent.run_job(JobRequest {
            job_id: id.clone(),
            customer: customer.clone(),
            spec: spec.clone(),
            runtime: runtime.clone(),
            ..Default::default()
        })?;
        let rec = agent.wait_job(&id).await?;
        anyhow::ensure!(
            rec.receipt.is_some() && rec.exit_code == Some(0),
            "job {id} did not succeed: {}",
            rec.message
        );
        spawn_us.push(rec.timings.request_to_spawn_us);
        receipt_us.push(rec.timings.exit_to_receipt_us);
    }
    let lib_elapsed = t.elapsed();

    let (addr, _server) = api::spawn_server(
        agent.clone(),
        "127.0.0.1:0".parse()?,
        std::future::pending(),
    )
    .await?;
    let mut client = AgentClient::connect(format!("http://{addr}"), scheduler).await?;
    let mut rpc_us = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let id = format!("rpc-{i}");
        let t0 = Instant::now();
        let r = client
            .run_job(&id, &customer, &spec, &runtime, vec![], None)
            .await?;
        rpc_us.push(t0.elapsed().as_micros() as u64);
        anyhow::ensure!(r.phase == "running", "job {id}: {}", r.message);
        agent.wait_job(&id).await?;
    }

    println!("agent-bench: {jobs} jobs of /bin/true, 1 simulated GPU, sequential ({:.1} jobs/s in-process)", jobs as f64 / lib_elapsed.as_secs_f64().max(1e-9));
    report("run request -> process started (agent)", spawn_us);
    report("process exited -> signed receipt stored", receipt_us);
    report("signed RunJob gRPC round trip (scheduler)", rpc_us);
    tokio::time::sleep(Duration::from_millis(10)).await;
    std::fs::remove_dir_all(&state_dir)
        .with_context(|| format!("removing {}", state_dir.display()))?;
    Ok(())
}
