//! Test doubles: an in-memory Kubernetes API server behind kube's `Client` (tower-test mock
//! service) and an in-memory chain. Both append to one shared call log so tests can check the
//! order of writes (status recorded before the transaction is submitted).

#![allow(dead_code)]

use aitbc_operator::chain::{AccountView, ChainApi, ChainInfo, FixedChain, TxState};
use aitbc_operator::context::{Config, Context, MemoryEvents, NoTracker};
use aitbc_operator::metrics::Metrics;
use aitbc_protocol::client::ClientError;
use aitbc_protocol::model::{AgentRecord, Bid, BidStatus, Job, JobStatus, Listing, TxReceipt};
use aitbc_protocol::tx::{object_id, Action, SignedTransaction};
use aitbc_protocol::{Address, Amount, Hash};
use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub type Log = Arc<Mutex<Vec<String>>>;

/// One API call as the fake server saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body: Value,
}

/// An in-memory Kubernetes API: objects by path, enough of GET/LIST/POST/PATCH for the operator.
#[derive(Default)]
pub struct FakeApi {
    pub objects: Mutex<BTreeMap<String, Value>>,
    pub calls: Mutex<Vec<Call>>,
    rv: Mutex<u64>,
    log: Log,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeApi {
    /// Stores an object at its canonical path (`apiVersion`, `kind` plural given).
    pub fn put(&self, api_prefix: &str, plural: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("object name")
            .to_string();
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        obj["metadata"]["uid"] = json!(format!("uid-{name}"));
        self.objects
            .lock()
            .insert(format!("{api_prefix}/namespaces/{ns}/{plural}/{name}"), obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().get(path).cloned()
    }

    pub fn calls_matching(&self, method: &str, needle: &str) -> Vec<Call> {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.method == method && c.path.contains(needle))
            .cloned()
            .collect()
    }

    fn next_rv(&self) -> String {
        let mut rv = self.rv.lock();
        *rv += 1;
        rv.to_string()
    }

    fn handle(
        &self,
        method: &str,
        full_path: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let path = full_path.split('?').next().unwrap_or_default().to_string();
        self.calls.lock().push(Call {
            method: method.into(),
            path: path.clone(),
            content_type: content_type.into(),
            body: body.clone(),
        });
        self.log.lock().push(format!("k8s {method} {path}"));
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let Some(ns_at) = segs.iter().position(|s| *s == "namespaces") else {
            return (
                StatusCode::NOT_FOUND,
                status_body(404, "NotFound", "cluster-scoped paths are not served"),
            );
        };
        let prefix = format!("/{}", segs[..ns_at].join("/"));
        let rest = &segs[ns_at + 1..];
        let (ns, plural) = (
            rest.first().copied().unwrap_or(""),
            rest.get(1).copied().unwrap_or(""),
        );
        let name = rest.get(2).copied();
        let sub = rest.get(3).copied();
        let collection = format!("{prefix}/namespaces/{ns}/{plural}");
        match (method, name) {
            ("GET", None) => {
                let items: Vec<Value> = self
                    .objects
                    .lock()
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{collection}/")))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("GET", Some(n)) => match self.get(&format!("{collection}/{n}")) {
                Some(o) => (StatusCode::OK, o),
                None => (
                    StatusCode::NOT_FOUND,
                    status_body(404, "NotFound", &format!("{plural} {n} not found")),
                ),
            },
            ("POST", None) => {
                let n = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let key = format!("{collection}/{n}");
                if self.objects.lock().contains_key(&key) {
                    return (
                        StatusCode::CONFLICT,
                        status_body(
                            409,
                            "AlreadyExists",
                            &format!("{plural} {n} already exists"),
                        ),
                    );
                }
                let mut o = body;
                o["metadata"]["resourceVersion"] = json!(self.next_rv());
                o["metadata"]["namespace"] = json!(ns);
                self.objects.lock().insert(key, o.clone());
                (StatusCode::CREATED, o)
            }
            ("PUT", Some(n)) => {
                let key = format!("{collection}/{n}");
                let mut o = body;
                o["metadata"]["resourceVersion"] = json!(self.next_rv());
                self.objects.lock().insert(key, o.clone());
                (StatusCode::OK, o)
            }
            ("PATCH", Some(n)) => {
                let key = format!("{collection}/{n}");
                let existing = self.get(&key);
                let mut o = match (existing, content_type.contains("apply-patch")) {
                    (Some(o), _) => o,
                    (None, true) => json!({"metadata": {"name": n, "namespace": ns}}),
                    (None, false) => {
                        return (
                            StatusCode::NOT_FOUND,
                            status_body(404, "NotFound", &format!("{plural} {n} not found")),
                        )
                    }
                };
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
                    if o["metadata"]["resourceVersion"].as_str() != Some(rv) {
                        return (
                            StatusCode::CONFLICT,
                            status_body(409, "Conflict", "the object has been modified"),
                        );
                    }
                }
                let mut patch = body.clone();
                if let Some(m) = patch.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    m.remove("resourceVersion");
                }
                if sub == Some("status") {
                    if content_type.contains("apply-patch") {
                        o["status"] = patch["status"].clone();
                    } else {
                        merge(&mut o, &json!({"status": patch["status"].clone()}));
                    }
                } else if content_type.contains("apply-patch") {
                    let status = o.get("status").cloned();
                    merge(&mut o, &patch);
                    if let Some(s) = status {
                        o["status"] = s;
                    }
                } else {
                    merge(&mut o, &patch);
                }
                o["metadata"]["resourceVersion"] = json!(self.next_rv());
                let gone = o["metadata"].get("deletionTimestamp").is_some()
                    && o["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(|f| f.is_empty());
                if gone {
                    self.objects.lock().remove(&key);
                } else {
                    self.objects.lock().insert(key, o.clone());
                }
                (StatusCode::OK, o)
            }
            ("DELETE", Some(n)) => {
                let key = format!("{collection}/{n}");
                let Some(mut o) = self.get(&key) else {
                    return (
                        StatusCode::NOT_FOUND,
                        status_body(404, "NotFound", &format!("{plural} {n} not found")),
                    );
                };
                if body["propagationPolicy"] == "Foreground" {
                    // Dependents first: the object stays, being deleted, until a test says its
                    // pods are gone (`finish_deletion`).
                    o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    o["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
                    self.objects.lock().insert(key, o.clone());
                } else {
                    self.objects.lock().remove(&key);
                }
                (StatusCode::OK, o)
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status_body(405, "MethodNotAllowed", method),
            ),
        }
    }
}

/// A kube `Client` whose requests the fake API answers.
pub fn client(api: Arc<FakeApi>) -> Client {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let value: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            let ct = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let (code, out) = api.handle(parts.method.as_str(), &path, &ct, value);
            let resp = Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&out).unwrap_or_default()))
                .unwrap();
            send.send_response(resp);
        }
    });
    Client::new(mock, "default")
}

