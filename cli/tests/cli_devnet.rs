//! aitbc-cli driven as a user drives it, against `aitbc-cli devnet up --detach`: the command
//! lines of shared/CLI.md, the example scenario script (grep/cut extraction), bad input, the
//! stress test, and a 4-validator devnet that is stopped and resumed.

mod common;

use common::{Devnet, PASSWORD};

fn amount(s: &str) -> f64 {
    s.parse()
        .unwrap_or_else(|_| panic!("{s:?} is not a number"))
}

#[test]
fn scenario_script_plays_three_marketplace_scenarios() {
    let net = Devnet::up(1, 1, 200);
    let script = common::repo_root().join("examples/scenarios/marketplace.sh");
    let r = net.sh(
        &format!("bash {}", script.display()),
        &[("SCENARIO_ID", "t1")],
    );
    assert_eq!(
        r.code,
        0,
        "scenario script failed:\n{}\n{}\n{}",
        r.stdout,
        r.stderr,
        net.logs()
    );
    assert!(r.stdout.contains("== balances before") && r.stdout.contains("== balances after"));
    for scenario in ["scenario 1", "scenario 2", "scenario 3"] {
        assert!(r.stdout.contains(scenario));
    }
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    // Provider earned (minus fees and listing tx fees), customer paid.
    let (p, _) = net.balance("provider-t1");
    let (c, ce) = net.balance("customer-t1");
    assert!(amount(&p) > 1000.0, "provider balance {p}");
    assert!(amount(&c) < 1000.0, "customer balance {c}");
    assert_eq!(ce, "0");
    // Every job of the scenario produced a result file and was settled.
    assert_eq!(
        r.stdout.matches("phase: settled").count(),
        5,
        "{}",
        r.stdout
    );
    net.cli(&["marketplace", "--action", "audit"]).ok();
    net.cli(&["marketplace", "--action", "reconcile"]).ok();
    net.cli(&["marketplace", "--action", "compliance-check"])
        .ok();
}

