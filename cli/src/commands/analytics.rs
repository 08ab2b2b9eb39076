//! Reports computed from the chain's block trail, the nodes' status and the scheduler's metrics.

use crate::cli::{Action as A, MarketplaceArgs};
use crate::commands::marketplace::{listing, need};
use crate::commands::transaction::parse_hash;
use crate::commands::wallet::describe;
use crate::context::Ctx;
use crate::output::{percentile, with_amounts, Report};
use crate::period::Period;
use crate::scan;
use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::{Event, Job, JobStatus, TxReceipt};
use aitbc_protocol::scheduler_pb as spb;
use aitbc_protocol::tx::{Action, SignedTransaction};
use aitbc_protocol::Amount;
use anyhow::{anyhow, Result};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

fn add(a: Amount, b: Amount) -> Amount {
    a.checked_add(b).unwrap_or(Amount(u128::MAX))
}

pub async fn run(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let period = m.period.unwrap_or(Period::H24);
    match m.action {
        A::Transactions => transactions(ctx, m, period).await,
        A::Revenue => revenue(ctx, m, period).await,
        A::Volume => volume(ctx, period).await,
        A::VerifyProvider => verify_provider(ctx, m).await,
        A::QualityMetrics => quality(ctx, m).await,
        A::Satisfaction => satisfaction(ctx, m, period).await,
        A::Optimize => optimize(ctx, m).await,
        A::CrossNodeStats => cross_node_stats(ctx, period).await,
        A::PerformanceMetrics => performance(ctx, period).await,
        A::LatencyMetrics => latency(ctx, period).await,
        A::CapacityMetrics => capacity(ctx).await,
        A::HealthCheck => health(ctx).await,
        A::ConnectivityTest => connectivity(ctx).await,
        A::IntegrityCheck => integrity(ctx).await,
        A::Debug => debug(ctx, need(&m.transaction_id, "--transaction-id", "debug")?).await,
        other => Err(anyhow!(
            "{} is not an analytics action",
            crate::commands::marketplace::action_name(other)
        )),
    }
}

fn since(p: Period) -> u64 {
    p.since_ms(crate::keystore::now_ms())
}

/// Marketplace transactions (everything but plain transfers and agent registration) in the
/// window, optionally only those touching one listing.
async fn transactions(ctx: &Ctx, m: &MarketplaceArgs, p: Period) -> Result<Report> {
    let chain = ctx.chain().await?;
    let w = scan::window(&chain, since(p)).await?;
    let mut touching: BTreeSet<String> = BTreeSet::new();
    if let Some(sid) = &m.service_id {
        listing(&chain, sid).await?;
        touching.insert(sid.clone());
        for b in chain.bids(sid, None, "").await? {
            touching.insert(b.id);
        }
        for j in chain.jobs(None, "").await? {
            if j.listing_id.as_deref() == Some(sid.as_str()) {
                touching.insert(j.id);
            }
        }
    }
    let mut r = ctx.report();
    r.field("period", p.as_str()).list("transactions");
    let mut n = 0;
    for t in w.txs.iter().rev() {
        let a = &t.tx.tx.action;
        if matches!(a, Action::Transfer { .. } | Action::RegisterAgent { .. }) {
            continue;
        }
        if !touching.is_empty() && !ids_of(a, &t.receipt).iter().any(|id| touching.contains(id)) {
            continue;
        }
        n += 1;
        let status = t
            .receipt
            .error
            .as_ref()
            .map(|e| format!("rejected ({e})"))
            .unwrap_or_else(|| "committed".into());
        let what = describe(&t.tx, Some(&t.receipt));
        r.row(
            "transactions",
            format!("tx_hash: {} block: {} from: {} status: {} action: {}", t.receipt.tx_hash, t.receipt.height, t.tx.tx.sender_address(), status, what),
            json!({"tx_hash": t.receipt.tx_hash, "block": t.receipt.height, "time_ms": t.time_ms, "from": t.tx.tx.sender_address(), "status": status, "action": what}),
        );
    }
    r.field("count", n);
    Ok(r)
}

