//! What each plan step does. Every step is idempotent (it first looks at
//! what is already true) and checks its outcome by observation — agent
//! Status and the database — rather than trusting an RPC's return alone.

use crate::agents::{Agent, is_running, role_name, state_name};
use crate::clock::now_ms;
use crate::facts::RunFacts;
use crate::plan::Step;
use crate::run_context::Run;
use anyhow::{Context, Result, bail, ensure};
use hubshift_common::pb::{self, StartMode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);

/// How long a step that must reach the database waits for it to come back.
const DB_PATIENCE: Duration = Duration::from_secs(60);

/// How often the hand-over starts an upgraded primary again that ended
/// while starting, before it gives up.
const PRIMARY_RESTARTS: u32 = 4;

/// A step gave up and undid the hand-over it was part of: the old primary
/// was started again and serves. Nothing irreversible had happened; the
/// executor puts the hand-over's steps back to pending so that a resume
/// starts again at the primary's stop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FellBack(pub String);

/// Why `node` cannot take over right now, or `None` when it is a live
/// standby: running, its role probe says standby, and its process is not
/// frozen. Asked fresh, just before the primary is stopped.
fn not_ready_to_take_over(s: &pb::StatusResponse) -> Option<String> {
    if !is_running(s) {
        return Some(format!("its hub is {}", state_name(s)));
    }
    if s.frozen {
        return Some("its hub process is frozen (stopped by a signal)".into());
    }
    match role_name(s) {
        "standby" => None,
        other => Some(format!("its role is {other}, not standby")),
    }
}

/// Runs one (non-staging) step; returns what it observed, for the journal.
pub async fn run_step(run: &mut Run, step: &Step) -> Result<Value> {
    match step {
        Step::StageRuntime { node } => {
            let agent = run.agent(node)?.clone();
            let bar = run
                .out
                .bytes_bar(run.facts.runtime_bytes, &format!("upload to {node}"));
            stage_runtime(&agent, run.runtime_file.as_deref(), &run.facts, bar).await
        }
        Step::StopPrimary { node } => stop_primary(run, node).await,
        Step::AwaitTakeover { candidates } => await_takeover(run, candidates).await,
        Step::Backup { node } => backup(run, node).await,
        Step::VerifyBackup { node } => verify_backup(run, node).await,
        Step::DropSchema => drop_schema(run).await,
        Step::RestoreBackup { node } => restore_backup(run, node).await,
        Step::ActivateRuntime { node } | Step::ActivateSecondaryRuntime { node } => {
            activate(run, node).await
        }
        Step::CreateAndStart { node } => create_and_start(run, node).await,
        Step::AwaitHandback {
            primary,
            secondaries,
        } => await_handback(run, primary, secondaries).await,
        Step::CopyCertificate { from, to } => copy_certificate(run, from, to).await,
        Step::StartSecondary { node } => start_secondary(run, node).await,
        Step::AwaitStandby { node } => await_standby(run, node).await,
    }
}

