//! The ledger's state transition: a pure, deterministic function of (state, block) that returns
//! the state's writes and one receipt per transaction. Each transaction applies whole or not at
//! all; a rejected transaction leaves a receipt with the reason.

use super::keys;
use super::params::ChainParams;
use super::state::{BalanceTotals, CorruptState, Overlay, StateRead, Writes};
use aitbc_protocol::crypto::verify_batch;
use aitbc_protocol::hash::merkle_root;
use aitbc_protocol::model::{
    AgentRecord, Bid, BidStatus, Event, Job, JobStatus, Listing, Totals, TxReceipt,
};
use aitbc_protocol::registration::verify_registration;
use aitbc_protocol::tx::{object_id, Action, SignedTransaction};
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

const MAX_NAME: usize = 128;
const MAX_TEXT: usize = 4096;
const MAX_PARAMS: usize = 32;
const MAX_GPUS: u32 = 64;

struct Exec<'o, 'a, 'c, S: StateRead + ?Sized> {
    ov: &'o mut Overlay<'a, S>,
    ctx: &'c BlockContext<'c>,
    sender: Address,
    hash: Hash,
    events: Vec<Event>,
}

fn ensure(cond: bool, e: impl FnOnce() -> TxError) -> Result<(), TxError> {
    if cond {
        Ok(())
    } else {
        Err(e())
    }
}

fn invalid(msg: &str) -> TxError {
    TxError::Invalid(msg.to_string())
}

