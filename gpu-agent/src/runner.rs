//! Runs one job process: its own process group, a clean environment, bounded capture of stdout
//! and stderr, `AITBC_PROGRESS` lines, a time limit and cancellation (both kill the group).

use crate::capture::{BoundedCapture, CapturedOutput};
use aitbc_protocol::tx::{JobKind, JobSpec};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Prefix of a progress line on a job's stdout: `AITBC_PROGRESS 42` (percent, 0–100).
pub const PROGRESS_PREFIX: &str = "AITBC_PROGRESS";
/// Longest stdout line inspected for progress; longer lines are captured but not parsed.
const MAX_LINE: usize = 4096;
/// How long to wait for stdout/stderr to close after the process group is gone.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What to execute.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub time_limit: Duration,
    pub capture_bytes: usize,
    /// Bytes the job may write into these directories; more ends it (`QuotaExceeded`).
    pub quota: Option<OutputQuota>,
}

/// A bound on what a job may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputQuota {
    pub dirs: Vec<PathBuf>,
    pub max_bytes: u64,
}

/// How often a running job's directories are measured against its quota.
const QUOTA_POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
    /// The job wrote more than its quota (`used` bytes were seen, `limit` allowed).
    QuotaExceeded {
        used: u64,
        limit: u64,
    },
}

#[derive(Debug)]
pub struct ProcessOutcome {
    pub termination: Termination,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub wall: Duration,
    /// When the process was seen to end (before output draining).
    pub exited_at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the job has no command to run")]
    EmptyCommand,
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// A started job process.
pub struct RunningProcess {
    child: Child,
    pid: u32,
    started: Instant,
    time_limit: Duration,
    quota: Option<OutputQuota>,
    stdout_task: JoinHandle<BoundedCapture>,
    stderr_task: JoinHandle<BoundedCapture>,
}

pub type ProgressFn = Arc<dyn Fn(u32) + Send + Sync>;

/// Starts the process in a new process group with only `spec.env` (plus a minimal PATH/HOME).
pub fn spawn(spec: &ProcessSpec, on_progress: ProgressFn) -> Result<RunningProcess, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", &spec.cwd)
        .env("TMPDIR", &spec.cwd)
        .env("LANG", "C.UTF-8")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(q) = &spec.quota {
        // One byte over the quota, so that a file stopped there is seen as over it.
        limit_file_size(&mut cmd, q.max_bytes.saturating_add(1));
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| SpawnError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    let limit = spec.capture_bytes;
    let stdout_task = match child.stdout.take() {
        Some(out) => tokio::spawn(read_stream(out, limit, Some(on_progress))),
        None => tokio::spawn(async move { BoundedCapture::new(limit) }),
    };
    let stderr_task = match child.stderr.take() {
        Some(err) => tokio::spawn(read_stream(err, limit, None)),
        None => tokio::spawn(async move { BoundedCapture::new(limit) }),
    };
    Ok(RunningProcess {
        child,
        pid,
        started,
        time_limit: spec.time_limit,
        quota: spec.quota.clone(),
        stdout_task,
        stderr_task,
    })
}

impl RunningProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process, the time limit or `cancel` turning true, whichever comes first.
    /// The whole process group is killed afterwards in every case, so no stray child survives.
    pub async fn wait(mut self, mut cancel: watch::Receiver<bool>) -> ProcessOutcome {
        let deadline = tokio::time::sleep(self.time_limit);
        tokio::pin!(deadline);
        let termination = tokio::select! {
            status = self.child.wait() => match status {
                Ok(s) => exit_termination(s),
                Err(e) => {
                    tracing::warn!(pid = self.pid, error = %e, "waiting for job process failed");
                    Termination::Signalled(libc::SIGKILL)
                }
            },
            _ = &mut deadline => Termination::TimedOut,
            _ = async { let _ = cancel.wait_for(|c| *c).await; } => Termination::Cancelled,
            t = watch_quota(self.quota.clone()) => t,
        };
        kill_group(self.pid);
        let termination = match (&termination, &self.quota) {
            (Termination::Exited(_) | Termination::Signalled(_), Some(q)) => {
                final_quota_check(q).await.unwrap_or(termination)
            }
            _ => termination,
        };
        if !matches!(
            termination,
            Termination::Exited(_) | Termination::Signalled(_)
        ) {
            if let Err(e) = self.child.wait().await {
                tracing::warn!(pid = self.pid, error = %e, "reaping killed job process failed");
            }
        }
        let exited_at = Instant::now();
        let wall = exited_at - self.started;
        let stdout = drain(self.stdout_task).await;
        let stderr = drain(self.stderr_task).await;
        ProcessOutcome {
            termination,
            stdout,
            stderr,
            wall,
            exited_at,
        }
    }
}

