//! Job records: what the agent knows about each job, persisted as `jobs/<id>/job.json`.

use crate::capture::CapturedOutput;
use crate::digest::OutputFile;
use crate::persist;
use aitbc_protocol::receipt::SignedJobReceipt;
use aitbc_protocol::tx::{JobSpec, Runtime};
use aitbc_protocol::Hash;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Succeeded => "succeeded",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
            JobPhase::TimedOut => "timed_out",
        }
    }
    pub fn is_final(self) -> bool {
        self != JobPhase::Running
    }
}

/// Microseconds the agent itself spent around the job's process (see the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchTimings {
    /// From accepting the run request to the process having been started.
    pub request_to_spawn_us: u64,
    /// From the process's end to the signed receipt being stored.
    pub exit_to_receipt_us: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub customer: String,
    pub spec: JobSpec,
    pub runtime: Runtime,
    pub lease_id: Option<String>,
    /// The chain's attempt number this run is for (signed into the receipt).
    #[serde(default)]
    pub attempt: u32,
    pub gpu_indexes: Vec<u32>,
    pub gpu_uuids: Vec<String>,
    pub phase: JobPhase,
    pub progress: Option<u32>,
    pub message: String,
    pub exit_code: Option<i32>,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub outputs: Vec<OutputFile>,
    pub output_digest: Option<Hash>,
    pub receipt: Option<SignedJobReceipt>,
    #[serde(default)]
    pub timings: DispatchTimings,
}

/// Job ids become directory names: 1–128 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Paths of a job's files under the state directory.
#[derive(Clone, Debug)]
pub struct JobPaths {
    pub dir: PathBuf,
}

impl JobPaths {
    pub fn new(state_dir: &Path, job_id: &str) -> Self {
        JobPaths {
            dir: state_dir.join("jobs").join(job_id),
        }
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("job.json")
    }
    pub fn input(&self) -> PathBuf {
        self.dir.join("input")
    }
    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("output")
    }
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }
}

/// Writes a record atomically.
pub fn save_record(state_dir: &Path, rec: &JobRecord) -> std::io::Result<()> {
    persist::write_json_atomic(&JobPaths::new(state_dir, &rec.job_id).record(), rec)
}

/// Loads every stored record (unreadable ones are logged and skipped).
pub fn load_records(state_dir: &Path) -> std::io::Result<Vec<JobRecord>> {
    let dir = state_dir.join("jobs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path().join("job.json");
        match persist::read_json::<JobRecord>(&path) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable job record")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_safe_directory_names() {
        for ok in ["job-0123abcd", "a", "x.y_z-1"] {
            assert!(valid_job_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "sp ace",
            &"x".repeat(129),
        ] {
            assert!(!valid_job_id(bad), "{bad}");
        }
    }
}
