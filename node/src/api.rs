//! The public gRPC API (tonic): submit transactions, query state and blocks, follow commits.

mod bans;
mod streams;

pub use bans::{ClientBans, ClientConn, BAN, REFUSALS_BEFORE_BAN};
use streams::{BlockStream, EncodedBlocks};
pub use streams::{BlockStreamSlot, BlockStreams, BLOCK_STREAM_QUEUE, STALLED_STREAM};

use crate::chain::{Chain, CommittedBlock};
use crate::index::HistoryPosition;
use crate::ledger::state::BalanceTotals;
use crate::ledger::{self, apply_block, keys, BlockContext, TxError};
use crate::mempool::{MempoolError, SenderState};
use crate::p2p::PeerNetwork;
use crate::query_pool::QueryPool;
use crate::verifier::SigCheck;
use aitbc_protocol::hash::merkle_proof;
use aitbc_protocol::model::{Account, AgentRecord, Bid, Job, Listing, Totals};
use aitbc_protocol::pb::{self, chain_server::Chain as ChainApi};
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Address, Amount, Hash, PublicKey};
use std::net::IpAddr;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Results per `GetAccountHistory` page at most (each one reads and decodes its block).
pub const HISTORY_PAGE_MAX: u32 = 100;
/// Results per `GetAccountHistory` page when the request's limit is 0.
pub const HISTORY_PAGE_DEFAULT: u32 = 50;
/// Objects one listing, bid, job or agent query returns at most ...
pub const SCAN_MAX_RESULTS: usize = 1_000;
/// ... and the stored bytes they may take (a job or listing holds up to a transaction's worth of
/// text; the response is about twice this, under the clients' 64 MiB decoding limit).
pub const SCAN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// `SubscribeBlocks` streams open at once on a node.
pub const BLOCK_STREAMS_MAX: usize = 256;
/// `SubscribeBlocks` streams open at once from one client IP address.
pub const BLOCK_STREAMS_PER_CLIENT: usize = 32;
#[derive(Clone)]
pub struct ChainService {
    pub chain: Arc<Chain>,
    pub net: PeerNetwork,
    pub node_key: PublicKey,
    pub is_validator: bool,
    pub block_time_ms: u64,
    supply: SupplyCache,
    streams: Arc<BlockStreams>,
    /// Committed blocks in their API form, shared by the streams.
    encoded: Arc<EncodedBlocks>,
    /// Where the reads that cost more than a lookup run.
    queries: Arc<QueryPool>,
    /// Client addresses cut off for asking past their limits.
    bans: Arc<ClientBans>,
}

/// The last supply audit and the committed height it was computed at.
///
/// `GetSupply` sums the balance of every account, a scan of the whole account space. It is
/// computed at most once per committed height: callers take the lock, and the first one after a
/// new commit scans (on a blocking thread, which stores its result even if that caller went away)
/// while the others wait for it and take its result. A flood of `GetSupply` then costs at most
/// one scan per block. We do not keep a running total of balances instead: the audit's point is
/// to add up the balances independently of the ledger's own bookkeeping (`Totals`, updated by
/// the same code that moves funds), and an incrementally maintained sum would be that
/// bookkeeping again (and a ledger state change every node must agree on).
type SupplyCache = Arc<tokio::sync::Mutex<Option<(Option<u64>, pb::SupplyInfo)>>>;

/// Threads answering the costlier reads, and reads that may wait for them (see
/// `crate::query_pool`): two threads at background priority, so consensus and admission go first.
const QUERY_THREADS: usize = 2;
/// Those reads per second one client address may make by default (`--api-reads-per-second`):
/// far above what a wallet, the CLI, the scheduler or the operator needs.
pub const READS_PER_CLIENT: std::num::NonZeroU32 = match std::num::NonZeroU32::new(50) {
    Some(n) => n,
    None => panic!("a positive rate"),
};
const QUERY_BACKLOG: usize = 256;

/// `GetAccountHistory`'s page token: the position (height, index in block) of a page's last
/// entry, as hex; the next page starts after it. Opaque to clients.
fn history_token(p: HistoryPosition) -> String {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&p.0.to_be_bytes());
    b[8..].copy_from_slice(&p.1.to_be_bytes());
    hex::encode(b)
}

