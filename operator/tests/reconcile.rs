//! Reconcilers against kube's mocked API (tower-test) and an in-memory chain: the calls they
//! make, status writes, finalizers, and exactly-once payments across a simulated crash.

mod common;

use aitbc_crds::{AiJob, AiJobPhase, Bid, BidPhase, ListingPhase, Node, ServiceListing, Wallet};
use aitbc_operator::controllers::{aijob, bid, instrumented, listing, node, wallet};
use aitbc_operator::txflow;
use aitbc_protocol::tx::{object_id, Action};
use aitbc_protocol::Amount;
use common::{World, CORE, NS};
use serde_json::json;
use std::sync::Arc;

fn ait(n: u128) -> Amount {
    Amount::from_ait(n).unwrap()
}

async fn wallet_pass(w: &World, name: &str) {
    let obj: Wallet = w.obj("wallets", name);
    wallet::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .expect("wallet reconcile");
}

async fn bid_pass(w: &World, name: &str) -> Result<(), aitbc_operator::Error> {
    let obj: Bid = w.obj("bids", name);
    bid::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .map(|_| ())
}

async fn listing_pass(w: &World, name: &str) {
    let obj: ServiceListing = w.obj("servicelistings", name);
    listing::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .expect("listing reconcile");
}

async fn job_pass(w: &World, name: &str) -> Result<(), aitbc_operator::Error> {
    let obj: AiJob = w.obj("aijobs", name);
    aijob::reconcile(Arc::new(obj), w.ctx.clone())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn wallet_creates_its_key_secret_once_and_shows_the_account() {
    let w = World::new();
    w.add("Wallet", "wallets", "alice", json!({}));
    wallet_pass(&w, "alice").await;
    let created = w.api.calls_matching("POST", "/secrets");
    assert_eq!(created.len(), 1, "the key Secret is created");
    let status = w.obj::<Wallet>("wallets", "alice").status.unwrap();
    let address = status.address.clone().unwrap();
    assert_eq!(status.secret_name.as_deref(), Some("alice-wallet-key"));
    assert_eq!(status.balance.as_deref(), Some("0"));
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.is_true()));
    assert!(
        !serde_json::to_string(&status)
            .unwrap()
            .contains(&hex_secret(&w, "alice-wallet-key")),
        "no key in status"
    );

    w.chain.fund(address.parse().unwrap(), 42);
    wallet_pass(&w, "alice").await;
    assert_eq!(
        w.api.calls_matching("POST", "/secrets").len(),
        1,
        "an existing Secret is never replaced"
    );
    let status = w.obj::<Wallet>("wallets", "alice").status.unwrap();
    assert_eq!(status.address.as_deref(), Some(address.as_str()));
    assert_eq!(status.balance.as_deref(), Some("42"));
    assert_eq!(w.event_reasons(), ["KeyCreated"]);
}

fn hex_secret(w: &World, name: &str) -> String {
    let s = w.api.get(&w.path("secrets", name)).unwrap();
    let b64 = s["data"]["private-key"].as_str().unwrap().to_string();
    b64
}

#[tokio::test]
async fn wallet_funding_is_recorded_before_it_is_sent_and_runs_exactly_once() {
    let w = World::new();
    let ops = w.wallet_with_key("genesis-ops", 1000);
    w.grant_funding("genesis-ops", "bob");
    w.add(
        "Wallet",
        "wallets",
        "bob",
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "100"}}),
    );
    *w.chain.hold.lock() = true;
    wallet_pass(&w, "bob").await;
    let st = w.obj::<Wallet>("wallets", "bob").status.unwrap();
    let recorded = st.pending_tx.clone().expect("transfer recorded");
    assert_eq!(st.funding_tx_hash.as_deref(), Some(recorded.hash.as_str()));
    assert!(!st.funded);
    let log = w.log();
    let recorded_at = log
        .iter()
        .position(|l| l.contains("PATCH") && l.contains("wallets/bob/status"))
        .unwrap();
    let sent_at = log
        .iter()
        .position(|l| l == "chain submit transfer")
        .unwrap();
    assert!(
        recorded_at < sent_at,
        "status written before the transfer is submitted: {log:?}"
    );

    // The transfer is in the mempool: another pass resubmits nothing new.
    wallet_pass(&w, "bob").await;
    assert_eq!(w.chain.submitted.lock().len(), 1);
    w.chain.commit_all();
    wallet_pass(&w, "bob").await;
    wallet_pass(&w, "bob").await;
    let st = w.obj::<Wallet>("wallets", "bob").status.unwrap();
    assert!(st.funded);
    assert_eq!(st.pending_tx, None);
    assert_eq!(st.balance.as_deref(), Some("100"));
    assert_eq!(
        w.chain
            .actions()
            .iter()
            .filter(|a| matches!(a, Action::Transfer { .. }))
            .count(),
        1
    );
    assert_eq!(w.chain.accounts.lock()[&ops.address()].balance, ait(900));
    assert!(w.event_reasons().contains(&"Funded".to_string()));
}