/// An in-memory chain: transactions commit as soon as they are submitted (or when
/// `commit_all` is called, with `hold` set), with just enough state for the reconcilers.
#[derive(Default)]
pub struct FakeChain {
    pub accounts: Mutex<HashMap<Address, AccountView>>,
    pub submitted: Mutex<Vec<SignedTransaction>>,
    pub pending: Mutex<Vec<SignedTransaction>>,
    pub committed: Mutex<HashMap<Hash, TxReceipt>>,
    pub listings: Mutex<HashMap<String, Listing>>,
    pub bids: Mutex<HashMap<String, Bid>>,
    pub jobs: Mutex<HashMap<String, Job>>,
    /// Keep submitted transactions in the mempool until `commit_all`.
    pub hold: Mutex<bool>,
    pub height: Mutex<u64>,
    log: Log,
}

impl FakeChain {
    pub fn fund(&self, a: Address, ait: u128) {
        self.accounts.lock().entry(a).or_default().balance = Amount::from_ait(ait).unwrap();
    }

    pub fn actions(&self) -> Vec<Action> {
        self.submitted
            .lock()
            .iter()
            .map(|s| s.tx.action.clone())
            .collect()
    }

    pub fn commit_all(&self) {
        let txs: Vec<SignedTransaction> = self.pending.lock().drain(..).collect();
        for t in txs {
            self.apply(&t);
        }
    }

