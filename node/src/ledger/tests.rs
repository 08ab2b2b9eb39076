//! Unit and property tests of the ledger state machine.

use super::apply::{apply_block, BlockContext};
use super::genesis::initial_state;
use super::keys;
use super::params::ChainParams;
use super::state::decode;
use aitbc_protocol::model::{
    Account, AgentRecord, Allocation, Bid, Genesis, GenesisValidator, Job, JobStatus, Totals,
    TxReceipt,
};
use aitbc_protocol::receipt::{JobReceipt, Usage};
use aitbc_protocol::registration::{register_agent_action, sign_registration};
use aitbc_protocol::tx::{
    Action, JobSpec, Runtime, Serves, ServiceType, SignedTransaction, Transaction,
};
use aitbc_protocol::{Address, Amount, Hash, Keypair, Signature};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

mod fair_exchange;

const CHAIN: &str = "aitbc-test";

fn ait(n: u128) -> Amount {
    Amount::from_ait(n).unwrap()
}

/// A ledger held in memory, driven block by block, for tests.
struct Ledger {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    params: ChainParams,
    height: u64,
    /// BFT time of the last block (100 ms per block, plus any [`Ledger::wait_ms`]).
    time_ms: u64,
    proposer: Keypair,
    nonces: HashMap<Address, u64>,
}

impl Ledger {
    fn new(funded: &[&Keypair], scheduler: &Keypair) -> Ledger {
        let proposer = Keypair::generate();
        let g = Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 0,
            block_time_ms: 100,
            min_fee: Amount(10),
            marketplace_fee_bps: 250,
            default_job_deadline_blocks: 20,
            schedulers: vec![scheduler.address()],
            allocations: funded
                .iter()
                .enumerate()
                .map(|(i, k)| Allocation {
                    name: format!("w{i}"),
                    address: k.address(),
                    amount: ait(1000),
                })
                .collect(),
            validators: vec![GenesisValidator {
                name: "v0".into(),
                key: proposer.public(),
                power: 1,
            }],
        };
        let state = initial_state(&g)
            .unwrap()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Ledger {
            state,
            params: ChainParams::from_genesis(&g),
            height: 0,
            time_ms: 0,
            proposer,
            nonces: HashMap::new(),
        }
    }

    fn sign(&mut self, k: &Keypair, action: Action) -> SignedTransaction {
        let n = self.nonces.entry(k.address()).or_default();
        let tx = Transaction {
            chain_id: CHAIN.into(),
            sender: k.public(),
            nonce: *n,
            fee: Amount(10),
            action,
        };
        *n += 1;
        tx.sign(k)
    }

    fn block(&mut self, txs: &[SignedTransaction]) -> Vec<TxReceipt> {
        self.height += 1;
        self.time_ms += 100;
        let ctx = BlockContext {
            height: self.height,
            time_ms: self.time_ms,
            proposer: self.proposer.public(),
            params: &self.params,
            verified: None,
        };
        let out = apply_block(&self.state, &ctx, txs).unwrap();
        for (k, v) in out.writes {
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        out.receipts
    }

    /// Lets `ms` of BFT time pass before the next block.
    fn wait_ms(&mut self, ms: u64) {
        self.time_ms += ms;
    }

    /// Applies one transaction in its own block; returns the rejection reason, if any.
    fn run(&mut self, k: &Keypair, action: Action) -> Result<TxReceipt, String> {
        let stx = self.sign(k, action);
        let r = self.block(&[stx]).remove(0);
        match &r.error {
            Some(e) => Err(e.clone()),
            None => Ok(r),
        }
    }

    fn get<T: borsh::BorshDeserialize>(&self, key: &[u8]) -> Option<T> {
        decode(key, self.state.get(key).cloned()).unwrap()
    }
    fn account(&self, a: &Address) -> Account {
        self.get(&keys::account(a)).unwrap_or_default()
    }
    fn bid(&self, id: &str) -> Bid {
        self.get(&keys::bid(id)).unwrap()
    }
    fn job(&self, id: &str) -> Job {
        self.get(&keys::job(id)).unwrap()
    }
    fn agent(&self, k: &aitbc_protocol::PublicKey) -> Option<AgentRecord> {
        self.get(&keys::agent(k))
    }
    fn totals(&self) -> Totals {
        self.get(keys::TOTALS).unwrap()
    }

    /// balances + escrows + burned == genesis supply, and every escrow total agrees.
    fn check_conservation(&self) {
        let mut balances = Amount::ZERO;
        let mut account_escrow = Amount::ZERO;
        let mut object_escrow = Amount::ZERO;
        for (k, v) in &self.state {
            if k.starts_with(keys::ACCOUNT) {
                let a: Account = borsh::from_slice(v).unwrap();
                balances = balances.checked_add(a.balance).unwrap();
                account_escrow = account_escrow.checked_add(a.escrowed).unwrap();
            } else if k.starts_with(keys::BID) {
                let b: Bid = borsh::from_slice(v).unwrap();
                if b.status.holds_escrow() {
                    object_escrow = object_escrow.checked_add(b.amount).unwrap();
                }
            } else if k.starts_with(keys::JOB) {
                let j: Job = borsh::from_slice(v).unwrap();
                if j.status.holds_escrow() {
                    object_escrow = object_escrow.checked_add(j.escrow).unwrap();
                }
            }
        }
        let t = self.totals();
        assert_eq!(
            account_escrow, t.escrowed,
            "account escrows disagree with the chain total"
        );
        assert_eq!(
            object_escrow, t.escrowed,
            "bids and jobs hold a different escrow than the chain total"
        );
        let sum = balances
            .checked_add(t.escrowed)
            .unwrap()
            .checked_add(t.burned)
            .unwrap();
        assert_eq!(sum, t.genesis_supply, "supply not conserved");
        let accounts = self
            .state
            .keys()
            .filter(|k| k.starts_with(keys::ACCOUNT))
            .count() as u64;
        let kept: crate::ledger::state::BalanceTotals = self.get(keys::BALANCES).unwrap();
        assert_eq!(
            (kept.balances, kept.accounts),
            (balances, accounts),
            "the balance total every block keeps disagrees with a scan of the accounts"
        );
    }
}

