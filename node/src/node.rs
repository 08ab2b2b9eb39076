//! Starting a node: storage, genesis, the HotStuff replica, the peer network and the servers.

use crate::api::ChainService;
use crate::app::LedgerApp;
use crate::chain::Chain;
use crate::http;
use crate::index::TxIndex;
use crate::ledger::{genesis, ChainParams};
use crate::mempool::Mempool;
use crate::metrics::NodeMetrics;
use crate::p2p::policy::PeerPolicy;
use crate::p2p::{FaultSwitch, PeerNetwork};
use crate::store::RocksStore;
use aitbc_protocol::model::Genesis;
use aitbc_protocol::tx::SignedTransaction;
use aitbc_protocol::{Hash, Keypair};
use hotstuff_rs::block_tree::pluggables::{KVGet, KVStore, WriteBatch};
use hotstuff_rs::replica::{Configuration, Replica, ReplicaSpec};
use hotstuff_rs::types::data_types::{BufferSize, ChainID, EpochLength, Power};
use hotstuff_rs::types::update_sets::AppStateUpdates;
use hotstuff_rs::types::validator_set::{ValidatorSet, ValidatorSetState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Marker key (outside HotStuff's key space) recording which genesis a data dir belongs to.
const GENESIS_MARKER: &[u8] = b"aitbc/genesis-hash";

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub genesis: Genesis,
    pub key: Keypair,
    pub data_dir: PathBuf,
    pub rpc_listen: SocketAddr,
    pub p2p_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub peers: Vec<String>,
    /// fsync every write on a listener too (validators always do, see [`NodeConfig::durable`]).
    pub sync_writes: bool,
    /// Benchmarks only: a validator skips the fsync of its votes and blocks. A validator that
    /// loses power can then forget a vote and vote twice in one view: a safety fault.
    pub unsafe_no_fsync: bool,
    pub fault_file: Option<PathBuf>,
    pub mempool_capacity: usize,
    /// Non-validator keys admitted to the peer network (listener nodes).
    pub allow_peers: Vec<aitbc_protocol::PublicKey>,
    /// History, search, list and block reads per second one client address may make.
    pub api_reads_per_client: std::num::NonZeroU32,
}

impl NodeConfig {
    /// Whether every write is fsynced before the node goes on: always on a validator (a vote
    /// must survive a power loss before it is sent, or the validator could vote twice in a
    /// view), on request on a listener (which re-syncs what it lost from peers).
    pub fn durable(&self) -> bool {
        let validator = self
            .genesis
            .validators
            .iter()
            .any(|v| v.key == self.key.public());
        (validator && !self.unsafe_no_fsync) || self.sync_writes
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Genesis(#[from] genesis::GenesisError),
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error("data dir {dir} belongs to another chain (genesis {found}); this genesis is {expected}. Use an empty --data-dir")]
    WrongGenesis {
        dir: String,
        found: String,
        expected: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// HotStuff's numeric chain id, derived from ours.
pub fn hotstuff_chain_id(chain_id: &str) -> ChainID {
    let h = Hash::domain("aitbc/hotstuff-chain-id/v1", &[chain_id.as_bytes()]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.0[..8]);
    ChainID::new(u64::from_le_bytes(b))
}

fn validator_set(g: &Genesis) -> ValidatorSet {
    let mut vs = ValidatorSet::new();
    for v in &g.validators {
        if let Ok(vk) = v.key.verifying_key() {
            vs.put(&vk, Power::new(v.power.max(1)));
        }
    }
    vs
}

/// Writes the genesis state into an empty store, or checks that the store belongs to this genesis.
fn initialize_store(
    store: &mut RocksStore,
    g: &Genesis,
    dir: &std::path::Path,
) -> Result<(), StartError> {
    let expected = genesis::genesis_hash(g);
    match store.get(GENESIS_MARKER) {
        Some(found) if found == expected.0 => Ok(()),
        Some(found) => Err(StartError::WrongGenesis {
            dir: dir.display().to_string(),
            found: hex::encode(found),
            expected: expected.to_hex(),
        }),
        None => {
            let mut updates = AppStateUpdates::new();
            for (k, v) in genesis::initial_state(g)? {
                if let Some(v) = v {
                    updates.insert(k, v);
                }
            }
            let vs = validator_set(g);
            Replica::initialize(
                store.clone(),
                updates,
                ValidatorSetState::new(vs.clone(), vs, None, true),
            );
            let mut wb = <RocksStore as KVStore>::WriteBatch::new();
            wb.set(GENESIS_MARKER, &expected.0);
            store.write(wb);
            Ok(())
        }
    }
}

/// How long a leader holds a new transaction back from its proposals: about a gossip flush plus
/// the other validators' admission, so that they validate the block from their mempools (see
/// `LedgerApp`). A single validator has no one to wait for.
fn min_tx_age(validators: usize) -> Duration {
    if validators > 1 {
        Duration::from_millis(10)
    } else {
        Duration::ZERO
    }
}

/// Blocks per block-sync response (and per request; the server answers at most this many
/// whatever a peer asks, see third_party/README.md). One response is one peer message: a full
/// block (4,000 transfers) encodes to about 1 MiB and its transactions are bounded by
/// [`crate::app::MAX_BLOCK_TX_BYTES`], so 16 blocks stay under the peer message cap
/// ([`crate::p2p::MAX_PEER_MESSAGE`], 32-40 MiB) with room for headers, certificates and the
/// envelope. (hotstuff_rs's example value, 200, made a response of full blocks far larger than
/// any cap, so a lagging replica could never sync past them.) A lagging replica asks again from
/// its new height, one round trip per 16 blocks.
const SYNC_RESPONSE_BLOCKS: u32 = 16;
/// Per block, beyond its transactions: header datum, certificate, datum framing (generous).
const SYNC_BLOCK_OVERHEAD: usize = 64 * 1024;
const _: () = assert!(
    SYNC_RESPONSE_BLOCKS as usize * (crate::app::MAX_BLOCK_TX_BYTES + SYNC_BLOCK_OVERHEAD)
        <= crate::p2p::MAX_PEER_MESSAGE,
    "a block-sync response of full blocks must fit in one peer message"
);

/// API requests handled at once on one client connection; more wait for a turn (tower's
/// concurrency limit). The heavy honest clients multiplex everything on one connection: the
/// CLI's throughput test runs up to 500 single-transaction submitters, the benchmark up to 512
/// requests in flight (batches of up to 10,000 spread over the nodes). 256 handlers keep the
/// batch verifier's batches full (it batches up to 1,024 signatures across requests) while
/// bounding what one connection holds: at most 256 decoded requests of up to 16 MiB.
/// A streaming call holds its turn only until the stream starts.
const API_CONCURRENCY_PER_CONNECTION: usize = 256;
/// HTTP/2 streams (requests, block streams) open at once on one client connection
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`); a client beyond it queues its requests. Room for
/// [`API_CONCURRENCY_PER_CONNECTION`] running and as many waiting.
const API_STREAMS_PER_CONNECTION: u32 = 512;
/// A unary request's handler (reading its body included) is cancelled after this long. The
/// slowest honest call is a batch of 10,000 transactions on a saturated node (admission waits
/// for the verifier, which runs below consensus): seconds, not tens of seconds. Streams are
/// not cut: the limit covers a call until its response starts.
const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node. Dropping it stops consensus.
pub struct RunningNode {
    pub chain: Arc<Chain>,
    pub net: PeerNetwork,
    _replica: Replica<RocksStore>,
}

pub async fn start(cfg: NodeConfig) -> Result<RunningNode, StartError> {
    genesis::validate(&cfg.genesis)?;
    std::fs::create_dir_all(&cfg.data_dir).ok();
    let mut store = RocksStore::open(&cfg.data_dir.join("chain.db"), cfg.durable())?;
    initialize_store(&mut store, &cfg.genesis, &cfg.data_dir)?;

    let params = ChainParams::from_genesis(&cfg.genesis);
    let metrics = Arc::new(NodeMetrics::new());
    let mempool = Arc::new(Mempool::new(cfg.mempool_capacity));
    let index = TxIndex::open(
        &cfg.data_dir.join("index.db"),
        &genesis::genesis_hash(&cfg.genesis),
    )?;
    let chain = Arc::new(Chain::new(
        store.clone(),
        index,
        params.clone(),
        mempool.clone(),
        metrics.clone(),
    ));
    let me = cfg.key.public();
    let is_validator = cfg.genesis.validators.iter().any(|v| v.key == me);

    let policy = PeerPolicy::new(
        cfg.genesis.validators.iter().map(|v| v.key),
        cfg.allow_peers.iter().copied(),
    );
    let net = PeerNetwork::new(
        cfg.key.clone(),
        params.chain_id.clone(),
        policy,
        FaultSwitch::new(cfg.fault_file.clone()),
        metrics.clone(),
    );
    {
        let chain = chain.clone();
        net.set_tx_sink(Arc::new(move |txs: Vec<Vec<u8>>| {
            let decoded: Vec<SignedTransaction> = txs
                .iter()
                .filter_map(|b| SignedTransaction::decode(b).ok())
                .collect();
            // Duplicates and stale nonces from gossip are expected; their refusals are dropped.
            let _ = ChainService::admit_batch_blocking(&chain, decoded, false);
        }));
    }

    // Servers first, so peers can reach us while consensus starts.
    let p2p_listener = tokio::net::TcpListener::bind(cfg.p2p_listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.p2p_listen,
            source,
        })?;
    let rpc_listener = tokio::net::TcpListener::bind(cfg.rpc_listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.rpc_listen,
            source,
        })?;
    let http_listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.http_listen,
            source,
        })?;
    let peer_server = net.server();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(p2p_listener);
        if let Err(e) = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(peer_server)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "peer server stopped");
        }
    });
    let api = ChainService::new(
        chain.clone(),
        net.clone(),
        me,
        is_validator,
        cfg.genesis.block_time_ms,
        cfg.api_reads_per_client,
    );
    let bans = api.bans();
    tokio::spawn(async move {
        // Connections from a banned client address are closed at accept (see `api::ClientBans`).
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(rpc_listener).filter_map(
            move |accepted| match accepted {
                Ok(io) => bans.admit(io).map(Ok),
                Err(e) => Some(Err(e)),
            },
        );
        let svc = aitbc_protocol::pb::chain_server::ChainServer::new(api)
            .max_decoding_message_size(16 * 1024 * 1024);
        // Limits per connection (docs/ARCHITECTURE.md, "Public API"); requests beyond them
        // wait, they are not refused.
        if let Err(e) = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .concurrency_limit_per_connection(API_CONCURRENCY_PER_CONNECTION)
            .max_concurrent_streams(API_STREAMS_PER_CONNECTION)
            .timeout(API_REQUEST_TIMEOUT)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    tokio::spawn(http::serve(http_listener, chain.clone()));
    for peer in &cfg.peers {
        tokio::spawn(net.clone().dial_forever(peer.clone()));
    }
    tokio::spawn(net.clone().flush_gossip_forever(Duration::from_millis(5)));
    {
        // Repeat gossip of transactions still pending after a while (lost on a full queue, or
        // sent while a peer was down), and drop those stuck behind a nonce gap for too long.
        let (net, mempool, metrics) = (net.clone(), mempool.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let expired = mempool.expire_queued(std::time::Instant::now());
                metrics.mempool_expired.inc_by(expired as u64);
                for tx in mempool.due_for_regossip(Duration::from_secs(3), 20_000) {
                    net.queue_gossip(tx);
                }
            }
        });
    }

    let block_time = Duration::from_millis(cfg.genesis.block_time_ms);
    // A view must fit a block time of waiting plus proposal, validation and votes; a crashed
    // leader costs this much per view of its tenure.
    let max_view_time = block_time * 2 + Duration::from_millis(1000);
    let configuration = Configuration::builder()
        .me(cfg.key.signing_key().clone())
        .chain_id(hotstuff_chain_id(&params.chain_id))
        .block_sync_request_limit(SYNC_RESPONSE_BLOCKS)
        .block_sync_server_advertise_time(Duration::from_secs(2))
        .block_sync_response_timeout(Duration::from_secs(3))
        .block_sync_blacklist_expiry_time(Duration::from_secs(10))
        .block_sync_trigger_min_view_difference(2)
        .block_sync_trigger_timeout(max_view_time * 3)
        .progress_msg_buffer_capacity(BufferSize::new(64 * 1024 * 1024))
        // hotstuff_rs sets view deadlines cumulatively from the start of an epoch, so a stall
        // late in a long epoch waits out the whole epoch's budget; short epochs bound that wait.
        .epoch_length(EpochLength::new(8))
        .max_view_time(max_view_time)
        .log_events(std::env::var("AITBC_HOTSTUFF_LOG").is_ok())
        .build();
    let app = LedgerApp::new(
        params,
        me,
        mempool,
        block_time,
        metrics,
        chain.executed.clone(),
        min_tx_age(cfg.genesis.validators.len()),
    );
    let (c1, c2, c3) = (chain.clone(), chain.clone(), chain.clone());
    let replica = ReplicaSpec::builder()
        .app(app)
        .network(net.clone())
        .kv_store(store)
        .configuration(configuration)
        .on_commit_block(move |_| c1.publish_committed())
        .on_start_sync(move |_| c2.syncing.store(true, std::sync::atomic::Ordering::Relaxed))
        .on_end_sync(move |_| {
            c3.syncing
                .store(false, std::sync::atomic::Ordering::Relaxed);
            c3.publish_committed();
        })
        .build()
        .start();
    tracing::info!(key = %me, validator = is_validator, chain = %chain.params.chain_id, height = ?chain.committed_height(), "node started");
    Ok(RunningNode {
        chain,
        net,
        _replica: replica,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::model::GenesisValidator;
    use aitbc_protocol::Amount;

    fn config(validator: &Keypair, me: &Keypair) -> NodeConfig {
        NodeConfig {
            genesis: Genesis {
                chain_id: "c".into(),
                genesis_time_ms: 0,
                block_time_ms: 100,
                min_fee: Amount(1),
                marketplace_fee_bps: 0,
                default_job_deadline_blocks: 10,
                schedulers: vec![],
                allocations: vec![],
                validators: vec![GenesisValidator {
                    name: "v0".into(),
                    key: validator.public(),
                    power: 1,
                }],
            },
            key: me.clone(),
            data_dir: PathBuf::from("unused"),
            rpc_listen: "127.0.0.1:0".parse().unwrap(),
            p2p_listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            peers: vec![],
            sync_writes: false,
            unsafe_no_fsync: false,
            fault_file: None,
            mempool_capacity: 10,
            allow_peers: vec![],
            api_reads_per_client: crate::api::READS_PER_CLIENT,
        }
    }

    #[test]
    fn hostile_power_loss_validators_fsync_before_they_vote() {
        let v = Keypair::generate();
        assert!(
            config(&v, &v).durable(),
            "a validator's votes are fsynced by default"
        );
        let listener = Keypair::generate();
        assert!(
            !config(&v, &listener).durable(),
            "a listener keeps the cheap default"
        );
        let mut c = config(&v, &listener);
        c.sync_writes = true;
        assert!(c.durable());
        let mut c = config(&v, &v);
        c.unsafe_no_fsync = true;
        assert!(!c.durable(), "only the benchmark switch turns it off");
    }
}
