//! Placement: a pure function from pending jobs and agent capacity to assignments.
//!
//! Rules (see README.md, "Placement"):
//! - gang placement: all GPUs of a job on one agent, or the job is not placed;
//! - a listing's job only on an agent that serves the listing's provider; a job without a
//!   listing on any agent;
//! - a customer's job uses that customer's lease first (GPUs leased to them on an agent);
//! - best fit: the agent with the fewest free GPUs that still fits, so whole agents stay free
//!   for large jobs;
//! - fairness: jobs are interleaved between customers (each customer's oldest job first), and
//!   a job that has waited longer than `aging_ms` goes before all others and, when it does not
//!   fit, reserves the agent that can hold it soonest: nothing else is placed there until it
//!   runs, so a stream of small jobs cannot starve it;
//! - a job larger than every eligible agent stays pending with a reason.
//!
//! GPU memory is modelled per device like the agent's own allocator
//! (`aitbc_gpu_agent::leases::choose_devices`): the job takes `gpus` free devices whose memory
//! together is at least `memory_mib`, the smallest such window by size.

use aitbc_protocol::tx::Serves;
use aitbc_protocol::Address;
use std::collections::HashMap;

/// A job waiting for placement.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub job_id: String,
    pub customer: Address,
    /// The listing's provider; `None` for a job without a listing (runs on any agent).
    pub provider: Option<Address>,
    pub gpus: u32,
    pub memory_mib: u64,
    pub time_limit_secs: u64,
    /// How long the job has waited for placement.
    pub waiting_ms: u64,
    /// Agents this job must not be placed on (e.g. where an earlier attempt failed), unless no
    /// other agent fits.
    pub avoid: Vec<usize>,
}

/// GPUs leased to one customer on an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseCapacity {
    pub lease_id: String,
    pub holder: Address,
    /// Memory (MiB) of each leased device not running a job.
    pub free_devices: Vec<u64>,
}

/// One agent's capacity as placement sees it.
#[derive(Clone, Debug)]
pub struct AgentCapacity {
    pub owner: Address,
    pub serves: Serves,
    /// Memory (MiB) of every device of the agent (for "larger than any agent").
    pub devices: Vec<u64>,
    /// Memory (MiB) of each device that is neither leased nor running a job.
    pub free_devices: Vec<u64>,
    pub leases: Vec<LeaseCapacity>,
}

/// Where a job goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Index into the jobs slice.
    pub job: usize,
    /// Index into the agents slice.
    pub agent: usize,
    /// Run inside this lease of the customer.
    pub lease_id: Option<String>,
    /// Memory (MiB) of the devices the job takes (its model of the agent's choice).
    pub devices: Vec<u64>,
}

/// Why a job stays pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    pub job: usize,
    pub reason: String,
    /// No eligible agent could ever hold the job, even empty.
    pub impossible: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    pub unplaced: Vec<Unplaced>,
    /// Agents reserved for aged jobs this round.
    pub reserved: Vec<usize>,
}

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// A job waiting at least this long is placed first and reserves capacity.
    pub aging_ms: u64,
    /// At most this many reservations per round (keeps the cluster from draining for many
    /// large jobs at once).
    pub max_reservations: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            aging_ms: 30_000,
            max_reservations: 16,
        }
    }
}

/// Picks `n` devices from `free` (sorted ascending) with at least `memory_mib` together: the
/// first window of `n` consecutive devices by size whose sum fits. Returns the window's start.
pub fn choose_window(free: &[u64], n: usize, memory_mib: u64) -> Option<usize> {
    if n == 0 {
        return Some(0);
    }
    if n > free.len() {
        return None;
    }
    let mut sum: u64 = free[..n].iter().fold(0u64, |a, b| a.saturating_add(*b));
    if sum >= memory_mib {
        return Some(0);
    }
    for s in 1..=free.len() - n {
        sum = sum
            .saturating_sub(free[s - 1])
            .saturating_add(free[s + n - 1]);
        if sum >= memory_mib {
            return Some(s);
        }
    }
    None
}

fn fits(free: &[u64], gpus: u32, memory_mib: u64) -> bool {
    choose_window(free, gpus as usize, memory_mib).is_some()
}

fn take(free: &mut Vec<u64>, gpus: u32, memory_mib: u64) -> Option<Vec<u64>> {
    let n = gpus as usize;
    let s = choose_window(free, n, memory_mib)?;
    Some(free.drain(s..s + n).collect())
}

