//! Starting and continuing runs, for one group or for a fleet: the runtime
//! archive, the group lock, preflight, the journal record, then the
//! executor. Every command that acts on a group goes through here.

use crate::db::Database;
use crate::exit::{Parked, Refused, Taken, UsageError};
use crate::facts::RunFacts;
use crate::inventory::{Group, Inventory};
use crate::journal::{self, RunRecord, RunState, StepRecord, StepState};
use crate::output::Output;
use crate::plan::{self, Finding, Target};
use crate::run_context::{GroupDb, Run};
use anyhow::{Context, Result};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// A runtime archive on this machine, hashed.
#[derive(Debug, Clone)]
pub struct ArchiveInfo {
    /// Its absolute path.
    pub path: PathBuf,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// Hashes the archive at `path`; a usage error when it cannot be read.
pub async fn read_archive(path: &Path) -> Result<ArchiveInfo> {
    let meta = std::fs::metadata(path)
        .map_err(|e| UsageError(format!("runtime archive {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(UsageError(format!("runtime archive {} is not a file", path.display())).into());
    }
    let owned = path.to_path_buf();
    let (sha256, bytes) =
        tokio::task::spawn_blocking(move || hubshift_common::digest::sha256_file(&owned))
            .await
            .context("hashing task ended abnormally")?
            .map_err(|e| UsageError(format!("reading runtime archive {}: {e}", path.display())))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(ArchiveInfo {
        path,
        sha256,
        bytes,
    })
}

/// Refuses an archive whose digest is not the published one.
pub fn check_published_digest(archive: &ArchiveInfo, published: Option<&str>) -> Result<()> {
    let Some(published) = published else {
        return Ok(());
    };
    let published = published.trim().to_ascii_lowercase();
    if published.len() != 64 || !published.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UsageError(format!(
            "--sha256: {published:?} is not a SHA-256 (64 hex digits)"
        ))
        .into());
    }
    if archive.sha256 != published {
        return Err(UsageError(format!(
            "runtime archive {} has SHA-256 {}, not the published {published}: the file is damaged or not the release; nothing was changed",
            archive.path.display(),
            archive.sha256
        ))
        .into());
    }
    Ok(())
}

/// Refuses a version that cannot name a runtime directory.
pub fn check_version(version: &str) -> Result<()> {
    hubshift_common::names::validate_name("runtime version", version)
        .map_err(|e| UsageError(format!("--version: {e}")))?;
    Ok(())
}

/// Refuses `--pause-before` names that are not steps a run of `group` can
/// be parked before.
pub fn check_pause_before(group: &Group, pause_before: &[String]) -> Result<()> {
    let pausable = plan::pausable_step_names(&plan::build_plan(group));
    for p in pause_before {
        if !pausable.contains(&p.as_str()) {
            return Err(UsageError(format!(
                "--pause-before {p}: not a step a run can be parked before (one of: {})",
                pausable.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

/// Prints preflight findings, one line each.
pub fn print_findings(out: &Output, findings: &[Finding]) {
    for f in findings {
        out.record("preflight", f, || {
            let mark = if f.blocking {
                "FAIL"
            } else if f.warning {
                "WARN"
            } else {
                " ok "
            };
            let node = if f.node.is_empty() {
                "group".to_string()
            } else {
                f.node.clone()
            };
            format!("  [{mark}] {:<12} {:<10} {}", f.check, node, f.message)
        });
    }
}

/// Asks the person at the terminal; a usage error when nobody can answer.
pub fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "stdin is not a terminal: pass --yes to confirm the upgrade".into(),
        )
        .into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Refused("not confirmed".into()).into())
    }
}

/// How long a held group lock is tried again before it counts as taken: a
/// controller that has just exited may hold it until the server notices.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the group lock on `client`; a [`Taken`] (exit 3) naming the holder.
pub async fn lock_group(client: &tokio_postgres::Client, group: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        if crate::db::try_lock_group(client, group).await? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let holder = journal::unfinished_run(client, group).await?.map_or_else(
        || "another hubshift controller".to_string(),
        |r| {
            format!(
                "run {} (started {}, last change {})",
                r.id, r.created_at, r.updated_at
            )
        },
    );
    Err(Taken {
        group: group.to_string(),
        holder,
    }
    .into())
}

/// A run found in the journal of one of the inventory's databases.
pub struct OpenRun {
    /// The inventory.
    pub inventory: Inventory,
    /// The run's group.
    pub group: Group,
    /// The group's database.
    pub db: Database,
    /// A journal connection to it.
    pub client: tokio_postgres::Client,
    /// The run.
    pub record: RunRecord,
}

/// The inventory's groups with one per distinct database (each group's
/// journal lives in its own database; several groups may share one).
pub fn distinct_databases(inventory: &Inventory) -> Vec<&Group> {
    let mut seen: Vec<&crate::inventory::DatabaseSection> = Vec::new();
    let mut out = Vec::new();
    for g in &inventory.groups {
        if !seen.contains(&&g.database) {
            seen.push(&g.database);
            out.push(g);
        }
    }
    out
}

/// Finds run `run_id` in the journals of the inventory's databases (the
/// journal brought up to this version's columns). Usage error when no
/// reachable journal has it; refused when it is not found and some
/// database could not be reached.
pub async fn open_run(inventory_path: &Path, run_id: &str) -> Result<OpenRun> {
    let inventory = Inventory::load(inventory_path).map_err(UsageError::from)?;
    let mut unreachable = Vec::new();
    for g in distinct_databases(&inventory) {
        let db = Database::for_group(&inventory, g)?;
        let client = match db.connect().await {
            Ok(c) => c,
            Err(e) => {
                unreachable.push(format!("group {}: {e}", g.name));
                continue;
            }
        };
        if !journal::exists(&client).await? {
            continue;
        }
        // Journals written by an older hubshift get this version's columns.
        journal::ensure_schema(&client).await?;
        let Some(record) = journal::load_run(&client, run_id).await? else {
            continue;
        };
        let group = inventory
            .group(&record.group)
            .map_err(UsageError::from)?
            .clone();
        let (db, client) = if group.database == g.database {
            (db, client)
        } else {
            let db = Database::for_group(&inventory, &group)?;
            let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
            (db, client)
        };
        return Ok(OpenRun {
            inventory,
            group,
            db,
            client,
            record,
        });
    }
    if !unreachable.is_empty() {
        return Err(Refused(format!(
            "run {run_id} is in no reachable journal, and some databases could not be reached: {}",
            unreachable.join("; ")
        ))
        .into());
    }
    Err(UsageError(format!(
        "no run {run_id} in the journal (see `hubshift runs`)"
    ))
    .into())
}

/// What an upgrade of one group is asked to do.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// Target version.
    pub version: String,
    /// The archive to stage.
    pub archive: ArchiveInfo,
    /// Steps to park before.
    pub pause_before: Vec<String>,
    /// The fleet this run belongs to.
    pub fleet: Option<String>,
    /// A target older than what runs is allowed.
    pub allow_downgrade: bool,
}

/// A group locked and through preflight, ready for its run to be recorded.
pub struct Prepared {
    /// The inventory.
    pub inventory: Inventory,
    /// The group.
    pub group: Group,
    /// Its database.
    pub db: Database,
    /// The journal connection holding the group's lock.
    pub client: tokio_postgres::Client,
    /// Its agents.
    pub agents: std::collections::HashMap<String, crate::agents::Agent>,
    /// The version every node runs now.
    pub from_version: String,
}

/// Locks `group` and runs the preflight; refused (exit 3) when the lock is
/// held (see [`Taken`]), an earlier run is unfinished, or preflight finds a
/// problem. Nothing changes on refusal.
pub async fn prepare_upgrade(
    out: &Output,
    inventory: &Inventory,
    group: &Group,
    req: &UpgradeRequest,
) -> Result<Prepared> {
    let db = Database::for_group(inventory, group)?;
    // The lock first: a group being upgraded is refused naming the run that
    // holds it, not by a preflight that sees the run's half-done state.
    let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
    journal::ensure_schema(&client).await?;
    lock_group(&client, &group.name).await?;
    crate::clock::sync(&client).await?;
    if let Some(r) = journal::unfinished_run(&client, &group.name).await? {
        return Err(Refused(format!(
            "run {} of group {} did not finish ({}); continue it with `hubshift resume --run {}`",
            r.id, group.name, r.state, r.id
        ))
        .into());
    }
    let (agents, observed) = crate::observe::observe(inventory, group, Some(&db)).await;
    let findings = plan::preflight(
        &observed,
        &Target {
            version: req.version.clone(),
            archive_bytes: req.archive.bytes,
            allow_downgrade: req.allow_downgrade,
        },
    );
    print_findings(out, &findings);
    let blocking = findings.iter().filter(|f| f.blocking).count();
    if blocking > 0 {
        return Err(Refused(format!(
            "preflight found {blocking} problem(s); nothing was changed"
        ))
        .into());
    }
    let from_version = observed
        .nodes
        .iter()
        .find_map(|n| n.status.as_ref().ok().map(|f| f.active_runtime.clone()))
        .unwrap_or_default();
    Ok(Prepared {
        inventory: inventory.clone(),
        group: group.clone(),
        db,
        client,
        agents,
        from_version,
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
        inventory,
        group,
        db,
        mut client,
        agents,
        from_version,
    } = prepared;
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
    let steps = plan::build_plan(&group);
    let facts_json = serde_json::to_value(&facts)?;
    let id = journal::create_run(&mut client, &group.name, "upgrade", &facts_json, &steps).await?;
    out.event(
        "run_started",
        json!({ "run": id, "group": group.name, "from_version": facts.from_version,
                "to_version": facts.version, "steps": steps.len() }),
        || {
            format!(
                "\nRun {id}: upgrading group {} {} -> {} ({} steps)",
                group.name,
                facts.from_version,
                facts.version,
                steps.len()
            )
        },
    );
    let records = journal::load_steps(&client, &id).await?;
    journal::add_audit(&client, &id, &crate::audit::entry(action)).await?;
    let at = GroupDb {
        inventory,
        group,
        db,
        client,
    };
    let runtime_file = Some(req.archive.path.clone());
    Ok((
        Run::new(id, at, out.clone(), agents, facts, runtime_file),
        records,
    ))
}

/// Prepares an unfinished run to continue: the group lock, the audit entry,
/// the runtime archive if staging is still to do, every agent reachable.
pub async fn prepare_resume(
    out: &Output,
    open: OpenRun,
    runtime: Option<&Path>,
    action: &str,
) -> Result<(Run, Vec<StepRecord>)> {
    let OpenRun {
        inventory,
        group,
        db,
        client,
        record,
    } = open;
    let run_id = record.id.clone();
    lock_group(&client, &group.name).await?;
    crate::clock::sync(&client).await?;
    let unfinished = journal::unfinished_run(&client, &group.name)
        .await?
        .map(|u| crate::refusals::RunView::new(&u, &[]));
    let view = crate::refusals::RunView::new(&record, &[]);
    if let Some(r) = crate::refusals::resume(&view, unfinished.as_ref()) {
        return Err(Refused(r.message).into());
    }
    journal::add_audit(&client, &run_id, &crate::audit::entry(action)).await?;
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
    let (agents, observed) = crate::observe::observe(&inventory, &group, None).await;
    let unreachable: Vec<String> = observed
        .nodes
        .iter()
        .filter_map(|n| n.status.as_ref().err().cloned())
        .collect();
    if !unreachable.is_empty() {
        return Err(Refused(format!("cannot resume: {}", unreachable.join("; "))).into());
    }
    let records = journal::load_steps(&client, &run_id).await?;
    let next = records
        .iter()
        .position(|s| s.state != StepState::Done)
        .map_or(records.len(), |i| i + 1);
    out.event(
        "run_resumed",
        json!({ "run": run_id, "group": group.name, "next_step": next, "steps": records.len() }),
        || {
            format!(
                "Resuming run {run_id} of group {} at step {next}/{}",
                group.name,
                records.len()
            )
        },
    );
    let at = GroupDb {
        inventory,
        group,
        db,
        client,
    };
    Ok((
        Run::new(run_id, at, out.clone(), agents, facts, runtime_file),
        records,
    ))
}

/// Executes a run to its end; a failed run is journaled `failed` and the
/// next action printed. A parked run passes [`Parked`] through.
pub async fn finish(run: &mut Run, records: &[StepRecord]) -> Result<()> {
    match run.execute(records).await {
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
                json!({ "run": id, "error": hubshift_common::redact::redact(&format!("{e:#}")),
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
