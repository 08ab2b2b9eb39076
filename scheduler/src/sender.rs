//! Sends the scheduler's transactions with locally sequenced nonces, so concurrent dispatch
//! tasks do not race for the same nonce.

use aitbc_protocol::client::{ChainClient, ClientError, Committed};
use aitbc_protocol::tx::{Action, Transaction};
use aitbc_protocol::{Amount, Hash, Keypair};
use std::time::Duration;
use tokio::sync::Mutex;

pub struct TxSender {
    chain: ChainClient,
    key: Keypair,
    chain_id: String,
    fee: Amount,
    next_nonce: Mutex<Option<u64>>,
}

impl TxSender {
    pub fn new(chain: ChainClient, key: Keypair, chain_id: String, fee: Amount) -> TxSender {
        TxSender {
            chain,
            key,
            chain_id,
            fee,
            next_nonce: Mutex::new(None),
        }
    }

    /// Signs and submits `action`; returns its hash once the node accepted it into its mempool.
    pub async fn send(&self, action: Action) -> Result<Hash, ClientError> {
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
        match self.chain.submit(&tx.sign(&self.key)).await {
            Ok(h) => {
                *next = Some(nonce + 1);
                Ok(h)
            }
            Err(e) => {
                // Re-read the nonce from the node next time.
                *next = None;
                Err(e)
            }
        }
    }

    /// Sends and waits for the commit; an action rejected in its block is `Rejected(reason)`.
    pub async fn send_and_wait(
        &self,
        action: Action,
        timeout: Duration,
    ) -> Result<Committed, ClientError> {
        let hash = self.send(action).await?;
        let c = self.chain.wait(&hash, timeout).await?;
        match &c.receipt.error {
            Some(e) => Err(ClientError::Rejected(e.clone())),
            None => Ok(c),
        }
    }
}
