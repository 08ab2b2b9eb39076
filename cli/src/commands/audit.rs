//! Audits and verifications: each rule is computed from the chain's objects, totals and event
//! trail, and printed pass/fail (any failure exits 1).

use crate::cli::{Action as A, MarketplaceArgs};
use crate::commands::marketplace::{listing, need};
use crate::context::Ctx;
use crate::output::{with_amounts, Report};
use crate::period::Period;
use crate::scan::{self, Window};
use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::{Bid, BidStatus, Event, Job, JobStatus, Listing};
use aitbc_protocol::{Address, Amount};
use anyhow::{anyhow, Result};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Everything the audits read: current objects and totals, and the event trail of a window.
pub struct Facts {
    pub bids: Vec<Bid>,
    pub jobs: Vec<Job>,
    pub listings: Vec<Listing>,
    pub supply: aitbc_protocol::pb::SupplyInfo,
    pub fee_bps: u32,
    pub height: u64,
    pub window: Window,
}

fn amt(s: &str) -> Result<Amount> {
    s.parse::<Amount>()
        .map_err(|e| anyhow!("node returned a bad amount {s:?}: {e}"))
}

impl Facts {
    pub async fn load(chain: &ChainClient, since_ms: u64) -> Result<Facts> {
        let status = chain.status().await?;
        let window = scan::window(chain, since_ms).await?;
        Ok(Facts {
            bids: chain.bids("", None, "").await?,
            jobs: chain.jobs(None, "").await?,
            listings: chain.listings("", None).await?,
            supply: chain.supply().await?,
            fee_bps: status.marketplace_fee_bps,
            height: status.height,
            window,
        })
    }

    fn events(&self) -> impl Iterator<Item = &Event> {
        self.window.txs.iter().flat_map(|t| t.events().iter())
    }
}

fn sum<I: IntoIterator<Item = Amount>>(it: I) -> Amount {
    it.into_iter().fold(Amount::ZERO, |a, b| {
        a.checked_add(b).unwrap_or(Amount(u128::MAX))
    })
}

pub async fn run(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let chain = ctx.chain().await?;
    let whole_chain = matches!(m.action, A::VerifySettlement | A::Reconcile);
    let period = m.period.unwrap_or(Period::D30);
    let since = if whole_chain && m.period.is_none() {
        0
    } else {
        period.since_ms(crate::keystore::now_ms())
    };
    if let Some(sid) = &m.service_id {
        listing(&chain, sid).await?;
    }
    let f = Facts::load(&chain, since).await?;
    let mut r = ctx.report();
    r.field("height", f.height);
    if !(whole_chain && m.period.is_none()) {
        r.field("period", period.as_str());
    }
    r.field("blocks_scanned", f.window.blocks)
        .field("transactions_scanned", f.window.txs.len());
    match m.action {
        A::VerifySettlement => verify_settlement(
            &mut r,
            &f,
            need(&m.service_id, "--service-id", "verify-settlement")?,
        ),
        A::Audit => {
            supply_rules(&mut r, &f)?;
            escrow_rules(&mut r, &f, &chain).await?;
            trail_rules(&mut r, &f);
        }
        A::FinancialAudit => {
            supply_rules(&mut r, &f)?;
            escrow_rules(&mut r, &f, &chain).await?;
            fee_rules(&mut r, &f);
            revenue_rules(&mut r, &f);
        }
        A::Reconcile => {
            supply_rules(&mut r, &f)?;
            escrow_rules(&mut r, &f, &chain).await?;
            replay_rules(&mut r, &f)?;
        }
        A::PaymentVerify => payment_verify(&mut r, &f),
        A::ComplianceCheck => {
            listing_rules(&mut r, &f, m.service_id.as_deref());
            expiry_rules(&mut r, &f, m.service_id.as_deref());
            input_rules(&mut r, &f, m.service_id.as_deref());
            fee_rules(&mut r, &f);
        }
        A::RegulatoryAudit => {
            supply_rules(&mut r, &f)?;
            fee_rules(&mut r, &f);
            expiry_rules(&mut r, &f, m.service_id.as_deref());
            trail_rules(&mut r, &f);
        }
        A::PrivacyAudit => {
            input_rules(&mut r, &f, m.service_id.as_deref());
            runtime_secret_rules(&mut r, &f, m.service_id.as_deref());
            keystore_rules(&mut r, ctx);
        }
        _ => unreachable_action(m.action)?,
    }
    Ok(r)
}

