//! Attack benchmark: honest transfers on local validators, first alone and then beside each
//! adversary, with committed tx/s, p99 finality and every node's peak memory.
//!
//! ```text
//! cargo build --release -p aitbc-node --bins
//! target/release/chain-attack --validators 4 --rate 8000 --duration 10
//! ```
//!
//! Adversaries (each on a fresh network, all traffic on loopback; the adversary's clients bind
//! 127.0.0.2 so per-client limits tell it from the honest load on 127.0.0.1):
//! - `sync-flood`: four allowed listener keys hold four connections each to every validator and
//!   ask for `u32::MAX` blocks every few milliseconds; half never read their stream.
//! - `stranger-peers`: 100 unknown keys dialling every validator's peer port in a loop.
//! - `mempool-spam`: unfunded senders, zero-fee transactions, future nonces behind gaps and
//!   far-ahead nonces from funded senders, in batches of 1,000.
//! - `api-flood`: account history for `u32::MAX` entries, supply audits, listing scans and
//!   hundreds of block subscriptions that are never read.

use aitbc_node::bench::{fund, node_binary, run_rate, start_ready, Net, RunResult};
use aitbc_node::p2p::handshake::Hello;
use aitbc_node::p2p::pb::Kind;
use aitbc_node::p2p::raw::{self, Conn};
use aitbc_protocol::pb::{self, chain_client::ChainClient as RawChain};
use aitbc_protocol::tx::{Action, Transaction};
use aitbc_protocol::{Amount, Keypair};
use anyhow::Result;
use borsh010::BorshSerialize;
use clap::{Parser, ValueEnum};
use hotstuff_rs::block_sync::messages::BlockSyncRequest;
use hotstuff_rs::networking::messages::Message;
use hotstuff_rs::types::data_types::BlockHeight;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Attack {
    SyncFlood,
    StrangerPeers,
    MempoolSpam,
    /// `api-streams` and `api-queries` together.
    ApiFlood,
    /// Block subscriptions that are never read, as many as every node will open.
    ApiStreams,
    /// History for `u32::MAX` entries, supply audits and listing scans, 16 loops per node.
    ApiQueries,
}

#[derive(Parser, Debug)]
#[command(
    about = "Honest throughput and latency on local validators beside hostile peers and clients"
)]
struct Args {
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Honest transfers offered per second.
    #[arg(long, default_value_t = 8000)]
    rate: u64,
    /// Seconds of honest load per scenario.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 200)]
    block_time_ms: u64,
    /// Honest transactions per SubmitTransactions request.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Adversaries to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    attacks: Vec<Attack>,
    /// aitbc-node binary (default: next to this binary).
    #[arg(long)]
    node_bin: Option<PathBuf>,
}

/// The adversary's source address: another loopback address than the honest load's.
const ADVERSARY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// What an adversary did, for the report.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    refused: AtomicU64,
}

impl Tally {
    fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }
    fn refused(&self, n: u64) {
        self.refused.fetch_add(n, Ordering::Relaxed);
    }
}

