//! What each plan step does. Every step is idempotent (it first looks at
//! what is already true) and checks its outcome by observation — agent
//! Status and the database — rather than trusting an RPC's return alone.

use crate::agents::{Agent, is_running, role_name, state_name};
use crate::executor::{Run, now_ms};
use crate::facts::RunFacts;
use crate::plan::Step;
use anyhow::{Context, Result, bail, ensure};
use hubshift_common::pb::{self, StartMode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);

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
    let format = if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        pb::ArchiveFormat::Zip
    } else {
        pb::ArchiveFormat::TarGz
    };
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

async fn stop_primary(run: &mut Run, node: &str) -> Result<Value> {
    let agent = run.agent(node)?.clone();
    let timeout = Duration::from_secs(run.inv.timeouts.stop);
    let response = agent.stop(timeout).await?;
    let status = agent.status().await?;
    ensure!(
        !is_running(&status),
        "{node} still runs after Stop ({})",
        state_name(&status)
    );
    if run.facts.primary_stopped_ms.is_none() || response.was_running {
        run.facts.primary_stopped_ms = Some(now_ms());
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
    let what = format!("{} to become active", candidates.join(" or "));
    let node = poll_until(timeout, &what, || {
        let agents = agents.clone();
        async move {
            for a in &agents {
                if let Ok(s) = a.status().await
                    && role_name(&s) == "active"
                {
                    return Ok(Some(a.node.clone()));
                }
            }
            Ok(None)
        }
    })
    .await?;
    if run.facts.takeover_ms.is_none() {
        run.facts.takeover_ms = Some(now_ms());
    }
    run.facts.takeover_node = Some(node.clone());
    let window = run.facts.windows().into_iter().find(|w| w.window == 1);
    Ok(json!({ "active": node, "window_ms": window.map(|w| w.duration_ms) }))
}

fn backup_id(run: &Run, node: &str) -> String {
    format!("{}-{node}", run.id)
}

async fn backup(run: &mut Run, node: &str) -> Result<Value> {
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
    let client = run.db.connect().await?;
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
    let status = agent.status().await?;
    if is_running(&status) {
        return Ok(json!({ "already_running": true }));
    }
    // A crash between `create` and the journal would leave the new schema
    // behind: then only `start` is left to do.
    let client = run.db.connect().await?;
    let schema_there = crate::db::schema_exists(&client, &run.facts.schema).await?;
    let mode = if schema_there {
        StartMode::Start
    } else {
        StartMode::CreateAndStart
    };
    let timeout = Duration::from_secs(run.inv.timeouts.start);
    let r = agent.start(mode, node, run.jdbc.expose(), timeout).await?;
    ensure!(
        crate::db::schema_exists(&client, &run.facts.schema).await?,
        "{node} started but schema {} was not created",
        run.facts.schema
    );
    Ok(json!({ "pid": r.pid, "mode": if schema_there { "START" } else { "CREATE_AND_START" } }))
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
    let began = Instant::now();
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
                a.stop(stop_timeout).await?;
                let s = a.status().await?;
                ensure!(!is_running(&s), "{} still runs after Stop", a.node);
                down[i] = Some(now_ms());
                stopped_by_us.push(a.node.clone());
            }
        }
        let ps = p.status().await?;
        if !is_running(&ps) {
            bail!(
                "{primary} is no longer running ({}); see its hub log on the host",
                state_name(&ps)
            );
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
    let last_down = down.iter().flatten().copied().max();
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

async fn await_standby(run: &mut Run, node: &str) -> Result<Value> {
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
    Ok(json!({ "role": "standby" }))
}