fn created_id(r: &TxReceipt) -> String {
    use aitbc_protocol::model::Event::*;
    r.events
        .iter()
        .find_map(|e| match e {
            ListingCreated { listing_id, .. } => Some(listing_id.clone()),
            BidPlaced { bid_id, .. } => Some(bid_id.clone()),
            JobSubmitted { job_id, .. } => Some(job_id.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no id in {:?}", r.events))
}

fn listing(price: u128) -> Action {
    Action::CreateListing {
        name: "Test AI Service".into(),
        service_type: ServiceType::AiInference,
        price: ait(price),
        description: "demo".into(),
        parameters: vec![],
        runtime: Runtime::default(),
    }
}

/// `owner`'s registration of `agent` on this chain, with the agent's proof for it.
fn register(agent: &Keypair, owner: &Keypair, agent_id: &str, serves: Serves) -> Action {
    register_agent_action(agent, CHAIN, &owner.address(), agent_id, &serves)
}

fn receipt(
    agent: &Keypair,
    job_id: &str,
    success: bool,
) -> aitbc_protocol::receipt::SignedJobReceipt {
    receipt_for(agent, job_id, success, 1, 0)
}

/// A receipt of `attempt` with `gpu_seconds` of usage.
fn receipt_for(
    agent: &Keypair,
    job_id: &str,
    success: bool,
    attempt: u32,
    gpu_seconds: u64,
) -> aitbc_protocol::receipt::SignedJobReceipt {
    JobReceipt {
        chain_id: CHAIN.into(),
        job_id: job_id.into(),
        attempt,
        agent_key: agent.public(),
        success,
        exit_code: Some(if success { 0 } else { 1 }),
        output_digest: Hash::domain("out", &[]),
        usage: Usage {
            gpu_seconds,
            ..Usage::default()
        },
        message: String::new(),
        finished_at_ms: 1,
    }
    .sign(agent)
}

struct World {
    l: Ledger,
    provider: Keypair,
    customer: Keypair,
    stranger: Keypair,
    scheduler: Keypair,
    agent: Keypair,
}

fn world() -> World {
    let (provider, customer, stranger, scheduler, agent) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let l = Ledger::new(&[&provider, &customer, &stranger, &scheduler], &scheduler);
    World {
        l,
        provider,
        customer,
        stranger,
        scheduler,
        agent,
    }
}

impl World {
    fn register_agent(&mut self) {
        let a = register(&self.agent, &self.provider, "agent-0", Serves::AnyProvider);
        self.l.run(&self.provider.clone(), a).unwrap();
    }
    /// listing -> bid -> accept -> job on the bid -> assigned -> result. Returns (listing, bid, job).
    fn job_with_result(&mut self, success: bool) -> (String, String, String) {
        self.register_agent();
        let (p, c, s) = (
            self.provider.clone(),
            self.customer.clone(),
            self.scheduler.clone(),
        );
        let lid = created_id(&self.l.run(&p, listing(10)).unwrap());
        let bid = created_id(
            &self
                .l
                .run(
                    &c,
                    Action::PlaceBid {
                        listing_id: lid.clone(),
                        amount: ait(12),
                    },
                )
                .unwrap(),
        );
        self.l
            .run(
                &p,
                Action::AcceptBid {
                    bid_id: bid.clone(),
                },
            )
            .unwrap();
        let job = created_id(
            &self
                .l
                .run(
                    &c,
                    Action::SubmitJob {
                        listing_id: Some(lid.clone()),
                        bid_id: Some(bid.clone()),
                        payment: Amount::ZERO,
                        spec: JobSpec::default(),
                        deadline_blocks: 0,
                    },
                )
                .unwrap(),
        );
        self.l
            .run(
                &s,
                Action::AssignJob {
                    job_id: job.clone(),
                    agent_key: self.agent.public(),
                },
            )
            .unwrap();
        let r = receipt(&self.agent, &job, success);
        self.l.run(&s, Action::ReportResult { receipt: r }).unwrap();
        (lid, bid, job)
    }
}

#[test]
fn seed_scenario_pays_provider_minus_burned_fee() {
    let mut w = world();
    let before = w.l.account(&w.provider.address()).balance;
    // The result settles the job: no SettleJob needed (and none accepted).
    let (_, _, job) = w.job_with_result(true);
    let s = w.scheduler.clone();
    assert!(w
        .l
        .run(
            &s,
            Action::SettleJob {
                job_id: job.clone(),
            },
        )
        .is_err());
    let after = w.l.account(&w.provider.address()).balance;
    // provider paid 12 - 2.5% = 11.7 AIT, minus the 2 fees of its own transactions (listing, accept, agent)
    let fees = Amount(30);
    assert_eq!(
        after
            .checked_add(fees)
            .unwrap()
            .checked_sub(before)
            .unwrap(),
        "11.7".parse().unwrap()
    );
    assert_eq!(w.l.job(&job).status, JobStatus::Settled);
    assert_eq!(w.l.account(&w.customer.address()).escrowed, Amount::ZERO);
    assert_eq!(w.l.totals().burned, "0.3".parse().unwrap());
    w.l.check_conservation();
}

#[test]
fn bad_inputs_are_rejected_with_their_reason() {
    let mut w = world();
    let (p, c, x, s) = (
        w.provider.clone(),
        w.customer.clone(),
        w.stranger.clone(),
        w.scheduler.clone(),
    );
    let lid = created_id(&w.l.run(&p, listing(10)).unwrap());

    // bad signature
    let mut stx = w.l.sign(
        &c,
        Action::Transfer {
            to: x.address(),
            amount: ait(1),
        },
    );
    stx.signature = x.sign(b"something else");
    let r = w.l.block(&[stx]).remove(0);
    assert!(r.error.unwrap().starts_with("bad signature"));
    w.l.nonces.insert(c.address(), 0);

    // wrong chain id
    let tx = Transaction {
        chain_id: "other-chain".into(),
        sender: c.public(),
        nonce: 0,
        fee: Amount(10),
        action: Action::Transfer {
            to: x.address(),
            amount: ait(1),
        },
    };
    let r = w.l.block(&[tx.sign(&c)]).remove(0);
    assert!(r.error.unwrap().starts_with("wrong chain"));

    // reused nonce: apply once, replay the very same bytes
    let stx = w.l.sign(
        &c,
        Action::Transfer {
            to: x.address(),
            amount: ait(1),
        },
    );
    assert!(w.l.block(std::slice::from_ref(&stx))[0].error.is_none());
    let r = w.l.block(&[stx]).remove(0);
    assert!(
        r.error.unwrap().starts_with("stale nonce"),
        "replay must fail"
    );

    // amount overflow / insufficient funds
    let e =
        w.l.run(
            &c,
            Action::Transfer {
                to: x.address(),
                amount: Amount(u128::MAX),
            },
        )
        .unwrap_err();
    assert!(e.starts_with("insufficient funds"), "{e}");

    // bid under price
    let e =
        w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: lid.clone(),
                amount: ait(9),
            },
        )
        .unwrap_err();
    assert!(e.contains("below the listing's price"), "{e}");

    // accept by a stranger
    let bid = created_id(
        &w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: lid.clone(),
                amount: ait(10),
            },
        )
        .unwrap(),
    );
    let e =
        w.l.run(
            &x,
            Action::AcceptBid {
                bid_id: bid.clone(),
            },
        )
        .unwrap_err();
    assert!(e.contains("only the listing's owner"), "{e}");

    // unknown listing
    let e =
        w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: "svc-nope".into(),
                amount: ait(10),
            },
        )
        .unwrap_err();
    assert!(e.starts_with("unknown listing"), "{e}");

    // fee below minimum
    let tx = Transaction {
        chain_id: CHAIN.into(),
        sender: c.public(),
        nonce: w.l.nonces[&c.address()],
        fee: Amount(1),
        action: Action::Transfer {
            to: x.address(),
            amount: ait(1),
        },
    };
    assert!(w.l.block(&[tx.sign(&c)])[0]
        .error
        .as_ref()
        .unwrap()
        .starts_with("fee"));

    // assignment by someone who is not a scheduler
    let job = created_id(
        &w.l.run(
            &c,
            Action::SubmitJob {
                listing_id: Some(lid.clone()),
                bid_id: None,
                payment: ait(10),
                spec: JobSpec::default(),
                deadline_blocks: 0,
            },
        )
        .unwrap(),
    );
    w.register_agent();
    let e =
        w.l.run(
            &x,
            Action::AssignJob {
                job_id: job.clone(),
                agent_key: w.agent.public(),
            },
        )
        .unwrap_err();
    assert!(e.contains("not a scheduler"), "{e}");

    // result signed by the wrong agent
    w.l.run(
        &s,
        Action::AssignJob {
            job_id: job.clone(),
            agent_key: w.agent.public(),
        },
    )
    .unwrap();
    let impostor = Keypair::generate();
    let e =
        w.l.run(
            &s,
            Action::ReportResult {
                receipt: receipt(&impostor, &job, true),
            },
        )
        .unwrap_err();
    assert!(e.contains("assigned to another agent"), "{e}");

    // a tampered receipt
    let mut r = receipt(&w.agent, &job, false);
    r.receipt.success = true;
    let e =
        w.l.run(&s, Action::ReportResult { receipt: r })
            .unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");

    // settle twice: the result settles, a replayed result and a SettleJob are refused
    w.l.run(
        &s,
        Action::ReportResult {
            receipt: receipt(&w.agent, &job, true),
        },
    )
    .unwrap();
    let e =
        w.l.run(
            &s,
            Action::ReportResult {
                receipt: receipt(&w.agent, &job, true),
            },
        )
        .unwrap_err();
    assert!(
        e.contains("results are accepted only for an assigned job"),
        "{e}"
    );
    let e =
        w.l.run(
            &s,
            Action::SettleJob {
                job_id: job.clone(),
            },
        )
        .unwrap_err();
    assert!(e.contains("only a succeeded job can be settled"), "{e}");
    let e = w.l.run(&c, Action::RefundJob { job_id: job }).unwrap_err();
    assert!(e.contains("only a failed or expired job"), "{e}");
    w.l.check_conservation();
}

