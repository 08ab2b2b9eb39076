//! Keys stay where they belong: one key per chain pod (and the migration of older chains to
//! that layout), Wallets sign only with their own Secrets, funding needs the payer's grant,
//! and a node's refusal never makes the operator pay twice.

mod common;

use aitbc_crds::{Node, Wallet};
use aitbc_operator::chain::{AccountView, ChainApi, ChainInfo, TxState};
use aitbc_operator::controllers::{instrumented, node, wallet};
use aitbc_operator::keys;
use aitbc_operator::txflow;
use aitbc_protocol::client::ClientError;
use aitbc_protocol::model::{AgentRecord, Bid, Job, Listing};
use aitbc_protocol::tx::{Action, SignedTransaction};
use aitbc_protocol::{Address, Amount, Hash, Keypair};
use async_trait::async_trait;
use common::{FakeChain, World, CORE, NS};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Two nodes of one in-memory chain. Node B is the chain itself. Node A refuses every
/// submission with `refusal` and sees no mempool but its own (empty): it knows committed state
/// only. `on_a` says which node the operator's connection reaches.
struct TwoNodes {
    chain: Arc<FakeChain>,
    on_a: Mutex<bool>,
    refusal: Mutex<fn(String) -> ClientError>,
}

impl TwoNodes {
    fn new(chain: Arc<FakeChain>) -> Arc<TwoNodes> {
        Arc::new(TwoNodes {
            chain,
            on_a: Mutex::new(false),
            refusal: Mutex::new(ClientError::Busy),
        })
    }
    fn to_a(&self, refusal: fn(String) -> ClientError) {
        *self.refusal.lock() = refusal;
        *self.on_a.lock() = true;
    }
    fn to_b(&self) {
        *self.on_a.lock() = false;
    }
    fn a(&self) -> bool {
        *self.on_a.lock()
    }
}

#[async_trait]
impl ChainApi for TwoNodes {
    async fn info(&self) -> Result<ChainInfo, ClientError> {
        self.chain.info().await
    }
    async fn account(&self, address: &Address) -> Result<AccountView, ClientError> {
        let mut a = self.chain.account(address).await?;
        if self.a() {
            a.pending_nonce = a.nonce;
        }
        Ok(a)
    }
    async fn submit(&self, stx: &SignedTransaction) -> Result<Hash, ClientError> {
        if self.a() {
            let refuse = *self.refusal.lock();
            return Err(refuse("the mempool is full; retry shortly".into()));
        }
        self.chain.submit(stx).await
    }
    async fn tx_state(&self, hash: &Hash) -> Result<TxState, ClientError> {
        match self.chain.tx_state(hash).await? {
            TxState::Pending if self.a() => Ok(TxState::Unknown),
            s => Ok(s),
        }
    }
    async fn listing(&self, id: &str) -> Result<Listing, ClientError> {
        self.chain.listing(id).await
    }
    async fn bid(&self, id: &str) -> Result<Bid, ClientError> {
        self.chain.bid(id).await
    }
    async fn bids(&self, listing_id: &str, status: &str) -> Result<Vec<Bid>, ClientError> {
        self.chain.bids(listing_id, status).await
    }
    async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.chain.job(id).await
    }
    async fn agents(&self) -> Result<Vec<AgentRecord>, ClientError> {
        self.chain.agents().await
    }
}

fn ait(n: u128) -> Amount {
    Amount::from_ait(n).unwrap()
}

async fn wallet_pass(w: &World, name: &str) -> Result<(), aitbc_operator::Error> {
    let obj: Wallet = w.obj("wallets", name);
    instrumented(Arc::new(obj), w.ctx.clone(), wallet::reconcile)
        .await
        .map(|_| ())
}

fn funding_world() -> (World, Arc<TwoNodes>, Keypair) {
    let w = World::new();
    let nodes = TwoNodes::new(w.chain.clone());
    let w = w.through(nodes.clone());
    let ops = w.wallet_with_key("genesis-ops", 1000);
    w.grant_funding("genesis-ops", "bob");
    w.add(
        "Wallet",
        "wallets",
        "bob",
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "100"}}),
    );
    (w, nodes, ops)
}

fn recorded(w: &World) -> Option<String> {
    w.obj::<Wallet>("wallets", "bob")
        .status
        .and_then(|s| s.pending_tx)
        .map(|p| p.hash)
}

