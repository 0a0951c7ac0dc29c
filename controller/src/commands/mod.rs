//! One file per `hubshift` command; [`dispatch`] picks one.

pub mod abandon;
pub mod certs;
pub mod confirm;
pub mod plan;
pub mod report;
pub mod resume;
pub mod rollback;
pub mod runs;
pub mod status;
pub mod stop;
pub mod upgrade;
pub mod watch;

use crate::cli::{CertsCommand, Command};
use crate::output::Output;
use anyhow::Result;

/// Runs one command.
pub async fn dispatch(out: Output, command: Command) -> Result<()> {
    match command {
        Command::Status { inventory, groups } => {
            status::status(out, &inventory.inventory, &groups).await
        }
        Command::Watch {
            inventory,
            groups,
            listen,
            interval,
        } => {
            let args = crate::watch::WatchArgs {
                groups,
                listen,
                interval,
            };
            watch::watch(out, &inventory.inventory, &args).await
        }
        Command::Plan {
            inventory,
            group,
            target,
        } => plan::plan(out, &inventory.inventory, &group, &target).await,
        Command::Upgrade {
            inventory,
            fleet,
            target,
            yes,
            pause_before,
        } => {
            upgrade::upgrade(
                out,
                &inventory.inventory,
                &fleet,
                &target,
                yes,
                &pause_before,
            )
            .await
        }
        Command::Stop { inventory, which } => stop::stop(out, &inventory.inventory, &which).await,
        Command::Resume {
            inventory,
            which,
            runtime,
            wait_for_window,
        } => {
            resume::resume(
                out,
                &inventory.inventory,
                &which,
                runtime.as_deref(),
                wait_for_window,
            )
            .await
        }
        Command::Rollback {
            inventory,
            run,
            yes,
        } => rollback::rollback(out, &inventory.inventory, &run, yes).await,
        Command::Abandon { inventory, run } => {
            abandon::abandon(out, &inventory.inventory, &run).await
        }
        Command::Runs {
            inventory,
            group,
            run,
            fleet,
            limit,
        } => {
            runs::runs(
                out,
                &inventory.inventory,
                group.as_deref(),
                run.as_deref(),
                fleet.as_deref(),
                limit,
            )
            .await
        }
        Command::Report {
            inventory,
            run,
            fleet,
            output,
            format,
            measured_gaps,
        } => {
            report::report(
                out,
                &inventory.inventory,
                run.as_deref(),
                fleet.as_deref(),
                output.as_deref(),
                format,
                measured_gaps.as_deref(),
            )
            .await
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