fn parse_history_token(t: &str) -> Result<Option<HistoryPosition>, Status> {
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Status::invalid_argument(format!(
            "bad page_token {t:?}: pass the next_page_token of the previous page unchanged, \
             or none for the newest page"
        ))
    };
    let b: [u8; 12] = hex::decode(t)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    let height = u64::from_be_bytes(b[..8].try_into().map_err(|_| bad())?);
    let index = u32::from_be_bytes(b[8..].try_into().map_err(|_| bad())?);
    Ok(Some((height, index)))
}

/// The supply audit's answer: `balances` over `accounts` against the ledger's totals.
fn supply_info(
    totals: &Totals,
    balances: Option<Amount>,
    accounts: u64,
    height: Option<u64>,
) -> pb::SupplyInfo {
    let sum = balances
        .and_then(|b| b.checked_add(totals.escrowed))
        .and_then(|s| s.checked_add(totals.burned));
    pb::SupplyInfo {
        genesis_supply: totals.genesis_supply.to_string(),
        balances: balances.map_or_else(|| "overflow".to_string(), |b| b.to_string()),
        escrowed: totals.escrowed.to_string(),
        burned: totals.burned.to_string(),
        conserved: sum == Some(totals.genesis_supply),
        height: height.unwrap_or(0),
        accounts,
    }
}

/// The supply audit from the balance total every block keeps (`ledger::state::BalanceTotals`):
/// two reads. `None` on a chain that keeps no such total (older genesis), or when commits kept
/// landing between the reads.
fn supply_from_totals(chain: &Chain) -> Option<pb::SupplyInfo> {
    for _ in 0..3 {
        let height = chain.committed_height();
        let totals: Totals = chain.read(keys::TOTALS).unwrap_or_default();
        let kept: BalanceTotals = chain.read(keys::BALANCES)?;
        if chain.committed_height() == height {
            return Some(supply_info(
                &totals,
                Some(kept.balances),
                kept.accounts,
                height,
            ));
        }
    }
    None
}

/// The supply audit by a scan: every account's balance added up (`None` when the sum
/// overflows), against the ledger's totals.
fn audit_supply(chain: &Chain) -> pb::SupplyInfo {
    let height = chain.committed_height();
    let totals: Totals = chain.read(keys::TOTALS).unwrap_or_default();
    let mut balances = Some(Amount::ZERO);
    let mut accounts = 0u64;
    chain.store.scan_committed(keys::ACCOUNT, false, |_, v| {
        if let Ok(a) = borsh::from_slice::<aitbc_protocol::model::Account>(v) {
            accounts += 1;
            balances = balances.and_then(|b| b.checked_add(a.balance));
        }
        true
    });
    chain.metrics.api_supply_scans.inc();
    supply_info(&totals, balances, accounts, height)
}

fn addr(s: &str) -> Result<Address, Status> {
    s.parse::<Address>()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn enc<T: borsh::BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).unwrap_or_default()
}

fn listing_info(l: &Listing) -> pb::ListingInfo {
    pb::ListingInfo {
        id: l.id.clone(),
        name: l.name.clone(),
        service_type: l.service_type.as_str().into(),
        price: l.price.to_string(),
        owner: l.owner.to_string(),
        active: l.active,
        description: l.description.clone(),
        encoded: enc(l),
    }
}

fn bid_info(b: &Bid) -> pb::BidInfo {
    pb::BidInfo {
        id: b.id.clone(),
        listing_id: b.listing_id.clone(),
        bidder: b.bidder.to_string(),
        amount: b.amount.to_string(),
        status: b.status.as_str().into(),
        encoded: enc(b),
    }
}

fn job_info(j: &Job) -> pb::JobInfo {
    pb::JobInfo {
        id: j.id.clone(),
        customer: j.customer.to_string(),
        status: j.status.as_str().into(),
        escrow: j.escrow.to_string(),
        listing_id: j.listing_id.clone().unwrap_or_default(),
        assigned_agent: j.assigned_agent.map(|k| k.to_string()).unwrap_or_default(),
        encoded: enc(j),
    }
}