#[test]
fn marketplace_commands_move_exact_amounts() {
    let net = Devnet::up(1, 1, 200);
    let alice = net.create_funded("alice", "1000");
    net.create_funded("bob", "1000");
    assert_eq!(net.balance("alice"), ("1000".to_string(), "0".to_string()));

    let created = net
        .cli_pw(&[
            "marketplace",
            "--action",
            "create",
            "--name",
            "Test AI Service",
            "--type",
            "ai-inference",
            "--price",
            "10",
            "--wallet",
            "alice",
        ])
        .ok();
    assert!(created.value("tx_hash").len() == 64);
    assert!(created.value("block").parse::<u64>().is_ok());
    // The old scripts' extraction.
    let sid = net
        .sh(r#"aitbc-cli marketplace --action list | grep "Test AI Service" | grep service_id | cut -d" " -f2"#, &[])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(sid, created.value("service_id"));
    let listing = net
        .cli(&["marketplace", "--action", "search", "--query", "Test AI"])
        .ok()
        .stdout;
    for part in ["Test AI Service", "ai-inference", "10 AIT", &alice] {
        assert!(listing.contains(part), "{listing}");
    }

    let bid = net
        .cli_pw(&[
            "marketplace",
            "--action",
            "bid",
            "--service-id",
            &sid,
            "--amount",
            "10",
            "--wallet",
            "bob",
        ])
        .ok()
        .value("bid_id");
    assert!(bid.starts_with("bid-"));
    assert_eq!(
        net.balance("bob"),
        ("989.999".to_string(), "10".to_string())
    );
    let pending = net
        .cli(&[
            "marketplace",
            "--action",
            "pending-bids",
            "--wallet",
            "alice",
        ])
        .ok()
        .stdout;
    assert!(
        pending
            .lines()
            .any(|l| l.contains("bid_id") && l.contains(&bid)),
        "{pending}"
    );
    net.cli_pw(&[
        "marketplace",
        "--action",
        "accept-bid",
        "--service-id",
        &sid,
        "--bid-id",
        &bid,
        "--wallet",
        "alice",
    ])
    .ok();
    let settled = net
        .cli_pw(&[
            "marketplace",
            "--action",
            "settle-payment",
            "--service-id",
            &sid,
            "--amount",
            "10",
            "--wallet",
            "bob",
        ])
        .ok();
    assert_eq!(settled.value("paid"), "9.75");
    assert_eq!(settled.value("fee_burned"), "0.25");
    // alice paid two fees (create, accept); bob three (bid, settle, none for the transfer in).
    assert_eq!(
        net.balance("alice"),
        ("1009.748".to_string(), "0".to_string())
    );
    assert_eq!(net.balance("bob"), ("989.998".to_string(), "0".to_string()));
    let vs = net
        .cli(&[
            "marketplace",
            "--action",
            "verify-settlement",
            "--service-id",
            &sid,
        ])
        .ok()
        .stdout;
    assert!(vs.contains(&format!("check: bid:{bid} pass")), "{vs}");

    // An AI job on the listing, followed to settlement.
    let job = net
        .cli_pw(&[
            "ai-submit",
            "--wallet",
            "bob",
            "--type",
            "inference",
            "--prompt",
            "a red fox",
            "--payment",
            "10",
            "--service-id",
            &sid,
            "--resolution",
            "64x64",
        ])
        .ok()
        .value("job_id");
    assert!(job.starts_with("job-"));
    let st = net.cli(&["ai-status", "--job-id", &job, "--wait"]).ok();
    assert_eq!(st.value("phase"), "settled");
    let out = net.home.path().join("out");
    let res = net
        .cli(&[
            "ai-results",
            "--job-id",
            &job,
            "--output-dir",
            out.to_str().expect("utf8"),
        ])
        .ok();
    assert!(
        res.stdout.contains("check: receipt-signature pass"),
        "{}",
        res.stdout
    );
    assert_eq!(res.value("output_digest").len(), 64);
    assert!(res.value("settlement_tx").len() == 64);
    assert!(out.join("image.png").is_file());
    assert_eq!(net.balance("alice").0, "1019.498");

    // Reports computed from the chain.
    let vol = net
        .cli(&["marketplace", "--action", "volume", "--period", "1h"])
        .ok();
    assert_eq!(vol.stdout.lines().last(), Some("20"));
    let rev = net
        .cli(&[
            "marketplace",
            "--action",
            "revenue",
            "--wallet",
            "alice",
            "--period",
            "24h",
        ])
        .ok();
    assert_eq!(rev.value("revenue"), "19.5");
    assert_eq!(rev.value("fees"), "0.5");
    for action in [
        "audit",
        "financial-audit",
        "reconcile",
        "payment-verify",
        "regulatory-audit",
        "privacy-audit",
        "health-check",
        "integrity-check",
    ] {
        let r = net.cli(&["marketplace", "--action", action]);
        assert_eq!(r.code, 0, "{action}: {}\n{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains("check: ") && !r.stdout.contains("FAIL"),
            "{action}: {}",
            r.stdout
        );
    }
    let q = net
        .cli(&[
            "marketplace",
            "--action",
            "quality-metrics",
            "--service-id",
            &sid,
        ])
        .ok();
    assert_eq!(q.value("success_rate"), "100.0%");

    // Transaction commands on the settlement.
    let tx = settled.value("tx_hash");
    assert_eq!(
        net.cli(&["transaction", "status", "--tx-id", &tx])
            .ok()
            .value("status"),
        "committed"
    );
    let v = net
        .cli(&["transaction", "verify", "--tx-id", &tx])
        .ok()
        .stdout;
    for rule in ["signature pass", "inclusion pass", "finality pass"] {
        assert!(v.contains(rule), "{v}");
    }
    net.cli(&["transaction", "verify-propagation", "--tx-id", &tx])
        .ok();
    let hist = net
        .cli(&["transactions", "--name", "bob", "--limit", "2"])
        .ok()
        .stdout;
    assert_eq!(
        hist.lines().filter(|l| l.starts_with("tx_hash: ")).count(),
        2,
        "{hist}"
    );

    // JSON output is one document.
    let j: serde_json::Value = serde_json::from_str(
        &net.cli(&["--output", "json", "balance", "--name", "alice"])
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(j["balance_ait"], "1019.498");
    let j: serde_json::Value = serde_json::from_str(
        &net.cli(&["--output", "json", "marketplace", "--action", "list"])
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(j["listings"][0]["service_id"], sid.as_str());
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let net = Devnet::up(1, 1, 200);
    net.create_funded("alice", "100");
    net.create_funded("bob", "100");
    let sid = net
        .cli_pw(&[
            "marketplace",
            "--action",
            "create",
            "--name",
            "Svc",
            "--type",
            "ai-inference",
            "--price",
            "10",
            "--wallet",
            "alice",
        ])
        .ok()
        .value("service_id");
    let before = (net.balance("alice"), net.balance("bob"));
    let wallet_file = net.home.path().join("wallets/bob.json");
    let file_before = std::fs::read(&wallet_file).expect("wallet file");

    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        (
            vec![
                "marketplace",
                "--action",
                "bid",
                "--service-id",
                &sid,
                "--wallet",
                "bob",
            ],
            true,
            "needs --amount",
        ),
        (
            vec![
                "marketplace",
                "--action",
                "bid",
                "--service-id",
                &sid,
                "--amount",
                "ten",
                "--wallet",
                "bob",
            ],
            true,
            "not a number of AIT",
        ),
        (
            vec![
                "marketplace",
                "--action",
                "bid",
                "--service-id",
                &sid,
                "--amount",
                "-5",
                "--wallet",
                "bob",
            ],
            true,
            "negative",
        ),
        (
            vec![
                "marketplace",
                "--action",
                "bid",
                "--service-id",
                "svc-0000000000000000",
                "--amount",
                "10",
                "--wallet",
                "bob",
            ],
            true,
            "unknown service svc-0000000000000000",
        ),
        (
            vec![
                "marketplace",
                "--action",
                "bid",
                "--service-id",
                &sid,
                "--amount",
                "10",
                "--wallet",
                "nobody",
            ],
            true,
            "no wallet named \"nobody\"",
        ),
        (
            vec![
                "marketplace",
                "--action",
                "bid",
                "--service-id",
                &sid,
                "--amount",
                "500",
                "--wallet",
                "bob",
            ],
            true,
            "insufficient funds: balance is",
        ),
        (
            vec![
                "marketplace",
                "--action",
                "bid",
                "--service-id",
                &sid,
                "--amount",
                "5",
                "--wallet",
                "bob",
            ],
            true,
            "below the price",
        ),
        (
            vec![
                "send",
                "--from",
                "bob",
                "--to",
                "alice",
                "--amount",
                "1",
                "--password",
                "wrong",
            ],
            false,
            "wrong password for wallet \"bob\"",
        ),
        (
            vec!["send", "--from", "bob", "--to", "alice", "--amount", "1"],
            false,
            "--password P, set AITBC_PASSWORD, or run on a terminal",
        ),
        (
            vec![
                "send",
                "--from",
                "bob",
                "--to",
                "aitdeadbeef",
                "--amount",
                "1",
            ],
            true,
            "neither an address nor a local wallet",
        ),
        (
            vec![
                "marketplace",
                "--action",
                "accept-bid",
                "--service-id",
                &sid,
                "--bid-id",
                "bid-0000000000000000",
                "--wallet",
                "alice",
            ],
            true,
            "unknown bid",
        ),
        (
            vec!["ai-status", "--job-id", "job-0000000000000000"],
            false,
            "unknown job job-0000000000000000",
        ),
        (
            vec!["marketplace", "--action", "volume", "--period", "2w"],
            false,
            "is not one of 5m, 1h, 24h, 7d, 30d",
        ),
        (
            vec!["balance", "--name", "nobody"],
            false,
            "no wallet named",
        ),
        (
            vec!["create", "--name", "bob", "--password", "x"],
            false,
            "already exists",
        ),
        (
            vec!["--node", "http://127.0.0.1:1", "balance", "--name", "bob"],
            false,
            "cannot reach the chain node at http://127.0.0.1:1",
        ),
        (
            vec![
                "resource",
                "test",
                "--type",
                "gpu",
                "--memory-stress",
                "--duration",
                "1",
            ],
            false,
            "simulated GPUs",
        ),
    ];
    for (args, with_pw, expect) in cases {
        let r = if with_pw {
            net.cli_pw(&args)
        } else {
            net.cli(&args)
        };
        assert_ne!(r.code, 0, "{args:?} succeeded:\n{}", r.stdout);
        assert!(
            r.stderr.contains(expect),
            "{args:?}: expected {expect:?} in stderr:\n{}",
            r.stderr
        );
    }
    // Missing password mentions all three sources.
    let r = net.cli(&["send", "--from", "bob", "--to", "alice", "--amount", "1"]);
    for src in ["--password", "AITBC_PASSWORD", "prompt"] {
        assert!(r.stderr.contains(src), "{}", r.stderr);
    }
    assert_eq!(
        (net.balance("alice"), net.balance("bob")),
        before,
        "a refused command changed balances"
    );
    assert_eq!(
        std::fs::read(&wallet_file).expect("wallet file"),
        file_before,
        "a wrong password touched the wallet file"
    );
    let pending = net
        .cli(&[
            "marketplace",
            "--action",
            "pending-bids",
            "--service-id",
            &sid,
        ])
        .ok();
    assert!(
        !pending.stdout.contains("bid_id"),
        "a refused bid was placed: {}",
        pending.stdout
    );
}

#[test]
fn stress_test_accounts_for_every_transaction() {
    let net = Devnet::up(1, 1, 200);
    let r = net.cli_pw(&[
        "marketplace",
        "--action",
        "stress-test",
        "--transactions",
        "1000",
        "--concurrent",
        "50",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("check: all-accounted-for pass"),
        "{}",
        r.stdout
    );
    let row = |k: &str| -> u64 {
        r.stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(k)
                    .map(|v| v.trim().parse::<u64>().unwrap_or(u64::MAX))
            })
            .unwrap_or_else(|| panic!("no {k} row in {}", r.stdout))
    };
    assert_eq!(row("submitted "), 1000);
    assert_eq!(row("committed ") + row("rejected "), 1000);
    for k in ["tx/s (committed)", "latency p50", "latency p99"] {
        assert!(r.stdout.contains(k), "{}", r.stdout);
    }
    let j: serde_json::Value = serde_json::from_str(
        &net.cli_pw(&[
            "--output",
            "json",
            "marketplace",
            "--action",
            "throughput-test",
            "--duration",
            "2",
            "--transactions-per-second",
            "20",
        ])
        .ok()
        .stdout,
    )
    .expect("json");
    assert_eq!(j["submitted"], 40);
    assert_eq!(j["passed"], true);
    net.cli(&["marketplace", "--action", "audit"]).ok();
}

#[test]
fn four_validator_devnet_is_healthy_and_resumes() {
    let mut net = Devnet::up(4, 1, 300);
    let cfg = std::fs::read_to_string(net.home.path().join("config.toml")).expect("config");
    assert_eq!(
        cfg.matches("http://127.0.0.1:").count(),
        4 + 1 + 1 + 1,
        "{cfg}"
    );
    net.create_funded("alice", "50");
    let hc = net
        .cli(&["marketplace", "--action", "health-check"])
        .ok()
        .stdout;
    assert!(hc.contains("check: nodes-up pass - 4/4"), "{hc}");
    net.cli(&["marketplace", "--action", "integrity-check"])
        .ok();
    net.cli(&["marketplace", "--action", "connectivity-test"])
        .ok();
    let tx = net
        .cli(&[
            "send",
            "--from",
            "alice",
            "--to",
            "genesis-ops",
            "--amount",
            "1",
            "--password",
            PASSWORD,
        ])
        .ok()
        .value("tx_hash");
    // Every validator commits the block; the slowest may apply it a moment after the others.
    let mut prop = net.cli(&["transaction", "verify-propagation", "--tx-id", &tx]);
    for _ in 0..40 {
        if prop.code == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        prop = net.cli(&["transaction", "verify-propagation", "--tx-id", &tx]);
    }
    assert!(
        prop.stdout.contains("check: held-by-all pass - 4/4"),
        "{}",
        prop.stdout
    );
    net.cli(&["transactions", "--cross-node", "--period", "5m"])
        .ok();
    let stats = net
        .cli(&[
            "marketplace",
            "--action",
            "cross-node-stats",
            "--period",
            "5m",
        ])
        .ok()
        .stdout;
    assert_eq!(stats.lines().filter(|l| l.starts_with("node: ")).count(), 4);

    let down = net.down().ok().stdout;
    assert_eq!(
        down.lines().filter(|l| l.starts_with("stopped: ")).count(),
        6,
        "{down}"
    );
    let dir = net.dir.display().to_string();
    assert!(net
        .cli(&["devnet", "status", "--dir", &dir])
        .ok()
        .stdout
        .contains("running: 0/0"));
    assert_ne!(
        net.cli(&["balance", "--name", "alice"]).code,
        0,
        "the chain should be down"
    );

    // Resume: same chain, same balances; no password needed (nothing to register).
    let up = net.cli(&["devnet", "up", "--detach", "--dir", &dir]);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    assert_eq!(up.value("resumed"), "true");
    net.mark_up();
    assert_eq!(net.balance("alice").0, "48.999");
}

/// The old scripts' command lines of issue 19, verbatim, on a fresh `devnet up --detach`.
#[test]
fn old_script_command_lines_work_on_a_fresh_devnet() {
    let net = Devnet::up(1, 2, 200);
    // `up --detach` returned only once the agents were checked and registered: the very first
    // `resource status` shows them healthy, under the names the old scripts use.
    let st = net.cli(&["resource", "status"]).ok().stdout;
    for name in ["gpu-worker-1", "gpu-worker-2"] {
        let line = st
            .lines()
            .find(|l| l.starts_with(&format!("agent: {name} ")))
            .unwrap_or_else(|| panic!("no agent {name} in:\n{st}"));
        assert!(line.contains("healthy: true"), "{line}");
    }
    let alice = net.create_funded("alice", "1000");

    // A parameter value may hold commas.
    let created = net
        .cli_pw(&[
            "marketplace",
            "--action",
            "create",
            "--name",
            "Data Cruncher",
            "--type",
            "data-processing",
            "--price",
            "5",
            "--wallet",
            "alice",
            "--description",
            "Automated data analysis and processing",
            "--parameters",
            "data_format:csv,json,xml,output_format:reports",
        ])
        .ok();
    let sid = created.value("service_id");
    net.cli_pw(&[
        "marketplace",
        "--action",
        "create",
        "--name",
        "Test AI Service",
        "--type",
        "ai-inference",
        "--price",
        "10",
        "--wallet",
        "alice",
    ])
    .ok();
    let j: serde_json::Value = serde_json::from_str(
        &net.cli(&["--output", "json", "marketplace", "--action", "list"])
            .ok()
            .stdout,
    )
    .expect("json");
    let listing = j["listings"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["service_id"] == sid.as_str()))
        .unwrap_or_else(|| panic!("listing {sid} missing: {j}"));
    assert_eq!(
        listing["parameters"],
        serde_json::json!([
            ["data_format", "csv,json,xml"],
            ["output_format", "reports"]
        ])
    );
    assert_eq!(listing["price_base_units"], "5000000");
    assert_eq!(listing["price_ait"], "5");

    // Search matches words, not one literal substring.
    let found = net
        .cli(&[
            "marketplace",
            "--action",
            "search",
            "--query",
            "data processing",
        ])
        .ok()
        .stdout;
    assert!(
        found.contains(&format!("service_id: {sid} ")),
        "search found nothing: {found}"
    );
    assert!(!found.contains("Test AI Service"), "{found}");

    // Read your own writes: the allocation shows in the very next status.
    let alloc = net
        .cli(&[
            "resource",
            "allocate",
            "--agent-id",
            "gpu-worker-1",
            "--gpu",
            "1",
            "--memory",
            "8192",
            "--duration",
            "120",
        ])
        .ok()
        .value("allocation_id");
    let st = net
        .cli(&["resource", "status", "--agent-id", "gpu-worker-1"])
        .ok()
        .stdout;
    assert!(
        st.contains(&format!("allocation_id: {alloc} ")),
        "allocation not visible:\n{st}"
    );
    assert!(st.contains("free: 1 "), "{st}");

    // --agent-id takes a key as well as a name.
    let j: serde_json::Value = serde_json::from_str(
        &net.cli(&["--output", "json", "resource", "status"])
            .ok()
            .stdout,
    )
    .expect("json");
    let key = j["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent_id"] == "gpu-worker-2"))
        .and_then(|x| x["agent_key"].as_str())
        .expect("gpu-worker-2's key")
        .to_string();
    assert_eq!(key.len(), 64, "{key}");
    let by_key = net
        .cli(&["resource", "status", "--agent-id", &key])
        .ok()
        .stdout;
    assert!(by_key.contains("agent: gpu-worker-2 "), "{by_key}");
    net.cli(&[
        "resource",
        "deallocate",
        "--agent-id",
        "gpu-worker-1",
        "--allocation-id",
        &alloc,
    ])
    .ok();

    // JSON amounts: base units as an integer string and AIT as a decimal string, next to the
    // old field; the same names in every command.
    let j: serde_json::Value = serde_json::from_str(
        &net.cli(&["--output", "json", "balance", "--name", "alice"])
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(j["address"], alice.as_str());
    assert_eq!(j["balance"], "999.998 AIT");
    assert_eq!(j["balance_ait"], "999.998");
    assert_eq!(j["balance_base_units"], "999998000");
    assert_eq!(j["escrowed_base_units"], "0");
}
