//! The ledger's state transition: a pure, deterministic function of (state, block) that returns
//! the state's writes and one receipt per transaction. Each transaction applies whole or not at
//! all; a rejected transaction leaves a receipt with the reason.

use super::actions::Exec;
use super::keys;
use super::params::ChainParams;
use super::state::{BalanceTotals, CorruptState, Overlay, StateRead, Writes};
use aitbc_protocol::crypto::verify_batch;
use aitbc_protocol::hash::merkle_root;
use aitbc_protocol::model::TxReceipt;
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Address, Amount, Hash, PublicKey};

/// Why a transaction was rejected. The text is what users read in receipts and API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("bad signature: the transaction was not signed by its sender key")]
    BadSignature,
    #[error("wrong chain: transaction is for chain {got:?}, this chain is {expected:?}")]
    WrongChain { expected: String, got: String },
    #[error("stale nonce: account expects nonce {expected}, transaction has {got}")]
    StaleNonce { expected: u64, got: u64 },
    #[error("future nonce: account expects nonce {expected}, transaction has {got}")]
    FutureNonce { expected: u64, got: u64 },
    #[error("fee {got} AIT is below the minimum fee {min} AIT")]
    FeeTooLow { min: Amount, got: Amount },
    #[error("insufficient funds: balance is {balance} AIT, {needed} AIT needed")]
    InsufficientFunds { balance: Amount, needed: Amount },
    #[error("amount overflow")]
    Overflow,
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("unknown listing {0}")]
    UnknownListing(String),
    #[error("unknown bid {0}")]
    UnknownBid(String),
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("unknown agent {0}")]
    UnknownAgent(PublicKey),
    #[error("agent registration is not signed by the agent key {0}: the agent must sign its registration for this owner, chain, agent id and serves (aitbc-gpu-agent identity --owner ADDR --chain-id ID prints the signed action)")]
    BadAgentProof(PublicKey),
    #[error("listing {0} is closed")]
    ListingClosed(String),
    #[error("bid of {bid} AIT is below the listing's price of {price} AIT")]
    BidBelowPrice { bid: Amount, price: Amount },
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("wrong state: {0}")]
    WrongState(String),
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

impl From<CorruptState> for TxError {
    fn from(e: CorruptState) -> Self {
        TxError::Corrupt(e.to_string())
    }
}

/// What a block is applied in: its height, time and proposer, and the chain's parameters.
#[derive(Clone)]
pub struct BlockContext<'p> {
    pub height: u64,
    pub time_ms: u64,
    pub proposer: PublicKey,
    pub params: &'p ChainParams,
    /// Transactions whose signatures this node has already verified (e.g. on mempool admission);
    /// their check is skipped. The outcome is the same either way, so determinism is unaffected.
    pub verified: Option<&'p (dyn Fn(&Hash) -> bool + Sync)>,
}

/// Result of applying a block.
#[derive(Debug)]
pub struct BlockOutcome {
    pub writes: Writes,
    pub receipts: Vec<TxReceipt>,
    /// Positions of the transactions that failed the envelope check (they paid no fee and
    /// changed nothing). Consensus refuses a block with any: such a transaction would take
    /// block space for free.
    pub envelope_rejected: Vec<usize>,
    /// The transactions' hashes, in block order.
    pub tx_hashes: Vec<Hash>,
    pub tx_root: Hash,
    pub state_root: Hash,
}

/// Applies `txs` in order on top of `state`. Deterministic: the same state and block give the same
/// writes, receipts and roots on every node.
pub fn apply_block<S: StateRead + ?Sized>(
    state: &S,
    ctx: &BlockContext<'_>,
    txs: &[SignedTransaction],
) -> Result<BlockOutcome, CorruptState> {
    let hashes: Vec<Hash> = txs.iter().map(|t| t.hash()).collect();
    apply_block_with_hashes(state, ctx, txs, hashes)
}

