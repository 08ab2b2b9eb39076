mod cli;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};

fn init_tracing(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    match cli.command {
        Command::Init(args) => {
            let g = cli::init(&args)?;
            println!("chain_id: {}", g.chain_id);
            println!("genesis: {}", args.dir.join("genesis.json").display());
            for (i, v) in g.validators.iter().enumerate() {
                println!(
                    "validator-{i}: {} (key file {})",
                    v.key,
                    args.dir.join(format!("validator-{i}.key")).display()
                );
            }
            println!("genesis-ops: {}", g.allocations[0].address);
            for s in &g.schedulers {
                println!("scheduler: {s}");
            }
            Ok(())
        }
        Command::Run(args) => {
            let cfg = cli::resolve_run(*args)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let node = aitbc_node::node::start(cfg).await?;
                shutdown_signal().await;
                tracing::info!("shutting down");
                node.chain.index.stop();
                node.chain.store.flush();
                drop(node);
                Ok(())
            })
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