/// Everything an adversary task needs.
#[derive(Clone)]
struct Target {
    chain_id: String,
    rpc: Vec<String>,
    p2p: Vec<u16>,
    listeners: Arc<Vec<Keypair>>,
    ops: Arc<Keypair>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

impl Target {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

async fn adversary_client(endpoint: &str) -> Result<RawChain<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
        .local_address(Some(ADVERSARY_IP))
        .connect()
        .await?;
    Ok(RawChain::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

fn sync_request(chain_id: &str) -> Vec<u8> {
    let m: Message = BlockSyncRequest {
        chain_id: aitbc_node::node::hotstuff_chain_id(chain_id),
        start_height: BlockHeight::new(0),
        limit: u32::MAX,
    }
    .into();
    m.try_to_vec().unwrap_or_default()
}

/// One sync-flood connection: asks for everything every 2 ms; reads the answers or not.
async fn sync_flood_conn(t: Target, port: u16, key: Keypair, read: bool) {
    let Ok((conn, _, _, _)) = raw::handshake(port, &key, &t.chain_id).await else {
        t.tally.refused(1);
        return;
    };
    let Conn { out, mut inbound } = conn;
    // A reader drains the answers; otherwise the stream is held open and never read.
    let _unread = if read {
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            while let Some(Ok(_)) = inbound.next().await {}
        });
        None
    } else {
        Some(inbound)
    };
    // Signed once and sent again and again: the node's budget, not the adversary's CPU, is
    // what this measures (an attacker has machines of its own).
    let env = raw::signed(
        &key,
        &t.chain_id,
        Kind::Consensus,
        sync_request(&t.chain_id),
    );
    while t.running() {
        if out.send(env.clone()).await.is_err() {
            break;
        }
        t.tally.sent(1);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn sync_flood(t: Target) {
    let mut tasks = Vec::new();
    for &port in &t.p2p {
        for (i, key) in t.listeners.iter().enumerate() {
            for c in 0..4 {
                let read = (i + c) % 2 == 0;
                tasks.push(tokio::spawn(sync_flood_conn(
                    t.clone(),
                    port,
                    key.clone(),
                    read,
                )));
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn stranger_peers(t: Target) {
    let strangers: Vec<Keypair> = (0..100).map(|_| Keypair::generate()).collect();
    let mut tasks = Vec::new();
    for (i, key) in strangers.into_iter().enumerate() {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while t.running() {
                let port = t.p2p[n % t.p2p.len()];
                n += 1;
                let hello = raw::hello(&key.public(), &Hello::fresh(&t.chain_id));
                t.tally.sent(1);
                if Conn::open(port, hello).await.is_err() {
                    t.tally.refused(1);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn transfer(key: &Keypair, chain_id: &str, nonce: u64, fee: u128) -> Vec<u8> {
    Transaction {
        chain_id: chain_id.into(),
        sender: key.public(),
        nonce,
        fee: Amount(fee),
        action: Action::Transfer {
            to: key.address(),
            amount: Amount(1),
        },
    }
    .sign(key)
    .encode()
}

/// Batches of 1,000 spam transactions of four kinds, round-robin over the nodes.
async fn mempool_spam(t: Target, funded: Vec<Keypair>) {
    let min_fee = 1_000u128; // 0.001 AIT, the benchmark chain's minimum fee
    let unfunded: Vec<Keypair> = (0..200).map(|_| Keypair::generate()).collect();
    let mut clients = Vec::new();
    for e in &t.rpc {
        if let Ok(c) = adversary_client(e).await {
            clients.push(c);
        }
    }
    if clients.is_empty() {
        return;
    }
    let mut round = 0u64;
    while t.running() {
        let mut txs = Vec::with_capacity(1000);
        for i in 0..250u64 {
            let u = &unfunded[(i as usize) % unfunded.len()];
            txs.push(transfer(u, &t.chain_id, round, min_fee));
            txs.push(transfer(u, &t.chain_id, round, 0));
            let f = &funded[(i as usize) % funded.len()];
            // Behind a gap (nonce 0 is never sent) and far ahead.
            txs.push(transfer(
                f,
                &t.chain_id,
                1 + (round * 250 + i) % 60,
                min_fee,
            ));
            txs.push(transfer(f, &t.chain_id, 10_000 + round * 250 + i, min_fee));
        }
        let n = clients.len();
        let c = &mut clients[(round as usize) % n];
        t.tally.sent(txs.len() as u64);
        let request = pb::SubmitTransactionsRequest { transactions: txs };
        match c.submit_transactions(request).await {
            Ok(r) => {
                let refused = r.get_ref().results.iter().filter(|x| !x.error.is_empty());
                t.tally.refused(refused.count() as u64);
            }
            Err(_) => t.tally.refused(1000),
        }
        round += 1;
    }
}

async fn api_flood(t: Target) {
    tokio::join!(api_streams(t.clone()), api_queries(t));
}

async fn api_streams(t: Target) {
    let mut tasks = Vec::new();
    for e in &t.rpc {
        let (t, e) = (t.clone(), e.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..300 {
                if !t.running() {
                    break;
                }
                let Ok(mut c) = adversary_client(&e).await else {
                    continue;
                };
                t.tally.sent(1);
                match c
                    .subscribe_blocks(pb::SubscribeBlocksRequest { from_height: 0 })
                    .await
                {
                    Ok(s) => held.push((c, s)),
                    Err(_) => t.tally.refused(1),
                }
            }
            while t.running() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(held);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn api_queries(t: Target) {
    let mut tasks = Vec::new();
    let ops = t.ops.address().to_string();
    for e in t.rpc.clone() {
        for _ in 0..16 {
            let (t, e, ops) = (t.clone(), e.clone(), ops.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = adversary_client(&e).await else {
                    return;
                };
                while t.running() {
                    let history = c.get_account_history(pb::GetAccountHistoryRequest {
                        address: ops.clone(),
                        limit: u32::MAX,
                        ..Default::default()
                    });
                    let ok = history.await.is_ok();
                    let supply = c.get_supply(pb::GetSupplyRequest {}).await.is_ok();
                    let search = c
                        .search_listings(pb::SearchListingsRequest::default())
                        .await
                        .is_ok();
                    t.tally.sent(3);
                    t.tally
                        .refused([ok, supply, search].iter().filter(|x| !**x).count() as u64);
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Runs the adversary on its own runtime and threads at background priority: on a real network
/// it has machines of its own, and here it must not take the CPU of the honest load generator
/// (same process) or of the nodes beyond what the nodes spend answering it.
fn run_elsewhere(
    attack: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_start(|| {
                aitbc_node::priority::set_this_thread(aitbc_node::priority::Background::Low)
            })
            .enable_all()
            .build();
        match runtime {
            Ok(rt) => rt.block_on(attack),
            Err(e) => eprintln!("cannot start the adversary's runtime: {e}"),
        }
    })
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Scenario {
    name: String,
    result: RunResult,
    rss: Vec<Option<f64>>,
    alive: usize,
    sent: u64,
    refused: u64,
}

async fn run_scenario(
    args: &Args,
    bin: &std::path::Path,
    attack: Option<Attack>,
) -> Result<Scenario> {
    let listeners: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    let allow: Vec<String> = listeners.iter().map(|k| k.public().to_string()).collect();
    let extra = vec!["--allow-peer".to_string(), allow.join(",")];
    let (mut net, clients): (Net, _) =
        start_ready(bin, args.validators, args.block_time_ms, &extra).await?;
    let chain_id = clients[0].status().await?.chain_id;
    let keys = fund(&clients[0], &net.ops, 256, &chain_id).await?;
    let spammers = if attack == Some(Attack::MempoolSpam) {
        fund(&clients[0], &net.ops, 100, &chain_id).await?
    } else {
        vec![]
    };
    let target = Target {
        chain_id: chain_id.clone(),
        rpc: net.endpoints.clone(),
        p2p: net.ports.iter().map(|p| p.1).collect(),
        listeners: Arc::new(listeners),
        ops: Arc::new(net.ops.clone()),
        stop: Arc::new(AtomicBool::new(false)),
        tally: Arc::new(Tally::default()),
    };
    let adversary = attack.map(|a| {
        let t = target.clone();
        run_elsewhere(async move {
            match a {
                Attack::SyncFlood => sync_flood(t).await,
                Attack::StrangerPeers => stranger_peers(t).await,
                Attack::MempoolSpam => mempool_spam(t, spammers).await,
                Attack::ApiFlood => api_flood(t).await,
                Attack::ApiStreams => api_streams(t).await,
                Attack::ApiQueries => api_queries(t).await,
            }
        })
    });
    // Let the adversary get going before the honest load starts.
    if adversary.is_some() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut nonces = vec![0u64; keys.len()];
    let result = run_rate(
        &clients,
        &keys,
        &mut nonces,
        &chain_id,
        args.rate,
        args.duration,
        args.batch,
    )
    .await?;
    target.stop.store(true, Ordering::Relaxed);
    if let Some(a) = adversary {
        let _ = tokio::task::spawn_blocking(move || a.join()).await;
    }
    let rss = net.children.iter().map(|c| peak_rss_mib(c.id())).collect();
    let alive = net
        .children
        .iter_mut()
        .filter_map(|c| c.try_wait().ok())
        .filter(Option::is_none)
        .count();
    Ok(Scenario {
        name: attack.map_or("baseline".into(), |a| {
            format!("{a:?}")
                .chars()
                .flat_map(|c| {
                    if c.is_uppercase() {
                        vec!['-', c.to_ascii_lowercase()]
                    } else {
                        vec![c]
                    }
                })
                .collect::<String>()
                .trim_start_matches('-')
                .to_string()
        }),
        result,
        rss,
        alive,
        sent: target.tally.sent.load(Ordering::Relaxed),
        refused: target.tally.refused.load(Ordering::Relaxed),
    })
}

fn report(s: &Scenario, baseline_tps: f64, validators: usize) -> bool {
    let share = s.result.tps / baseline_tps.max(1e-9);
    let peak = s.rss.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let ok = share >= 0.8 && s.result.p99_ms < 2000.0 && s.alive == validators;
    println!(
        "{:<15} {:>10.0} {:>8.1}% {:>9.0} {:>9.0} {:>10.0} {:>6}/{} {:>10} {:>10}  {}",
        s.name,
        s.result.tps,
        100.0 * share,
        s.result.p50_ms,
        s.result.p99_ms,
        peak,
        s.alive,
        validators,
        s.sent,
        s.refused,
        if ok { "ok" } else { "MISSED" }
    );
    ok
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin = node_binary(args.node_bin.as_deref())?;
    let attacks = if args.attacks.is_empty() {
        vec![
            Attack::SyncFlood,
            Attack::StrangerPeers,
            Attack::MempoolSpam,
            Attack::ApiFlood,
        ]
    } else {
        args.attacks.clone()
    };
    println!(
        "validators: {}  honest load: {} tx/s for {} s in batches of {}  block time: {} ms",
        args.validators, args.rate, args.duration, args.batch, args.block_time_ms
    );
    println!(
        "{:<15} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8} {:>10} {:>10}  target",
        "scenario", "tx/s", "of base", "p50 ms", "p99 ms", "peak MiB", "up", "adv. sent", "refused"
    );
    let baseline = run_scenario(&args, &bin, None).await?;
    let base_tps = baseline.result.tps;
    report(&baseline, base_tps, args.validators);
    let mut all_ok = true;
    for a in attacks {
        let s = run_scenario(&args, &bin, Some(a)).await?;
        all_ok &= report(&s, base_tps, args.validators);
    }
    println!(
        "target: honest tx/s >= 80% of baseline, p99 < 2 s, every node up; {}",
        if all_ok { "met" } else { "MISSED" }
    );
    Ok(())
}
