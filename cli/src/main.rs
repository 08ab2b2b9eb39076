//! `aitbc-cli` entry point: parse, run, print; errors to stderr with a non-zero exit code.

use aitbc_cli::cli::{Cli, Command};
use aitbc_cli::commands;
use aitbc_cli::context::Ctx;
use clap::{CommandFactory, Parser};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "aitbc-cli",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let ctx = match Ctx::new(&cli) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match commands::dispatch(&cli, &ctx).await {
        Ok(report) => {
            report.print();
            if report.failed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    let mut msg = format!("error: {e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!(": {c}"));
        }
    }
    eprintln!("{msg}");
    ExitCode::from(2)
}
