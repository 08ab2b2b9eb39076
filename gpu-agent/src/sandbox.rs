//! The bubblewrap sandbox a job runs in outside Kubernetes: its own user, mount, PID, network,
//! IPC, UTS and cgroup namespaces; a read-only view of the system directories only (no home
//! directory, no /var, no agent state); a private size-limited /tmp; only the job's work and
//! output directories writable; the whole PID namespace killed with bwrap.
//!
//! [`bwrap_argv`] is a pure function of the job's layout; the runner executes what it returns.

use std::path::{Path, PathBuf};

/// Where the job sees its directories inside the sandbox.
pub const JOB_WORK: &str = "/job/work";
pub const JOB_OUTPUT: &str = "/job/output";
pub const JOB_INPUT: &str = "/job/input";
/// Where the built-in demo runtime binary is mounted (read-only).
pub const DEMO_RUNTIME: &str = "/run/aitbc/demo-runtime";
/// The user a job runs as inside the sandbox when the agent runs as root.
pub const JOB_UID: u32 = 65534;
pub const JOB_GID: u32 = 65534;

/// System directories mounted read-only where they exist. Nothing else of the host is visible.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// GPU device nodes shared by every GPU (the per-GPU `/dev/nvidiaN` come from the caller).
pub const NVIDIA_CONTROL_DEVICES: &[&str] = &[
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// What one job's sandbox contains.
#[derive(Clone, Debug)]
pub struct SandboxLayout {
    pub work_dir: PathBuf,
    pub output_dir: PathBuf,
    pub input: Option<PathBuf>,
    /// The agent binary, mounted at [`DEMO_RUNTIME`] for jobs without a command.
    pub demo_exe: Option<PathBuf>,
    /// Extra host paths mounted read-only at the same place (models, provider tools).
    pub extra_ro: Vec<PathBuf>,
    /// Host paths covered by an empty tmpfs if they fall under a mounted directory (the agent's
    /// state directory, its key file's directory).
    pub hidden: Vec<PathBuf>,
    /// Size of the private /tmp.
    pub tmp_bytes: u64,
    /// The agent runs as root: map the job to [`JOB_UID`]/[`JOB_GID`] and drop capabilities.
    pub as_root: bool,
    /// Device nodes passed through (the assigned GPUs and the NVIDIA control devices).
    pub devices: Vec<PathBuf>,
}

fn push(v: &mut Vec<String>, items: &[&str]) {
    v.extend(items.iter().map(|s| s.to_string()));
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Namespaces and process flags every sandbox (and the start-up probe) gets.
fn base_args(as_root: bool) -> Vec<String> {
    let mut a = Vec::new();
    push(
        &mut a,
        &[
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "aitbc-job",
        ],
    );
    if as_root {
        push(
            &mut a,
            &["--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"],
        );
    }
    for d in SYSTEM_DIRS {
        push(&mut a, &["--ro-bind-try", d, d]);
    }
    push(&mut a, &["--dev", "/dev", "--proc", "/proc"]);
    a
}

/// Arguments of the start-up probe: the same namespaces and mounts, running `true`.
pub fn probe_args_for(as_root: bool) -> Vec<String> {
    let mut a = base_args(as_root);
    push(&mut a, &["--", "true"]);
    a
}

/// [`probe_args_for`] with this process's privileges.
pub fn probe_args() -> Vec<String> {
    probe_args_for(running_as_root())
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `p` lies under one of the mounted system directories (or an extra mount), so it
/// must be covered to stay invisible.
fn visible_in_sandbox(p: &Path, extra: &[PathBuf]) -> bool {
    SYSTEM_DIRS.iter().any(|d| p.starts_with(d)) || extra.iter().any(|e| p.starts_with(e))
}

/// bwrap's arguments (without the program) running `job_argv` in the sandbox of `l`.
/// `job_argv[0]` equal to `demo_exe` is mounted and run as [`DEMO_RUNTIME`].
pub fn bwrap_argv(l: &SandboxLayout, job_argv: &[String]) -> Vec<String> {
    let mut a = base_args(l.as_root);
    for d in &l.devices {
        let d = path_str(d);
        push(&mut a, &["--dev-bind-try", &d, &d]);
    }
    for e in &l.extra_ro {
        let e = path_str(e);
        push(&mut a, &["--ro-bind-try", &e, &e]);
    }
    for h in l
        .hidden
        .iter()
        .filter(|h| visible_in_sandbox(h, &l.extra_ro))
    {
        push(&mut a, &["--tmpfs", &path_str(h)]);
    }
    let tmp = l.tmp_bytes.max(1).to_string();
    push(&mut a, &["--size", &tmp, "--tmpfs", "/tmp"]);
    push(&mut a, &["--bind", &path_str(&l.work_dir), JOB_WORK]);
    push(&mut a, &["--bind", &path_str(&l.output_dir), JOB_OUTPUT]);
    if let Some(i) = &l.input {
        push(&mut a, &["--ro-bind", &path_str(i), JOB_INPUT]);
    }
    let mut argv = job_argv.to_vec();
    // The demo binary is mounted only for the jobs that run it.
    if let Some(exe) = l
        .demo_exe
        .as_ref()
        .filter(|e| argv.first().map(Path::new) == Some(e.as_path()))
    {
        push(&mut a, &["--ro-bind", &path_str(exe), DEMO_RUNTIME]);
        argv[0] = DEMO_RUNTIME.into();
    }
    push(&mut a, &["--chdir", JOB_WORK, "--"]);
    a.extend(argv);
    a
}

/// The device nodes a job on GPUs `minors` needs (those that exist on this machine).
pub fn gpu_devices(minors: &[u32], exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let per_gpu = minors
        .iter()
        .map(|m| PathBuf::from(format!("/dev/nvidia{m}")));
    NVIDIA_CONTROL_DEVICES
        .iter()
        .map(PathBuf::from)
        .chain(per_gpu)
        .filter(|p| exists(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> SandboxLayout {
        SandboxLayout {
            work_dir: "/state/jobs/j/work".into(),
            output_dir: "/state/jobs/j/output".into(),
            input: Some("/state/jobs/j/input".into()),
            demo_exe: Some("/home/u/target/aitbc-gpu-agent".into()),
            extra_ro: vec!["/models".into()],
            hidden: vec!["/etc/aitbc".into(), "/var/lib/aitbc-agent".into()],
            tmp_bytes: 1 << 20,
            as_root: true,
            devices: vec!["/dev/nvidia0".into()],
        }
    }

    /// Index of the pair `flag a b` in `args`.
    fn pair(args: &[String], flag: &str, a: &str, b: &str) -> Option<usize> {
        args.windows(3)
            .position(|w| w[0] == flag && w[1] == a && w[2] == b)
    }

    #[test]
    fn sandbox_mounts_only_the_system_read_only_and_the_job_dirs() {
        let args = bwrap_argv(
            &layout(),
            &[
                "/home/u/target/aitbc-gpu-agent".into(),
                "demo-runtime".into(),
            ],
        );
        for ns in [
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
        ] {
            assert!(args.iter().any(|a| a == ns), "{ns}");
        }
        assert!(pair(&args, "--ro-bind-try", "/usr", "/usr").is_some());
        assert!(pair(&args, "--ro-bind-try", "/etc", "/etc").is_some());
        assert!(pair(&args, "--bind", "/state/jobs/j/work", JOB_WORK).is_some());
        assert!(pair(&args, "--bind", "/state/jobs/j/output", JOB_OUTPUT).is_some());
        assert!(pair(&args, "--ro-bind", "/state/jobs/j/input", JOB_INPUT).is_some());
        assert!(pair(&args, "--ro-bind-try", "/models", "/models").is_some());
        assert!(pair(&args, "--dev-bind-try", "/dev/nvidia0", "/dev/nvidia0").is_some());
        assert!(pair(&args, "--size", "1048576", "--tmpfs").is_some());
        // Nothing else of the host: no /, /home, /root, /var or /tmp bind.
        for host in ["/", "/home", "/root", "/var", "/tmp", "/state"] {
            assert!(
                !args
                    .windows(2)
                    .any(|w| w[0].contains("bind") && w[1] == host),
                "{host} is mounted: {args:?}"
            );
        }
        // The state dir under /etc is covered; the one under /var is not mounted anyway.
        assert!(args
            .windows(2)
            .any(|w| w[0] == "--tmpfs" && w[1] == "/etc/aitbc"));
        assert!(!args.iter().any(|a| a == "/var/lib/aitbc-agent"));
        // Root agents map the job to nobody and drop capabilities.
        assert!(pair(&args, "--uid", "65534", "--gid").is_some());
        assert!(args
            .windows(2)
            .any(|w| w[0] == "--cap-drop" && w[1] == "ALL"));
        // The demo binary is mounted at a fixed place and run from there.
        let dash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[dash + 1..], [DEMO_RUNTIME, "demo-runtime"]);
        // Job dirs are mounted after the system, so they win.
        assert!(
            pair(&args, "--bind", "/state/jobs/j/work", JOB_WORK).unwrap()
                > pair(&args, "--ro-bind-try", "/usr", "/usr").unwrap()
        );
    }

    #[test]
    fn unprivileged_agents_keep_their_user_and_commands_pass_through() {
        let mut l = layout();
        l.as_root = false;
        l.input = None;
        let args = bwrap_argv(&l, &["/bin/sh".into(), "-c".into(), "echo hi".into()]);
        assert!(!args.iter().any(|a| a == "--uid" || a == "--cap-drop"));
        assert!(!args.iter().any(|a| a == JOB_INPUT));
        assert!(
            !args.iter().any(|a| a == DEMO_RUNTIME),
            "no demo binary for a job that does not run it"
        );
        let dash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[dash + 1..], ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(
            probe_args_for(false).last().map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn gpu_devices_are_the_assigned_ones_that_exist() {
        let have = |p: &Path| p != Path::new("/dev/nvidia-modeset");
        assert_eq!(
            gpu_devices(&[1, 3], have),
            [
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia1",
                "/dev/nvidia3"
            ]
            .map(PathBuf::from)
        );
        assert!(gpu_devices(&[0], |_| false).is_empty());
    }
}