fn unreachable_action(a: A) -> Result<()> {
    Err(anyhow!(
        "{} is not an audit action",
        crate::commands::marketplace::action_name(a)
    ))
}

/// genesis supply = balances + escrow + burned (from the node's totals, recomputed here).
fn supply_rules(r: &mut Report, f: &Facts) -> Result<()> {
    let s = &f.supply;
    let (g, b, e, burned) = (
        amt(&s.genesis_supply)?,
        amt(&s.balances)?,
        amt(&s.escrowed)?,
        amt(&s.burned)?,
    );
    let total = sum([b, e, burned]);
    r.check(
        "supply-conservation",
        total == g && s.conserved,
        format!("genesis {g} AIT = balances {b} + escrowed {e} + burned {burned} = {total} AIT over {} accounts", s.accounts),
    );
    Ok(())
}

/// The chain's escrow total equals the escrow held by open bids and jobs, and every account's
/// escrow equals its own open bids and jobs.
async fn escrow_rules(r: &mut Report, f: &Facts, chain: &ChainClient) -> Result<()> {
    let mut per: BTreeMap<Address, Amount> = BTreeMap::new();
    for b in f.bids.iter().filter(|b| b.status.holds_escrow()) {
        let e = per.entry(b.bidder).or_default();
        *e = sum([*e, b.amount]);
    }
    for j in f.jobs.iter().filter(|j| j.status.holds_escrow()) {
        let e = per.entry(j.customer).or_default();
        *e = sum([*e, j.escrow]);
    }
    let objects = sum(per.values().copied());
    let chain_total = amt(&f.supply.escrowed)?;
    r.check(
        "escrow-total",
        objects == chain_total,
        format!("open bids and jobs hold {objects} AIT; chain escrow total {chain_total} AIT"),
    );
    let mut bad = Vec::new();
    for (a, want) in &per {
        let got = amt(&chain.account(a).await?.escrowed)?;
        if got != *want {
            bad.push(format!("{a}: account {got} AIT, objects {want} AIT"));
        }
    }
    r.check(
        "escrow-per-account",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} accounts with escrow match their bids and jobs",
                per.len()
            )
        } else {
            bad.join("; ")
        },
    );
    Ok(())
}

/// Every settlement in the window burned exactly the marketplace fee and paid the rest.
fn fee_rules(r: &mut Report, f: &Facts) {
    let mut n = 0;
    let mut bad = Vec::new();
    let bids: BTreeMap<&str, &Bid> = f.bids.iter().map(|b| (b.id.as_str(), b)).collect();
    let jobs: BTreeMap<&str, &Job> = f.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    for e in f.events() {
        let (id, paid, fee, gross) = match e {
            Event::BidSettled {
                bid_id,
                paid,
                fee_burned,
                ..
            } => (
                bid_id,
                *paid,
                *fee_burned,
                bids.get(bid_id.as_str()).map(|b| b.amount),
            ),
            Event::JobSettled {
                job_id,
                paid,
                fee_burned,
                ..
            } => (
                job_id,
                *paid,
                *fee_burned,
                jobs.get(job_id.as_str()).map(|j| j.escrow),
            ),
            _ => continue,
        };
        n += 1;
        match gross {
            Some(g) if g.basis_points(f.fee_bps) == fee && sum([paid, fee]) == g => {}
            Some(g) => bad.push(format!("{id}: escrow {g} AIT, paid {paid} + fee {fee}")),
            None => bad.push(format!("{id}: settled object not found")),
        }
    }
    r.check(
        "settlement-fees",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{n} settlements each burned {} bps and paid the rest",
                f.fee_bps
            )
        } else {
            bad.join("; ")
        },
    );
}

