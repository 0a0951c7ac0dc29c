//! The primary's appdata: backed up, verified (and fetched to the
//! controller's copy), the schema dropped only after that, and restored on
//! rollback.

use super::fallback::{ensure_still_serving, fall_back_to_primary};
use crate::agents::{is_running, state_name};
use crate::facts::StepOutcome;
use crate::run::context::Run;
use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};
use std::time::Duration;

pub(super) fn backup_id(run: &Run, node: &str) -> String {
    match run.facts().handover_round {
        0 => format!("{}-{node}", run.id()),
        // After a fallback the primary ran again: its appdata moved on, and
        // the backup is taken anew under a new id.
        n => format!("{}-{node}-r{n}", run.id()),
    }
}

/// The id of the run's pre-copy base on `node`.
pub(super) fn base_id(run: &Run, node: &str) -> String {
    format!("{}-{node}-base", run.id())
}

/// Pre-copy: the base of the running primary's appdata, taken before any
/// outage. Not a gate: when it cannot be taken (an agent too old for it,
/// no room) the run goes on and the backup after the stop is a full one,
/// said in the run's warnings.
pub(super) async fn base_backup(run: &mut Run, node: &str) -> Result<Value> {
    if run.inv().backups.pre_copy == Some(false) {
        return Ok(
            json!({ "base_id": null, "why": "pre-copy is off ([backups] pre_copy = false)" }),
        );
    }
    let agent = run.agent(node)?.clone();
    let id = base_id(run, node);
    match agent
        .backup_base(&id, Duration::from_secs(run.inv().timeouts.backup))
        .await
    {
        Ok(r) => {
            ensure!(r.id == id, "agent returned base {} instead of {id}", r.id);
            // The controller's copy of the bulk is made now too, not
            // inside the outage.
            let mut copy = None;
            if let Some(dir) = run.inv().backups.copy_to.clone() {
                let dir = dir.join(&run.group().name);
                let timeout = Duration::from_secs(run.inv().timeouts.backup);
                let out = run.out().clone();
                let path = crate::backup_copy::fetch(
                    &agent,
                    &r.id,
                    &r.sha256,
                    &dir,
                    r.size_bytes,
                    &out,
                    timeout,
                )
                .await?;
                copy = Some(path.display().to_string());
            }
            run.apply(StepOutcome::BaseTaken {
                id: r.id.clone(),
                sha256: r.sha256.clone(),
                bytes: r.size_bytes,
                copy: copy.clone(),
            });
            Ok(
                json!({ "base_id": r.id, "sha256": r.sha256, "size_bytes": r.size_bytes, "existed": r.existed, "ms": r.write_ms, "copy": copy }),
            )
        }
        Err(e) => {
            let why = format!(
                "no pre-copy base of {node} ({e}): the backup after its stop is a full one"
            );
            run.apply(StepOutcome::Warned(why.clone()));
            Ok(json!({ "base_id": null, "why": why }))
        }
    }
}

pub(super) async fn backup(run: &mut Run, node: &str) -> Result<Value> {
    ensure_still_serving(run).await?;
    let agent = run.agent(node)?.clone();
    let status = agent.status_brief().await?;
    ensure!(
        !is_running(&status),
        "refusing to back up {node} while its hub runs: appdata would change under the backup"
    );
    let id = backup_id(run, node);
    let base = run.facts().pre_copy.as_ref().map(|p| p.base_id.clone());
    let r = agent
        .backup(
            &id,
            base.as_deref().unwrap_or(""),
            Duration::from_secs(run.inv().timeouts.backup),
        )
        .await?;
    ensure!(r.id == id, "agent returned backup {} instead of {id}", r.id);
    ensure!(
        r.sha256.len() == 64,
        "agent returned no SHA-256 for backup {id}"
    );
    run.apply(StepOutcome::BackedUp {
        id: r.id.clone(),
        sha256: r.sha256.clone(),
        bytes: r.size_bytes,
        path: r.path.clone(),
    });
    if let Some(base) = &base {
        if let Some(b) = &r.base {
            ensure!(
                &b.id == base
                    && run
                        .facts()
                        .pre_copy
                        .as_ref()
                        .is_some_and(|p| p.base_sha256 == b.sha256),
                "agent made backup {id} against base {} ({}), not the run's base {base}",
                b.id,
                b.sha256
            );
        } else {
            let why = if r.full_because.is_empty() {
                "the agent made a full backup".to_string()
            } else {
                r.full_because.clone()
            };
            run.apply(StepOutcome::Warned(format!(
                "full backup of {node} instead of a delta: {why}"
            )));
        }
        if !r.existed
            || run
                .facts()
                .pre_copy
                .as_ref()
                .is_some_and(|p| p.delta_ms.is_none())
        {
            run.apply(StepOutcome::BackedUpAgainstBase {
                delta: r.base.is_some(),
                bytes: r.size_bytes,
                ms: r.write_ms,
                full_because: (r.base.is_none()).then(|| r.full_because.clone()),
            });
        }
    }
    Ok(json!({
        "id": r.id, "sha256": r.sha256, "size_bytes": r.size_bytes, "path": r.path, "existed": r.existed,
        "base_id": r.base.as_ref().map(|b| &b.id), "base_sha256": r.base.as_ref().map(|b| &b.sha256),
        "base_size_bytes": r.base.as_ref().map(|b| b.size_bytes), "full_because": (!r.full_because.is_empty()).then_some(&r.full_because),
        "write_ms": r.write_ms,
    }))
}

