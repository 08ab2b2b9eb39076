//! The scheduler's persistent state: the next chain height to process and one record per job.
//! Written atomically (temp file, fsync, rename, fsync of the directory). The chain is the
//! source of truth; this file makes restarts cheap and keeps what the chain does not hold
//! (attempted agents, progress, transaction hashes).

use aitbc_protocol::tx::JobSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for placement.
    Pending,
    /// AssignJob sent, not yet committed.
    Assigning,
    /// Assigned on chain; starting on the agent.
    Assigned,
    Running,
    /// Receipt received; ReportResult / settlement in flight.
    Reporting,
    /// Succeeded on chain, SettleJob pending.
    Succeeded,
    /// Failed on chain (refund pending), or given up (refund at the deadline).
    Failed,
    Settled,
    Refunded,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Assigning,
        Phase::Assigned,
        Phase::Running,
        Phase::Reporting,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Settled,
        Phase::Refunded,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Assigning => "assigning",
            Phase::Assigned => "assigned",
            Phase::Running => "running",
            Phase::Reporting => "reporting",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Settled => "settled",
            Phase::Refunded => "refunded",
        }
    }
    pub fn terminal(self) -> bool {
        matches!(self, Phase::Settled | Phase::Refunded)
    }
    /// The job holds capacity on its agent.
    pub fn on_agent(self) -> bool {
        matches!(self, Phase::Assigning | Phase::Assigned | Phase::Running)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub customer: String,
    pub listing_id: Option<String>,
    /// The listing's provider (placement constraint); `None` without a listing.
    pub provider: Option<String>,
    pub spec: JobSpec,
    pub phase: Phase,
    pub chain_status: String,
    pub agent_id: Option<String>,
    pub agent_key: Option<String>,
    pub lease_id: Option<String>,
    /// GPU indexes the agent gave the job.
    pub gpu_indexes: Vec<u32>,
    pub progress: u32,
    /// AssignJob transactions committed for this job (the chain's `assignments`).
    pub attempts: u32,
    /// Agents where an attempt failed or that were lost; never tried again for this job.
    pub failed_agents: Vec<String>,
    pub pending_reason: String,
    pub message: String,
    pub result_digest: String,
    pub settlement_tx: Option<String>,
    pub refund_tx: Option<String>,
    /// Borsh `SignedJobReceipt`, hex.
    pub receipt_hex: Option<String>,
    /// The customer asked to stop the job after it was assigned (`JobStopRequested`): it is
    /// stopped on its agent and the agent's receipt (the usage so far) is reported as it is,
    /// never retried elsewhere.
    #[serde(default)]
    pub stop_requested: bool,
    pub submitted_height: u64,
    pub deadline_height: u64,
    /// The job's deadline in block time (unix ms; 0 from a scheduler that did not record it).
    #[serde(default)]
    pub deadline_ms: u64,
    /// When the scheduler first saw the job (unix ms); placement latency and aging count from here.
    pub first_seen_ms: u64,
    pub updated_at_ms: u64,
}

/// A lease the scheduler made for an accepted gpu-rental bid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub bid_id: String,
    pub holder: String,
    pub agent_id: String,
    pub lease_id: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Next block height to process.
    pub next_height: u64,
    pub jobs: BTreeMap<String, JobRecord>,
    /// Accepted gpu-rental bids waiting for a lease (bid id -> listing id).
    pub pending_leases: BTreeMap<String, String>,
    pub leases: BTreeMap<String, LeaseRecord>,
    /// Jobs with a running dispatch task (not persisted).
    #[serde(skip)]
    pub active: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads and writes `state.json` in the state directory.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let io = |source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        create_private_dir(&dir.join("inputs")).map_err(io)?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn inputs_dir(&self) -> PathBuf {
        self.dir.join("inputs")
    }

    pub fn input_path(&self, job_id: &str) -> PathBuf {
        self.inputs_dir().join(job_id)
    }

    pub fn load(&self) -> Result<State, StateError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state).map_err(|source| StateError::Corrupt {
            path: self.path(),
            source,
        })?;
        write_atomic(&self.path(), &bytes)
    }
}

/// A directory only the scheduler's user may read (customers' jobs and inputs are in it): 0700,
/// also when it existed with wider permissions.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A new file only the scheduler's user may read (0600).
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let f = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Temp file (0600), fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        let mut f = private_file(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap().next_height, 0);
        let mut s = State {
            next_height: 42,
            ..State::default()
        };
        s.pending_leases.insert("bid-1".into(), "svc-1".into());
        s.active.insert("job-x".into());
        store.save(&s).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.next_height, 42);
        assert_eq!(back.pending_leases.len(), 1);
        assert!(back.active.is_empty(), "active tasks are not persisted");
        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }
}

#[cfg(all(test, unix))]
mod permission_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn job_plane_scheduler_state_and_inputs_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = StateStore::open(&dir).unwrap();
        store.save(&State::default()).unwrap();
        write_atomic(&store.input_path("job-1"), b"a prompt").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&dir),
            0o700,
            "an existing world-readable state dir is narrowed"
        );
        assert_eq!(mode(&store.inputs_dir()), 0o700);
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(&store.input_path("job-1")), 0o600);
    }
}