fn eligible(job: &JobRequest, agent: &AgentCapacity) -> bool {
    match &job.provider {
        Some(p) => agent.serves.serves(p),
        None => true,
    }
}

/// Order of consideration: aged jobs (oldest first), then the others interleaved between
/// customers (each customer's k-th oldest job in round k), oldest first within a round,
/// shorter time limit first on ties.
fn order(jobs: &[JobRequest], policy: &Policy) -> Vec<usize> {
    let mut by_customer: HashMap<&Address, Vec<usize>> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        by_customer.entry(&j.customer).or_default().push(i);
    }
    let mut rank = vec![0usize; jobs.len()];
    for list in by_customer.values_mut() {
        list.sort_by(|a, b| jobs[*b].waiting_ms.cmp(&jobs[*a].waiting_ms).then(a.cmp(b)));
        for (r, i) in list.iter().enumerate() {
            rank[*i] = r;
        }
    }
    let mut idx: Vec<usize> = (0..jobs.len()).collect();
    idx.sort_by_key(|&i| {
        let j = &jobs[i];
        let aged = j.waiting_ms >= policy.aging_ms;
        (
            !aged,
            if aged { 0 } else { rank[i] },
            std::cmp::Reverse(j.waiting_ms),
            j.time_limit_secs,
            i,
        )
    });
    idx
}