/// Object ids an action and its receipt touch.
fn ids_of(a: &Action, rc: &TxReceipt) -> Vec<String> {
    let mut v: Vec<String> = match a {
        Action::UpdateListing { listing_id, .. }
        | Action::CloseListing { listing_id }
        | Action::PlaceBid { listing_id, .. } => vec![listing_id.clone()],
        Action::AcceptBid { bid_id }
        | Action::RejectBid { bid_id }
        | Action::CancelBid { bid_id }
        | Action::SettleBid { bid_id } => vec![bid_id.clone()],
        Action::SubmitJob {
            listing_id, bid_id, ..
        } => listing_id.iter().chain(bid_id.iter()).cloned().collect(),
        Action::CancelJob { job_id }
        | Action::AssignJob { job_id, .. }
        | Action::SettleJob { job_id }
        | Action::RefundJob { job_id } => vec![job_id.clone()],
        Action::ReportResult { receipt } => vec![receipt.receipt.job_id.clone()],
        _ => vec![],
    };
    for e in &rc.events {
        match e {
            Event::ListingCreated { listing_id, .. } => v.push(listing_id.clone()),
            Event::BidPlaced { bid_id, .. } => v.push(bid_id.clone()),
            Event::JobSubmitted { job_id, .. } => v.push(job_id.clone()),
            _ => {}
        }
    }
    v
}

async fn revenue(ctx: &Ctx, m: &MarketplaceArgs, p: Period) -> Result<Report> {
    let wallet = need(&m.wallet, "--wallet", "revenue")?;
    let provider = ctx.resolve_address(wallet)?;
    let chain = ctx.chain().await?;
    let w = scan::window(&chain, since(p)).await?;
    let (mut paid_sum, mut fees, mut n) = (Amount::ZERO, Amount::ZERO, 0u64);
    let mut r = ctx.report();
    r.field("provider", provider.to_string())
        .field("period", p.as_str())
        .list("settlements");
    for t in &w.txs {
        for e in t.events() {
            let (id, who, paid, fee) = match e {
                Event::BidSettled {
                    bid_id,
                    provider,
                    paid,
                    fee_burned,
                } => (bid_id, provider, paid, fee_burned),
                Event::JobSettled {
                    job_id,
                    provider,
                    paid,
                    fee_burned,
                } => (job_id, provider, paid, fee_burned),
                _ => continue,
            };
            if *who != provider {
                continue;
            }
            n += 1;
            paid_sum = add(paid_sum, *paid);
            fees = add(fees, *fee);
            r.row(
                "settlements",
                format!(
                    "settlement: {id} block: {} paid: {paid} AIT fee: {fee} AIT",
                    t.receipt.height
                ),
                with_amounts(
                    json!({"id": id, "block": t.receipt.height, "paid": paid, "fee": fee}),
                    &[("paid", *paid), ("fee", *fee)],
                ),
            );
        }
    }
    let lifetime = chain
        .listings("", Some(&provider))
        .await?
        .iter()
        .fold(Amount::ZERO, |a, l| add(a, l.revenue));
    r.field("settlements_count", n)
        .amount("gross", add(paid_sum, fees))
        .amount("fees", fees);
    r.amount("revenue", paid_sum)
        .amount("lifetime_revenue_active_listings", lifetime);
    Ok(r)
}

async fn volume(ctx: &Ctx, p: Period) -> Result<Report> {
    let chain = ctx.chain().await?;
    let w = scan::window(&chain, since(p)).await?;
    let (mut vol, mut n) = (Amount::ZERO, 0u64);
    for e in w.txs.iter().flat_map(|t| t.events()) {
        if let Event::BidSettled {
            paid, fee_burned, ..
        }
        | Event::JobSettled {
            paid, fee_burned, ..
        } = e
        {
            vol = add(vol, add(*paid, *fee_burned));
            n += 1;
        }
    }
    let mut r = ctx.report();
    r.field("period", p.as_str())
        .field("settlements", n)
        .data("volume", vol)
        .amount_fields("volume", vol);
    // Contract: the volume as a bare number on the last line.
    r.text(vol.to_string());
    Ok(r)
}

/// Jobs grouped, with mean durations in blocks and from the agents' receipts.
fn job_stats(r: &mut Report, jobs: &[&Job], block_ms: u64) {
    let count = |s: &[JobStatus]| jobs.iter().filter(|j| s.contains(&j.status)).count();
    let done = count(&[JobStatus::Succeeded, JobStatus::Settled]);
    let failed = jobs
        .iter()
        .filter(|j| j.result.as_ref().is_some_and(|x| !x.receipt.success))
        .count();
    let refunded = count(&[JobStatus::Refunded]);
    let open = count(&[JobStatus::Pending, JobStatus::Assigned]);
    let finished: Vec<&&Job> = jobs.iter().filter(|j| j.result.is_some()).collect();
    let mean_wall = if finished.is_empty() {
        0.0
    } else {
        finished
            .iter()
            .filter_map(|j| j.result.as_ref())
            .map(|x| x.receipt.usage.wall_ms as f64)
            .sum::<f64>()
            / finished.len() as f64
    };
    let mut blocks: Vec<f64> = finished
        .iter()
        .map(|j| j.updated_height.saturating_sub(j.created_height) as f64)
        .collect();
    blocks.sort_by(f64::total_cmp);
    let mean_blocks = if blocks.is_empty() {
        0.0
    } else {
        blocks.iter().sum::<f64>() / blocks.len() as f64
    };
    let decided = done + failed;
    let rate = if decided == 0 {
        0.0
    } else {
        done as f64 / decided as f64 * 100.0
    };
    r.field("jobs", jobs.len())
        .field("done", done)
        .field("failed", failed)
        .field("refunded", refunded)
        .field("open", open);
    r.field("success_rate", format!("{rate:.1}%"));
    r.field("mean_run_time", format!("{:.3}s", mean_wall / 1000.0));
    r.field(
        "mean_submit_to_result",
        format!(
            "{mean_blocks:.1} blocks (~{:.3}s)",
            mean_blocks * block_ms as f64 / 1000.0
        ),
    );
    if let Some(p99) = percentile(&blocks, 0.99) {
        r.field("p99_submit_to_result", format!("{p99} blocks"));
    }
}

