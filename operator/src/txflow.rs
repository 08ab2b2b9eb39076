//! Exactly-once transactions. A reconciler signs a transaction, records it (hash and signed
//! bytes) in the resource's status, and only then submits it. On every later reconcile the
//! recorded transaction is followed: committed, still in flight (resubmit the same bytes: the
//! same hash, which the chain never applies twice), or dead (its nonce was used by another
//! transaction and it is on no block: only then may a new one be signed).

use crate::chain::{ChainApi, TxState};
use crate::error::{Error, Result};
use aitbc_crds::PendingTx;
use aitbc_protocol::client::ClientError;
use aitbc_protocol::model::TxReceipt;
use aitbc_protocol::tx::{Action, SignedTransaction, Transaction};
use aitbc_protocol::{Amount, Hash, Keypair};

/// Signs `action` and returns the transaction with its status record.
pub fn sign(
    chain_id: &str,
    key: &Keypair,
    nonce: u64,
    fee: Amount,
    action: Action,
) -> (SignedTransaction, PendingTx) {
    let name = action.name().to_string();
    let stx = Transaction {
        chain_id: chain_id.to_string(),
        sender: key.public(),
        nonce,
        fee,
        action,
    }
    .sign(key);
    let pending = PendingTx {
        action: name,
        hash: stx.hash().to_hex(),
        nonce,
        signed_tx: hex::encode(stx.encode()),
    };
    (stx, pending)
}

/// Decodes a recorded transaction.
pub fn decode(p: &PendingTx) -> Result<SignedTransaction> {
    let bytes = hex::decode(&p.signed_tx)
        .map_err(|e| Error::InvalidSpec(format!("status.pendingTx.signedTx is not hex: {e}")))?;
    SignedTransaction::decode(&bytes)
        .map_err(|e| Error::InvalidSpec(format!("status.pendingTx.signedTx: {e}")))
}

/// Where a recorded transaction stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Applied in a block.
    Applied(TxReceipt),
    /// In a block, but rejected there (the nonce and fee are spent; do not retry blindly).
    RejectedInBlock(String),
    /// Refused at submission: never entered the chain (safe to sign again later).
    Refused(String),
    /// Submitted and not yet committed.
    InFlight,
    /// On no block and never can be: its nonce was used by another transaction.
    Dead,
}

/// Follows (and if needed resubmits) a recorded transaction.
pub async fn progress(chain: &dyn ChainApi, p: &PendingTx) -> Result<Progress> {
    let hash: Hash = p
        .hash
        .parse()
        .map_err(|e| Error::InvalidSpec(format!("status.pendingTx.hash: {e}")))?;
    if let Some(done) = committed(chain, &hash).await? {
        return Ok(done);
    }
    let stx = decode(p)?;
    if stx.hash() != hash {
        return Err(Error::InvalidSpec(
            "status.pendingTx.hash does not match its signed transaction".into(),
        ));
    }
    let account = chain.account(&stx.tx.sender_address()).await?;
    if account.nonce > p.nonce {
        // The nonce is spent; the transaction may have been committed in between.
        return Ok(committed(chain, &hash).await?.unwrap_or(Progress::Dead));
    }
    match chain.submit(&stx).await {
        Ok(_) => Ok(Progress::InFlight),
        Err(ClientError::Rejected(reason)) => {
            // Already in the mempool or a block: the same hash is never applied twice.
            if reason.contains("already")
                || reason.contains("duplicate")
                || reason.contains("known")
            {
                Ok(Progress::InFlight)
            } else {
                Ok(committed(chain, &hash)
                    .await?
                    .unwrap_or(Progress::Refused(reason)))
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn committed(chain: &dyn ChainApi, hash: &Hash) -> Result<Option<Progress>> {
    Ok(match chain.tx_state(hash).await? {
        TxState::Committed(r) => Some(match &r.error {
            None => Progress::Applied(r),
            Some(e) => Progress::RejectedInBlock(e.clone()),
        }),
        TxState::Pending => Some(Progress::InFlight),
        TxState::Unknown => None,
    })
}

/// Submits a transaction already recorded in status. A refusal is `Progress::Refused`.
pub async fn submit(chain: &dyn ChainApi, stx: &SignedTransaction) -> Result<Progress> {
    match chain.submit(stx).await {
        Ok(_) => Ok(Progress::InFlight),
        Err(ClientError::Rejected(reason)) => Ok(Progress::Refused(reason)),
        // Unreachable or other trouble: the record stays and the next reconcile resubmits.
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_holds_the_exact_signed_bytes() {
        let k = Keypair::generate();
        let (stx, p) = sign(
            "c",
            &k,
            7,
            Amount(1),
            Action::CancelBid {
                bid_id: "bid-1".into(),
            },
        );
        assert_eq!(p.nonce, 7);
        assert_eq!(p.action, "cancel-bid");
        assert_eq!(decode(&p).unwrap(), stx);
        assert_eq!(p.hash, stx.hash().to_hex());
        assert!(!p.signed_tx.contains(&k.secret_hex()));
    }
}
