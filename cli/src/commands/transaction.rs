//! `transaction status | verify | verify-propagation`.

use crate::context::Ctx;
use crate::output::Report;
use aitbc_protocol::client::ClientError;
use aitbc_protocol::hash::{verify_merkle_proof, ProofStep};
use aitbc_protocol::model::BlockHeader;
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::Hash;
use anyhow::{anyhow, Result};
use serde_json::json;

pub fn parse_hash(s: &str) -> Result<Hash> {
    s.trim().parse::<Hash>().map_err(|_| {
        anyhow!(
            "--tx-id {s:?} is not a transaction hash (64 hex digits, as printed after tx_hash:)"
        )
    })
}

fn not_found(hash: &Hash, url: &str) -> anyhow::Error {
    anyhow!("transaction {hash} is unknown to the node at {url}: check the hash, or it was never submitted")
}

pub async fn status(ctx: &Ctx, tx_id: &str) -> Result<Report> {
    let hash = parse_hash(tx_id)?;
    let chain = ctx.chain().await?;
    let info = match chain.transaction(&hash, false).await {
        Err(ClientError::NotFound(_)) => return Err(not_found(&hash, chain.endpoint())),
        r => r?,
    };
    let mut r = ctx.report();
    r.field("tx_hash", hash.to_hex())
        .field("status", &info.status);
    if info.status != "pending" {
        r.field("block", info.height)
            .field("confirmations", info.confirmations);
    }
    if !info.error.is_empty() {
        r.field("reason", &info.error);
    }
    Ok(r)
}

pub async fn verify(ctx: &Ctx, tx_id: &str) -> Result<Report> {
    let hash = parse_hash(tx_id)?;
    let chain = ctx.chain().await?;
    let info = match chain.transaction(&hash, true).await {
        Err(ClientError::NotFound(_)) => return Err(not_found(&hash, chain.endpoint())),
        r => r?,
    };
    let mut r = ctx.report();
    r.field("tx_hash", hash.to_hex())
        .field("status", &info.status);
    let stx = SignedTransaction::decode(&info.transaction);
    match &stx {
        Ok(stx) => {
            r.check(
                "hash",
                stx.hash() == hash,
                "the transaction's bytes hash to the id",
            );
            r.check(
                "signature",
                stx.verify_signature().is_ok(),
                format!("signed by {}", stx.tx.sender_address()),
            );
        }
        Err(e) => {
            r.check("decode", false, e.to_string());
        }
    }
    if info.status == "pending" {
        r.check(
            "inclusion",
            false,
            "still pending in the mempool; not in a block yet",
        );
        return Ok(r);
    }
    let block = chain.block(info.height).await?;
    let header: BlockHeader = borsh::from_slice(&block.header)
        .map_err(|e| anyhow!("block {} header does not decode: {e}", info.height))?;
    let proof: Vec<ProofStep> = borsh::from_slice(&info.proof)
        .map_err(|e| anyhow!("inclusion proof does not decode: {e}"))?;
    let included = verify_merkle_proof(&header.tx_root, &hash, &proof);
    r.field("block", info.height)
        .field("block_hash", &block.hash)
        .field("tx_root", header.tx_root.to_hex());
    r.check(
        "inclusion",
        included,
        format!(
            "Merkle proof of {} steps against block {}'s tx_root",
            proof.len(),
            info.height
        ),
    );
    let tip = chain.status().await?.height;
    r.field("confirmations", info.confirmations);
    r.check(
        "finality",
        info.height <= tip,
        format!(
            "committed by BFT quorum at height {} (tip {tip})",
            info.height
        ),
    );
    if !info.error.is_empty() {
        r.field("rejected_reason", &info.error);
    }
    Ok(r)
}

pub async fn verify_propagation(ctx: &Ctx, tx_id: &str) -> Result<Report> {
    let hash = parse_hash(tx_id)?;
    let mut r = ctx.report();
    r.field("tx_hash", hash.to_hex());
    let mut blocks = Vec::new();
    let nodes = ctx.all_nodes();
    for url in &nodes {
        let res = async {
            let c = ctx.chain_at(url).await?;
            let info = c.transaction(&hash, false).await?;
            let bh = if info.status == "pending" {
                String::new()
            } else {
                c.block(info.height).await?.hash
            };
            Ok::<_, ClientError>((info, bh))
        }
        .await;
        match res {
            Ok((info, bh)) => {
                r.row("nodes", format!("node: {url} status: {} block: {} block_hash: {bh}", info.status, info.height), json!({"node": url, "status": info.status, "block": info.height, "block_hash": bh}));
                blocks.push(Some((info.height, bh)));
            }
            Err(e) => {
                r.row(
                    "nodes",
                    format!("node: {url} missing: {e}"),
                    json!({"node": url, "error": e.to_string()}),
                );
                blocks.push(None);
            }
        }
    }
    let held = blocks
        .iter()
        .flatten()
        .filter(|(_, bh)| !bh.is_empty())
        .count();
    r.check(
        "held-by-all",
        held == nodes.len(),
        format!("{held}/{} nodes hold it in a committed block", nodes.len()),
    );
    let first = blocks.iter().flatten().next().cloned();
    let same = blocks.iter().flatten().all(|b| Some(b) == first.as_ref());
    r.check(
        "same-block",
        same && held > 0,
        "every node holds it at the same height and block hash",
    );
    Ok(r)
}
