//! One module per command family; `dispatch` routes the parsed command line.

pub mod ai;
pub mod analytics;
pub mod audit;
pub mod devnet;
pub mod load;
pub mod marketplace;
pub mod resource;
pub mod transaction;
pub mod wallet;

use crate::cli::{Cli, Command, DevnetCmd, TransactionCmd};
use crate::context::Ctx;
use crate::output::Report;
use anyhow::Result;

pub async fn dispatch(cli: &Cli, ctx: &Ctx) -> Result<Report> {
    match &cli.command {
        Command::Create { name } => wallet::create(ctx, name),
        Command::List => wallet::list(ctx),
        Command::Balance { name } => wallet::balance(ctx, name).await,
        Command::Send { from, to, amount } => wallet::send(ctx, from, to, *amount).await,
        Command::Transactions(a) => wallet::transactions(ctx, a).await,
        Command::Transaction(TransactionCmd::Status { tx_id }) => {
            transaction::status(ctx, tx_id).await
        }
        Command::Transaction(TransactionCmd::Verify { tx_id }) => {
            transaction::verify(ctx, tx_id).await
        }
        Command::Transaction(TransactionCmd::VerifyPropagation { tx_id }) => {
            transaction::verify_propagation(ctx, tx_id).await
        }
        Command::Marketplace(m) => marketplace::run(ctx, m).await,
        Command::AiSubmit(a) => ai::submit(ctx, a).await,
        Command::AiStatus { job_id, wait } => ai::status(ctx, job_id, *wait).await,
        Command::AiResults { job_id, output_dir } => {
            ai::results(ctx, job_id, output_dir.as_deref()).await
        }
        Command::AiMetrics { agent_id, period } => ai::metrics(ctx, agent_id, *period).await,
        Command::Resource(r) => resource::run(ctx, r).await,
        Command::Devnet(DevnetCmd::Up(a)) => devnet::up(ctx, a).await,
        Command::Devnet(DevnetCmd::Status { dir }) => devnet::status(ctx, dir.as_deref()).await,
        Command::Devnet(DevnetCmd::Down { dir }) => devnet::down(ctx, dir.as_deref()).await,
        Command::Completions { .. } => Ok(ctx.report()),
    }
}