/// Listing revenue equals what the trail paid to its provider (whole-chain windows only).
fn revenue_rules(r: &mut Report, f: &Facts) {
    if f.window.from_height > 1 {
        r.text("note: revenue-per-listing needs the whole chain; run with --period 30d on a younger chain, or `reconcile`");
        return;
    }
    let bids: BTreeMap<&str, &Bid> = f.bids.iter().map(|b| (b.id.as_str(), b)).collect();
    let jobs: BTreeMap<&str, &Job> = f.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let mut from_trail: BTreeMap<String, Amount> = BTreeMap::new();
    for e in f.events() {
        let (lid, paid) = match e {
            Event::BidSettled { bid_id, paid, .. } => (
                bids.get(bid_id.as_str()).map(|b| b.listing_id.clone()),
                *paid,
            ),
            Event::JobSettled { job_id, paid, .. } => (
                jobs.get(job_id.as_str()).and_then(|j| j.listing_id.clone()),
                *paid,
            ),
            _ => continue,
        };
        if let Some(lid) = lid {
            let e = from_trail.entry(lid).or_default();
            *e = sum([*e, paid]);
        }
    }
    let bad: Vec<String> = f
        .listings
        .iter()
        .filter(|l| from_trail.get(&l.id).copied().unwrap_or_default() != l.revenue)
        .map(|l| {
            format!(
                "{}: listing says {} AIT, trail {} AIT",
                l.id,
                l.revenue,
                from_trail.get(&l.id).copied().unwrap_or_default()
            )
        })
        .collect();
    r.check(
        "revenue-per-listing",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} active listings' revenue matches their settlements",
                f.listings.len()
            )
        } else {
            bad.join("; ")
        },
    );
}

/// The window's trail: every transaction is in a block with a receipt; counts by kind.
fn trail_rules(r: &mut Report, f: &Facts) {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rejected = 0;
    let mut mismatched = 0;
    for t in &f.window.txs {
        *kinds.entry(t.tx.tx.action.name()).or_default() += 1;
        if !t.applied() {
            rejected += 1;
        }
        if t.tx.hash() != t.receipt.tx_hash {
            mismatched += 1;
        }
    }
    let summary: Vec<String> = kinds.iter().map(|(k, v)| format!("{k}={v}")).collect();
    r.field(
        "trail",
        if summary.is_empty() {
            "no transactions".to_string()
        } else {
            summary.join(" ")
        },
    );
    r.field("rejected_in_blocks", rejected);
    r.check(
        "transaction-trail",
        mismatched == 0,
        format!(
            "{} transactions, each with its receipt in its block ({mismatched} mismatched)",
            f.window.txs.len()
        ),
    );
}

/// Replays the whole chain's escrow and burn events and compares with the totals.
fn replay_rules(r: &mut Report, f: &Facts) -> Result<()> {
    if f.window.from_height > 1 {
        r.text("note: replay needs the whole chain; run reconcile without --period");
        return Ok(());
    }
    let (mut locked, mut released, mut burned) = (Amount::ZERO, Amount::ZERO, Amount::ZERO);
    for t in f.window.txs.iter().filter(|t| t.applied()) {
        for e in t.events() {
            match e {
                Event::BidPlaced { amount, .. } => locked = sum([locked, *amount]),
                // A job drawing on a bid takes over that bid's escrow (BidUsed) and locks any
                // top-up: the job's escrow is locked, the bid's released into it.
                Event::JobSubmitted { escrow, .. } => locked = sum([locked, *escrow]),
                Event::BidUsed { amount, .. } => released = sum([released, *amount]),
                Event::BidRejected { refunded, .. }
                | Event::BidCancelled { refunded, .. }
                | Event::LeaseRefunded { refunded, .. }
                | Event::JobRefunded { refunded, .. } => released = sum([released, *refunded]),
                Event::BidSettled {
                    paid, fee_burned, ..
                } => {
                    released = sum([released, *paid, *fee_burned]);
                    burned = sum([burned, *fee_burned]);
                }
                Event::JobSettled {
                    paid, fee_burned, ..
                } => {
                    released = sum([released, *paid, *fee_burned]);
                    burned = sum([burned, *fee_burned]);
                }
                _ => {}
            }
        }
    }
    let escrow = locked.checked_sub(released);
    let chain_escrow = amt(&f.supply.escrowed)?;
    let chain_burned = amt(&f.supply.burned)?;
    r.check(
        "escrow-replay",
        escrow == Some(chain_escrow),
        format!(
            "locked {locked} - released {released} = {} AIT; chain escrow {chain_escrow} AIT",
            escrow
                .map(|e| e.to_string())
                .unwrap_or_else(|| "negative".into())
        ),
    );
    r.check(
        "burn-replay",
        burned == chain_burned,
        format!("fees burned in settlements {burned} AIT; chain burned {chain_burned} AIT"),
    );
    Ok(())
}

