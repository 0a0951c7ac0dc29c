//! `hubshift rollback --run ID`: the same hand-over as the upgrade, back to
//! the version the run started from, restoring its verified backup.

use crate::exit::Refused;
use crate::facts::RunFacts;
use crate::journal;
use crate::launch::{OpenRun, confirm, finish, lock_group, open_run, print_findings};
use crate::output::Output;
use crate::plan::{self, Finding};
use crate::refusals::{self, RunView};
use crate::run_context::{GroupDb, Run};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

/// `hubshift rollback --run ID`: back to the version and appdata the upgrade
/// run started from.
pub async fn rollback(out: Output, inventory: &Path, run_id: &str, yes: bool) -> Result<()> {
    let OpenRun {
        inventory,
        group,
        db,
        mut client,
        record,
    } = open_run(inventory, run_id).await?;
    let out = out.for_group(&group.name);
    // The lock first, as for an upgrade: what is refused or checked below
    // cannot change under this controller.
    journal::ensure_schema(&client).await?;
    lock_group(&client, &group.name).await?;
    crate::clock::sync(&client).await?;
    let steps = journal::load_steps(&client, run_id).await?;
    let view = RunView::new(&record, &steps);
    let unfinished = match journal::unfinished_run(&client, &group.name).await? {
        Some(u) => {
            let steps = journal::load_steps(&client, &u.id).await?;
            Some(RunView::new(&u, &steps))
        }
        None => None,
    };
    if let Some(r) = refusals::rollback(&view, unfinished.as_ref()) {
        return Err(Refused(r.message).into());
    }
    let original: RunFacts = serde_json::from_value(record.facts.clone())
        .context("the journal's run facts cannot be read by this version")?;
    let (Some(backup_id), Some(backup_sha)) =
        (original.backup_id.clone(), original.backup_sha256.clone())
    else {
        return Err(Refused(format!("run {run_id} recorded no backup")).into());
    };
    let (agents, observed) = crate::observe::observe(&inventory, &group, Some(&db)).await;
    let mut findings = Vec::new();
    if let Err(e) = &observed.database {
        findings.push(Finding {
            blocking: true,
            warning: false,
            check: "database",
            node: String::new(),
            message: format!("unreachable: {e}"),
        });
    }
    for n in &observed.nodes {
        match &n.status {
            Err(e) => findings.push(Finding {
                blocking: true,
                warning: false,
                check: "agent",
                node: n.name.clone(),
                message: format!("agent unreachable: {e}"),
            }),
            Ok(f) if !f.staged.contains(&original.from_version) => findings.push(Finding {
                blocking: true,
                warning: false,
                check: "version",
                node: n.name.clone(),
                message: format!("runtime {} is no longer staged", original.from_version),
            }),
            Ok(f) => findings.push(Finding {
                blocking: false,
                warning: false,
                check: "version",
                node: n.name.clone(),
                message: format!(
                    "runs {}, {} staged",
                    f.active_runtime, original.from_version
                ),
            }),
        }
    }
    if findings.iter().all(|f| !f.blocking) {
        let primary = group.primary().name.clone();
        if let Some(agent) = agents.get(&primary) {
            let timeout = std::time::Duration::from_secs(inventory.timeouts.backup);
            let health = crate::backup_check::check(agent, &original, timeout).await;
            findings.push(health.finding(&primary, run_id, &original));
        }
    }
    print_findings(&out, &findings);
    let blocking: Vec<&Finding> = findings.iter().filter(|f| f.blocking).collect();
    if !blocking.is_empty() {
        let backup = blocking.iter().find(|f| f.check == "backup");
        return Err(Refused(match backup {
            Some(f) => format!("{}; nothing was changed", f.message),
            None => format!(
                "preflight found {} problem(s); nothing was changed",
                blocking.len()
            ),
        })
        .into());
    }
    if !yes {
        confirm(&format!(
            "Roll group {} back to {}? This stops hubs, drops the orchestration schema and restores the backup.",
            group.name, original.from_version
        ))?;
    }
    let facts = RunFacts {
        version: original.from_version.clone(),
        from_version: original.version.clone(),
        schema: group.database.schema.clone(),
        backup_id: Some(backup_id),
        backup_sha256: Some(backup_sha),
        backup_bytes: original.backup_bytes,
        backup_path: original.backup_path.clone(),
        rollback_of: Some(run_id.to_string()),
        ..Default::default()
    };
    let steps = plan::build_rollback_plan(&group);
    let id = journal::create_run(
        &mut client,
        &group.name,
        "rollback",
        &serde_json::to_value(&facts)?,
        &steps,
    )
    .await?;
    out.event(
        "run_started",
        json!({ "run": id, "group": group.name, "kind": "rollback", "rollback_of": run_id,
                "from_version": facts.from_version, "to_version": facts.version, "steps": steps.len() }),
        || format!("\nRun {id}: rolling group {} back {} -> {} (reverses {run_id}, {} steps)", group.name, facts.from_version, facts.version, steps.len()),
    );
    let records = journal::load_steps(&client, &id).await?;
    journal::add_audit(&client, &id, &crate::audit::entry("rollback")).await?;
    let at = GroupDb {
        inventory,
        group,
        db,
        client,
    };
    let mut run = Run::new(id, at, out.clone(), agents, facts, None);
    crate::executor::watch_ctrl_c(out);
    finish(&mut run, &records).await
}
