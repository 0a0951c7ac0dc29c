//! `hubshift upgrade`: one group, or several as a fleet.

use super::confirm::confirm;
use crate::cli::{FleetArgs, TargetArgs};
use crate::exit::UsageError;
use crate::fleet::{self, FleetPolicy};
use crate::output::Output;
use crate::run::{self, Site, UpgradeRequest, check_pause_before, check_version, checked_archive};
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
    let site = Site::load(inventory)?;
    site.notify()?;
    let names: Vec<String> = if which.all {
        site.inventory
            .groups
            .iter()
            .map(|g| g.name.clone())
            .collect()
    } else {
        which.groups.clone()
    };
    let mut groups = Vec::new();
    for name in &names {
        let g = site.group(name)?.clone();
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
    let archive = checked_archive(
        &out,
        &site.inventory.trust,
        &target.runtime,
        target.sha256.as_deref(),
        target.signature.as_deref(),
    )
    .await?;
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
            wait_for_window: which.wait_for_window,
        };
        return fleet::start(out, site, groups, req, policy, yes).await;
    }
    let group = &groups[0];
    let out = out.for_group(&group.name);
    crate::fleet::await_window(&out, &site, group, which.wait_for_window).await?;
    let prepared = run::prepare_upgrade(&out, &site, group, &req).await?;
    if !yes {
        confirm(&format!(
            "Upgrade group {} to {}? This stops hubs and drops the orchestration schema.",
            group.name, req.version
        ))?;
    }
    let (mut run, records) = run::record_upgrade(&out, prepared, &req, "upgrade").await?;
    run::watch_ctrl_c(out);
    run::finish(&mut run, &records).await?;
    crate::checks::after_upgrade(&mut run).await
}