fn verify_settlement(r: &mut Report, f: &Facts, sid: &str) {
    let mut settled_events: BTreeMap<String, (Amount, Amount, Address)> = BTreeMap::new();
    for e in f.events() {
        match e {
            Event::BidSettled {
                bid_id,
                provider,
                paid,
                fee_burned,
            } => {
                settled_events.insert(bid_id.clone(), (*paid, *fee_burned, *provider));
            }
            Event::JobSettled {
                job_id,
                provider,
                paid,
                fee_burned,
            } => {
                settled_events.insert(job_id.clone(), (*paid, *fee_burned, *provider));
            }
            _ => {}
        }
    }
    let owner = f.listings.iter().find(|l| l.id == sid).map(|l| l.owner);
    let mut items: Vec<(String, Amount, String)> = Vec::new();
    for b in f
        .bids
        .iter()
        .filter(|b| b.listing_id == sid && b.status == BidStatus::Settled)
    {
        items.push((b.id.clone(), b.amount, "bid".into()));
    }
    for j in f
        .jobs
        .iter()
        .filter(|j| j.listing_id.as_deref() == Some(sid) && j.status == JobStatus::Settled)
    {
        items.push((j.id.clone(), j.escrow, "job".into()));
    }
    r.field("service_id", sid).field("settled", items.len());
    let mut total_paid = Amount::ZERO;
    for (id, escrow, kind) in &items {
        match settled_events.get(id) {
            Some((paid, fee, provider)) => {
                let ok = sum([*paid, *fee]) == *escrow
                    && escrow.basis_points(f.fee_bps) == *fee
                    && owner.is_none_or(|o| o == *provider);
                total_paid = sum([total_paid, *paid]);
                r.check(
                    &format!("{kind}:{id}"),
                    ok,
                    format!("escrow {escrow} AIT -> provider {paid} AIT + fee burned {fee} AIT"),
                );
            }
            None => {
                r.check(
                    &format!("{kind}:{id}"),
                    false,
                    "settled, but no settlement event found on chain",
                );
            }
        }
    }
    if let Some(l) = f.listings.iter().find(|l| l.id == sid) {
        r.check(
            "listing-revenue",
            l.revenue == total_paid,
            format!(
                "listing revenue {} AIT; settlements paid {total_paid} AIT",
                l.revenue
            ),
        );
    }
    if items.is_empty() {
        r.text("note: the listing has no settled bids or jobs yet");
    }
}