impl<S: StateRead + ?Sized> Exec<'_, '_, '_, S> {
    fn action(&mut self, action: &Action) -> Result<(), TxError> {
        match action {
            Action::Transfer { to, amount } => self.transfer(*to, *amount),
            Action::CreateListing {
                name,
                service_type,
                price,
                description,
                parameters,
                runtime,
            } => {
                ensure(!name.trim().is_empty() && name.len() <= MAX_NAME, || {
                    invalid("listing name must be 1-128 characters")
                })?;
                ensure(description.len() <= MAX_TEXT, || {
                    invalid("description is longer than 4096 bytes")
                })?;
                ensure(parameters.len() <= MAX_PARAMS, || {
                    invalid("more than 32 parameters")
                })?;
                ensure(!price.is_zero(), || {
                    invalid("price must be greater than zero")
                })?;
                let id = object_id("svc", &self.hash);
                ensure(self.ov.listing(&id)?.is_none(), || {
                    TxError::WrongState(format!("listing {id} exists"))
                })?;
                self.ov.put_listing(&Listing {
                    id: id.clone(),
                    owner: self.sender,
                    name: name.trim().to_string(),
                    service_type: *service_type,
                    price: *price,
                    description: description.clone(),
                    parameters: parameters.clone(),
                    runtime: runtime.clone(),
                    active: true,
                    created_height: self.ctx.height,
                    bids: 0,
                    jobs: 0,
                    revenue: Amount::ZERO,
                });
                self.events.push(Event::ListingCreated {
                    listing_id: id,
                    owner: self.sender,
                });
                Ok(())
            }
            Action::UpdateListing {
                listing_id,
                price,
                description,
                runtime,
            } => {
                let mut l = self.owned_listing(listing_id)?;
                ensure(l.active, || TxError::ListingClosed(listing_id.clone()))?;
                if let Some(p) = price {
                    ensure(!p.is_zero(), || invalid("price must be greater than zero"))?;
                    l.price = *p;
                }
                if let Some(d) = description {
                    ensure(d.len() <= MAX_TEXT, || {
                        invalid("description is longer than 4096 bytes")
                    })?;
                    l.description = d.clone();
                }
                if let Some(r) = runtime {
                    l.runtime = r.clone();
                }
                self.ov.put_listing(&l);
                self.events.push(Event::ListingUpdated {
                    listing_id: listing_id.clone(),
                });
                Ok(())
            }
            Action::CloseListing { listing_id } => {
                let mut l = self.owned_listing(listing_id)?;
                ensure(l.active, || TxError::ListingClosed(listing_id.clone()))?;
                l.active = false;
                self.ov.put_listing(&l);
                self.events.push(Event::ListingClosed {
                    listing_id: listing_id.clone(),
                });
                Ok(())
            }
            Action::PlaceBid { listing_id, amount } => self.place_bid(listing_id, *amount),
            Action::AcceptBid { bid_id } => {
                let (mut bid, l) = self.bid_and_listing(bid_id)?;
                ensure(l.owner == self.sender, || {
                    TxError::NotAllowed(format!(
                        "only the listing's owner {} may accept bid {bid_id}",
                        l.owner
                    ))
                })?;
                ensure(bid.status == BidStatus::Pending, || {
                    TxError::WrongState(format!(
                        "bid {bid_id} is {}, not pending",
                        bid.status.as_str()
                    ))
                })?;
                bid.status = BidStatus::Accepted;
                bid.updated_height = self.ctx.height;
                self.ov.put_bid(&bid);
                self.events.push(Event::BidAccepted {
                    bid_id: bid_id.clone(),
                    listing_id: l.id,
                });
                Ok(())
            }
            Action::RejectBid { bid_id } => {
                let (mut bid, l) = self.bid_and_listing(bid_id)?;
                ensure(l.owner == self.sender, || {
                    TxError::NotAllowed(format!(
                        "only the listing's owner {} may reject bid {bid_id}",
                        l.owner
                    ))
                })?;
                ensure(bid.status == BidStatus::Pending, || {
                    TxError::WrongState(format!(
                        "bid {bid_id} is {}, not pending",
                        bid.status.as_str()
                    ))
                })?;
                let refunded = self.refund_bid(&mut bid, BidStatus::Rejected)?;
                self.events.push(Event::BidRejected {
                    bid_id: bid_id.clone(),
                    refunded,
                });
                Ok(())
            }
            Action::CancelBid { bid_id } => {
                let mut bid = self
                    .ov
                    .bid(bid_id)?
                    .ok_or_else(|| TxError::UnknownBid(bid_id.clone()))?;
                ensure(bid.bidder == self.sender, || {
                    TxError::NotAllowed(format!("only the bidder may cancel bid {bid_id}"))
                })?;
                ensure(bid.status == BidStatus::Pending, || {
                    TxError::WrongState(format!(
                        "bid {bid_id} is {}; only a pending bid can be cancelled",
                        bid.status.as_str()
                    ))
                })?;
                let refunded = self.refund_bid(&mut bid, BidStatus::Cancelled)?;
                self.events.push(Event::BidCancelled {
                    bid_id: bid_id.clone(),
                    refunded,
                });
                Ok(())
            }
            Action::SettleBid { bid_id } => {
                let (mut bid, mut l) = self.bid_and_listing(bid_id)?;
                ensure(bid.bidder == self.sender, || {
                    TxError::NotAllowed(format!("only the bidder may settle bid {bid_id}"))
                })?;
                ensure(bid.status == BidStatus::Accepted, || {
                    TxError::WrongState(format!(
                        "bid {bid_id} is {}; only an accepted bid can be settled",
                        bid.status.as_str()
                    ))
                })?;
                let (paid, fee) = self.pay_from_escrow(&bid.bidder, &l.owner, bid.amount)?;
                bid.status = BidStatus::Settled;
                bid.updated_height = self.ctx.height;
                self.ov.put_bid(&bid);
                l.revenue = l.revenue.checked_add(paid).ok_or(TxError::Overflow)?;
                self.ov.put_listing(&l);
                self.events.push(Event::BidSettled {
                    bid_id: bid_id.clone(),
                    provider: l.owner,
                    paid,
                    fee_burned: fee,
                });
                Ok(())
            }
            Action::SubmitJob {
                listing_id,
                bid_id,
                payment,
                spec,
                deadline_blocks,
            } => self.submit_job(
                listing_id.as_deref(),
                bid_id.as_deref(),
                *payment,
                spec,
                *deadline_blocks,
            ),
            Action::CancelJob { job_id } => {
                let mut job = self.job(job_id)?;
                ensure(job.customer == self.sender, || {
                    TxError::NotAllowed(format!("only the customer may cancel job {job_id}"))
                })?;
                ensure(
                    matches!(job.status, JobStatus::Pending | JobStatus::Assigned),
                    || {
                        TxError::WrongState(format!(
                            "job {job_id} is {}; only a pending or assigned job can be cancelled",
                            job.status.as_str()
                        ))
                    },
                )?;
                self.refund_job(&mut job)
            }
            Action::RegisterAgent {
                agent_key,
                agent_id,
                serves,
                proof,
            } => {
                ensure(
                    !agent_id.trim().is_empty() && agent_id.len() <= MAX_NAME,
                    || invalid("agent id must be 1-128 characters"),
                )?;
                agent_key
                    .verifying_key()
                    .map_err(|_| invalid("agent key is not a valid ed25519 key"))?;
                // Proof of possession: the agent key consents to this owner, chain, id and serves,
                // so knowing an agent's (public) key is not enough to register it.
                verify_registration(
                    agent_key,
                    &self.ctx.params.chain_id,
                    &self.sender,
                    agent_id,
                    serves,
                    proof,
                )
                .map_err(|_| TxError::BadAgentProof(*agent_key))?;
                if let Some(existing) = self.ov.agent(agent_key)? {
                    ensure(existing.owner == self.sender, || {
                        TxError::NotAllowed(format!(
                            "agent key {agent_key} is registered to {}",
                            existing.owner
                        ))
                    })?;
                }
                self.ov.put_agent(&AgentRecord {
                    key: *agent_key,
                    agent_id: agent_id.trim().to_string(),
                    owner: self.sender,
                    serves: serves.clone(),
                    registered_height: self.ctx.height,
                });
                self.events.push(Event::AgentRegistered {
                    agent_key: *agent_key,
                    owner: self.sender,
                });
                Ok(())
            }
            Action::AssignJob { job_id, agent_key } => {
                ensure(self.ctx.params.schedulers.contains(&self.sender), || {
                    TxError::NotAllowed(format!("{} is not a scheduler of this chain", self.sender))
                })?;
                let mut job = self.job(job_id)?;
                ensure(
                    matches!(job.status, JobStatus::Pending | JobStatus::Assigned),
                    || {
                        TxError::WrongState(format!(
                            "job {job_id} is {}; only a pending or assigned job can be assigned",
                            job.status.as_str()
                        ))
                    },
                )?;
                ensure(self.ctx.height <= job.deadline_height, || {
                    TxError::WrongState(format!(
                        "job {job_id} expired at height {}",
                        job.deadline_height
                    ))
                })?;
                let agent = self
                    .ov
                    .agent(agent_key)?
                    .ok_or(TxError::UnknownAgent(*agent_key))?;
                let provider = match &job.listing_id {
                    Some(lid) => {
                        let l = self
                            .ov
                            .listing(lid)?
                            .ok_or_else(|| TxError::UnknownListing(lid.clone()))?;
                        ensure(agent.serves.serves(&l.owner), || {
                            TxError::NotAllowed(format!(
                                "agent {} does not serve provider {}",
                                agent.agent_id, l.owner
                            ))
                        })?;
                        l.owner
                    }
                    None => agent.owner,
                };
                job.provider = Some(provider);
                job.status = JobStatus::Assigned;
                job.assigned_agent = Some(*agent_key);
                job.assignments += 1;
                job.updated_height = self.ctx.height;
                self.ov.put_job(&job);
                self.events.push(Event::JobAssigned {
                    job_id: job_id.clone(),
                    agent_key: *agent_key,
                });
                Ok(())
            }
            Action::ReportResult { receipt } => {
                let r = &receipt.receipt;
                receipt
                    .verify()
                    .map_err(|_| invalid("result receipt signature does not verify"))?;
                ensure(r.chain_id == self.ctx.params.chain_id, || {
                    TxError::WrongChain {
                        expected: self.ctx.params.chain_id.clone(),
                        got: r.chain_id.clone(),
                    }
                })?;
                let mut job = self.job(&r.job_id)?;
                ensure(job.status == JobStatus::Assigned, || {
                    TxError::WrongState(format!(
                        "job {} is {}; results are accepted only for an assigned job",
                        job.id,
                        job.status.as_str()
                    ))
                })?;
                ensure(job.assigned_agent == Some(r.agent_key), || {
                    TxError::NotAllowed(format!(
                        "result signed by agent {} but job {} is assigned to another agent",
                        r.agent_key, job.id
                    ))
                })?;
                job.status = if r.success {
                    JobStatus::Succeeded
                } else {
                    JobStatus::Failed
                };
                job.result = Some(receipt.clone());
                job.updated_height = self.ctx.height;
                self.ov.put_job(&job);
                self.events.push(Event::ResultReported {
                    job_id: job.id,
                    success: r.success,
                    output_digest: r.output_digest,
                });
                Ok(())
            }
            Action::SettleJob { job_id } => {
                let mut job = self.job(job_id)?;
                ensure(job.status == JobStatus::Succeeded, || {
                    TxError::WrongState(format!(
                        "job {job_id} is {}; only a succeeded job can be settled",
                        job.status.as_str()
                    ))
                })?;
                let provider = job.provider.ok_or_else(|| {
                    TxError::Corrupt(format!("job {job_id} succeeded without provider"))
                })?;
                let (paid, fee) = self.pay_from_escrow(&job.customer, &provider, job.escrow)?;
                if let Some(lid) = &job.listing_id {
                    if let Some(mut l) = self.ov.listing(lid)? {
                        l.revenue = l.revenue.checked_add(paid).ok_or(TxError::Overflow)?;
                        self.ov.put_listing(&l);
                    }
                }
                job.status = JobStatus::Settled;
                job.fee_burned = fee;
                job.updated_height = self.ctx.height;
                self.ov.put_job(&job);
                self.events.push(Event::JobSettled {
                    job_id: job_id.clone(),
                    provider,
                    paid,
                    fee_burned: fee,
                });
                Ok(())
            }
            Action::RefundJob { job_id } => {
                let mut job = self.job(job_id)?;
                let expired = matches!(job.status, JobStatus::Pending | JobStatus::Assigned)
                    && self.ctx.height > job.deadline_height;
                ensure(job.status == JobStatus::Failed || expired, || {
                    TxError::WrongState(format!(
                        "job {job_id} is {} (deadline height {}); only a failed or expired job can be refunded",
                        job.status.as_str(),
                        job.deadline_height
                    ))
                })?;
                self.refund_job(&mut job)
            }
        }
    }

    fn transfer(&mut self, to: Address, amount: Amount) -> Result<(), TxError> {
        ensure(!amount.is_zero(), || {
            invalid("transfer amount must be greater than zero")
        })?;
        let mut from = self.ov.account(&self.sender)?;
        from.balance = from
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientFunds {
                balance: from.balance,
                needed: amount,
            })?;
        self.ov.put_account(&self.sender, &from);
        let mut dest = self.ov.account(&to)?;
        dest.balance = dest.balance.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_account(&to, &dest);
        self.events.push(Event::Transferred {
            from: self.sender,
            to,
            amount,
        });
        Ok(())
    }

    fn place_bid(&mut self, listing_id: &str, amount: Amount) -> Result<(), TxError> {
        let mut l = self
            .ov
            .listing(listing_id)?
            .ok_or_else(|| TxError::UnknownListing(listing_id.into()))?;
        ensure(l.active, || TxError::ListingClosed(listing_id.into()))?;
        ensure(amount >= l.price, || TxError::BidBelowPrice {
            bid: amount,
            price: l.price,
        })?;
        ensure(l.owner != self.sender, || {
            TxError::NotAllowed("a provider cannot bid on its own listing".into())
        })?;
        let id = object_id("bid", &self.hash);
        ensure(self.ov.bid(&id)?.is_none(), || {
            TxError::WrongState(format!("bid {id} exists"))
        })?;
        self.lock(&self.sender.clone(), amount)?;
        l.bids += 1;
        self.ov.put_listing(&l);
        self.ov.put_bid(&Bid {
            id: id.clone(),
            listing_id: listing_id.into(),
            bidder: self.sender,
            amount,
            status: BidStatus::Pending,
            created_height: self.ctx.height,
            updated_height: self.ctx.height,
        });
        self.events.push(Event::BidPlaced {
            bid_id: id,
            listing_id: listing_id.into(),
            bidder: self.sender,
            amount,
        });
        Ok(())
    }

    fn submit_job(
        &mut self,
        listing_id: Option<&str>,
        bid_id: Option<&str>,
        payment: Amount,
        spec: &aitbc_protocol::tx::JobSpec,
        deadline_blocks: u64,
    ) -> Result<(), TxError> {
        ensure(spec.gpus <= MAX_GPUS, || {
            invalid("a job may ask for at most 64 GPUs")
        })?;
        ensure(
            spec.prompt.len() <= MAX_TEXT && spec.model.len() <= MAX_NAME,
            || invalid("prompt or model name too long"),
        )?;
        ensure(spec.params.len() <= MAX_PARAMS, || {
            invalid("more than 32 job parameters")
        })?;
        let id = object_id("job", &self.hash);
        ensure(self.ov.job(&id)?.is_none(), || {
            TxError::WrongState(format!("job {id} exists"))
        })?;
        let (listing_id, escrow) = match bid_id {
            Some(bid_id) => {
                let (mut bid, l) = self.bid_and_listing(bid_id)?;
                ensure(bid.bidder == self.sender, || {
                    TxError::NotAllowed(format!("bid {bid_id} belongs to another customer"))
                })?;
                ensure(bid.status == BidStatus::Accepted, || {
                    TxError::WrongState(format!(
                        "bid {bid_id} is {}; a job can draw only on an accepted bid",
                        bid.status.as_str()
                    ))
                })?;
                if let Some(lid) = listing_id {
                    ensure(lid == l.id, || {
                        invalid("the bid belongs to another listing")
                    })?;
                }
                ensure(payment.is_zero() || payment == bid.amount, || {
                    invalid("payment must be omitted or equal to the bid's amount when drawing on a bid")
                })?;
                // The escrow moves from the bid to the job; account and chain escrow totals stay.
                bid.status = BidStatus::UsedByJob;
                bid.updated_height = self.ctx.height;
                self.ov.put_bid(&bid);
                (Some(l.id), bid.amount)
            }
            None => {
                ensure(!payment.is_zero(), || {
                    invalid("payment must be greater than zero")
                })?;
                if let Some(lid) = listing_id {
                    let l = self
                        .ov
                        .listing(lid)?
                        .ok_or_else(|| TxError::UnknownListing(lid.into()))?;
                    ensure(l.active, || TxError::ListingClosed(lid.into()))?;
                    ensure(payment >= l.price, || TxError::BidBelowPrice {
                        bid: payment,
                        price: l.price,
                    })?;
                }
                self.lock(&self.sender.clone(), payment)?;
                (listing_id.map(String::from), payment)
            }
        };
        let provider = match &listing_id {
            Some(lid) => {
                let mut l = self
                    .ov
                    .listing(lid)?
                    .ok_or_else(|| TxError::UnknownListing(lid.clone()))?;
                l.jobs += 1;
                self.ov.put_listing(&l);
                Some(l.owner)
            }
            None => None,
        };
        let deadline = if deadline_blocks == 0 {
            self.ctx.params.default_job_deadline_blocks
        } else {
            deadline_blocks
        };
        self.ov.put_job(&Job {
            id: id.clone(),
            customer: self.sender,
            listing_id,
            bid_id: bid_id.map(String::from),
            provider,
            escrow,
            spec: spec.clone(),
            status: JobStatus::Pending,
            assigned_agent: None,
            assignments: 0,
            result: None,
            created_height: self.ctx.height,
            deadline_height: self.ctx.height.saturating_add(deadline),
            updated_height: self.ctx.height,
            fee_burned: Amount::ZERO,
        });
        self.events.push(Event::JobSubmitted {
            job_id: id,
            customer: self.sender,
            escrow,
        });
        Ok(())
    }

    fn job(&self, id: &str) -> Result<Job, TxError> {
        self.ov
            .job(id)?
            .ok_or_else(|| TxError::UnknownJob(id.into()))
    }

    fn owned_listing(&self, id: &str) -> Result<Listing, TxError> {
        let l = self
            .ov
            .listing(id)?
            .ok_or_else(|| TxError::UnknownListing(id.into()))?;
        ensure(l.owner == self.sender, || {
            TxError::NotAllowed(format!(
                "only the listing's owner {} may change it",
                l.owner
            ))
        })?;
        Ok(l)
    }

    fn bid_and_listing(&self, bid_id: &str) -> Result<(Bid, Listing), TxError> {
        let bid = self
            .ov
            .bid(bid_id)?
            .ok_or_else(|| TxError::UnknownBid(bid_id.into()))?;
        let l = self
            .ov
            .listing(&bid.listing_id)?
            .ok_or_else(|| TxError::UnknownListing(bid.listing_id.clone()))?;
        Ok((bid, l))
    }

    /// Returns a bid's escrow to its bidder and closes it with `status`; returns the amount.
    fn refund_bid(&mut self, bid: &mut Bid, status: BidStatus) -> Result<Amount, TxError> {
        self.release(&bid.bidder, bid.amount)?;
        bid.status = status;
        bid.updated_height = self.ctx.height;
        self.ov.put_bid(bid);
        Ok(bid.amount)
    }

    fn refund_job(&mut self, job: &mut Job) -> Result<(), TxError> {
        self.release(&job.customer, job.escrow)?;
        job.status = JobStatus::Refunded;
        job.updated_height = self.ctx.height;
        self.ov.put_job(job);
        self.events.push(Event::JobRefunded {
            job_id: job.id.clone(),
            customer: job.customer,
            refunded: job.escrow,
        });
        Ok(())
    }

    fn totals(&self) -> Result<Totals, TxError> {
        Ok(self.ov.totals()?)
    }

    /// Moves `amount` from `who`'s balance into escrow.
    fn lock(&mut self, who: &Address, amount: Amount) -> Result<(), TxError> {
        let mut a = self.ov.account(who)?;
        a.balance = a
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientFunds {
                balance: a.balance,
                needed: amount,
            })?;
        a.escrowed = a.escrowed.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_account(who, &a);
        let mut t = self.totals()?;
        t.escrowed = t.escrowed.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_totals(&t);
        Ok(())
    }

    /// Takes `amount` out of `funder`'s escrow (without crediting anyone yet).
    fn unlock(&mut self, funder: &Address, amount: Amount) -> Result<(), TxError> {
        let mut a = self.ov.account(funder)?;
        a.escrowed = a
            .escrowed
            .checked_sub(amount)
            .ok_or_else(|| TxError::Corrupt(format!("escrow of {funder} below {amount}")))?;
        self.ov.put_account(funder, &a);
        let mut t = self.totals()?;
        t.escrowed = t
            .escrowed
            .checked_sub(amount)
            .ok_or_else(|| TxError::Corrupt("chain escrow total underflow".into()))?;
        self.ov.put_totals(&t);
        Ok(())
    }

    /// Returns escrow to its funder.
    fn release(&mut self, funder: &Address, amount: Amount) -> Result<(), TxError> {
        self.unlock(funder, amount)?;
        self.credit(funder, amount)
    }

    fn credit(&mut self, who: &Address, amount: Amount) -> Result<(), TxError> {
        let mut a = self.ov.account(who)?;
        a.balance = a.balance.checked_add(amount).ok_or(TxError::Overflow)?;
        self.ov.put_account(who, &a);
        Ok(())
    }

    /// Pays escrow to a provider, burning the marketplace fee. Returns (paid, burned).
    fn pay_from_escrow(
        &mut self,
        funder: &Address,
        provider: &Address,
        amount: Amount,
    ) -> Result<(Amount, Amount), TxError> {
        self.unlock(funder, amount)?;
        let fee = amount.basis_points(self.ctx.params.marketplace_fee_bps);
        let paid = amount.checked_sub(fee).ok_or(TxError::Overflow)?;
        self.credit(provider, paid)?;
        let mut t = self.totals()?;
        t.burned = t.burned.checked_add(fee).ok_or(TxError::Overflow)?;
        self.ov.put_totals(&t);
        Ok((paid, fee))
    }
}