fn funded_reason(w: &World) -> String {
    let st = w.obj::<Wallet>("wallets", "bob").status.unwrap();
    st.conditions
        .iter()
        .find(|c| c.type_ == "Funded")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn transfers_signed(w: &World) -> usize {
    let mut hashes: Vec<Hash> = w
        .chain
        .submitted
        .lock()
        .iter()
        .filter(|s| matches!(s.tx.action, Action::Transfer { .. }))
        .map(|s| s.hash())
        .collect();
    hashes.dedup();
    hashes.len()
}

#[tokio::test]
async fn key_custody_a_refusal_on_one_node_never_pays_twice_while_another_commits() {
    let (w, nodes, ops) = funding_world();
    *w.chain.hold.lock() = true;
    // Node B takes the transfer into its mempool.
    wallet_pass(&w, "bob").await.unwrap();
    let first = recorded(&w).expect("the transfer is recorded");
    assert_eq!(transfers_signed(&w), 1);

    // The connection now reaches node A: its mempool is full (RESOURCE_EXHAUSTED) and it does
    // not hold the transfer. The record stays; the same bytes are offered again.
    nodes.to_a(ClientError::Busy);
    wallet_pass(&w, "bob").await.unwrap();
    assert_eq!(recorded(&w).as_deref(), Some(first.as_str()));
    assert_eq!(funded_reason(&w), "ChainBusy");
    // A refusal of the transaction itself (FAILED_PRECONDITION, whatever its text) is only
    // that node's view too.
    nodes.to_a(ClientError::Rejected);
    wallet_pass(&w, "bob").await.unwrap();
    assert_eq!(recorded(&w).as_deref(), Some(first.as_str()));
    assert_eq!(funded_reason(&w), "TransactionRefused");

    // Back on node B, which still has it pending: nothing new is signed.
    nodes.to_b();
    wallet_pass(&w, "bob").await.unwrap();
    assert_eq!(recorded(&w).as_deref(), Some(first.as_str()));
    assert_eq!(transfers_signed(&w), 1, "never a second transfer");

    // B commits it; the operator, on A again, sees it committed.
    w.chain.commit_all();
    nodes.to_a(ClientError::Busy);
    wallet_pass(&w, "bob").await.unwrap();
    let st = w.obj::<Wallet>("wallets", "bob").status.unwrap();
    assert!(st.funded);
    assert_eq!(st.funding_tx_hash.as_deref(), Some(first.as_str()));
    assert_eq!(transfers_signed(&w), 1);
    assert_eq!(w.chain.accounts.lock()[&ops.address()].balance, ait(900));
}

#[tokio::test]
async fn key_custody_a_recorded_transaction_is_abandoned_only_when_its_nonce_is_used() {
    let (w, nodes, ops) = funding_world();
    *w.chain.hold.lock() = true;
    nodes.to_a(ClientError::Busy);
    wallet_pass(&w, "bob").await.unwrap();
    let first = recorded(&w).expect("recorded although node A refused it");
    for _ in 0..3 {
        wallet_pass(&w, "bob").await.unwrap();
        assert_eq!(recorded(&w).as_deref(), Some(first.as_str()));
    }
    // Another payment of the same key takes nonce 0 and commits.
    let info = w.chain.info().await.unwrap();
    let (other, _) = txflow::sign(
        &info.chain_id,
        &ops,
        0,
        info.min_fee,
        Action::Transfer {
            to: Keypair::generate().address(),
            amount: ait(1),
        },
    );
    w.chain.submit(&other).await.unwrap();
    w.chain.commit_all();

    // Now the chain proves the recorded transfer can never commit: only now is it dropped.
    wallet_pass(&w, "bob").await.unwrap();
    let st = w.obj::<Wallet>("wallets", "bob").status.unwrap();
    assert_eq!(st.pending_tx, None);
    assert_eq!(st.funding_tx_hash, None);
    nodes.to_b();
    wallet_pass(&w, "bob").await.unwrap();
    let second = recorded(&w).expect("a new transfer at the next nonce");
    assert_ne!(second, first);
    w.chain.commit_all();
    wallet_pass(&w, "bob").await.unwrap();
    let st = w.obj::<Wallet>("wallets", "bob").status.unwrap();
    assert!(st.funded);
    let committed = w.chain.committed.lock();
    assert!(!committed.contains_key(&first.parse().unwrap()));
    assert!(committed.contains_key(&second.parse().unwrap()));
    drop(committed);
    let bob: Address = st.address.unwrap().parse().unwrap();
    assert_eq!(w.chain.accounts.lock()[&bob].balance, ait(100), "paid once");
}

fn put_secret(w: &World, secret: k8s_openapi::api::core::v1::Secret) {
    w.api
        .put(CORE, "secrets", serde_json::to_value(secret).unwrap());
}

fn reason_of(e: &aitbc_operator::Error) -> &'static str {
    e.reason()
}

