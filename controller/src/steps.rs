//! What each plan step does. Every step is idempotent (it first looks at
//! what is already true) and checks its outcome by observation — agent
//! Status and the database — rather than trusting an RPC's return alone.

use crate::agents::{Agent, is_running, role_name, state_name};
use crate::clock::now_ms;
use crate::facts::{RunFacts, StepOutcome};
use crate::inventory::TimeoutsSection;
use crate::output::Output;
use crate::plan::Step;
use crate::run_context::Run;
use anyhow::{Context, Result, bail, ensure};
use hubshift_common::pb::{self, StartMode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
// The tokio clock (the system's monotonic clock in production) so that
// unit tests under paused time wait out timeouts in no time.
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);

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
            return Ok(Upload::CutOff { sent: 0 });
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
                // The stream ended on the agent's side (its answer says why):
                // that says nothing about the file.
                return Ok(Upload::CutOff { sent });
            }
        }
        Ok::<Upload, std::io::Error>(Upload::Read { sent })
    });
    let mut client = agent.client();
    let response = client
        .install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    bar.finish_and_clear();
    let upload = producer
        .await
        .context("upload task ended abnormally")?
        .with_context(|| format!("reading the runtime archive {}", file.display()))?;
    if let Upload::Read { sent } = upload {
        archive_unchanged(file, sent, expected).await?;
    }
    let response = match response {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let err = agent.stream_err("InstallRuntime", &status);
            return Err(match upload {
                Upload::CutOff { sent } if connection_lost(status.code()) => {
                    anyhow::Error::new(err).context(format!(
                        "the connection to the agent of {} broke after {sent} of {expected} bytes of the runtime archive were sent",
                        agent.node
                    ))
                }
                Upload::CutOff { sent } => anyhow::Error::new(err).context(format!(
                    "the agent of {} refused the upload after {sent} of {expected} bytes",
                    agent.node
                )),
                Upload::Read { .. } => err.into(),
            });
        }
    };
    let after = agent.status().await?;
    ensure!(
        after.staged_runtimes.contains(&facts.version),
        "agent of {} answered but runtime {} is not staged",
        agent.node,
        facts.version
    );
    Ok(json!({ "already_installed": response.already_installed, "sha256": response.sha256 }))
}

/// How far the producer of an upload got.
enum Upload {
    /// Read to the end: `sent` bytes.
    Read {
        /// Bytes read and sent.
        sent: u64,
    },
    /// The agent's side of the stream went away after `sent` bytes.
    CutOff {
        /// Bytes sent before.
        sent: u64,
    },
}

/// The codes a stream ends with when the connection, not the agent, ended
/// it (the agent process died, the host went away, the network broke).
fn connection_lost(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// An archive read to its end must have the size it was planned with:
/// otherwise the file changed under the upload (looked at again, so that
/// the message is true).
async fn archive_unchanged(file: &Path, sent: u64, expected: u64) -> Result<()> {
    if sent == expected {
        return Ok(());
    }
    let now = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("looking at the runtime archive {} again", file.display()))?
        .len();
    bail!(
        "runtime archive {} changed while uploading: {sent} bytes read, planned with {expected}, {now} now; upload the published archive (checked by --sha256)",
        file.display()
    )
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
    let others: Vec<Agent> = candidates(run, node)
        .iter()
        .map(|c| run.agent(c).cloned())
        .collect::<Result<_>>()?;
    let stop = Duration::from_secs(run.inv.timeouts.stop);
    let stopped = stop_primary_if_safe(&agent, &others, stop).await?;
    run.apply(StepOutcome::PrimaryStopped {
        requested_ms: stopped.requested_ms,
        was_running: stopped.was_running,
    });
    Ok(json!({ "was_running": stopped.was_running, "killed": stopped.killed }))
}

/// What stopping the primary did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryStopped {
    /// Unix ms: when the stop was asked for (outage window 1 opens).
    pub requested_ms: u64,
    /// The hub ran before (not a repeat after a crash).
    pub was_running: bool,
    /// It had to be killed.
    pub killed: bool,
}