#[test]
fn malformed_bytes_are_refused_before_the_state_machine() {
    assert!(SignedTransaction::decode(b"\x01\x02garbage").is_err());
}

#[test]
fn rejected_action_charges_fee_and_nonce_but_nothing_else() {
    let mut w = world();
    let c = w.customer.clone();
    let before = w.l.account(&c.address());
    let e =
        w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: "svc-none".into(),
                amount: ait(5),
            },
        )
        .unwrap_err();
    assert!(e.starts_with("unknown listing"));
    let after = w.l.account(&c.address());
    assert_eq!(after.nonce, before.nonce + 1);
    assert_eq!(
        before.balance.checked_sub(after.balance).unwrap(),
        Amount(10)
    );
    assert_eq!(after.escrowed, Amount::ZERO);
    w.l.check_conservation();
}

#[test]
fn failed_job_is_refunded_once_and_expired_job_can_be_refunded() {
    let mut w = world();
    let (_, _, job) = w.job_with_result(false);
    let (c, s) = (w.customer.clone(), w.scheduler.clone());
    // A failure the customer did not ask for refunds everything as it is reported.
    assert_eq!(w.l.job(&job).status, JobStatus::Refunded);
    assert_eq!(w.l.account(&c.address()).escrowed, Amount::ZERO);
    assert!(w
        .l
        .run(
            &s,
            Action::RefundJob {
                job_id: job.clone()
            }
        )
        .is_err());
    assert!(w.l.run(&s, Action::SettleJob { job_id: job }).is_err());

    // expiry: a job with a 2-block deadline and no result
    let j2 = created_id(
        &w.l.run(
            &c,
            Action::SubmitJob {
                listing_id: None,
                bid_id: None,
                payment: ait(3),
                spec: JobSpec::default(),
                deadline_blocks: 2,
            },
        )
        .unwrap(),
    );
    assert!(
        w.l.run(&s, Action::RefundJob { job_id: j2.clone() })
            .is_err(),
        "not expired yet"
    );
    w.l.block(&[]);
    w.l.block(&[]);
    assert!(
        w.l.run(&s, Action::RefundJob { job_id: j2.clone() })
            .is_err(),
        "still within the result grace"
    );
    w.l.wait_ms(w.l.params.result_grace_ms);
    w.l.run(&s, Action::RefundJob { job_id: j2.clone() })
        .unwrap();
    assert_eq!(w.l.job(&j2).status, JobStatus::Refunded);
    w.l.check_conservation();
}

