//! The ledger as HotStuff's `App`: the leader builds a block from the mempool, every validator
//! re-executes it and votes only if the header's roots match its own execution.

use crate::block;
use crate::executed::{ExecutedBlock, ExecutedBlocks};
use crate::ledger::{self, apply_block_with_hashes, keys, BlockContext, ChainParams, StateRead};
use crate::mempool::Mempool;
use crate::metrics::NodeMetrics;
use crate::store::RocksStore;
use aitbc_protocol::hash::merkle_root;
use aitbc_protocol::model::{Account, BlockHeader};
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Address, Hash, PublicKey};
use hotstuff_rs::app::{
    App, ProduceBlockRequest, ProduceBlockResponse, ValidateBlockRequest, ValidateBlockResponse,
};
use hotstuff_rs::block_tree::accessors::app::AppBlockTreeView;
use hotstuff_rs::types::data_types::CryptoHash;
use hotstuff_rs::types::update_sets::AppStateUpdates;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far into the future a proposed block's time may be, by our clock.
const MAX_CLOCK_SKEW_MS: u64 = 10_000;
/// How many ancestors to look at for transactions that still need blocks on top to commit.
const COMMIT_DEPTH: usize = 3;
/// Encoded bytes of a block's transactions at most. A transaction may be 64 KiB, so without
/// this 4,000 of them (256 MiB) would make a proposal no peer accepts (peer messages are capped)
/// and stall the chain; 4,000 transfers take ~0.8 MiB.
pub const MAX_BLOCK_TX_BYTES: usize = 2 * 1024 * 1024;
/// How often a leader re-executes its proposal after leaving out transactions that failed the
/// envelope check (one round suffices: such transactions change nothing).
const MAX_PROPOSAL_ROUNDS: usize = 3;

pub struct LedgerApp {
    params: ChainParams,
    me: PublicKey,
    mempool: Arc<Mempool>,
    block_time: Duration,
    metrics: Arc<NodeMetrics>,
    /// Where executed blocks wait for the committed-block feed.
    executed: Arc<ExecutedBlocks>,
    /// The last block this node proposed (its data hash and writes). HotStuff hands a leader its
    /// own proposal to validate; executing it a second time would double the leader's work. Taken
    /// by that validation.
    last_proposed: Option<(CryptoHash, ledger::Writes)>,
    /// A leader proposes only transactions it admitted at least this long ago, so that the other
    /// validators have mostly received (gossip) and verified them by the time the proposal
    /// arrives; otherwise they verify them while validating the block, on the consensus
    /// critical path, and once more at admission. Zero for a single validator.
    min_tx_age: Duration,
}

impl LedgerApp {
    pub fn new(
        params: ChainParams,
        me: PublicKey,
        mempool: Arc<Mempool>,
        block_time: Duration,
        metrics: Arc<NodeMetrics>,
        executed: Arc<ExecutedBlocks>,
        min_tx_age: Duration,
    ) -> Self {
        LedgerApp {
            params,
            me,
            mempool,
            block_time,
            metrics,
            executed,
            last_proposed: None,
            min_tx_age,
        }
    }
}

/// Ledger state as of the block being built or checked (committed state plus pending ancestors).
struct TreeState<'v, 'a>(&'v AppBlockTreeView<'a, RocksStore>);

impl StateRead for TreeState<'_, '_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.app_state(key)
    }
}

/// Wall-clock time in unix milliseconds (what a block proposed now carries).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn to_updates(writes: ledger::Writes) -> AppStateUpdates {
    // `Writes` is a B-tree: already in key order.
    AppStateUpdates::from_sorted(writes)
}

/// Header of block `hash`, or `None` for the genesis position.
fn header_of(view: &AppBlockTreeView<'_, RocksStore>, hash: &CryptoHash) -> Option<BlockHeader> {
    let datum = view.block_datum(hash, 0)?;
    borsh::from_slice(datum.bytes()).ok()
}

/// Height, hash and time the next block builds on.
fn parent_info(
    view: &AppBlockTreeView<'_, RocksStore>,
    parent: Option<CryptoHash>,
) -> (u64, Hash, u64) {
    match parent {
        None => (0, Hash::ZERO, 0),
        Some(p) => {
            let h = view
                .block_height(&p)
                .ok()
                .flatten()
                .map(|h| h.int())
                .unwrap_or(0);
            let t = header_of(view, &p).map(|hd| hd.time_ms).unwrap_or(0);
            (h, Hash(p.bytes()), t)
        }
    }
}

