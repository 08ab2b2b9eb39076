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
