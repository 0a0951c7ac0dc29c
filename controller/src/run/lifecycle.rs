//! The life of one group's run, written once: lock, preflight for the
//! run's kind, record, then execute and finish. `upgrade`, `resume`,
//! `rollback` and the fleet call these; nothing else records or finishes a
//! run.

use super::context::Run;
use super::open::{Locked, OpenRun, Site, lock, lock_on};
use super::preflight::{self, refuse_on_blocking};
use super::request::{UpgradeRequest, read_archive};
use crate::agents::Agent;
use crate::exit::{Parked, Refused, UsageError};
use crate::facts::RunFacts;
use crate::inventory::Group;
use crate::journal::{self, RunRecord, RunState, StepRecord, StepState};
use crate::output::Output;
use crate::plan::{self, Step};
use crate::readiness::{Finding, Observed, Target};
use crate::refusals::{self, RunView};
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A group locked and through preflight, ready for its run to be recorded.
pub struct Prepared {
    /// The group, its database, and the connection holding its lock.
    pub locked: Locked,
    /// Its agents.
    pub agents: HashMap<String, Agent>,
    /// The version every node runs now.
    pub from_version: String,
}

/// Locks `group` and runs the upgrade's preflight; refused (exit 3) when
/// the lock is held (see [`crate::exit::Taken`]), an earlier run is
/// unfinished, or preflight finds a problem. Nothing changes on refusal.
pub async fn prepare_upgrade(
    out: &Output,
    site: &Site,
    group: &Group,
    req: &UpgradeRequest,
) -> Result<Prepared> {
    let looked = look_upgrade(site, group, req).await?;
    preflight::print_findings(out, &looked.findings);
    refuse_on_blocking(&looked.findings)?;
    Ok(looked.prepared)
}

/// A group locked and looked at for an upgrade, its findings not yet
/// judged: the fleet sorts its groups into ready, not ready and taken by
/// them, and keeps the lock, connections and agents of those it starts.
pub struct Looked {
    /// The group, locked, with its agents.
    pub prepared: Prepared,
    /// Every finding, blocking or not.
    pub findings: Vec<Finding>,
    /// What the agents and the database showed.
    pub observed: Observed,
}

/// The lock, then the upgrade's preflight, as [`prepare_upgrade`] takes
/// them; refused only when the lock is held or an earlier run is
/// unfinished. The group is not changed.
pub async fn look_upgrade(site: &Site, group: &Group, req: &UpgradeRequest) -> Result<Looked> {
    // The lock first: a group being upgraded is refused naming the run that
    // holds it, not by a preflight that sees the run's half-done state.
    let locked = lock(site, group).await?;
    if let Some(r) = journal::unfinished_run(&locked.client, &group.name).await? {
        return Err(Refused(format!(
            "run {} of group {} did not finish ({}); continue it with `hubshift resume --run {}`",
            r.id, group.name, r.state, r.id
        ))
        .into());
    }
    let target = Target {
        version: req.version.clone(),
        archive_bytes: req.archive.bytes,
        allow_downgrade: req.allow_downgrade,
        declared: req.archive.declared.clone(),
    };
    let checked = preflight::upgrade(&locked, &target).await;
    Ok(Looked {
        prepared: Prepared {
            locked,
            agents: checked.agents,
            from_version: checked.from_version,
        },
        findings: checked.findings,
        observed: checked.observed,
    })
}

/// Records the upgrade run of a prepared group and returns it ready to
/// execute, with its steps.
pub async fn record_upgrade(
    out: &Output,
    prepared: Prepared,
    req: &UpgradeRequest,
    action: &str,
) -> Result<(Run, Vec<StepRecord>)> {
    let Prepared {
        locked,
        agents,
        from_version,
    } = prepared;
    let group = &locked.group;
    let facts = RunFacts {
        version: req.version.clone(),
        from_version,
        schema: group.database.schema.clone(),
        runtime_sha256: req.archive.sha256.clone(),
        runtime_bytes: req.archive.bytes,
        runtime_file: req.archive.path.display().to_string(),
        pause_before: req.pause_before.clone(),
        fleet: req.fleet.clone(),
        ..Default::default()
    };
    let steps = plan::build_plan(group);
    let runtime_file = Some(req.archive.path.clone());
    record(out, locked, agents, facts, &steps, action, runtime_file).await
}

