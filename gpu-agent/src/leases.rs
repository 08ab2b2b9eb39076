//! GPU reservations: leases held by customers and the GPUs of running jobs.
//!
//! Every GPU is held by at most one claimant at a time: a lease, or a job outside any lease.
//! A job inside a lease takes GPUs of that lease (each at most once). All decisions go through
//! one lock and the pure [`choose_devices`] function; leases are persisted atomically in the
//! state directory so they survive a restart, and expired leases free themselves.

use crate::persist;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// A GPU as the allocator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCap {
    pub index: u32,
    pub uuid: String,
    pub memory_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{wanted} GPU(s) requested but only {free} of {total} are free")]
    NotEnoughGpus {
        wanted: u32,
        free: usize,
        total: usize,
    },
    #[error("{wanted_mib} MiB requested but the {gpus} largest free GPU(s) have {available_mib} MiB together")]
    NotEnoughMemory {
        wanted_mib: u64,
        available_mib: u64,
        gpus: u32,
    },
}

/// Picks `gpus` devices among `free` whose memory adds up to at least `memory_mib`, preferring
/// the smallest devices that fit (so large GPUs stay available). Succeeds exactly when some
/// choice exists. Returns indexes in ascending order.
pub fn choose_devices(
    free: &[DeviceCap],
    gpus: u32,
    memory_mib: u64,
) -> Result<Vec<u32>, AllocError> {
    let n = gpus as usize;
    if n > free.len() {
        return Err(AllocError::NotEnoughGpus {
            wanted: gpus,
            free: free.len(),
            total: free.len(),
        });
    }
    let mut by_size: Vec<&DeviceCap> = free.iter().collect();
    by_size.sort_by_key(|d| (d.memory_mib, d.index));
    let sum = |ds: &[&DeviceCap]| {
        ds.iter()
            .map(|d| d.memory_mib)
            .fold(0u64, u64::saturating_add)
    };
    // Windows of n consecutive devices by size have growing sums; the first that fits is a
    // smallest-first choice, and when the last (the n largest) does not fit, nothing does.
    let Some(chosen) = (0..=by_size.len() - n)
        .map(|s| &by_size[s..s + n])
        .find(|w| sum(w) >= memory_mib)
    else {
        let available_mib = sum(&by_size[by_size.len() - n..]);
        return Err(AllocError::NotEnoughMemory {
            wanted_mib: memory_mib,
            available_mib,
            gpus,
        });
    };
    let mut idx: Vec<u32> = chosen.iter().map(|d| d.index).collect();
    idx.sort_unstable();
    Ok(idx)
}

/// A reservation of GPUs for a holder until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub holder: String,
    pub gpu_indexes: Vec<u32>,
    pub gpu_uuids: Vec<String>,
    pub memory_mib: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// The GPUs a running job holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobClaim {
    pub job_id: String,
    pub gpu_indexes: Vec<u32>,
    pub gpu_uuids: Vec<String>,
    pub lease_id: Option<String>,
    pub memory_mib: u64,
}

#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub holder: String,
    pub gpus: u32,
    pub memory_mib: u64,
    pub duration_ms: u64,
    /// Caller-chosen id; a repeated request with the same id and holder returns the same lease.
    pub lease_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("a lease must reserve at least one GPU")]
    ZeroGpus,
    #[error("a lease must last at least one second")]
    ZeroDuration,
    #[error("lease {0} not found (or expired)")]
    NotFound(String),
    #[error("lease {0} belongs to another holder")]
    NotHolder(String),
    #[error("lease id {0:?} is already used by another holder")]
    IdTaken(String),
    #[error("lease {lease} has {free} free GPU(s) of {total}; the job wants {wanted}")]
    LeaseTooSmall {
        lease: String,
        free: usize,
        total: usize,
        wanted: u32,
    },
    #[error("GPU {0} is leased or running a job")]
    Busy(u32),
    #[error("job {0} already holds GPUs")]
    JobExists(String),
    #[error("persisting leases: {0}")]
    Persist(#[from] std::io::Error),
}

