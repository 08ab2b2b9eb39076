//! `aitbc-node` command line: `init` writes a genesis and validator keys, `run` starts a node.

use aitbc_protocol::model::{Allocation, Genesis, GenesisValidator};
use aitbc_protocol::{Address, Amount, Keypair};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "aitbc-node",
    version,
    about = "AITBC chain node: BFT ledger for the AI compute marketplace"
)]
pub struct Cli {
    /// Log format: text for people, json for collectors.
    #[arg(long, global = true, default_value = "text", env = "AITBC_LOG_FORMAT")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a genesis file and validator key files for a new network.
    #[command(
        after_help = "Example:\n  aitbc-node init --dir ./net --validators 4 --chain-id aitbc-devnet\n  \
        aitbc-node run --genesis ./net/genesis.json --key-file ./net/validator-0.key --data-dir ./net/v0"
    )]
    Init(InitArgs),
    /// Run a validator (when its key is in the genesis) or a listener node.
    #[command(
        after_help = "Examples:\n  aitbc-node run --genesis net/genesis.json --key-file net/validator-0.key --data-dir net/v0 \\\n    \
        --rpc-listen 127.0.0.1:9100 --p2p-listen 127.0.0.1:9200 --http-listen 127.0.0.1:9300 --peer 127.0.0.1:9201\n\n  \
        In a StatefulSet: --key-dir /keys --peer-template 'aitbc-{i}.aitbc:9200' takes the ordinal from HOSTNAME."
    )]
    Run(Box<RunArgs>),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory to write genesis.json and the key files into.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub validators: usize,
    #[arg(long, default_value = "aitbc-devnet")]
    pub chain_id: String,
    #[arg(long, default_value_t = 500)]
    pub block_time_ms: u64,
    /// AIT allocated to the genesis-ops wallet.
    #[arg(long, default_value = "1000000")]
    pub genesis_supply: Amount,
    /// Address of genesis-ops; without it a key file genesis-ops.key is written.
    #[arg(long)]
    pub genesis_ops_address: Option<Address>,
    /// Extra allocations, NAME=ADDRESS:AMOUNT (repeatable).
    #[arg(long = "allocate")]
    pub allocations: Vec<String>,
    /// Scheduler addresses allowed to assign jobs; without any, a key file scheduler.key is written.
    #[arg(long = "scheduler")]
    pub schedulers: Vec<Address>,
    #[arg(long, default_value = "0.001")]
    pub min_fee: Amount,
    /// Marketplace fee in basis points, burned at settlement.
    #[arg(long, default_value_t = 250)]
    pub marketplace_fee_bps: u32,
    #[arg(long, default_value_t = 7200)]
    pub job_deadline_blocks: u64,
    /// Overwrite an existing genesis.json.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// TOML file with any of the flags below (flags win).
    #[arg(long, env = "AITBC_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "AITBC_GENESIS")]
    pub genesis: Option<PathBuf>,
    /// File holding the node's ed25519 secret key as hex.
    #[arg(long, env = "AITBC_NODE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Directory of validator-N.key files; N is the ordinal at the end of HOSTNAME (StatefulSet).
    #[arg(long, env = "AITBC_KEY_DIR")]
    pub key_dir: Option<PathBuf>,
    #[arg(long, env = "AITBC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "AITBC_RPC_LISTEN")]
    pub rpc_listen: Option<SocketAddr>,
    #[arg(long, env = "AITBC_P2P_LISTEN")]
    pub p2p_listen: Option<SocketAddr>,
    #[arg(long, env = "AITBC_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Peer p2p address HOST:PORT (repeatable, or comma-separated in AITBC_PEERS).
    #[arg(long = "peer", env = "AITBC_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Derive peers from a template with {i} for i in 0..validators, skipping our own ordinal.
    #[arg(long, env = "AITBC_PEER_TEMPLATE")]
    pub peer_template: Option<String>,
    /// fsync every write on a listener node too (validators always fsync their votes and
    /// blocks before sending a vote; a listener re-syncs what a power loss took from peers).
    #[arg(long, env = "AITBC_SYNC_WRITES")]
    pub sync_writes: bool,
    /// For benchmarks only: a validator skips fsync. After a power loss it may vote twice in
    /// one view, which breaks BFT safety. Never set this on a real chain.
    #[arg(long, hide = true, env = "AITBC_UNSAFE_NO_FSYNC")]
    pub unsafe_no_fsync: bool,
    /// Public key (hex) of a non-validator node (a listener) that may join the peer network;
    /// repeatable, or comma-separated in AITBC_ALLOW_PEERS. Validators of the genesis are
    /// always admitted; every other key is refused at HELLO.
    #[arg(long = "allow-peer", env = "AITBC_ALLOW_PEERS", value_delimiter = ',')]
    pub allow_peers: Vec<String>,
    /// While this file exists, all peer traffic is dropped (fault injection for tests).
    #[arg(long, env = "AITBC_FAULT_FILE")]
    pub fault_file: Option<PathBuf>,
    #[arg(long, env = "AITBC_MEMPOOL_CAPACITY")]
    pub mempool_capacity: Option<usize>,
    /// History, search, list and block reads per second one client address may make on the
    /// public API (bursts of twice that); beyond it they are refused with RESOURCE_EXHAUSTED.
    /// Raise it for a trusted indexer behind one address.
    #[arg(long, env = "AITBC_API_READS_PER_SECOND")]
    pub api_reads_per_second: Option<std::num::NonZeroU32>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    genesis: Option<PathBuf>,
    key_file: Option<PathBuf>,
    key_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    rpc_listen: Option<SocketAddr>,
    p2p_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    peers: Option<Vec<String>>,
    peer_template: Option<String>,
    sync_writes: Option<bool>,
    fault_file: Option<PathBuf>,
    mempool_capacity: Option<usize>,
    allow_peers: Option<Vec<String>>,
    api_reads_per_second: Option<std::num::NonZeroU32>,
}