fn agent_info(a: &AgentRecord) -> pb::AgentInfo {
    pb::AgentInfo {
        agent_key: a.key.to_string(),
        agent_id: a.agent_id.clone(),
        owner: a.owner.to_string(),
        encoded: enc(a),
    }
}

pub fn block_info(b: &CommittedBlock) -> pb::BlockInfo {
    pb::BlockInfo {
        height: b.contents.header.height,
        hash: b.hash.to_hex(),
        header: enc(&b.contents.header),
        transactions: b.contents.txs.iter().map(|t| t.encode()).collect(),
        tx_hashes: b.contents.tx_hashes.iter().map(|h| h.to_hex()).collect(),
        state_root: b.contents.header.state_root.to_hex(),
        tx_root: b.contents.header.tx_root.to_hex(),
        time_ms: b.contents.header.time_ms,
        proposer: b.contents.header.proposer.to_string(),
    }
}

fn tx_error_status(e: &TxError) -> Status {
    match e {
        TxError::BadSignature
        | TxError::WrongChain { .. }
        | TxError::FeeTooLow { .. }
        | TxError::Invalid(_)
        | TxError::Overflow => Status::invalid_argument(e.to_string()),
        TxError::UnknownListing(_)
        | TxError::UnknownBid(_)
        | TxError::UnknownJob(_)
        | TxError::UnknownAgent(_) => Status::not_found(e.to_string()),
        TxError::NotAllowed(_) | TxError::BadAgentProof(_) => {
            Status::permission_denied(e.to_string())
        }
        TxError::Corrupt(_) => Status::internal(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// A batch of transactions between the checks that need no signature and the verdicts of
/// those that do.
struct Admission {
    results: Vec<Result<Hash, Status>>,
    /// Transactions that passed the prechecks: their slot in `results`, hash and sender account.
    passed: Vec<(usize, Hash, Account, SignedTransaction)>,
}

impl Admission {
    fn precheck(chain: &Chain, txs: Vec<SignedTransaction>) -> Admission {
        let mut results = Vec::with_capacity(txs.len());
        let mut passed = Vec::new();
        for stx in txs {
            match ChainService::precheck_one(chain, &stx) {
                Ok((hash, acct)) => {
                    passed.push((results.len(), hash, acct, stx));
                    results.push(Ok(hash));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        Admission { results, passed }
    }

    fn sig_checks(&self) -> Vec<SigCheck> {
        self.passed
            .iter()
            .map(|(_, _, _, stx)| SigCheck {
                message: stx.tx.signing_bytes(),
                signature: stx.signature,
                key: stx.tx.sender,
            })
            .collect()
    }

    fn finish(self, chain: &Chain, valid: Vec<bool>, dry_run: bool) -> Vec<Result<Hash, Status>> {
        let mut results = self.results;
        for ((slot, hash, acct, stx), ok) in self.passed.into_iter().zip(valid) {
            results[slot] = if ok {
                ChainService::admit_verified(chain, stx, hash, acct, dry_run)
            } else {
                Err(tx_error_status(&TxError::BadSignature))
            };
        }
        results
    }
}

impl ChainService {
    pub fn new(
        chain: Arc<Chain>,
        net: PeerNetwork,
        node_key: PublicKey,
        is_validator: bool,
        block_time_ms: u64,
        reads_per_client: std::num::NonZeroU32,
    ) -> ChainService {
        let bans = ClientBans::new(chain.metrics.clone());
        let streams = BlockStreams::new(
            BLOCK_STREAMS_MAX,
            BLOCK_STREAMS_PER_CLIENT,
            chain.metrics.clone(),
        );
        ChainService {
            encoded: EncodedBlocks::new(),
            chain,
            net,
            node_key,
            is_validator,
            block_time_ms,
            supply: SupplyCache::default(),
            streams,
            queries: QueryPool::start(QUERY_THREADS, QUERY_BACKLOG, reads_per_client, bans.clone()),
            bans,
        }
    }

    /// The addresses this API has banned, for the listener to close their connections.
    pub fn bans(&self) -> Arc<ClientBans> {
        self.bans.clone()
    }

    /// Runs a costlier read for `client` on the query threads (see `crate::query_pool`).
    #[allow(clippy::result_large_err)]
    async fn read<T: Send + 'static>(
        &self,
        client: Option<IpAddr>,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        self.queries.run(client, read).await
    }

    /// Admits a decoded transaction to the mempool, after the checks that can be made now.
    pub async fn admit(
        chain: &Chain,
        stx: SignedTransaction,
        dry_run: bool,
    ) -> Result<Hash, Status> {
        Self::admit_batch(chain, vec![stx], dry_run)
            .await
            .pop()
            .unwrap_or_else(|| Err(Status::internal("no admission result")))
    }

    /// Admits many transactions (one result each). The checks that cost no signature
    /// verification come first, so duplicates (gossip echoes) and stale nonces are refused
    /// without one; the rest go to the node's batch verifier together.
    pub async fn admit_batch(
        chain: &Chain,
        txs: Vec<SignedTransaction>,
        dry_run: bool,
    ) -> Vec<Result<Hash, Status>> {
        let admission = Admission::precheck(chain, txs);
        let valid = chain.verifier.verify(admission.sig_checks()).await;
        admission.finish(chain, valid, dry_run)
    }

    /// [`Self::admit_batch`] for a thread that may block (the peer gossip path).
    pub fn admit_batch_blocking(
        chain: &Chain,
        txs: Vec<SignedTransaction>,
        dry_run: bool,
    ) -> Vec<Result<Hash, Status>> {
        let admission = Admission::precheck(chain, txs);
        let valid = chain.verifier.verify_blocking(admission.sig_checks());
        admission.finish(chain, valid, dry_run)
    }

    /// Everything that can be refused before the signature is checked: chain id, fee, already
    /// pending, nonce already used, fee not covered.
    fn precheck_one(chain: &Chain, stx: &SignedTransaction) -> Result<(Hash, Account), Status> {
        ledger::check_envelope(stx, &chain.params).map_err(|e| tx_error_status(&e))?;
        let hash = stx.hash();
        if chain.mempool.contains(&hash) {
            return Err(Status::already_exists(
                MempoolError::Duplicate(hash).to_string(),
            ));
        }
        let acct = chain.account(&stx.tx.sender_address());
        if stx.tx.nonce < acct.nonce {
            return Err(tx_error_status(&TxError::StaleNonce {
                expected: acct.nonce,
                got: stx.tx.nonce,
            }));
        }
        if acct.balance < stx.tx.fee {
            return Err(tx_error_status(&TxError::InsufficientFunds {
                balance: acct.balance,
                needed: stx.tx.fee,
            }));
        }
        Ok((hash, acct))
    }

    /// Admits a transaction that passed [`Self::precheck`] and whose signature verified.
    fn admit_verified(
        chain: &Chain,
        stx: SignedTransaction,
        hash: Hash,
        acct: Account,
        dry_run: bool,
    ) -> Result<Hash, Status> {
        // When nothing of the sender is pending before it, the transaction's outcome on the
        // committed state is what it will most likely be: refuse it now with the reason.
        if dry_run && stx.tx.nonce == acct.nonce {
            let height = chain.committed_height().map(|h| h + 1).unwrap_or(0);
            // The signature was checked above. The next block's time is most likely now (rules
            // such as deadlines and refunds go by block time).
            let ctx = BlockContext {
                height,
                time_ms: crate::app::now_ms(),
                proposer: stx.tx.sender,
                params: &chain.params,
                verified: Some(&|_| true),
            };
            let outcome = apply_block(&chain.committed_state(), &ctx, std::slice::from_ref(&stx))
                .map_err(|e| Status::internal(e.to_string()))?;
            if let Some(reason) = outcome.receipts.first().and_then(|r| r.error.clone()) {
                return Err(Status::failed_precondition(reason));
            }
        }
        let sender = SenderState {
            nonce: acct.nonce,
            balance: acct.balance,
        };
        let admitted = chain
            .mempool
            .insert(stx, hash, sender)
            .map_err(|e| match e {
                e if e.is_backpressure() => Status::resource_exhausted(e.to_string()),
                MempoolError::Duplicate(_) => Status::already_exists(e.to_string()),
                _ => Status::failed_precondition(e.to_string()),
            })?;
        chain
            .metrics
            .mempool_evicted
            .inc_by(admitted.evicted.len() as u64);
        chain.metrics.txs_submitted.inc();
        chain.metrics.mempool_size.set(chain.mempool.len() as u64);
        Ok(hash)
    }

    fn tx_info(&self, hash: &Hash, with_proof: bool) -> Option<pb::TransactionInfo> {
        if let Some(r) = self.chain.index.receipt(hash) {
            let top = self.chain.committed_height().unwrap_or(r.height);
            // Without a proof one datum is read; a proof needs every hash of the block.
            let (transaction, proof, block_hash) = if with_proof {
                match self.chain.block_at(r.height) {
                    Some(b) => {
                        let tx = b
                            .contents
                            .txs
                            .get(r.index as usize)
                            .map(|t| t.encode())
                            .unwrap_or_default();
                        let proof = merkle_proof(&b.contents.tx_hashes, r.index as usize)
                            .map(|p| enc(&p))
                            .unwrap_or_default();
                        (tx, proof, b.hash.to_hex())
                    }
                    None => Default::default(),
                }
            } else {
                self.chain
                    .committed_tx_bytes(r.height, r.index)
                    .map(|(block_hash, tx)| (tx, vec![], block_hash.to_hex()))
                    .unwrap_or_default()
            };
            return Some(pb::TransactionInfo {
                tx_hash: hash.to_hex(),
                status: if r.error.is_some() {
                    "rejected"
                } else {
                    "committed"
                }
                .into(),
                height: r.height,
                index: r.index,
                confirmations: top.saturating_sub(r.height),
                error: r.error.clone().unwrap_or_default(),
                receipt: enc(&r),
                transaction,
                proof,
                block_hash,
            });
        }
        self.chain.mempool.get(hash).map(|stx| pb::TransactionInfo {
            tx_hash: hash.to_hex(),
            status: "pending".into(),
            transaction: stx.encode(),
            ..Default::default()
        })
    }

    fn scan<T: borsh::BorshDeserialize>(
        &self,
        prefix: &[u8],
        mut keep: impl FnMut(&T) -> bool,
    ) -> Vec<T> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.chain.store.scan_committed(prefix, false, |_, v| {
            if let Ok(x) = borsh::from_slice::<T>(v) {
                if keep(&x) {
                    out.push(x);
                    bytes += v.len();
                }
            }
            out.len() < SCAN_MAX_RESULTS && bytes < SCAN_MAX_BYTES
        });
        out
    }
}

/// Reads that run on the query threads (`crate::query_pool`).
impl ChainService {
    #[allow(clippy::result_large_err)]
    fn search_listings_now(
        &self,
        request: Request<pb::SearchListingsRequest>,
    ) -> Result<Response<pb::SearchListingsResponse>, Status> {
        let req = request.into_inner();
        let q = req.query.to_lowercase();
        let owner = if req.owner.is_empty() {
            None
        } else {
            Some(addr(&req.owner)?)
        };
        let listings = self.scan::<Listing>(keys::LISTING, |l| {
            (req.include_closed || l.active)
                && owner.is_none_or(|o| l.owner == o)
                && (q.is_empty()
                    || l.name.to_lowercase().contains(&q)
                    || l.service_type.as_str().contains(&q)
                    || l.description.to_lowercase().contains(&q))
        });
        let mut listings: Vec<_> = listings.iter().map(listing_info).collect();
        listings.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(Response::new(pb::SearchListingsResponse { listings }))
    }

    #[allow(clippy::result_large_err)]
    fn list_bids_now(
        &self,
        request: Request<pb::ListBidsRequest>,
    ) -> Result<Response<pb::ListBidsResponse>, Status> {
        let req = request.into_inner();
        let bidder = if req.bidder.is_empty() {
            None
        } else {
            Some(addr(&req.bidder)?)
        };
        let bids = self.scan::<Bid>(keys::BID, |b| {
            (req.listing_id.is_empty() || b.listing_id == req.listing_id)
                && bidder.is_none_or(|x| b.bidder == x)
                && (req.status.is_empty() || b.status.as_str() == req.status)
        });
        Ok(Response::new(pb::ListBidsResponse {
            bids: bids.iter().map(bid_info).collect(),
        }))
    }

    #[allow(clippy::result_large_err)]
    fn list_jobs_now(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let customer = if req.customer.is_empty() {
            None
        } else {
            Some(addr(&req.customer)?)
        };
        let jobs = self.scan::<Job>(keys::JOB, |j| {
            customer.is_none_or(|c| j.customer == c)
                && (req.status.is_empty() || j.status.as_str() == req.status)
                && (req.listing_id.is_empty()
                    || j.listing_id.as_deref() == Some(req.listing_id.as_str()))
        });
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(job_info).collect(),
        }))
    }

    #[allow(clippy::result_large_err)]
    fn list_agents_now(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = self.scan::<AgentRecord>(keys::AGENT, |_| true);
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(agent_info).collect(),
        }))
    }

    #[allow(clippy::result_large_err)]
    fn get_block_now(
        &self,
        request: Request<pb::GetBlockRequest>,
    ) -> Result<Response<pb::BlockInfo>, Status> {
        let req = request.into_inner();
        let block = if req.latest {
            self.chain
                .committed_height()
                .and_then(|h| self.chain.block_at(h))
        } else {
            match req.by {
                Some(pb::get_block_request::By::Height(h)) => self.chain.block_at(h),
                Some(pb::get_block_request::By::Hash(h)) => {
                    let hash: Hash =
                        h.parse()
                            .map_err(|e: aitbc_protocol::hash::HashParseError| {
                                Status::invalid_argument(e.to_string())
                            })?;
                    self.chain
                        .block_by_hash(&hotstuff_rs::types::data_types::CryptoHash::new(hash.0))
                }
                None => return Err(Status::invalid_argument("give a height, a hash, or latest")),
            }
        };
        block
            .map(|b| Response::new(block_info(&b)))
            .ok_or_else(|| Status::not_found("no such committed block"))
    }

    #[allow(clippy::result_large_err)]
    fn get_account_history_now(
        &self,
        request: Request<pb::GetAccountHistoryRequest>,
    ) -> Result<Response<pb::GetAccountHistoryResponse>, Status> {
        let req = request.into_inner();
        let a = addr(&req.address)?;
        let limit = if req.limit == 0 {
            HISTORY_PAGE_DEFAULT
        } else {
            req.limit.min(HISTORY_PAGE_MAX)
        } as usize;
        let before = parse_history_token(&req.page_token)?;
        // One more than the page, to tell whether another page follows.
        let mut entries = self.chain.index.history_before(&a, before, limit + 1);
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_page_token = match entries.last() {
            Some((p, _)) if more => history_token(*p),
            _ => String::new(),
        };
        let transactions = entries
            .iter()
            .filter_map(|(_, h)| self.tx_info(h, false))
            .collect();
        Ok(Response::new(pb::GetAccountHistoryResponse {
            transactions,
            next_page_token,
        }))
    }
}

