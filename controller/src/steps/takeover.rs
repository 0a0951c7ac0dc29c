//! The hand-over's start: the primary stopped only when a secondary can
//! take over, and the wait for one to do so.

use crate::agents::{Agent, is_running, role_name, state_name};
use crate::clock::now_ms;
use crate::facts::StepOutcome;
use crate::hub::HubStatus;
use crate::run::context::Run;
use anyhow::{Result, ensure};
use serde_json::{Value, json};
use std::time::Duration;
// The tokio clock (the system's monotonic clock in production) so that
// unit tests under paused time wait out timeouts in no time.
use super::fallback::fall_back_to_primary;
use super::wait::POLL;
use tokio::time::Instant;

/// Why `node` cannot take over right now, or `None` when it is a live
/// standby: running, its role probe says standby, and its process is not
/// frozen. Asked fresh, just before the primary is stopped.
pub(super) fn not_ready_to_take_over(s: &HubStatus) -> Option<String> {
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

/// The secondaries that may take over: every node of the group but `primary`.
pub(super) fn candidates(run: &Run, primary: &str) -> Vec<String> {
    run.group()
        .nodes
        .iter()
        .filter(|n| n.name != primary)
        .map(|n| n.name.clone())
        .collect()
}

pub(super) async fn stop_primary(run: &mut Run, node: &str) -> Result<Value> {
    let agent = run.agent(node)?.clone();
    let others: Vec<Agent> = candidates(run, node)
        .iter()
        .map(|c| run.agent(c).cloned())
        .collect::<Result<_>>()?;
    let stop = Duration::from_secs(run.inv().timeouts.stop);
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
    let before = primary.status_brief().await?;
    if is_running(&before) && role_name(&before) == "active" {
        // Look now, not at a log line from earlier.
        let mut why = Vec::new();
        let mut ready = false;
        for c in secondaries {
            match c.status_brief().await {
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
    let status = primary.status_brief().await?;
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

pub(super) async fn await_takeover(run: &mut Run, candidates: &[String]) -> Result<Value> {
    let agents: Vec<Agent> = candidates
        .iter()
        .map(|c| run.agent(c).cloned())
        .collect::<Result<_>>()?;
    let timeout = Duration::from_secs(run.inv().timeouts.takeover);
    let hub_takeover = Duration::from_secs(run.inv().timeouts.hub_takeover);
    let why = match wait_for_takeover(&agents, timeout, hub_takeover).await {
        TakeoverWait::Active { node, seen_ms } => {
            run.apply(StepOutcome::TookOver {
                node: node.clone(),
                at_ms: seen_ms,
            });
            let window = run
                .facts()
                .windows()
                .into_iter()
                .rev()
                .find(|w| w.window == 1);
            return Ok(json!({ "active": node, "window_ms": window.map(|w| w.duration_ms) }));
        }
        TakeoverWait::NoneRunning(why) if run.facts().rollback_of.is_some() => {
            // A rollback of a group whose secondaries are down (for
            // instance shut down by the new schema) has nobody to hand
            // over to: go on, the outage lasts until the restored primary
            // is active.
            run.apply(StepOutcome::NoTakeover { why: why.clone() });
            return Ok(json!({ "active": null, "no_takeover": why }));
        }
        TakeoverWait::NoneRunning(why) | TakeoverWait::TimedOut(why) => why,
    };
    let lost_ms = run.facts().primary_stopped_ms;
    let fix = format!(
        "Fix the secondary (see its hub log), then `hubshift resume --run {}` (starts again at the primary's stop) or `hubshift abandon --run {}`",
        run.id(),
        run.id()
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
            match a.status_brief().await {
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
