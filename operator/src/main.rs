//! `aitbc-operator`: the AITBC Kubernetes operator.

use aitbc_operator::run::{run, RunArgs};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "aitbc-operator",
    version,
    about = "AITBC Kubernetes operator: chain Nodes, Wallets, ServiceListings, Bids and AIJobs"
)]
struct Cli {
    /// Log format: json for collectors, text for people.
    #[arg(long, global = true, default_value = "json", env = "AITBC_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers (with leader election), the scheduler and the HTTP probes/metrics.
    Run(Box<RunArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,tower=warn,hyper=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.log_format == "json" {
        builder.json().with_current_span(false).init();
    } else {
        builder.init();
    }
    match cli.command {
        Command::Run(args) => run(*args).await,
    }
}
