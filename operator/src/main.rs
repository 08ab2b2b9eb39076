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
    /// Print (JSON, a v1 List) the pod-running objects the operator would create for a Node
    /// read from a JSON file (`-` for stdin), without a cluster: what `make chart-check` checks
    /// against the restricted Pod Security Standard.
    Render {
        /// The Node resource as JSON.
        #[arg(long)]
        node: String,
        /// The operator's namespace (allowed to reach the chain's RPC port).
        #[arg(long, default_value = "aitbc-system")]
        operator_namespace: String,
    },
}

fn render(node: &str, operator_namespace: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = if node == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the Node from stdin")?
    } else {
        std::fs::read_to_string(node).with_context(|| format!("reading {node}"))?
    };
    let mut node: aitbc_crds::Node = serde_json::from_str(&text).context("not a Node resource")?;
    if node.metadata.namespace.is_none() {
        node.metadata.namespace = Some("default".into());
    }
    node.metadata.uid.get_or_insert_with(|| "rendered".into());
    let items =
        aitbc_operator::controllers::members::rendered_pod_objects(&node, operator_namespace);
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    println!("{}", serde_json::to_string_pretty(&list)?);
    Ok(())
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
        Command::Render {
            node,
            operator_namespace,
        } => render(&node, &operator_namespace),
    }
}