/// Places `jobs` on `agents`. Pure: the same input gives the same plan. `agents` is not
/// changed; the plan says which devices each job takes.
pub fn place(jobs: &[JobRequest], agents: &[AgentCapacity], policy: &Policy) -> Plan {
    let mut free: Vec<Vec<u64>> = agents
        .iter()
        .map(|a| {
            let mut f = a.free_devices.clone();
            f.sort_unstable();
            f
        })
        .collect();
    let mut lease_free: Vec<Vec<Vec<u64>>> = agents
        .iter()
        .map(|a| {
            a.leases
                .iter()
                .map(|l| {
                    let mut f = l.free_devices.clone();
                    f.sort_unstable();
                    f
                })
                .collect()
        })
        .collect();
    let all_devices: Vec<Vec<u64>> = agents
        .iter()
        .map(|a| {
            let mut d = a.devices.clone();
            d.sort_unstable();
            d
        })
        .collect();
    // Buckets of agents by free device count, for best-fit search without scanning every agent.
    let max_dev = free.iter().map(Vec::len).max().unwrap_or(0);
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); max_dev + 1];
    let mut pos = vec![0usize; agents.len()];
    for (a, f) in free.iter().enumerate() {
        pos[a] = buckets[f.len()].len();
        buckets[f.len()].push(a);
    }
    let mut reserved = vec![false; agents.len()];
    let mut plan = Plan::default();
    // Customers that hold a lease anywhere: only their jobs look at leases.
    let mut lease_holders: HashMap<&Address, Vec<(usize, usize)>> = HashMap::new();
    for (a, ag) in agents.iter().enumerate() {
        for (l, lease) in ag.leases.iter().enumerate() {
            lease_holders.entry(&lease.holder).or_default().push((a, l));
        }
    }

    let mut impossible_cache: HashMap<(Option<Address>, u32, u64), Option<String>> = HashMap::new();
    for ji in order(jobs, policy) {
        let job = &jobs[ji];
        // 1. The customer's own leases first.
        if let Some(list) = lease_holders.get(&job.customer) {
            let mut placed = false;
            for &(a, l) in list {
                if reserved[a] || !eligible(job, &agents[a]) {
                    continue;
                }
                if let Some(devices) = take(&mut lease_free[a][l], job.gpus, job.memory_mib) {
                    plan.assignments.push(Assignment {
                        job: ji,
                        agent: a,
                        lease_id: Some(agents[a].leases[l].lease_id.clone()),
                        devices,
                    });
                    placed = true;
                    break;
                }
            }
            if placed {
                continue;
            }
        }
        // 2. Best fit among unleased free devices: fewest free devices first.
        let n = job.gpus as usize;
        let mut choice: Option<usize> = None;
        let mut avoided: Option<usize> = None;
        'search: for bucket in buckets.iter().skip(n) {
            for &a in bucket {
                if reserved[a]
                    || !eligible(job, &agents[a])
                    || !fits(&free[a], job.gpus, job.memory_mib)
                {
                    continue;
                }
                if job.avoid.contains(&a) {
                    avoided.get_or_insert(a);
                    continue;
                }
                choice = Some(a);
                break 'search;
            }
        }
        if let Some(a) = choice.or(avoided) {
            let before = free[a].len();
            let Some(devices) = take(&mut free[a], job.gpus, job.memory_mib) else {
                continue;
            };
            // Move the agent to its new bucket.
            let p = pos[a];
            buckets[before].swap_remove(p);
            if let Some(&moved) = buckets[before].get(p) {
                pos[moved] = p;
            }
            pos[a] = buckets[free[a].len()].len();
            buckets[free[a].len()].push(a);
            plan.assignments.push(Assignment {
                job: ji,
                agent: a,
                lease_id: None,
                devices,
            });
            continue;
        }
        // 3. Not placed: why, and reserve for an aged job. Whether any eligible agent could
        // hold the job at all depends only on its shape: cached per shape.
        let shape = (job.provider, job.gpus, job.memory_mib);
        let impossible = impossible_cache.entry(shape).or_insert_with(|| {
            let possible = (0..agents.len())
                .any(|a| eligible(job, &agents[a]) && fits(&all_devices[a], job.gpus, job.memory_mib));
            if possible {
                return None;
            }
            let eligible_count = agents.iter().filter(|a| eligible(job, a)).count();
            let largest = (0..agents.len())
                .filter(|&a| eligible(job, &agents[a]))
                .map(|a| all_devices[a].len())
                .max()
                .unwrap_or(0);
            Some(if eligible_count == 0 {
                match &job.provider {
                    Some(p) => format!("no agent serves provider {p}"),
                    None => "no agents are available".to_string(),
                }
            } else {
                format!(
                    "needs {} GPU(s) with {} MiB together; the largest eligible agent has {} GPU(s) and cannot hold it",
                    job.gpus, job.memory_mib, largest
                )
            })
        });
        if let Some(reason) = impossible {
            plan.unplaced.push(Unplaced {
                job: ji,
                reason: reason.clone(),
                impossible: true,
            });
            continue;
        }
        let aged = job.waiting_ms >= policy.aging_ms;
        let mut reason = format!(
            "waiting for {} free GPU(s) with {} MiB together on one agent",
            job.gpus, job.memory_mib
        );
        if aged && plan.reserved.len() < policy.max_reservations {
            // Reserve the candidate with the most free devices (the one that drains soonest).
            if let Some(a) = (0..agents.len())
                .filter(|&a| {
                    !reserved[a]
                        && eligible(job, &agents[a])
                        && fits(&all_devices[a], job.gpus, job.memory_mib)
                })
                .max_by_key(|&a| (free[a].len(), std::cmp::Reverse(a)))
            {
                reserved[a] = true;
                plan.reserved.push(a);
                reason.push_str(&format!("; agent #{a} is reserved for it"));
            }
        }
        plan.unplaced.push(Unplaced {
            job: ji,
            reason,
            impossible: false,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::Keypair;
    use proptest::prelude::*;

    fn addr(i: u8) -> Address {
        Keypair::from_secret([i.max(1); 32]).address()
    }

    fn agent(owner: u8, serves: Serves, gpus: usize, mem: u64) -> AgentCapacity {
        AgentCapacity {
            owner: addr(owner),
            serves,
            devices: vec![mem; gpus],
            free_devices: vec![mem; gpus],
            leases: vec![],
        }
    }

    fn job(
        id: &str,
        customer: u8,
        provider: Option<u8>,
        gpus: u32,
        mem: u64,
        waiting_ms: u64,
    ) -> JobRequest {
        JobRequest {
            job_id: id.into(),
            customer: addr(customer),
            provider: provider.map(addr),
            gpus,
            memory_mib: mem,
            time_limit_secs: 60,
            waiting_ms,
            avoid: vec![],
        }
    }

    #[test]
    fn two_gpu_training_job_lands_where_two_gpus_are_free() {
        let mut a0 = agent(1, Serves::AnyProvider, 2, 16384);
        a0.free_devices = vec![16384];
        let a1 = agent(1, Serves::AnyProvider, 2, 16384);
        let plan = place(
            &[job("j", 9, None, 2, 8192, 0)],
            &[a0, a1],
            &Policy::default(),
        );
        assert_eq!(plan.assignments.len(), 1);
        assert_eq!(plan.assignments[0].agent, 1);
    }

    #[test]
    fn job_larger_than_any_agent_stays_pending_with_reason() {
        let agents = vec![
            agent(1, Serves::AnyProvider, 2, 16384),
            agent(2, Serves::AnyProvider, 2, 16384),
        ];
        let plan = place(&[job("big", 9, None, 4, 1, 0)], &agents, &Policy::default());
        assert!(plan.assignments.is_empty());
        assert!(plan.unplaced[0].impossible);
        assert!(
            plan.unplaced[0].reason.contains("needs 4 GPU(s)"),
            "{}",
            plan.unplaced[0].reason
        );
        // Memory too: 2 GPUs of 16 GiB cannot hold 40 GiB.
        let plan = place(
            &[job("mem", 9, None, 2, 40_000, 0)],
            &agents,
            &Policy::default(),
        );
        assert!(plan.unplaced[0].impossible);
    }

    #[test]
    fn provider_jobs_only_on_agents_serving_the_provider() {
        let agents = vec![
            agent(5, Serves::Providers(vec![addr(5)]), 4, 1000),
            agent(6, Serves::Providers(vec![addr(6)]), 1, 1000),
        ];
        let plan = place(
            &[job("a", 9, Some(6), 1, 0, 0), job("b", 9, Some(6), 1, 0, 0)],
            &agents,
            &Policy::default(),
        );
        assert_eq!(plan.assignments.len(), 1);
        assert_eq!(plan.assignments[0].agent, 1);
        assert!(!plan.unplaced[0].impossible);
        let plan = place(
            &[job("c", 9, Some(7), 1, 0, 0)],
            &agents,
            &Policy::default(),
        );
        assert!(plan.unplaced[0].reason.contains("no agent serves provider"));
    }

    #[test]
    fn best_fit_keeps_whole_agents_free() {
        let mut small = agent(1, Serves::AnyProvider, 4, 1000);
        small.free_devices = vec![1000];
        let big = agent(1, Serves::AnyProvider, 4, 1000);
        let plan = place(
            &[job("one", 9, None, 1, 0, 0), job("four", 8, None, 4, 0, 0)],
            &[big, small],
            &Policy::default(),
        );
        assert_eq!(plan.assignments.len(), 2);
        let one = plan.assignments.iter().find(|a| a.job == 0).unwrap();
        assert_eq!(
            one.agent, 1,
            "the 1-GPU job takes the agent with one free GPU"
        );
    }

    #[test]
    fn customer_lease_is_used_first() {
        let mut a0 = agent(1, Serves::AnyProvider, 4, 1000);
        a0.free_devices = vec![1000, 1000];
        a0.leases = vec![LeaseCapacity {
            lease_id: "bid-1".into(),
            holder: addr(9),
            free_devices: vec![1000, 1000],
        }];
        let a1 = agent(1, Serves::AnyProvider, 4, 1000);
        let plan = place(
            &[job("j", 9, None, 2, 0, 0), job("k", 8, None, 2, 0, 0)],
            &[a0, a1],
            &Policy::default(),
        );
        let j = plan.assignments.iter().find(|a| a.job == 0).unwrap();
        assert_eq!(j.lease_id.as_deref(), Some("bid-1"));
        let k = plan.assignments.iter().find(|a| a.job == 1).unwrap();
        assert_eq!(k.lease_id, None);
    }

    #[test]
    fn avoided_agent_used_only_when_nothing_else_fits() {
        let agents = vec![
            agent(1, Serves::AnyProvider, 1, 1000),
            agent(1, Serves::AnyProvider, 1, 1000),
        ];
        let mut j = job("j", 9, None, 1, 0, 0);
        j.avoid = vec![0];
        let plan = place(std::slice::from_ref(&j), &agents, &Policy::default());
        assert_eq!(plan.assignments[0].agent, 1);
        let plan = place(&[j], &agents[..1], &Policy::default());
        assert_eq!(plan.assignments[0].agent, 0);
    }

    #[test]
    fn customers_are_interleaved() {
        let agents = vec![agent(1, Serves::AnyProvider, 2, 1000)];
        let mut jobs: Vec<JobRequest> = (0..5)
            .map(|i| job(&format!("a{i}"), 1, None, 1, 0, 1000 + i))
            .collect();
        jobs.push(job("b0", 2, None, 1, 0, 10));
        let plan = place(&jobs, &agents, &Policy::default());
        let placed: Vec<&str> = plan
            .assignments
            .iter()
            .map(|a| jobs[a.job].job_id.as_str())
            .collect();
        assert!(
            placed.contains(&"b0"),
            "customer 2 gets one of the two GPUs: {placed:?}"
        );
    }

    /// Simulation: a 2-GPU job on one 2-GPU agent, while 1-GPU jobs of other customers arrive
    /// every round and run for two rounds. Aging reserves the agent; the big job runs.
    #[test]
    fn big_job_is_not_starved_by_a_stream_of_small_ones() {
        let policy = Policy {
            aging_ms: 5,
            max_reservations: 4,
        };
        let mut running: Vec<(u64, u32)> = vec![]; // (ends at round, gpus)
        let mut pending: Vec<JobRequest> = vec![job("big", 1, None, 2, 0, 0)];
        let mut next = 0u64;
        for round in 0..50u64 {
            running.retain(|(end, _)| *end > round);
            let used: u32 = running.iter().map(|r| r.1).sum();
            let mut a = agent(1, Serves::AnyProvider, 2, 1000);
            a.free_devices = vec![1000; (2 - used) as usize];
            // Two small jobs arrive every round.
            for _ in 0..2 {
                next += 1;
                pending.push(job(
                    &format!("s{next}"),
                    (2 + next % 5) as u8,
                    None,
                    1,
                    0,
                    0,
                ));
            }
            let plan = place(&pending, &[a], &policy);
            let mut done = vec![];
            for asg in &plan.assignments {
                running.push((round + 2, pending[asg.job].gpus));
                done.push(asg.job);
                if pending[asg.job].job_id == "big" {
                    assert!(round < 10, "big job placed only at round {round}");
                    return;
                }
            }
            done.sort_unstable();
            for i in done.into_iter().rev() {
                pending.remove(i);
            }
            for p in &mut pending {
                p.waiting_ms += 1;
            }
        }
        panic!("the big job was starved");
    }

    /// One simulated round loop: agents of `sizes` GPUs, a big job needing all GPUs of the
    /// largest agent, `arrivals` small jobs (1..=2 GPUs) of other customers every round, each
    /// running `duration` rounds. Returns the round the big job was placed in.
    fn simulate_starvation(
        sizes: &[usize],
        arrivals: usize,
        duration: u64,
        rounds: u64,
    ) -> Option<u64> {
        let policy = Policy {
            aging_ms: 5,
            max_reservations: 4,
        };
        let big_gpus = sizes.iter().copied().max().unwrap_or(1) as u32;
        let mut running: Vec<(u64, usize, u32)> = vec![]; // (ends at round, agent, gpus)
        let mut pending: Vec<JobRequest> = vec![job("big", 1, None, big_gpus, 0, 0)];
        let mut next = 0u64;
        for round in 0..rounds {
            running.retain(|(end, _, _)| *end > round);
            let agents: Vec<AgentCapacity> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let used: u32 = running.iter().filter(|r| r.1 == i).map(|r| r.2).sum();
                    let mut a = agent(1, Serves::AnyProvider, n, 1000);
                    a.free_devices = vec![1000; n.saturating_sub(used as usize)];
                    a
                })
                .collect();
            for _ in 0..arrivals {
                next += 1;
                let g = 1 + (next % 2) as u32;
                pending.push(job(
                    &format!("s{next}"),
                    (2 + next % 5) as u8,
                    None,
                    g,
                    0,
                    0,
                ));
            }
            let plan = place(&pending, &agents, &policy);
            let mut done = vec![];
            for asg in &plan.assignments {
                if pending[asg.job].job_id == "big" {
                    return Some(round);
                }
                running.push((round + duration, asg.agent, pending[asg.job].gpus));
                done.push(asg.job);
            }
            done.sort_unstable();
            for i in done.into_iter().rev() {
                pending.remove(i);
            }
            for p in &mut pending {
                p.waiting_ms += 1;
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]
        /// Whatever the cluster and the stream of small jobs, the big job runs once it has aged
        /// and the jobs already running on the reserved agent have ended.
        #[test]
        fn big_job_is_never_starved(sizes in proptest::collection::vec(2usize..9, 1..4),
                                    arrivals in 1usize..6,
                                    duration in 1u64..5) {
            let placed = simulate_starvation(&sizes, arrivals, duration, 60);
            prop_assert!(placed.is_some(), "starved: sizes {sizes:?} arrivals {arrivals} duration {duration}");
            prop_assert!(placed.unwrap_or(u64::MAX) <= 5 + duration + 1, "placed late: {placed:?}");
        }
    }

    fn arb_agent() -> impl Strategy<Value = AgentCapacity> {
        (
            1u8..4,
            0usize..5,
            prop::bool::ANY,
            proptest::collection::vec(prop::sample::select(vec![8192u64, 16384, 40960]), 0..6),
        )
            .prop_map(|(owner, used, any, devices)| {
                let free_devices: Vec<u64> = devices
                    .iter()
                    .skip(used.min(devices.len()))
                    .copied()
                    .collect();
                AgentCapacity {
                    owner: addr(owner),
                    serves: if any {
                        Serves::AnyProvider
                    } else {
                        Serves::Providers(vec![addr(owner)])
                    },
                    devices,
                    free_devices,
                    leases: vec![],
                }
            })
    }

    fn arb_job() -> impl Strategy<Value = JobRequest> {
        (
            5u8..9,
            prop::option::of(1u8..5),
            0u32..5,
            0u64..70_000,
            0u64..100,
        )
            .prop_map(|(c, p, g, m, w)| {
                let mem = if g == 0 { 0 } else { m };
                job("j", c, p, g, mem, w)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn placement_invariants(agents in proptest::collection::vec(arb_agent(), 0..8),
                                jobs in proptest::collection::vec(arb_job(), 0..30)) {
            let plan = place(&jobs, &agents, &Policy { aging_ms: 50, max_reservations: 2 });
            // Every job is placed or unplaced exactly once.
            let mut seen = vec![0u32; jobs.len()];
            for a in &plan.assignments { seen[a.job] += 1; }
            for u in &plan.unplaced { seen[u.job] += 1; }
            prop_assert!(seen.iter().all(|&s| s == 1));
            // Never over-commit: the devices taken on an agent are a sub-multiset of its free ones;
            // gang: a placed job takes exactly its GPUs with enough memory, on one agent.
            let mut remaining: Vec<Vec<u64>> = agents.iter().map(|a| a.free_devices.clone()).collect();
            for asg in &plan.assignments {
                let j = &jobs[asg.job];
                prop_assert_eq!(asg.devices.len(), j.gpus as usize);
                prop_assert!(asg.devices.iter().sum::<u64>() >= j.memory_mib);
                for d in &asg.devices {
                    let pos = remaining[asg.agent].iter().position(|x| x == d);
                    prop_assert!(pos.is_some(), "over-committed agent {}", asg.agent);
                    remaining[asg.agent].swap_remove(pos.unwrap_or_default());
                }
                // Provider rule.
                if let Some(p) = &j.provider {
                    prop_assert!(agents[asg.agent].serves.serves(p));
                }
            }
            // Every placeable job is placed: an unplaced job does not fit any eligible,
            // unreserved agent's remaining capacity.
            for u in &plan.unplaced {
                let j = &jobs[u.job];
                for (a, ag) in agents.iter().enumerate() {
                    if plan.reserved.contains(&a) || !eligible(j, ag) { continue; }
                    let mut f = remaining[a].clone();
                    f.sort_unstable();
                    prop_assert!(!fits(&f, j.gpus, j.memory_mib), "job {} fits agent {} but was not placed", u.job, a);
                }
                if u.impossible {
                    for ag in &agents {
                        if eligible(j, ag) {
                            let mut d = ag.devices.clone();
                            d.sort_unstable();
                            prop_assert!(!fits(&d, j.gpus, j.memory_mib));
                        }
                    }
                }
            }
        }

        #[test]
        fn choose_window_matches_brute_force(mut free in proptest::collection::vec(1u64..5, 0..7), n in 0usize..5, mem in 0u64..20) {
            free.sort_unstable();
            let fast = choose_window(&free, n, mem).is_some();
            // Brute force: the n largest devices fit iff any n devices fit.
            // Zero GPUs need no memory (the agent ignores memory then).
            let brute = n == 0 || (n <= free.len() && free[free.len() - n..].iter().sum::<u64>() >= mem);
            prop_assert_eq!(fast, brute);
        }
    }
}
