//! `marketplace --action ...`: listings, bids and settlement. Analytics, audits and load tests
//! are in `analytics.rs`, `audit.rs` and `load.rs`.

use crate::cli::{Action as A, MarketplaceArgs, Strategy};
use crate::commands::{analytics, audit, load};
use crate::context::{created_id, Ctx};
use crate::output::{with_amounts, Report};
use aitbc_protocol::client::{ChainClient, ClientError};
use aitbc_protocol::model::{Bid, BidStatus, Listing};
use aitbc_protocol::tx::{object_id, Action, Runtime};
use aitbc_protocol::Amount;
use anyhow::{anyhow, bail, Result};
use serde_json::json;

/// The value of a flag an action needs, or an error naming the flag.
pub fn need<'a, T>(v: &'a Option<T>, flag: &str, action: &str) -> Result<&'a T> {
    v.as_ref().ok_or_else(|| {
        anyhow!("marketplace --action {action} needs {flag}; see `aitbc-cli marketplace --help`")
    })
}

pub fn action_name(a: A) -> String {
    use clap::ValueEnum;
    a.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

pub async fn run(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    match m.action {
        A::Create => create(ctx, m).await,
        A::List | A::Search => list(ctx, m).await,
        A::MyListings => my_listings(ctx, m).await,
        A::Bid => bid(ctx, m).await,
        A::AcceptBid | A::RejectBid => decide_bid(ctx, m).await,
        A::CancelBid => cancel_bid(ctx, m).await,
        A::PendingBids => pending_bids(ctx, m).await,
        A::SettlePayment => settle_payment(ctx, m).await,
        A::Close => close(ctx, m).await,
        A::Update => update(ctx, m).await,
        A::Pricing => pricing(ctx, m).await,
        A::VerifySettlement
        | A::Audit
        | A::FinancialAudit
        | A::Reconcile
        | A::PaymentVerify
        | A::ComplianceCheck
        | A::RegulatoryAudit
        | A::PrivacyAudit => audit::run(ctx, m).await,
        A::Transactions
        | A::Revenue
        | A::Volume
        | A::VerifyProvider
        | A::QualityMetrics
        | A::Satisfaction
        | A::Optimize
        | A::CrossNodeStats
        | A::PerformanceMetrics
        | A::LatencyMetrics
        | A::CapacityMetrics
        | A::HealthCheck
        | A::ConnectivityTest
        | A::IntegrityCheck
        | A::Debug => analytics::run(ctx, m).await,
        A::StressTest | A::ThroughputTest | A::AiThroughputTest => load::run(ctx, m).await,
    }
}

/// `k:v,k:v` into pairs. A segment without a colon continues the previous value, so a value may
/// hold commas: `data_format:csv,json,xml,output_format:reports` is two parameters.
pub fn parse_parameters(s: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match (part.split_once(':'), out.last_mut()) {
            (Some((k, v)), _) => {
                if k.trim().is_empty() {
                    bail!("--parameters {s:?}: a key is empty (write \"k:v,k:v\")");
                }
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
            (None, Some((_, v))) => {
                v.push(',');
                v.push_str(part);
            }
            (None, None) => {
                bail!("--parameters {s:?}: it starts with {part:?}, which is not key:value (write \"k:v,k:v\")")
            }
        }
    }
    Ok(out)
}

/// The listing, or an error that says how to find valid ids.
pub async fn listing(chain: &ChainClient, id: &str) -> Result<Listing> {
    match chain.listing(id).await {
        Ok(l) => Ok(l),
        Err(ClientError::NotFound(_)) => {
            bail!("unknown service {id}: see `aitbc-cli marketplace --action list` for service ids")
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn bid_of(chain: &ChainClient, id: &str) -> Result<Bid> {
    match chain.bid(id).await {
        Ok(b) => Ok(b),
        Err(ClientError::NotFound(_)) => {
            bail!("unknown bid {id}: see `aitbc-cli marketplace --action pending-bids` for bid ids")
        }
        Err(e) => Err(e.into()),
    }
}

pub fn listing_line(l: &Listing) -> String {
    format!(
        "service_id: {} name: {} type: {} price: {} AIT provider: {} bids: {} jobs: {} active: {}",
        l.id,
        l.name,
        l.service_type.as_str(),
        l.price,
        l.owner,
        l.bids,
        l.jobs,
        l.active
    )
}

pub fn listing_json(l: &Listing) -> serde_json::Value {
    let v = json!({
        "service_id": l.id, "name": l.name, "type": l.service_type.as_str(), "price": l.price,
        "provider": l.owner, "description": l.description, "parameters": l.parameters,
        "active": l.active, "bids": l.bids, "jobs": l.jobs, "revenue": l.revenue, "created_height": l.created_height,
    });
    with_amounts(v, &[("price", l.price), ("revenue", l.revenue)])
}

pub fn bid_line(b: &Bid) -> String {
    format!(
        "bid_id: {} service_id: {} bidder: {} amount: {} AIT status: {}",
        b.id,
        b.listing_id,
        b.bidder,
        b.amount,
        b.status.as_str()
    )
}

pub fn bid_json(b: &Bid) -> serde_json::Value {
    let v = json!({"bid_id": b.id, "service_id": b.listing_id, "bidder": b.bidder, "amount": b.amount, "status": b.status.as_str(), "created_height": b.created_height});
    with_amounts(v, &[("amount", b.amount)])
}

async fn create(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let act = "create";
    let name = need(&m.name, "--name", act)?;
    let service_type = *need(&m.service_type, "--type", act)?;
    let price = *need(&m.price, "--price", act)?;
    let wallet = need(&m.wallet, "--wallet", act)?;
    if price.is_zero() {
        bail!("--price must be greater than zero");
    }
    let parameters = m
        .parameters
        .as_deref()
        .map(parse_parameters)
        .transpose()?
        .unwrap_or_default();
    let runtime = Runtime {
        command: m
            .runtime_command
            .as_deref()
            .map(|c| c.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        ..Default::default()
    };
    let chain = ctx.chain().await?;
    let key = ctx.unlock(wallet)?;
    let action = Action::CreateListing {
        name: name.clone(),
        service_type,
        price,
        description: m.description.clone().unwrap_or_default(),
        parameters,
        runtime,
    };
    let sent = ctx.send(&chain, &key, action).await?;
    let id = sent
        .receipt()
        .and_then(|r| created_id(r, "svc"))
        .unwrap_or_else(|| object_id("svc", &sent.hash));
    let mut r = ctx.report();
    r.field("service_id", &id)
        .field("name", name)
        .field("type", service_type.as_str())
        .amount("price", price);
    r.field("provider", key.address().to_string());
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

async fn list(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let chain = ctx.chain().await?;
    let q = m.query.clone().unwrap_or_default();
    // Word search is done here, over all active listings (the node matches one literal substring).
    let mut listings = crate::search::rank(&q, chain.listings("", None).await?);
    if let Some(t) = m.service_type {
        listings.retain(|l| l.service_type == t);
    }
    let mut r = ctx.report();
    r.list("listings");
    for l in &listings {
        r.row("listings", listing_line(l), listing_json(l));
    }
    if listings.is_empty() && ctx.format == crate::output::Format::Text {
        eprintln!(
            "no active listings{}",
            if q.is_empty() {
                String::new()
            } else {
                format!(" match {q:?}")
            }
        );
    }
    Ok(r)
}

async fn my_listings(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let wallet = need(&m.wallet, "--wallet", "my-listings")?;
    let owner = ctx.resolve_address(wallet)?;
    let chain = ctx.chain().await?;
    let listings = chain.listings("", Some(&owner)).await?;
    let mut r = ctx.report();
    r.field("provider", owner.to_string()).list("listings");
    for l in &listings {
        let bids = chain.bids(&l.id, None, "").await?;
        let pending = bids
            .iter()
            .filter(|b| b.status == BidStatus::Pending)
            .count();
        let line = format!(
            "{} pending_bids: {} revenue: {} AIT",
            listing_line(l),
            pending,
            l.revenue
        );
        let mut j = listing_json(l);
        j["pending_bids"] = json!(pending);
        r.row("listings", line, j);
    }
    Ok(r)
}

async fn bid(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let act = "bid";
    let sid = need(&m.service_id, "--service-id", act)?;
    let amount = *need(&m.amount, "--amount", act)?;
    let wallet = need(&m.wallet, "--wallet", act)?;
    let chain = ctx.chain().await?;
    let l = listing(&chain, sid).await?;
    if !l.active {
        bail!("service {sid} is closed; pick an active one from `aitbc-cli marketplace --action list`");
    }
    if amount < l.price {
        bail!("bid of {amount} AIT is below the price of service {sid} ({} AIT); bid at least the price", l.price);
    }
    let key = ctx.unlock(wallet)?;
    let sent = ctx
        .send(
            &chain,
            &key,
            Action::PlaceBid {
                listing_id: sid.clone(),
                amount,
            },
        )
        .await?;
    let id = sent
        .receipt()
        .and_then(|r| created_id(r, "bid"))
        .unwrap_or_else(|| object_id("bid", &sent.hash));
    let mut r = ctx.report();
    r.field("bid_id", &id)
        .field("service_id", sid)
        .amount("amount", amount)
        .field("status", "pending");
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

async fn decide_bid(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let act = action_name(m.action);
    let bid_id = need(&m.bid_id, "--bid-id", &act)?;
    let wallet = need(&m.wallet, "--wallet", &act)?;
    let chain = ctx.chain().await?;
    let b = bid_of(&chain, bid_id).await?;
    if let Some(sid) = &m.service_id {
        if &b.listing_id != sid {
            bail!("bid {bid_id} is on service {}, not {sid}", b.listing_id);
        }
    }
    let key = ctx.unlock(wallet)?;
    let accept = m.action == A::AcceptBid;
    let action = if accept {
        Action::AcceptBid {
            bid_id: bid_id.clone(),
        }
    } else {
        Action::RejectBid {
            bid_id: bid_id.clone(),
        }
    };
    let sent = ctx.send(&chain, &key, action).await?;
    let mut r = ctx.report();
    r.field("bid_id", bid_id)
        .field("service_id", &b.listing_id)
        .field("status", if accept { "accepted" } else { "rejected" });
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

async fn cancel_bid(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let bid_id = need(&m.bid_id, "--bid-id", "cancel-bid")?;
    let wallet = need(&m.wallet, "--wallet", "cancel-bid")?;
    let chain = ctx.chain().await?;
    bid_of(&chain, bid_id).await?;
    let key = ctx.unlock(wallet)?;
    let sent = ctx
        .send(
            &chain,
            &key,
            Action::CancelBid {
                bid_id: bid_id.clone(),
            },
        )
        .await?;
    let mut r = ctx.report();
    r.field("bid_id", bid_id).field("status", "cancelled");
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

async fn pending_bids(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let chain = ctx.chain().await?;
    let mut bids = Vec::new();
    match (&m.service_id, &m.wallet) {
        (Some(sid), _) => {
            listing(&chain, sid).await?;
            bids = chain.bids(sid, None, "pending").await?;
        }
        (None, Some(w)) => {
            // The provider's view: pending bids on the wallet's listings.
            let owner = ctx.resolve_address(w)?;
            for l in chain.listings("", Some(&owner)).await? {
                bids.extend(chain.bids(&l.id, None, "pending").await?);
            }
        }
        (None, None) => bids = chain.bids("", None, "pending").await?,
    }
    let mut r = ctx.report();
    r.list("bids");
    for b in &bids {
        r.row("bids", bid_line(b), bid_json(b));
    }
    Ok(r)
}

async fn settle_payment(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let act = "settle-payment";
    let sid = need(&m.service_id, "--service-id", act)?;
    let wallet = need(&m.wallet, "--wallet", act)?;
    let chain = ctx.chain().await?;
    listing(&chain, sid).await?;
    let bidder = ctx.resolve_address(wallet)?;
    let accepted = chain.bids(sid, Some(&bidder), "accepted").await?;
    let chosen = match (&m.bid_id, m.amount) {
        (Some(id), _) => accepted.iter().find(|b| &b.id == id),
        (None, Some(a)) => accepted.iter().find(|b| b.amount == a),
        (None, None) => accepted.first(),
    };
    let Some(b) = chosen.cloned() else {
        let pending = chain.bids(sid, Some(&bidder), "pending").await?;
        let hint = if pending.is_empty() {
            String::new()
        } else {
            format!(
                " ({} of its bids still await the provider's accept-bid)",
                pending.len()
            )
        };
        let amt = m.amount.map(|a| format!(" of {a} AIT")).unwrap_or_default();
        bail!("wallet {wallet} has no accepted bid{amt} on service {sid}{hint}");
    };
    let key = ctx.unlock(wallet)?;
    let sent = ctx
        .send(
            &chain,
            &key,
            Action::SettleBid {
                bid_id: b.id.clone(),
            },
        )
        .await?;
    let mut r = ctx.report();
    r.field("bid_id", &b.id)
        .field("service_id", sid)
        .amount("amount", b.amount);
    if let Some(rc) = sent.receipt() {
        for e in &rc.events {
            if let aitbc_protocol::model::Event::BidSettled {
                provider,
                paid,
                fee_burned,
                ..
            } = e
            {
                r.field("provider", provider.to_string())
                    .amount("paid", *paid)
                    .amount("fee_burned", *fee_burned);
            }
        }
    }
    r.field(
        "status",
        if sent.committed.is_some() {
            "settled"
        } else {
            "submitted"
        },
    );
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

async fn close(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let sid = need(&m.service_id, "--service-id", "close")?;
    let wallet = need(&m.wallet, "--wallet", "close")?;
    let chain = ctx.chain().await?;
    listing(&chain, sid).await?;
    let key = ctx.unlock(wallet)?;
    let sent = ctx
        .send(
            &chain,
            &key,
            Action::CloseListing {
                listing_id: sid.clone(),
            },
        )
        .await?;
    let mut r = ctx.report();
    r.field("service_id", sid).field("status", "closed");
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

async fn update(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let sid = need(&m.service_id, "--service-id", "update")?;
    let wallet = need(&m.wallet, "--wallet", "update")?;
    if m.price.is_none() && m.description.is_none() {
        bail!("marketplace --action update needs --price and/or --description");
    }
    let chain = ctx.chain().await?;
    listing(&chain, sid).await?;
    let key = ctx.unlock(wallet)?;
    let action = Action::UpdateListing {
        listing_id: sid.clone(),
        price: m.price,
        description: m.description.clone(),
        runtime: None,
    };
    let sent = ctx.send(&chain, &key, action).await?;
    let mut r = ctx.report();
    r.field("service_id", sid);
    if let Some(p) = m.price {
        r.amount("price", p);
    }
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

/// Dynamic pricing: demand (bids and jobs on the listing in the last 24 h against the mean of
/// listings of its type) and GPU utilization (scheduler) move the price by at most ±50 %.
async fn pricing(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let sid = need(&m.service_id, "--service-id", "pricing")?;
    let strategy = *need(&m.strategy, "--strategy fixed|dynamic", "pricing")?;
    let chain = ctx.chain().await?;
    let l = listing(&chain, sid).await?;
    let mut r = ctx.report();
    r.field("service_id", sid).field(
        "strategy",
        if strategy == Strategy::Fixed {
            "fixed"
        } else {
            "dynamic"
        },
    );
    r.amount("current_price", l.price);
    if strategy == Strategy::Fixed {
        r.amount("suggested_price", l.price);
        return Ok(r);
    }
    let since = crate::period::Period::H24.since_ms(crate::keystore::now_ms());
    let w = crate::scan::window(&chain, since).await?;
    let same_type: Vec<Listing> = chain
        .listings("", None)
        .await?
        .into_iter()
        .filter(|x| x.service_type == l.service_type)
        .collect();
    let demand_of = |id: &str| {
        w.txs
            .iter()
            .filter(|t| t.applied())
            .filter(|t| match &t.tx.tx.action {
                Action::PlaceBid { listing_id, .. } => listing_id == id,
                Action::SubmitJob {
                    listing_id: Some(lid),
                    ..
                } => lid == id,
                _ => false,
            })
            .count() as f64
    };
    let mine = demand_of(&l.id);
    let mean = if same_type.is_empty() {
        0.0
    } else {
        same_type.iter().map(|x| demand_of(&x.id)).sum::<f64>() / same_type.len() as f64
    };
    let demand_factor = if mean > 0.0 {
        (mine / mean).clamp(0.5, 2.0)
    } else {
        1.0
    };
    let utilization = analytics::gpu_utilization(ctx).await;
    let util_factor = match utilization {
        Some(u) => 0.75 + u / 2.0,
        None => 1.0,
    };
    let factor = (demand_factor.sqrt() * util_factor).clamp(0.5, 1.5);
    let suggested = scale(l.price, factor);
    r.field(
        "demand_24h",
        format!("{mine} bids+jobs (type mean {mean:.2})"),
    );
    r.field(
        "gpu_utilization",
        utilization
            .map(|u| format!("{:.1}%", u * 100.0))
            .unwrap_or_else(|| "unknown (no scheduler reachable)".into()),
    );
    r.field("factor", format!("{factor:.3}"));
    r.amount("suggested_price", suggested);
    if m.apply {
        let wallet = need(&m.wallet, "--wallet", "pricing --apply")?;
        if suggested == l.price {
            r.field("applied", "no (price unchanged)");
        } else {
            let key = ctx.unlock(wallet)?;
            let action = Action::UpdateListing {
                listing_id: sid.clone(),
                price: Some(suggested),
                description: None,
                runtime: None,
            };
            let sent = ctx.send(&chain, &key, action).await?;
            r.field("applied", "yes");
            ctx.report_sent(&mut r, &sent);
        }
    }
    Ok(r)
}

/// `price × factor`, rounded to whole micro-AIT, never zero.
pub fn scale(price: Amount, factor: f64) -> Amount {
    let v = (price.0 as f64 * factor).round();
    Amount((v as u128).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_and_errors_say_what_is_wrong() {
        assert_eq!(
            parse_parameters("gpu:a100, vram:80").unwrap(),
            vec![("gpu".into(), "a100".into()), ("vram".into(), "80".into())]
        );
        assert_eq!(parse_parameters("").unwrap(), vec![]);
        assert!(parse_parameters("novalue")
            .unwrap_err()
            .to_string()
            .contains("key:value"));
        assert!(parse_parameters(":x").is_err());
        assert!(parse_parameters("a:1,:x").is_err());
    }

    #[test]
    fn a_segment_without_a_colon_continues_the_previous_value() {
        // The old scripts' command line, verbatim.
        assert_eq!(
            parse_parameters("data_format:csv,json,xml,output_format:reports").unwrap(),
            vec![
                ("data_format".into(), "csv,json,xml".into()),
                ("output_format".into(), "reports".into())
            ]
        );
        assert_eq!(
            parse_parameters("models:a, b ,,c").unwrap(),
            vec![("models".into(), "a,b,c".into())]
        );
        // Only the first colon splits: the rest belongs to the value.
        assert_eq!(
            parse_parameters("url:http://x:80").unwrap(),
            vec![("url".into(), "http://x:80".into())]
        );
    }

    #[test]
    fn listing_lines_hold_id_name_type_price_provider() {
        let owner = aitbc_protocol::Keypair::generate().address();
        let l = Listing {
            id: "svc-0123456789abcdef".into(),
            owner,
            name: "Test AI Service".into(),
            service_type: aitbc_protocol::tx::ServiceType::AiInference,
            price: "10".parse().unwrap(),
            description: String::new(),
            parameters: vec![],
            runtime: Runtime::default(),
            active: true,
            created_height: 1,
            bids: 0,
            jobs: 0,
            revenue: Amount::ZERO,
        };
        let line = listing_line(&l);
        assert!(line.starts_with("service_id: svc-0123456789abcdef "));
        assert_eq!(line.split(' ').nth(1), Some("svc-0123456789abcdef"));
        for part in [
            "Test AI Service",
            "ai-inference",
            "10 AIT",
            &owner.to_string(),
        ] {
            assert!(line.contains(part), "{line}");
        }
    }

    #[test]
    fn scaling_prices_rounds_and_never_reaches_zero() {
        assert_eq!(scale("10".parse().unwrap(), 1.5).to_string(), "15");
        assert_eq!(scale(Amount(1), 0.1), Amount(1));
    }
}