pub fn write_secret(path: &Path, key: &Keypair) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write key file {}", path.display()))?;
    writeln!(f, "{}", key.secret_hex())?;
    Ok(())
}

pub fn read_secret(path: &Path) -> Result<Keypair> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    Keypair::from_secret_hex(s.trim()).with_context(|| {
        format!(
            "key file {} does not hold a 64-hex-digit ed25519 secret",
            path.display()
        )
    })
}

pub fn init(a: &InitArgs) -> Result<Genesis> {
    if a.validators == 0 {
        bail!("--validators must be at least 1");
    }
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let genesis_path = a.dir.join("genesis.json");
    if genesis_path.exists() && !a.force {
        bail!("{} exists; pass --force to overwrite it (the old chain's data dirs will no longer match)", genesis_path.display());
    }
    let mut validators = Vec::new();
    for i in 0..a.validators {
        let k = Keypair::generate();
        write_secret(&a.dir.join(format!("validator-{i}.key")), &k)?;
        validators.push(GenesisValidator {
            name: format!("validator-{i}"),
            key: k.public(),
            power: 1,
        });
    }
    let ops = match a.genesis_ops_address {
        Some(addr) => addr,
        None => {
            let k = Keypair::generate();
            write_secret(&a.dir.join("genesis-ops.key"), &k)?;
            k.address()
        }
    };
    let mut allocations = vec![Allocation {
        name: "genesis-ops".into(),
        address: ops,
        amount: a.genesis_supply,
    }];
    for spec in &a.allocations {
        let (name, rest) = spec
            .split_once('=')
            .context("--allocate takes NAME=ADDRESS:AMOUNT")?;
        let (addr, amount) = rest
            .split_once(':')
            .context("--allocate takes NAME=ADDRESS:AMOUNT")?;
        allocations.push(Allocation {
            name: name.into(),
            address: addr.parse()?,
            amount: amount.parse()?,
        });
    }
    let mut schedulers = a.schedulers.clone();
    if schedulers.is_empty() {
        let k = Keypair::generate();
        write_secret(&a.dir.join("scheduler.key"), &k)?;
        schedulers.push(k.address());
    }
    let genesis = Genesis {
        chain_id: a.chain_id.clone(),
        genesis_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64,
        block_time_ms: a.block_time_ms,
        min_fee: a.min_fee,
        marketplace_fee_bps: a.marketplace_fee_bps,
        default_job_deadline_blocks: a.job_deadline_blocks,
        schedulers,
        allocations,
        validators,
    };
    aitbc_node::ledger::genesis::validate(&genesis)?;
    std::fs::write(&genesis_path, serde_json::to_string_pretty(&genesis)?)?;
    Ok(genesis)
}

/// The ordinal at the end of a StatefulSet pod's host name (`aitbc-2` -> 2).
pub fn ordinal_from_hostname(host: &str) -> Option<usize> {
    host.rsplit('-').next()?.parse().ok()
}

