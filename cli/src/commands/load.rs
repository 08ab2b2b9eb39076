//! Built-in load generators: `stress-test` (N transfers, C in flight), `throughput-test` (paced
//! transfers) and `ai-throughput-test` (paced jobs). Each funds throw-away sender keys from
//! `--wallet` (default genesis-ops), follows commits on the node's block stream and ends with a
//! summary table.

use crate::cli::{Action as A, MarketplaceArgs};
use crate::commands::marketplace::need;
use crate::context::Ctx;
use crate::output::{percentile, Format, Report};
use aitbc_protocol::client::{block_receipts, ChainClient, ClientError};
use aitbc_protocol::tx::{Action, JobKind, JobSpec, Transaction};
use aitbc_protocol::{Amount, Hash, Keypair};
use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Committed result of one transaction: its height, or the reason it was rejected in its block.
type Outcome = Result<u64, String>;

/// Follows the block stream and completes waiters by transaction hash.
#[derive(Clone, Default)]
struct Tracker {
    inner: Arc<Mutex<TrackerState>>,
}

#[derive(Default)]
struct TrackerState {
    waiting: HashMap<Hash, oneshot::Sender<Outcome>>,
    seen: HashMap<Hash, Outcome>,
}

impl Tracker {
    async fn start(chain: &ChainClient) -> Result<Tracker> {
        let from = chain.status().await?.height + 1;
        let mut stream = chain.subscribe(from).await?;
        let t = Tracker::default();
        let t2 = t.clone();
        tokio::spawn(async move {
            while let Ok(Some(cb)) = stream.message().await {
                let Ok(receipts) = block_receipts(&cb) else {
                    continue;
                };
                let mut st = t2.inner.lock().unwrap_or_else(|e| e.into_inner());
                for rc in receipts {
                    let out = match rc.error {
                        Some(e) => Err(e),
                        None => Ok(rc.height),
                    };
                    match st.waiting.remove(&rc.tx_hash) {
                        Some(tx) => {
                            let _ = tx.send(out);
                        }
                        None => {
                            st.seen.insert(rc.tx_hash, out);
                        }
                    }
                }
            }
        });
        Ok(t)
    }

    fn wait(&self, h: Hash) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match st.seen.remove(&h) {
            Some(out) => {
                let _ = tx.send(out);
            }
            None => {
                st.waiting.insert(h, tx);
            }
        }
        rx
    }
}

#[derive(Default)]
struct Tally {
    submitted: u64,
    committed: u64,
    rejected: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
}

impl Tally {
    fn reject(&mut self, reason: String) {
        // Group by the reason's kind (numbers vary).
        let key: String = reason
            .split(':')
            .next()
            .unwrap_or(&reason)
            .chars()
            .take(80)
            .collect();
        *self.rejected.entry(key).or_default() += 1;
    }
}

fn progress(ctx: &Ctx, n: u64, what: &str) -> ProgressBar {
    if ctx.format == Format::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(n);
    let style =
        format!("{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{elapsed}})");
    b.set_style(
        ProgressStyle::with_template(&style)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.enable_steady_tick(Duration::from_millis(150));
    b
}

pub async fn run(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    match m.action {
        A::StressTest => stress(ctx, m).await,
        A::ThroughputTest => throughput(ctx, m).await,
        A::AiThroughputTest => ai_throughput(ctx, m).await,
        _ => Err(anyhow!("not a load-test action")),
    }
}

/// Funds `n` fresh keys with `each` AIT from the funder; waits for all of them.
async fn fund(
    ctx: &Ctx,
    chain: &ChainClient,
    tracker: &Tracker,
    funder: &Keypair,
    n: usize,
    each: Amount,
    fee: Amount,
) -> Result<Vec<Keypair>> {
    let status = chain.status().await?;
    let mut nonce = chain.account(&funder.address()).await?.pending_nonce;
    let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate()).collect();
    let mut waits = Vec::new();
    for k in &keys {
        let tx = Transaction {
            chain_id: status.chain_id.clone(),
            sender: funder.public(),
            nonce,
            fee,
            action: Action::Transfer {
                to: k.address(),
                amount: each,
            },
        };
        let stx = tx.sign(funder);
        let h = stx.hash();
        let rx = tracker.wait(h);
        chain
            .submit(&stx)
            .await
            .map_err(|e| anyhow!("funding the load senders from {}: {e}", funder.address()))?;
        waits.push(rx);
        nonce += 1;
    }
    for rx in waits {
        match tokio::time::timeout(ctx.timeout, rx).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(reason))) => bail!("funding a load sender was rejected: {reason}"),
            _ => bail!(
                "funding the load senders did not commit within {:?}",
                ctx.timeout
            ),
        }
    }
    Ok(keys)
}