    fn apply(&self, stx: &SignedTransaction) {
        let hash = stx.hash();
        let sender = stx.tx.sender_address();
        let mut height = self.height.lock();
        *height += 1;
        let h = *height;
        {
            let mut acc = self.accounts.lock();
            let a = acc.entry(sender).or_default();
            a.nonce = a.nonce.max(stx.tx.nonce + 1);
            a.pending_nonce = a.pending_nonce.max(a.nonce);
        }
        let mut error = None;
        match &stx.tx.action {
            Action::Transfer { to, amount } => {
                let mut acc = self.accounts.lock();
                let from = acc.entry(sender).or_default();
                match from.balance.checked_sub(*amount) {
                    Some(b) => {
                        from.balance = b;
                        let t = acc.entry(*to).or_default();
                        t.balance = t.balance.checked_add(*amount).unwrap();
                    }
                    None => error = Some("insufficient balance".to_string()),
                }
            }
            Action::CreateListing {
                name,
                service_type,
                price,
                description,
                parameters,
                runtime,
            } => {
                let id = object_id("svc", &hash);
                self.listings.lock().insert(
                    id.clone(),
                    Listing {
                        id,
                        owner: sender,
                        name: name.clone(),
                        service_type: *service_type,
                        price: *price,
                        description: description.clone(),
                        parameters: parameters.clone(),
                        runtime: runtime.clone(),
                        active: true,
                        created_height: h,
                        bids: 0,
                        jobs: 0,
                        revenue: Amount::ZERO,
                    },
                );
            }
            Action::UpdateListing {
                listing_id,
                price,
                description,
                runtime,
            } => {
                if let Some(l) = self.listings.lock().get_mut(listing_id) {
                    if let Some(p) = price {
                        l.price = *p;
                    }
                    if let Some(d) = description {
                        l.description = d.clone();
                    }
                    if let Some(r) = runtime {
                        l.runtime = r.clone();
                    }
                }
            }
            Action::CloseListing { listing_id } => {
                if let Some(l) = self.listings.lock().get_mut(listing_id) {
                    l.active = false;
                }
            }
            Action::PlaceBid { listing_id, amount } => {
                let id = object_id("bid", &hash);
                self.bids.lock().insert(
                    id.clone(),
                    Bid {
                        id,
                        listing_id: listing_id.clone(),
                        bidder: sender,
                        amount: *amount,
                        status: BidStatus::Pending,
                        created_height: h,
                        updated_height: h,
                    },
                );
            }
            Action::AcceptBid { bid_id } => self.set_bid(bid_id, BidStatus::Accepted),
            Action::CancelBid { bid_id } => self.set_bid(bid_id, BidStatus::Cancelled),
            Action::SubmitJob {
                listing_id,
                bid_id,
                payment,
                spec,
                ..
            } => {
                let id = object_id("job", &hash);
                if let Some(b) = bid_id {
                    self.set_bid(b, BidStatus::UsedByJob);
                }
                self.jobs.lock().insert(
                    id.clone(),
                    Job {
                        id,
                        customer: sender,
                        listing_id: listing_id.clone(),
                        bid_id: bid_id.clone(),
                        provider: None,
                        escrow: *payment,
                        spec: spec.clone(),
                        status: JobStatus::Pending,
                        assigned_agent: None,
                        assignments: 0,
                        result: None,
                        created_height: h,
                        deadline_height: h + 100,
                        updated_height: h,
                        fee_burned: Amount::ZERO,
                        price: *payment,
                        deadline_ms: (h + 100) * 1000,
                        stop_requested: false,
                    },
                );
            }
            Action::CancelJob { job_id } => {
                if let Some(j) = self.jobs.lock().get_mut(job_id) {
                    j.status = JobStatus::Refunded;
                }
            }
            _ => {}
        }
        self.log
            .lock()
            .push(format!("chain commit {}", stx.tx.action.name()));
        self.committed.lock().insert(
            hash,
            TxReceipt {
                tx_hash: hash,
                height: h,
                index: 0,
                error,
                fee_paid: Amount::ZERO,
                events: vec![],
            },
        );
    }

    fn set_bid(&self, id: &str, s: BidStatus) {
        if let Some(b) = self.bids.lock().get_mut(id) {
            b.status = s;
        }
    }
}