/// Uploads and unpacks the runtime beside the current one. Idempotent: the
/// agent answers `already_installed` for the same archive.
pub async fn stage_runtime(
    agent: &Agent,
    file: Option<&Path>,
    facts: &RunFacts,
    bar: indicatif::ProgressBar,
) -> Result<Value> {
    let status = agent.status().await?;
    if status.staged_runtimes.contains(&facts.version) && file.is_none() {
        return Ok(json!({ "already_staged": true }));
    }
    let file = file.context(
        "the runtime archive is needed to stage it: pass --runtime FILE (the same archive, checked by SHA-256)",
    )?;
    let mut reader = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening runtime archive {}", file.display()))?;
    let format = archive_format(file);
    let header = pb::InstallRuntimeRequest {
        item: Some(pb::install_runtime_request::Item::Header(
            pb::RuntimeHeader {
                version: facts.version.clone(),
                sha256: facts.runtime_sha256.clone(),
                size_bytes: facts.runtime_bytes,
                format: format as i32,
                activate: false,
            },
        )),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let expected = facts.runtime_bytes;
    let reader_bar = bar.clone();
    let producer = tokio::spawn(async move {
        if tx.send(header).await.is_err() {
            return Ok(());
        }
        let mut sent = 0u64;
        loop {
            let mut buf = vec![0u8; hubshift_common::CHUNK_SIZE];
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            sent += n as u64;
            reader_bar.inc(n as u64);
            let msg = pb::InstallRuntimeRequest {
                item: Some(pb::install_runtime_request::Item::Chunk(buf)),
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
        if sent != expected {
            anyhow::bail!(
                "runtime archive changed while uploading ({sent} bytes read, {expected} expected)"
            );
        }
        Ok::<(), anyhow::Error>(())
    });
    let mut client = agent.client();
    let response = client
        .install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    bar.finish_and_clear();
    producer
        .await
        .context("upload task ended abnormally")?
        .context("reading the runtime archive")?;
    let response = response
        .map_err(|s| agent.stream_err("InstallRuntime", &s))?
        .into_inner();
    let after = agent.status().await?;
    ensure!(
        after.staged_runtimes.contains(&facts.version),
        "agent of {} answered but runtime {} is not staged",
        agent.node,
        facts.version
    );
    Ok(json!({ "already_installed": response.already_installed, "sha256": response.sha256 }))
}

/// The secondaries that may take over: every node of the group but `primary`.
fn candidates(run: &Run, primary: &str) -> Vec<String> {
    run.group
        .nodes
        .iter()
        .filter(|n| n.name != primary)
        .map(|n| n.name.clone())
        .collect()
}

async fn stop_primary(run: &mut Run, node: &str) -> Result<Value> {
    let agent = run.agent(node)?.clone();
    let timeout = Duration::from_secs(run.inv.timeouts.stop);
    let before = agent.status().await?;
    if is_running(&before) && role_name(&before) == "active" {
        // Stopping an active primary is safe only when a secondary is
        // alive to take over: look now, not at a log line from earlier.
        let mut why = Vec::new();
        let mut ready = false;
        for c in candidates(run, node) {
            let s = run.agent(&c)?.status().await;
            match s {
                Ok(s) => match not_ready_to_take_over(&s) {
                    None => ready = true,
                    Some(reason) => why.push(format!("{c}: {reason}")),
                },
                Err(e) => why.push(format!("{c}: {e}")),
            }
        }
        ensure!(
            ready,
            "refusing to stop the active primary {node}: no secondary is ready to take over ({}); nothing was changed",
            why.join("; ")
        );
    }
    let requested = now_ms();
    let response = agent.stop(timeout).await?;
    let status = agent.status().await?;
    ensure!(
        !is_running(&status),
        "{node} still runs after Stop ({})",
        state_name(&status)
    );
    if run.facts.primary_stopped_ms.is_none() || response.was_running {
        run.facts.primary_stopped_ms = Some(requested);
    }
    Ok(json!({ "was_running": response.was_running, "killed": response.killed }))
}

/// Polls `f` until it yields a value, failing after `timeout` with `what`.
async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn await_takeover(run: &mut Run, candidates: &[String]) -> Result<Value> {
    let agents: Vec<Agent> = candidates
        .iter()
        .map(|c| run.agent(c).cloned())
        .collect::<Result<_>>()?;
    let timeout = Duration::from_secs(run.inv.timeouts.takeover);
    let deadline = Instant::now() + timeout;
    // How many polls in a row saw no candidate running at all: then nobody
    // can take over and waiting out the timeout only lengthens the outage.
    let mut none_running = 0;
    let why = loop {
        let mut running = 0;
        let mut states = Vec::new();
        for a in &agents {
            match a.status().await {
                Ok(s) if role_name(&s) == "active" => {
                    if run.facts.takeover_ms.is_none() {
                        run.facts.takeover_ms = Some(now_ms());
                    }
                    run.facts.takeover_node = Some(a.node.clone());
                    let window = run.facts.windows().into_iter().find(|w| w.window == 1);
                    return Ok(
                        json!({ "active": a.node, "window_ms": window.map(|w| w.duration_ms) }),
                    );
                }
                Ok(s) => {
                    if is_running(&s) {
                        running += 1;
                    }
                    let frozen = if s.frozen { ", frozen" } else { "" };
                    states.push(format!("{} {}{frozen}", a.node, role_name(&s)));
                }
                Err(e) => {
                    // Unknown is not "not running": wait for the timeout.
                    running += 1;
                    states.push(format!("{}: {e}", a.node));
                }
            }
        }
        none_running = if running == 0 { none_running + 1 } else { 0 };
        if none_running >= 3 {
            break format!(
                "no secondary is running to take over ({})",
                states.join(", ")
            );
        }
        if Instant::now() >= deadline {
            break format!(
                "no secondary became active within {}s ({})",
                timeout.as_secs(),
                states.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    };
    if run.facts.rollback_of.is_some() && none_running >= 3 {
        // A rollback of a group whose secondaries are down (for instance
        // shut down by the new schema) has nobody to hand over to: go on,
        // the outage lasts until the restored primary is active.
        run.facts.warnings.push(format!(
            "{why}: the group had no active node until the restored primary started"
        ));
        return Ok(json!({ "active": null, "no_takeover": why }));
    }
    fall_back_to_primary(run, &why).await
}

/// Nothing irreversible has happened yet (the backup comes after the
/// takeover): start the old primary again on its untouched runtime, wait
/// until it is active, and fail the step saying so.
async fn fall_back_to_primary(run: &mut Run, why: &str) -> Result<Value> {
    let primary = run.group.primary().name.clone();
    let agent = run.agent(&primary)?.clone();
    run.out.human(&format!(
        "  {why}: starting {primary} again on its untouched runtime"
    ));
    let start_timeout = Duration::from_secs(run.inv.timeouts.start);
    let status = agent.status().await?;
    if !is_running(&status) {
        agent
            .start(StartMode::Start, &primary, run.jdbc.expose(), start_timeout)
            .await
            .with_context(|| format!("{why}; starting {primary} again failed too"))?;
    }
    let active = poll_until(
        start_timeout + Duration::from_secs(run.inv.timeouts.takeover),
        &format!("{primary} to become active again"),
        || {
            let agent = agent.clone();
            async move {
                let s = agent.status().await?;
                if !is_running(&s) {
                    bail!("{} ended while starting ({})", agent.node, state_name(&s));
                }
                Ok((role_name(&s) == "active").then_some(()))
            }
        },
    )
    .await;
    // The hand-over starts again from the stop: what this one measured
    // and backed up belongs to a primary that has run since.
    run.facts.takeover_ms = None;
    run.facts.takeover_node = None;
    if run.facts.rollback_of.is_none() {
        run.facts.handover_round += 1;
        run.facts.backup_id = None;
        run.facts.backup_sha256 = None;
        run.facts.backup_bytes = None;
        run.facts.backup_path = None;
        run.facts.backup_verified = false;
    }
    match active {
        Ok(()) => Err(FellBack(format!(
            "{why}; {primary} was started again and is active: the group serves as before the run, nothing irreversible was done. Fix the secondary, then `hubshift resume` (starts again at the primary's stop) or `hubshift abandon`"
        ))
        .into()),
        Err(e) => Err(e.context(format!(
            "{why}; starting {primary} again did not make it active"
        ))),
    }
}

fn backup_id(run: &Run, node: &str) -> String {
    match run.facts.handover_round {
        0 => format!("{}-{node}", run.id),
        // After a fallback the primary ran again: its appdata moved on, and
        // the backup is taken anew under a new id.
        n => format!("{}-{node}-r{n}", run.id),
    }
}

/// From the takeover until the schema is dropped the group serves on the
/// secondary that took over. If it stopped serving (exited, no longer
/// active, frozen), nothing irreversible has happened yet: fall back to the
/// old primary instead of going on with a group that produces nothing.
async fn ensure_still_serving(run: &mut Run) -> Result<()> {
    let Some(node) = run.facts.takeover_node.clone() else {
        // A rollback whose secondaries were all down: nobody serves anyway.
        return Ok(());
    };
    let why = match run.agent(&node)?.status().await {
        Ok(s) if role_name(&s) == "active" && !s.frozen => return Ok(()),
        Ok(s) => format!(
            "{node}, which took over, is {}{} and serves no data",
            role_name(&s),
            if s.frozen { " and frozen" } else { "" }
        ),
        // Its agent cannot say; the hub itself may well be serving.
        Err(_) => return Ok(()),
    };
    fall_back_to_primary(run, &why).await.map(|_| ())
}

async fn backup(run: &mut Run, node: &str) -> Result<Value> {
    ensure_still_serving(run).await?;
    let agent = run.agent(node)?.clone();
    let status = agent.status().await?;
    ensure!(
        !is_running(&status),
        "refusing to back up {node} while its hub runs: appdata would change under the backup"
    );
    let id = backup_id(run, node);
    let r = agent
        .backup(&id, Duration::from_secs(run.inv.timeouts.backup))
        .await?;
    ensure!(r.id == id, "agent returned backup {} instead of {id}", r.id);
    ensure!(
        r.sha256.len() == 64,
        "agent returned no SHA-256 for backup {id}"
    );
    run.facts.backup_id = Some(r.id.clone());
    run.facts.backup_sha256 = Some(r.sha256.clone());
    run.facts.backup_bytes = Some(r.size_bytes);
    run.facts.backup_path = Some(r.path.clone());
    run.facts.backup_verified = false;
    Ok(
        json!({ "id": r.id, "sha256": r.sha256, "size_bytes": r.size_bytes, "path": r.path, "existed": r.existed }),
    )
}

async fn verify_backup(run: &mut Run, node: &str) -> Result<Value> {
    ensure_still_serving(run).await?;
    let agent = run.agent(node)?.clone();
    let (Some(id), Some(sha)) = (run.facts.backup_id.clone(), run.facts.backup_sha256.clone())
    else {
        bail!("no backup recorded for this run: the backup step has not run");
    };
    let timeout = Duration::from_secs(run.inv.timeouts.backup);
    let v = agent.verify_backup(&id, &sha, timeout).await?;
    ensure!(
        v.sha256 == sha,
        "backup {id} on {node} has SHA-256 {} instead of {sha}",
        v.sha256
    );
    ensure!(v.entries > 0, "backup {id} on {node} lists no entries");
    let mut copy = None;
    if let Some(dir) = run.inv.backups.copy_to.clone() {
        let dir = dir.join(&run.group.name);
        let path =
            crate::backup_copy::fetch(&agent, &id, &sha, &dir, v.size_bytes, &run.out, timeout)
                .await?;
        copy = Some(path.display().to_string());
    }
    run.facts.backup_copy = copy.clone();
    run.facts.backup_verified = true;
    Ok(
        json!({ "sha256": v.sha256, "entries": v.entries, "size_bytes": v.size_bytes, "copy": copy }),
    )
}

fn require_verified_backup(run: &Run) -> Result<()> {
    ensure!(
        run.facts.backup_verified && run.facts.backup_sha256.is_some(),
        "refusing a destructive step: no verified backup in this run"
    );
    Ok(())
}

async fn drop_schema(run: &mut Run) -> Result<Value> {
    require_verified_backup(run)?;
    ensure_still_serving(run).await?;
    let client = run.db.connect_patiently(DB_PATIENCE).await?;
    let existed = crate::db::schema_exists(&client, &run.facts.schema).await?;
    crate::db::drop_schema(&client, &run.facts.schema).await?;
    ensure!(
        !crate::db::schema_exists(&client, &run.facts.schema).await?,
        "schema {} still exists after DROP",
        run.facts.schema
    );
    Ok(json!({ "existed": existed }))
}

async fn restore_backup(run: &mut Run, node: &str) -> Result<Value> {
    require_verified_backup(run)?;
    let agent = run.agent(node)?.clone();
    let status = agent.status().await?;
    ensure!(
        !is_running(&status),
        "{node} runs ({}) — appdata is restored only on a stopped hub",
        state_name(&status)
    );
    let (Some(id), Some(sha)) = (run.facts.backup_id.clone(), run.facts.backup_sha256.clone())
    else {
        bail!("no backup recorded for this run");
    };
    let r = agent
        .restore(&id, &sha, Duration::from_secs(run.inv.timeouts.backup))
        .await?;
    Ok(json!({ "id": id, "set_aside": r.set_aside_path }))
}

async fn activate(run: &mut Run, node: &str) -> Result<Value> {
    require_verified_backup(run)?;
    let agent = run.agent(node)?.clone();
    let before = agent.status().await?;
    if before.active_runtime == run.facts.version {
        return Ok(json!({ "already_active": true }));
    }
    ensure!(
        !is_running(&before),
        "{node} runs ({}) — the runtime is switched only on a stopped hub",
        state_name(&before)
    );
    let r = agent.activate(&run.facts.version).await?;
    let after = agent.status().await?;
    ensure!(
        after.active_runtime == run.facts.version,
        "{node} reports runtime {:?} after activating {}",
        after.active_runtime,
        run.facts.version
    );
    Ok(json!({ "previous": r.previous, "active": r.active }))
}

async fn create_and_start(run: &mut Run, node: &str) -> Result<Value> {
    require_verified_backup(run)?;
    let agent = run.agent(node)?.clone();
    // Re-observe instead of trusting the journal: after a crash the new
    // schema may exist without a running hub (`create` done, `start` not),
    // or the agent may still be running the compound.
    let client = run.db.connect_patiently(DB_PATIENCE).await?;
    let schema_there = crate::db::schema_exists(&client, &run.facts.schema).await?;
    let mode = if schema_there {
        StartMode::Start
    } else {
        StartMode::CreateAndStart
    };
    let before = now_ms();
    let timeout = Duration::from_secs(run.inv.timeouts.start);
    // Start is idempotent on the agent: a running hub (or a compound still
    // in progress, which Start waits for) is answered `already_running`.
    let r = agent.start(mode, node, run.jdbc.expose(), timeout).await?;
    if mode == StartMode::CreateAndStart && !r.already_running {
        run.facts.create_done_ms = Some(now_ms());
    } else if run.facts.create_done_ms.is_none() {
        // The schema was made before this attempt (a crash in between):
        // the window opened no later than now.
        run.facts.create_done_ms = Some(before);
    }
    ensure!(
        crate::db::schema_exists(&client, &run.facts.schema).await?,
        "{node} started but schema {} was not created",
        run.facts.schema
    );
    let after = agent.status().await?;
    ensure!(
        is_running(&after),
        "{node} is {} after its start; see its hub log on the host",
        state_name(&after)
    );
    ensure!(
        after.active_runtime == run.facts.version,
        "{node} runs runtime {:?}, not {}",
        after.active_runtime,
        run.facts.version
    );
    Ok(json!({ "pid": r.pid, "already_running": r.already_running,
               "mode": if schema_there { "START" } else { "CREATE_AND_START" } }))
}

async fn await_handback(run: &mut Run, primary: &str, secondaries: &[String]) -> Result<Value> {
    let p = run.agent(primary)?.clone();
    let olds: Vec<Agent> = secondaries
        .iter()
        .map(|s| run.agent(s).cloned())
        .collect::<Result<_>>()?;
    let shutdown_timeout = Duration::from_secs(run.inv.timeouts.secondary_shutdown);
    let start_timeout = Duration::from_secs(run.inv.timeouts.start);
    let stop_timeout = Duration::from_secs(run.inv.timeouts.stop);
    let first = p.status().await?;
    if !is_running(&first) {
        // The primary ended after its start (or a crash left it stopped):
        // the new schema is there, so `start` is what is left to do.
        run.out.human(&format!(
            "  {primary} is {}: starting it again",
            state_name(&first)
        ));
        p.start(StartMode::Start, primary, run.jdbc.expose(), start_timeout)
            .await?;
    }
    let began = Instant::now();
    let mut restarts = 0;
    let mut down: Vec<Option<u64>> = vec![None; olds.len()];
    let mut stopped_by_us = Vec::new();
    let mut primary_active: Option<u64> = run.facts.primary_active_ms;
    loop {
        for (i, a) in olds.iter().enumerate() {
            if down[i].is_some() {
                continue;
            }
            let s = a.status().await?;
            if !is_running(&s) {
                down[i] = Some(now_ms());
            } else if began.elapsed() >= shutdown_timeout || primary_active.is_some() {
                // It did not see the new schema (another schema name, place or
                // credentials), or the upgraded primary is already active:
                // stop it now — never two active nodes for longer than a poll.
                let requested = now_ms();
                a.stop(stop_timeout).await?;
                let s = a.status().await?;
                ensure!(!is_running(&s), "{} still runs after Stop", a.node);
                down[i] = Some(requested);
                stopped_by_us.push(a.node.clone());
            }
        }
        let ps = p.status().await?;
        if !is_running(&ps) {
            // The old secondaries are going or gone: the group has no other
            // node to serve. A hub that refused to start (the database
            // restarting, say) is started again a few times, with a pause
            // between; one that keeps ending needs the operator.
            if restarts >= PRIMARY_RESTARTS {
                bail!(
                    "{primary} is no longer running ({}) after {restarts} restart(s); see its hub log on the host",
                    state_name(&ps)
                );
            }
            restarts += 1;
            let pause = Duration::from_secs(1 << restarts.min(3));
            run.out.human(&format!(
                "  {primary} is {}: starting it again in {}s ({restarts}/{PRIMARY_RESTARTS})",
                state_name(&ps),
                pause.as_secs()
            ));
            tokio::time::sleep(pause).await;
            p.start(StartMode::Start, primary, run.jdbc.expose(), start_timeout)
                .await?;
            continue;
        }
        if primary_active.is_none() && role_name(&ps) == "active" {
            primary_active = Some(now_ms());
        }
        if down.iter().all(Option::is_some) && primary_active.is_some() {
            break;
        }
        if began.elapsed() >= start_timeout + shutdown_timeout {
            bail!(
                "timed out: {primary} is {} and the old secondaries {} down",
                role_name(&ps),
                if down.iter().all(Option::is_some) {
                    "are"
                } else {
                    "are not all"
                }
            );
        }
        tokio::time::sleep(POLL).await;
    }
    // Window 2 opens when the old secondaries may stop serving: at the
    // create (they shut themselves down on the new schema at any moment
    // after it), or when hubshift stopped one that did not.
    let stopped_by_hubshift = down
        .iter()
        .zip(&olds)
        .filter(|(_, a)| stopped_by_us.contains(&a.node))
        .filter_map(|(d, _)| *d)
        .max();
    let last_down = match (run.facts.create_done_ms, stopped_by_hubshift) {
        (Some(c), Some(s)) => Some(c.max(s)),
        (c, s) => c.or(s).or_else(|| down.iter().flatten().copied().max()),
    };
    if run.facts.secondaries_down_ms.is_none() {
        run.facts.secondaries_down_ms = last_down;
    }
    if run.facts.primary_active_ms.is_none() {
        run.facts.primary_active_ms = primary_active;
    }
    if let (Some(d), Some(a)) = (last_down, primary_active)
        && a < d
    {
        run.facts.warnings.push(format!(
            "{primary} was seen active {} ms before the last old secondary was seen down",
            d - a
        ));
    }
    for n in &stopped_by_us {
        run.facts.warnings.push(format!(
            "{n} did not shut itself down after the new schema appeared (within {}s, or before {primary} was active) and was stopped by hubshift",
            shutdown_timeout.as_secs()
        ));
    }
    let window = run.facts.windows().into_iter().find(|w| w.window == 2);
    Ok(
        json!({ "stopped_by_controller": stopped_by_us, "window_ms": window.map(|w| w.duration_ms) }),
    )
}

async fn copy_certificate(run: &mut Run, from: &str, to: &str) -> Result<Value> {
    let src = run.agent(from)?.clone();
    let dst = run.agent(to)?.clone();
    let cert = src.get_certificate().await?;
    let sha = hubshift_common::digest::sha256_hex(&cert.content);
    ensure!(
        sha == cert.sha256,
        "certificate store from {from} arrived with SHA-256 {sha}, agent said {}",
        cert.sha256
    );
    let put = dst
        .put_certificate(pb::Certificate {
            content: cert.content,
            sha256: sha.clone(),
        })
        .await?;
    let after = dst.status().await?;
    ensure!(
        put.sha256 == sha && after.certificate_sha256 == sha,
        "certificate store on {to} has SHA-256 {:?}, expected {sha}",
        after.certificate_sha256
    );
    Ok(json!({ "sha256": sha }))
}

async fn start_secondary(run: &mut Run, node: &str) -> Result<Value> {
    let agent = run.agent(node)?.clone();
    let status = agent.status().await?;
    if is_running(&status) {
        return Ok(json!({ "already_running": true }));
    }
    ensure!(
        status.active_runtime == run.facts.version,
        "{node} would start runtime {:?}, not {}",
        status.active_runtime,
        run.facts.version
    );
    let timeout = Duration::from_secs(run.inv.timeouts.start);
    let r = agent
        .start(StartMode::Start, node, run.jdbc.expose(), timeout)
        .await?;
    Ok(json!({ "pid": r.pid }))
}

/// Starts `node` (HA `start`; the schema exists by now) when its hub is not
/// running: a hub that died after its start step, or that a crash left
/// stopped, is started again by the step that waits for it.
async fn start_if_down(run: &mut Run, node: &str) -> Result<bool> {
    let agent = run.agent(node)?.clone();
    let s = agent.status().await?;
    if is_running(&s) {
        return Ok(false);
    }
    ensure!(
        s.active_runtime == run.facts.version,
        "{node} is {} on runtime {:?}, not {}",
        state_name(&s),
        s.active_runtime,
        run.facts.version
    );
    run.out.human(&format!(
        "  {node} is {}: starting it again",
        state_name(&s)
    ));
    let timeout = Duration::from_secs(run.inv.timeouts.start);
    agent
        .start(StartMode::Start, node, run.jdbc.expose(), timeout)
        .await?;
    Ok(true)
}

async fn await_standby(run: &mut Run, node: &str) -> Result<Value> {
    start_if_down(run, node).await?;
    let agent = run.agent(node)?.clone();
    let timeout = Duration::from_secs(run.inv.timeouts.standby_join);
    poll_until(timeout, &format!("{node} to become standby"), || {
        let agent = agent.clone();
        async move {
            let s = agent.status().await?;
            if !is_running(&s) {
                bail!(
                    "{node} is no longer running ({}); see its hub log on the host",
                    state_name(&s)
                );
            }
            Ok((role_name(&s) == "standby").then_some(()))
        }
    })
    .await?;
    let now = now_ms();
    run.facts.standby_again_ms = Some(run.facts.standby_again_ms.map_or(now, |t| t.max(now)));
    Ok(json!({ "role": "standby" }))
}

/// What keeps the group from being as it should be: every node running
/// `version`, exactly one active, the others standby.
async fn group_problems(agents: &[Agent], version: &str) -> Result<Vec<String>> {
    let mut active = 0;
    let mut problems = Vec::new();
    for a in agents {
        let s = a.status().await?;
        if !is_running(&s) {
            problems.push(format!("{} is {}", a.node, state_name(&s)));
            continue;
        }
        if s.active_runtime != version {
            problems.push(format!("{} runs {}", a.node, s.active_runtime));
        }
        match role_name(&s) {
            "active" => active += 1,
            "standby" => {}
            other => problems.push(format!("{} is {other}", a.node)),
        }
    }
    if active != 1 {
        problems.push(format!("{active} active nodes"));
    }
    Ok(problems)
}

/// A run is done only when the whole group is seen as it should be; waits
/// a little for a role that is still settling.
pub async fn verify_group(run: &mut Run) -> Result<()> {
    // Every step is done, so every node should run: one that died since
    // its own step (say the primary, while the secondary was switched) is
    // started again rather than leaving the group short of a node.
    let nodes: Vec<String> = run.group.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &nodes {
        start_if_down(run, n).await?;
    }
    let mut agents: Vec<Agent> = run.agents.values().cloned().collect();
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    let deadline = Instant::now() + Duration::from_secs(run.inv.timeouts.standby_join.min(60));
    loop {
        let problems = group_problems(&agents, &run.facts.version).await?;
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the run's steps are done but the group is not as it should be: {}",
                problems.join("; ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The archive format by file name: `.zip`, `.tar` (a `docker save` image
/// for agents with the docker driver), else tar.gz.
pub fn archive_format(file: &std::path::Path) -> pb::ArchiveFormat {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "zip" => pb::ArchiveFormat::Zip,
        "tar" => pb::ArchiveFormat::DockerImage,
        _ => pb::ArchiveFormat::TarGz,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_format_follows_the_file_name() {
        let f = |n: &str| archive_format(std::path::Path::new(n));
        assert_eq!(f("intelligencehub-4.2.0.zip"), pb::ArchiveFormat::Zip);
        assert_eq!(
            f("HighByte-Intelligence-Hub-4.5.0_Docker_Build-1.TAR"),
            pb::ArchiveFormat::DockerImage
        );
        assert_eq!(f("hubsim-runtime-4.2.0.tar.gz"), pb::ArchiveFormat::TarGz);
        assert_eq!(f("runtime"), pb::ArchiveFormat::TarGz);
    }
}