#[tokio::test]
async fn key_custody_a_wallet_refuses_a_foreign_secret() {
    let w = World::new();
    let alice = w.wallet_with_key("alice", 50);
    wallet_pass(&w, "alice").await.unwrap();
    // Another Wallet naming alice's Secret.
    w.add(
        "Wallet",
        "wallets",
        "mallory",
        json!({"secretName": "alice-wallet-key"}),
    );
    let e = wallet_pass(&w, "mallory").await.unwrap_err();
    assert_eq!(reason_of(&e), "SecretNotAllowed", "{e}");
    // A Secret nobody marked as a wallet key.
    put_secret(
        &w,
        keys::key_secret("loose-key", NS, &Keypair::generate(), BTreeMap::new()),
    );
    w.add(
        "Wallet",
        "wallets",
        "carol",
        json!({"secretName": "loose-key"}),
    );
    assert_eq!(
        reason_of(&wallet_pass(&w, "carol").await.unwrap_err()),
        "SecretNotAllowed"
    );
    let st = w.obj::<Wallet>("wallets", "mallory").status.unwrap();
    assert_eq!(st.address, None, "no address: the key was never used");
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(!ready.is_true());
    assert!(
        ready.message.contains("alice-wallet-key"),
        "{}",
        ready.message
    );

    // A namespace admin marks it as carol's key: now carol may use it.
    let loose = keys::key_secret("loose-key", NS, &Keypair::generate(), BTreeMap::new());
    let mut marked = loose.clone();
    marked.metadata.annotations = Some(BTreeMap::from([(
        keys::WALLET_KEY_FOR_ANNOTATION.to_string(),
        "carol".to_string(),
    )]));
    put_secret(&w, marked);
    wallet_pass(&w, "carol").await.unwrap();
    let st = w.obj::<Wallet>("wallets", "carol").status.unwrap();
    assert_eq!(
        st.address,
        Some(
            keys::keypair_from_secret(&loose)
                .unwrap()
                .address()
                .to_string()
        )
    );
    // alice's Secret was never touched by the others and alice still signs with it.
    wallet_pass(&w, "alice").await.unwrap();
    let st = w.obj::<Wallet>("wallets", "alice").status.unwrap();
    assert_eq!(st.address, Some(alice.address().to_string()));
    assert!(w.chain.submitted.lock().is_empty());
}

#[tokio::test]
async fn key_custody_validator_and_scheduler_keys_are_never_wallet_keys() {
    let w = World::new();
    let validator = keys::key_secret(
        "aitbc-validator-0",
        NS,
        &Keypair::generate(),
        keys::validator_key_labels("aitbc"),
    );
    let mut marked = validator.clone();
    marked.metadata.annotations = Some(BTreeMap::from([(
        keys::WALLET_KEY_FOR_ANNOTATION.to_string(),
        "thief".to_string(),
    )]));
    put_secret(&w, marked);
    w.add(
        "Wallet",
        "wallets",
        "thief",
        json!({"secretName": "aitbc-validator-0"}),
    );
    let e = wallet_pass(&w, "thief").await.unwrap_err();
    assert_eq!(reason_of(&e), "SecretNotAllowed");
    assert!(e.to_string().contains("validator key"), "{e}");
    // Even labelled like a wallet key: a validator-key label wins.
    let mut disguised = validator;
    let (mut labels, _) = keys::wallet_key_meta("thief", None);
    labels.insert(keys::NODE_LABEL.into(), "aitbc".into());
    labels.insert(keys::MANAGED_LABEL.into(), keys::MANAGED_VALUE.into());
    disguised.metadata.labels = Some(labels);
    put_secret(&w, disguised);
    assert_eq!(
        reason_of(&wallet_pass(&w, "thief").await.unwrap_err()),
        "SecretNotAllowed"
    );
    let sched = keys::key_secret(
        "aitbc-scheduler-key",
        NS,
        &Keypair::generate(),
        keys::scheduler_key_labels(),
    );
    put_secret(&w, sched);
    w.add(
        "Wallet",
        "wallets",
        "thief2",
        json!({"secretName": "aitbc-scheduler-key"}),
    );
    assert_eq!(
        reason_of(&wallet_pass(&w, "thief2").await.unwrap_err()),
        "SecretNotAllowed"
    );
}

