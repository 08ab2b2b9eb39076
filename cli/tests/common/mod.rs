//! Test harness: `aitbc-cli devnet up --detach` in a temporary AITBC_HOME, and the binary run as
//! a user runs it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PASSWORD: &str = "test-password";

/// The directory holding the workspace binaries (target/debug), next to the test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in [
        "aitbc-cli",
        "aitbc-node",
        "aitbc-gpu-agent",
        "aitbc-scheduler",
    ] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing in {}: run `cargo build --workspace --bins` first",
            b,
            dir.display()
        );
    }
    dir
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
    /// The value after `key: ` on the first line starting with it (what `grep key | cut -d" " -f2` gives).
    pub fn value(&self, key: &str) -> String {
        let prefix = format!("{key}: ");
        self.stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(&prefix)
                    .map(|v| v.split(' ').next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no `{key}:` line in:\n{}\nstderr: {}",
                    self.stdout, self.stderr
                )
            })
    }
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

pub struct Devnet {
    pub home: tempfile::TempDir,
    pub dir: PathBuf,
    pub bins: PathBuf,
    up: bool,
}

impl Devnet {
    /// A fresh AITBC_HOME without a network.
    pub fn home_only() -> Devnet {
        let home = tempfile::tempdir().expect("tempdir");
        let dir = home.path().join("net");
        Devnet {
            home,
            dir,
            bins: bin_dir(),
            up: false,
        }
    }

    /// `devnet up --detach` with `validators` validators and `agents` agents.
    pub fn up(validators: usize, agents: usize, block_ms: u64) -> Devnet {
        let mut d = Devnet::home_only();
        let v = validators.to_string();
        let a = agents.to_string();
        let b = block_ms.to_string();
        let dir = d.dir.display().to_string();
        let r = d.cli(&[
            "devnet",
            "up",
            "--detach",
            "--validators",
            &v,
            "--agents",
            &a,
            "--block-time-ms",
            &b,
            "--dir",
            &dir,
            "--genesis-password",
            PASSWORD,
        ]);
        d.up = true;
        if r.code != 0 {
            panic!(
                "devnet up failed:\n{}\n{}\n{}",
                r.stdout,
                r.stderr,
                d.logs()
            );
        }
        d
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(10).collect();
                    s.push_str(&format!(
                        "--- {} ---\n{}\n",
                        p.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
            }
        }
        s
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("AITBC_HOME", self.home.path())
            .env_remove("AITBC_PASSWORD")
            .env_remove("AITBC_NODE")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bins.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null());
        c
    }

    /// `aitbc-cli ARGS` with no password in the environment.
    pub fn cli(&self, args: &[&str]) -> Run {
        Run::from(
            self.command(&self.bins.join("aitbc-cli"))
                .args(args)
                .output()
                .expect("run aitbc-cli"),
        )
    }

    /// `aitbc-cli ARGS` with AITBC_PASSWORD set (how old scripts sign marketplace commands).
    pub fn cli_pw(&self, args: &[&str]) -> Run {
        Run::from(
            self.command(&self.bins.join("aitbc-cli"))
                .env("AITBC_PASSWORD", PASSWORD)
                .args(args)
                .output()
                .expect("run aitbc-cli"),
        )
    }

    /// A bash script with aitbc-cli on PATH and AITBC_PASSWORD set.
    pub fn sh(&self, script: &str, envs: &[(&str, &str)]) -> Run {
        let mut c = self.command(Path::new("bash"));
        c.arg("-c").arg(script).env("AITBC_PASSWORD", PASSWORD);
        for (k, v) in envs {
            c.env(k, v);
        }
        Run::from(c.output().expect("run bash"))
    }

    pub fn create_funded(&self, name: &str, amount: &str) -> String {
        self.cli(&["create", "--name", name, "--password", PASSWORD])
            .ok();
        let addr = self
            .cli(&["list"])
            .ok()
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
            .expect("wallet listed");
        self.cli(&[
            "send",
            "--from",
            "genesis-ops",
            "--to",
            &addr,
            "--amount",
            amount,
            "--password",
            PASSWORD,
        ])
        .ok();
        addr
    }

    /// (balance, escrowed) as printed by `balance`.
    pub fn balance(&self, name: &str) -> (String, String) {
        let r = self.cli(&["balance", "--name", name]).ok();
        (r.value("balance"), r.value("escrowed"))
    }

    /// Records that the network runs again (after a resume), so that drop stops it.
    pub fn mark_up(&mut self) {
        self.up = true;
    }

    pub fn down(&mut self) -> Run {
        self.up = false;
        let dir = self.dir.display().to_string();
        self.cli(&["devnet", "down", "--dir", &dir])
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if self.up {
            if std::thread::panicking() {
                eprintln!("{}", self.logs());
            }
            let _ = self.down();
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