/// Every payment locked in the window, traced to its settlement, refund, or open escrow.
fn payment_verify(r: &mut Report, f: &Facts) {
    let mut outcome: BTreeMap<String, String> = BTreeMap::new();
    for e in f.events() {
        match e {
            Event::BidSettled {
                bid_id,
                paid,
                fee_burned,
                ..
            } => {
                outcome.insert(
                    bid_id.clone(),
                    format!("settled: provider {paid} AIT, fee {fee_burned} AIT"),
                );
            }
            Event::JobSettled {
                job_id,
                paid,
                fee_burned,
                ..
            } => {
                outcome.insert(
                    job_id.clone(),
                    format!("settled: provider {paid} AIT, fee {fee_burned} AIT"),
                );
            }
            Event::BidRejected { bid_id, refunded } | Event::BidCancelled { bid_id, refunded } => {
                outcome.insert(bid_id.clone(), format!("refunded {refunded} AIT"));
            }
            Event::JobRefunded {
                job_id, refunded, ..
            } => {
                outcome.insert(job_id.clone(), format!("refunded {refunded} AIT"));
            }
            _ => {}
        }
    }
    let bids: BTreeMap<&str, &Bid> = f.bids.iter().map(|b| (b.id.as_str(), b)).collect();
    let jobs: BTreeMap<&str, &Job> = f.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let (mut n, mut bad) = (0, 0);
    for e in f.events() {
        let (id, amount, state, closed) = match e {
            Event::BidPlaced { bid_id, amount, .. } => {
                let Some(b) = bids.get(bid_id.as_str()) else {
                    continue;
                };
                (
                    bid_id,
                    *amount,
                    b.status.as_str(),
                    matches!(
                        b.status,
                        BidStatus::Settled | BidStatus::Rejected | BidStatus::Cancelled
                    ),
                )
            }
            Event::JobSubmitted { job_id, escrow, .. } => {
                let Some(j) = jobs.get(job_id.as_str()) else {
                    continue;
                };
                (job_id, *escrow, j.status.as_str(), !j.status.holds_escrow())
            }
            _ => continue,
        };
        n += 1;
        let trace = outcome.get(id).cloned();
        let ok = match (closed, &trace) {
            (true, Some(_)) => true,
            (true, None) => state == "used-by-job",
            (false, None) => true,
            (false, Some(_)) => false,
        };
        if !ok {
            bad += 1;
        }
        let detail = trace.unwrap_or_else(|| {
            if state == "used-by-job" {
                "moved into a job's escrow".into()
            } else {
                format!("still in escrow ({state})")
            }
        });
        r.row(
            "payments",
            format!(
                "payment: {id} amount: {amount} AIT status: {state} trace: {detail}{}",
                if ok { "" } else { " MISMATCH" }
            ),
            with_amounts(
                json!({"id": id, "amount": amount, "status": state, "trace": detail, "ok": ok}),
                &[("amount", amount)],
            ),
        );
    }
    r.check(
        "payments-traced",
        bad == 0,
        format!("{n} payments in the window, {bad} without a matching settlement or refund"),
    );
}

fn listing_rules(r: &mut Report, f: &Facts, sid: Option<&str>) {
    let ls: Vec<&Listing> = f
        .listings
        .iter()
        .filter(|l| sid.is_none_or(|s| l.id == s))
        .collect();
    let bad: Vec<String> = ls
        .iter()
        .filter(|l| l.name.trim().is_empty() || l.price.is_zero())
        .map(|l| format!("{} lacks a name or price", l.id))
        .collect();
    r.check(
        "listings-complete",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} active listings have name, type, price and provider",
                ls.len()
            )
        } else {
            bad.join("; ")
        },
    );
    let runnable: Vec<String> = ls
        .iter()
        .filter(|l| !l.runtime.command.is_empty() && l.runtime.command[0].trim().is_empty())
        .map(|l| l.id.clone())
        .collect();
    r.check(
        "listings-runnable",
        runnable.is_empty(),
        if runnable.is_empty() {
            "every listing names a runtime or uses the agent's demo runtime".to_string()
        } else {
            format!("empty runtime command: {}", runnable.join(", "))
        },
    );
}