/// True when one of the last few ancestors carries transactions: they only commit once more
/// blocks are built on them, so the leader should not wait for the block time.
fn ancestors_need_blocks(
    view: &AppBlockTreeView<'_, RocksStore>,
    parent: Option<CryptoHash>,
) -> bool {
    let mut cur = parent;
    for _ in 0..COMMIT_DEPTH {
        let Some(hash) = cur else { return false };
        let Ok(Some(len)) = view.block_data_len(&hash) else {
            return false;
        };
        if len.int() > 1 {
            return true;
        }
        let Ok(justify) = view.block_justify(&hash) else {
            return false;
        };
        if justify.block == hash {
            return false;
        }
        cur = Some(justify.block);
    }
    false
}

impl LedgerApp {
    /// Paces block production: a block follows its parent after the block time, or as soon as
    /// there are transactions to include or ancestors with transactions waiting to commit.
    fn wait_for_work(
        &self,
        view: &AppBlockTreeView<'_, RocksStore>,
        parent: Option<CryptoHash>,
        parent_time_ms: u64,
    ) {
        if ancestors_need_blocks(view, parent) {
            return;
        }
        let block_time_ms = self.block_time.as_millis() as u64;
        let due_in = (parent_time_ms + block_time_ms)
            .saturating_sub(now_ms())
            .min(block_time_ms);
        let deadline = Instant::now() + Duration::from_millis(due_in);
        while Instant::now() < deadline && self.mempool.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if !self.mempool.is_empty() {
            // Give what just arrived time to reach the other validators (see `min_tx_age`).
            std::thread::sleep(self.min_tx_age);
        }
    }

