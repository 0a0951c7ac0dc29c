//! `hubshift upgrade`: one group, or several as a fleet.

use crate::cli::{FleetArgs, TargetArgs};
use crate::exit::UsageError;
use crate::fleet::{self, FleetPolicy};
use crate::inventory::Inventory;
use crate::launch::{
    UpgradeRequest, check_pause_before, check_published_digest, check_version, confirm, finish,
    prepare_upgrade, read_archive, record_upgrade,
};
use crate::output::Output;
use anyhow::Result;
use std::path::Path;

/// Upgrades the selected group, or runs the fleet when several are.
pub async fn upgrade(
    out: Output,
    inventory: &Path,
    which: &FleetArgs,
    target: &TargetArgs,
    yes: bool,
    pause_before: &[String],
) -> Result<()> {
    check_version(&target.version)?;
    let inventory = Inventory::load(inventory).map_err(UsageError::from)?;
    let names: Vec<String> = if which.all {
        inventory.groups.iter().map(|g| g.name.clone()).collect()
    } else {
        which.groups.clone()
    };
    let mut groups = Vec::new();
    for name in &names {
        let g = inventory.group(name).map_err(UsageError::from)?.clone();
        if groups
            .iter()
            .any(|x: &crate::inventory::Group| x.name == g.name)
        {
            return Err(UsageError(format!("-g {name} is given twice")).into());
        }
        check_pause_before(&g, pause_before)?;
        groups.push(g);
    }
    if let Some(c) = &which.canary
        && !names.contains(c)
    {
        return Err(UsageError(format!(
            "--canary {c}: not one of the groups being upgraded ({})",
            names.join(", ")
        ))
        .into());
    }
    let archive = read_archive(&target.runtime).await?;
    check_published_digest(&archive, target.sha256.as_deref())?;
    let req = UpgradeRequest {
        version: target.version.clone(),
        archive,
        pause_before: pause_before.to_vec(),
        fleet: None,
        allow_downgrade: target.allow_downgrade,
    };
    if groups.len() > 1 || which.all {
        let policy = FleetPolicy {
            parallel: which.parallel,
            canary: which.canary.clone(),
            soak_ms: which.soak.as_millis() as u64,
            max_failed: which.max_failed,
            skip_unready: which.skip_unready,
        };
        return fleet::start(out, inventory, groups, req, policy, yes).await;
    }
    let group = &groups[0];
    let out = out.for_group(&group.name);
    let prepared = prepare_upgrade(&out, &inventory, group, &req).await?;
    if !yes {
        confirm(&format!(
            "Upgrade group {} to {}? This stops hubs and drops the orchestration schema.",
            group.name, req.version
        ))?;
    }
    let (mut run, records) = record_upgrade(&out, prepared, &req, "upgrade").await?;
    crate::executor::watch_ctrl_c(out);
    finish(&mut run, &records).await?;
    crate::checks::after_upgrade(&run).await
}