/// What each GPU is doing now (for inventory, metrics and simulated utilization).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceUse {
    pub leased_by: Option<String>,
    pub job: Option<String>,
    /// Memory the job on this GPU asked for (its request divided over its GPUs).
    pub job_memory_mib: u64,
}

#[derive(Default)]
struct BookState {
    leases: BTreeMap<String, Lease>,
    jobs: BTreeMap<String, JobClaim>,
}

impl BookState {
    fn drop_expired(&mut self, now_ms: u64) -> Vec<Lease> {
        let expired: Vec<String> = self
            .leases
            .values()
            .filter(|l| l.expires_at_ms <= now_ms)
            .map(|l| l.id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| self.leases.remove(id))
            .collect()
    }
    fn held_by_leases(&self) -> BTreeSet<u32> {
        self.leases
            .values()
            .flat_map(|l| l.gpu_indexes.iter().copied())
            .collect()
    }
    fn held_by_jobs(&self) -> BTreeSet<u32> {
        self.jobs
            .values()
            .flat_map(|j| j.gpu_indexes.iter().copied())
            .collect()
    }
}

/// The agent's single source of truth about which GPU is whose.
pub struct ResourceBook {
    devices: Vec<DeviceCap>,
    path: Option<PathBuf>,
    state: Mutex<BookState>,
}

impl ResourceBook {
    /// A book over `devices`, loading persisted leases from `path` (if given). Expired leases and
    /// leases naming GPUs this agent no longer has are dropped.
    pub fn open(
        devices: Vec<DeviceCap>,
        path: Option<PathBuf>,
        now_ms: u64,
    ) -> Result<Self, LeaseError> {
        let mut state = BookState::default();
        if let Some(p) = &path {
            let saved: Vec<Lease> = persist::read_json(p)?.unwrap_or_default();
            for l in saved {
                let known = l
                    .gpu_indexes
                    .iter()
                    .all(|i| devices.iter().any(|d| d.index == *i));
                if !known {
                    tracing::warn!(lease = %l.id, "dropping persisted lease: it names GPUs this agent does not have");
                    continue;
                }
                if l.expires_at_ms > now_ms {
                    state.leases.insert(l.id.clone(), l);
                }
            }
        }
        let book = ResourceBook {
            devices,
            path,
            state: Mutex::new(state),
        };
        book.save(&book.state.lock())?;
        Ok(book)
    }

    pub fn devices(&self) -> &[DeviceCap] {
        &self.devices
    }

    fn save(&self, st: &BookState) -> Result<(), LeaseError> {
        if let Some(p) = &self.path {
            let list: Vec<&Lease> = st.leases.values().collect();
            persist::write_json_atomic(p, &list)?;
        }
        Ok(())
    }

    fn caps(&self, indexes: impl Fn(u32) -> bool) -> Vec<DeviceCap> {
        self.devices
            .iter()
            .filter(|d| indexes(d.index))
            .cloned()
            .collect()
    }