#[tokio::test]
async fn a_missing_funding_wallet_is_a_condition_not_a_crash() {
    let w = World::new();
    w.add(
        "Wallet",
        "wallets",
        "carol",
        json!({"funding": {"fromWallet": "nobody", "amount": "1"}}),
    );
    let obj: Wallet = w.obj("wallets", "carol");
    let err = instrumented(Arc::new(obj), w.ctx.clone(), wallet::reconcile)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "WalletNotFound");
    let st = w.obj::<Wallet>("wallets", "carol").status.unwrap();
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(!ready.is_true());
    assert_eq!(ready.reason, "WalletNotFound");
    assert!(
        ready
            .message
            .contains("Wallet \"nobody\" not found in namespace market"),
        "{}",
        ready.message
    );
    assert!(w.chain.submitted.lock().is_empty());
}

fn setup_listing(w: &World, policy: &str) -> String {
    let provider = w.wallet_with_key("provider", 10);
    let _ = provider;
    w.add(
        "ServiceListing",
        "servicelistings",
        "sdxl",
        json!({"wallet": "provider", "name": "SDXL", "type": "ai-inference", "price": "25", "acceptPolicy": policy}),
    );
    "sdxl".into()
}

#[tokio::test]
async fn listing_gets_a_finalizer_then_goes_on_chain_and_closes_on_delete() {
    let w = World::new();
    setup_listing(&w, "auto");
    listing_pass(&w, "sdxl").await;
    let l: ServiceListing = w.obj("servicelistings", "sdxl");
    assert_eq!(
        l.metadata.finalizers.as_deref(),
        Some(&["aitbc.io/close-listing".to_string()][..])
    );
    assert!(
        w.chain.submitted.lock().is_empty(),
        "no transaction before the finalizer is in place"
    );

    listing_pass(&w, "sdxl").await; // create-listing recorded and submitted
    listing_pass(&w, "sdxl").await; // committed: serviceId
    let st = w
        .obj::<ServiceListing>("servicelistings", "sdxl")
        .status
        .unwrap();
    let id = st.service_id.clone().unwrap();
    assert_eq!(st.phase, ListingPhase::Active);
    assert!(
        matches!(&w.chain.actions()[0], Action::CreateListing { price, .. } if *price == ait(25))
    );

    // A price change becomes one update-listing.
    {
        let mut objs = w.api.objects.lock();
        let o = objs.get_mut(&w.path("servicelistings", "sdxl")).unwrap();
        o["spec"]["price"] = json!("30");
    }
    listing_pass(&w, "sdxl").await;
    listing_pass(&w, "sdxl").await;
    assert_eq!(w.chain.listings.lock()[&id].price, ait(30));
    assert_eq!(
        w.chain
            .actions()
            .iter()
            .filter(|a| matches!(a, Action::UpdateListing { .. }))
            .count(),
        1
    );

    w.delete("servicelistings", "sdxl");
    listing_pass(&w, "sdxl").await; // close-listing sent
    assert!(!w.chain.listings.lock()[&id].active);
    listing_pass(&w, "sdxl").await; // committed: finalizer removed, object gone
    assert!(w
        .try_obj::<ServiceListing>("servicelistings", "sdxl")
        .is_none());
    assert!(
        w.event_reasons().contains(&"ListingClosed".to_string()),
        "{:?}",
        w.event_reasons()
    );
}