#[test]
fn cancelled_and_rejected_bids_refund() {
    let mut w = world();
    let (p, c) = (w.provider.clone(), w.customer.clone());
    let lid = created_id(&w.l.run(&p, listing(5)).unwrap());
    let b1 = created_id(
        &w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: lid.clone(),
                amount: ait(5),
            },
        )
        .unwrap(),
    );
    let b2 = created_id(
        &w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: lid.clone(),
                amount: ait(6),
            },
        )
        .unwrap(),
    );
    assert_eq!(w.l.account(&c.address()).escrowed, ait(11));
    w.l.run(&c, Action::CancelBid { bid_id: b1.clone() })
        .unwrap();
    w.l.run(&p, Action::RejectBid { bid_id: b2.clone() })
        .unwrap();
    assert_eq!(w.l.account(&c.address()).escrowed, Amount::ZERO);
    assert!(
        w.l.run(&c, Action::CancelBid { bid_id: b1 }).is_err(),
        "no second refund"
    );
    assert!(w.l.run(&p, Action::AcceptBid { bid_id: b2 }).is_err());
    w.l.check_conservation();
}

#[test]
fn settle_payment_of_an_accepted_bid_pays_provider_once() {
    let mut w = world();
    let (p, c) = (w.provider.clone(), w.customer.clone());
    let lid = created_id(&w.l.run(&p, listing(5)).unwrap());
    let b = created_id(
        &w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: lid,
                amount: ait(8),
            },
        )
        .unwrap(),
    );
    w.l.run(&p, Action::AcceptBid { bid_id: b.clone() })
        .unwrap();
    w.l.run(&c, Action::SettleBid { bid_id: b.clone() })
        .unwrap();
    assert!(w
        .l
        .run(&c, Action::SettleBid { bid_id: b.clone() })
        .is_err());
    assert!(w
        .l
        .run(&c, Action::CancelBid { bid_id: b.clone() })
        .is_err());
    assert_eq!(
        w.l.bid(&b).status,
        aitbc_protocol::model::BidStatus::Settled
    );
    w.l.check_conservation();
}

