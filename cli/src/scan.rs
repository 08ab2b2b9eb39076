//! Reading the chain's committed blocks in a time window: the first height at or after a time
//! (binary search on block header times), then the blocks with their transactions and receipts
//! replayed through the node's block stream.

use aitbc_protocol::client::{block_receipts, ChainClient, ClientError};
use aitbc_protocol::model::{Event, TxReceipt};
use aitbc_protocol::tx::SignedTransaction;
use anyhow::{anyhow, Result};

/// One committed transaction with its receipt and its block's time.
#[derive(Clone, Debug)]
pub struct ChainTx {
    pub tx: SignedTransaction,
    pub receipt: TxReceipt,
    pub time_ms: u64,
}

impl ChainTx {
    pub fn applied(&self) -> bool {
        self.receipt.error.is_none()
    }
    pub fn events(&self) -> &[Event] {
        &self.receipt.events
    }
}

/// Blocks in a window: their count, first and last height, and their transactions.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub from_height: u64,
    pub to_height: u64,
    pub blocks: u64,
    pub txs: Vec<ChainTx>,
    /// (height, time_ms) of each block
    pub block_times: Vec<(u64, u64)>,
}

async fn block_time(chain: &ChainClient, h: u64) -> Result<Option<u64>, ClientError> {
    match chain.block(h).await {
        Ok(b) => Ok(Some(b.time_ms)),
        Err(ClientError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The lowest committed height whose block time is at or after `since_ms` (`tip + 1` if none).
pub async fn first_height_since(chain: &ChainClient, tip: u64, since_ms: u64) -> Result<u64> {
    let (mut lo, mut hi) = (0u64, tip + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match block_time(chain, mid).await? {
            Some(t) if t >= since_ms => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
}

/// Every committed block from `since_ms` up to the node's current height.
pub async fn window(chain: &ChainClient, since_ms: u64) -> Result<Window> {
    let tip = chain.status().await?.height;
    let from = first_height_since(chain, tip, since_ms).await?;
    blocks_between(chain, from, tip).await
}

/// Blocks `from..=to` with their transactions and receipts.
pub async fn blocks_between(chain: &ChainClient, from: u64, to: u64) -> Result<Window> {
    let mut w = Window {
        from_height: from,
        to_height: to,
        ..Default::default()
    };
    if from > to {
        return Ok(w);
    }
    let mut stream = chain.subscribe(from).await?;
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|e| anyhow!("block stream from {}: {e}", chain.endpoint()))?;
        let Some(cb) = msg else { break };
        let Some(info) = cb.block.as_ref() else {
            continue;
        };
        if info.height > to {
            break;
        }
        let receipts = block_receipts(&cb)?;
        w.blocks += 1;
        w.block_times.push((info.height, info.time_ms));
        for (raw, receipt) in info.transactions.iter().zip(receipts) {
            let tx = SignedTransaction::decode(raw).map_err(|e| {
                anyhow!(
                    "block {} holds an undecodable transaction: {e}",
                    info.height
                )
            })?;
            w.txs.push(ChainTx {
                tx,
                receipt,
                time_ms: info.time_ms,
            });
        }
        if info.height >= to {
            break;
        }
    }
    Ok(w)
}
