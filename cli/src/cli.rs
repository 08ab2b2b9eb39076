//! The command line's shape (clap). Flag names follow shared/CLI.md exactly: user scripts
//! written for the first AITBC command line run unchanged.

use crate::output::Format;
use crate::period::Period;
use aitbc_protocol::Amount;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "Examples:
  aitbc-cli devnet up --detach                       # local chain, GPU agents and scheduler
  aitbc-cli create --name alice --password secret
  aitbc-cli send --from genesis-ops --to ADDRESS --amount 1000 --password secret
  aitbc-cli marketplace --action create --name \"Test AI Service\" --type ai-inference --price 10 --wallet alice
  aitbc-cli marketplace --action list | grep \"Test AI Service\" | grep service_id | cut -d\" \" -f2
  aitbc-cli ai-submit --wallet bob --type inference --prompt \"a red fox\" --payment 10
  aitbc-cli ai-status --job-id JOB --wait
  aitbc-cli --output json balance --name alice

Passwords come from --password or --password-file, else AITBC_PASSWORD, else a prompt on a terminal.
The node is --node URL, else `node` in $AITBC_HOME/config.toml (written by `devnet up`),
else http://127.0.0.1:9100. Wallets live in $AITBC_HOME (default ~/.aitbc).";

#[derive(Parser, Debug)]
#[command(name = "aitbc-cli", version, about = "AITBC command line: wallets, marketplace, AI jobs, GPU resources, local devnet", after_help = EXAMPLES)]
pub struct Cli {
    /// Chain node gRPC endpoint (default: config.toml's `node`, else http://127.0.0.1:9100).
    #[arg(long, global = true, env = "AITBC_NODE")]
    pub node: Option<String>,
    /// Output format: `text` (key: value lines) or `json` (one JSON document).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: Format,
    /// Wallet password (else AITBC_PASSWORD, else a terminal prompt). Visible to other users in
    /// the process list: prefer --password-file or AITBC_PASSWORD.
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// File holding the wallet password (its first line), instead of --password.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "password")]
    pub password_file: Option<std::path::PathBuf>,
    /// Return once a transaction is accepted by the node, without waiting for its block.
    #[arg(long, global = true)]
    pub no_wait: bool,
    /// Seconds to wait for a transaction's commit.
    #[arg(long, global = true, default_value_t = 60)]
    pub timeout: u64,
    /// Transaction fee in AIT (default: the chain's minimum fee).
    #[arg(long, global = true)]
    pub fee: Option<Amount>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a wallet in the local keystore, encrypted with the password.
    #[command(after_help = "Example:\n  aitbc-cli create --name alice --password secret")]
    Create {
        #[arg(long)]
        name: String,
    },
    /// List local wallets, one `NAME: ADDRESS` line each.
    #[command(after_help = "Example:\n  aitbc-cli list | grep alice | cut -d\" \" -f2")]
    List,
    /// Balance and escrowed amount of a wallet (name or address).
    #[command(after_help = "Example:\n  aitbc-cli balance --name alice")]
    Balance {
        #[arg(long)]
        name: String,
    },
    /// Signed transfer; waits for commit.
    #[command(
        after_help = "Example:\n  aitbc-cli send --from genesis-ops --to ait0123... --amount 100 --password secret"
    )]
    Send {
        #[arg(long)]
        from: String,
        /// Address (or the name of a local wallet).
        #[arg(long)]
        to: String,
        #[arg(long, allow_hyphen_values = true)]
        amount: Amount,
    },
    /// A wallet's history, newest first; or (--cross-node) a window read from every node.
    #[command(
        after_help = "Examples:\n  aitbc-cli transactions --name alice --limit 10\n  aitbc-cli transactions --cross-node --period 1h"
    )]
    Transactions(TransactionsArgs),
    /// One transaction: status, verify, verify-propagation.
    #[command(subcommand)]
    Transaction(TransactionCmd),
    /// Marketplace actions (`--action ACTION`): listings, bids, settlement, audits, load tests.
    #[command(after_help = MARKETPLACE_HELP)]
    Marketplace(Box<MarketplaceArgs>),
    /// Escrow a payment and schedule an AI job; prints `job_id`.
    #[command(
        name = "ai-submit",
        after_help = "Examples:\n  aitbc-cli ai-submit --wallet bob --type inference --prompt \"a red fox\" --payment 10 --service-id svc-...\n  aitbc-cli ai-submit --wallet bob --type training --dataset data.csv --payment 50 --gpu-allocated 1"
    )]
    AiSubmit(AiSubmitArgs),
    /// A job's phase, agent and progress; --wait follows it to the end.
    #[command(
        name = "ai-status",
        after_help = "Example:\n  aitbc-cli ai-status --job-id job-0123456789abcdef --wait"
    )]
    AiStatus {
        #[arg(long)]
        job_id: String,
        #[arg(long)]
        wait: bool,
    },
    /// A job's result: text shown, files saved, digest, signed receipt, settlement tx.
    #[command(
        name = "ai-results",
        after_help = "Example:\n  aitbc-cli ai-results --job-id job-0123456789abcdef --output-dir ./out"
    )]
    AiResults {
        #[arg(long)]
        job_id: String,
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// GPU utilization, memory and jobs of an agent.
    #[command(
        name = "ai-metrics",
        after_help = "Example:\n  aitbc-cli ai-metrics --agent-id gpu-worker-1 --period 1h"
    )]
    AiMetrics {
        /// Agent name (`gpu-worker-1`) or agent key.
        #[arg(long)]
        agent_id: String,
        #[arg(long, default_value = "1h")]
        period: Period,
    },
    /// GPU resources: allocate, status, utilization, deallocate, test.
    #[command(subcommand)]
    Resource(ResourceCmd),
    /// A local network: validators, GPU agents and the scheduler.
    #[command(subcommand)]
    Devnet(DevnetCmd),
    /// Shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Example:\n  aitbc-cli completions bash > /etc/bash_completion.d/aitbc-cli"
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Debug)]
pub struct TransactionsArgs {
    #[arg(long, required_unless_present = "cross_node")]
    pub name: Option<String>,
    /// How many of the newest transactions to list (read from the node in pages of 100).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Read the window from every node and flag disagreements.
    #[arg(long)]
    pub cross_node: bool,
    #[arg(long, default_value = "1h")]
    pub period: Period,
}

