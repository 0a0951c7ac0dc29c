//! `hubshift abandon --run ID`: gives up a run that changed nothing
//! irreversible, starting again a primary it had stopped.

use crate::agents::{is_running, role_name, state_name};
use crate::db::Database;
use crate::exit::Refused;
use crate::inventory::{Group, Inventory};
use crate::journal::{self, StepState};
use crate::output::Output;
use crate::plan;
use crate::run::{self, Locked, Site};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

/// `hubshift abandon --run ID`: lets a new upgrade start after a run that
/// stopped before anything irreversible.
pub async fn abandon(out: Output, inventory: &Path, run_id: &str) -> Result<()> {
    let site = Site::load(inventory)?;
    let (locked, record) = run::lock_run(&site, run_id).await?;
    let out = out.for_group(&locked.group.name);
    if let Some(why) = run::abandon_refusal(&locked, &record).await? {
        return Err(Refused(why).into());
    }
    let Locked {
        inventory,
        group,
        db,
        client,
    } = locked;
    let steps = journal::load_steps(&client, run_id).await?;
    let stopped: Vec<String> = steps
        .iter()
        .filter(|s| {
            matches!(s.step, plan::Step::StopPrimary { .. }) && s.state != StepState::Pending
        })
        .map(|s| s.step.node())
        .collect();
    // Give the group its primary back before letting go of the run.
    let mut restarted = Vec::new();
    let mut problems = Vec::new();
    for n in &stopped {
        match restart_primary(&inventory, &db, &group, n).await {
            Ok(true) => restarted.push(n.clone()),
            Ok(false) => {}
            Err(e) => problems.push(format!(
                "{n}: {}",
                hubshift_common::error_text::one_line(e.as_ref())
            )),
        }
    }
    if !problems.is_empty() {
        return Err(anyhow::anyhow!(
            "run {run_id} stopped its primary and it could not be started again ({}); the run stays open: fix the cause and run `hubshift abandon --run {run_id}` again, or `hubshift resume --run {run_id}`",
            problems.join("; ")
        ));
    }
    journal::add_audit(&client, run_id, &crate::audit::entry("abandon")).await?;
    journal::mark_abandoned(&client, run_id).await?;
    out.event(
        "run_abandoned",
        json!({ "run": run_id, "group": record.group, "stopped_primary": stopped, "restarted": restarted }),
        || {
            let mut s = format!("Run {run_id} abandoned; group {} can be upgraded again.", record.group);
            for n in &restarted {
                s.push_str(&format!(
                    "\nThis run had stopped {n}; it was started again on its runtime and runs."
                ));
            }
            s
        },
    );
    Ok(())
}

/// Starts a primary that an abandoned run stopped (START on its untouched
/// runtime) and waits until it runs with a known role. `Ok(false)`: it was
/// already running.
async fn restart_primary(
    inventory: &Inventory,
    db: &Database,
    group: &Group,
    node: &str,
) -> Result<bool> {
    let spec = group
        .nodes
        .iter()
        .find(|n| n.name == node)
        .with_context(|| format!("node {node} is no longer in group {}", group.name))?;
    let agent = crate::agents::connect(inventory, spec).await?;
    let status = agent.status().await?;
    if is_running(&status) {
        return Ok(false);
    }
    let timeout = std::time::Duration::from_secs(inventory.timeouts.start);
    agent
        .start(
            crate::hub::StartMode::Start,
            node,
            db.jdbc_uri().expose(),
            timeout,
        )
        .await?;
    let deadline = std::time::Instant::now()
        + timeout
        + std::time::Duration::from_secs(inventory.timeouts.takeover);
    loop {
        let s = agent.status().await?;
        if !is_running(&s) {
            anyhow::bail!(
                "it ended while starting ({}); see its hub log on the host",
                state_name(&s)
            );
        }
        if matches!(role_name(&s), "active" | "standby") {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("it did not report a role within {}s", timeout.as_secs());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