pub fn resolve_run(args: RunArgs) -> Result<aitbc_node::node::NodeConfig> {
    let file: FileConfig = match &args.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?,
        )
        .with_context(|| format!("config {} is not valid", p.display()))?,
        None => FileConfig::default(),
    };
    let genesis_path = args
        .genesis
        .or(file.genesis)
        .context("no genesis: pass --genesis FILE (written by `aitbc-node init`)")?;
    let genesis: Genesis = serde_json::from_str(
        &std::fs::read_to_string(&genesis_path)
            .with_context(|| format!("cannot read genesis {}", genesis_path.display()))?,
    )
    .with_context(|| format!("genesis {} is not valid", genesis_path.display()))?;
    let hostname = std::env::var("HOSTNAME").unwrap_or_default();
    let ordinal = ordinal_from_hostname(&hostname);
    let key = if let Ok(hex) = std::env::var("AITBC_NODE_KEY") {
        Keypair::from_secret_hex(&hex)
            .context("AITBC_NODE_KEY is not a 64-hex-digit ed25519 secret")?
    } else if let Some(p) = args.key_file.or(file.key_file) {
        read_secret(&p)?
    } else if let Some(dir) = args.key_dir.or(file.key_dir) {
        let n = ordinal.with_context(|| format!("--key-dir needs a HOSTNAME ending in -N (a StatefulSet pod); HOSTNAME is {hostname:?}"))?;
        read_secret(&dir.join(format!("validator-{n}.key")))?
    } else {
        bail!("no node key: pass --key-file FILE, --key-dir DIR, or set AITBC_NODE_KEY");
    };
    let mut peers = if args.peers.is_empty() {
        file.peers.unwrap_or_default()
    } else {
        args.peers
    };
    if let Some(t) = args.peer_template.or(file.peer_template) {
        for i in 0..genesis.validators.len() {
            if Some(i) != ordinal {
                peers.push(t.replace("{i}", &i.to_string()));
            }
        }
    }
    let addr = |a: Option<SocketAddr>, b: Option<SocketAddr>, d: &str| {
        a.or(b)
            .unwrap_or_else(|| d.parse().expect("default address"))
    };
    Ok(aitbc_node::node::NodeConfig {
        genesis,
        key,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./aitbc-data")),
        rpc_listen: addr(args.rpc_listen, file.rpc_listen, "0.0.0.0:9100"),
        p2p_listen: addr(args.p2p_listen, file.p2p_listen, "0.0.0.0:9200"),
        http_listen: addr(args.http_listen, file.http_listen, "0.0.0.0:9300"),
        peers: peers.into_iter().filter(|p| !p.trim().is_empty()).collect(),
        sync_writes: args.sync_writes || file.sync_writes.unwrap_or(false),
        unsafe_no_fsync: args.unsafe_no_fsync,
        allow_peers: parse_peer_keys(if args.allow_peers.is_empty() {
            file.allow_peers.unwrap_or_default()
        } else {
            args.allow_peers
        })?,
        fault_file: args.fault_file.or(file.fault_file),
        mempool_capacity: args
            .mempool_capacity
            .or(file.mempool_capacity)
            .unwrap_or(100_000),
        api_reads_per_client: args
            .api_reads_per_second
            .or(file.api_reads_per_second)
            .unwrap_or(aitbc_node::api::READS_PER_CLIENT),
    })
}

/// `--allow-peer` keys; a key that does not parse is an error naming it.
fn parse_peer_keys(keys: Vec<String>) -> Result<Vec<aitbc_protocol::PublicKey>> {
    keys.iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .map(|k| {
            k.parse()
                .with_context(|| format!("--allow-peer {k:?} is not a public key (64 hex digits)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_peer_keys_must_parse() {
        let k = aitbc_protocol::Keypair::generate().public();
        assert_eq!(
            parse_peer_keys(vec![k.to_string(), " ".into()]).unwrap(),
            vec![k]
        );
        let e = parse_peer_keys(vec!["nothex".into()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("--allow-peer \"nothex\""),
            "{e:#}"
        );
    }

    #[test]
    fn ordinal_comes_from_the_pod_name() {
        assert_eq!(ordinal_from_hostname("aitbc-chain-2"), Some(2));
        assert_eq!(ordinal_from_hostname("laptop"), None);
    }
}