#[test]
fn job_on_a_listing_runs_only_on_an_agent_serving_its_provider() {
    let mut w = world();
    let (p, c, s, x) = (
        w.provider.clone(),
        w.customer.clone(),
        w.scheduler.clone(),
        w.stranger.clone(),
    );
    let lid = created_id(&w.l.run(&p, listing(5)).unwrap());
    let other_agent = Keypair::generate();
    w.l.run(
        &x,
        register(&other_agent, &x, "x", Serves::Providers(vec![x.address()])),
    )
    .unwrap();
    let job = created_id(
        &w.l.run(
            &c,
            Action::SubmitJob {
                listing_id: Some(lid),
                bid_id: None,
                payment: ait(5),
                spec: JobSpec::default(),
                deadline_blocks: 0,
            },
        )
        .unwrap(),
    );
    let e =
        w.l.run(
            &s,
            Action::AssignJob {
                job_id: job.clone(),
                agent_key: other_agent.public(),
            },
        )
        .unwrap_err();
    assert!(e.contains("does not serve provider"), "{e}");
    // and nobody else may take over a registered agent key, not even with the agent's consent
    let e =
        w.l.run(&c, register(&other_agent, &c, "y", Serves::AnyProvider))
            .unwrap_err();
    assert!(e.contains("is registered to"), "{e}");
}