#[tokio::test]
async fn key_custody_a_wallet_key_is_bound_to_its_wallet_uid() {
    let w = World::new();
    w.add("Wallet", "wallets", "alice", json!({}));
    wallet_pass(&w, "alice").await.unwrap();
    let secret = w.api.get(&w.path("secrets", "alice-wallet-key")).unwrap();
    assert_eq!(
        secret["metadata"]["annotations"][keys::OWNER_UID_ANNOTATION],
        "uid-alice"
    );
    assert!(
        secret["metadata"]["ownerReferences"].is_null(),
        "no ownerReference: deleting the Wallet must not garbage-collect its funds' key"
    );
    // The Wallet is deleted (its key kept) and someone creates a new Wallet of the same name.
    w.api.objects.lock().remove(&w.path("wallets", "alice"));
    w.add("Wallet", "wallets", "alice", json!({}));
    w.api
        .objects
        .lock()
        .get_mut(&w.path("wallets", "alice"))
        .unwrap()["metadata"]["uid"] = json!("uid-someone-else");
    let e = wallet_pass(&w, "alice").await.unwrap_err();
    assert_eq!(reason_of(&e), "SecretNotAllowed");
    assert!(e.to_string().contains("another Wallet"), "{e}");
}

#[tokio::test]
async fn key_custody_funding_needs_the_paying_wallets_grant() {
    let w = World::new();
    let ops = w.wallet_with_key("genesis-ops", 1000);
    w.add(
        "Wallet",
        "wallets",
        "bob",
        json!({"funding": {"fromWallet": "genesis-ops", "amount": "100"}}),
    );
    let e = wallet_pass(&w, "bob").await.unwrap_err();
    assert_eq!(reason_of(&e), "FundingNotGranted");
    assert!(w.chain.submitted.lock().is_empty(), "nothing signed");
    w.grant_funding("genesis-ops", "someone-else");
    assert_eq!(
        reason_of(&wallet_pass(&w, "bob").await.unwrap_err()),
        "FundingNotGranted"
    );
    w.grant_funding("genesis-ops", "bob");
    wallet_pass(&w, "bob").await.unwrap();
    wallet_pass(&w, "bob").await.unwrap();
    assert!(w.obj::<Wallet>("wallets", "bob").status.unwrap().funded);
    assert_eq!(w.chain.accounts.lock()[&ops.address()].balance, ait(900));
}

const APPS: &str = "/apis/apps/v1";

fn sts_path(name: &str) -> String {
    format!("{APPS}/namespaces/{NS}/statefulsets/{name}")
}

async fn node_pass(w: &World) {
    let n: Node = w.obj("nodes", "aitbc");
    node::reconcile(Arc::new(n), w.ctx.clone()).await.unwrap();
}

fn mounted_secrets(sts: &serde_json::Value) -> Vec<String> {
    sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            let direct = v["secret"]["secretName"].as_str().map(String::from);
            let projected = v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["secret"]["name"].as_str().map(String::from))
                .collect::<Vec<_>>();
            direct.into_iter().chain(projected)
        })
        .collect()
}

