//! `hubshift resume`: a run from its first unfinished step, or a whole
//! fleet.

use crate::cli::RunOrFleet;
use crate::journal::RunState;
use crate::launch::{finish, open_run, prepare_resume};
use crate::output::Output;
use anyhow::Result;
use serde_json::json;
use std::path::Path;

/// Continues `--run ID`, or every unfinished group of `--fleet ID`.
pub async fn resume(
    out: Output,
    inventory: &Path,
    which: &RunOrFleet,
    runtime: Option<&Path>,
) -> Result<()> {
    if let Some(fleet) = &which.fleet {
        return crate::fleet::resume(out, inventory, fleet, runtime).await;
    }
    let run_id = which.run.as_deref().unwrap_or_default();
    let open = open_run(inventory, run_id).await?;
    let out = out.for_group(&open.group.name);
    if open.record.state == RunState::Done {
        out.event(
            "run_finished",
            json!({ "run": run_id, "state": RunState::Done, "already": true }),
            || format!("Run {run_id} is already done."),
        );
        return Ok(());
    }
    let (mut run, records) = prepare_resume(&out, open, runtime, "resume").await?;
    crate::executor::watch_ctrl_c(out);
    finish(&mut run, &records).await?;
    if run.facts.rollback_of.is_none() {
        crate::checks::after_upgrade(&run).await?;
    }
    Ok(())
}