async fn verify_provider(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let wallet = need(&m.wallet, "--wallet", "verify-provider")?;
    let provider = ctx.resolve_address(wallet)?;
    let chain = ctx.chain().await?;
    let bt = chain.status().await?.block_time_ms;
    let jobs = chain.jobs(None, "").await?;
    let mine: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.provider == Some(provider))
        .collect();
    let agents: Vec<_> = chain
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.owner == provider || a.serves.serves(&provider))
        .collect();
    let mut r = ctx.report();
    r.field("provider", provider.to_string())
        .field("listings", chain.listings("", Some(&provider)).await?.len());
    r.field("agents_serving", agents.len());
    job_stats(&mut r, &mine, bt);
    Ok(r)
}

async fn quality(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let sid = need(&m.service_id, "--service-id", "quality-metrics")?;
    let chain = ctx.chain().await?;
    let l = listing(&chain, sid).await?;
    let bt = chain.status().await?.block_time_ms;
    let jobs = chain.jobs(None, "").await?;
    let mine: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.listing_id.as_deref() == Some(sid.as_str()))
        .collect();
    let bids = chain.bids(sid, None, "").await?;
    let mut r = ctx.report();
    r.field("service_id", sid)
        .field("name", &l.name)
        .field("bids", bids.len());
    let refunded_bids = bids
        .iter()
        .filter(|b| {
            matches!(
                b.status,
                aitbc_protocol::model::BidStatus::Rejected
                    | aitbc_protocol::model::BidStatus::Cancelled
            )
        })
        .count();
    r.field("bids_refunded", refunded_bids);
    job_stats(&mut r, &mine, bt);
    Ok(r)
}

async fn satisfaction(ctx: &Ctx, m: &MarketplaceArgs, p: Period) -> Result<Report> {
    let wallet = need(&m.wallet, "--wallet", "satisfaction")?;
    let customer = ctx.resolve_address(wallet)?;
    let chain = ctx.chain().await?;
    let tip = chain.status().await?.height;
    let from = scan::first_height_since(&chain, tip, since(p)).await?;
    let jobs = chain.jobs(Some(&customer), "").await?;
    let mine: Vec<&Job> = jobs.iter().filter(|j| j.created_height >= from).collect();
    let on_time = mine
        .iter()
        .filter(|j| {
            matches!(j.status, JobStatus::Succeeded | JobStatus::Settled)
                && j.updated_height <= j.deadline_height
        })
        .count();
    let refunded = mine
        .iter()
        .filter(|j| j.status == JobStatus::Refunded)
        .count();
    let disputed = mine
        .iter()
        .filter(|j| j.status == JobStatus::Failed)
        .count();
    let late = mine
        .iter()
        .filter(|j| {
            matches!(j.status, JobStatus::Pending | JobStatus::Assigned) && j.deadline_height < tip
        })
        .count();
    let open = mine
        .iter()
        .filter(|j| {
            matches!(j.status, JobStatus::Pending | JobStatus::Assigned) && j.deadline_height >= tip
        })
        .count();
    let mut r = ctx.report();
    r.field("customer", customer.to_string())
        .field("period", p.as_str())
        .field("jobs", mine.len());
    r.field("delivered_on_time", on_time)
        .field("refunded", refunded)
        .field("disputed", disputed)
        .field("overdue", late)
        .field("in_progress", open);
    let decided = on_time + refunded + disputed + late;
    let score = if decided == 0 {
        100.0
    } else {
        on_time as f64 / decided as f64 * 100.0
    };
    r.field("satisfaction", format!("{score:.1}%"));
    Ok(r)
}

