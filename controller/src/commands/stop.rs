//! `hubshift stop --run ID`: asks a running run, wherever its controller
//! runs, to park at its next safe point. The request goes through the
//! journal; the run's executor takes it between steps.

use crate::cli::RunOrFleet;
use crate::exit::Refused;
use crate::journal::{self, RunState};
use crate::output::Output;
use crate::run::{OpenRun, Site, open_run};
use anyhow::Result;
use serde_json::json;
use std::path::Path;

/// Records the stop request, or refuses naming the run's state.
pub async fn stop(out: Output, inventory: &Path, which: &RunOrFleet) -> Result<()> {
    if let Some(fleet) = &which.fleet {
        return crate::fleet::stop(out, inventory, fleet).await;
    }
    let run_id = which.run.as_deref().unwrap_or_default();
    let OpenRun { client, record, .. } = open_run(&Site::load(inventory)?, run_id).await?;
    let out = out.for_group(&record.group);
    if record.state != RunState::Running {
        return Err(Refused(format!(
            "run {run_id} is {}, not running: nothing to stop",
            record.state
        ))
        .into());
    }
    // The request's time is taken before the request is made: the run may
    // park on it at once, and its park must not read as earlier than the
    // stop that caused it.
    crate::clock::sync(&client).await?;
    let audit = crate::audit::entry("stop");
    if !journal::request_stop(&client, run_id).await? {
        return Err(Refused(format!("run {run_id} ended meanwhile: nothing to stop")).into());
    }
    journal::add_audit(&client, run_id, &audit).await?;
    out.event(
        "stop_requested",
        json!({ "run": run_id, "group": record.group }),
        || format!("Asked run {run_id} of group {} to stop at its next safe point; it exits 4 there, and `hubshift resume --run {run_id}` continues it.", record.group),
    );
    Ok(())
}