/// The agent's key is public; a thief who knows only it, or holds a proof the agent made for
/// something else, must not be able to bind it to their wallet.
#[test]
fn hostile_stolen_agent_key_cannot_be_registered() {
    let mut w = world();
    let (agent, owner, thief) = (w.agent.clone(), w.provider.clone(), w.stranger.clone());
    let key = agent.public();
    let forged = |agent_id: &str, serves: Serves, proof: Signature| Action::RegisterAgent {
        agent_key: key,
        agent_id: agent_id.into(),
        serves,
        proof,
    };
    let any = Serves::AnyProvider;
    let for_thief = |chain: &str, id: &str, s: &Serves| {
        sign_registration(&agent, chain, &thief.address(), id, s)
    };
    let attempts: Vec<(&str, Action)> = vec![
        (
            "no proof (zeros)",
            forged("a", any.clone(), Signature([0; 64])),
        ),
        (
            "garbage proof",
            forged("a", any.clone(), Signature([0x5a; 64])),
        ),
        (
            "proof signed by the thief's own key",
            forged(
                "a",
                any.clone(),
                sign_registration(&thief, CHAIN, &thief.address(), "a", &any),
            ),
        ),
        (
            "the agent's proof for another owner",
            register(&agent, &owner, "a", any.clone()),
        ),
        (
            "the agent's proof for another chain id",
            forged("a", any.clone(), for_thief("aitbc-other", "a", &any)),
        ),
        (
            "the agent's proof for other serves",
            forged(
                "a",
                any.clone(),
                for_thief(CHAIN, "a", &Serves::Providers(vec![thief.address()])),
            ),
        ),
        (
            "the agent's proof for another agent id",
            forged("b", any.clone(), for_thief(CHAIN, "a", &any)),
        ),
    ];
    for (what, action) in attempts {
        let e = w.l.run(&thief, action).unwrap_err();
        assert!(
            e.contains("not signed by the agent key") && e.contains(&key.to_hex()),
            "{what}: {e}"
        );
        assert!(w.l.agent(&key).is_none(), "{what}: the thief registered it");
    }
    // Nor can a thief take it over once the real owner has registered it.
    w.l.run(&owner, register(&agent, &owner, "a", any.clone()))
        .unwrap();
    let e =
        w.l.run(&thief, forged("a", any.clone(), Signature([0; 64])))
            .unwrap_err();
    assert!(e.contains("not signed by the agent key"), "{e}");
    assert_eq!(w.l.agent(&key).unwrap().owner, owner.address());
    w.l.check_conservation();
}

/// The owner holding the agent's proof registers it, even when a thief tries to get in first
/// (same block, thief first); the record is exactly what the agent signed.
#[test]
fn hostile_owner_with_the_agents_proof_registers_it_ahead_of_a_thief() {
    let mut w = world();
    let (agent, owner, thief) = (w.agent.clone(), w.provider.clone(), w.stranger.clone());
    let key = agent.public();
    let serves = Serves::Providers(vec![owner.address()]);
    let stolen = Action::RegisterAgent {
        agent_key: key,
        agent_id: "gpu-node-1".into(),
        serves: Serves::AnyProvider,
        proof: Signature([0; 64]),
    };
    let txs = [
        w.l.sign(&thief, stolen),
        w.l.sign(
            &owner,
            register(&agent, &owner, "gpu-node-1", serves.clone()),
        ),
    ];
    let rs = w.l.block(&txs);
    assert!(rs[0].error.is_some(), "the thief's registration applied");
    assert_eq!(rs[1].error, None);
    assert_eq!(
        rs[1].events,
        vec![aitbc_protocol::model::Event::AgentRegistered {
            agent_key: key,
            owner: owner.address(),
        }]
    );
    let rec = w.l.agent(&key).unwrap();
    assert_eq!(
        (rec.owner, rec.agent_id.as_str(), &rec.serves),
        (owner.address(), "gpu-node-1", &serves)
    );
    // The owner may re-register with a fresh proof (e.g. to change what it serves).
    w.l.run(
        &owner,
        register(&agent, &owner, "gpu-node-1", Serves::AnyProvider),
    )
    .unwrap();
    assert_eq!(w.l.agent(&key).unwrap().serves, Serves::AnyProvider);
}