    fn uuids(&self, idx: &[u32]) -> Vec<String> {
        idx.iter()
            .map(|i| {
                self.devices
                    .iter()
                    .find(|d| d.index == *i)
                    .map(|d| d.uuid.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Reserves GPUs for a holder. GPUs held by other leases or by running jobs are not free.
    pub fn allocate_lease(&self, req: LeaseRequest, now_ms: u64) -> Result<Lease, LeaseError> {
        if req.gpus == 0 {
            return Err(LeaseError::ZeroGpus);
        }
        if req.duration_ms < 1000 {
            return Err(LeaseError::ZeroDuration);
        }
        let mut st = self.state.lock();
        let expired = st.drop_expired(now_ms);
        if let Some(id) = &req.lease_id {
            if let Some(existing) = st.leases.get(id) {
                return if existing.holder == req.holder {
                    Ok(existing.clone())
                } else {
                    Err(LeaseError::IdTaken(id.clone()))
                };
            }
        }
        let busy: BTreeSet<u32> = st
            .held_by_leases()
            .union(&st.held_by_jobs())
            .copied()
            .collect();
        let free = self.caps(|i| !busy.contains(&i));
        let chosen = choose_devices(&free, req.gpus, req.memory_mib).map_err(|e| match e {
            AllocError::NotEnoughGpus { wanted, free, .. } => AllocError::NotEnoughGpus {
                wanted,
                free,
                total: self.devices.len(),
            },
            other => other,
        })?;
        let id = req
            .lease_id
            .unwrap_or_else(|| format!("lease-{}", hex::encode(rand::random::<[u8; 8]>())));
        let lease = Lease {
            id: id.clone(),
            holder: req.holder,
            gpu_uuids: self.uuids(&chosen),
            gpu_indexes: chosen,
            memory_mib: req.memory_mib,
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(req.duration_ms),
        };
        st.leases.insert(id.clone(), lease.clone());
        if let Err(e) = self.save(&st) {
            st.leases.remove(&id);
            return Err(e);
        }
        drop(st);
        for l in expired {
            tracing::info!(lease = %l.id, holder = %l.holder, "lease expired");
        }
        Ok(lease)
    }

    /// Frees a lease. Jobs already running inside it keep their GPUs until they end.
    /// `Ok(false)` when there was no such (unexpired) lease.
    pub fn release_lease(&self, id: &str, now_ms: u64) -> Result<bool, LeaseError> {
        let mut st = self.state.lock();
        st.drop_expired(now_ms);
        let removed = st.leases.remove(id);
        self.save(&st)?;
        Ok(removed.is_some())
    }

    /// Unexpired leases, optionally only those of `holder`.
    pub fn leases(&self, holder: Option<&str>, now_ms: u64) -> Vec<Lease> {
        let st = self.state.lock();
        st.leases
            .values()
            .filter(|l| l.expires_at_ms > now_ms && holder.is_none_or(|h| l.holder == h))
            .cloned()
            .collect()
    }

    /// Drops expired leases and persists the result; returns what expired.
    pub fn expire(&self, now_ms: u64) -> Result<Vec<Lease>, LeaseError> {
        let mut st = self.state.lock();
        let expired = st.drop_expired(now_ms);
        if !expired.is_empty() {
            self.save(&st)?;
        }
        Ok(expired)
    }

    /// Gives a job its GPUs: from `lease_id` (which must belong to `customer`) or from the GPUs
    /// nobody holds.
    pub fn claim_for_job(
        &self,
        job_id: &str,
        customer: &str,
        gpus: u32,
        memory_mib: u64,
        lease_id: Option<&str>,
        now_ms: u64,
    ) -> Result<JobClaim, LeaseError> {
        let mut st = self.state.lock();
        st.drop_expired(now_ms);
        if st.jobs.contains_key(job_id) {
            return Err(LeaseError::JobExists(job_id.into()));
        }
        let held_by_jobs = st.held_by_jobs();
        let free = match lease_id {
            Some(id) => {
                let lease = st
                    .leases
                    .get(id)
                    .ok_or_else(|| LeaseError::NotFound(id.into()))?;
                if lease.holder != customer {
                    return Err(LeaseError::NotHolder(id.into()));
                }
                let free =
                    self.caps(|i| lease.gpu_indexes.contains(&i) && !held_by_jobs.contains(&i));
                if (gpus as usize) > free.len() {
                    return Err(LeaseError::LeaseTooSmall {
                        lease: id.into(),
                        free: free.len(),
                        total: lease.gpu_indexes.len(),
                        wanted: gpus,
                    });
                }
                free
            }
            None => {
                let held_by_leases = st.held_by_leases();
                self.caps(|i| !held_by_leases.contains(&i) && !held_by_jobs.contains(&i))
            }
        };
        let chosen = if gpus == 0 {
            Vec::new()
        } else {
            choose_devices(&free, gpus, memory_mib).map_err(|e| match e {
                AllocError::NotEnoughGpus { wanted, free, .. } => AllocError::NotEnoughGpus {
                    wanted,
                    free,
                    total: self.devices.len(),
                },
                other => other,
            })?
        };
        let claim = JobClaim {
            job_id: job_id.into(),
            gpu_uuids: self.uuids(&chosen),
            gpu_indexes: chosen,
            lease_id: lease_id.map(str::to_string),
            memory_mib,
        };
        st.jobs.insert(job_id.into(), claim.clone());
        Ok(claim)
    }

    /// Claims one specific GPU (e.g. for a memory stress test); fails when it is leased or busy.
    pub fn claim_device(
        &self,
        claim_id: &str,
        index: u32,
        now_ms: u64,
    ) -> Result<JobClaim, LeaseError> {
        let mut st = self.state.lock();
        st.drop_expired(now_ms);
        let dev =
            self.devices
                .iter()
                .find(|d| d.index == index)
                .ok_or(AllocError::NotEnoughGpus {
                    wanted: 1,
                    free: 0,
                    total: self.devices.len(),
                })?;
        if st.held_by_leases().contains(&index)
            || st.held_by_jobs().contains(&index)
            || st.jobs.contains_key(claim_id)
        {
            return Err(LeaseError::Busy(index));
        }
        let claim = JobClaim {
            job_id: claim_id.into(),
            gpu_indexes: vec![index],
            gpu_uuids: vec![dev.uuid.clone()],
            lease_id: None,
            memory_mib: 0,
        };
        st.jobs.insert(claim_id.into(), claim.clone());
        Ok(claim)
    }

    /// Frees a finished job's GPUs.
    pub fn release_job(&self, job_id: &str) {
        self.state.lock().jobs.remove(job_id);
    }

    /// Per device (in `devices()` order): who leases it, which job runs on it.
    pub fn device_use(&self, now_ms: u64) -> Vec<DeviceUse> {
        let st = self.state.lock();
        self.devices
            .iter()
            .map(|d| {
                let lease = st
                    .leases
                    .values()
                    .find(|l| l.expires_at_ms > now_ms && l.gpu_indexes.contains(&d.index));
                let job = st.jobs.values().find(|j| j.gpu_indexes.contains(&d.index));
                DeviceUse {
                    leased_by: lease.map(|l| l.holder.clone()),
                    job: job.map(|j| j.job_id.clone()),
                    job_memory_mib: job
                        .map(|j| {
                            (j.memory_mib / j.gpu_indexes.len().max(1) as u64).min(d.memory_mib)
                        })
                        .unwrap_or(0),
                }
            })
            .collect()
    }

    /// GPUs neither leased nor running a job.
    pub fn free_gpus(&self, now_ms: u64) -> usize {
        self.device_use(now_ms)
            .iter()
            .filter(|u| u.leased_by.is_none() && u.job.is_none())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn devs(mems: &[u64]) -> Vec<DeviceCap> {
        mems.iter()
            .enumerate()
            .map(|(i, m)| DeviceCap {
                index: i as u32,
                uuid: format!("GPU-{i}"),
                memory_mib: *m,
            })
            .collect()
    }

    fn req(holder: &str, gpus: u32, mem: u64) -> LeaseRequest {
        LeaseRequest {
            holder: holder.into(),
            gpus,
            memory_mib: mem,
            duration_ms: 60_000,
            lease_id: None,
        }
    }

    proptest! {
        #[test]
        fn chooser_is_sound_and_complete(
            mems in proptest::collection::vec(1u64..100_000, 0..10),
            gpus in 0u32..12,
            memory in 0u64..400_000,
        ) {
            let free = devs(&mems);
            let mut sorted = mems.clone();
            sorted.sort_unstable();
            let feasible = (gpus as usize) <= mems.len()
                && sorted[mems.len() - gpus as usize..].iter().sum::<u64>() >= memory;
            match choose_devices(&free, gpus, memory) {
                Ok(chosen) => {
                    prop_assert!(feasible);
                    prop_assert_eq!(chosen.len(), gpus as usize);
                    let set: BTreeSet<u32> = chosen.iter().copied().collect();
                    prop_assert_eq!(set.len(), chosen.len());
                    let total: u64 = chosen.iter().map(|i| mems[*i as usize]).sum();
                    prop_assert!(total >= memory);
                }
                Err(_) => prop_assert!(!feasible),
            }
        }

        #[test]
        fn a_sequence_of_operations_never_overcommits(
            mems in proptest::collection::vec(1000u64..80_000, 1..8),
            ops in proptest::collection::vec((0u8..4, 0u32..4, 0u64..100_000, 0usize..8), 1..60),
        ) {
            let book = ResourceBook::open(devs(&mems), None, 0).unwrap();
            let mut now = 1_000u64;
            let mut jobs = Vec::new();
            for (n, (op, gpus, mem, pick)) in ops.into_iter().enumerate() {
                now += 500;
                match op {
                    0 => { let _ = book.allocate_lease(LeaseRequest { duration_ms: 5_000, ..req("a", gpus, mem) }, now); }
                    1 => {
                        let id = format!("job-{n}");
                        let lease = book.leases(None, now).get(pick).map(|l| l.id.clone());
                        if book.claim_for_job(&id, "a", gpus, mem, lease.as_deref(), now).is_ok() { jobs.push(id); }
                    }
                    2 => if !jobs.is_empty() { book.release_job(&jobs.remove(pick % jobs.len())); },
                    _ => if let Some(l) = book.leases(None, now).get(pick) { book.release_lease(&l.id, now).unwrap(); },
                }
                // Invariant: no GPU in two leases, no GPU in two jobs, a job's GPU is either free
                // of leases or in the job's own lease.
                let st = book.state.lock();
                let mut lease_gpus = BTreeMap::new();
                for l in st.leases.values().filter(|l| l.expires_at_ms > now) {
                    for g in &l.gpu_indexes { prop_assert!(lease_gpus.insert(*g, l.id.clone()).is_none()); }
                }
                let mut job_gpus = BTreeSet::new();
                for j in st.jobs.values() {
                    for g in &j.gpu_indexes {
                        prop_assert!(job_gpus.insert(*g));
                        if let Some(holder) = lease_gpus.get(g) {
                            prop_assert_eq!(Some(holder), j.lease_id.as_ref());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_allocations_never_overcommit() {
        let book = Arc::new(ResourceBook::open(devs(&[16_384; 8]), None, 0).unwrap());
        let handles: Vec<_> = (0..32)
            .map(|t| {
                let book = book.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for k in 0..20 {
                        if (t + k) % 2 == 0 {
                            if let Ok(l) = book
                                .allocate_lease(req(&format!("h{t}"), 1 + (k % 2) as u32, 1000), 10)
                            {
                                got.push(l);
                            }
                        } else if let Ok(c) =
                            book.claim_for_job(&format!("j{t}-{k}"), "x", 1, 100, None, 10)
                        {
                            got.push(Lease {
                                id: c.job_id,
                                holder: String::new(),
                                gpu_indexes: c.gpu_indexes,
                                gpu_uuids: c.gpu_uuids,
                                memory_mib: 0,
                                created_at_ms: 0,
                                expires_at_ms: 0,
                            });
                        }
                    }
                    got
                })
            })
            .collect();
        let all: Vec<Lease> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let mut seen = BTreeSet::new();
        for l in &all {
            for g in &l.gpu_indexes {
                assert!(seen.insert(*g), "GPU {g} given out twice");
            }
        }
        assert_eq!(seen.len(), 8, "all GPUs end up used by someone");
        assert_eq!(book.free_gpus(10), 0);
    }

    #[test]
    fn leases_expire_and_free_their_gpus() {
        let book = ResourceBook::open(devs(&[8000, 8000]), None, 0).unwrap();
        let l = book.allocate_lease(req("alice", 2, 10_000), 1_000).unwrap();
        assert_eq!(l.gpu_indexes, vec![0, 1]);
        assert!(matches!(
            book.allocate_lease(req("bob", 1, 0), 2_000),
            Err(LeaseError::Alloc(_))
        ));
        assert_eq!(book.free_gpus(60_999), 0);
        assert_eq!(book.free_gpus(61_000), 2);
        assert_eq!(book.expire(61_000).unwrap().len(), 1);
        assert!(book.allocate_lease(req("bob", 1, 0), 61_000).is_ok());
    }

    #[test]
    fn leases_survive_a_restart_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        let book = ResourceBook::open(devs(&[8000, 8000, 8000]), Some(path.clone()), 0).unwrap();
        let long = book
            .allocate_lease(
                LeaseRequest {
                    duration_ms: 600_000,
                    ..req("alice", 1, 0)
                },
                1_000,
            )
            .unwrap();
        book.allocate_lease(
            LeaseRequest {
                duration_ms: 10_000,
                ..req("bob", 1, 0)
            },
            1_000,
        )
        .unwrap();
        drop(book);
        let again =
            ResourceBook::open(devs(&[8000, 8000, 8000]), Some(path.clone()), 20_000).unwrap();
        assert_eq!(again.leases(None, 20_000), vec![long.clone()]);
        assert_eq!(again.free_gpus(20_000), 2);
        // A lease naming a GPU that disappeared is dropped.
        let fewer = ResourceBook::open(devs(&[8000]), Some(path), 20_000).unwrap();
        assert_eq!(
            fewer.leases(None, 20_000).len(),
            usize::from(long.gpu_indexes == vec![0])
        );
    }

    #[test]
    fn jobs_run_inside_their_customers_lease_only() {
        let book = ResourceBook::open(devs(&[8000, 8000, 8000]), None, 0).unwrap();
        let l = book
            .allocate_lease(
                LeaseRequest {
                    lease_id: Some("bid-1".into()),
                    ..req("alice", 2, 0)
                },
                0,
            )
            .unwrap();
        // Idempotent by id for the same holder; refused for another.
        assert_eq!(
            book.allocate_lease(
                LeaseRequest {
                    lease_id: Some("bid-1".into()),
                    ..req("alice", 2, 0)
                },
                0
            )
            .unwrap(),
            l
        );
        assert!(matches!(
            book.allocate_lease(
                LeaseRequest {
                    lease_id: Some("bid-1".into()),
                    ..req("eve", 1, 0)
                },
                0
            ),
            Err(LeaseError::IdTaken(_))
        ));
        assert!(matches!(
            book.claim_for_job("j0", "eve", 1, 0, Some("bid-1"), 0),
            Err(LeaseError::NotHolder(_))
        ));
        let j1 = book
            .claim_for_job("j1", "alice", 2, 0, Some("bid-1"), 0)
            .unwrap();
        assert_eq!(j1.gpu_indexes, l.gpu_indexes);
        assert!(matches!(
            book.claim_for_job("j2", "alice", 1, 0, Some("bid-1"), 0),
            Err(LeaseError::LeaseTooSmall { .. })
        ));
        // Outside the lease only the third GPU is free.
        let j3 = book.claim_for_job("j3", "bob", 1, 0, None, 0).unwrap();
        assert_eq!(j3.gpu_indexes, vec![2]);
        assert!(matches!(
            book.claim_for_job("j4", "bob", 1, 0, None, 0),
            Err(LeaseError::Alloc(_))
        ));
        // Releasing the lease leaves the running job's GPUs held.
        assert!(book.release_lease("bid-1", 0).unwrap());
        assert_eq!(book.free_gpus(0), 0);
        book.release_job("j1");
        assert_eq!(book.free_gpus(0), 2);
        // Jobs without GPUs always fit.
        assert!(book
            .claim_for_job("cpu", "bob", 0, 0, None, 0)
            .unwrap()
            .gpu_indexes
            .is_empty());
    }
}
