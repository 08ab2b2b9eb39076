//! aitbc-cli without a network: help, completions, the keystore through the binary, and
//! argument errors caught before any connection.

mod common;

use common::{Devnet, PASSWORD};

#[test]
fn help_has_examples_and_completions_are_generated() {
    let d = Devnet::home_only();
    let top = d.cli(&["--help"]).ok().stdout;
    assert!(
        top.contains("Examples:") && top.contains("devnet up"),
        "{top}"
    );
    let m = d.cli(&["marketplace", "--help"]).ok().stdout;
    assert!(
        m.contains("stress-test") && m.contains("--service-id"),
        "{m}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let c = d.cli(&["completions", shell]).ok().stdout;
        assert!(
            c.contains("aitbc-cli") && c.contains("marketplace"),
            "{shell}"
        );
    }
}

#[test]
fn keystore_through_the_binary() {
    let d = Devnet::home_only();
    let r = d
        .cli(&["create", "--name", "alice", "--password", PASSWORD])
        .ok();
    let addr = r.value("address");
    assert_eq!(d.cli(&["list"]).ok().stdout, format!("alice: {addr}\n"));
    let file = d.home.path().join("wallets/alice.json");
    let before = std::fs::read(&file).expect("wallet file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(!String::from_utf8_lossy(&before).contains("secret"));
    let again = d.cli(&["create", "--name", "alice", "--password", "other"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    // Wrong password: refused before any network use, file untouched.
    let wrong = d.cli(&[
        "--node",
        "http://127.0.0.1:1",
        "send",
        "--from",
        "alice",
        "--to",
        &addr,
        "--amount",
        "1",
        "--password",
        "nope",
    ]);
    assert_ne!(wrong.code, 0);
    assert_eq!(std::fs::read(&file).expect("wallet file"), before);
    let none = d.cli(&["create", "--name", "bob"]);
    assert_ne!(none.code, 0);
    for src in ["--password", "AITBC_PASSWORD", "prompt"] {
        assert!(none.stderr.contains(src), "{}", none.stderr);
    }
    let j: serde_json::Value =
        serde_json::from_str(&d.cli(&["--output", "json", "list"]).ok().stdout).expect("json");
    assert_eq!(j["wallets"][0]["name"], "alice");
}

#[test]
fn argument_errors_are_clear() {
    let d = Devnet::home_only();
    let cases: [(&[&str], &str); 6] = [
        (
            &["marketplace", "--action", "volume", "--period", "1w"],
            "5m, 1h, 24h, 7d, 30d",
        ),
        (
            &["send", "--from", "a", "--to", "b", "--amount", "1.0000001"],
            "more than 6 decimals",
        ),
        (
            &["send", "--from", "a", "--to", "b", "--amount", "abc"],
            "not a number of AIT",
        ),
        (
            &["marketplace", "--action", "teleport"],
            "invalid value 'teleport'",
        ),
        (
            &[
                "marketplace",
                "--action",
                "create",
                "--name",
                "x",
                "--type",
                "quantum",
                "--price",
                "1",
                "--wallet",
                "a",
            ],
            "unknown service type",
        ),
        (
            &[
                "--node",
                "http://127.0.0.1:1",
                "marketplace",
                "--action",
                "list",
            ],
            "cannot reach the chain node at http://127.0.0.1:1",
        ),
    ];
    for (args, expect) in cases {
        let r = d.cli(args);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(r.stderr.contains(expect), "{args:?}: {}", r.stderr);
    }
    let down = d.cli(&["--node", "http://127.0.0.1:1", "balance", "--name", "x"]);
    assert!(
        down.stderr.contains("no wallet named") || down.stderr.contains("devnet up"),
        "{}",
        down.stderr
    );
    let unreachable = d.cli(&[
        "--node",
        "http://127.0.0.1:1",
        "marketplace",
        "--action",
        "list",
    ]);
    assert!(
        unreachable.stderr.contains("aitbc-cli devnet up"),
        "{}",
        unreachable.stderr
    );
}

/// A directory of stand-ins for `make devnet`'s prerequisite check: the few real tools it uses,
/// a `cargo`, and (with `apt`) an `apt-get` that logs its arguments and "installs" by creating the
/// tools.
fn prereq_path(dir: &std::path::Path, apt: bool) -> std::path::PathBuf {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for tool in ["id", "nproc", "grep", "dirname", "chmod"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {tool} on this machine"));
        symlink(real, bin.join(tool)).expect("symlink");
    }
    let mut stubs = vec![("cargo", "exit 0".to_string())];
    if apt {
        let log = dir.join("apt.log");
        stubs.push(("sudo", "exec \"$@\"".into()));
        stubs.push((
            "apt-get",
            format!(
                "echo \"$@\" >> {log}\ncase \"$1\" in install) for t in cc c++ protoc clang bwrap; do printf '#!/bin/sh\\n' > {bin}/$t; chmod +x {bin}/$t; done;; esac",
                log = log.display(),
                bin = bin.display()
            ),
        ));
    }
    for (name, body) in stubs {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).expect("stub");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

fn run_prereqs(dir: &std::path::Path, path: &std::path::Path) -> std::process::Output {
    std::process::Command::new("/bin/bash")
        .arg(common::repo_root().join("cli/devnet-prereqs.sh"))
        .env_clear()
        .env("PATH", path)
        .env("LIBCLANG_PATH", "/usr/lib")
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("run cli/devnet-prereqs.sh")
}

#[test]
fn make_devnet_installs_what_the_build_needs_and_says_how_long_it_takes() {
    // `make devnet` on a fresh Debian machine: no protoc, no clang, no compiler; apt-get there.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = prereq_path(tmp.path(), true);
    let out = run_prereqs(tmp.path(), &bin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let log = std::fs::read_to_string(tmp.path().join("apt.log")).expect("apt-get was run");
    let install = log
        .lines()
        .find(|l| l.starts_with("install"))
        .unwrap_or_else(|| panic!("no apt-get install in {log}"));
    for p in ["protobuf-compiler", "clang", "gcc", "g++", "bubblewrap"] {
        assert!(install.split(' ').any(|w| w == p), "{p} not in {install}");
    }
    assert!(
        stdout.contains("first build:") && stdout.contains("minutes"),
        "{stdout}"
    );
    // Run again: nothing left to install.
    std::fs::remove_file(tmp.path().join("apt.log")).expect("rm log");
    assert!(run_prereqs(tmp.path(), &bin).status.success());
    assert!(!tmp.path().join("apt.log").exists(), "apt-get ran again");

    // Without apt-get it names what is missing and fails before the build.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = prereq_path(tmp.path(), false);
    let out = run_prereqs(tmp.path(), &bin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("protobuf-compiler") && stderr.contains("clang"),
        "{stderr}"
    );
}