/// Mean GPU utilization (0..1) over all agents in the last 5 minutes, from the scheduler.
pub async fn gpu_utilization(ctx: &Ctx) -> Option<f64> {
    let mut s = ctx.scheduler().await.ok()?;
    let resp = s
        .resource_utilization(spb::ResourceUtilizationRequest {
            agent_id: String::new(),
            period: "5m".into(),
            max_points: 0,
        })
        .await
        .ok()?
        .into_inner();
    let gpus: Vec<f64> = resp
        .agents
        .iter()
        .flat_map(|a| a.gpus.iter().map(|g| g.average_utilization_percent))
        .collect();
    if gpus.is_empty() {
        return None;
    }
    Some(gpus.iter().sum::<f64>() / gpus.len() as f64 / 100.0)
}

async fn optimize(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let wallet = need(&m.wallet, "--wallet", "optimize")?;
    need(&m.metric, "--metric utilization", "optimize")?;
    let provider = ctx.resolve_address(wallet)?;
    let chain = ctx.chain().await?;
    let all = chain.listings("", None).await?;
    let mine: Vec<_> = all.iter().filter(|l| l.owner == provider).collect();
    let w = scan::window(&chain, since(Period::H24)).await?;
    let mut demand: BTreeMap<String, usize> = BTreeMap::new();
    for t in w.txs.iter().filter(|t| t.applied()) {
        match &t.tx.tx.action {
            Action::PlaceBid { listing_id, .. }
            | Action::SubmitJob {
                listing_id: Some(listing_id),
                ..
            } => *demand.entry(listing_id.clone()).or_default() += 1,
            _ => {}
        }
    }
    let mut r = ctx.report();
    r.field("provider", provider.to_string())
        .field("metric", "utilization")
        .list("suggestions");
    let suggest = |r: &mut Report, s: String| {
        r.row("suggestions", format!("suggestion: {s}"), s.clone());
    };
    for l in &mine {
        let peers: Vec<&Amount> = all
            .iter()
            .filter(|x| x.service_type == l.service_type && x.owner != provider)
            .map(|x| &x.price)
            .collect();
        let d = demand.get(&l.id).copied().unwrap_or(0);
        if let Some(median) = median(&peers) {
            if l.price > median && d == 0 {
                suggest(&mut r, format!("{} ({}) is priced {} AIT above the {} median of {median} AIT and had no demand in 24h: lower it towards {median} AIT", l.id, l.name, l.price, l.service_type.as_str()));
            }
        }
        if d == 0 && l.bids == 0 && l.jobs == 0 {
            suggest(&mut r, format!("{} ({}) has never had a bid or job: add a --description and --parameters so customers find it in search", l.id, l.name));
        } else if d > 0 {
            r.row(
                "listings",
                format!("listing: {} demand_24h: {d}", l.id),
                json!({"service_id": l.id, "demand_24h": d}),
            );
        }
    }
    match ctx.scheduler().await {
        Ok(mut s) => {
            let agents = s
                .list_agents(spb::ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            let util = s
                .resource_utilization(spb::ResourceUtilizationRequest {
                    agent_id: String::new(),
                    period: "1h".into(),
                    max_points: 0,
                })
                .await?
                .into_inner();
            for a in agents.iter().filter(|a| a.owner == provider.to_string()) {
                let u = util
                    .agents
                    .iter()
                    .find(|x| x.agent_id == a.agent_id)
                    .map(|x| {
                        let g: Vec<f64> = x
                            .gpus
                            .iter()
                            .map(|g| g.average_utilization_percent)
                            .collect();
                        if g.is_empty() {
                            0.0
                        } else {
                            g.iter().sum::<f64>() / g.len() as f64
                        }
                    });
                let u = u.unwrap_or(0.0);
                r.row(
                    "agents",
                    format!("agent: {} utilization_1h: {u:.1}%", a.agent_id),
                    json!({"agent_id": a.agent_id, "utilization_1h": u}),
                );
                if u < 20.0 {
                    suggest(&mut r, format!("agent {} averaged {u:.1}% GPU utilization in 1h: lower prices of your listings or offer its GPUs as gpu-rental", a.agent_id));
                } else if u > 85.0 {
                    suggest(&mut r, format!("agent {} averaged {u:.1}% GPU utilization in 1h: raise prices (pricing --strategy dynamic --apply) or add an agent", a.agent_id));
                }
                if !a.healthy {
                    suggest(
                        &mut r,
                        format!(
                            "agent {} is unhealthy ({}): jobs cannot be placed on it",
                            a.agent_id, a.last_error
                        ),
                    );
                }
            }
            if !agents.iter().any(|a| {
                a.owner == provider.to_string()
                    || a.serves
                        .iter()
                        .any(|s| s == "any" || *s == provider.to_string())
            }) {
                suggest(&mut r, "no agent serves this provider: register one (RegisterAgent) or jobs on your listings cannot run".to_string());
            }
        }
        Err(e) => {
            r.text(format!("note: agent utilization unavailable: {e}"));
        }
    }
    if mine.is_empty() {
        suggest(
            &mut r,
            "the wallet has no active listings: create one with marketplace --action create".into(),
        );
    }
    Ok(r)
}

fn median(v: &[&Amount]) -> Option<Amount> {
    let mut s: Vec<Amount> = v.iter().map(|a| **a).collect();
    s.sort();
    s.get(s.len() / 2).copied().filter(|_| !s.is_empty())
}

struct NodeView {
    url: String,
    chain: ChainClient,
    status: aitbc_protocol::pb::NodeStatus,
    rtt_ms: f64,
}

async fn nodes(ctx: &Ctx) -> (Vec<NodeView>, Vec<(String, String)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for url in ctx.all_nodes() {
        let start = Instant::now();
        let res = async {
            let c = ctx.chain_at(&url).await?;
            let s = c.status().await?;
            Ok::<_, aitbc_protocol::client::ClientError>((c, s))
        }
        .await;
        match res {
            Ok((chain, status)) => ok.push(NodeView {
                url,
                chain,
                status,
                rtt_ms: start.elapsed().as_secs_f64() * 1000.0,
            }),
            Err(e) => bad.push((url, e.to_string())),
        }
    }
    (ok, bad)
}

async fn cross_node_stats(ctx: &Ctx, p: Period) -> Result<Report> {
    let (ok, bad) = nodes(ctx).await;
    let top = ok.iter().map(|n| n.status.height).max().unwrap_or(0);
    let mut r = ctx.report();
    r.field("period", p.as_str());
    for n in &ok {
        let w = scan::window(&n.chain, since(p)).await?;
        r.row(
            "nodes",
            format!("node: {} height: {} lag: {} blocks: {} transactions: {} mempool: {} peers: {}", n.url, n.status.height, top - n.status.height, w.blocks, w.txs.len(), n.status.mempool_size, n.status.peers_seen.len()),
            json!({"node": n.url, "height": n.status.height, "lag": top - n.status.height, "blocks": w.blocks, "transactions": w.txs.len(), "mempool": n.status.mempool_size, "peers": n.status.peers_seen.len()}),
        );
    }
    for (url, e) in &bad {
        r.row(
            "nodes",
            format!("node: {url} unreachable: {e}"),
            json!({"node": url, "error": e}),
        );
    }
    Ok(r)
}

async fn scheduler_metrics(ctx: &Ctx) -> Result<spb::SchedulerMetrics> {
    Ok(ctx
        .scheduler()
        .await?
        .get_metrics(spb::GetMetricsRequest {})
        .await?
        .into_inner())
}

async fn performance(ctx: &Ctx, p: Period) -> Result<Report> {
    let chain = ctx.chain().await?;
    let st = chain.status().await?;
    let w = scan::window(&chain, since(p)).await?;
    let mut r = ctx.report();
    r.field("period", p.as_str())
        .field("height", st.height)
        .field("blocks", w.blocks)
        .field("transactions", w.txs.len());
    let span_ms = match (w.block_times.first(), w.block_times.last()) {
        (Some(a), Some(b)) if b.1 > a.1 => (b.1 - a.1) as f64,
        _ => 0.0,
    };
    let tps = if span_ms > 0.0 {
        w.txs.len() as f64 / (span_ms / 1000.0)
    } else {
        0.0
    };
    r.field("tx_per_second", format!("{tps:.2}"));
    r.field(
        "mean_block_interval",
        format!(
            "{:.3}s",
            if w.blocks > 1 {
                span_ms / (w.blocks - 1) as f64 / 1000.0
            } else {
                0.0
            }
        ),
    );
    r.field(
        "target_block_time",
        format!("{:.3}s", st.block_time_ms as f64 / 1000.0),
    );
    r.field(
        "rejected_in_blocks",
        w.txs.iter().filter(|t| !t.applied()).count(),
    );
    r.field("mempool", st.mempool_size);
    match scheduler_metrics(ctx).await {
        Ok(s) => {
            r.field("jobs_dispatched", s.dispatched_total)
                .field("jobs_settled", s.settled_total)
                .field("jobs_refunded", s.refunds_total);
            r.field("dispatch_failures", s.dispatch_failures_total)
                .field("retries", s.retries_total)
                .field("queue_length", s.queue_length);
        }
        Err(e) => {
            r.text(format!("note: scheduler metrics unavailable: {e}"));
        }
    }
    Ok(r)
}

async fn latency(ctx: &Ctx, p: Period) -> Result<Report> {
    let chain = ctx.chain().await?;
    let w = scan::window(&chain, since(p)).await?;
    let mut intervals: Vec<f64> = w
        .block_times
        .windows(2)
        .map(|x| x[1].1.saturating_sub(x[0].1) as f64)
        .collect();
    intervals.sort_by(f64::total_cmp);
    let mut r = ctx.report();
    r.field("period", p.as_str()).field("blocks", w.blocks);
    let f = |v: Option<f64>| {
        v.map(|x| format!("{:.3}s", x / 1000.0))
            .unwrap_or_else(|| "n/a".into())
    };
    r.field("block_interval_p50", f(percentile(&intervals, 0.5)))
        .field("block_interval_p99", f(percentile(&intervals, 0.99)));
    // Job submit -> result, from the heights' block times.
    let mut submitted: BTreeMap<String, u64> = BTreeMap::new();
    let mut lat = Vec::new();
    for t in &w.txs {
        for e in t.events() {
            match e {
                Event::JobSubmitted { job_id, .. } => {
                    submitted.insert(job_id.clone(), t.time_ms);
                }
                Event::ResultReported { job_id, .. } => {
                    if let Some(s) = submitted.get(job_id) {
                        lat.push(t.time_ms.saturating_sub(*s) as f64);
                    }
                }
                _ => {}
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    r.field("jobs_measured", lat.len())
        .field("job_submit_to_result_p50", f(percentile(&lat, 0.5)))
        .field("job_submit_to_result_p99", f(percentile(&lat, 0.99)));
    match scheduler_metrics(ctx).await {
        Ok(s) => {
            r.field(
                "placement_latency_p50",
                format!("{:.1}ms", s.placement_latency_p50_ms),
            )
            .field(
                "placement_latency_p99",
                format!("{:.1}ms", s.placement_latency_p99_ms),
            );
        }
        Err(e) => {
            r.text(format!("note: scheduler metrics unavailable: {e}"));
        }
    }
    let (ok, _) = nodes(ctx).await;
    for n in &ok {
        r.row(
            "nodes",
            format!("node: {} rpc_round_trip: {:.1}ms", n.url, n.rtt_ms),
            json!({"node": n.url, "rpc_round_trip_ms": n.rtt_ms}),
        );
    }
    Ok(r)
}

async fn capacity(ctx: &Ctx) -> Result<Report> {
    let chain = ctx.chain().await?;
    let st = chain.status().await?;
    let mut r = ctx.report();
    r.field("validators", st.validators.len())
        .field("mempool", st.mempool_size);
    let mut s = ctx.scheduler().await?;
    let agents = s
        .list_agents(spb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    let (mut gt, mut gf, mut mt, mut mf) = (0u64, 0u64, 0u64, 0u64);
    for a in &agents {
        let inv = a.inventory.clone().unwrap_or_default();
        gt += u64::from(inv.gpus_total);
        gf += u64::from(inv.gpus_free);
        mt += inv.memory_total_mib;
        mf += inv.memory_free_mib;
        r.row(
            "agents",
            format!("agent: {} healthy: {} gpus: {}/{} free memory_mib: {}/{} free running_jobs: {} leases: {} simulated: {}", a.agent_id, a.healthy, inv.gpus_free, inv.gpus_total, inv.memory_free_mib, inv.memory_total_mib, a.running_jobs, a.active_leases, inv.simulated),
            json!({"agent_id": a.agent_id, "healthy": a.healthy, "gpus_total": inv.gpus_total, "gpus_free": inv.gpus_free, "memory_total_mib": inv.memory_total_mib, "memory_free_mib": inv.memory_free_mib, "running_jobs": a.running_jobs, "leases": a.active_leases, "simulated": inv.simulated}),
        );
    }
    let m = s.get_metrics(spb::GetMetricsRequest {}).await?.into_inner();
    r.field("agents", agents.len())
        .field("gpus_total", gt)
        .field("gpus_free", gf)
        .field("memory_total_mib", mt)
        .field("memory_free_mib", mf);
    r.field("job_queue", m.queue_length);
    r.field(
        "gpu_capacity_used",
        format!(
            "{:.1}%",
            if gt == 0 {
                0.0
            } else {
                (gt - gf) as f64 / gt as f64 * 100.0
            }
        ),
    );
    Ok(r)
}

async fn health(ctx: &Ctx) -> Result<Report> {
    let (ok, bad) = nodes(ctx).await;
    let total = ok.len() + bad.len();
    let mut r = ctx.report();
    for n in &ok {
        r.row(
            "nodes",
            format!(
                "node: {} height: {} syncing: {} peers: {}",
                n.url,
                n.status.height,
                n.status.syncing,
                n.status.peers_seen.len()
            ),
            json!({"node": n.url, "height": n.status.height, "syncing": n.status.syncing}),
        );
    }
    r.check(
        "nodes-up",
        bad.is_empty(),
        format!(
            "{}/{total} nodes answer{}",
            ok.len(),
            bad.iter()
                .map(|(u, e)| format!("; {u}: {e}"))
                .collect::<String>()
        ),
    );
    let syncing: Vec<&str> = ok
        .iter()
        .filter(|n| n.status.syncing)
        .map(|n| n.url.as_str())
        .collect();
    r.check(
        "nodes-synced",
        syncing.is_empty(),
        if syncing.is_empty() {
            "no node is syncing".to_string()
        } else {
            format!("syncing: {}", syncing.join(", "))
        },
    );
    let (lo, hi) = (
        ok.iter().map(|n| n.status.height).min().unwrap_or(0),
        ok.iter().map(|n| n.status.height).max().unwrap_or(0),
    );
    r.check("heights-close", hi - lo <= 5, format!("heights {lo}..{hi}"));
    let agree = hashes_agree(&ok, lo).await?;
    r.check("nodes-agree", agree.0, agree.1);
    let before = ok.first().map(|n| n.status.height).unwrap_or(0);
    if let Some(n) = ok.first() {
        tokio::time::sleep(std::time::Duration::from_millis(
            n.status.block_time_ms.clamp(100, 5000) * 3,
        ))
        .await;
        let after = n.chain.status().await?.height;
        r.check(
            "chain-advancing",
            after > before,
            format!("height {before} -> {after} on {}", n.url),
        );
    }
    match ctx.scheduler().await {
        Ok(mut s) => {
            let agents = s
                .list_agents(spb::ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            r.check(
                "scheduler-up",
                true,
                format!("{} agents known", agents.len()),
            );
            let sick: Vec<String> = agents
                .iter()
                .filter(|a| !a.healthy)
                .map(|a| format!("{}: {}", a.agent_id, a.last_error))
                .collect();
            r.check(
                "agents-healthy",
                sick.is_empty(),
                if sick.is_empty() {
                    format!("{} agents healthy", agents.len())
                } else {
                    sick.join("; ")
                },
            );
        }
        Err(e) if ctx.config.scheduler.is_some() => {
            r.check("scheduler-up", false, e.to_string());
        }
        Err(_) => {
            r.text("note: no scheduler configured; scheduler and agents not checked");
        }
    }
    Ok(r)
}

async fn hashes_agree(ok: &[NodeView], h: u64) -> Result<(bool, String)> {
    if ok.is_empty() || h == 0 {
        return Ok((
            ok.len() <= 1,
            format!("no common height to compare (height {h})"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut roots = BTreeSet::new();
    for n in ok {
        let b = n.chain.block(h).await?;
        seen.insert(b.hash);
        roots.insert(b.state_root);
    }
    Ok((
        seen.len() == 1 && roots.len() == 1,
        format!(
            "block hash and state root at height {h} equal on {} nodes ({} distinct)",
            ok.len(),
            seen.len().max(roots.len())
        ),
    ))
}

async fn connectivity(ctx: &Ctx) -> Result<Report> {
    let (ok, bad) = nodes(ctx).await;
    let mut r = ctx.report();
    for n in &ok {
        r.check(
            &format!("node {}", n.url),
            true,
            format!(
                "answered in {:.1}ms, sees {} peers",
                n.rtt_ms,
                n.status.peers_seen.len()
            ),
        );
    }
    for (u, e) in &bad {
        r.check(&format!("node {u}"), false, e.clone());
    }
    if let Some(url) = ctx.config.scheduler.clone() {
        let start = Instant::now();
        match ctx.scheduler().await {
            Ok(mut s) => match s.get_metrics(spb::GetMetricsRequest {}).await {
                Ok(_) => {
                    r.check(
                        &format!("scheduler {url}"),
                        true,
                        format!(
                            "answered in {:.1}ms",
                            start.elapsed().as_secs_f64() * 1000.0
                        ),
                    );
                }
                Err(e) => {
                    r.check(&format!("scheduler {url}"), false, e.message().to_string());
                }
            },
            Err(e) => {
                r.check(&format!("scheduler {url}"), false, e.to_string());
            }
        }
    }
    for (id, url) in &ctx.config.agents {
        let start = Instant::now();
        match crate::commands::ai::agent_client(url).await {
            Ok(mut a) => match a
                .get_status(aitbc_protocol::agent_pb::GetStatusRequest {})
                .await
            {
                Ok(_) => {
                    r.check(
                        &format!("agent {id} {url}"),
                        true,
                        format!(
                            "answered in {:.1}ms",
                            start.elapsed().as_secs_f64() * 1000.0
                        ),
                    );
                }
                Err(e) => {
                    r.check(&format!("agent {id} {url}"), false, e.message().to_string());
                }
            },
            Err(e) => {
                r.check(&format!("agent {id} {url}"), false, e.to_string());
            }
        }
    }
    Ok(r)
}

async fn integrity(ctx: &Ctx) -> Result<Report> {
    let (ok, bad) = nodes(ctx).await;
    let mut r = ctx.report();
    r.check(
        "nodes-reachable",
        bad.is_empty(),
        format!("{}/{} nodes", ok.len(), ok.len() + bad.len()),
    );
    let lo = ok.iter().map(|n| n.status.height).min().unwrap_or(0);
    // Compare a spread of heights (newest first), each block hash and state root.
    let mut heights: BTreeSet<u64> = BTreeSet::new();
    let mut h = lo;
    let mut step = 1;
    while h > 0 && heights.len() < 16 {
        heights.insert(h);
        h = h.saturating_sub(step);
        step *= 2;
    }
    if lo > 0 {
        heights.insert(1);
    }
    let mut mismatches = Vec::new();
    for h in &heights {
        let (agree, _) = hashes_agree(&ok, *h).await?;
        if !agree {
            mismatches.push(h.to_string());
        }
    }
    r.check(
        "block-hashes-and-state-roots",
        mismatches.is_empty() && !heights.is_empty(),
        format!(
            "{} heights compared up to {lo}; mismatched at: {}",
            heights.len(),
            if mismatches.is_empty() {
                "none".into()
            } else {
                mismatches.join(",")
            }
        ),
    );
    let mut not_conserved = Vec::new();
    for n in &ok {
        if !n.chain.supply().await?.conserved {
            not_conserved.push(n.url.clone());
        }
    }
    r.check(
        "supply-conserved-everywhere",
        not_conserved.is_empty(),
        if not_conserved.is_empty() {
            format!("{} nodes", ok.len())
        } else {
            not_conserved.join(", ")
        },
    );
    Ok(r)
}

async fn debug(ctx: &Ctx, id: &str) -> Result<Report> {
    let hash = parse_hash(id)?;
    let chain = ctx.chain().await?;
    let info = match chain.transaction(&hash, true).await {
        Err(aitbc_protocol::client::ClientError::NotFound(_)) => {
            return Err(anyhow!(
                "transaction {hash} is unknown to the node at {}: check the hash",
                chain.endpoint()
            ))
        }
        r => r?,
    };
    let mut r = ctx.report();
    r.field("tx_hash", hash.to_hex())
        .field("status", &info.status)
        .field("block", info.height)
        .field("index", info.index);
    r.field("confirmations", info.confirmations)
        .field("block_hash", &info.block_hash);
    if !info.error.is_empty() {
        r.field("reason", &info.error);
    }
    if let Ok(stx) = SignedTransaction::decode(&info.transaction) {
        let t = &stx.tx;
        r.field("chain_id", &t.chain_id)
            .field("sender", t.sender_address().to_string())
            .field("sender_key", t.sender.to_hex());
        r.field("nonce", t.nonce)
            .amount("fee", t.fee)
            .field("action", t.action.name());
        r.field("signature_valid", stx.verify_signature().is_ok());
        r.field(
            "summary",
            describe(
                &stx,
                borsh::from_slice::<TxReceipt>(&info.receipt).ok().as_ref(),
            ),
        );
        r.data("action_detail", &t.action);
    }
    if let Ok(rc) = borsh::from_slice::<TxReceipt>(&info.receipt) {
        r.amount("fee_paid", rc.fee_paid);
        for e in &rc.events {
            r.row(
                "events",
                format!("event: {}", serde_json::to_string(e).unwrap_or_default()),
                e,
            );
        }
    }
    if info.status != "pending" {
        if let Ok(b) = chain.block(info.height).await {
            r.field("block_time_ms", b.time_ms)
                .field("proposer", &b.proposer);
        }
    }
    let mut holders = 0;
    let all = ctx.all_nodes();
    for url in &all {
        if let Ok(c) = ctx.chain_at(url).await {
            if c.transaction(&hash, false).await.is_ok() {
                holders += 1;
            }
        }
    }
    r.field("nodes_holding", format!("{holders}/{}", all.len()));
    Ok(r)
}