#[async_trait]
impl ChainApi for FakeChain {
    async fn info(&self) -> Result<ChainInfo, ClientError> {
        Ok(ChainInfo {
            chain_id: "aitbc-test".into(),
            height: *self.height.lock(),
            min_fee: Amount(1000),
            validators: vec![],
        })
    }
    async fn account(&self, address: &Address) -> Result<AccountView, ClientError> {
        Ok(self
            .accounts
            .lock()
            .get(address)
            .cloned()
            .unwrap_or_default())
    }
    async fn submit(&self, stx: &SignedTransaction) -> Result<Hash, ClientError> {
        let hash = stx.hash();
        if self.committed.lock().contains_key(&hash)
            || self.pending.lock().iter().any(|p| p.hash() == hash)
        {
            return Err(ClientError::AlreadyKnown(format!(
                "transaction {hash} is already known"
            )));
        }
        let nonce = self
            .accounts
            .lock()
            .get(&stx.tx.sender_address())
            .map(|a| a.nonce)
            .unwrap_or(0);
        if stx.tx.nonce < nonce {
            return Err(ClientError::Rejected(format!(
                "nonce {} is used; next is {nonce}",
                stx.tx.nonce
            )));
        }
        self.log
            .lock()
            .push(format!("chain submit {}", stx.tx.action.name()));
        self.submitted.lock().push(stx.clone());
        {
            let mut acc = self.accounts.lock();
            let a = acc.entry(stx.tx.sender_address()).or_default();
            a.pending_nonce = a.pending_nonce.max(stx.tx.nonce + 1);
        }
        if *self.hold.lock() {
            self.pending.lock().push(stx.clone());
        } else {
            self.apply(stx);
        }
        Ok(hash)
    }
    async fn tx_state(&self, hash: &Hash) -> Result<TxState, ClientError> {
        if let Some(r) = self.committed.lock().get(hash) {
            return Ok(TxState::Committed(r.clone()));
        }
        if self.pending.lock().iter().any(|p| p.hash() == *hash) {
            return Ok(TxState::Pending);
        }
        Ok(TxState::Unknown)
    }
    async fn listing(&self, id: &str) -> Result<Listing, ClientError> {
        self.listings
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ClientError::NotFound(format!("listing {id}")))
    }
    async fn bid(&self, id: &str) -> Result<Bid, ClientError> {
        self.bids
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ClientError::NotFound(format!("bid {id}")))
    }
    async fn bids(&self, listing_id: &str, status: &str) -> Result<Vec<Bid>, ClientError> {
        let mut v: Vec<Bid> = self
            .bids
            .lock()
            .values()
            .filter(|b| {
                b.listing_id == listing_id && (status.is_empty() || b.status.as_str() == status)
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
    async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.jobs
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ClientError::NotFound(format!("job {id}")))
    }
    async fn agents(&self) -> Result<Vec<AgentRecord>, ClientError> {
        Ok(vec![])
    }
}

/// Everything a reconciler test needs.
pub struct World {
    pub api: Arc<FakeApi>,
    pub chain: Arc<FakeChain>,
    pub events: Arc<MemoryEvents>,
    pub ctx: Arc<Context>,
    pub log: Log,
}

pub const NS: &str = "market";
pub const CRD: &str = "/apis/aitbc.io/v1alpha1";
pub const CORE: &str = "/api/v1";

impl World {
    pub fn new() -> World {
        let log: Log = Arc::default();
        let api = Arc::new(FakeApi {
            log: log.clone(),
            ..Default::default()
        });
        let chain = Arc::new(FakeChain {
            log: log.clone(),
            ..Default::default()
        });
        let events = Arc::new(MemoryEvents::default());
        let ctx = Arc::new(Context::new(
            client(api.clone()),
            Arc::new(FixedChain(chain.clone())),
            events.clone(),
            Arc::new(NoTracker),
            Arc::new(Metrics::new()),
            Config {
                operator_namespace: "aitbc-system".into(),
                ..Config::default()
            },
        ));
        World {
            api,
            chain,
            events,
            ctx,
            log,
        }
    }

    /// A world whose reconcilers talk to `chain` (a real node) instead of the in-memory one.
    pub fn with_chain(chain: Arc<dyn ChainApi>) -> World {
        World::with_chain_and_jobs(chain, Arc::new(NoTracker))
    }

