//! Placement benchmark: 100,000 pending jobs on 1,000 simulated agents.
//!
//! `cargo run --release -p aitbc-scheduler --bin placement-bench [-- JOBS AGENTS]`
//!
//! Reports (1) one placement pass over the whole backlog (what fits is placed, the rest gets a
//! pending reason), (2) draining the backlog in rounds (every placed job finishes before the
//! next round), and (3) the latency of placing one new job on a loaded cluster.

use aitbc_protocol::tx::Serves;
use aitbc_protocol::{Address, Keypair};
use aitbc_scheduler::metrics::percentile;
use aitbc_scheduler::placement::{place, AgentCapacity, JobRequest, Policy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn addr(i: u32) -> Address {
    let mut b = [7u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    Keypair::from_secret(b).address()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_jobs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let n_agents: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000);
    let mut rng = StdRng::seed_from_u64(42);
    let providers: Vec<Address> = (0..50).map(addr).collect();
    let customers: Vec<Address> = (1000..1500).map(addr).collect();
    let agents: Vec<AgentCapacity> = (0..n_agents)
        .map(|i| {
            let gpus = [2usize, 4, 8, 8][i % 4];
            let mem = [24_576u64, 40_960, 81_920][i % 3];
            let owner = providers[i % providers.len()];
            // A third of the agents serve only their owner; the rest serve any provider.
            let serves = if i % 3 == 0 {
                Serves::Providers(vec![owner])
            } else {
                Serves::AnyProvider
            };
            AgentCapacity {
                owner,
                serves,
                devices: vec![mem; gpus],
                free_devices: vec![mem; gpus],
                leases: vec![],
            }
        })
        .collect();
    let jobs: Vec<JobRequest> = (0..n_jobs)
        .map(|i| {
            let gpus = [1u32, 1, 1, 2, 2, 4, 8][rng.gen_range(0..7)];
            JobRequest {
                job_id: format!("job-{i:08}"),
                customer: customers[rng.gen_range(0..customers.len())],
                provider: if rng.gen_bool(0.7) {
                    Some(providers[rng.gen_range(0..providers.len())])
                } else {
                    None
                },
                gpus,
                memory_mib: u64::from(gpus) * rng.gen_range(1_000..24_000),
                time_limit_secs: rng.gen_range(60..3600),
                waiting_ms: rng.gen_range(0..60_000),
                avoid: vec![],
            }
        })
        .collect();
    let total_gpus: usize = agents.iter().map(|a| a.devices.len()).sum();
    println!("placement-bench: {n_jobs} pending jobs, {n_agents} agents, {total_gpus} GPUs");
    let policy = Policy::default();

    // (1) One pass over the whole backlog.
    let t = Instant::now();
    let plan = place(&jobs, &agents, &policy);
    let pass = t.elapsed();
    let placed_gpus: u32 = plan.assignments.iter().map(|a| jobs[a.job].gpus).sum();
    println!(
        "one pass: {:.1} ms for {n_jobs} jobs ({:.0} jobs decided/s); {} placed using {placed_gpus} GPUs, {} pending ({} can never fit), {} reservations",
        pass.as_secs_f64() * 1e3,
        n_jobs as f64 / pass.as_secs_f64(),
        plan.assignments.len(),
        plan.unplaced.len(),
        plan.unplaced.iter().filter(|u| u.impossible).count(),
        plan.reserved.len()
    );

    // (2) Drain: each round every placed job finishes before the next.
    let mut pending: Vec<JobRequest> = jobs.clone();
    let mut rounds = 0;
    let mut compute = 0f64;
    let mut placed_total = 0usize;
    loop {
        let t = Instant::now();
        let plan = place(&pending, &agents, &policy);
        compute += t.elapsed().as_secs_f64();
        rounds += 1;
        if plan.assignments.is_empty() {
            break;
        }
        placed_total += plan.assignments.len();
        let mut keep = vec![true; pending.len()];
        for a in &plan.assignments {
            keep[a.job] = false;
        }
        let mut i = 0;
        pending.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
        for p in &mut pending {
            p.waiting_ms += 10_000;
        }
    }
    println!(
        "drain: {placed_total} jobs placed in {rounds} rounds, {:.1} ms placement compute in total ({:.0} jobs placed/s); {} never placeable",
        compute * 1e3,
        placed_total as f64 / compute,
        pending.len()
    );

    // (3) Latency of placing one new job on a half-loaded cluster.
    let mut loaded = agents.clone();
    for (i, a) in loaded.iter_mut().enumerate() {
        let keep = a.free_devices.len() / 2 + i % 2;
        a.free_devices.truncate(keep.min(a.free_devices.len()));
    }
    let mut lat = Vec::with_capacity(10_000);
    for j in jobs.iter().take(10_000) {
        let t = Instant::now();
        let plan = place(std::slice::from_ref(j), &loaded, &policy);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(plan);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "single job on {n_agents} half-loaded agents: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(0.0)
    );
    // (4) Persisting the scheduler's state with one record per backlog job.
    let mut state = aitbc_scheduler::state::State::default();
    for j in &jobs {
        let spec = aitbc_protocol::tx::JobSpec {
            gpus: j.gpus,
            memory_mib: j.memory_mib,
            time_limit_secs: j.time_limit_secs,
            prompt: "a red square".into(),
            ..Default::default()
        };
        state.jobs.insert(
            j.job_id.clone(),
            aitbc_scheduler::state::JobRecord {
                job_id: j.job_id.clone(),
                customer: j.customer.to_string(),
                listing_id: j.provider.map(|_| "svc-0123456789abcdef".to_string()),
                provider: j.provider.map(|p| p.to_string()),
                spec,
                phase: aitbc_scheduler::state::Phase::Pending,
                chain_status: "pending".into(),
                agent_id: None,
                agent_key: None,
                lease_id: None,
                gpu_indexes: vec![],
                progress: 0,
                attempts: 0,
                failed_agents: vec![],
                pending_reason: "waiting for 2 free GPU(s) with 4096 MiB together on one agent"
                    .into(),
                message: String::new(),
                result_digest: String::new(),
                settlement_tx: None,
                refund_tx: None,
                receipt_hex: None,
                stop_requested: false,
                submitted_height: 1,
                deadline_height: 7201,
                deadline_ms: 0,
                first_seen_ms: 0,
                updated_at_ms: 0,
            },
        );
    }
    match tempfile_dir() {
        Some(dir) => match aitbc_scheduler::state::StateStore::open(&dir) {
            Ok(store) => {
                let t = Instant::now();
                let snapshot = state.clone();
                let saved = store.save(&snapshot);
                let took = t.elapsed();
                let size = std::fs::metadata(store.path())
                    .map(|m| m.len())
                    .unwrap_or(0);
                match saved {
                    Ok(()) => println!(
                        "state file with {} job records: {:.1} MB, clone + write + fsync {:.1} ms",
                        state.jobs.len(),
                        size as f64 / 1e6,
                        took.as_secs_f64() * 1e3
                    ),
                    Err(e) => println!("state file: {e}"),
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e) => println!("state file: {e}"),
        },
        None => println!("state file: no temporary directory"),
    }
    if pass.as_secs_f64() >= 1.0 {
        println!(
            "WARNING: one pass over the backlog took {:.2} s (target < 1 s)",
            pass.as_secs_f64()
        );
    }
}

fn tempfile_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("placement-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}