#[test]
fn same_block_gives_same_roots_everywhere() {
    let mut a = world();
    let c = a.customer.clone();
    let x = a.stranger.clone();
    let txs: Vec<_> = (0..5)
        .map(|_| {
            a.l.sign(
                &c,
                Action::Transfer {
                    to: x.address(),
                    amount: ait(1),
                },
            )
        })
        .collect();
    let ctx = BlockContext {
        height: 1,
        time_ms: 1,
        proposer: a.l.proposer.public(),
        params: &a.l.params,
        verified: None,
    };
    let o1 = apply_block(&a.l.state, &ctx, &txs).unwrap();
    let o2 = apply_block(&a.l.state, &ctx, &txs).unwrap();
    assert_eq!(o1.state_root, o2.state_root);
    assert_eq!(o1.tx_root, o2.tx_root);
    let o3 = apply_block(&a.l.state, &ctx, &txs[..4]).unwrap();
    assert_ne!(o1.state_root, o3.state_root);
}

/// One random step of the property test: who acts, and what they try.
#[derive(Clone, Debug)]
enum Step {
    Transfer {
        from: usize,
        to: usize,
        amount: u128,
    },
    List {
        who: usize,
        price: u128,
    },
    Bid {
        who: usize,
        listing: usize,
        amount: u128,
    },
    Accept {
        who: usize,
        bid: usize,
    },
    Reject {
        who: usize,
        bid: usize,
    },
    Cancel {
        who: usize,
        bid: usize,
    },
    SettleBid {
        who: usize,
        bid: usize,
    },
    Job {
        who: usize,
        listing: Option<usize>,
        bid: Option<usize>,
        payment: u128,
        deadline: u64,
    },
    Assign {
        job: usize,
    },
    Report {
        job: usize,
        success: bool,
        wrong_agent: bool,
    },
    Settle {
        job: usize,
    },
    Refund {
        job: usize,
    },
    Replay {
        index: usize,
    },
    Empty,
}

fn step() -> impl Strategy<Value = Step> {
    let w = 0usize..4;
    let amt = 0u128..2_000_000_000u128;
    prop_oneof![
        (w.clone(), w.clone(), amt.clone()).prop_map(|(from, to, amount)| Step::Transfer {
            from,
            to,
            amount
        }),
        (w.clone(), 1u128..50_000_000).prop_map(|(who, price)| Step::List { who, price }),
        (w.clone(), 0usize..8, amt.clone()).prop_map(|(who, listing, amount)| Step::Bid {
            who,
            listing,
            amount
        }),
        (w.clone(), 0usize..8).prop_map(|(who, bid)| Step::Accept { who, bid }),
        (w.clone(), 0usize..8).prop_map(|(who, bid)| Step::Reject { who, bid }),
        (w.clone(), 0usize..8).prop_map(|(who, bid)| Step::Cancel { who, bid }),
        (w.clone(), 0usize..8).prop_map(|(who, bid)| Step::SettleBid { who, bid }),
        (
            w.clone(),
            proptest::option::of(0usize..8),
            proptest::option::of(0usize..8),
            amt,
            0u64..4
        )
            .prop_map(|(who, listing, bid, payment, deadline)| Step::Job {
                who,
                listing,
                bid,
                payment,
                deadline
            }),
        (0usize..8).prop_map(|job| Step::Assign { job }),
        (0usize..8, any::<bool>(), any::<bool>()).prop_map(|(job, success, wrong_agent)| {
            Step::Report {
                job,
                success,
                wrong_agent,
            }
        }),
        (0usize..8).prop_map(|job| Step::Settle { job }),
        (0usize..8).prop_map(|job| Step::Refund { job }),
        (0usize..64).prop_map(|index| Step::Replay { index }),
        Just(Step::Empty),
    ]
}