    fn execute(
        &self,
        view: &AppBlockTreeView<'_, RocksStore>,
        header: &BlockHeader,
        txs: &[SignedTransaction],
        tx_hashes: Vec<Hash>,
    ) -> Option<ledger::BlockOutcome> {
        let state = TreeState(view);
        let mempool = &self.mempool;
        let verified = |h: &Hash| mempool.contains(h);
        let ctx = BlockContext {
            height: header.height,
            time_ms: header.time_ms,
            proposer: header.proposer,
            params: &self.params,
            verified: Some(&verified),
        };
        match apply_block_with_hashes(&state, &ctx, txs, tx_hashes) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::error!(error = %e, "ledger state is corrupt; refusing to execute block");
                None
            }
        }
    }

    /// Executes the transactions picked for a proposal, leaving out (and dropping from the
    /// mempool) those that fail the envelope check on this block's state, e.g. a fee that an
    /// earlier transfer of the same block made unaffordable: validators refuse a block that
    /// carries one. Returns the header with its roots filled in, the transactions, their
    /// encodings and the outcome (`None` when our own state does not decode).
    fn execute_proposal(
        &self,
        view: &AppBlockTreeView<'_, RocksStore>,
        mut header: BlockHeader,
        mut txs: Vec<SignedTransaction>,
    ) -> (
        BlockHeader,
        Vec<SignedTransaction>,
        Vec<Vec<u8>>,
        Option<ledger::BlockOutcome>,
    ) {
        for _ in 0..MAX_PROPOSAL_ROUNDS {
            // Each transaction is encoded once: its hash and its datum come from the same bytes.
            let tx_bytes: Vec<Vec<u8>> = txs.iter().map(|t| t.encode()).collect();
            let tx_hashes: Vec<Hash> = tx_bytes
                .iter()
                .map(|b| SignedTransaction::hash_of_encoding(b))
                .collect();
            header.tx_root = merkle_root(&tx_hashes);
            header.tx_count = txs.len() as u32;
            let outcome = self.execute(view, &header, &txs, tx_hashes.clone());
            let failing = match &outcome {
                Some(o) if !o.envelope_rejected.is_empty() => o.envelope_rejected.clone(),
                _ => return (header, txs, tx_bytes, outcome),
            };
            let dropped: Vec<Hash> = failing.iter().map(|&i| tx_hashes[i]).collect();
            tracing::debug!(
                count = dropped.len(),
                "leaving transactions that fail the envelope check out of the proposal"
            );
            self.metrics
                .proposal_txs_dropped
                .inc_by(dropped.len() as u64);
            self.mempool.remove(&dropped);
            let mut failing = failing.into_iter().peekable();
            let mut i = 0;
            txs.retain(|_| {
                let drop = failing.next_if_eq(&i).is_some();
                i += 1;
                !drop
            });
        }
        // Still failing after every round (cannot happen: a failed envelope changes nothing):
        // propose an empty block rather than one validators refuse.
        header.tx_root = merkle_root(&[]);
        header.tx_count = 0;
        let outcome = self.execute(view, &header, &[], vec![]);
        (header, vec![], vec![], outcome)
    }

    fn validate(
        &mut self,
        request: ValidateBlockRequest<RocksStore>,
        check_time: bool,
    ) -> ValidateBlockResponse {
        let started = Instant::now();
        let block = request.proposed_block();
        let view = request.block_tree();
        // Our own proposal: the data hash commits to the header (roots included) and thus to
        // exactly the execution we did when producing it.
        if let Some((hash, writes)) = self.last_proposed.take() {
            if hash == block.data_hash
                && block::header_datum_hash(&block.data) == Some(hash)
                && block::transactions_match_header(&block.data)
            {
                return ValidateBlockResponse::Valid {
                    app_state_updates: Some(to_updates(writes)),
                    validator_set_updates: None,
                };
            }
            self.last_proposed = Some((hash, writes));
        }
        let Some(expected_data_hash) = block::header_datum_hash(&block.data) else {
            return ValidateBlockResponse::Invalid;
        };
        if expected_data_hash != block.data_hash {
            tracing::warn!("rejecting block: data hash does not match its header");
            return ValidateBlockResponse::Invalid;
        }
        let (header, txs, tx_hashes) = match block::decode_with_hashes(&block.data) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "rejecting block that does not decode");
                return ValidateBlockResponse::Invalid;
            }
        };
        let parent = Some(block.justify.block).filter(|_| block.height.int() > 0);
        let (parent_height, parent_hash, parent_time) = parent_info(view, parent);
        let expected_height = if parent.is_some() {
            parent_height + 1
        } else {
            block.height.int()
        };
        let proposer_ok = header
            .proposer
            .verifying_key()
            .ok()
            .and_then(|vk| view.validator_set().ok().map(|vs| vs.contains(&vk)))
            .unwrap_or(false);
        let problems = [
            (header.chain_id != self.params.chain_id, "chain id"),
            (
                header.height != block.height.int() || header.height != expected_height,
                "height",
            ),
            (
                parent.is_some() && header.prev_hash != parent_hash,
                "previous hash",
            ),
            (header.time_ms < parent_time, "time before its parent's"),
            (
                check_time && header.time_ms > now_ms() + MAX_CLOCK_SKEW_MS,
                "time in the future",
            ),
            (!proposer_ok, "proposer is not a validator"),
            (header.tx_count as usize != txs.len(), "transaction count"),
            (
                txs.len() > self.params.max_block_txs as usize,
                "more transactions than a block may hold",
            ),
            (
                block::transaction_bytes(&block.data) > MAX_BLOCK_TX_BYTES,
                "more transaction bytes than a block may hold",
            ),
        ];
        if let Some((_, what)) = problems.iter().find(|(bad, _)| *bad) {
            tracing::warn!(
                height = header.height,
                problem = what,
                "rejecting block with a bad header"
            );
            return ValidateBlockResponse::Invalid;
        }
        if merkle_root(&tx_hashes) != header.tx_root {
            tracing::warn!(
                height = header.height,
                "rejecting block: transaction root mismatch"
            );
            return ValidateBlockResponse::Invalid;
        }
        let Some(outcome) = self.execute(view, &header, &txs, tx_hashes) else {
            return ValidateBlockResponse::Invalid;
        };
        if let Some(problem) =
            execution_problem(&outcome.envelope_rejected, outcome.state_root, &header)
        {
            tracing::warn!(height = header.height, problem, "rejecting block");
            return ValidateBlockResponse::Invalid;
        }
        self.metrics.observe_validate(started.elapsed());
        self.executed.put(
            block.data_hash,
            ExecutedBlock {
                header,
                txs,
                tx_hashes: outcome.tx_hashes,
                receipts: outcome.receipts,
            },
        );
        ValidateBlockResponse::Valid {
            app_state_updates: Some(to_updates(outcome.writes)),
            validator_set_updates: None,
        }
    }
}