/// [`apply_block`] for a caller that already holds the transactions' hashes (`hashes[i]` is
/// `txs[i].hash()`), e.g. hashed from the bytes they arrived in.
pub fn apply_block_with_hashes<S: StateRead + ?Sized>(
    state: &S,
    ctx: &BlockContext<'_>,
    txs: &[SignedTransaction],
    hashes: Vec<Hash>,
) -> Result<BlockOutcome, CorruptState> {
    debug_assert_eq!(txs.len(), hashes.len());
    let sig_ok = verify_signatures(txs, &hashes, ctx.verified);
    let mut ov = Overlay::new(state);
    let mut receipts = Vec::with_capacity(txs.len());
    let mut envelope_rejected = Vec::new();
    for (i, stx) in txs.iter().enumerate() {
        let (receipt, envelope_ok) = apply_tx(&mut ov, ctx, stx, hashes[i], i as u32, sig_ok[i])?;
        if !envelope_ok {
            envelope_rejected.push(i);
        }
        receipts.push(receipt);
    }
    // One value per block rather than one per transaction: the receipts are committed state (the
    // state root covers them), and the indexes by transaction and by account are derived from
    // them off the consensus path (`crate::index`).
    if !receipts.is_empty() {
        ov.write(keys::block_receipts(ctx.height), &receipts);
    }
    if let Some(before) = ov.read::<BalanceTotals>(keys::BALANCES)? {
        let after = ov.balance_totals(before)?;
        if after != before {
            ov.write(keys::BALANCES.to_vec(), &after);
        }
    }
    let tx_root = merkle_root(&hashes);
    let prev_root: Hash = ov.read(keys::STATE_ROOT)?.unwrap_or_default();
    let mut writes = ov.into_writes();
    let state_root = next_state_root(&prev_root, ctx.height, &writes);
    writes.insert(
        keys::STATE_ROOT.to_vec(),
        Some(borsh::to_vec(&state_root).expect("encode hash")),
    );
    Ok(BlockOutcome {
        writes,
        receipts,
        envelope_rejected,
        tx_hashes: hashes,
        tx_root,
        state_root,
    })
}

/// The state root chains every block's writes: `H(prev_root, height, H(writes in key order))`.
/// Two nodes have the same root at a height exactly when they applied the same writes from the
/// same genesis, so comparing roots compares whole states.
pub fn next_state_root(prev: &Hash, height: u64, writes: &Writes) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in writes {
        h.update((k.len() as u32).to_le_bytes());
        h.update(k);
        match v {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u32).to_le_bytes());
                h.update(v);
            }
            None => h.update([0]),
        }
    }
    let writes_hash: [u8; 32] = h.finalize().into();
    Hash::domain(
        "aitbc/state-root/v1",
        &[&prev.0, &height.to_le_bytes(), &writes_hash],
    )
}

/// Batch-verifies all signatures; falls back to one-by-one only when the batch fails, to find
/// which transactions are bad.
fn verify_signatures(
    txs: &[SignedTransaction],
    hashes: &[Hash],
    verified: Option<&(dyn Fn(&Hash) -> bool + Sync)>,
) -> Vec<bool> {
    let todo: Vec<usize> = (0..txs.len())
        .filter(|&i| !verified.is_some_and(|v| v(&hashes[i])))
        .collect();
    let mut ok = vec![true; txs.len()];
    if todo.is_empty() {
        return ok;
    }
    let msgs: Vec<Vec<u8>> = todo.iter().map(|&i| txs[i].tx.signing_bytes()).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let sigs: Vec<_> = todo.iter().map(|&i| txs[i].signature).collect();
    let keys: Vec<_> = todo.iter().map(|&i| txs[i].tx.sender).collect();
    if verify_batch(&refs, &sigs, &keys).is_ok() {
        return ok;
    }
    for (&i, m) in todo.iter().zip(&msgs) {
        ok[i] = txs[i].tx.sender.verify(m, &txs[i].signature).is_ok();
    }
    ok
}

/// Checks that do not need the state: signature and chain id. Used by the mempool too.
pub fn check_stateless(stx: &SignedTransaction, params: &ChainParams) -> Result<(), TxError> {
    check_envelope(stx, params)?;
    stx.verify_signature().map_err(|_| TxError::BadSignature)
}