pub(super) async fn verify_backup(run: &mut Run, node: &str) -> Result<Value> {
    ensure_still_serving(run).await?;
    let agent = run.agent(node)?.clone();
    let (Some(id), Some(sha)) = (
        run.facts().backup_id.clone(),
        run.facts().backup_sha256.clone(),
    ) else {
        bail!("no backup recorded for this run: the backup step has not run");
    };
    let timeout = Duration::from_secs(run.inv().timeouts.backup);
    let v = match crate::backup_check::read_back(&agent, &id, &sha, timeout).await? {
        Ok(v) => v,
        Err(why) => return backup_damaged(run, node, &id, &why).await,
    };
    let expected_base = run
        .facts()
        .pre_copy
        .as_ref()
        .filter(|p| p.delta)
        .map(|p| (p.base_id.clone(), p.base_sha256.clone()));
    let found_base = v.base.as_ref().map(|b| (b.id.clone(), b.sha256.clone()));
    if found_base != expected_base {
        let why = format!(
            "it reads back with base {:?}, the run recorded {:?}",
            found_base, expected_base
        );
        return backup_damaged(run, node, &id, &why).await;
    }
    let mut copy = None;
    if let Some(dir) = run.inv().backups.copy_to.clone() {
        let dir = dir.join(&run.group().name);
        let copied = run
            .facts()
            .pre_copy
            .as_ref()
            .and_then(|p| p.base_copy.as_deref())
            .is_some_and(|c| std::path::Path::new(c).is_file());
        if let Some(b) = v.base.as_ref().filter(|_| !copied) {
            // The pair's base first: a copy of a delta alone restores nothing.
            crate::backup_copy::fetch(
                &agent,
                &b.id,
                &b.sha256,
                &dir,
                b.size_bytes,
                run.out(),
                timeout,
            )
            .await?;
        }
        let path =
            crate::backup_copy::fetch(&agent, &id, &sha, &dir, v.size_bytes, run.out(), timeout)
                .await?;
        copy = Some(path.display().to_string());
    }
    run.apply(StepOutcome::BackupVerified { copy: copy.clone() });
    Ok(json!({
        "sha256": v.sha256, "entries": v.entries, "size_bytes": v.size_bytes, "copy": copy,
        "base_id": v.base.as_ref().map(|b| &b.id), "base_sha256": v.base.as_ref().map(|b| &b.sha256),
    }))
}

/// The run's backup on `node` failed its check. Nothing irreversible has
/// happened yet (verification comes before the schema drop): the old
/// primary serves again, and the failure names the backup, its file, the
/// controller's copy and what is accepted next.
pub(super) async fn backup_damaged(
    run: &mut Run,
    node: &str,
    id: &str,
    why: &str,
) -> Result<Value> {
    let file = run
        .facts()
        .backup_path
        .clone()
        .unwrap_or_else(|| "?".into());
    let what = format!("backup {id} at {file} on {node} is damaged ({why})");
    let fix = if run.facts().rollback_of.is_some() {
        let copy = match &run.facts().backup_copy {
            Some(copy) => format!(
                "Put its copy {copy} back as {file} on {node} (check its SHA-256 {}), then `hubshift resume --run {}`; ",
                run.facts().backup_sha256.as_deref().unwrap_or("?"),
                run.id()
            ),
            None => "No copy was made (`backups.copy_to`): the backup cannot be restored. ".into(),
        };
        format!(
            "{copy}or give the rollback up with `hubshift abandon --run {}` (the group keeps running {})",
            run.id(),
            run.facts().from_version
        )
    } else {
        format!(
            "`hubshift resume --run {}` takes a new backup (look at the disk of {node} first), or `hubshift abandon --run {}`",
            run.id(),
            run.id()
        )
    };
    let lost_ms = run
        .facts()
        .serving_seen_ms
        .or(run.facts().primary_stopped_ms);
    fall_back_to_primary(run, &what, lost_ms, &fix).await
}

pub(super) fn require_verified_backup(run: &Run) -> Result<()> {
    ensure!(
        run.facts().backup_verified && run.facts().backup_sha256.is_some(),
        "refusing a destructive step: no verified backup in this run"
    );
    Ok(())
}

pub(super) async fn drop_schema(run: &mut Run) -> Result<Value> {
    require_verified_backup(run)?;
    ensure_still_serving(run).await?;
    let existed = run.schema_exists().await?;
    run.drop_schema().await?;
    ensure!(
        !run.schema_exists().await?,
        "schema {} still exists after DROP",
        run.facts().schema
    );
    Ok(json!({ "existed": existed }))
}

pub(super) async fn restore_backup(run: &mut Run, node: &str) -> Result<Value> {
    require_verified_backup(run)?;
    let agent = run.agent(node)?.clone();
    let status = agent.status_brief().await?;
    ensure!(
        !is_running(&status),
        "{node} runs ({}) — appdata is restored only on a stopped hub",
        state_name(&status)
    );
    let (Some(id), Some(sha)) = (
        run.facts().backup_id.clone(),
        run.facts().backup_sha256.clone(),
    ) else {
        bail!("no backup recorded for this run");
    };
    let set_aside = agent
        .restore(&id, &sha, Duration::from_secs(run.inv().timeouts.backup))
        .await?;
    Ok(json!({ "id": id, "set_aside": set_aside }))
}
