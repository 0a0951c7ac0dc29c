//! `hubshift plan`: preflight and the numbered steps, no change anywhere.

use crate::cli::TargetArgs;
use crate::exit::Refused;
use crate::output::Output;
use crate::plan;
use crate::readiness::{self, Target, human_bytes};
use crate::run::{Site, check_version, checked_archive, print_findings};
use anyhow::Result;
use serde_json::json;
use std::path::Path;

fn print_plan(out: &Output, steps: &[plan::Step], schema: &str, version: &str) {
    for (i, s) in steps.iter().enumerate() {
        out.event(
            "plan_step",
            json!({ "index": i + 1, "name": s.name(), "node": s.node(),
                    "procedure_step": s.procedure(), "description": s.describe(schema, version) }),
            || {
                format!(
                    "  {:>2}. [procedure step {}] {}",
                    i + 1,
                    s.procedure(),
                    s.describe(schema, version)
                )
            },
        );
    }
}

/// Prints the preflight findings and the steps; refused when preflight
/// would refuse the upgrade.
pub async fn plan(out: Output, inventory: &Path, group: &str, target: &TargetArgs) -> Result<()> {
    check_version(&target.version)?;
    let site = Site::load(inventory)?;
    let group = site.group(group)?.clone();
    let db = site.database(&group)?;
    let archive = checked_archive(
        &out,
        &site.inventory.trust,
        &target.runtime,
        target.sha256.as_deref(),
        target.signature.as_deref(),
    )
    .await?;
    let out = out.for_group(&group.name);
    let (_agents, observed) = crate::observe::observe(&site.inventory, &group, Some(&db)).await;
    let findings = readiness::preflight(
        &observed,
        &Target {
            version: target.version.clone(),
            archive_bytes: archive.bytes,
            allow_downgrade: target.allow_downgrade,
            declared: archive.declared.clone(),
        },
    );
    out.event(
        "plan",
        json!({ "version": target.version,
        "runtime_sha256": archive.sha256, "runtime_bytes": archive.bytes }),
        || {
            format!(
                "Plan for group {} -> {} ({}, sha256 {})\n\nPreflight:",
                group.name,
                target.version,
                human_bytes(archive.bytes),
                archive.sha256
            )
        },
    );
    print_findings(&out, &findings);
    crate::connection_room::warn(&out, &[(db.clone(), 1)]).await;
    out.human("\nSteps:");
    print_plan(
        &out,
        &plan::build_plan(&group),
        &group.database.schema,
        &target.version,
    );
    let blocking = findings.iter().filter(|f| f.blocking).count();
    if blocking > 0 {
        return Err(Refused(format!(
            "preflight found {blocking} problem(s); `upgrade` would refuse"
        ))
        .into());
    }
    out.human("\nPreflight passed; nothing was changed.");
    Ok(())
}