/// Journals a new run of `locked`'s group with `steps` and announces it.
async fn record(
    out: &Output,
    mut locked: Locked,
    agents: HashMap<String, Agent>,
    facts: RunFacts,
    steps: &[Step],
    action: &str,
    runtime_file: Option<PathBuf>,
) -> Result<(Run, Vec<StepRecord>)> {
    let kind = if facts.rollback_of.is_some() {
        "rollback"
    } else {
        "upgrade"
    };
    let group = locked.group.name.clone();
    let facts_json = serde_json::to_value(&facts)?;
    let id = journal::create_run(&mut locked.client, &group, kind, &facts_json, steps).await?;
    out.event(
        "run_started",
        json!({ "run": id, "group": group, "kind": kind, "rollback_of": facts.rollback_of,
                "from_version": facts.from_version, "to_version": facts.version,
                "steps": steps.len() }),
        || match &facts.rollback_of {
            Some(of) => format!(
                "\nRun {id}: rolling group {group} back {} -> {} (reverses {of}, {} steps)",
                facts.from_version,
                facts.version,
                steps.len()
            ),
            None => format!(
                "\nRun {id}: upgrading group {group} {} -> {} ({} steps)",
                facts.from_version,
                facts.version,
                steps.len()
            ),
        },
    );
    let records = journal::load_steps(&locked.client, &id).await?;
    journal::add_audit(&locked.client, &id, &crate::audit::entry(action)).await?;
    Ok((
        Run::new(id, locked, out.clone(), agents, facts, runtime_file),
        records,
    ))
}

/// A rollback locked and through its preflight, ready to be recorded.
pub struct PreparedRollback {
    prepared: Prepared,
    original: RunFacts,
    of: String,
}

impl PreparedRollback {
    /// The version the group goes back to.
    pub fn to_version(&self) -> &str {
        &self.original.from_version
    }

    /// The group rolled back.
    pub fn group_name(&self) -> &str {
        &self.prepared.locked.group.name
    }
}

/// Locks the group of upgrade run `run_id` (the lock first, as for an
/// upgrade), refuses what cannot be rolled back (naming a command that is
/// accepted), and runs the rollback's preflight — the upgrade's readiness
/// checks, the old runtime staged, and the backup read back where it lies
/// (and its copy) before anything stops.
pub async fn prepare_rollback(out: &Output, site: &Site, run_id: &str) -> Result<PreparedRollback> {
    let (locked, record) = lock_run(site, run_id).await?;
    let steps = journal::load_steps(&locked.client, run_id).await?;
    let unfinished = unfinished_view(&locked).await?;
    if let Some(r) = refusals::rollback(&RunView::new(&record, &steps), unfinished.as_ref()) {
        return Err(Refused(r.message).into());
    }
    let original: RunFacts = serde_json::from_value(record.facts.clone())
        .context("the journal's run facts cannot be read by this version")?;
    if original.backup_id.is_none() || original.backup_sha256.is_none() {
        return Err(Refused(format!("run {run_id} recorded no backup")).into());
    }
    let checked = preflight::rollback(&locked, &original, run_id).await;
    preflight::print_findings(out, &checked.findings);
    if let Some(f) = checked
        .findings
        .iter()
        .find(|f| f.blocking && f.check == "backup")
    {
        return Err(Refused(format!("{}; nothing was changed", f.message)).into());
    }
    refuse_on_blocking(&checked.findings)?;
    Ok(PreparedRollback {
        prepared: Prepared {
            locked,
            agents: checked.agents,
            from_version: original.version.clone(),
        },
        original,
        of: run_id.to_string(),
    })
}

/// Records the rollback run and returns it ready to execute.
pub async fn record_rollback(
    out: &Output,
    prepared: PreparedRollback,
) -> Result<(Run, Vec<StepRecord>)> {
    let PreparedRollback {
        prepared,
        original,
        of,
    } = prepared;
    let Prepared { locked, agents, .. } = prepared;
    let facts = RunFacts {
        version: original.from_version.clone(),
        from_version: original.version.clone(),
        schema: locked.group.database.schema.clone(),
        backup_id: original.backup_id.clone(),
        backup_sha256: original.backup_sha256.clone(),
        backup_bytes: original.backup_bytes,
        backup_path: original.backup_path.clone(),
        backup_copy: original.backup_copy.clone(),
        pre_copy: original.pre_copy.clone(),
        rollback_of: Some(of),
        ..Default::default()
    };
    let steps = plan::build_rollback_plan(&locked.group);
    record(out, locked, agents, facts, &steps, "rollback", None).await
}

/// The group's newest unfinished run, as the refusals see it.
async fn unfinished_view(locked: &Locked) -> Result<Option<RunView>> {
    Ok(
        match journal::unfinished_run(&locked.client, &locked.group.name).await? {
            Some(u) => {
                let steps = journal::load_steps(&locked.client, &u.id).await?;
                Some(RunView::new(&u, &steps))
            }
            None => None,
        },
    )
}