fn funder_name(m: &MarketplaceArgs) -> String {
    m.wallet
        .clone()
        .unwrap_or_else(|| "genesis-ops".to_string())
}

#[allow(clippy::too_many_arguments)]
/// One sender's loop: `count` transfers, each submitted then awaited (one in flight per sender).
async fn sender_loop(
    chain: ChainClient,
    tracker: Tracker,
    key: Keypair,
    chain_id: String,
    fee: Amount,
    count: u64,
    tally: Arc<Mutex<Tally>>,
    bar: ProgressBar,
    timeout: Duration,
    pace: Option<Arc<tokio::sync::Mutex<tokio::time::Interval>>>,
) {
    let mut nonce = 0u64;
    let sink = Keypair::generate().address();
    for _ in 0..count {
        if let Some(p) = &pace {
            p.lock().await.tick().await;
        }
        let tx = Transaction {
            chain_id: chain_id.clone(),
            sender: key.public(),
            nonce,
            fee,
            action: Action::Transfer {
                to: sink,
                amount: Amount(1),
            },
        };
        let stx = tx.sign(&key);
        let h = stx.hash();
        let rx = tracker.wait(h);
        let start = Instant::now();
        let submitted = chain.submit(&stx).await;
        {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            t.submitted += 1;
            if let Err(e) = &submitted {
                let reason = match e {
                    ClientError::Rejected(r) => r.clone(),
                    other => other.to_string(),
                };
                t.reject(format!("refused at submission: {reason}"));
            }
        }
        if submitted.is_err() {
            bar.inc(1);
            continue;
        }
        nonce += 1;
        let out = tokio::time::timeout(timeout, rx).await;
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        match out {
            Ok(Ok(Ok(_))) => {
                t.committed += 1;
                t.latencies_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(Ok(Err(reason))) => t.reject(format!("rejected in block: {reason}")),
            _ => t.reject("not committed before --timeout".into()),
        }
        bar.inc(1);
    }
}

fn summary(r: &mut Report, t: &Tally, elapsed: Duration, extra: &[(&str, String)]) {
    let mut lat = t.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let rejected: u64 = t.rejected.values().sum();
    let tps = t.committed as f64 / elapsed.as_secs_f64().max(1e-9);
    let f = |v: Option<f64>| {
        v.map(|x| format!("{x:.1}ms"))
            .unwrap_or_else(|| "n/a".into())
    };
    let mut rows = vec![
        vec!["submitted".to_string(), t.submitted.to_string()],
        vec!["committed".to_string(), t.committed.to_string()],
        vec!["rejected".to_string(), rejected.to_string()],
    ];
    for (reason, n) in &t.rejected {
        rows.push(vec![format!("  rejected: {reason}"), n.to_string()]);
    }
    rows.push(vec!["tx/s (committed)".into(), format!("{tps:.1}")]);
    rows.push(vec!["latency p50".into(), f(percentile(&lat, 0.5))]);
    rows.push(vec!["latency p99".into(), f(percentile(&lat, 0.99))]);
    rows.push(vec![
        "elapsed".into(),
        format!("{:.2}s", elapsed.as_secs_f64()),
    ]);
    for (k, v) in extra {
        rows.push(vec![k.to_string(), v.clone()]);
    }
    r.table("summary", &["metric", "value"], &rows);
    r.data("submitted", t.submitted)
        .data("committed", t.committed)
        .data("rejected", rejected)
        .data("rejected_by_reason", &t.rejected);
    r.data("tx_per_second", tps)
        .data("latency_p50_ms", percentile(&lat, 0.5))
        .data("latency_p99_ms", percentile(&lat, 0.99));
    r.check(
        "all-accounted-for",
        t.committed + rejected == t.submitted,
        format!(
            "{} committed + {rejected} rejected of {} submitted",
            t.committed, t.submitted
        ),
    );
}

async fn stress(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let n = *need(&m.transactions, "--transactions N", "stress-test")?;
    let c = *need(&m.concurrent, "--concurrent C", "stress-test")?;
    if n == 0 || c == 0 {
        bail!("--transactions and --concurrent must be at least 1");
    }
    let c = c.min(n as usize);
    let chain = ctx.chain().await?;
    let funder = ctx.unlock(&funder_name(m))?;
    let fee = ctx.fee(&chain).await?;
    let tracker = Tracker::start(&chain).await?;
    let per = n / c as u64;
    let extra = n % c as u64;
    let need_each = Amount(fee.0.saturating_add(1).saturating_mul(u128::from(per + 1)));
    let keys = fund(ctx, &chain, &tracker, &funder, c, need_each, fee).await?;
    let chain_id = chain.status().await?.chain_id;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = progress(ctx, n, "transactions");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        let count = per + u64::from((i as u64) < extra);
        tasks.push(tokio::spawn(sender_loop(
            chain.clone(),
            tracker.clone(),
            k,
            chain_id.clone(),
            fee,
            count,
            tally.clone(),
            bar.clone(),
            ctx.timeout,
            None,
        )));
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed();
    let mut r = ctx.report();
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    summary(&mut r, &t, elapsed, &[("concurrency", c.to_string())]);
    Ok(r)
}

async fn throughput(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let secs = *need(&m.duration, "--duration S", "throughput-test")?;
    let rate = *need(
        &m.transactions_per_second,
        "--transactions-per-second R",
        "throughput-test",
    )?;
    if secs == 0 || !(rate > 0.0 && rate.is_finite()) {
        bail!("--duration and --transactions-per-second must be greater than zero");
    }
    let total = (secs as f64 * rate).round().max(1.0) as u64;
    let chain = ctx.chain().await?;
    let st = chain.status().await?;
    // Enough senders that one transaction per sender per block reaches the rate.
    let senders = ((rate * (st.block_time_ms.max(50) as f64 / 1000.0) * 2.0).ceil() as usize)
        .clamp(1, 500)
        .min(total as usize);
    let funder = ctx.unlock(&funder_name(m))?;
    let fee = ctx.fee(&chain).await?;
    let tracker = Tracker::start(&chain).await?;
    let per = total.div_ceil(senders as u64);
    let keys = fund(
        ctx,
        &chain,
        &tracker,
        &funder,
        senders,
        Amount(fee.0.saturating_add(1).saturating_mul(u128::from(per + 1))),
        fee,
    )
    .await?;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pace = Arc::new(tokio::sync::Mutex::new(interval));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = progress(ctx, total, "paced transactions");
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut left = total;
    for k in keys {
        let count = per.min(left);
        left -= count;
        tasks.push(tokio::spawn(sender_loop(
            chain.clone(),
            tracker.clone(),
            k,
            st.chain_id.clone(),
            fee,
            count,
            tally.clone(),
            bar.clone(),
            ctx.timeout,
            Some(pace.clone()),
        )));
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed();
    let mut r = ctx.report();
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let achieved = t.committed as f64 / elapsed.as_secs_f64().max(1e-9);
    summary(
        &mut r,
        &t,
        elapsed,
        &[
            ("target tx/s", format!("{rate:.1}")),
            ("achieved tx/s", format!("{achieved:.1}")),
            ("senders", senders.to_string()),
        ],
    );
    Ok(r)
}

async fn ai_throughput(ctx: &Ctx, m: &MarketplaceArgs) -> Result<Report> {
    let secs = *need(&m.duration, "--duration S", "ai-throughput-test")?;
    let jpm = *need(
        &m.jobs_per_minute,
        "--jobs-per-minute R",
        "ai-throughput-test",
    )?;
    if secs == 0 || !(jpm > 0.0 && jpm.is_finite()) {
        bail!("--duration and --jobs-per-minute must be greater than zero");
    }
    let total = (secs as f64 * jpm / 60.0).round().max(1.0) as u64;
    let payment = m
        .amount
        .unwrap_or(Amount::from_ait(1).unwrap_or(Amount(1_000_000)));
    let chain = ctx.chain().await?;
    let key = ctx.unlock(&funder_name(m))?;
    let fee = ctx.fee(&chain).await?;
    let st = chain.status().await?;
    let tracker = Tracker::start(&chain).await?;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(60.0 / jpm));
    let bar = progress(ctx, total, "jobs");
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut jobs: Vec<(String, Instant)> = Vec::new();
    let mut nonce = chain.account(&key.address()).await?.pending_nonce;
    for i in 0..total {
        interval.tick().await;
        let spec = JobSpec {
            kind: Some(JobKind::Inference),
            prompt: format!("throughput test job {i}"),
            gpus: 1,
            ..Default::default()
        };
        let action = Action::SubmitJob {
            listing_id: m.service_id.clone(),
            bid_id: None,
            payment,
            spec,
            deadline_blocks: 0,
        };
        let stx = Transaction {
            chain_id: st.chain_id.clone(),
            sender: key.public(),
            nonce,
            fee,
            action,
        }
        .sign(&key);
        let h = stx.hash();
        let rx = tracker.wait(h);
        tally.submitted += 1;
        let submitted_at = Instant::now();
        match chain.submit(&stx).await {
            Ok(_) => {
                nonce += 1;
                match tokio::time::timeout(ctx.timeout, rx).await {
                    Ok(Ok(Ok(_))) => {
                        jobs.push((aitbc_protocol::tx::object_id("job", &h), submitted_at))
                    }
                    Ok(Ok(Err(reason))) => tally.reject(format!("rejected in block: {reason}")),
                    _ => tally.reject("not committed before --timeout".into()),
                }
            }
            Err(e) => tally.reject(format!("refused at submission: {e}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Completion: each job reaching settled or refunded; wait up to the duration again.
    let grace = Instant::now() + Duration::from_secs(secs.max(30));
    let (mut done, mut refunded) = (0u64, 0u64);
    let mut pending: Vec<(String, Instant)> = jobs;
    while !pending.is_empty() && Instant::now() < grace {
        let mut still = Vec::new();
        for (id, t0) in pending {
            match chain.job(&id).await {
                Ok(j) if j.status == aitbc_protocol::model::JobStatus::Settled => {
                    done += 1;
                    tally.committed += 1;
                    tally.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(j) if j.status == aitbc_protocol::model::JobStatus::Refunded => {
                    refunded += 1;
                    tally.committed += 1;
                }
                _ => still.push((id, t0)),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let elapsed = start.elapsed();
    let unfinished = pending.len() as u64;
    for _ in 0..unfinished {
        tally.reject("job not finished before the grace period".into());
    }
    let mut r = ctx.report();
    let rate = done as f64 / tally.submitted.max(1) as f64 * 100.0;
    summary(
        &mut r,
        &tally,
        elapsed,
        &[
            ("latency", "submission -> settlement".to_string()),
            ("jobs settled", done.to_string()),
            ("jobs refunded", refunded.to_string()),
            ("completion rate", format!("{rate:.1}%")),
            ("target jobs/min", format!("{jpm:.1}")),
        ],
    );
    Ok(r)
}
