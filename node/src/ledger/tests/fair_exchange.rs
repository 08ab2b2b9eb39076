//! Fair exchange: no work without payment, no payment without work. Unit tests per rule and a
//! model-based adversarial property test of bid -> job -> result -> settlement.

use super::*;
use aitbc_protocol::model::{Event, Lease};
use aitbc_protocol::PublicKey;

const GRACE: u64 = crate::ledger::params::RESULT_GRACE_MS;

fn priced_listing(price: u128, kind: ServiceType, params: &[(&str, &str)]) -> Action {
    Action::CreateListing {
        name: "svc".into(),
        service_type: kind,
        price: ait(price),
        description: String::new(),
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        runtime: Runtime::default(),
    }
}

fn job_on(listing: &str, bid: Option<&str>, payment: Amount, deadline_blocks: u64) -> Action {
    Action::SubmitJob {
        listing_id: Some(listing.into()),
        bid_id: bid.map(String::from),
        payment,
        spec: JobSpec::default(),
        deadline_blocks,
    }
}

fn amt(s: &str) -> Amount {
    s.parse().unwrap()
}

impl World {
    /// A listing of the provider, with the agent registered; returns the listing.
    fn listed(&mut self, price: u128, kind: ServiceType, params: &[(&str, &str)]) -> String {
        self.register_agent();
        let p = self.provider.clone();
        created_id(&self.l.run(&p, priced_listing(price, kind, params)).unwrap())
    }
    fn accepted_bid(&mut self, listing: &str, amount: Amount) -> String {
        let (p, c) = (self.provider.clone(), self.customer.clone());
        let bid = created_id(
            &self
                .l
                .run(
                    &c,
                    Action::PlaceBid {
                        listing_id: listing.into(),
                        amount,
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
        bid
    }
    fn submit(&mut self, action: Action) -> Result<String, String> {
        let c = self.customer.clone();
        self.l.run(&c, action).map(|r| created_id(&r))
    }
    fn assign(&mut self, job: &str) -> Result<TxReceipt, String> {
        let s = self.scheduler.clone();
        let agent_key = self.agent.public();
        self.l.run(
            &s,
            Action::AssignJob {
                job_id: job.into(),
                agent_key,
            },
        )
    }
    fn report(
        &mut self,
        job: &str,
        success: bool,
        attempt: u32,
        gpu_s: u64,
    ) -> Result<TxReceipt, String> {
        let s = self.scheduler.clone();
        let receipt = receipt_for(&self.agent, job, success, attempt, gpu_s);
        self.l.run(&s, Action::ReportResult { receipt })
    }
    fn balance(&self, k: &Keypair) -> Amount {
        self.l.account(&k.address()).balance
    }
    fn escrowed(&self, k: &Keypair) -> Amount {
        self.l.account(&k.address()).escrowed
    }
}

#[test]
fn fair_exchange_scenario_1_job_draws_on_the_accepted_bid() {
    let mut w = world();
    let lid = w.listed(100, ServiceType::AiInference, &[]);
    let before = w.balance(&w.customer.clone());
    let bid = w.accepted_bid(&lid, ait(120));
    let job = w.submit(job_on(&lid, Some(&bid), ait(120), 0)).unwrap();
    let c = w.customer.clone();
    assert_eq!(
        w.escrowed(&c),
        ait(120),
        "the bid's escrow moved, nothing new locked"
    );
    assert_eq!(
        w.l.bid(&bid).status,
        aitbc_protocol::model::BidStatus::UsedByJob
    );
    let p_before = w.balance(&w.provider.clone());
    w.assign(&job).unwrap();
    w.report(&job, true, 1, 0).unwrap();
    assert_eq!(w.l.job(&job).status, JobStatus::Settled);
    assert_eq!(w.escrowed(&c), Amount::ZERO);
    // 120 less the 2.5% fee burned; the customer paid 120 and two fees (bid, job).
    assert_eq!(
        w.balance(&w.provider.clone())
            .checked_sub(p_before)
            .unwrap(),
        amt("117")
    );
    assert_eq!(
        before.checked_sub(w.balance(&c)).unwrap(),
        ait(120).checked_add(Amount(20)).unwrap()
    );
    w.l.check_conservation();
}

#[test]
fn fair_exchange_payment_above_the_bid_tops_up_and_below_refunds_the_rest() {
    let mut w = world();
    let c = w.customer.clone();
    let lid = w.listed(10, ServiceType::AiInference, &[]);
    let bid = w.accepted_bid(&lid, ait(12));
    let job = w.submit(job_on(&lid, Some(&bid), ait(15), 0)).unwrap();
    assert_eq!(
        (w.l.job(&job).escrow, w.l.job(&job).price),
        (ait(15), ait(15))
    );
    assert_eq!(w.escrowed(&c), ait(15));

    let bid2 = w.accepted_bid(&lid, ait(12));
    let job2 = w.submit(job_on(&lid, Some(&bid2), ait(10), 0)).unwrap();
    assert_eq!(
        (w.l.job(&job2).escrow, w.l.job(&job2).price),
        (ait(12), ait(10))
    );
    let before = w.balance(&c);
    w.assign(&job2).unwrap();
    w.report(&job2, true, 1, 0).unwrap();
    assert_eq!(
        w.balance(&c).checked_sub(before).unwrap(),
        ait(2),
        "the rest of the bid comes back"
    );
    assert_eq!(w.l.job(&job2).fee_burned, amt("0.25"));

    let bid3 = w.accepted_bid(&lid, ait(12));
    let e = w.submit(job_on(&lid, Some(&bid3), ait(9), 0)).unwrap_err();
    assert!(e.contains("below the listing's price"), "{e}");
    w.l.check_conservation();
}

#[test]
fn fair_exchange_cancel_after_assignment_only_asks_to_stop_and_usage_pays() {
    let mut w = world();
    let c = w.customer.clone();
    let lid = w.listed(
        10,
        ServiceType::AiInference,
        &[("price_per_gpu_second", "0.5"), ("minimum_charge", "2")],
    );
    // Pending: a full refund.
    let pending = w.submit(job_on(&lid, None, ait(10), 0)).unwrap();
    w.l.run(
        &c,
        Action::CancelJob {
            job_id: pending.clone(),
        },
    )
    .unwrap();
    assert_eq!(w.l.job(&pending).status, JobStatus::Refunded);

    let job = w.submit(job_on(&lid, None, ait(10), 0)).unwrap();
    w.assign(&job).unwrap();
    let r =
        w.l.run(
            &c,
            Action::CancelJob {
                job_id: job.clone(),
            },
        )
        .unwrap();
    assert!(matches!(
        r.events[0],
        Event::JobStopRequested { attempt: 1, .. }
    ));
    let j = w.l.job(&job);
    assert_eq!((j.status, j.stop_requested), (JobStatus::Assigned, true));
    assert_eq!(
        w.escrowed(&c),
        ait(10),
        "no refund while the agent may have run it"
    );
    let e =
        w.l.run(
            &c,
            Action::CancelJob {
                job_id: job.clone(),
            },
        )
        .unwrap_err();
    assert!(e.contains("already requested"), "{e}");
    assert!(w.assign(&job).unwrap_err().contains("asked to stop"));
    // Stopped after 6 GPU-seconds: 3 AIT by the rate (above the minimum of 2).
    let (p_before, c_before) = (w.balance(&w.provider.clone()), w.balance(&c));
    w.report(&job, false, 1, 6).unwrap();
    assert_eq!(
        w.balance(&w.provider.clone())
            .checked_sub(p_before)
            .unwrap(),
        amt("2.925")
    );
    assert_eq!(w.balance(&c).checked_sub(c_before).unwrap(), ait(7));
    assert_eq!(w.escrowed(&c), Amount::ZERO);

    // A stop that came too late: the agent had finished, its success receipt pays in full.
    let done = w.submit(job_on(&lid, None, ait(10), 0)).unwrap();
    w.assign(&done).unwrap();
    w.l.run(
        &c,
        Action::CancelJob {
            job_id: done.clone(),
        },
    )
    .unwrap();
    w.report(&done, true, 1, 1).unwrap();
    assert_eq!(w.l.job(&done).fee_burned, amt("0.25"));
    // Stopped at once: the minimum.
    let early = w.submit(job_on(&lid, None, ait(10), 0)).unwrap();
    w.assign(&early).unwrap();
    w.l.run(
        &c,
        Action::CancelJob {
            job_id: early.clone(),
        },
    )
    .unwrap();
    w.report(&early, false, 1, 0).unwrap();
    assert_eq!(w.l.job(&early).fee_burned, amt("0.05"));
    w.l.check_conservation();
}

#[test]
fn fair_exchange_deadline_is_block_time_with_a_result_grace() {
    let mut w = world();
    let c = w.customer.clone();
    let lid = w.listed(10, ServiceType::AiInference, &[]);
    // Default deadline: the time limit plus slack, in BFT time.
    let spec = JobSpec {
        time_limit_secs: 600,
        ..JobSpec::default()
    };
    let r =
        w.l.run(
            &c,
            Action::SubmitJob {
                listing_id: Some(lid.clone()),
                bid_id: None,
                payment: ait(10),
                spec,
                deadline_blocks: 0,
            },
        )
        .unwrap();
    let slow = created_id(&r);
    let now = w.l.time_ms;
    assert!(w.l.job(&slow).deadline_ms >= now + 600_000 + crate::ledger::params::DEADLINE_SLACK_MS);

    // Many blocks in little time do not bring a deadline closer.
    let job = w.submit(job_on(&lid, None, ait(10), 5)).unwrap();
    w.assign(&job).unwrap();
    let deadline = w.l.job(&job).deadline_ms;
    for _ in 0..50 {
        w.l.wait_ms(0);
        w.l.time_ms -= 99; // 1 ms a block, as under spam
        w.l.block(&[]);
    }
    let s = w.scheduler.clone();
    assert!(w.l.time_ms < deadline + GRACE);
    assert!(w
        .l
        .run(
            &s,
            Action::RefundJob {
                job_id: job.clone()
            }
        )
        .is_err());
    // Past the deadline but within the grace, the result is accepted and pays.
    w.l.wait_ms(deadline + GRACE / 2 - w.l.time_ms);
    w.report(&job, true, 1, 0).unwrap();
    assert_eq!(w.l.job(&job).status, JobStatus::Settled);

    // No result within the grace: refund, and a late receipt is refused.
    let late = w.submit(job_on(&lid, None, ait(10), 5)).unwrap();
    w.assign(&late).unwrap();
    let d = w.l.job(&late).deadline_ms;
    w.l.wait_ms(d + GRACE - w.l.time_ms - 100);
    assert!(
        w.l.run(
            &s,
            Action::RefundJob {
                job_id: late.clone()
            }
        )
        .is_err(),
        "last block of the grace"
    );
    w.l.run(
        &s,
        Action::RefundJob {
            job_id: late.clone(),
        },
    )
    .unwrap();
    let e = w.report(&late, true, 1, 0).unwrap_err();
    assert!(
        e.contains("results are accepted only for an assigned job"),
        "{e}"
    );
    let late2 = w.submit(job_on(&lid, None, ait(10), 5)).unwrap();
    w.assign(&late2).unwrap();
    w.l.wait_ms(60_000);
    let e = w.report(&late2, true, 1, 0).unwrap_err();
    assert!(e.contains("after its deadline and grace"), "{e}");
    assert!(w.assign(&late2).unwrap_err().contains("expired"));
    w.l.check_conservation();
}

#[test]
fn fair_exchange_receipt_of_an_old_attempt_is_refused_after_a_retry() {
    let mut w = world();
    let lid = w.listed(10, ServiceType::AiInference, &[]);
    let job = w.submit(job_on(&lid, None, ait(10), 0)).unwrap();
    w.assign(&job).unwrap();
    w.assign(&job).unwrap();
    assert_eq!(w.l.job(&job).attempt(), 2);
    let e = w.report(&job, true, 1, 0).unwrap_err();
    assert!(e.contains("attempt 1") && e.contains("on attempt 2"), "{e}");
    w.report(&job, true, 2, 0).unwrap();
    assert!(w.report(&job, true, 2, 0).is_err(), "paid once");
    w.l.check_conservation();
}

#[test]
fn fair_exchange_listing_update_close_and_accept_on_closed_listing() {
    let mut w = world();
    let (p, c, x) = (w.provider.clone(), w.customer.clone(), w.stranger.clone());
    let lid = w.listed(10, ServiceType::AiInference, &[]);
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
    let update = |price: u128| Action::UpdateListing {
        listing_id: lid.clone(),
        price: Some(ait(price)),
        description: Some("new".into()),
        runtime: None,
    };
    assert!(w
        .l
        .run(&x, update(1))
        .unwrap_err()
        .contains("only the listing's owner"));
    w.l.run(&p, update(20)).unwrap();
    let e =
        w.l.run(
            &c,
            Action::PlaceBid {
                listing_id: lid.clone(),
                amount: ait(10),
            },
        )
        .unwrap_err();
    assert!(e.contains("below the listing's price"), "{e}");
    assert!(w
        .l
        .run(
            &x,
            Action::CloseListing {
                listing_id: lid.clone()
            }
        )
        .is_err());
    w.l.run(
        &p,
        Action::CloseListing {
            listing_id: lid.clone(),
        },
    )
    .unwrap();
    assert!(w
        .l
        .run(
            &p,
            Action::CloseListing {
                listing_id: lid.clone()
            }
        )
        .unwrap_err()
        .contains("closed"));
    assert!(w.l.run(&p, update(30)).unwrap_err().contains("closed"));
    let e =
        w.l.run(
            &p,
            Action::AcceptBid {
                bid_id: bid.clone(),
            },
        )
        .unwrap_err();
    assert!(e.contains("closed"), "{e}");
    // The bidder can still take its escrow back.
    w.l.run(&c, Action::CancelBid { bid_id: bid }).unwrap();
    assert_eq!(w.escrowed(&c), Amount::ZERO);
    let bad = priced_listing(1, ServiceType::AiInference, &[("minimum_charge", "lots")]);
    assert!(w.l.run(&p, bad).unwrap_err().contains("minimum_charge"));
    w.l.check_conservation();
}

#[test]
fn fair_exchange_rental_lease_is_paid_for_the_time_held() {
    let mut w = world();
    let (p, c, x) = (w.provider.clone(), w.customer.clone(), w.stranger.clone());
    let lid = w.listed(20, ServiceType::GpuRental, &[("duration_secs", "100")]);
    let bid = w.accepted_bid(&lid, ait(20));
    let lease: Lease = w.l.get(&keys::lease(&bid)).unwrap();
    assert_eq!(lease.end_ms - lease.start_ms, 100_000);
    // The lease's escrow cannot move into a job (and be cancelled there).
    let e = w
        .submit(job_on(&lid, Some(&bid), Amount::ZERO, 0))
        .unwrap_err();
    assert!(e.contains("lease"), "{e}");
    assert!(w
        .l
        .run(
            &c,
            Action::CancelBid {
                bid_id: bid.clone()
            }
        )
        .is_err());
    // Nobody but the provider (or the bidder paying in full) ends it early.
    assert!(w
        .l
        .run(
            &x,
            Action::SettleBid {
                bid_id: bid.clone()
            }
        )
        .is_err());
    w.l.wait_ms(lease.start_ms + 25_000 - w.l.time_ms - 100);
    let (p0, c0) = (w.balance(&p), w.balance(&c));
    w.l.run(
        &p,
        Action::SettleBid {
            bid_id: bid.clone(),
        },
    )
    .unwrap();
    // A quarter held: 5 AIT less the fee to the provider, 15 back to the bidder.
    assert_eq!(
        w.balance(&p)
            .checked_add(Amount(10))
            .unwrap()
            .checked_sub(p0)
            .unwrap(),
        amt("4.875")
    );
    assert_eq!(w.balance(&c).checked_sub(c0).unwrap(), ait(15));
    assert!(
        w.l.run(&p, Action::SettleBid { bid_id: bid }).is_err(),
        "paid once"
    );

    // A lease run to its term is paid in full, settled by anyone.
    let bid2 = w.accepted_bid(&lid, ait(20));
    w.l.wait_ms(100_000);
    w.l.run(
        &x,
        Action::SettleBid {
            bid_id: bid2.clone(),
        },
    )
    .unwrap();
    assert_eq!(w.escrowed(&c), Amount::ZERO);
    assert_eq!(
        w.l.bid(&bid2).status,
        aitbc_protocol::model::BidStatus::Settled
    );
    w.l.check_conservation();
}

// ------------------------------------------------------------------ model-based property test

/// Who sends a transaction in the model.
#[derive(Clone, Copy, Debug)]
enum Who {
    Customer,
    Provider,
    Scheduler,
}

#[derive(Clone, Debug)]
enum Op {
    Bid {
        amount: u128,
    },
    Accept {
        bid: usize,
    },
    Reject {
        bid: usize,
    },
    CancelBid {
        bid: usize,
    },
    SettleBid {
        who: Who,
        bid: usize,
    },
    Submit {
        bid: Option<usize>,
        payment: u128,
        deadline: u64,
    },
    Cancel {
        job: usize,
    },
    Assign {
        job: usize,
        agent: usize,
    },
    Report {
        job: usize,
        agent: usize,
        stale: bool,
        success: bool,
        gpu_s: u64,
    },
    Refund {
        who: Who,
        job: usize,
    },
    Settle {
        job: usize,
    },
    Update {
        price: u128,
    },
    Replay {
        index: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let who = prop_oneof![
        Just(Who::Customer),
        Just(Who::Provider),
        Just(Who::Scheduler)
    ];
    let i = 0usize..6;
    prop_oneof![
        (5u128..30).prop_map(|amount| Op::Bid { amount }),
        i.clone().prop_map(|bid| Op::Accept { bid }),
        i.clone().prop_map(|bid| Op::Reject { bid }),
        i.clone().prop_map(|bid| Op::CancelBid { bid }),
        (who.clone(), i.clone()).prop_map(|(who, bid)| Op::SettleBid { who, bid }),
        (proptest::option::of(i.clone()), 0u128..30, 0u64..400).prop_map(
            |(bid, payment, deadline)| Op::Submit {
                bid,
                payment,
                deadline
            }
        ),
        i.clone().prop_map(|job| Op::Cancel { job }),
        (i.clone(), 0usize..2).prop_map(|(job, agent)| Op::Assign { job, agent }),
        (i.clone(), 0usize..3, any::<bool>(), any::<bool>(), 0u64..40).prop_map(
            |(job, agent, stale, success, gpu_s)| Op::Report {
                job,
                agent,
                stale,
                success,
                gpu_s
            }
        ),
        (who, i.clone()).prop_map(|(who, job)| Op::Refund { who, job }),
        i.clone().prop_map(|job| Op::Settle { job }),
        (5u128..15).prop_map(|price| Op::Update { price }),
        (0usize..64).prop_map(|index| Op::Replay { index }),
    ]
}

/// The model's view of a job, kept from the outcomes of the model's own transactions.
#[derive(Clone, Debug)]
struct ModelJob {
    id: String,
    escrow: Amount,
    price: Amount,
    deadline_ms: u64,
    agent: Option<PublicKey>,
    attempt: u32,
    stop: bool,
    open: bool,
    closes: u32,
}

struct Model {
    l: Ledger,
    customer: Keypair,
    provider: Keypair,
    scheduler: Keypair,
    agents: [Keypair; 2],
    outsider: Keypair,
    listing: String,
    bids: Vec<String>,
    jobs: Vec<ModelJob>,
    applied: Vec<SignedTransaction>,
    applied_candidate: Option<SignedTransaction>,
}

const RATE: &str = "0.01";
const MINIMUM: &str = "0.5";

impl Model {
    fn new() -> Model {
        let (customer, provider, scheduler) = (
            Keypair::generate(),
            Keypair::generate(),
            Keypair::generate(),
        );
        let agents = [Keypair::generate(), Keypair::generate()];
        let mut l = Ledger::new(&[&customer, &provider, &scheduler], &scheduler);
        for (i, a) in agents.iter().enumerate() {
            l.run(
                &provider,
                register(a, &provider, &format!("agent-{i}"), Serves::AnyProvider),
            )
            .unwrap();
        }
        let listing = priced_listing(
            5,
            ServiceType::AiInference,
            &[("price_per_gpu_second", RATE), ("minimum_charge", MINIMUM)],
        );
        let listing = created_id(&l.run(&provider, listing).unwrap());
        Model {
            l,
            customer,
            provider,
            scheduler,
            agents,
            outsider: Keypair::generate(),
            listing,
            bids: vec![],
            jobs: vec![],
            applied: vec![],
            applied_candidate: None,
        }
    }

    fn key(&self, who: Who) -> Keypair {
        match who {
            Who::Customer => self.customer.clone(),
            Who::Provider => self.provider.clone(),
            Who::Scheduler => self.scheduler.clone(),
        }
    }
    fn bid(&self, i: usize) -> String {
        self.bids
            .get(i % self.bids.len().max(1))
            .cloned()
            .unwrap_or_else(|| "bid-none".into())
    }
    fn job_index(&self, i: usize) -> Option<usize> {
        (i != usize::MAX && !self.jobs.is_empty()).then(|| i % self.jobs.len())
    }
    fn job_id(&self, i: usize) -> String {
        self.job_index(i)
            .map(|j| self.jobs[j].id.clone())
            .unwrap_or_else(|| "job-none".into())
    }

    /// The signed transaction for `op`, or the replay of an applied one.
    /// `op` with its job index resolved against the jobs known now (jobs submitted later in
    /// the same block must not change which job it names).
    fn resolved(&self, op: &Op) -> Op {
        let fix = |job: usize| self.job_index(job).unwrap_or(usize::MAX);
        let mut op = op.clone();
        match &mut op {
            Op::Cancel { job }
            | Op::Assign { job, .. }
            | Op::Report { job, .. }
            | Op::Refund { job, .. }
            | Op::Settle { job } => *job = fix(*job),
            _ => {}
        }
        op
    }

    fn tx(&mut self, op: &Op) -> Option<(SignedTransaction, Op)> {
        let op = &self.resolved(op);
        let c = self.customer.clone();
        let (k, action) = match op.clone() {
            Op::Bid { amount } => (
                c,
                Action::PlaceBid {
                    listing_id: self.listing.clone(),
                    amount: ait(amount),
                },
            ),
            Op::Accept { bid } => (
                self.provider.clone(),
                Action::AcceptBid {
                    bid_id: self.bid(bid),
                },
            ),
            Op::Reject { bid } => (
                self.provider.clone(),
                Action::RejectBid {
                    bid_id: self.bid(bid),
                },
            ),
            Op::CancelBid { bid } => (
                c,
                Action::CancelBid {
                    bid_id: self.bid(bid),
                },
            ),
            Op::SettleBid { who, bid } => (
                self.key(who),
                Action::SettleBid {
                    bid_id: self.bid(bid),
                },
            ),
            Op::Submit {
                bid,
                payment,
                deadline,
            } => (
                c,
                job_on(
                    &self.listing.clone(),
                    bid.map(|b| self.bid(b)).as_deref(),
                    ait(payment),
                    deadline,
                ),
            ),
            Op::Cancel { job } => (
                c,
                Action::CancelJob {
                    job_id: self.job_id(job),
                },
            ),
            Op::Assign { job, agent } => (
                self.scheduler.clone(),
                Action::AssignJob {
                    job_id: self.job_id(job),
                    agent_key: self.agents[agent].public(),
                },
            ),
            Op::Report {
                job,
                agent,
                stale,
                success,
                gpu_s,
            } => {
                let attempt = self
                    .job_index(job)
                    .map(|j| self.jobs[j].attempt)
                    .unwrap_or(1);
                let attempt = if stale {
                    attempt.saturating_sub(1)
                } else {
                    attempt
                };
                let signer = if agent == 2 {
                    self.outsider.clone()
                } else {
                    self.agents[agent].clone()
                };
                let receipt = receipt_for(&signer, &self.job_id(job), success, attempt, gpu_s);
                (self.scheduler.clone(), Action::ReportResult { receipt })
            }
            Op::Refund { who, job } => (
                self.key(who),
                Action::RefundJob {
                    job_id: self.job_id(job),
                },
            ),
            Op::Settle { job } => (
                self.provider.clone(),
                Action::SettleJob {
                    job_id: self.job_id(job),
                },
            ),
            Op::Update { price } => (
                self.provider.clone(),
                Action::UpdateListing {
                    listing_id: self.listing.clone(),
                    price: Some(ait(price)),
                    description: None,
                    runtime: None,
                },
            ),
            Op::Replay { index } => {
                let old = self
                    .applied
                    .get(index % self.applied.len().max(1))
                    .cloned()?;
                return Some((old, op.clone()));
            }
        };
        Some((self.l.sign(&k, action), op.clone()))
    }

    /// Whether the model expects a result to be accepted, and what it should pay.
    /// `attempt` is the one the receipt carries: built before the block, it may be behind an
    /// assignment earlier in the same block (or be stale on purpose).
    fn expected_result(
        &self,
        job: usize,
        agent: usize,
        attempt: u32,
        success: bool,
        gpu_s: u64,
        now: u64,
    ) -> Option<Amount> {
        let j = self.job_index(job).map(|i| &self.jobs[i])?;
        let agent_ok = agent < 2 && j.agent == Some(self.agents[agent].public());
        let in_time = now <= j.deadline_ms + GRACE;
        if !(j.open && agent_ok && attempt == j.attempt && j.attempt >= 1 && in_time) {
            return None;
        }
        if success {
            return Some(j.price);
        }
        if !j.stop {
            return Some(Amount::ZERO);
        }
        let used = Amount(amt(RATE).0 * u128::from(gpu_s));
        Some(used.max(amt(MINIMUM)).min(j.price))
    }

    /// Checks one applied (or refused) transaction against the model and updates the model.
    fn check(&mut self, op: &Op, r: &TxReceipt, now: u64) -> Result<(), TestCaseError> {
        let ok = r.error.is_none();
        let settled: Amount = r
            .events
            .iter()
            .filter_map(|e| match e {
                Event::JobSettled {
                    paid, fee_burned, ..
                } => Some(paid.checked_add(*fee_burned).unwrap()),
                _ => None,
            })
            .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap());
        let refunded: Amount = r
            .events
            .iter()
            .filter_map(|e| match e {
                Event::JobRefunded { refunded, .. } => Some(*refunded),
                _ => None,
            })
            .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap());
        match op {
            Op::Bid { .. } if ok => self.bids.push(created_id(r)),
            Op::Submit { .. } if ok => {
                let id = created_id(r);
                let j = self.l.job(&id);
                prop_assert!(j.deadline_ms >= now, "deadline in the past");
                self.jobs.push(ModelJob {
                    id,
                    escrow: j.escrow,
                    price: j.price,
                    deadline_ms: j.deadline_ms,
                    agent: None,
                    attempt: 0,
                    stop: false,
                    open: true,
                    closes: 0,
                });
            }
            Op::Assign { job, agent } if ok => {
                let agent_key = self.agents[*agent].public();
                let idx = self.job_index(*job).unwrap();
                let j = &mut self.jobs[idx];
                prop_assert!(
                    j.open && !j.stop && now <= j.deadline_ms,
                    "assignment of a closed, stopped or expired job"
                );
                j.agent = Some(agent_key);
                j.attempt += 1;
            }
            Op::Cancel { job } if ok => {
                let idx = self.job_index(*job).unwrap();
                let j = &mut self.jobs[idx];
                if j.agent.is_some() {
                    prop_assert!(
                        settled.is_zero() && refunded.is_zero(),
                        "a stop request moved money"
                    );
                    prop_assert!(!j.stop);
                    j.stop = true;
                } else {
                    prop_assert_eq!(refunded, j.escrow);
                    j.open = false;
                    j.closes += 1;
                }
            }
            Op::Report {
                job,
                agent,
                success,
                gpu_s,
                ..
            } => {
                let attempt = match self.applied_candidate.as_ref().map(|t| &t.tx.action) {
                    Some(Action::ReportResult { receipt }) => receipt.receipt.attempt,
                    _ => return Err(TestCaseError::fail("a report without its receipt")),
                };
                let expected = self.expected_result(*job, *agent, attempt, *success, *gpu_s, now);
                prop_assert_eq!(
                    ok,
                    expected.is_some(),
                    "result accepted {} but model expects {:?}: {:?}",
                    ok,
                    expected,
                    r.error
                );
                if let Some(charge) = expected {
                    let idx = self.job_index(*job).unwrap();
                    let j = &mut self.jobs[idx];
                    prop_assert_eq!(settled, charge, "provider paid other than for the receipt");
                    prop_assert_eq!(
                        refunded,
                        j.escrow.checked_sub(charge).unwrap(),
                        "customer got back other than the rest"
                    );
                    j.open = false;
                    j.closes += 1;
                }
            }
            Op::Refund { job, .. } => {
                let refundable = self
                    .job_index(*job)
                    .map(|i| &self.jobs[i])
                    .is_some_and(|j| j.open && now > j.deadline_ms + GRACE);
                prop_assert_eq!(
                    ok,
                    refundable,
                    "refund {} but model expects {}: {:?}",
                    ok,
                    refundable,
                    r.error
                );
                if ok {
                    let idx = self.job_index(*job).unwrap();
                    let j = &mut self.jobs[idx];
                    prop_assert_eq!(refunded, j.escrow);
                    j.open = false;
                    j.closes += 1;
                }
            }
            Op::Settle { .. } => prop_assert!(!ok, "SettleJob paid a job outside ReportResult"),
            Op::Replay { .. } => prop_assert!(!ok, "a replay applied"),
            _ => {}
        }
        if !matches!(
            op,
            Op::Report { .. } | Op::Refund { .. } | Op::Cancel { .. }
        ) {
            prop_assert!(
                settled.is_zero() && refunded.is_zero() || !ok,
                "{:?} moved a job's money",
                op
            );
        }
        if ok && !matches!(op, Op::Replay { .. }) {
            if let Some(stx) = self.applied_candidate.take() {
                self.applied.push(stx);
            }
        }
        Ok(())
    }

    /// After every block: nothing paid twice, nothing escrowed by a job past deadline + grace
    /// that could not be refunded at once, and the ledger's jobs agree with the model.
    fn invariants(&self) -> Result<(), TestCaseError> {
        self.l.check_conservation();
        for j in &self.jobs {
            prop_assert!(j.closes <= 1, "job {} closed twice", j.id);
            let on_chain = self.l.job(&j.id);
            prop_assert_eq!(
                on_chain.status.holds_escrow(),
                j.open,
                "job {} open on chain differs",
                &j.id
            );
            prop_assert!(matches!(
                on_chain.status,
                JobStatus::Pending | JobStatus::Assigned | JobStatus::Settled | JobStatus::Refunded
            ));
        }
        Ok(())
    }
}

impl Model {
    fn run_block(&mut self, ops: &[Op], wait_ms: u64) -> Result<(), TestCaseError> {
        self.l.wait_ms(wait_ms);
        let now = self.l.time_ms + 100;
        let mut txs = vec![];
        let mut kinds = vec![];
        for op in ops {
            if let Some((stx, op)) = self.tx(op) {
                txs.push(stx);
                kinds.push(op);
            }
        }
        let receipts = self.l.block(&txs);
        // Envelope rejections (a replay's stale nonce) leave the nonce; others used it.
        for (i, (r, op)) in receipts.iter().zip(&kinds).enumerate() {
            self.applied_candidate = Some(txs[i].clone());
            self.check(op, r, now)?;
        }
        self.applied_candidate = None;
        self.invariants()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn fair_exchange_model_of_bid_job_result_settlement(
        blocks in proptest::collection::vec((proptest::collection::vec(op(), 1..8), 0u64..20_000), 1..40)
    ) {
        let mut m = Model::new();
        for (ops, wait) in &blocks {
            m.run_block(ops, *wait)?;
        }
        // In the end every job's money is out of escrow once its grace has passed.
        m.l.wait_ms(10_000_000);
        let refunds: Vec<Op> = (0..m.jobs.len()).map(|job| Op::Refund { who: Who::Customer, job }).collect();
        for chunk in refunds.chunks(1) {
            m.run_block(chunk, 0)?;
        }
        for j in &m.jobs {
            prop_assert!(!m.l.job(&j.id).status.holds_escrow(), "job {} still escrowed past deadline + grace", &j.id);
        }
    }
}