#[derive(Subcommand, Debug)]
pub enum TransactionCmd {
    /// pending / committed (height, confirmations) / rejected (reason).
    #[command(after_help = "Example:\n  aitbc-cli transaction status --tx-id HASH")]
    Status {
        #[arg(long)]
        tx_id: String,
    },
    /// Checks signature, inclusion (Merkle proof against the block header) and finality.
    #[command(after_help = "Example:\n  aitbc-cli transaction verify --tx-id HASH")]
    Verify {
        #[arg(long)]
        tx_id: String,
    },
    /// Asks every node; all must hold it in the same block.
    #[command(
        name = "verify-propagation",
        after_help = "Example:\n  aitbc-cli transaction verify-propagation --tx-id HASH"
    )]
    VerifyPropagation {
        #[arg(long)]
        tx_id: String,
    },
}

const MARKETPLACE_HELP: &str = "Actions:
  create list search my-listings bid accept-bid reject-bid cancel-bid pending-bids settle-payment
  close update verify-settlement transactions revenue volume audit financial-audit reconcile
  payment-verify verify-provider quality-metrics satisfaction compliance-check regulatory-audit
  privacy-audit pricing optimize cross-node-stats performance-metrics latency-metrics
  capacity-metrics stress-test throughput-test ai-throughput-test health-check connectivity-test
  integrity-check debug

Examples:
  aitbc-cli marketplace --action create --name \"Test AI Service\" --type ai-inference --price 10 --wallet alice
  aitbc-cli marketplace --action bid --service-id svc-... --amount 10 --wallet bob
  aitbc-cli marketplace --action accept-bid --service-id svc-... --bid-id bid-... --wallet alice
  aitbc-cli marketplace --action settle-payment --service-id svc-... --amount 10 --wallet bob
  aitbc-cli marketplace --action audit --period 24h
  aitbc-cli marketplace --action stress-test --transactions 1000 --concurrent 50";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Action {
    Create,
    List,
    Search,
    MyListings,
    Bid,
    AcceptBid,
    RejectBid,
    CancelBid,
    PendingBids,
    SettlePayment,
    Close,
    Update,
    VerifySettlement,
    Transactions,
    Revenue,
    Volume,
    Audit,
    FinancialAudit,
    Reconcile,
    PaymentVerify,
    VerifyProvider,
    QualityMetrics,
    Satisfaction,
    ComplianceCheck,
    RegulatoryAudit,
    PrivacyAudit,
    Pricing,
    Optimize,
    CrossNodeStats,
    PerformanceMetrics,
    LatencyMetrics,
    CapacityMetrics,
    StressTest,
    ThroughputTest,
    AiThroughputTest,
    HealthCheck,
    ConnectivityTest,
    IntegrityCheck,
    Debug,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    Fixed,
    Dynamic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Metric {
    Utilization,
}