async fn active_listing(w: &World, policy: &str) -> String {
    setup_listing(w, policy);
    for _ in 0..3 {
        listing_pass(w, "sdxl").await;
    }
    w.obj::<ServiceListing>("servicelistings", "sdxl")
        .status
        .unwrap()
        .service_id
        .unwrap()
}

#[tokio::test]
async fn bid_is_placed_exactly_once_across_a_crash_and_accepted_by_auto_policy() {
    let w = World::new();
    let listing_id = active_listing(&w, "auto").await;
    let customer = w.wallet_with_key("customer", 100);
    w.add(
        "Bid",
        "bids",
        "b1",
        json!({"listing": "sdxl", "wallet": "customer", "amount": "30"}),
    );
    bid_pass(&w, "b1").await.unwrap(); // finalizer
    assert_eq!(
        w.obj::<Bid>("bids", "b1").metadata.finalizers.unwrap(),
        ["aitbc.io/cancel-bid"]
    );

    // Simulate a crash after the status was written but before the transaction was submitted:
    // write the record the reconciler would have written, and nothing to the chain.
    let (stx, record) = txflow::sign(
        "aitbc-test",
        &customer,
        0,
        Amount(1000),
        Action::PlaceBid {
            listing_id: listing_id.clone(),
            amount: ait(30),
        },
    );
    {
        let mut objs = w.api.objects.lock();
        let o = objs.get_mut(&w.path("bids", "b1")).unwrap();
        o["status"] = json!({"phase": "Pending", "pendingTx": serde_json::to_value(&record).unwrap(), "conditions": []});
    }
    bid_pass(&w, "b1").await.unwrap(); // restart: resubmits the recorded bytes
    bid_pass(&w, "b1").await.unwrap(); // and follows them to the block
    bid_pass(&w, "b1").await.unwrap();
    let places: Vec<_> = w
        .chain
        .submitted
        .lock()
        .iter()
        .filter(|s| matches!(s.tx.action, Action::PlaceBid { .. }))
        .cloned()
        .collect();
    assert_eq!(places.len(), 1, "one bid on chain");
    assert_eq!(
        places[0].hash(),
        stx.hash(),
        "the recorded transaction, not a new one"
    );
    let st = w.obj::<Bid>("bids", "b1").status.unwrap();
    assert_eq!(
        st.bid_id.as_deref(),
        Some(object_id("bid", &stx.hash()).as_str())
    );
    assert_eq!(st.phase, BidPhase::Placed);
    assert_eq!(st.tx_hashes["place-bid"], stx.hash().to_hex());

    // The provider's listing reconciler accepts it (amount >= price).
    listing_pass(&w, "sdxl").await;
    listing_pass(&w, "sdxl").await;
    bid_pass(&w, "b1").await.unwrap();
    assert_eq!(
        w.obj::<Bid>("bids", "b1").status.unwrap().phase,
        BidPhase::Accepted
    );
    assert_eq!(
        w.chain
            .actions()
            .iter()
            .filter(|a| matches!(a, Action::AcceptBid { .. }))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_committed_recorded_bid_is_never_paid_again() {
    let w = World::new();
    let listing_id = active_listing(&w, "auto").await;
    w.wallet_with_key("customer", 100);
    w.add(
        "Bid",
        "bids",
        "b2",
        json!({"listing": "sdxl", "wallet": "customer", "amount": "30"}),
    );
    bid_pass(&w, "b2").await.unwrap(); // finalizer
    bid_pass(&w, "b2").await.unwrap(); // place-bid recorded + submitted (committed at once)
    let record = w
        .obj::<Bid>("bids", "b2")
        .status
        .unwrap()
        .pending_tx
        .expect("recorded");
    // Crash before the outcome was written: the status still only holds the record.
    for _ in 0..3 {
        bid_pass(&w, "b2").await.unwrap();
    }
    let places = w
        .chain
        .actions()
        .iter()
        .filter(|a| matches!(a, Action::PlaceBid { .. }))
        .count();
    assert_eq!(places, 1);
    let st = w.obj::<Bid>("bids", "b2").status.unwrap();
    assert_eq!(st.tx_hashes["place-bid"], record.hash);
    assert_eq!(st.listing_id.as_deref(), Some(listing_id.as_str()));
    assert!(w.event_reasons().contains(&"BidPlaced".to_string()));
}

#[tokio::test]
async fn manual_policy_waits_for_the_accept_annotation() {
    let w = World::new();
    active_listing(&w, "manual").await;
    w.wallet_with_key("customer", 100);
    w.add(
        "Bid",
        "bids",
        "b3",
        json!({"listing": "sdxl", "wallet": "customer", "amount": "30"}),
    );
    for _ in 0..3 {
        bid_pass(&w, "b3").await.unwrap();
    }
    listing_pass(&w, "sdxl").await;
    assert_eq!(
        w.chain
            .actions()
            .iter()
            .filter(|a| matches!(a, Action::AcceptBid { .. }))
            .count(),
        0
    );
    {
        let mut objs = w.api.objects.lock();
        let o = objs.get_mut(&w.path("bids", "b3")).unwrap();
        o["metadata"]["annotations"] = json!({"aitbc.io/accept": "true"});
    }
    listing_pass(&w, "sdxl").await;
    assert_eq!(
        w.chain
            .actions()
            .iter()
            .filter(|a| matches!(a, Action::AcceptBid { .. }))
            .count(),
        1
    );
}

#[tokio::test]
async fn deleting_a_pending_bid_cancels_it_and_removes_the_finalizer() {
    let w = World::new();
    active_listing(&w, "manual").await;
    w.wallet_with_key("customer", 100);
    w.add(
        "Bid",
        "bids",
        "b4",
        json!({"listing": "sdxl", "wallet": "customer", "amount": "30"}),
    );
    for _ in 0..3 {
        bid_pass(&w, "b4").await.unwrap();
    }
    let id = w.obj::<Bid>("bids", "b4").status.unwrap().bid_id.unwrap();
    w.delete("bids", "b4");
    bid_pass(&w, "b4").await.unwrap(); // cancel-bid sent
    assert!(w
        .chain
        .actions()
        .contains(&Action::CancelBid { bid_id: id.clone() }));
    bid_pass(&w, "b4").await.unwrap(); // committed: finalizer removed
    assert!(
        w.try_obj::<Bid>("bids", "b4").is_none(),
        "the Bid is gone once cancelled"
    );
    assert_eq!(
        w.chain.bids.lock()[&id].status,
        aitbc_protocol::model::BidStatus::Cancelled
    );
}

#[tokio::test]
async fn bid_on_a_missing_listing_reports_it() {
    let w = World::new();
    w.wallet_with_key("customer", 100);
    w.add(
        "Bid",
        "bids",
        "b5",
        json!({"listing": "nope", "wallet": "customer", "amount": "30"}),
    );
    bid_pass(&w, "b5").await.unwrap();
    let obj: Bid = w.obj("bids", "b5");
    let err = instrumented(Arc::new(obj), w.ctx.clone(), bid::reconcile)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ListingNotFound");
    let c = w.obj::<Bid>("bids", "b5").status.unwrap().conditions;
    assert!(c.iter().any(|c| c.reason == "ListingNotFound"
        && c.message.contains("ServiceListing \"nope\" not found")));
    assert!(w.event_reasons().contains(&"ListingNotFound".to_string()));
}

#[tokio::test]
async fn aijob_submits_with_escrow_mirrors_the_chain_and_cancels_on_delete() {
    let w = World::new();
    let listing_id = active_listing(&w, "auto").await;
    w.wallet_with_key("customer", 100);
    w.add(
        "AIJob",
        "aijobs",
        "img",
        json!({"wallet": "customer", "listing": "sdxl", "type": "inference", "payment": "25", "prompt": "a lighthouse", "gpus": 1, "memoryMiB": 8192}),
    );
    job_pass(&w, "img").await.unwrap(); // finalizer
    assert_eq!(
        w.obj::<AiJob>("aijobs", "img").metadata.finalizers.unwrap(),
        ["aitbc.io/cancel-job"]
    );
    job_pass(&w, "img").await.unwrap(); // submit-job recorded + sent
    let st = w.obj::<AiJob>("aijobs", "img").status.unwrap();
    let hash = st.submit_tx_hash.clone().expect("hash recorded");
    job_pass(&w, "img").await.unwrap();
    job_pass(&w, "img").await.unwrap();
    let st = w.obj::<AiJob>("aijobs", "img").status.unwrap();
    let job_id = st.job_id.clone().unwrap();
    assert_eq!(st.phase, AiJobPhase::Submitted);
    assert!(st
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.is_true() && c.reason == "OnChain"));
    assert_eq!(st.submit_tx_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(st.escrow.as_deref(), Some("25"));
    let submits: Vec<Action> = w
        .chain
        .actions()
        .into_iter()
        .filter(|a| matches!(a, Action::SubmitJob { .. }))
        .collect();
    assert_eq!(submits.len(), 1);
    let Action::SubmitJob {
        listing_id: lid,
        payment,
        spec,
        ..
    } = &submits[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (lid.as_deref(), *payment),
        (Some(listing_id.as_str()), ait(25))
    );
    assert_eq!(
        (spec.gpus, spec.memory_mib, spec.prompt.as_str()),
        (1, 8192, "a lighthouse")
    );

    // The scheduler assigns it; the status follows the chain.
    let agent = aitbc_protocol::Keypair::generate();
    {
        let mut jobs = w.chain.jobs.lock();
        let j = jobs.get_mut(&job_id).unwrap();
        j.status = aitbc_protocol::model::JobStatus::Assigned;
        j.assigned_agent = Some(agent.public());
    }
    job_pass(&w, "img").await.unwrap();
    let st = w.obj::<AiJob>("aijobs", "img").status.unwrap();
    assert_eq!(st.phase, AiJobPhase::Assigned);
    assert_eq!(st.agent, Some(agent.public().to_string()));
    assert!(w.event_reasons().contains(&"JobAssigned".to_string()));

    // Deleting the running job cancels it (refund) before the finalizer goes.
    w.delete("aijobs", "img");
    job_pass(&w, "img").await.unwrap();
    assert!(w.chain.actions().contains(&Action::CancelJob {
        job_id: job_id.clone()
    }));
    assert!(
        w.try_obj::<AiJob>("aijobs", "img").is_some(),
        "kept until the cancel is committed"
    );
    job_pass(&w, "img").await.unwrap();
    assert!(w.try_obj::<AiJob>("aijobs", "img").is_none());
    assert_eq!(
        w.chain.jobs.lock()[&job_id].status,
        aitbc_protocol::model::JobStatus::Refunded
    );
    assert!(
        w.event_reasons().contains(&"JobCancelled".to_string()),
        "{:?}",
        w.event_reasons()
    );
}

#[tokio::test]
async fn aijob_draws_on_an_accepted_bid_and_waits_for_acceptance() {
    let w = World::new();
    active_listing(&w, "manual").await;
    w.wallet_with_key("customer", 100);
    w.add(
        "Bid",
        "bids",
        "rent",
        json!({"listing": "sdxl", "wallet": "customer", "amount": "30"}),
    );
    for _ in 0..3 {
        bid_pass(&w, "rent").await.unwrap();
    }
    w.add(
        "AIJob",
        "aijobs",
        "train",
        json!({"wallet": "customer", "listing": "sdxl", "bid": "rent", "type": "training"}),
    );
    job_pass(&w, "train").await.unwrap(); // finalizer
    let obj: AiJob = w.obj("aijobs", "train");
    let err = instrumented(Arc::new(obj), w.ctx.clone(), aijob::reconcile)
        .await
        .unwrap_err();
    let cond = w.obj::<AiJob>("aijobs", "train").status.unwrap().conditions;
    assert!(cond.iter().any(|c| c.type_ == "Ready"
        && !c.is_true()
        && c.message.contains("a job draws only on an accepted bid")));
    assert_eq!(err.reason(), "DependencyNotReady", "{err}");
    assert!(w
        .chain
        .actions()
        .iter()
        .all(|a| !matches!(a, Action::SubmitJob { .. })));

    {
        let mut objs = w.api.objects.lock();
        objs.get_mut(&w.path("bids", "rent")).unwrap()["metadata"]["annotations"] =
            json!({"aitbc.io/accept": "true"});
    }
    listing_pass(&w, "sdxl").await;
    bid_pass(&w, "rent").await.unwrap();
    let bid_id = w.obj::<Bid>("bids", "rent").status.unwrap().bid_id.unwrap();
    let obj: AiJob = w.obj("aijobs", "train");
    let err = instrumented(Arc::new(obj), w.ctx.clone(), aijob::reconcile).await;
    assert!(err.is_ok(), "{err:?}");
    job_pass(&w, "train").await.unwrap();
    let ready = w
        .obj::<AiJob>("aijobs", "train")
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.is_true(),
        "the earlier DependencyNotReady condition is replaced: {ready:?}"
    );
    let submit = w
        .chain
        .actions()
        .into_iter()
        .find(|a| matches!(a, Action::SubmitJob { .. }))
        .unwrap();
    assert!(
        matches!(submit, Action::SubmitJob { bid_id: Some(ref b), payment, .. } if *b == bid_id && payment == Amount::ZERO)
    );
}

#[tokio::test]
async fn node_creates_keys_genesis_services_statefulset_and_pdb_once() {
    let w = World::new();
    w.add(
        "Node",
        "nodes",
        "aitbc",
        json!({"validators": 4, "genesis": {"allocations": [{"name": "genesis-ops", "wallet": "genesis-ops", "amount": "1000000"}]}}),
    );
    let n: Node = w.obj("nodes", "aitbc");
    node::reconcile(Arc::new(n), w.ctx.clone()).await.unwrap();
    let secrets: Vec<String> = w
        .api
        .calls_matching("POST", "/secrets")
        .iter()
        .map(|c| c.body["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for i in 0..4 {
        assert!(
            secrets.contains(&format!("aitbc-validator-{i}")),
            "{secrets:?}"
        );
    }
    assert!(secrets.contains(&"genesis-ops-wallet-key".to_string()));
    assert!(secrets.contains(&"aitbc-scheduler-key".to_string()));
    assert!(
        w.api
            .get(&format!(
                "{CORE}/namespaces/aitbc-system/secrets/aitbc-scheduler-key"
            ))
            .is_some(),
        "scheduler key in the operator namespace"
    );
    let cm = w
        .api
        .get(&w.path("configmaps", "aitbc-genesis"))
        .expect("genesis ConfigMap");
    let g: aitbc_protocol::model::Genesis =
        serde_json::from_str(cm["data"]["genesis.json"].as_str().unwrap()).unwrap();
    assert_eq!(g.validators.len(), 4);
    assert_eq!(g.chain_id, format!("aitbc-{NS}-aitbc"));
    assert_eq!(g.schedulers.len(), 1);
    assert!(g
        .allocations
        .iter()
        .any(|a| a.name == "genesis-ops" && a.amount == ait(1_000_000)));
    for path in [
        "services/aitbc-peers",
        "services/aitbc",
        "statefulsets/aitbc",
        "poddisruptionbudgets/aitbc",
    ] {
        let applied = w.api.calls_matching("PATCH", path);
        assert!(
            applied
                .iter()
                .any(|c| c.content_type.contains("apply-patch")),
            "{path} applied with server-side apply"
        );
    }
    let st = w.obj::<Node>("nodes", "aitbc").status.unwrap();
    assert_eq!((st.replicas, st.ready_replicas), (4, 0));
    assert_eq!(st.validators.len(), 4);
    assert!(st.conditions.iter().any(|c| c.reason == "WaitingForQuorum"));

    // A second pass never replaces keys or the genesis.
    let n: Node = w.obj("nodes", "aitbc");
    node::reconcile(Arc::new(n), w.ctx.clone()).await.unwrap();
    assert_eq!(
        w.api.calls_matching("POST", "/secrets").len(),
        secrets.len()
    );
    assert_eq!(w.api.calls_matching("POST", "/configmaps").len(), 1);
    let cm2 = w.api.get(&w.path("configmaps", "aitbc-genesis")).unwrap();
    assert_eq!(cm["data"], cm2["data"]);
    assert_eq!(
        w.event_reasons()
            .iter()
            .filter(|r| *r == "GenesisCreated")
            .count(),
        1
    );
}
