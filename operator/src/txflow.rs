//! Exactly-once transactions. A reconciler signs a transaction, records it (hash and signed
//! bytes) in the resource's status, and only then submits it. On every later reconcile the
//! recorded transaction is followed: committed, still in flight (resubmit the same bytes: the
//! same hash, which the chain never applies twice), or dead (its nonce was used by another
//! committed transaction and it is on no block: only then may a new one be signed). A node's
//! refusal is typed by its gRPC status code and never ends the record: another node may still
//! commit the transaction.

use crate::chain::{ChainApi, TxState};
use crate::error::{Error, Result};
use aitbc_crds::PendingTx;
use aitbc_protocol::client::ClientError;
use aitbc_protocol::model::TxReceipt;
use aitbc_protocol::tx::{Action, SignedTransaction, Transaction};
use aitbc_protocol::{Amount, Hash, Keypair};
use std::time::Duration;

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
    /// The node we asked refused it. That proves nothing about the chain (another node may hold
    /// it and commit it): the record stays and the same bytes are submitted again later.
    Refused(Refusal),
    /// Submitted and not yet committed.
    InFlight,
    /// On no block and never can be: its nonce was used by another committed transaction.
    Dead,
}

/// Why a node refused a submission, typed from its gRPC status code (never from its text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// Back-pressure (`RESOURCE_EXHAUSTED`): the pool is full, the transaction is fine.
    Busy,
    /// The node refused the transaction itself (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`,
    /// `PERMISSION_DENIED`): still only that node's view of it.
    Refused,
}

impl Refusal {
    /// When to send the same bytes again.
    pub fn retry_after(&self) -> Duration {
        match self.kind {
            RefusalKind::Busy => Duration::from_secs(5),
            RefusalKind::Refused => Duration::from_secs(30),
        }
    }
}

/// What one submission says, classified by the client error's variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Accepted now, or already held by the node (the same hash is never applied twice).
    InFlight,
    /// Refused by this node.
    Refused(Refusal),
}

/// Pure: a submission's result as the transaction flow sees it. Transport and other trouble
/// stay errors (the record stays and the next reconcile resubmits).
pub fn classify_submit<T>(result: Result<T, ClientError>) -> Result<Submitted, ClientError> {
    match result {
        Ok(_) | Err(ClientError::AlreadyKnown(_)) => Ok(Submitted::InFlight),
        Err(ClientError::Busy(reason)) => Ok(Submitted::Refused(Refusal {
            kind: RefusalKind::Busy,
            reason,
        })),
        Err(ClientError::Rejected(reason)) => Ok(Submitted::Refused(Refusal {
            kind: RefusalKind::Refused,
            reason,
        })),
        Err(e) => Err(e),
    }
}

/// Pure: a recorded transaction unknown to the chain can be abandoned only when the sender's
/// committed nonce has moved past it (another committed transaction used that nonce).
pub fn nonce_used_by_another(committed_nonce: u64, recorded_nonce: u64) -> bool {
    committed_nonce > recorded_nonce
}

/// Follows (and if needed resubmits, always the same bytes) a recorded transaction.
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
    if nonce_used_by_another(account.nonce, p.nonce) {
        // The nonce is spent: by this very transaction (committed in between) or by another.
        return Ok(committed(chain, &hash).await?.unwrap_or(Progress::Dead));
    }
    match classify_submit(chain.submit(&stx).await)? {
        Submitted::InFlight => Ok(Progress::InFlight),
        // One node's refusal: the chain may still commit it elsewhere; look once more.
        Submitted::Refused(r) => Ok(committed(chain, &hash)
            .await?
            .unwrap_or(Progress::Refused(r))),
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

/// Submits a transaction already recorded in status. A refusal keeps the record
/// (`Progress::Refused`): the next reconcile follows it and submits the same bytes again.
pub async fn submit(chain: &dyn ChainApi, stx: &SignedTransaction) -> Result<Progress> {
    Ok(match classify_submit(chain.submit(stx).await)? {
        Submitted::InFlight => Progress::InFlight,
        Submitted::Refused(r) => Progress::Refused(r),
    })
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

    #[test]
    fn key_custody_refusals_are_classified_by_variant_and_never_end_the_record() {
        let same = "the mempool is full".to_string();
        assert_eq!(
            classify_submit::<()>(Err(ClientError::Busy(same.clone()))).unwrap(),
            Submitted::Refused(Refusal {
                kind: RefusalKind::Busy,
                reason: same.clone()
            })
        );
        assert_eq!(
            classify_submit::<()>(Err(ClientError::AlreadyKnown("x".into()))).unwrap(),
            Submitted::InFlight,
            "a node that already holds the transaction has it in flight"
        );
        // The text says "already" but the code says refused: the text is not looked at.
        assert_eq!(
            classify_submit::<()>(Err(ClientError::Rejected("already pending".into()))).unwrap(),
            Submitted::Refused(Refusal {
                kind: RefusalKind::Refused,
                reason: "already pending".into()
            })
        );
        assert!(classify_submit::<()>(Err(ClientError::Rpc("boom".into()))).is_err());
        assert_eq!(classify_submit(Ok(())).unwrap(), Submitted::InFlight);
    }

    #[test]
    fn key_custody_only_a_used_nonce_proves_a_transaction_dead() {
        assert!(!nonce_used_by_another(3, 3), "nonce 3 is still free");
        assert!(!nonce_used_by_another(2, 3));
        assert!(nonce_used_by_another(4, 3));
    }
}
