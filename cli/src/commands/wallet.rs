//! `create`, `list`, `balance`, `send`, `transactions`.

use crate::cli::TransactionsArgs;
use crate::context::Ctx;
use crate::output::Report;
use crate::password;
use crate::scan;
use aitbc_protocol::client::ChainClient;
use aitbc_protocol::model::TxReceipt;
use aitbc_protocol::tx::{Action, SignedTransaction};
use aitbc_protocol::Amount;
use anyhow::{Context as _, Result};
use serde_json::json;
use std::collections::BTreeMap;

pub fn create(ctx: &Ctx, name: &str) -> Result<Report> {
    let path = ctx.keystore.path_of(name)?;
    if path.exists() {
        return Err(crate::keystore::KeystoreError::Exists(name.to_string()).into());
    }
    let pw = password::resolve(ctx.password.as_deref(), name)?;
    let info = ctx.keystore.create(name, &pw)?;
    let mut r = ctx.report();
    r.field("name", &info.name)
        .field("address", info.address.to_string())
        .field("keystore", path.display().to_string());
    Ok(r)
}

pub fn list(ctx: &Ctx) -> Result<Report> {
    let mut r = ctx.report();
    r.list("wallets");
    for w in ctx.keystore.list()? {
        r.row("wallets", format!("{}: {}", w.name, w.address), &w);
    }
    Ok(r)
}

pub async fn balance(ctx: &Ctx, name: &str) -> Result<Report> {
    let a = ctx.resolve_address(name)?;
    let chain = ctx.chain().await?;
    let info = chain.account(&a).await?;
    let balance = node_amount("balance", &info.balance)?;
    let escrowed = node_amount("escrowed", &info.escrowed)?;
    let mut r = ctx.report();
    r.field("name", name)
        .field("address", a.to_string())
        .amount("balance", balance)
        .amount("escrowed", escrowed)
        .field("nonce", info.nonce);
    Ok(r)
}

/// An amount the node reports as a decimal string.
fn node_amount(what: &str, s: &str) -> Result<Amount> {
    s.parse()
        .with_context(|| format!("the node reported a {what} of {s:?}, which is not an amount"))
}

pub async fn send(ctx: &Ctx, from: &str, to: &str, amount: Amount) -> Result<Report> {
    let to_addr = ctx.resolve_address(to)?;
    if amount.is_zero() {
        anyhow::bail!("--amount must be greater than zero");
    }
    let chain = ctx.chain().await?;
    let key = ctx.unlock(from)?;
    let sent = ctx
        .send(
            &chain,
            &key,
            Action::Transfer {
                to: to_addr,
                amount,
            },
        )
        .await?;
    let mut r = ctx.report();
    r.field("from", key.address().to_string())
        .field("to", to_addr.to_string())
        .amount("amount", amount);
    ctx.report_sent(&mut r, &sent);
    Ok(r)
}

/// One line of history: what the transaction did as seen by `me`.
pub fn describe(stx: &SignedTransaction, receipt: Option<&TxReceipt>) -> String {
    use aitbc_protocol::model::Event;
    let action = &stx.tx.action;
    let mut s = action.name().to_string();
    match action {
        Action::Transfer { to, amount } => s.push_str(&format!(" {amount} AIT to {to}")),
        Action::CreateListing { name, price, .. } => {
            s.push_str(&format!(" {name:?} at {price} AIT"))
        }
        Action::PlaceBid { listing_id, amount } => {
            s.push_str(&format!(" {amount} AIT on {listing_id}"))
        }
        Action::AcceptBid { bid_id }
        | Action::RejectBid { bid_id }
        | Action::CancelBid { bid_id }
        | Action::SettleBid { bid_id } => s.push_str(&format!(" {bid_id}")),
        Action::SubmitJob {
            payment,
            listing_id,
            ..
        } => {
            s.push_str(&format!(" {payment} AIT"));
            if let Some(l) = listing_id {
                s.push_str(&format!(" on {l}"));
            }
        }
        Action::SettleJob { job_id }
        | Action::RefundJob { job_id }
        | Action::CancelJob { job_id }
        | Action::AssignJob { job_id, .. } => s.push_str(&format!(" {job_id}")),
        _ => {}
    }
    if let Some(r) = receipt {
        for e in &r.events {
            match e {
                Event::ListingCreated { listing_id, .. } => {
                    s.push_str(&format!(" -> {listing_id}"))
                }
                Event::BidPlaced { bid_id, .. } => s.push_str(&format!(" -> {bid_id}")),
                Event::JobSubmitted { job_id, .. } => s.push_str(&format!(" -> {job_id}")),
                Event::BidSettled {
                    paid, fee_burned, ..
                }
                | Event::JobSettled {
                    paid, fee_burned, ..
                } => s.push_str(&format!(" (paid {paid} AIT, fee {fee_burned} AIT)")),
                Event::JobRefunded { refunded, .. } => {
                    s.push_str(&format!(" (refunded {refunded} AIT)"))
                }
                _ => {}
            }
        }
    }
    s
}