impl App<RocksStore> for LedgerApp {
    fn produce_block(&mut self, request: ProduceBlockRequest<RocksStore>) -> ProduceBlockResponse {
        let view = request.block_tree();
        let parent = request.parent_block();
        let (parent_height, parent_hash, parent_time) = parent_info(view, parent);
        self.wait_for_work(view, parent, parent_time);
        let started = Instant::now();
        let height = if parent.is_some() {
            parent_height + 1
        } else {
            0
        };
        let state = TreeState(view);
        let txs = self.mempool.select_aged(
            self.params.max_block_txs as usize,
            MAX_BLOCK_TX_BYTES,
            self.min_tx_age,
            |a: &Address| {
                state
                    .get(&keys::account(a))
                    .and_then(|b| borsh::from_slice::<Account>(&b).ok())
                    .map(|acct| acct.nonce)
                    .unwrap_or(0)
            },
        );
        let header = BlockHeader {
            chain_id: self.params.chain_id.clone(),
            height,
            prev_hash: parent_hash,
            time_ms: now_ms().max(parent_time),
            proposer: self.me,
            tx_root: Hash::ZERO,
            state_root: Hash::ZERO,
            tx_count: 0,
        };
        let (mut header, txs, tx_bytes, outcome) = self.execute_proposal(view, header, txs);
        let (writes, executed) = match outcome {
            Some(o) => {
                header.state_root = o.state_root;
                let executed = ExecutedBlock {
                    header: header.clone(),
                    txs,
                    tx_hashes: o.tx_hashes,
                    receipts: o.receipts,
                };
                (o.writes, Some(executed))
            }
            None => {
                // Our own state does not decode: propose nothing rather than a wrong block.
                header.tx_count = 0;
                header.tx_root = merkle_root(&[]);
                (Default::default(), None)
            }
        };
        let (data, data_hash) = match &executed {
            Some(_) => block::encode_with_tx_bytes(&header, tx_bytes),
            None => block::encode(&header, &[]),
        };
        if let Some(e) = executed {
            self.executed.put(data_hash, e);
        }
        self.last_proposed = Some((data_hash, writes));
        self.metrics
            .observe_produce(started.elapsed(), header.tx_count as u64);
        tracing::debug!(height, txs = header.tx_count, "proposing block");
        ProduceBlockResponse {
            data_hash,
            data,
            // HotStuff ignores a proposal's updates here: it takes them from `validate_block`,
            // which the leader runs on its own proposal too (answered from `last_proposed`).
            app_state_updates: None,
            validator_set_updates: None,
        }
    }

    fn validate_block(
        &mut self,
        request: ValidateBlockRequest<RocksStore>,
    ) -> ValidateBlockResponse {
        self.validate(request, true)
    }

    fn validate_block_for_sync(
        &mut self,
        request: ValidateBlockRequest<RocksStore>,
    ) -> ValidateBlockResponse {
        self.validate(request, false)
    }
}

/// Why a block whose execution gave `envelope_rejected` and `state_root` must be refused, if it
/// must: a transaction that fails the envelope check pays no fee, so a block carrying one would
/// take block space for free; and the state root must be the one the proposer committed to.
fn execution_problem(
    envelope_rejected: &[usize],
    state_root: Hash,
    header: &BlockHeader,
) -> Option<&'static str> {
    if !envelope_rejected.is_empty() {
        Some("it carries transactions that fail the envelope check (they would fill it for free)")
    } else if state_root != header.state_root {
        Some("state root mismatch")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_a_block_carrying_an_envelope_failure_is_refused() {
        let header = ExecutedBlock::for_test(3, vec![], vec![]).header;
        let root = header.state_root;
        assert_eq!(execution_problem(&[], root, &header), None);
        assert!(execution_problem(&[0], root, &header).is_some_and(|p| p.contains("envelope")));
        let other = Hash([9; 32]);
        assert_ne!(other, root);
        assert_eq!(
            execution_problem(&[], other, &header),
            Some("state root mismatch")
        );
    }
}
