//! `plan`, `upgrade` and `resume`: preflight, the group lock, the journal,
//! then the executor.

use crate::cli::{InventoryArgs, TargetArgs};
use crate::db::Database;
use crate::executor::Run;
use crate::exit::{Refused, UsageError};
use crate::facts::RunFacts;
use crate::inventory::{Group, Inventory};
use crate::journal;
use crate::journal_link::JournalLink;
use crate::output::Output;
use crate::plan::{self, Finding, Target};
use anyhow::{Context, Result};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Inventory + group + database settings, or a usage error.
pub fn load(inv: &InventoryArgs, group: &str) -> Result<(Inventory, Group, Database)> {
    let inventory = Inventory::load(&inv.inventory).map_err(UsageError::from)?;
    let group = inventory.group(group).map_err(UsageError::from)?.clone();
    let db = Database::from_inventory(&inventory)?;
    Ok((inventory, group, db))
}

struct ArchiveInfo {
    path: PathBuf,
    sha256: String,
    bytes: u64,
}

async fn read_archive(path: &Path) -> Result<ArchiveInfo> {
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
fn check_published_digest(archive: &ArchiveInfo, published: Option<&str>) -> Result<()> {
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

fn check_version(version: &str) -> Result<()> {
    hubshift_common::names::validate_name("runtime version", version)
        .map_err(|e| UsageError(format!("--version: {e}")))?;
    Ok(())
}

fn print_findings(out: &Output, findings: &[Finding]) {
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

/// `hubshift plan`: preflight and steps, no change anywhere.
pub async fn plan(out: Output, inv: &InventoryArgs, target: &TargetArgs) -> Result<()> {
    check_version(&target.version)?;
    let (inventory, group, db) = load(inv, &target.group)?;
    let archive = read_archive(&target.runtime).await?;
    check_published_digest(&archive, target.sha256.as_deref())?;
    let (_agents, observed) = crate::observe::observe(&inventory, &group, Some(&db)).await;
    let findings = plan::preflight(
        &observed,
        &Target {
            version: target.version.clone(),
            archive_bytes: archive.bytes,
        },
    );
    out.event(
        "plan",
        json!({ "group": group.name, "version": target.version,
        "runtime_sha256": archive.sha256, "runtime_bytes": archive.bytes }),
        || {
            format!(
                "Plan for group {} -> {} ({}, sha256 {})\n\nPreflight:",
                group.name,
                target.version,
                plan::human_bytes(archive.bytes),
                archive.sha256
            )
        },
    );
    print_findings(&out, &findings);
    out.human("\nSteps:");
    print_plan(
        &out,
        &plan::build_plan(&group),
        &inventory.database.schema,
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

fn confirm(group: &str, version: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "stdin is not a terminal: pass --yes to confirm the upgrade".into(),
        )
        .into());
    }
    eprint!(
        "Upgrade group {group} to {version}? This stops hubs and drops the orchestration schema. [y/N] "
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Refused("not confirmed".into()).into())
    }
}

/// What every command about an existing run starts from.
pub struct OpenRun {
    /// The inventory.
    pub inventory: Inventory,
    /// Its database.
    pub db: Database,
    /// A journal connection.
    pub client: tokio_postgres::Client,
    /// The run.
    pub record: journal::RunRecord,
}

/// Loads the inventory, connects to its database and reads run `run_id`
/// (the journal brought up to this version's columns); usage error when the
/// run is not there, refused when the database cannot be reached.
pub async fn open_run(inv: &InventoryArgs, run_id: &str) -> Result<OpenRun> {
    let inventory = Inventory::load(&inv.inventory).map_err(UsageError::from)?;
    let db = Database::from_inventory(&inventory)?;
    let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
    if !journal::exists(&client).await? {
        return Err(UsageError(format!("no run {run_id}: the journal is empty")).into());
    }
    // Journals written by an older hubshift get this version's columns.
    journal::ensure_schema(&client).await?;
    let record = journal::load_run(&client, run_id).await?.ok_or_else(|| {
        UsageError(format!(
            "no run {run_id} in the journal (see `hubshift runs`)"
        ))
    })?;
    Ok(OpenRun {
        inventory,
        db,
        client,
        record,
    })
}

/// Takes the group lock on `journal`; refused (exit 3) naming the holder.
async fn lock_group(client: &tokio_postgres::Client, group: &str) -> Result<()> {
    if crate::db::try_lock_group(client, group).await? {
        return Ok(());
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
    Err(Refused(format!("group {group} is locked by {holder}")).into())
}

/// `hubshift upgrade`.
pub async fn upgrade(
    out: Output,
    inv: &InventoryArgs,
    target: &TargetArgs,
    yes: bool,
    pause_before: &[String],
) -> Result<()> {
    check_version(&target.version)?;
    let (inventory, group, db) = load(inv, &target.group)?;
    let pausable = plan::pausable_step_names(&plan::build_plan(&group));
    for p in pause_before {
        if !pausable.contains(&p.as_str()) {
            return Err(UsageError(format!(
                "--pause-before {p}: not a step a run can be parked before (one of: {})",
                pausable.join(", ")
            ))
            .into());
        }
    }
    let archive = read_archive(&target.runtime).await?;
    check_published_digest(&archive, target.sha256.as_deref())?;
    // The lock first: a group being upgraded is refused naming the run that
    // holds it, not by a preflight that sees the run's half-done state.
    let mut client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
    journal::ensure_schema(&client).await?;
    lock_group(&client, &group.name).await?;
    if let Some(r) = journal::unfinished_run(&client, &group.name).await? {
        return Err(Refused(format!(
            "run {} of group {} did not finish ({}); continue it with `hubshift resume --run {}`",
            r.id, group.name, r.state, r.id
        ))
        .into());
    }
    let (agents, observed) = crate::observe::observe(&inventory, &group, Some(&db)).await;
    let findings = plan::preflight(
        &observed,
        &Target {
            version: target.version.clone(),
            archive_bytes: archive.bytes,
        },
    );
    print_findings(&out, &findings);
    let blocking = findings.iter().filter(|f| f.blocking).count();
    if blocking > 0 {
        return Err(Refused(format!(
            "preflight found {blocking} problem(s); nothing was changed"
        ))
        .into());
    }
    if !yes {
        confirm(&group.name, &target.version)?;
    }
    let from_version = observed
        .nodes
        .iter()
        .find_map(|n| n.status.as_ref().ok().map(|f| f.active_runtime.clone()))
        .unwrap_or_default();
    let facts = RunFacts {
        version: target.version.clone(),
        from_version,
        schema: inventory.database.schema.clone(),
        runtime_sha256: archive.sha256.clone(),
        runtime_bytes: archive.bytes,
        runtime_file: archive.path.display().to_string(),
        pause_before: pause_before.to_vec(),
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
    journal::add_audit(&client, &id, &crate::audit::entry("upgrade")).await?;
    let jdbc = db.jdbc_uri();
    let journal = JournalLink::new(db.clone(), &group.name, client);
    let mut run = Run {
        id,
        inv: inventory,
        group,
        out,
        db,
        journal,
        agents,
        facts,
        runtime_file: Some(archive.path),
        jdbc,
    };
    finish(&mut run, &records).await
}

async fn finish(run: &mut Run, records: &[journal::StepRecord]) -> Result<()> {
    crate::executor::watch_ctrl_c(run.out);
    match run.execute(records).await {
        Ok(()) => Ok(()),
        Err(e) if e.downcast_ref::<crate::executor::Parked>().is_some() => Err(e),
        Err(e) => {
            let id = run.id.clone();
            let _ = run.journal.finish_run(&id, "failed").await;
            let id = run.id.clone();
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

/// `hubshift resume --run ID`.
pub async fn resume(
    out: Output,
    inv: &InventoryArgs,
    run_id: &str,
    runtime: Option<&Path>,
) -> Result<()> {
    let OpenRun {
        inventory,
        db,
        client,
        record,
    } = open_run(inv, run_id).await?;
    let group = inventory
        .group(&record.group)
        .map_err(UsageError::from)?
        .clone();
    if record.state == "done" {
        out.event(
            "run_finished",
            json!({ "run": run_id, "state": "done", "already": true }),
            || format!("Run {run_id} is already done."),
        );
        return Ok(());
    }
    lock_group(&client, &group.name).await?;
    journal::add_audit(&client, run_id, &crate::audit::entry("resume")).await?;
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
    let records = journal::load_steps(&client, run_id).await?;
    let next = records
        .iter()
        .position(|s| s.state != "done")
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
    let jdbc = db.jdbc_uri();
    let journal = JournalLink::new(db.clone(), &group.name, client);
    let mut run = Run {
        id: run_id.to_string(),
        inv: inventory,
        group,
        out,
        db,
        journal,
        agents,
        facts,
        runtime_file,
        jdbc,
    };
    finish(&mut run, &records).await?;
    if let Some(original) = run.facts.rollback_of.clone() {
        run.journal.mark_rolled_back(&original).await?;
    }
    Ok(())
}

/// `hubshift rollback --run ID`: back to the version and appdata the upgrade
/// run started from.
pub async fn rollback(out: Output, inv: &InventoryArgs, run_id: &str, yes: bool) -> Result<()> {
    let OpenRun {
        inventory,
        db,
        mut client,
        record,
    } = open_run(inv, run_id).await?;
    if record.kind != "upgrade" {
        return Err(UsageError(format!(
            "run {run_id} is a {}, only upgrade runs are rolled back",
            record.kind
        ))
        .into());
    }
    if record.state == "rolled_back" {
        return Err(Refused(format!("run {run_id} was already rolled back")).into());
    }
    let original: RunFacts = serde_json::from_value(record.facts.clone())
        .context("the journal's run facts cannot be read by this version")?;
    let (Some(backup_id), Some(backup_sha)) =
        (original.backup_id.clone(), original.backup_sha256.clone())
    else {
        return Err(Refused(format!(
            "run {run_id} took no backup (it stopped before step 5): the group never left its version, nothing to roll back to"
        ))
        .into());
    };
    let group = inventory
        .group(&record.group)
        .map_err(UsageError::from)?
        .clone();
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
    print_findings(&out, &findings);
    let blocking = findings.iter().filter(|f| f.blocking).count();
    if blocking > 0 {
        return Err(Refused(format!(
            "preflight found {blocking} problem(s); nothing was changed"
        ))
        .into());
    }
    if !yes {
        confirm(&group.name, &original.from_version)?;
    }
    journal::ensure_schema(&client).await?;
    lock_group(&client, &group.name).await?;
    if let Some(r) = journal::unfinished_run(&client, &group.name).await?
        && r.id != run_id
    {
        return Err(Refused(format!(
            "run {} of group {} did not finish ({}); resume or roll back that one first",
            r.id, group.name, r.state
        ))
        .into());
    }
    let facts = RunFacts {
        version: original.from_version.clone(),
        from_version: original.version.clone(),
        schema: inventory.database.schema.clone(),
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
    let jdbc = db.jdbc_uri();
    let journal = JournalLink::new(db.clone(), &group.name, client);
    let mut run = Run {
        id,
        inv: inventory,
        group,
        out,
        db,
        journal,
        agents,
        facts,
        runtime_file: None,
        jdbc,
    };
    finish(&mut run, &records).await?;
    run.journal.mark_rolled_back(run_id).await?;
    Ok(())
}

/// `hubshift abandon --run ID`: lets a new upgrade start after a run that
/// stopped before anything irreversible.
pub async fn abandon(out: Output, inv: &InventoryArgs, run_id: &str) -> Result<()> {
    let OpenRun {
        inventory,
        db,
        client,
        record,
    } = open_run(inv, run_id).await?;
    if matches!(record.state.as_str(), "done" | "rolled_back" | "abandoned") {
        return Err(Refused(format!("run {run_id} is already {}", record.state)).into());
    }
    lock_group(&client, &record.group).await?;
    let steps = journal::load_steps(&client, run_id).await?;
    let irreversible: Vec<String> = steps
        .iter()
        .filter(|s| s.step.destructive() && s.state != "pending")
        .map(|s| format!("{} on {}", s.step.name(), s.step.node()))
        .collect();
    if !irreversible.is_empty() {
        return Err(Refused(format!(
            "run {run_id} already did {} ({}): finish it with `hubshift resume --run {run_id}` or reverse it with `hubshift rollback --run {run_id}`",
            if irreversible.len() == 1 { "an irreversible step" } else { "irreversible steps" },
            irreversible.join(", ")
        ))
        .into());
    }
    let stopped: Vec<String> = steps
        .iter()
        .filter(|s| matches!(s.step, plan::Step::StopPrimary { .. }) && s.state != "pending")
        .map(|s| s.step.node())
        .collect();
    // Give the group its primary back before letting go of the run.
    let mut restarted = Vec::new();
    let mut problems = Vec::new();
    for n in &stopped {
        match restart_primary(&inventory, &db, &record.group, n).await {
            Ok(true) => restarted.push(n.clone()),
            Ok(false) => {}
            Err(e) => problems.push(format!("{n}: {e:#}")),
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
    group: &str,
    node: &str,
) -> Result<bool> {
    use crate::agents::{is_running, role_name, state_name};
    let group = inventory.group(group).map_err(UsageError::from)?;
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
            hubshift_common::pb::StartMode::Start,
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