/// Resolves once the quota's directories hold more than allowed; never without a quota.
async fn watch_quota(quota: Option<OutputQuota>) -> Termination {
    let Some(q) = quota else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(QUOTA_POLL);
    loop {
        tick.tick().await;
        if let Some(t) = final_quota_check(&q).await {
            return t;
        }
    }
}

/// `QuotaExceeded` when the quota's directories now hold more than allowed.
async fn final_quota_check(q: &OutputQuota) -> Option<Termination> {
    let dirs = q.dirs.clone();
    let used = tokio::task::spawn_blocking(move || dirs_usage(&dirs))
        .await
        .unwrap_or(u64::MAX);
    over_quota(used, q.max_bytes)
}

/// The decision: `used` over `limit` ends the job.
pub fn over_quota(used: u64, limit: u64) -> Option<Termination> {
    (used > limit).then_some(Termination::QuotaExceeded { used, limit })
}

/// Apparent size of every file under `dirs` (symbolic links not followed), saturating.
pub fn dirs_usage(dirs: &[PathBuf]) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(m.len());
            }
        }
    }
    total
}

/// RLIMIT_FSIZE in the child: no single file grows past the quota even between two polls.
fn limit_file_size(cmd: &mut Command, bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2),
    // which is async-signal-safe; `lim` is a plain copy.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn exit_termination(s: std::process::ExitStatus) -> Termination {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => Termination::Exited(c),
        (None, Some(sig)) => Termination::Signalled(sig),
        (None, None) => Termination::Signalled(0),
    }
}

/// SIGKILL to the process group led by `pid` (errors such as "no such group" are ignored).
fn kill_group(pid: u32) {
    if pid == 0 {
        return;
    }
    if let Ok(pgid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

async fn drain(task: JoinHandle<BoundedCapture>) -> CapturedOutput {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_GRACE, task).await {
        Ok(Ok(c)) => c.finish(),
        Ok(Err(_)) => CapturedOutput::default(),
        Err(_) => {
            abort.abort();
            tracing::warn!("job output stayed open after its process group ended; stopped reading");
            CapturedOutput::default()
        }
    }
}

async fn read_stream<R: AsyncRead + Unpin>(
    mut r: R,
    limit: usize,
    progress: Option<ProgressFn>,
) -> BoundedCapture {
    let mut cap = BoundedCapture::new(limit);
    let mut buf = vec![0u8; 16 * 1024];
    let mut line = Vec::new();
    let mut line_overflow = false;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        cap.push(&buf[..n]);
        if let Some(cb) = &progress {
            for &b in &buf[..n] {
                if b == b'\n' {
                    if !line_overflow {
                        if let Some(p) = parse_progress(&line) {
                            cb(p);
                        }
                    }
                    line.clear();
                    line_overflow = false;
                } else if line.len() < MAX_LINE {
                    line.push(b);
                } else {
                    line_overflow = true;
                }
            }
        }
    }
    if let (Some(cb), false) = (&progress, line_overflow) {
        if let Some(p) = parse_progress(&line) {
            cb(p);
        }
    }
    cap
}

