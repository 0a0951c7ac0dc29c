//! `hubshift`, the controller CLI. Thin: set-up, dispatch, exit code.

mod agents;
mod audit;
mod backup_copy;
mod certs;
mod cli;
mod db;
mod executor;
mod exit;
mod facts;
mod inventory;
mod journal;
mod journal_link;
mod observe;
mod output;
mod plan;
mod runs;
mod status;
mod steps;
mod stop;
mod upgrade;

use clap::Parser;
use cli::{CertsCommand, Cli, Command};
use exit::{Exit, UsageError};
use inventory::Inventory;
use output::Output;

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                Exit::Usage as u8
            } else {
                0
            });
        }
    };
    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(Exit::Failed as u8);
        }
    };
    let result = runtime.block_on(dispatch(out, cli.command));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::classify(&err);
            let message = hubshift_common::redact::redact(&format!("{err:#}"));
            out.event(
                "error",
                serde_json::json!({ "exit_code": code as u8, "error": message }),
                String::new,
            );
            eprintln!("error: {message}");
            std::process::ExitCode::from(code as u8)
        }
    }
}

async fn dispatch(out: Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Status { inventory, group } => {
            let inv = Inventory::load(&inventory.inventory).map_err(UsageError::from)?;
            status::status(out, &inv, group.as_deref()).await
        }
        Command::Plan { inventory, target } => upgrade::plan(out, &inventory, &target).await,
        Command::Upgrade {
            inventory,
            target,
            yes,
            pause_before,
        } => upgrade::upgrade(out, &inventory, &target, yes, &pause_before).await,
        Command::Stop { inventory, run } => stop::stop(out, &inventory, &run).await,
        Command::Resume {
            inventory,
            run,
            runtime,
        } => upgrade::resume(out, &inventory, &run, runtime.as_deref()).await,
        Command::Rollback {
            inventory,
            run,
            yes,
        } => upgrade::rollback(out, &inventory, &run, yes).await,
        Command::Abandon { inventory, run } => upgrade::abandon(out, &inventory, &run).await,
        Command::Runs {
            inventory,
            group,
            run,
            limit,
        } => {
            let inv = Inventory::load(&inventory.inventory).map_err(UsageError::from)?;
            runs::runs(out, &inv, group.as_deref(), run.as_deref(), limit).await
        }
        Command::Certs {
            command:
                CertsCommand::Init {
                    dir,
                    agents,
                    controller,
                    force,
                },
        } => certs::init(out, &dir, &agents, &controller, force),
    }
}
