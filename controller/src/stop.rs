//! `hubshift stop --run ID`: asks a running run, wherever its controller
//! runs, to park at its next safe point. The request goes through the
//! journal; the run's executor takes it between steps.

use crate::cli::InventoryArgs;
use crate::exit::Refused;
use crate::journal;
use crate::output::Output;
use anyhow::Result;
use serde_json::json;

/// Records the stop request, or refuses naming the run's state.
pub async fn stop(out: Output, inv: &InventoryArgs, run_id: &str) -> Result<()> {
    let crate::upgrade::OpenRun { client, record, .. } =
        crate::upgrade::open_run(inv, run_id).await?;
    if record.state != "running" {
        return Err(Refused(format!(
            "run {run_id} is {}, not running: nothing to stop",
            record.state
        ))
        .into());
    }
    if !journal::request_stop(&client, run_id).await? {
        return Err(Refused(format!("run {run_id} ended meanwhile: nothing to stop")).into());
    }
    journal::add_audit(&client, run_id, &crate::audit::entry("stop")).await?;
    out.event(
        "stop_requested",
        json!({ "run": run_id, "group": record.group }),
        || format!("Asked run {run_id} of group {} to stop at its next safe point; it exits 4 there, and `hubshift resume --run {run_id}` continues it.", record.group),
    );
    Ok(())
}
