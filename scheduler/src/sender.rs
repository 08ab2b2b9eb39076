//! Sends the scheduler's transactions with locally sequenced nonces, so concurrent dispatch
//! tasks do not race for the same nonce, and waits for their commits through the block stream
//! the follower already reads (with a slow poll as a fallback), so thousands of in-flight
//! dispatches do not poll the node.

use aitbc_protocol::client::{ChainClient, ClientError, Committed};
use aitbc_protocol::model::TxReceipt;
use aitbc_protocol::tx::{Action, Transaction};
use aitbc_protocol::{Amount, Hash, Keypair};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Mutex};

/// How often a waiting transaction is looked up directly (when the block stream lags).
const POLL: Duration = Duration::from_millis(1000);

pub struct TxSender {
    chain: ChainClient,
    key: Keypair,
    chain_id: String,
    fee: Amount,
    next_nonce: Mutex<Option<u64>>,
    waiters: parking_lot::Mutex<HashMap<Hash, oneshot::Sender<TxReceipt>>>,
}

impl TxSender {
    pub fn new(chain: ChainClient, key: Keypair, chain_id: String, fee: Amount) -> TxSender {
        TxSender {
            chain,
            key,
            chain_id,
            fee,
            next_nonce: Mutex::new(None),
            waiters: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Signs and submits `action`; returns its hash once the node accepted it into its mempool.
    pub async fn send(&self, action: Action) -> Result<Hash, ClientError> {
        self.submit(action, None).await
    }

    async fn submit(
        &self,
        action: Action,
        waiter: Option<oneshot::Sender<TxReceipt>>,
    ) -> Result<Hash, ClientError> {
        let mut next = self.next_nonce.lock().await;
        let nonce = match *next {
            Some(n) => n,
            None => self.chain.account(&self.key.address()).await?.pending_nonce,
        };
        let tx = Transaction {
            chain_id: self.chain_id.clone(),
            sender: self.key.public(),
            nonce,
            fee: self.fee,
            action,
        };
        let stx = tx.sign(&self.key);
        let hash = stx.hash();
        // Registered before submitting, so a commit seen by the follower is never missed.
        if let Some(w) = waiter {
            self.waiters.lock().insert(hash, w);
        }
        match self.chain.submit(&stx).await {
            Ok(h) => {
                *next = Some(nonce + 1);
                if h != hash {
                    // Defensive: key the waiter by the hash the node reports.
                    let mut w = self.waiters.lock();
                    if let Some(waiter) = w.remove(&hash) {
                        w.insert(h, waiter);
                    }
                }
                Ok(h)
            }
            Err(e) => {
                self.waiters.lock().remove(&hash);
                // Re-read the nonce from the node next time.
                *next = None;
                Err(e)
            }
        }
    }

    /// Called by the follower with every committed block's receipts.
    pub fn committed(&self, receipts: &[TxReceipt]) {
        let mut waiters = self.waiters.lock();
        if waiters.is_empty() {
            return;
        }
        for r in receipts {
            if let Some(w) = waiters.remove(&r.tx_hash) {
                let _ = w.send(r.clone());
            }
        }
    }

    /// Sends and waits for the commit; an action rejected in its block is `Rejected(reason)`.
    pub async fn send_and_wait(
        &self,
        action: Action,
        timeout: Duration,
    ) -> Result<Committed, ClientError> {
        let (tx, mut rx) = oneshot::channel();
        let hash = self.submit(action, Some(tx)).await?;
        let start = Instant::now();
        let result = loop {
            match tokio::time::timeout(POLL, &mut rx).await {
                Ok(Ok(receipt)) => {
                    break Ok(Committed {
                        hash,
                        height: receipt.height,
                        receipt,
                    })
                }
                Ok(Err(_)) => {
                    break self
                        .chain
                        .wait(&hash, timeout.saturating_sub(start.elapsed()))
                        .await
                }
                Err(_) => {
                    if let Ok(info) = self.chain.transaction(&hash, false).await {
                        if info.status == "committed" || info.status == "rejected" {
                            break self.chain.wait(&hash, Duration::from_secs(1)).await;
                        }
                    }
                    if start.elapsed() > timeout {
                        break Err(ClientError::Timeout {
                            hash,
                            waited: timeout,
                        });
                    }
                }
            }
        };
        self.waiters.lock().remove(&hash);
        let c = result?;
        match &c.receipt.error {
            Some(e) => Err(ClientError::Rejected(e.clone())),
            None => Ok(c),
        }
    }
}