/// Stops `primary`, but an active primary only when one of `secondaries`
/// is a live standby right now, so that stopping it cannot leave the group
/// with nobody to take over; when none is, nothing is changed. A primary
/// that is not active (already stopped, or a repeat after a crash) is
/// stopped without asking.
pub async fn stop_primary_if_safe(
    primary: &Agent,
    secondaries: &[Agent],
    stop: Duration,
) -> Result<PrimaryStopped> {
    let node = &primary.node;
    let before = primary.status().await?;
    if is_running(&before) && role_name(&before) == "active" {
        // Look now, not at a log line from earlier.
        let mut why = Vec::new();
        let mut ready = false;
        for c in secondaries {
            match c.status().await {
                Ok(s) => match not_ready_to_take_over(&s) {
                    None => ready = true,
                    Some(reason) => why.push(format!("{}: {reason}", c.node)),
                },
                Err(e) => why.push(format!("{}: {e}", c.node)),
            }
        }
        ensure!(
            ready,
            "refusing to stop the active primary {node}: no secondary is ready to take over ({}); nothing was changed",
            why.join("; ")
        );
    }
    let requested_ms = now_ms();
    let response = primary.stop(stop).await?;
    let status = primary.status().await?;
    ensure!(
        !is_running(&status),
        "{node} still runs after Stop ({})",
        state_name(&status)
    );
    Ok(PrimaryStopped {
        requested_ms,
        was_running: response.was_running,
        killed: response.killed,
    })
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
    let hub_takeover = Duration::from_secs(run.inv.timeouts.hub_takeover);
    let why = match wait_for_takeover(&agents, timeout, hub_takeover).await {
        TakeoverWait::Active { node, seen_ms } => {
            run.apply(StepOutcome::TookOver {
                node: node.clone(),
                at_ms: seen_ms,
            });
            let window = run
                .facts
                .windows()
                .into_iter()
                .rev()
                .find(|w| w.window == 1);
            return Ok(json!({ "active": node, "window_ms": window.map(|w| w.duration_ms) }));
        }
        TakeoverWait::NoneRunning(why) if run.facts.rollback_of.is_some() => {
            // A rollback of a group whose secondaries are down (for
            // instance shut down by the new schema) has nobody to hand
            // over to: go on, the outage lasts until the restored primary
            // is active.
            run.apply(StepOutcome::NoTakeover { why: why.clone() });
            return Ok(json!({ "active": null, "no_takeover": why }));
        }
        TakeoverWait::NoneRunning(why) | TakeoverWait::TimedOut(why) => why,
    };
    let lost_ms = run.facts.primary_stopped_ms;
    let fix = format!(
        "Fix the secondary (see its hub log), then `hubshift resume --run {}` (starts again at the primary's stop) or `hubshift abandon --run {}`",
        run.id, run.id
    );
    fall_back_to_primary(run, &why, lost_ms, &fix).await
}

/// How the wait for a secondary to take over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeoverWait {
    /// `node` was seen active at `seen_ms` (Unix ms).
    Active {
        /// The secondary that took over.
        node: String,
        /// When it was first seen active.
        seen_ms: u64,
    },
    /// No candidate can take over: none ran for several polls in a row, or
    /// the hubs' own takeover time (plus [`TAKEOVER_MARGIN`]) passed with
    /// every candidate exited or frozen. Waiting out the timeout would only
    /// lengthen the outage.
    NoneRunning(String),
    /// Nobody became active within the timeout.
    TimedOut(String),
}

/// What the takeover wait allows beyond the hubs' own takeover time before
/// it counts a frozen secondary out: a few heartbeats of slack.
pub const TAKEOVER_MARGIN: Duration = Duration::from_secs(2);

