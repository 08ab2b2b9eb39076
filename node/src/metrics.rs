//! Prometheus metrics of a node, served on the HTTP port with the health endpoints.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub struct NodeMetrics {
    registry: Registry,
    pub blocks_committed: Counter,
    pub txs_committed: Counter,
    pub txs_rejected: Counter,
    pub txs_submitted: Counter,
    pub height: Gauge<u64, AtomicU64>,
    pub mempool_size: Gauge<u64, AtomicU64>,
    pub peers_connected: Gauge<u64, AtomicU64>,
    pub peer_messages_dropped: Counter,
    pub peer_messages_bad_signature: Counter,
    /// Hostile-network counters (docs/ARCHITECTURE.md, "Threat model").
    pub peers_refused: Counter,
    pub peer_messages_not_validator: Counter,
    pub peer_sync_requests_limited: Counter,
    pub gossip_batches_dropped: Counter,
    pub mempool_evicted: Counter,
    pub mempool_expired: Counter,
    pub proposal_txs_dropped: Counter,
    /// Public API limits (docs/ARCHITECTURE.md, "Public API").
    pub api_block_streams: Gauge<u64, AtomicU64>,
    pub api_block_streams_refused: Counter,
    pub api_block_streams_stalled: Counter,
    pub api_clients_banned: Counter,
    pub api_supply_scans: Counter,
    produce_seconds: Histogram,
    validate_seconds: Histogram,
    block_txs: Histogram,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let mut registry = Registry::with_prefix("aitbc_node");
        let m = NodeMetrics {
            blocks_committed: Counter::default(),
            txs_committed: Counter::default(),
            txs_rejected: Counter::default(),
            txs_submitted: Counter::default(),
            height: Gauge::default(),
            mempool_size: Gauge::default(),
            peers_connected: Gauge::default(),
            peer_messages_dropped: Counter::default(),
            peer_messages_bad_signature: Counter::default(),
            peers_refused: Counter::default(),
            peer_messages_not_validator: Counter::default(),
            peer_sync_requests_limited: Counter::default(),
            gossip_batches_dropped: Counter::default(),
            mempool_evicted: Counter::default(),
            mempool_expired: Counter::default(),
            proposal_txs_dropped: Counter::default(),
            api_block_streams: Gauge::default(),
            api_block_streams_refused: Counter::default(),
            api_block_streams_stalled: Counter::default(),
            api_clients_banned: Counter::default(),
            api_supply_scans: Counter::default(),
            produce_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            validate_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            block_txs: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            registry: Registry::default(),
        };
        registry.register(
            "blocks_committed",
            "Blocks committed",
            m.blocks_committed.clone(),
        );
        registry.register(
            "txs_committed",
            "Transactions committed (applied)",
            m.txs_committed.clone(),
        );
        registry.register(
            "txs_rejected",
            "Transactions committed with a rejection receipt",
            m.txs_rejected.clone(),
        );
        registry.register(
            "txs_submitted",
            "Transactions accepted into the mempool",
            m.txs_submitted.clone(),
        );
        registry.register(
            "height",
            "Height of the highest committed block",
            m.height.clone(),
        );
        registry.register(
            "mempool_size",
            "Pending transactions",
            m.mempool_size.clone(),
        );
        registry.register(
            "peers_connected",
            "Peers with an open outbound stream",
            m.peers_connected.clone(),
        );
        registry.register(
            "peer_messages_dropped",
            "Consensus messages dropped on full queues",
            m.peer_messages_dropped.clone(),
        );
        registry.register(
            "peer_messages_bad_signature",
            "Peer messages ignored for a bad signature",
            m.peer_messages_bad_signature.clone(),
        );
        registry.register(
            "peers_refused",
            "Peer connections refused at HELLO (key not a validator nor an allowed peer, backed off, or too many handshakes)",
            m.peers_refused.clone(),
        );
        registry.register(
            "peer_messages_not_validator",
            "Consensus progress messages dropped because their sender is not a validator",
            m.peer_messages_not_validator.clone(),
        );
        registry.register(
            "peer_sync_requests_limited",
            "Block-sync requests dropped because their peer exceeded its rate",
            m.peer_sync_requests_limited.clone(),
        );
        registry.register(
            "gossip_batches_dropped",
            "Transaction gossip batches dropped because the admission workers were busy",
            m.gossip_batches_dropped.clone(),
        );
        registry.register(
            "mempool_evicted",
            "Pending transactions evicted by higher-paying ones",
            m.mempool_evicted.clone(),
        );
        registry.register(
            "mempool_expired",
            "Pending transactions dropped after waiting too long behind a nonce gap",
            m.mempool_expired.clone(),
        );
        registry.register(
            "proposal_txs_dropped",
            "Transactions a leader left out of its proposal because they failed the envelope check",
            m.proposal_txs_dropped.clone(),
        );
        registry.register(
            "api_block_streams",
            "SubscribeBlocks streams open",
            m.api_block_streams.clone(),
        );
        registry.register(
            "api_block_streams_refused",
            "SubscribeBlocks streams refused at the node's or a client address's limit",
            m.api_block_streams_refused.clone(),
        );
        registry.register(
            "api_block_streams_stalled",
            "SubscribeBlocks streams closed because their client took no block for 30 s",
            m.api_block_streams_stalled.clone(),
        );
        registry.register(
            "api_clients_banned",
            "Client addresses banned for 30 s after 200 refusals within 10 s",
            m.api_clients_banned.clone(),
        );
        registry.register(
            "api_supply_scans",
            "Supply audits computed (GetSupply scans the accounts at most once per committed height)",
            m.api_supply_scans.clone(),
        );
        registry.register(
            "produce_block_seconds",
            "Time to build a proposal",
            m.produce_seconds.clone(),
        );
        registry.register(
            "validate_block_seconds",
            "Time to re-execute a proposal",
            m.validate_seconds.clone(),
        );
        registry.register(
            "block_transactions",
            "Transactions per proposed block",
            m.block_txs.clone(),
        );
        NodeMetrics { registry, ..m }
    }

    pub fn observe_produce(&self, took: Duration, txs: u64) {
        self.produce_seconds.observe(took.as_secs_f64());
        self.block_txs.observe(txs as f64);
    }

    pub fn observe_validate(&self, took: Duration) {
        self.validate_seconds.observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