#[derive(Args, Debug)]
pub struct MarketplaceArgs {
    #[arg(long, value_enum)]
    pub action: Action,
    #[arg(long)]
    pub name: Option<String>,
    /// Service type: ai-inference, ai-training, gpu-rental, data-processing.
    #[arg(long = "type")]
    pub service_type: Option<aitbc_protocol::tx::ServiceType>,
    #[arg(long, allow_hyphen_values = true)]
    pub price: Option<Amount>,
    #[arg(long)]
    pub wallet: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// "k:v,k:v"
    #[arg(long)]
    pub parameters: Option<String>,
    /// Runtime command of the listing (argv, space separated); default: the agent's demo runtime.
    #[arg(long)]
    pub runtime_command: Option<String>,
    #[arg(long)]
    pub query: Option<String>,
    #[arg(long)]
    pub service_id: Option<String>,
    #[arg(long)]
    pub bid_id: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub amount: Option<Amount>,
    #[arg(long)]
    pub period: Option<Period>,
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// With `pricing --strategy dynamic`: set the suggested price on chain.
    #[arg(long)]
    pub apply: bool,
    #[arg(long, value_enum)]
    pub metric: Option<Metric>,
    #[arg(long)]
    pub transactions: Option<u64>,
    #[arg(long)]
    pub concurrent: Option<usize>,
    /// Seconds.
    #[arg(long)]
    pub duration: Option<u64>,
    #[arg(long)]
    pub transactions_per_second: Option<f64>,
    #[arg(long)]
    pub jobs_per_minute: Option<f64>,
    #[arg(long)]
    pub transaction_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct AiSubmitArgs {
    #[arg(long)]
    pub wallet: String,
    #[arg(long = "type", value_enum)]
    pub job_type: JobType,
    #[arg(long, allow_hyphen_values = true)]
    pub payment: Option<Amount>,
    #[arg(long)]
    pub service_id: Option<String>,
    /// Draw the payment from this accepted bid instead of escrowing a new one.
    #[arg(long)]
    pub bid_id: Option<String>,
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    #[arg(long)]
    pub input_data: Option<PathBuf>,
    #[arg(long)]
    pub gpu_allocated: Option<u32>,
    /// MiB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// WxH, e.g. 512x512.
    #[arg(long)]
    pub resolution: Option<String>,
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Job time limit in seconds on the agent.
    #[arg(long)]
    pub time_limit: Option<u64>,
    /// Blocks until an unfinished job may be refunded (default: the chain's).
    #[arg(long)]
    pub deadline_blocks: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JobType {
    Inference,
    Training,
}

#[derive(Subcommand, Debug)]
pub enum ResourceCmd {
    /// Reserve GPUs on an agent; concurrent calls never over-commit.
    #[command(
        after_help = "Example:\n  aitbc-cli resource allocate --agent-id gpu-worker-1 --gpu 1 --memory 8192 --duration 3600 --wallet bob"
    )]
    Allocate {
        /// Agent name (`gpu-worker-1`) or agent key.
        #[arg(long)]
        agent_id: String,
        #[arg(long)]
        gpu: u32,
        /// MiB.
        #[arg(long)]
        memory: u64,
        /// Seconds.
        #[arg(long)]
        duration: u64,
        /// Holder of the lease (wallet name or address; default: the agent's owner).
        #[arg(long)]
        wallet: Option<String>,
        /// Caller-chosen id, makes the call idempotent.
        #[arg(long)]
        allocation_id: Option<String>,
    },
    /// GPUs, allocations, running jobs.
    #[command(after_help = "Example:\n  aitbc-cli resource status --agent-id gpu-worker-1")]
    Status {
        /// Agent name (`gpu-worker-1`) or agent key.
        #[arg(long)]
        agent_id: Option<String>,
    },
    /// Utilization over time.
    #[command(after_help = "Example:\n  aitbc-cli resource utilization --type gpu --period 1h")]
    Utilization {
        #[arg(long = "type", value_enum, default_value = "gpu")]
        resource_type: ResourceType,
        #[arg(long, default_value = "1h")]
        period: Period,
        /// Agent name (`gpu-worker-1`) or agent key.
        #[arg(long)]
        agent_id: Option<String>,
    },
    /// Release an allocation (all of the agent's allocations without --allocation-id).
    #[command(
        after_help = "Example:\n  aitbc-cli resource deallocate --agent-id gpu-worker-1 --allocation-id lease-..."
    )]
    Deallocate {
        /// Agent name (`gpu-worker-1`) or agent key.
        #[arg(long)]
        agent_id: String,
        #[arg(long)]
        allocation_id: Option<String>,
    },
    /// A real stress run on the agent's GPUs, reporting what it measured.
    #[command(
        after_help = "Example:\n  aitbc-cli resource test --type gpu --memory-stress --duration 30"
    )]
    Test {
        #[arg(long = "type", value_enum, default_value = "gpu")]
        resource_type: ResourceType,
        #[arg(long)]
        memory_stress: bool,
        /// Seconds (the passes are sized to take about this long).
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Agent name (`gpu-worker-1`) or agent key.
        #[arg(long)]
        agent_id: Option<String>,
        /// MiB per GPU (default: a quarter of the GPU's memory).
        #[arg(long)]
        memory: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResourceType {
    Gpu,
}

#[derive(Subcommand, Debug)]
pub enum DevnetCmd {
    /// Start (or resume) a local network.
    #[command(
        after_help = "Examples:\n  aitbc-cli devnet up --genesis-password secret --detach\n  aitbc-cli devnet up --validators 4 --agents 2 --dir /tmp/devnet"
    )]
    Up(DevnetUpArgs),
    /// Which devnet processes run, and the chain's height.
    #[command(after_help = "Example:\n  aitbc-cli devnet status --dir ~/.aitbc/devnet")]
    Status {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop the processes recorded in DIR/devnet.json (data stays in DIR).
    #[command(
        after_help = "Example:\n  aitbc-cli devnet down          # then `aitbc-cli devnet up` resumes the same chain"
    )]
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct DevnetUpArgs {
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Default: $AITBC_HOME/devnet.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Password of the genesis-ops wallet (else AITBC_PASSWORD, else --password, else a prompt).
    #[arg(long)]
    pub genesis_password: Option<String>,
    /// Return once everything runs; stop it later with `aitbc-cli devnet down`.
    #[arg(long)]
    pub detach: bool,
    #[arg(long, default_value_t = 500)]
    pub block_time_ms: u64,
    #[arg(long, default_value = "aitbc-devnet")]
    pub chain_id: String,
    /// GPUs each agent declares where NVML finds none.
    #[arg(long, default_value_t = 2)]
    pub simulate_gpus: u32,
    #[arg(long, default_value_t = 16384)]
    pub simulated_gpu_memory_mib: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("aitbc-cli").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn amounts_parse_exactly_and_bad_ones_are_refused_with_the_reason() {
        let c = parse(&["send", "--from", "a", "--to", "b", "--amount", "0.5"]).unwrap();
        match c.command {
            Command::Send { amount, .. } => assert_eq!(amount, Amount(500_000)),
            other => panic!("{other:?}"),
        }
        for (bad, why) in [
            ("-1", "negative"),
            ("1e5", "not a number"),
            ("0.0000001", "decimals"),
            ("", "empty"),
        ] {
            let e = parse(&["send", "--from", "a", "--to", "b", "--amount", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_old_scripts_command_lines_parse() {
        let m = parse(&[
            "marketplace",
            "--action",
            "create",
            "--name",
            "Test AI Service",
            "--type",
            "ai-inference",
            "--price",
            "10",
            "--wallet",
            "alice",
        ])
        .unwrap();
        let Command::Marketplace(m) = m.command else {
            panic!("not marketplace")
        };
        assert_eq!(m.action, Action::Create);
        assert_eq!(
            m.service_type,
            Some(aitbc_protocol::tx::ServiceType::AiInference)
        );
        let p = parse(&["marketplace", "--action", "audit", "--period", "24h"]).unwrap();
        let Command::Marketplace(p) = p.command else {
            panic!("not marketplace")
        };
        assert_eq!(p.period, Some(Period::H24));
        assert!(
            parse(&["marketplace", "--action", "audit", "--period", "2d"])
                .unwrap_err()
                .to_string()
                .contains("5m, 1h, 24h, 7d, 30d")
        );
        assert!(parse(&[
            "ai-submit",
            "--wallet",
            "bob",
            "--type",
            "inference",
            "--payment",
            "10",
            "--resolution",
            "512x512",
            "--gpu-allocated",
            "1"
        ])
        .is_ok());
        assert!(parse(&[
            "resource",
            "allocate",
            "--agent-id",
            "gpu-worker-1",
            "--gpu",
            "1",
            "--memory",
            "8192",
            "--duration",
            "3600"
        ])
        .is_ok());
        assert!(parse(&["transactions", "--cross-node", "--period", "1h"]).is_ok());
        assert!(
            parse(&["transactions"]).is_err(),
            "--name or --cross-node is required"
        );
        // Global flags work after the subcommand, as the old scripts put --password there.
        let c = parse(&[
            "send",
            "--from",
            "a",
            "--to",
            "b",
            "--amount",
            "1",
            "--password",
            "pw",
        ])
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("pw"));
        let c = parse(&["balance", "--name", "a", "--output", "json"]).unwrap();
        assert_eq!(c.output, Format::Json);
    }
}
