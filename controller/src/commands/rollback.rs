//! `hubshift rollback --run ID`: the same hand-over as the upgrade, back to
//! the version the run started from, restoring its verified backup.

use super::confirm::confirm;
use crate::output::Output;
use crate::run::{self, Site};
use anyhow::Result;
use std::path::Path;

/// `hubshift rollback --run ID`: back to the version and appdata the upgrade
/// run started from.
pub async fn rollback(out: Output, inventory: &Path, run_id: &str, yes: bool) -> Result<()> {
    let site = Site::load(inventory)?;
    site.notify()?;
    let prepared = run::prepare_rollback(&out, &site, run_id).await?;
    let group = prepared.group_name().to_string();
    let out = out.for_group(&group);
    if !yes {
        confirm(&format!(
            "Roll group {group} back to {}? This stops hubs, drops the orchestration schema and restores the backup.",
            prepared.to_version()
        ))?;
    }
    let (mut run, records) = run::record_rollback(&out, prepared).await?;
    run::watch_ctrl_c(out);
    run::finish(&mut run, &records).await
}
