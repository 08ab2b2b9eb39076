//! Chain benchmark: the ed25519 crypto bound on this machine, and committed transfers per second
//! with submission-to-finality latency on 1 and 4 validator processes at increasing offered rates.
//!
//! ```text
//! cargo build --release -p aitbc-node --bins
//! target/release/chain-bench --validators 1,4 --rates 1000,2000,4000,8000 --duration 8
//! ```

use aitbc_node::bench::{fund, node_binary, run_rate, start_ready};
use aitbc_protocol::crypto::{verify_batch, verify_batch_uncached};
use aitbc_protocol::tx::{Action, SignedTransaction, Transaction};
use aitbc_protocol::{Amount, Keypair};
use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    about = "Measure the crypto bound and committed tx/s, p50/p99 finality on local validators"
)]
struct Args {
    /// Validator counts to run, e.g. 1,4.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    validators: Vec<usize>,
    /// Offered rates in transactions per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000,8000")]
    rates: Vec<u64>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 8)]
    duration: u64,
    #[arg(long, default_value_t = 100)]
    block_time_ms: u64,
    /// Sending accounts (each signs consecutive nonces).
    #[arg(long, default_value_t = 256)]
    senders: usize,
    /// Only measure the crypto bound.
    #[arg(long)]
    crypto_only: bool,
    /// Transactions per submission request: 1 uses SubmitTransaction per transaction; more uses
    /// SubmitTransactions (batch-verified admission), as a gateway would.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Validators skip fsync (`aitbc-node run --unsafe-no-fsync`): measures what durable votes
    /// cost. Unsafe on a real chain.
    #[arg(long)]
    no_fsync: bool,
    /// Keep the nodes' data and logs (printed path) instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// aitbc-node binary (default: next to this binary).
    #[arg(long)]
    node_bin: Option<PathBuf>,
}

/// `n` signed transfers from `senders` distinct keys (round-robin).
fn signed_transfers(n: usize, senders: usize) -> Vec<SignedTransaction> {
    let keys: Vec<Keypair> = (0..senders).map(|_| Keypair::generate()).collect();
    (0..n)
        .map(|i| {
            let k = &keys[i % senders];
            Transaction {
                chain_id: "bench".into(),
                sender: k.public(),
                nonce: (i / senders) as u64,
                fee: Amount(1000),
                action: Action::Transfer {
                    to: Keypair::generate().address(),
                    amount: Amount(1),
                },
            }
            .sign(k)
        })
        .collect()
}

type BatchVerify = fn(
    &[&[u8]],
    &[aitbc_protocol::crypto::Signature],
    &[aitbc_protocol::PublicKey],
) -> Result<(), aitbc_protocol::crypto::KeyError>;

/// Signatures verified per second on one core in batches of 512.
fn batch_rate(txs: &[SignedTransaction], verify: BatchVerify) -> f64 {
    let msgs: Vec<Vec<u8>> = txs.iter().map(|t| t.tx.signing_bytes()).collect();
    let start = Instant::now();
    for chunk in (0..txs.len()).collect::<Vec<_>>().chunks(512) {
        let m: Vec<&[u8]> = chunk.iter().map(|&i| msgs[i].as_slice()).collect();
        let s: Vec<_> = chunk.iter().map(|&i| txs[i].signature).collect();
        let k: Vec<_> = chunk.iter().map(|&i| txs[i].tx.sender).collect();
        verify(&m, &s, &k).expect("valid batch");
    }
    txs.len() as f64 / start.elapsed().as_secs_f64()
}

/// Signatures verified per second on one core: single and batched (512), every signature by a
/// different key decompressed afresh; and batched with 256 senders signing 32 each, as in the
/// load below, the way the node verifies them (keys from its cache, signatures by one key merged
/// into one term).
fn crypto_bound() -> (f64, f64, f64) {
    let distinct = signed_transfers(8192, 8192);
    let start = Instant::now();
    for t in &distinct {
        t.tx.sender
            .verify(&t.tx.signing_bytes(), &t.signature)
            .expect("valid signature");
    }
    let single = distinct.len() as f64 / start.elapsed().as_secs_f64();
    let batch = batch_rate(&distinct, verify_batch_uncached);
    // As a node does it: keys from its cache (warmed by the first pass).
    let repeated_txs = signed_transfers(8192, 256);
    batch_rate(&repeated_txs, verify_batch);
    let repeated = batch_rate(&repeated_txs, verify_batch);
    (single, batch, repeated)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (single, batch, repeated) = crypto_bound();
    println!(
        "crypto: ed25519 (ZIP-215) verify on one core: {single:.0} sig/s single, {batch:.0} sig/s \
         batched (512, distinct keys), {repeated:.0} sig/s batched with 256 senders"
    );
    if args.crypto_only {
        return Ok(());
    }
    let bin = node_binary(args.node_bin.as_deref())?;
    for &v in &args.validators {
        let extra: Vec<String> = if args.no_fsync {
            vec!["--unsafe-no-fsync".into()]
        } else {
            vec![]
        };
        let (mut net, clients) = start_ready(&bin, v, args.block_time_ms, &extra).await?;
        if args.keep {
            let dir = std::mem::replace(&mut net.dir, tempfile::tempdir()?);
            println!("keeping node data and logs in {}", dir.keep().display());
        }
        let chain_id = clients[0].status().await?.chain_id;
        let keys = fund(&clients[0], &net.ops, args.senders, &chain_id).await?;
        let mut nonces = vec![0u64; keys.len()];
        let cores = if v == 1 { 1.0 } else { 2.0 };
        let bound = cores * batch / v as f64;
        // The load comes from 256 senders, whose repeated keys make batches cheaper than
        // `batch`; this is the bound at that rate.
        let repeated_bound = cores * repeated / v as f64;
        println!();
        println!(
            "validators: {v}  submission batch: {}  block time: {} ms  crypto bound: {bound:.0} tx/s ({}); \
             at the 256-sender rate: {repeated_bound:.0} tx/s",
            args.batch,
            args.block_time_ms,
            if v == 1 {
                "1 core x batch rate"
            } else {
                "2 cores x batch rate / validators"
            }
        );
        println!(
            "{:>9} {:>9} {:>9} {:>11} {:>9} {:>10} {:>9} {:>9}",
            "offered",
            "submitted",
            "committed",
            "tx/s",
            "of bound",
            "of 256-s.",
            "p50 ms",
            "p99 ms"
        );
        for &rate in &args.rates {
            let r = run_rate(
                &clients,
                &keys,
                &mut nonces,
                &chain_id,
                rate,
                args.duration,
                args.batch,
            )
            .await?;
            println!(
                "{:>9} {:>9} {:>9} {:>11.0} {:>8.1}% {:>9.1}% {:>9.1} {:>9.1}",
                r.offered,
                r.submitted,
                r.committed,
                r.tps,
                100.0 * r.tps / bound,
                100.0 * r.tps / repeated_bound,
                r.p50_ms,
                r.p99_ms
            );
            // Resync nonces with the chain (rejected submissions leave gaps).
            for (k, n) in keys.iter().zip(nonces.iter_mut()) {
                *n = clients[0].account(&k.address()).await?.pending_nonce;
            }
        }
    }
    Ok(())
}
