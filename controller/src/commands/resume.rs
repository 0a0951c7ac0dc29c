//! `hubshift resume`: a run from its first unfinished step, or a whole
//! fleet.

use crate::cli::RunOrFleet;
use crate::journal::RunState;
use crate::output::Output;
use crate::run::{self, Site};
use anyhow::Result;
use serde_json::json;
use std::path::Path;

/// Continues `--run ID`, or every unfinished group of `--fleet ID`.
pub async fn resume(
    out: Output,
    inventory: &Path,
    which: &RunOrFleet,
    runtime: Option<&Path>,
    wait_for_window: bool,
) -> Result<()> {
    if let Some(fleet) = &which.fleet {
        return crate::fleet::resume(out, inventory, fleet, runtime, wait_for_window).await;
    }
    let run_id = which.run.as_deref().unwrap_or_default();
    let site = Site::load(inventory)?;
    site.notify()?;
    let open = run::open_run(&site, run_id).await?;
    let out = out.for_group(&open.group.name);
    if open.record.state == RunState::Done {
        out.event(
            "run_finished",
            json!({ "run": run_id, "state": RunState::Done, "already": true }),
            || format!("Run {run_id} is already done."),
        );
        return Ok(());
    }
    drop(open);
    let (mut run, records) = run::prepare_resume(&out, &site, run_id, runtime, "resume").await?;
    run::watch_ctrl_c(out);
    run::finish(&mut run, &records).await?;
    if run.facts().rollback_of.is_none() {
        crate::checks::after_upgrade(&mut run).await?;
    }
    Ok(())
}