/// Polls `candidates` until one is active, none can take over, or
/// `timeout` passed. A candidate that is frozen may thaw and take over,
/// so it is counted out only once `hub_takeover` (the hubs' own takeover
/// time) plus [`TAKEOVER_MARGIN`] has passed; a candidate whose agent does
/// not answer counts as running: unknown is not "not running", so its
/// node gets the whole timeout.
pub async fn wait_for_takeover(
    candidates: &[Agent],
    timeout: Duration,
    hub_takeover: Duration,
) -> TakeoverWait {
    let start = Instant::now();
    let deadline = start + timeout;
    let frozen_out = start + hub_takeover + TAKEOVER_MARGIN;
    // How many polls in a row saw no candidate running at all: then nobody
    // can take over and waiting out the timeout only lengthens the outage.
    let mut none_running = 0;
    loop {
        let mut running = 0;
        let mut live = 0;
        let mut states = Vec::new();
        for a in candidates {
            match a.status().await {
                Ok(s) if role_name(&s) == "active" && !s.frozen => {
                    return TakeoverWait::Active {
                        node: a.node.clone(),
                        seen_ms: now_ms(),
                    };
                }
                Ok(s) => {
                    if is_running(&s) {
                        running += 1;
                        if !s.frozen {
                            live += 1;
                        }
                    }
                    let frozen = if s.frozen { ", frozen" } else { "" };
                    states.push(format!("{} {}{frozen}", a.node, role_name(&s)));
                }
                Err(e) => {
                    // Unknown is not "not running": wait for the timeout.
                    running += 1;
                    live += 1;
                    states.push(format!("{}: {e}", a.node));
                }
            }
        }
        none_running = if running == 0 { none_running + 1 } else { 0 };
        if none_running >= 3 {
            return TakeoverWait::NoneRunning(format!(
                "no secondary is running to take over ({})",
                states.join(", ")
            ));
        }
        if live == 0 && Instant::now() >= frozen_out {
            return TakeoverWait::NoneRunning(format!(
                "no secondary can take over: each is frozen or not running {}s after the primary's stop, longer than the hubs' own takeover time ({}s, `timeouts.hub_takeover`) ({})",
                (hub_takeover + TAKEOVER_MARGIN).as_secs(),
                hub_takeover.as_secs(),
                states.join(", ")
            ));
        }
        if Instant::now() >= deadline {
            return TakeoverWait::TimedOut(format!(
                "no secondary became active within {}s ({})",
                timeout.as_secs(),
                states.join(", ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The fallback's first half: starts the old primary again on its
/// untouched runtime, unless it runs.
pub async fn start_unless_running(
    primary: &Agent,
    jdbc: &str,
    timeouts: &TimeoutsSection,
) -> Result<()> {
    let status = primary.status().await?;
    if !is_running(&status) {
        let start_timeout = Duration::from_secs(timeouts.start);
        primary
            .start(StartMode::Start, &primary.node, jdbc, start_timeout)
            .await?;
    }
    Ok(())
}

/// The fallback's second half: waits until the restarted old primary is
/// active (a secondary that took over meanwhile hands leadership back to
/// the preferred primary), failing when it ends.
pub async fn await_active_again(primary: &Agent, timeouts: &TimeoutsSection) -> Result<()> {
    poll_until(
        Duration::from_secs(timeouts.start + timeouts.takeover),
        &format!("{} to become active again", primary.node),
        || {
            let agent = primary.clone();
            async move {
                let s = agent.status().await?;
                if !is_running(&s) {
                    bail!("{} ended while starting ({})", agent.node, state_name(&s));
                }
                Ok((role_name(&s) == "active").then_some(()))
            }
        },
    )
    .await
}

/// Nothing irreversible has happened yet (the backup comes after the
/// takeover): start the old primary again on its untouched runtime, wait
/// until it is active, and fail the step saying so and what to do (`fix`).
/// `lost_ms` is when the group may have lost its serving node: the outage
/// from there until the primary is active is reported as a window.
async fn fall_back_to_primary(
    run: &mut Run,
    why: &str,
    lost_ms: Option<u64>,
    fix: &str,
) -> Result<Value> {
    let primary = run.group.primary().name.clone();
    let agent = run.agent(&primary)?.clone();
    run.out.human(&format!(
        "  {why}: starting {primary} again on its untouched runtime"
    ));
    let started = start_unless_running(&agent, run.jdbc.expose(), &run.inv.timeouts).await;
    let active = match started {
        Ok(()) => await_active_again(&agent, &run.inv.timeouts).await,
        Err(e) => Err(e.context("starting it again failed")),
    };
    // The hand-over starts again from the stop: what this one measured
    // and backed up belongs to a primary that has run since.
    run.apply(StepOutcome::FellBack {
        lost_ms,
        active_ms: active.is_ok().then(now_ms),
    });
    match active {
        Ok(()) => Err(FellBack(format!(
            "{why}; {primary} was started again and is active: the group serves as before, nothing irreversible was done. {fix}"
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

/// How long an agent that does not answer is asked again before the node
/// counts as not serving.
const UNANSWERED_PATIENCE: Duration = Duration::from_secs(3);

/// From the takeover until the schema is dropped the group serves on the
/// secondary that took over. Before each of those steps it must be seen
/// serving — its agent answers now, its hub runs, is active and not
/// frozen. Otherwise (exited, no longer active, frozen, or its host does
/// not answer within [`UNANSWERED_PATIENCE`]) nothing irreversible has
/// happened yet: fall back to the old primary instead of going on with a
/// group that may produce nothing.
async fn ensure_still_serving(run: &mut Run) -> Result<()> {
    let Some(node) = run.facts.takeover_node.clone() else {
        // A rollback whose secondaries were all down: nobody serves anyway.
        return Ok(());
    };
    let agent = run.agent(&node)?.clone();
    let asked = Instant::now();
    let why = loop {
        match agent.status().await {
            Ok(s) if role_name(&s) == "active" && is_running(&s) && !s.frozen => {
                run.apply(StepOutcome::SeenServing { at_ms: now_ms() });
                return Ok(());
            }
            Ok(s) => {
                break format!(
                    "{node}, which took over, is {} ({}){} and serves no data",
                    role_name(&s),
                    state_name(&s),
                    if s.frozen { ", frozen" } else { "" }
                );
            }
            Err(e) if asked.elapsed() >= UNANSWERED_PATIENCE => {
                break format!(
                    "{node}, which took over, cannot be seen serving: its agent does not answer ({e})"
                );
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    let lost_ms = run.facts.serving_seen_ms.or(run.facts.primary_stopped_ms);
    let fix = format!(
        "Once {node} serves again, `hubshift resume --run {}` starts again at the primary's stop with a new backup; or `hubshift abandon --run {}`",
        run.id, run.id
    );
    fall_back_to_primary(run, &why, lost_ms, &fix)
        .await
        .map(|_| ())
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
    run.apply(StepOutcome::BackedUp {
        id: r.id.clone(),
        sha256: r.sha256.clone(),
        bytes: r.size_bytes,
        path: r.path.clone(),
    });
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
    let damaged = match agent.verify_backup(&id, &sha, timeout).await {
        Ok(v) if v.sha256 != sha => Err(format!("its SHA-256 is {}, not {sha}", v.sha256)),
        Ok(v) if v.entries == 0 => Err("it lists no entries".to_string()),
        Ok(v) => Ok(v),
        // The agent read the file and found it wanting (missing, changed,
        // unreadable): the backup itself is the problem.
        Err(crate::agents::AgentError::Call {
            code: tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::DataLoss,
            message,
            ..
        }) => Err(message),
        Err(e) => return Err(e.into()),
    };
    let v = match damaged {
        Ok(v) => v,
        Err(why) => return backup_damaged(run, node, &id, &why).await,
    };
    let mut copy = None;
    if let Some(dir) = run.inv.backups.copy_to.clone() {
        let dir = dir.join(&run.group.name);
        let path =
            crate::backup_copy::fetch(&agent, &id, &sha, &dir, v.size_bytes, &run.out, timeout)
                .await?;
        copy = Some(path.display().to_string());
    }
    run.apply(StepOutcome::BackupVerified { copy: copy.clone() });
    Ok(
        json!({ "sha256": v.sha256, "entries": v.entries, "size_bytes": v.size_bytes, "copy": copy }),
    )
}

/// The run's backup on `node` failed its check. Nothing irreversible has
/// happened yet (verification comes before the schema drop): the old
/// primary serves again, and the failure names the backup, its file, the
/// controller's copy and what is accepted next.
async fn backup_damaged(run: &mut Run, node: &str, id: &str, why: &str) -> Result<Value> {
    let file = run.facts.backup_path.clone().unwrap_or_else(|| "?".into());
    let what = format!("backup {id} at {file} on {node} is damaged ({why})");
    let fix = if run.facts.rollback_of.is_some() {
        let copy = match &run.facts.backup_copy {
            Some(copy) => format!(
                "Put its copy {copy} back as {file} on {node} (check its SHA-256 {}), then `hubshift resume --run {}`; ",
                run.facts.backup_sha256.as_deref().unwrap_or("?"),
                run.id
            ),
            None => "No copy was made (`backups.copy_to`): the backup cannot be restored. ".into(),
        };
        format!(
            "{copy}or give the rollback up with `hubshift abandon --run {}` (the group keeps running {})",
            run.id, run.facts.from_version
        )
    } else {
        format!(
            "`hubshift resume --run {}` takes a new backup (look at the disk of {node} first), or `hubshift abandon --run {}`",
            run.id, run.id
        )
    };
    let lost_ms = run.facts.serving_seen_ms.or(run.facts.primary_stopped_ms);
    fall_back_to_primary(run, &what, lost_ms, &fix).await
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
    let client = run
        .db
        .connect_patiently(Duration::from_secs(run.inv.timeouts.database))
        .await?;
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
    let client = run
        .db
        .connect_patiently(Duration::from_secs(run.inv.timeouts.database))
        .await?;
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
    // When the schema was made before this attempt (a crash in between),
    // the window opened no later than this attempt began.
    let fresh = mode == StartMode::CreateAndStart && !r.already_running;
    run.apply(StepOutcome::SchemaCreated {
        at_ms: if fresh { now_ms() } else { before },
        fresh,
    });
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
               "carried_store_forward": r.carried_store_forward,
               "mode": if schema_there { "START" } else { "CREATE_AND_START" } }))
}

async fn await_handback(run: &mut Run, primary: &str, secondaries: &[String]) -> Result<Value> {
    let p = run.agent(primary)?.clone();
    let olds: Vec<Agent> = secondaries
        .iter()
        .map(|s| run.agent(s).cloned())
        .collect::<Result<_>>()?;
    let back = hand_back(
        &p,
        &olds,
        run.jdbc.expose(),
        &run.inv.timeouts,
        run.facts.primary_active_ms,
        &run.out,
    )
    .await?;
    let stopped_by_us = back.stopped_by_us.clone();
    run.apply(StepOutcome::HandedBack {
        primary: primary.to_string(),
        down: back.down,
        stopped_by_hubshift: back.stopped_by_us,
        shutdown_timeout_secs: run.inv.timeouts.secondary_shutdown,
        primary_active_ms: back.primary_active_ms,
    });
    let window = run
        .facts
        .windows()
        .into_iter()
        .rev()
        .find(|w| w.window == 2);
    Ok(
        json!({ "stopped_by_controller": stopped_by_us, "window_ms": window.map(|w| w.duration_ms) }),
    )
}

/// What the hand-back to the upgraded primary observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandBack {
    /// Every old secondary with the Unix ms it was seen down, or when
    /// hubshift asked it to stop.
    pub down: Vec<(String, u64)>,
    /// The old secondaries hubshift had to stop.
    pub stopped_by_us: Vec<String>,
    /// Unix ms: the upgraded primary was (first) seen active.
    pub primary_active_ms: u64,
}

/// Waits until the upgraded `primary` is active and every old secondary is
/// down. An old secondary shuts itself down on the new schema; one that
/// has not within the shutdown timeout, or is still running once the
/// primary is active, is stopped — never two active nodes for longer than
/// a poll. A primary that ends while starting is started again a few
/// times. `primary_active_ms` is what an earlier attempt already saw.
pub async fn hand_back(
    primary: &Agent,
    olds: &[Agent],
    jdbc: &str,
    timeouts: &TimeoutsSection,
    primary_active_ms: Option<u64>,
    out: &Output,
) -> Result<HandBack> {
    let p = primary;
    let primary = &p.node;
    let shutdown_timeout = Duration::from_secs(timeouts.secondary_shutdown);
    let start_timeout = Duration::from_secs(timeouts.start);
    let stop_timeout = Duration::from_secs(timeouts.stop);
    let first = p.status().await?;
    if !is_running(&first) {
        // The primary ended after its start (or a crash left it stopped):
        // the new schema is there, so `start` is what is left to do.
        out.human(&format!(
            "  {primary} is {}: starting it again",
            state_name(&first)
        ));
        p.start(StartMode::Start, primary, jdbc, start_timeout)
            .await?;
    }
    let began = Instant::now();
    let mut restarts = 0;
    let mut down: Vec<Option<u64>> = vec![None; olds.len()];
    let mut stopped_by_us = Vec::new();
    let mut primary_active: Option<u64> = primary_active_ms;
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
            out.human(&format!(
                "  {primary} is {}: starting it again in {}s ({restarts}/{PRIMARY_RESTARTS})",
                state_name(&ps),
                pause.as_secs()
            ));
            tokio::time::sleep(pause).await;
            p.start(StartMode::Start, primary, jdbc, start_timeout)
                .await?;
            continue;
        }
        if primary_active.is_none() && role_name(&ps) == "active" {
            primary_active = Some(now_ms());
        }
        if let Some(active_ms) = primary_active
            && down.iter().all(Option::is_some)
        {
            return Ok(HandBack {
                down: olds
                    .iter()
                    .zip(down)
                    .filter_map(|(a, d)| d.map(|d| (a.node.clone(), d)))
                    .collect(),
                stopped_by_us,
                primary_active_ms: active_ms,
            });
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
    Ok(json!({ "pid": r.pid, "carried_store_forward": r.carried_store_forward }))
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
    run.apply(StepOutcome::StandbyAgain { at_ms: now_ms() });
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

    /// The never-two-actives logic against fake agents, under tokio's
    /// paused clock: the takeover, fallback and shutdown timeouts (minutes
    /// of virtual time) pass in milliseconds.
    mod never_two_actives {
        use super::super::*;
        use crate::testing::fake_agent::{FakeGroup, Hub, OnNewSchema, Takeover};
        use hubshift_common::pb::{HubRole, HubState};
        use tonic::Code;

        const RPC: Duration = Duration::from_secs(30);

        fn timeouts() -> TimeoutsSection {
            TimeoutsSection::default()
        }

        fn quiet() -> Output {
            Output::with_bars(true, false)
        }

        async fn refused(g: &FakeGroup, secondaries: &[&str]) -> String {
            let p = g.agent("p", RPC);
            let others: Vec<Agent> = secondaries.iter().map(|n| g.agent(n, RPC)).collect();
            let e = stop_primary_if_safe(&p, &others, Duration::from_secs(60))
                .await
                .expect_err("the stop must be refused");
            assert_eq!(g.calls("p", "Stop"), 0, "the primary was asked to stop");
            assert!(
                g.hub("p").expect("p").is_serving(),
                "the primary no longer serves"
            );
            e.to_string()
        }

        #[tokio::test(start_paused = true)]
        async fn the_primary_is_not_stopped_without_a_live_standby() {
            let cases: [(&str, Hub, &str); 4] = [
                ("stopped", Hub::stopped("1.0"), "its hub is stopped"),
                (
                    "frozen",
                    Hub::standby("1.0").frozen(),
                    "its hub process is frozen",
                ),
                (
                    "unknown role",
                    Hub::standby("1.0").role(HubRole::Unknown),
                    "its role is unknown, not standby",
                ),
                (
                    "active too",
                    Hub::active("1.0"),
                    "its role is active, not standby",
                ),
            ];
            for (case, secondary, reason) in cases {
                let g = FakeGroup::new()
                    .with("p", Hub::active("1.0"))
                    .with("s", secondary);
                let e = refused(&g, &["s"]).await;
                assert!(
                    e.contains("refusing to stop the active primary p"),
                    "{case}: {e}"
                );
                assert!(e.contains(&format!("s: {reason}")), "{case}: {e}");
                assert!(e.contains("nothing was changed"), "{case}: {e}");
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_secondary_whose_agent_fails_does_not_count_as_ready() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"));
            g.fail("s", "Status", Code::PermissionDenied, None);
            let e = refused(&g, &["s"]).await;
            assert!(
                e.contains("s: agent of s: Status failed (PermissionDenied)"),
                "{e}"
            );
            // A hanging agent is given up on after its retries: no answer
            // is no standby either.
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"));
            g.hang("s", "Status", None);
            let e = refused(&g, &["s"]).await;
            assert!(e.contains("DeadlineExceeded"), "{e}");
        }

        #[tokio::test(start_paused = true)]
        async fn one_live_standby_among_several_is_enough() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s1", Hub::standby("1.0").frozen())
                .with("s2", Hub::standby("1.0"));
            let others = [g.agent("s1", RPC), g.agent("s2", RPC)];
            let r = stop_primary_if_safe(&g.agent("p", RPC), &others, Duration::from_secs(60))
                .await
                .expect("stop");
            assert!(r.was_running && !r.killed);
            assert_eq!(g.hub("p").expect("p").state, HubState::Stopped);
        }

        #[tokio::test(start_paused = true)]
        async fn a_primary_that_is_no_longer_active_is_stopped_without_asking() {
            // A repeat after a crash: the primary is down already and the
            // secondary took over; asking for a standby would refuse.
            let g = FakeGroup::new()
                .with("p", Hub::stopped("1.0"))
                .with("s", Hub::active("1.0"));
            let r = stop_primary_if_safe(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                Duration::from_secs(60),
            )
            .await
            .expect("stop");
            assert!(!r.was_running);
            assert_eq!(g.calls("s", "Status"), 0);
        }

        async fn stop_p(g: &FakeGroup) {
            stop_primary_if_safe(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                Duration::from_secs(60),
            )
            .await
            .expect("stop");
        }

        #[tokio::test(start_paused = true)]
        async fn the_takeover_wait_ends_when_the_standby_is_active() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::After(Duration::from_secs(10)));
            stop_p(&g).await;
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            assert!(
                matches!(&r, TakeoverWait::Active { node, .. } if node == "s"),
                "{r:?}"
            );
            let waited = began.elapsed();
            assert!(
                waited >= Duration::from_secs(10) && waited <= Duration::from_secs(10) + POLL,
                "waited {waited:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn when_nobody_takes_over_the_old_primary_serves_again() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::Never);
            stop_p(&g).await;
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            let TakeoverWait::TimedOut(why) = r else {
                panic!("expected a timeout, got {r:?}");
            };
            assert!(
                why.contains("no secondary became active within 120s (s standby)"),
                "{why}"
            );
            assert!(began.elapsed() >= Duration::from_secs(120));
            // The fallback: the untouched old primary is started again and
            // is active; the standby stays standby.
            let p = g.agent("p", RPC);
            start_unless_running(&p, "jdbc", &timeouts())
                .await
                .expect("start");
            await_active_again(&p, &timeouts()).await.expect("active");
            assert!(g.hub("p").expect("p").is_serving());
            assert_eq!(g.hub("s").expect("s").role, HubRole::Standby);
            assert_eq!(g.calls("p", "Start"), 1);
            assert_eq!(g.split_brain(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn the_fallback_does_not_start_a_primary_that_runs() {
            let g = FakeGroup::new().with("p", Hub::active("1.0"));
            let p = g.agent("p", RPC);
            start_unless_running(&p, "jdbc", &timeouts())
                .await
                .expect("start");
            await_active_again(&p, &timeouts()).await.expect("active");
            assert_eq!(g.calls("p", "Start"), 0);
        }

        #[tokio::test(start_paused = true)]
        async fn the_fallback_fails_when_the_old_primary_ends_while_starting() {
            let g = FakeGroup::new().with("p", Hub::stopped("1.0"));
            let p = g.agent("p", RPC);
            start_unless_running(&p, "jdbc", &timeouts())
                .await
                .expect("start");
            g.set("p", |h| {
                h.state = HubState::Exited;
                h.exit_code = Some(1);
            });
            let e = await_active_again(&p, &timeouts())
                .await
                .expect_err("ended");
            assert!(
                e.to_string()
                    .contains("p ended while starting (exited (code 1))"),
                "{e}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_wait_with_no_secondary_running_ends_early() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::Never);
            stop_p(&g).await;
            // The secondary crashes right after the primary stopped.
            g.set("s", |h| h.state = HubState::Exited);
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            assert!(
                matches!(&r, TakeoverWait::NoneRunning(why) if why.contains("no secondary is running")),
                "{r:?}"
            );
            assert!(
                began.elapsed() < Duration::from_secs(1),
                "{:?}",
                began.elapsed()
            );
        }

        /// The hubs' own takeover time in these tests.
        const HUB_T: Duration = Duration::from_secs(10);

        #[tokio::test(start_paused = true)]
        async fn a_secondary_frozen_after_the_stop_costs_the_hubs_takeover_time_not_the_timeout() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::After(Duration::from_secs(10)));
            stop_p(&g).await;
            // Frozen right after the stop's readiness check.
            g.set("s", |h| h.frozen = true);
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            let TakeoverWait::NoneRunning(why) = &r else {
                panic!("expected a fallback before the timeout, got {r:?}");
            };
            assert!(why.contains("s standby, frozen"), "{why}");
            assert!(why.contains("timeouts.hub_takeover"), "{why}");
            let waited = began.elapsed();
            assert!(
                waited >= HUB_T + TAKEOVER_MARGIN && waited <= HUB_T + TAKEOVER_MARGIN + 2 * POLL,
                "waited {waited:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_secondary_that_thaws_within_the_hubs_takeover_time_takes_over() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::After(Duration::from_secs(4)));
            stop_p(&g).await;
            g.set("s", |h| h.frozen = true);
            let thaw = {
                let g = g.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    g.set("s", |h| h.frozen = false);
                })
            };
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            thaw.await.expect("thaw");
            assert!(
                matches!(&r, TakeoverWait::Active { node, .. } if node == "s"),
                "{r:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn an_unanswering_secondary_gets_the_whole_timeout() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"));
            stop_p(&g).await;
            g.hang("s", "Status", None);
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            assert!(matches!(r, TakeoverWait::TimedOut(_)), "{r:?}");
        }

        /// The group after HA `create` on the upgraded primary `p`, with
        /// the old secondary `s` active since it took over.
        async fn created(on_new_schema: OnNewSchema, start_delay: Duration) -> FakeGroup {
            let g = FakeGroup::new()
                .with("p", Hub::stopped("2.0"))
                .with("s", Hub::active("1.0"))
                .on_new_schema(on_new_schema)
                .start_delay(start_delay);
            g.agent("p", RPC)
                .start(
                    StartMode::CreateAndStart,
                    "p",
                    "jdbc",
                    Duration::from_secs(300),
                )
                .await
                .expect("create and start");
            g
        }

        #[tokio::test(start_paused = true)]
        async fn an_old_secondary_that_shuts_itself_down_is_left_alone() {
            let g = created(OnNewSchema::ShutDown, Duration::from_secs(2)).await;
            let back = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect("hand back");
            assert!(back.stopped_by_us.is_empty());
            assert_eq!(back.down.len(), 1);
            assert_eq!(g.calls("s", "Stop"), 0);
            assert!(g.hub("p").expect("p").is_serving());
            assert_eq!(g.split_brain(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn an_old_secondary_still_active_with_the_upgraded_primary_is_stopped_within_a_poll()
        {
            let g = created(OnNewSchema::KeepRunning, Duration::from_secs(2)).await;
            let back = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect("hand back");
            assert_eq!(back.stopped_by_us, ["s"]);
            assert!(!g.hub("s").expect("s").is_running());
            assert!(g.hub("p").expect("p").is_serving());
            let split = g.split_brain();
            assert!(split <= POLL, "two actives for {split:?}");
        }

        #[tokio::test(start_paused = true)]
        async fn an_old_secondary_is_stopped_after_the_shutdown_timeout_before_the_primary_is_active()
         {
            // The upgraded primary takes longer to start than the old
            // secondary is given to shut itself down.
            let g = created(OnNewSchema::KeepRunning, Duration::from_secs(90)).await;
            let began = Instant::now();
            let back = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect("hand back");
            assert_eq!(back.stopped_by_us, ["s"]);
            assert!(began.elapsed() >= Duration::from_secs(90));
            assert_eq!(g.split_brain(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn a_primary_that_cannot_be_started_again_fails_the_hand_back() {
            let g = created(OnNewSchema::ShutDown, Duration::from_secs(2)).await;
            g.fail("p", "Start", Code::FailedPrecondition, None);
            g.set("p", |h| h.state = HubState::Exited);
            let e = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect_err("no primary");
            assert!(
                e.to_string().contains("Start failed (FailedPrecondition)"),
                "{e}"
            );
            assert_eq!(g.calls("p", "Start"), 2, "the create, then one start again");
        }
    }
}