#[test]
fn hostile_envelope_failures_are_listed_for_consensus_to_refuse() {
    let a = Keypair::generate();
    let scheduler = Keypair::generate();
    let mut l = Ledger::new(&[&a], &scheduler);
    // Spends all but one fee, so the next cannot pay its own fee; a third from a stranger with
    // nothing at all; a valid one after them still applies.
    let balance = l.account(&a.address()).balance;
    let drain = l.sign(
        &a,
        Action::Transfer {
            to: scheduler.address(),
            amount: Amount(balance.0 - 10),
        },
    );
    let free_rider = l.sign(
        &a,
        Action::Transfer {
            to: scheduler.address(),
            amount: Amount(1),
        },
    );
    let stranger = Keypair::generate();
    let broke = l.sign(
        &stranger,
        Action::Transfer {
            to: a.address(),
            amount: Amount(1),
        },
    );
    let ctx = BlockContext {
        height: 1,
        time_ms: 100,
        proposer: l.proposer.public(),
        params: &l.params,
        verified: None,
    };
    let out = apply_block(&l.state, &ctx, &[drain, free_rider, broke]).unwrap();
    assert_eq!(out.envelope_rejected, vec![1, 2]);
    assert!(out.receipts[0].error.is_none());
    assert!(out.receipts[1..].iter().all(|r| r.fee_paid.is_zero()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn supply_is_conserved_and_replays_fail(steps in proptest::collection::vec(step(), 1..60)) {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
        let scheduler = Keypair::generate();
        let agent = Keypair::generate();
        let mut refs: Vec<&Keypair> = keys.iter().collect();
        refs.push(&scheduler);
        let mut l = Ledger::new(&refs, &scheduler);
        l.run(&keys[0], register(&agent, &keys[0], "a", Serves::AnyProvider)).unwrap();
        let (mut listings, mut bids, mut jobs): (Vec<String>, Vec<String>, Vec<String>) = (vec![], vec![], vec![]);
        let mut applied: Vec<SignedTransaction> = vec![];
        let pick = |v: &Vec<String>, i: usize| v.get(i % v.len().max(1)).cloned().unwrap_or_else(|| "none".into());
        for s in steps {
            let (who, action) = match s {
                Step::Transfer { from, to, amount } => (from, Action::Transfer { to: keys[to].address(), amount: Amount(amount) }),
                Step::List { who, price } => (who, Action::CreateListing { name: "s".into(), service_type: ServiceType::GpuRental, price: Amount(price), description: String::new(), parameters: vec![], runtime: Runtime::default() }),
                Step::Bid { who, listing, amount } => (who, Action::PlaceBid { listing_id: pick(&listings, listing), amount: Amount(amount) }),
                Step::Accept { who, bid } => (who, Action::AcceptBid { bid_id: pick(&bids, bid) }),
                Step::Reject { who, bid } => (who, Action::RejectBid { bid_id: pick(&bids, bid) }),
                Step::Cancel { who, bid } => (who, Action::CancelBid { bid_id: pick(&bids, bid) }),
                Step::SettleBid { who, bid } => (who, Action::SettleBid { bid_id: pick(&bids, bid) }),
                Step::Job { who, listing, bid, payment, deadline } => (who, Action::SubmitJob {
                    listing_id: listing.map(|i| pick(&listings, i)), bid_id: bid.map(|i| pick(&bids, i)),
                    payment: Amount(payment), spec: JobSpec::default(), deadline_blocks: deadline }),
                Step::Assign { job } => {
                    let stx = l.sign(&scheduler, Action::AssignJob { job_id: pick(&jobs, job), agent_key: agent.public() });
                    l.block(&[stx]);
                    continue;
                }
                Step::Report { job, success, wrong_agent } => {
                    let signer = if wrong_agent { &keys[1] } else { &agent };
                    let stx = l.sign(&scheduler, Action::ReportResult { receipt: receipt(signer, &pick(&jobs, job), success) });
                    l.block(&[stx]);
                    continue;
                }
                Step::Settle { job } => (0, Action::SettleJob { job_id: pick(&jobs, job) }),
                Step::Refund { job } => (1, Action::RefundJob { job_id: pick(&jobs, job) }),
                Step::Replay { index } => {
                    if let Some(old) = applied.get(index % applied.len().max(1)).cloned() {
                        let r = l.block(&[old]).remove(0);
                        prop_assert!(r.error.as_deref().unwrap_or("").starts_with("stale nonce"), "replay applied: {:?}", r);
                    }
                    continue;
                }
                Step::Empty => { l.block(&[]); continue; }
            };
            let stx = l.sign(&keys[who], action);
            let r = l.block(std::slice::from_ref(&stx)).remove(0);
            if r.error.is_none() {
                applied.push(stx);
                if let Some(id) = r.events.iter().find_map(|e| match e {
                    aitbc_protocol::model::Event::ListingCreated { listing_id, .. } => Some(("l", listing_id.clone())),
                    aitbc_protocol::model::Event::BidPlaced { bid_id, .. } => Some(("b", bid_id.clone())),
                    aitbc_protocol::model::Event::JobSubmitted { job_id, .. } => Some(("j", job_id.clone())),
                    _ => None,
                }) {
                    match id.0 { "l" => listings.push(id.1), "b" => bids.push(id.1), _ => jobs.push(id.1) }
                }
            } else if r.fee_paid.is_zero() {
                // envelope rejections (e.g. fee unaffordable) must not consume the nonce
                l.nonces.insert(keys[who].address(), l.account(&keys[who].address()).nonce);
            }
            l.check_conservation();
        }
    }
}