#[tokio::test]
async fn key_custody_an_older_chain_moves_to_one_key_per_pod_keeping_keys_pvcs_and_genesis() {
    let w = World::new();
    w.add(
        "Node",
        "nodes",
        "aitbc",
        json!({"validators": 4, "genesis": {"allocations": [{"name": "genesis-ops", "wallet": "genesis-ops", "amount": "1000000"}]}}),
    );
    // What an older operator left: four validator Secrets (old labels), the genesis, PVCs of
    // its StatefulSet `aitbc` and that StatefulSet, whose every pod mounted every key.
    let mut keys_before = Vec::new();
    for i in 0..4 {
        let k = Keypair::generate();
        keys_before.push(k.public());
        let labels = BTreeMap::from([(keys::NODE_LABEL.to_string(), "aitbc".to_string())]);
        put_secret(
            &w,
            keys::key_secret(&format!("aitbc-validator-{i}"), NS, &k, labels),
        );
        w.api.put(
            CORE,
            "persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": format!("data-aitbc-{i}"), "namespace": NS}}),
        );
    }
    node_pass(&w).await;
    let genesis = w.api.get(&w.path("configmaps", "aitbc-genesis")).unwrap();
    // Start over from the legacy layout: the first pass created the new objects; drop the
    // member StatefulSets and put the old one back, owned by the Node.
    w.api
        .objects
        .lock()
        .retain(|k, _| !k.contains("/statefulsets/"));
    w.api.put(
        APPS,
        "statefulsets",
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "aitbc", "namespace": NS,
                            "ownerReferences": [{"apiVersion": "aitbc.io/v1alpha1", "kind": "Node", "name": "aitbc", "uid": "uid-aitbc", "controller": true}]},
               "spec": {"replicas": 4}}),
    );
    w.api.calls.lock().clear();

    // Upgrade, pass 1: the old StatefulSet is deleted in the foreground; nothing new runs yet.
    node_pass(&w).await;
    let deletes = w.api.calls_matching("DELETE", "/statefulsets/aitbc");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body["propagationPolicy"], "Foreground");
    assert!(w
        .api
        .calls_matching("PATCH", "/statefulsets/aitbc-validator")
        .is_empty());
    // Its pods are still terminating: still nothing new.
    node_pass(&w).await;
    assert!(w
        .api
        .calls_matching("PATCH", "/statefulsets/aitbc-validator")
        .is_empty());

    // Its pods are gone: one StatefulSet per validator, each with its own key and old PVC.
    w.api.objects.lock().remove(&sts_path("aitbc"));
    node_pass(&w).await;
    for i in 0..4 {
        let sts = w
            .api
            .get(&sts_path(&format!("aitbc-validator-{i}")))
            .expect("member StatefulSet");
        assert_eq!(mounted_secrets(&sts), [format!("aitbc-validator-{i}")]);
        let claim = sts["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "data")
            .unwrap()["persistentVolumeClaim"]["claimName"]
            .clone();
        assert_eq!(claim, json!(format!("data-aitbc-{i}")));
    }
    assert!(
        w.api.calls_matching("POST", "/secrets").is_empty(),
        "no key is replaced"
    );
    assert!(
        w.api
            .calls_matching("POST", "/persistentvolumeclaims")
            .is_empty(),
        "the ledgers stay"
    );
    assert_eq!(
        w.api.get(&w.path("configmaps", "aitbc-genesis")).unwrap()["data"],
        genesis["data"],
        "the chain keeps its identity"
    );
    let g: aitbc_protocol::model::Genesis =
        serde_json::from_str(genesis["data"]["genesis.json"].as_str().unwrap()).unwrap();
    let in_genesis: Vec<_> = g.validators.iter().map(|v| v.key).collect();
    assert_eq!(in_genesis, keys_before);
}

#[tokio::test]
async fn key_custody_a_new_chain_gives_each_pod_its_key_pvc_and_network_policy() {
    let w = World::new();
    w.add("Node", "nodes", "aitbc", json!({"validators": 4}));
    node_pass(&w).await;
    for i in 0..4 {
        let sts = w
            .api
            .get(&sts_path(&format!("aitbc-validator-{i}")))
            .expect("member StatefulSet");
        assert_eq!(mounted_secrets(&sts), [format!("aitbc-validator-{i}")]);
        let secret = w
            .api
            .get(&w.path("secrets", &format!("aitbc-validator-{i}")))
            .unwrap();
        assert_eq!(
            secret["metadata"]["labels"][keys::KEY_ROLE_LABEL],
            "validator"
        );
    }
    assert_eq!(
        w.api
            .calls_matching("POST", "/persistentvolumeclaims")
            .len(),
        4
    );
    assert!(
        w.api.get(&sts_path("aitbc")).is_none(),
        "no StatefulSet holds every key"
    );
    let np = w
        .api
        .calls_matching("PATCH", "/networkpolicies/aitbc")
        .pop()
        .expect("the chain's NetworkPolicy is applied");
    assert_eq!(np.body["spec"]["policyTypes"], json!(["Ingress"]));
}
