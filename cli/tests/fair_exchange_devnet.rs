//! Fair exchange end to end: the seed's scenario 1 (bid 120, accept, `ai-submit --service-id S
//! --payment 120`) charges the customer once, from the accepted bid, and leaves nothing escrowed.

mod common;

use common::Devnet;

#[test]
fn fair_exchange_scenario_1_job_draws_on_the_accepted_bid_end_to_end() {
    let net = Devnet::up(1, 1, 200);
    net.create_funded("carol", "1000");
    net.create_funded("dave", "1000");
    let sid = net
        .cli_pw(&[
            "marketplace",
            "--action",
            "create",
            "--name",
            "Fair Service",
            "--type",
            "ai-inference",
            "--price",
            "100",
            "--wallet",
            "dave",
        ])
        .ok()
        .value("service_id");
    let bid = net
        .cli_pw(&[
            "marketplace",
            "--action",
            "bid",
            "--service-id",
            &sid,
            "--amount",
            "120",
            "--wallet",
            "carol",
        ])
        .ok()
        .value("bid_id");
    net.cli_pw(&[
        "marketplace",
        "--action",
        "accept-bid",
        "--service-id",
        &sid,
        "--bid-id",
        &bid,
        "--wallet",
        "dave",
    ])
    .ok();
    assert_eq!(
        net.balance("carol"),
        ("879.999".to_string(), "120".to_string())
    );
    let submitted = net
        .cli_pw(&[
            "ai-submit",
            "--wallet",
            "carol",
            "--type",
            "inference",
            "--prompt",
            "a red fox",
            "--payment",
            "120",
            "--service-id",
            &sid,
            "--resolution",
            "64x64",
        ])
        .ok();
    assert_eq!(
        submitted.value("bid_id"),
        bid,
        "ai-submit says which bid it drew on"
    );
    // The bid's 120 moved into the job: nothing new locked, one job fee paid.
    assert_eq!(
        net.balance("carol"),
        ("879.998".to_string(), "120".to_string())
    );
    let job = submitted.value("job_id");
    let st = net.cli(&["ai-status", "--job-id", &job, "--wait"]).ok();
    assert_eq!(st.value("phase"), "settled");
    // Paid once: 120 to the provider less the 2.5% burned, nothing left in escrow.
    assert_eq!(
        net.balance("carol"),
        ("879.998".to_string(), "0".to_string())
    );
    assert_eq!(
        net.balance("dave"),
        ("1116.998".to_string(), "0".to_string())
    );
    let e = net.cli_pw(&[
        "marketplace",
        "--action",
        "settle-payment",
        "--service-id",
        &sid,
        "--amount",
        "120",
        "--wallet",
        "carol",
    ]);
    assert_ne!(
        e.code, 0,
        "the used bid cannot pay the provider a second time"
    );
    let r = net.cli(&["marketplace", "--action", "reconcile"]);
    assert!(r.code == 0 && !r.stdout.contains("FAIL"), "{}", r.stdout);
}