pub async fn transactions(ctx: &Ctx, a: &TransactionsArgs) -> Result<Report> {
    if a.cross_node {
        return cross_node(ctx, a).await;
    }
    let name = a
        .name
        .as_deref()
        .context("transactions needs --name N (or --cross-node --period P)")?;
    let addr = ctx.resolve_address(name)?;
    let chain = ctx.chain().await?;
    let hist = chain.history(&addr, a.limit.max(1)).await?;
    let mut r = ctx.report();
    r.field("address", addr.to_string()).list("transactions");
    for info in hist {
        let stx = SignedTransaction::decode(&info.transaction).ok();
        let receipt: Option<TxReceipt> = borsh::from_slice(&info.receipt).ok();
        let what = stx
            .as_ref()
            .map(|s| describe(s, receipt.as_ref()))
            .unwrap_or_default();
        let status = if info.error.is_empty() {
            info.status.clone()
        } else {
            format!("rejected ({})", info.error)
        };
        let from = stx
            .as_ref()
            .map(|s| s.tx.sender_address().to_string())
            .unwrap_or_default();
        r.row(
            "transactions",
            format!("tx_hash: {} block: {} status: {} from: {} action: {}", info.tx_hash, info.height, status, from, what),
            json!({"tx_hash": info.tx_hash, "block": info.height, "status": info.status, "error": info.error, "from": from, "action": what}),
        );
    }
    Ok(r)
}

/// The same window read from every node; a transaction a node lacks, or holds in another block,
/// is flagged.
async fn cross_node(ctx: &Ctx, a: &TransactionsArgs) -> Result<Report> {
    let since = a.period.since_ms(crate::keystore::now_ms());
    let mut r = ctx.report();
    r.field("period", a.period.as_str());
    let mut seen: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let nodes = ctx.all_nodes();
    let mut reached = Vec::new();
    for url in &nodes {
        match read_window(ctx, url, since).await {
            Ok((chain, w)) => {
                r.row(
                    "nodes",
                    format!(
                        "node: {} height: {} transactions: {}",
                        url,
                        w.to_height,
                        w.txs.len()
                    ),
                    json!({"node": url, "height": w.to_height, "transactions": w.txs.len()}),
                );
                for t in &w.txs {
                    seen.entry(t.receipt.tx_hash.to_hex())
                        .or_default()
                        .insert(url.clone(), t.receipt.height);
                }
                reached.push((url.clone(), chain, w.to_height));
            }
            Err(e) => {
                r.row(
                    "nodes",
                    format!("node: {url} unreachable: {e}"),
                    json!({"node": url, "error": e.to_string()}),
                );
            }
        }
    }
    let min_tip = reached.iter().map(|(_, _, h)| *h).min().unwrap_or(0);
    let mut disagreements = 0;
    r.list("transactions");
    for (hash, by_node) in &seen {
        let heights: Vec<u64> = by_node.values().copied().collect();
        let height = heights[0];
        let same_block = heights.iter().all(|h| *h == height);
        // A node that is behind the block is lagging, not disagreeing.
        let missing: Vec<&String> = reached
            .iter()
            .map(|(u, _, _)| u)
            .filter(|u| !by_node.contains_key(*u))
            .collect();
        let disagree = !same_block || (height <= min_tip && !missing.is_empty());
        if disagree {
            disagreements += 1;
        }
        let flag = if disagree { " DISAGREEMENT" } else { "" };
        r.row(
            "transactions",
            format!(
                "tx_hash: {hash} block: {height} nodes: {}/{}{flag}",
                by_node.len(),
                reached.len()
            ),
            json!({"tx_hash": hash, "block": height, "nodes": by_node, "disagreement": disagree}),
        );
    }
    r.check(
        "nodes-agree",
        disagreements == 0 && reached.len() == nodes.len(),
        format!(
            "{disagreements} disagreement(s), {}/{} nodes reached",
            reached.len(),
            nodes.len()
        ),
    );
    Ok(r)
}

async fn read_window(ctx: &Ctx, url: &str, since: u64) -> Result<(ChainClient, scan::Window)> {
    let chain = ctx.chain_at(url).await?;
    let w = scan::window(&chain, since).await?;
    Ok((chain, w))
}
