//! The load side of the chain benchmarks (`chain-bench`, `chain-attack`): a network of local
//! validator processes, funded senders, and paced transfers with their finality latencies.

use aitbc_protocol::client::ChainClient;
use aitbc_protocol::tx::{Action, SignedTransaction, Transaction};
use aitbc_protocol::{Amount, Hash, Keypair};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};
use tokio_stream::StreamExt;

fn free_port() -> Result<u16> {
    Ok(aitbc_protocol::net::free_loopback_port()?)
}

/// Validator processes of one benchmark network, killed on drop.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub children: Vec<Child>,
    /// RPC endpoints (`http://127.0.0.1:PORT`), one per node.
    pub endpoints: Vec<String>,
    /// (rpc, p2p, http) ports, one per node.
    pub ports: Vec<(u16, u16, u16)>,
    /// The genesis-ops key (holds the genesis allocation).
    pub ops: Keypair,
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `validators` nodes of a fresh chain; `extra` is passed to every `aitbc-node run`.
fn start_net(bin: &Path, validators: usize, block_time_ms: u64, extra: &[String]) -> Result<Net> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(bin)
        .args(["init", "--dir"])
        .arg(dir.path())
        .args([
            "--validators",
            &validators.to_string(),
            "--chain-id",
            "bench",
            "--block-time-ms",
            &block_time_ms.to_string(),
        ])
        .args(["--min-fee", "0.001"])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ports: Vec<(u16, u16, u16)> = (0..validators)
        .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let mut children = Vec::new();
    for i in 0..validators {
        let peers: Vec<String> = (0..validators)
            .filter(|j| *j != i)
            .map(|j| format!("127.0.0.1:{}", ports[j].1))
            .collect();
        let log = std::fs::File::create(dir.path().join(format!("node-{i}.log")))?;
        children.push(
            Command::new(bin)
                .arg("run")
                .arg("--genesis")
                .arg(dir.path().join("genesis.json"))
                .arg("--key-file")
                .arg(dir.path().join(format!("validator-{i}.key")))
                .arg("--data-dir")
                .arg(dir.path().join(format!("node-{i}")))
                .args(["--rpc-listen", &format!("127.0.0.1:{}", ports[i].0)])
                .args(["--p2p-listen", &format!("127.0.0.1:{}", ports[i].1)])
                .args(["--http-listen", &format!("127.0.0.1:{}", ports[i].2)])
                .args(["--peer", &peers.join(",")])
                .args(["--mempool-capacity", "400000"])
                .args(extra)
                .env(
                    "RUST_LOG",
                    std::env::var("AITBC_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
    }
    let key = std::fs::read_to_string(dir.path().join("genesis-ops.key"))?;
    let ops = Keypair::from_secret_hex(key.trim())?;
    let endpoints = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{}", p.0))
        .collect();
    Ok(Net {
        dir,
        children,
        endpoints,
        ports,
        ops,
    })
}

/// A client of the node at `endpoint` once it has committed a block.
async fn committing(endpoint: &str) -> Option<ChainClient> {
    let c = ChainClient::connect(endpoint).await.ok()?;
    let s = c.status().await.ok()?;
    (!s.block_hash.is_empty()).then_some(c)
}

/// Starts the nodes and waits until each commits blocks. `free_port` only finds ports that were
/// free a moment ago; when a node exits at start (one was taken before it bound it), the whole
/// network starts again on fresh ports, up to three times.
pub async fn start_ready(
    bin: &Path,
    validators: usize,
    block_time_ms: u64,
    extra: &[String],
) -> Result<(Net, Vec<ChainClient>)> {
    const ATTEMPTS: usize = 3;
    let node_log = |net: &Net, i: usize| {
        std::fs::read_to_string(net.dir.path().join(format!("node-{i}.log"))).unwrap_or_default()
    };
    'attempts: for attempt in 1..=ATTEMPTS {
        let mut net = start_net(bin, validators, block_time_ms, extra)?;
        let mut clients = Vec::new();
        for i in 0..net.endpoints.len() {
            let start = Instant::now();
            loop {
                if let Some(c) = committing(&net.endpoints[i]).await {
                    clients.push(c);
                    break;
                }
                let exited = (0..net.children.len())
                    .find(|&j| matches!(net.children[j].try_wait(), Ok(Some(_))));
                if let Some(j) = exited {
                    if attempt < ATTEMPTS {
                        eprintln!(
                            "node {j} exited at start; starting the network again on fresh ports"
                        );
                        continue 'attempts;
                    }
                    bail!("node {j} exited at start\nnode log:\n{}", node_log(&net, j));
                }
                if start.elapsed() > Duration::from_secs(60) {
                    bail!(
                        "node at {} did not start committing blocks\nnode log:\n{}",
                        net.endpoints[i],
                        node_log(&net, i)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        return Ok((net, clients));
    }
    bail!("the network did not start in {ATTEMPTS} attempts")
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One load run: what was offered, admitted and committed, and the finality latencies.
pub struct RunResult {
    pub offered: u64,
    pub submitted: usize,
    pub committed: usize,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Funds `senders` accounts from genesis-ops and returns them with their next nonces.
pub async fn fund(
    c: &ChainClient,
    ops: &Keypair,
    senders: usize,
    chain_id: &str,
) -> Result<Vec<Keypair>> {
    let keys: Vec<Keypair> = (0..senders).map(|_| Keypair::generate()).collect();
    let base = c.account(&ops.address()).await?.pending_nonce;
    let mut last = Hash::ZERO;
    for (i, k) in keys.iter().enumerate() {
        let stx = Transaction {
            chain_id: chain_id.into(),
            sender: ops.public(),
            nonce: base + i as u64,
            fee: "0.001".parse()?,
            action: Action::Transfer {
                to: k.address(),
                amount: "1000".parse()?,
            },
        }
        .sign(ops);
        last = c.submit(&stx).await?;
    }
    c.wait(&last, Duration::from_secs(60)).await?;
    Ok(keys)
}

/// Offers `rate` signed transfers per second for `secs` seconds from `keys` (consecutive nonces
/// from `nonces`), in requests of `batch`, spread over `clients`; waits for them to commit.
#[allow(clippy::too_many_arguments)]
pub async fn run_rate(
    clients: &[ChainClient],
    keys: &[Keypair],
    nonces: &mut [u64],
    chain_id: &str,
    rate: u64,
    secs: u64,
    batch: usize,
) -> Result<RunResult> {
    let total = (rate * secs) as usize;
    // Pre-sign everything so that signing does not count against the node.
    let mut txs = Vec::with_capacity(total);
    for i in 0..total {
        let s = i % keys.len();
        let stx = Transaction {
            chain_id: chain_id.into(),
            sender: keys[s].public(),
            nonce: nonces[s],
            fee: "0.001".parse()?,
            action: Action::Transfer {
                to: keys[(s + 1) % keys.len()].address(),
                amount: Amount(1),
            },
        }
        .sign(&keys[s]);
        nonces[s] += 1;
        txs.push((stx.hash(), stx));
    }
    let submitted_at: Arc<Mutex<HashMap<Hash, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let committed_at: Arc<Mutex<HashMap<Hash, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let from = clients[0].status().await?.height + 1;
    let mut stream = clients[0].subscribe(from).await?;
    let ca = committed_at.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(b)) = stream.next().await {
            let now = Instant::now();
            if let Some(block) = b.block {
                let mut m = ca.lock().await;
                for h in block.tx_hashes {
                    if let Ok(h) = h.parse::<Hash>() {
                        m.insert(h, now);
                    }
                }
            }
        }
    });
    let sem = Arc::new(Semaphore::new(512));
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let batch = batch.max(1);
    let mut handles = Vec::new();
    let mut i = 0usize;
    let mut iter = txs.into_iter().peekable();
    while iter.peek().is_some() {
        let chunk: Vec<(Hash, SignedTransaction)> = iter.by_ref().take(batch).collect();
        // The chunk goes out when its last transaction is due.
        let due = start + interval * (i + chunk.len() - 1) as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let c = clients[(i / batch) % clients.len()].clone();
        i += chunk.len();
        let sa = submitted_at.clone();
        handles.push(tokio::spawn(async move {
            let now = Instant::now();
            {
                let mut m = sa.lock().await;
                for (h, _) in &chunk {
                    m.insert(*h, now);
                }
            }
            let ok = if chunk.len() == 1 {
                usize::from(c.submit(&chunk[0].1).await.is_ok())
            } else {
                let txs: Vec<SignedTransaction> = chunk.into_iter().map(|(_, t)| t).collect();
                match c.submit_many(&txs).await {
                    Ok(rs) => rs.iter().filter(|r| r.is_ok()).count(),
                    Err(_) => 0,
                }
            };
            drop(permit);
            ok
        }));
    }
    let mut submitted = 0;
    for h in handles {
        submitted += h.await.unwrap_or(0);
    }
    // Drain: wait until everything submitted is committed, or nothing new commits for 5 s.
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let n = committed_at.lock().await.len();
        if n >= submitted || last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        if n != last_count {
            last_count = n;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    let sub = submitted_at.lock().await;
    let com = committed_at.lock().await;
    let mut lat: Vec<f64> = sub
        .iter()
        .filter_map(|(h, t)| {
            com.get(h)
                .map(|c| c.duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let last_commit = com.values().max().copied().unwrap_or(start);
    let committed = lat.len();
    let tps = committed as f64 / last_commit.duration_since(start).as_secs_f64().max(1e-9);
    Ok(RunResult {
        offered: rate,
        submitted,
        committed,
        tps,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    })
}

/// The `aitbc-node` binary a benchmark starts: `given`, or the one next to the benchmark.
pub fn node_binary(given: Option<&Path>) -> Result<std::path::PathBuf> {
    let bin = match given {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("aitbc-node"),
    };
    if !bin.exists() {
        bail!(
            "{} not found; run `cargo build --release -p aitbc-node --bins` first",
            bin.display()
        );
    }
    Ok(bin)
}