    /// As `with_chain`, with the scheduler's job records from `jobs`.
    pub fn with_chain_and_jobs(
        chain: Arc<dyn ChainApi>,
        jobs: Arc<dyn aitbc_operator::context::JobTracker>,
    ) -> World {
        let mut w = World::new();
        w.ctx = Arc::new(Context::new(
            client(w.api.clone()),
            Arc::new(FixedChain(chain)),
            w.events.clone(),
            jobs,
            Arc::new(Metrics::new()),
            Config {
                operator_namespace: "aitbc-system".into(),
                ..Config::default()
            },
        ));
        w
    }

    /// A Wallet whose key Secret holds `key`.
    pub fn wallet_with_given_key(&self, name: &str, key: &aitbc_protocol::Keypair, spec: Value) {
        self.add("Wallet", "wallets", name, spec);
        let (labels, _) = aitbc_operator::keys::wallet_key_meta(name, None);
        let secret =
            aitbc_operator::keys::key_secret(&format!("{name}-wallet-key"), NS, key, labels);
        self.api
            .put(CORE, "secrets", serde_json::to_value(secret).unwrap());
    }

    pub fn path(&self, plural: &str, name: &str) -> String {
        let prefix = if matches!(plural, "secrets" | "configmaps" | "services" | "pods") {
            CORE
        } else {
            CRD
        };
        format!("{prefix}/namespaces/{NS}/{plural}/{name}")
    }

    /// Adds a custom resource of kind `kind` (plural `plural`).
    pub fn add(&self, kind: &str, plural: &str, name: &str, spec: Value) {
        let obj = json!({
            "apiVersion": "aitbc.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": NS, "generation": 1},
            "spec": spec,
        });
        self.api.put(CRD, plural, obj);
    }

    /// A Wallet with a key Secret already in place; returns its key.
    pub fn wallet_with_key(&self, name: &str, ait: u128) -> aitbc_protocol::Keypair {
        let key = aitbc_protocol::Keypair::generate();
        self.add("Wallet", "wallets", name, json!({}));
        let (labels, _) = aitbc_operator::keys::wallet_key_meta(name, None);
        let secret =
            aitbc_operator::keys::key_secret(&format!("{name}-wallet-key"), NS, &key, labels);
        self.api
            .put(CORE, "secrets", serde_json::to_value(secret).unwrap());
        if ait > 0 {
            self.chain.fund(key.address(), ait);
        }
        key
    }

    /// Lets Wallet `to` draw its funding from Wallet `from` (`from`'s spec.allowFunding).
    pub fn grant_funding(&self, from: &str, to: &str) {
        let path = self.path("wallets", from);
        let mut objs = self.api.objects.lock();
        let w = objs.get_mut(&path).expect("source wallet exists");
        let grants = w["spec"]["allowFunding"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut grants: Vec<Value> = grants;
        grants.push(json!(to));
        w["spec"]["allowFunding"] = json!(grants);
    }

    /// A World whose reconcilers reach the in-memory chain through `view` (e.g. one node that
    /// refuses what another commits).
    pub fn through(mut self, view: Arc<dyn ChainApi>) -> World {
        self.ctx = Arc::new(Context::new(
            client(self.api.clone()),
            Arc::new(FixedChain(view)),
            self.events.clone(),
            Arc::new(NoTracker),
            Arc::new(Metrics::new()),
            Config {
                operator_namespace: "aitbc-system".into(),
                ..Config::default()
            },
        ));
        self
    }

    /// The typed object at `plural/name`.
    pub fn obj<K: serde::de::DeserializeOwned>(&self, plural: &str, name: &str) -> K {
        serde_json::from_value(
            self.api
                .get(&self.path(plural, name))
                .unwrap_or_else(|| panic!("{plural}/{name} exists")),
        )
        .unwrap()
    }

    pub fn try_obj<K: serde::de::DeserializeOwned>(&self, plural: &str, name: &str) -> Option<K> {
        self.api
            .get(&self.path(plural, name))
            .map(|v| serde_json::from_value(v).unwrap())
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.events
            .0
            .lock()
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Marks `plural/name` as being deleted.
    pub fn delete(&self, plural: &str, name: &str) {
        let path = self.path(plural, name);
        let mut objs = self.api.objects.lock();
        let o = objs.get_mut(&path).expect("object exists");
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }
}