/// No escrow left locked in a job past its deadline.
fn expiry_rules(r: &mut Report, f: &Facts, sid: Option<&str>) {
    let expired: Vec<String> = f
        .jobs
        .iter()
        .filter(|j| sid.is_none_or(|s| j.listing_id.as_deref() == Some(s)))
        .filter(|j| {
            matches!(j.status, JobStatus::Pending | JobStatus::Assigned)
                && j.deadline_height < f.height
        })
        .map(|j| {
            format!(
                "{} ({} AIT, deadline {})",
                j.id, j.escrow, j.deadline_height
            )
        })
        .collect();
    let failed_unrefunded: Vec<String> = f
        .jobs
        .iter()
        .filter(|j| {
            sid.is_none_or(|s| j.listing_id.as_deref() == Some(s)) && j.status == JobStatus::Failed
        })
        .map(|j| j.id.clone())
        .collect();
    r.check(
        "no-expired-escrow",
        expired.is_empty(),
        if expired.is_empty() {
            format!(
                "no job past its deadline holds escrow (height {})",
                f.height
            )
        } else {
            format!("expired: {}", expired.join(", "))
        },
    );
    r.check(
        "failed-jobs-refunded",
        failed_unrefunded.is_empty(),
        if failed_unrefunded.is_empty() {
            "no failed job awaits its refund".to_string()
        } else {
            format!("awaiting refund: {}", failed_unrefunded.join(", "))
        },
    );
}

/// Job inputs travel off chain: jobs keep only digests, and no parameter carries bulk data.
fn input_rules(r: &mut Report, f: &Facts, sid: Option<&str>) {
    const MAX_PARAM: usize = 256;
    let jobs: Vec<&Job> = f
        .jobs
        .iter()
        .filter(|j| sid.is_none_or(|s| j.listing_id.as_deref() == Some(s)))
        .collect();
    let bulky: Vec<String> = jobs
        .iter()
        .filter(|j| j.spec.params.iter().any(|(_, v)| v.len() > MAX_PARAM))
        .map(|j| j.id.clone())
        .collect();
    let with_files = jobs
        .iter()
        .filter(|j| j.spec.input_digest.is_some() || j.spec.dataset_digest.is_some())
        .count();
    r.check(
        "no-job-input-in-clear",
        bulky.is_empty(),
        if bulky.is_empty() {
            format!("{} jobs; {with_files} with input files keep only their SHA-256 on chain; no parameter over {MAX_PARAM} bytes", jobs.len())
        } else {
            format!("parameters carrying data in clear: {}", bulky.join(", "))
        },
    );
}

/// Listing runtimes carry no secrets in their (public) environment.
fn runtime_secret_rules(r: &mut Report, f: &Facts, sid: Option<&str>) {
    let secretish = |k: &str| {
        let k = k.to_ascii_uppercase();
        [
            "SECRET", "PASSWORD", "TOKEN", "PRIVATE", "API_KEY", "APIKEY",
        ]
        .iter()
        .any(|s| k.contains(s))
    };
    let bad: Vec<String> = f
        .listings
        .iter()
        .filter(|l| sid.is_none_or(|s| l.id == s))
        .filter(|l| {
            l.runtime
                .env
                .iter()
                .any(|(k, v)| secretish(k) && !v.is_empty())
        })
        .map(|l| l.id.clone())
        .collect();
    r.check(
        "no-secrets-in-listings",
        bad.is_empty(),
        if bad.is_empty() {
            "no listing runtime env holds a secret-looking variable".to_string()
        } else {
            format!("secret-looking env in: {}", bad.join(", "))
        },
    );
}

/// Local wallets: encrypted, mode 0600.
fn keystore_rules(r: &mut Report, ctx: &Ctx) {
    let mut bad = Vec::new();
    let wallets = ctx.keystore.list().unwrap_or_default();
    for w in &wallets {
        let Ok(p) = ctx.keystore.path_of(&w.name) else {
            continue;
        };
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let encrypted = text.contains("\"ciphertext\"") && !text.contains("\"secret\"");
        #[cfg(unix)]
        let private = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&p)
                .map(|m| m.permissions().mode() & 0o077 == 0)
                .unwrap_or(false)
        };
        #[cfg(not(unix))]
        let private = true;
        if !encrypted || !private {
            bad.push(format!(
                "{} ({})",
                w.name,
                if !encrypted {
                    "not encrypted"
                } else {
                    "readable by others"
                }
            ));
        }
    }
    let names: BTreeSet<&str> = wallets.iter().map(|w| w.name.as_str()).collect();
    r.check(
        "local-keys-protected",
        bad.is_empty(),
        if bad.is_empty() {
            format!("{} local wallets encrypted and mode 0600", names.len())
        } else {
            bad.join("; ")
        },
    );
}