/// Parses `AITBC_PROGRESS <percent>[ anything]`; the percent may have decimals and is clamped
/// to 0–100.
pub fn parse_progress(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let rest = text.strip_prefix(PROGRESS_PREFIX)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = rest.split_whitespace().next()?.parse().ok()?;
    v.is_finite().then(|| v.clamp(0.0, 100.0) as u32)
}

/// Inputs of [`job_environment`].
pub struct JobEnvironment<'a> {
    pub job_id: &'a str,
    pub spec: &'a JobSpec,
    pub input_path: Option<&'a Path>,
    pub output_dir: &'a Path,
    /// What CUDA should see: the assigned GPUs' UUIDs (NVML) or indexes (simulated).
    pub visible_devices: &'a [String],
    pub gpu_indexes: &'a [u32],
    pub runtime_env: &'a [(String, String)],
    pub simulated: bool,
}

/// The job's environment: the listing runtime's env first, then the `AITBC_*` variables and
/// device visibility, which the runtime cannot override.
pub fn job_environment(j: &JobEnvironment<'_>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = j
        .runtime_env
        .iter()
        .filter(|(k, _)| !reserved(k))
        .cloned()
        .collect();
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    let kind = match j.spec.kind {
        Some(JobKind::Training) => "training",
        _ => "inference",
    };
    set("AITBC_JOB_ID", j.job_id.to_string());
    set("AITBC_JOB_KIND", kind.to_string());
    set("AITBC_PROMPT", j.spec.prompt.clone());
    set("AITBC_MODEL", j.spec.model.clone());
    set("AITBC_OUTPUT_DIR", j.output_dir.display().to_string());
    if let Some(p) = j.input_path {
        set("AITBC_INPUT", p.display().to_string());
    }
    if let Some(d) = j.spec.input_digest {
        set("AITBC_INPUT_DIGEST", d.to_hex());
    }
    if let Some(d) = j.spec.dataset_digest {
        set("AITBC_DATASET_DIGEST", d.to_hex());
    }
    set("AITBC_GPUS", j.spec.gpus.to_string());
    set("AITBC_MEMORY_MIB", j.spec.memory_mib.to_string());
    set(
        "AITBC_GPU_INDEXES",
        j.gpu_indexes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    set(
        "AITBC_SIMULATED_GPUS",
        if j.simulated { "1" } else { "0" }.to_string(),
    );
    let visible = j.visible_devices.join(",");
    set("CUDA_VISIBLE_DEVICES", visible.clone());
    set(
        "NVIDIA_VISIBLE_DEVICES",
        if visible.is_empty() {
            "void".into()
        } else {
            visible
        },
    );
    for (k, v) in &j.spec.params {
        set(&format!("AITBC_PARAM_{}", param_env_name(k)), v.clone());
    }
    env
}

fn reserved(key: &str) -> bool {
    key.starts_with("AITBC_") || key == "CUDA_VISIBLE_DEVICES" || key == "NVIDIA_VISIBLE_DEVICES"
}

/// `learning-rate` → `LEARNING_RATE`: upper case, anything but ASCII letters/digits becomes `_`.
pub fn param_env_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], limit: Duration) -> (tempfile::TempDir, ProcessSpec) {
        let dir = tempfile::tempdir().unwrap();
        let s = ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hi".into())],
            cwd: dir.path().into(),
            time_limit: limit,
            capture_bytes: 1024,
            quota: None,
        };
        (dir, s)
    }

    fn no_progress() -> ProgressFn {
        Arc::new(|_| {})
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_progress(b"AITBC_PROGRESS 42"), Some(42));
        assert_eq!(parse_progress(b"  AITBC_PROGRESS 99.5 almost\r"), Some(99));
        assert_eq!(parse_progress(b"AITBC_PROGRESS 250"), Some(100));
        assert_eq!(parse_progress(b"AITBC_PROGRESS42"), None);
        assert_eq!(parse_progress(b"AITBC_PROGRESS nan"), None);
        assert_eq!(parse_progress(b"progress 42"), None);
    }

    #[test]
    fn environment_sets_inputs_and_only_assigned_devices() {
        let s = JobSpec {
            prompt: "a cat".into(),
            model: "m1".into(),
            gpus: 2,
            params: vec![("learning-rate".into(), "0.1".into())],
            ..Default::default()
        };
        let visible = vec!["GPU-a".to_string(), "GPU-c".to_string()];
        let env = job_environment(&JobEnvironment {
            job_id: "job-1",
            spec: &s,
            input_path: Some(Path::new("/s/in")),
            output_dir: Path::new("/s/out"),
            visible_devices: &visible,
            gpu_indexes: &[0, 2],
            runtime_env: &[
                ("CUDA_VISIBLE_DEVICES".into(), "0,1,2,3".into()),
                ("MODEL_DIR".into(), "/m".into()),
            ],
            simulated: false,
        });
        let get = |k: &str| {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            get("CUDA_VISIBLE_DEVICES"),
            vec!["GPU-a,GPU-c"],
            "the runtime cannot widen visibility"
        );
        assert_eq!(get("AITBC_PROMPT"), vec!["a cat"]);
        assert_eq!(get("AITBC_INPUT"), vec!["/s/in"]);
        assert_eq!(get("AITBC_OUTPUT_DIR"), vec!["/s/out"]);
        assert_eq!(get("AITBC_PARAM_LEARNING_RATE"), vec!["0.1"]);
        assert_eq!(get("AITBC_GPU_INDEXES"), vec!["0,2"]);
        assert_eq!(get("MODEL_DIR"), vec!["/m"]);
    }

    #[tokio::test]
    async fn exit_codes_output_and_progress_are_reported() {
        let (_d, s) = spec(
            &[
                "/bin/sh",
                "-c",
                "echo $GREETING; echo AITBC_PROGRESS 30; echo oops >&2; exit 3",
            ],
            Duration::from_secs(10),
        );
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let p = spawn(&s, Arc::new(move |v| seen2.lock().push(v))).unwrap();
        let (_tx, rx) = watch::channel(false);
        let out = p.wait(rx).await;
        assert_eq!(out.termination, Termination::Exited(3));
        assert_eq!(out.stdout.to_text(), "hi\nAITBC_PROGRESS 30\n");
        assert_eq!(out.stderr.to_text(), "oops\n");
        assert_eq!(*seen.lock(), vec![30]);
    }

    #[tokio::test]
    async fn time_limit_kills_the_whole_group() {
        let (dir, s) = spec(
            &["/bin/sh", "-c", "(sleep 30; touch late) & sleep 30"],
            Duration::from_millis(300),
        );
        let t = Instant::now();
        let out = spawn(&s, no_progress())
            .unwrap()
            .wait(watch::channel(false).1)
            .await;
        assert_eq!(out.termination, Termination::TimedOut);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert!(!dir.path().join("late").exists());
    }

    #[tokio::test]
    async fn cancellation_kills_the_process() {
        let (_d, s) = spec(&["/bin/sleep", "30"], Duration::from_secs(60));
        let p = spawn(&s, no_progress()).unwrap();
        let (tx, rx) = watch::channel(false);
        let h = tokio::spawn(p.wait(rx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send_replace(true);
        let out = tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.termination, Termination::Cancelled);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let (_d, s) = spec(&["/nonexistent/program"], Duration::from_secs(1));
        assert!(matches!(
            spawn(&s, no_progress()),
            Err(SpawnError::Spawn { .. })
        ));
        let (_d, s) = spec(&[], Duration::from_secs(1));
        assert!(matches!(
            spawn(&s, no_progress()),
            Err(SpawnError::EmptyCommand)
        ));
    }
}