#[tonic::async_trait]
impl ChainApi for ChainService {
    async fn submit_transaction(
        &self,
        request: Request<pb::SubmitTransactionRequest>,
    ) -> Result<Response<pb::SubmitTransactionResponse>, Status> {
        let bytes = request.into_inner().transaction;
        let stx = SignedTransaction::decode(&bytes)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let hash = Self::admit(&self.chain, stx, true).await?;
        self.net.queue_gossip(bytes);
        Ok(Response::new(pb::SubmitTransactionResponse {
            tx_hash: hash.to_hex(),
        }))
    }

    async fn submit_transactions(
        &self,
        request: Request<pb::SubmitTransactionsRequest>,
    ) -> Result<Response<pb::SubmitTransactionsResponse>, Status> {
        let raw = request.into_inner().transactions;
        if raw.len() > 10_000 {
            return Err(Status::invalid_argument(format!(
                "{} transactions in one request; the limit is 10000",
                raw.len()
            )));
        }
        let mut results: Vec<Option<pb::SubmitResult>> = vec![None; raw.len()];
        let mut decoded = Vec::with_capacity(raw.len());
        let mut positions = Vec::with_capacity(raw.len());
        for (i, bytes) in raw.iter().enumerate() {
            match SignedTransaction::decode(bytes) {
                Ok(stx) => {
                    decoded.push(stx);
                    positions.push(i);
                }
                Err(e) => {
                    results[i] = Some(pb::SubmitResult {
                        tx_hash: String::new(),
                        error: e.to_string(),
                    })
                }
            }
        }
        let admitted = Self::admit_batch(&self.chain, decoded, true).await;
        for (i, r) in positions.into_iter().zip(admitted) {
            results[i] = Some(match r {
                Ok(h) => {
                    self.net.queue_gossip(raw[i].clone());
                    pb::SubmitResult {
                        tx_hash: h.to_hex(),
                        error: String::new(),
                    }
                }
                Err(status) => pb::SubmitResult {
                    tx_hash: String::new(),
                    error: status.message().to_string(),
                },
            });
        }
        Ok(Response::new(pb::SubmitTransactionsResponse {
            results: results.into_iter().map(Option::unwrap_or_default).collect(),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::AccountInfo>, Status> {
        let a = addr(&request.into_inner().address)?;
        let acct = self.chain.account(&a);
        Ok(Response::new(pb::AccountInfo {
            address: a.to_string(),
            balance: acct.balance.to_string(),
            nonce: acct.nonce,
            escrowed: acct.escrowed.to_string(),
            pending_nonce: self.chain.mempool.next_nonce(&a, acct.nonce),
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::TransactionInfo>, Status> {
        let req = request.into_inner();
        let hash: Hash =
            req.tx_hash
                .parse()
                .map_err(|e: aitbc_protocol::hash::HashParseError| {
                    Status::invalid_argument(e.to_string())
                })?;
        self.tx_info(&hash, req.with_proof)
            .map(Response::new)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "unknown transaction {hash}: not pending on this node and not committed"
                ))
            })
    }

    async fn get_listing(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::ListingInfo>, Status> {
        let id = request.into_inner().id;
        let l: Listing = self
            .chain
            .read(&keys::listing(&id))
            .ok_or_else(|| Status::not_found(format!("unknown listing {id}")))?;
        Ok(Response::new(listing_info(&l)))
    }

    async fn search_listings(
        &self,
        request: Request<pb::SearchListingsRequest>,
    ) -> Result<Response<pb::SearchListingsResponse>, Status> {
        let this = self.clone();
        let client = request.remote_addr().map(|a| a.ip());
        self.read(client, move || this.search_listings_now(request))
            .await?
    }

    async fn get_bid(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::BidInfo>, Status> {
        let id = request.into_inner().id;
        let b: Bid = self
            .chain
            .read(&keys::bid(&id))
            .ok_or_else(|| Status::not_found(format!("unknown bid {id}")))?;
        Ok(Response::new(bid_info(&b)))
    }

    async fn list_bids(
        &self,
        request: Request<pb::ListBidsRequest>,
    ) -> Result<Response<pb::ListBidsResponse>, Status> {
        let this = self.clone();
        let client = request.remote_addr().map(|a| a.ip());
        self.read(client, move || this.list_bids_now(request))
            .await?
    }

    async fn get_job(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let id = request.into_inner().id;
        let j: Job = self
            .chain
            .read(&keys::job(&id))
            .ok_or_else(|| Status::not_found(format!("unknown job {id}")))?;
        Ok(Response::new(job_info(&j)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let this = self.clone();
        let client = request.remote_addr().map(|a| a.ip());
        self.read(client, move || this.list_jobs_now(request))
            .await?
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let key: PublicKey = request.into_inner().agent_key.parse().map_err(
            |e: aitbc_protocol::crypto::KeyError| Status::invalid_argument(e.to_string()),
        )?;
        let a: AgentRecord = self
            .chain
            .read(&keys::agent(&key))
            .ok_or_else(|| Status::not_found(format!("unknown agent {key}")))?;
        Ok(Response::new(agent_info(&a)))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let this = self.clone();
        let client = request.remote_addr().map(|a| a.ip());
        self.read(client, move || this.list_agents_now(request))
            .await?
    }

    async fn get_block(
        &self,
        request: Request<pb::GetBlockRequest>,
    ) -> Result<Response<pb::BlockInfo>, Status> {
        let this = self.clone();
        let client = request.remote_addr().map(|a| a.ip());
        self.read(client, move || this.get_block_now(request))
            .await?
    }

    async fn get_account_history(
        &self,
        request: Request<pb::GetAccountHistoryRequest>,
    ) -> Result<Response<pb::GetAccountHistoryResponse>, Status> {
        let this = self.clone();
        let client = request.remote_addr().map(|a| a.ip());
        self.read(client, move || this.get_account_history_now(request))
            .await?
    }

    async fn get_supply(
        &self,
        _: Request<pb::GetSupplyRequest>,
    ) -> Result<Response<pb::SupplyInfo>, Status> {
        if let Some(info) = supply_from_totals(&self.chain) {
            return Ok(Response::new(info));
        }
        // A chain without a kept total: see `SupplyCache`, at most one scan per committed height.
        let height = self.chain.committed_height();
        let mut cached = self.supply.clone().lock_owned().await;
        if let Some((at, info)) = &*cached {
            if *at >= height {
                return Ok(Response::new(info.clone()));
            }
        }
        let chain = self.chain.clone();
        let info = tokio::task::spawn_blocking(move || {
            let at = chain.committed_height();
            let info = audit_supply(&chain);
            *cached = Some((at, info.clone()));
            info
        })
        .await
        .map_err(|e| Status::internal(format!("supply audit failed: {e}")))?;
        Ok(Response::new(info))
    }

    async fn get_node_status(
        &self,
        _: Request<pb::GetNodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let c = &self.chain;
        let height = c.committed_height();
        let block = height.and_then(|h| c.block_at(h));
        Ok(Response::new(pb::NodeStatus {
            chain_id: c.params.chain_id.clone(),
            height: height.unwrap_or(0),
            block_hash: block.as_ref().map(|b| b.hash.to_hex()).unwrap_or_default(),
            state_root: block
                .as_ref()
                .map(|b| b.contents.header.state_root.to_hex())
                .unwrap_or_default(),
            view: c.view(),
            validators: c.validators().iter().map(|k| k.to_string()).collect(),
            peers_seen: self
                .net
                .peers_seen()
                .iter()
                .map(|k| k.to_string())
                .collect(),
            syncing: c.syncing.load(std::sync::atomic::Ordering::Relaxed),
            mempool_size: c.mempool.len() as u64,
            node_key: self.node_key.to_string(),
            validator: self.is_validator,
            block_time_ms: self.block_time_ms,
            min_fee: c.params.min_fee.to_string(),
            marketplace_fee_bps: c.params.marketplace_fee_bps,
            schedulers: c.params.schedulers.iter().map(|a| a.to_string()).collect(),
        }))
    }

    type SubscribeBlocksStream = BlockStream;

    async fn subscribe_blocks(
        &self,
        request: Request<pb::SubscribeBlocksRequest>,
    ) -> Result<Response<Self::SubscribeBlocksStream>, Status> {
        // Held by the stream's task: the stream counts until the task ends (the client went
        // away, or the node stops).
        let client = request.remote_addr().map(|a| a.ip());
        let slot = self
            .streams
            .open(client)
            .inspect_err(|_| self.bans.refused(client))?;
        let from = request.into_inner().from_height;
        Ok(Response::new(streams::serve(
            slot,
            from,
            self.chain.clone(),
            self.encoded.clone(),
            self.chain.metrics.clone(),
        )))
    }
}