/// Finds run `run_id`, locks its group and takes its record.
pub async fn lock_run(site: &Site, run_id: &str) -> Result<(Locked, RunRecord)> {
    let OpenRun {
        inventory,
        group,
        db,
        client,
        record,
    } = super::open::open_run(site, run_id).await?;
    Ok((lock_on(inventory, group, db, client).await?, record))
}

/// The refusal of `abandon` for `record` in the locked group, if any.
pub async fn abandon_refusal(locked: &Locked, record: &RunRecord) -> Result<Option<String>> {
    let steps = journal::load_steps(&locked.client, &record.id).await?;
    let unfinished = unfinished_view(locked).await?;
    Ok(refusals::abandon(&RunView::new(record, &steps), unfinished.as_ref()).map(|r| r.message))
}

/// Prepares an unfinished run to continue: the group lock, the refusals
/// (a run abandoned, rolled back, or being rolled back), the audit entry,
/// the runtime archive if staging is still to do, every agent reachable.
pub async fn prepare_resume(
    out: &Output,
    site: &Site,
    run_id: &str,
    runtime: Option<&Path>,
    action: &str,
) -> Result<(Run, Vec<StepRecord>)> {
    let (locked, record) = lock_run(site, run_id).await?;
    let unfinished = unfinished_view(&locked).await?;
    if let Some(r) = refusals::resume(&RunView::new(&record, &[]), unfinished.as_ref()) {
        return Err(Refused(r.message).into());
    }
    journal::add_audit(&locked.client, run_id, &crate::audit::entry(action)).await?;
    let facts: RunFacts = serde_json::from_value(record.facts.clone())
        .context("the journal's run facts cannot be read by this version")?;
    let runtime_file = match runtime {
        Some(p) => {
            let a = read_archive(p).await?;
            if a.sha256 != facts.runtime_sha256 {
                return Err(UsageError(format!(
                    "{} has SHA-256 {}, but run {run_id} stages {}",
                    p.display(),
                    a.sha256,
                    facts.runtime_sha256
                ))
                .into());
            }
            Some(a.path)
        }
        None => {
            let p = PathBuf::from(&facts.runtime_file);
            match read_archive(&p).await {
                Ok(a) if a.sha256 == facts.runtime_sha256 => Some(a.path),
                _ => None,
            }
        }
    };
    let checked = preflight::resume(&locked).await;
    if !checked.unreachable.is_empty() {
        return Err(Refused(format!("cannot resume: {}", checked.unreachable.join("; "))).into());
    }
    let records = journal::load_steps(&locked.client, run_id).await?;
    let next = records
        .iter()
        .position(|s| s.state != StepState::Done)
        .map_or(records.len(), |i| i + 1);
    let group = locked.group.name.clone();
    out.event(
        "run_resumed",
        json!({ "run": run_id, "group": group, "next_step": next, "steps": records.len() }),
        || {
            format!(
                "Resuming run {run_id} of group {group} at step {next}/{}",
                records.len()
            )
        },
    );
    Ok((
        Run::new(
            run_id.to_string(),
            locked,
            out.clone(),
            checked.agents,
            facts,
            runtime_file,
        ),
        records,
    ))
}

/// Executes a run to its end; a failed run is journaled `failed` and the
/// next action printed. A parked run passes [`Parked`] through.
pub async fn finish(run: &mut Run, records: &[StepRecord]) -> Result<()> {
    let result = run.execute(records).await;
    run.flush_timeline().await;
    match result {
        Ok(()) => {
            if let Some(original) = run.facts.rollback_of.clone() {
                run.journal.mark_rolled_back(&original).await?;
            }
            Ok(())
        }
        Err(e) if e.downcast_ref::<Parked>().is_some() => Err(e),
        Err(e) => {
            let id = run.id.clone();
            let _ = run.journal.finish_run(&id, RunState::Failed).await;
            run.out.event(
                "run_failed",
                json!({ "run": id, "error": hubshift_common::redact::redact(&hubshift_common::error_text::one_line(e.as_ref())),
                        "next": format!("hubshift resume --run {id}") }),
                || format!(
                    "\nRun {id} stopped at a failed step; every step before it is done and journaled.\n\
                     Fix the cause shown above, then continue with: hubshift resume --run {id}\n\
                     The backup of the primary (if taken) is listed by: hubshift runs --run {id}"
                ),
            );
            Err(e)
        }
    }
}