/// The stateless checks other than the signature: chain id and minimum fee.
pub fn check_envelope(stx: &SignedTransaction, params: &ChainParams) -> Result<(), TxError> {
    if stx.tx.chain_id != params.chain_id {
        return Err(TxError::WrongChain {
            expected: params.chain_id.clone(),
            got: stx.tx.chain_id.clone(),
        });
    }
    if stx.tx.fee < params.min_fee {
        return Err(TxError::FeeTooLow {
            min: params.min_fee,
            got: stx.tx.fee,
        });
    }
    Ok(())
}

/// Envelope of one transaction: signature, chain id, minimum fee, nonce, fee affordable. On
/// success the fee is paid to the proposer and the nonce used, whatever the action does next;
/// on failure nothing changes, not even the nonce.
fn pay_envelope<S: StateRead + ?Sized>(
    ov: &mut Overlay<'_, S>,
    ctx: &BlockContext<'_>,
    stx: &SignedTransaction,
    sig_ok: bool,
) -> Result<Result<Address, TxError>, CorruptState> {
    let tx = &stx.tx;
    if !sig_ok {
        return Ok(Err(TxError::BadSignature));
    }
    if let Err(e) = check_envelope(stx, ctx.params) {
        return Ok(Err(e));
    }
    let sender = tx.sender_address();
    let mut acct = ov.account(&sender)?;
    if tx.nonce < acct.nonce {
        return Ok(Err(TxError::StaleNonce {
            expected: acct.nonce,
            got: tx.nonce,
        }));
    }
    if tx.nonce > acct.nonce {
        return Ok(Err(TxError::FutureNonce {
            expected: acct.nonce,
            got: tx.nonce,
        }));
    }
    let Some(after_fee) = acct.balance.checked_sub(tx.fee) else {
        return Ok(Err(TxError::InsufficientFunds {
            balance: acct.balance,
            needed: tx.fee,
        }));
    };
    acct.balance = after_fee;
    acct.nonce += 1;
    ov.put_account(&sender, &acct);
    let proposer = ctx.proposer.address();
    let mut prop_acct = ov.account(&proposer)?;
    prop_acct.balance = prop_acct
        .balance
        .checked_add(tx.fee)
        .ok_or_else(|| CorruptState {
            key: "proposer balance".into(),
            reason: "overflow".into(),
        })?;
    ov.put_account(&proposer, &prop_acct);
    Ok(Ok(sender))
}

/// Applies one transaction: its envelope, then its action (whole, or rolled back with the
/// reason in the receipt). The flag says whether the envelope passed.
fn apply_tx<S: StateRead + ?Sized>(
    ov: &mut Overlay<'_, S>,
    ctx: &BlockContext<'_>,
    stx: &SignedTransaction,
    hash: Hash,
    index: u32,
    sig_ok: bool,
) -> Result<(TxReceipt, bool), CorruptState> {
    let sender = match pay_envelope(ov, ctx, stx, sig_ok)? {
        Ok(sender) => sender,
        Err(e) => {
            let receipt = TxReceipt {
                tx_hash: hash,
                height: ctx.height,
                index,
                error: Some(e.to_string()),
                fee_paid: Amount::ZERO,
                events: vec![],
            };
            return Ok((receipt, false));
        }
    };
    let tx = &stx.tx;
    let checkpoint = ov.checkpoint();
    let mut ex = Exec {
        ov,
        ctx,
        sender,
        hash,
        events: Vec::new(),
    };
    let result = ex.action(&tx.action);
    let events = std::mem::take(&mut ex.events);
    let error = match result {
        Ok(()) => {
            ov.commit(checkpoint);
            None
        }
        Err(TxError::Corrupt(reason)) => {
            return Err(CorruptState {
                key: "during apply".into(),
                reason,
            })
        }
        Err(e) => {
            ov.rollback(checkpoint);
            Some(e.to_string())
        }
    };
    let receipt = TxReceipt {
        tx_hash: hash,
        height: ctx.height,
        index,
        events: if error.is_some() { vec![] } else { events },
        error,
        fee_paid: tx.fee,
    };
    Ok((receipt, true))
}
