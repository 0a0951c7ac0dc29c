//! The upgraded primary: switched, created and started, and the old
//! secondaries shut down before it serves.

use crate::agents::{Agent, is_running, role_name, state_name};
use crate::clock::now_ms;
use crate::facts::StepOutcome;
use crate::hub::StartMode;
use crate::inventory::TimeoutsSection;
use crate::output::Output;
use crate::run::context::Run;
use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};
use std::time::Duration;
// The tokio clock (the system's monotonic clock in production) so that
// unit tests under paused time wait out timeouts in no time.
use super::backup::require_verified_backup;
use super::wait::POLL;
use tokio::time::Instant;

/// How often the hand-over starts an upgraded primary again that ended
/// while starting, before it gives up.
pub(super) const PRIMARY_RESTARTS: u32 = 4;

pub(super) async fn activate(run: &mut Run, node: &str) -> Result<Value> {
    require_verified_backup(run)?;
    let agent = run.agent(node)?.clone();
    let before = agent.status_brief().await?;
    if before.active_runtime == run.facts().version {
        return Ok(json!({ "already_active": true }));
    }
    ensure!(
        !is_running(&before),
        "{node} runs ({}) — the runtime is switched only on a stopped hub",
        state_name(&before)
    );
    let r = agent.activate(&run.facts().version).await?;
    let after = agent.status_brief().await?;
    ensure!(
        after.active_runtime == run.facts().version,
        "{node} reports runtime {:?} after activating {}",
        after.active_runtime,
        run.facts().version
    );
    Ok(json!({ "previous": r.previous, "active": r.active }))
}

pub(super) async fn create_and_start(run: &mut Run, node: &str) -> Result<Value> {
    require_verified_backup(run)?;
    let agent = run.agent(node)?.clone();
    // Re-observe instead of trusting the journal: after a crash the new
    // schema may exist without a running hub (`create` done, `start` not),
    // or the agent may still be running the compound.
    let schema_there = run.schema_exists().await?;
    let mode = if schema_there {
        StartMode::Start
    } else {
        StartMode::CreateAndStart
    };
    let before = now_ms();
    let timeout = Duration::from_secs(run.inv().timeouts.start);
    // Start is idempotent on the agent: a running hub (or a compound still
    // in progress, which Start waits for) is answered `already_running`.
    let reconnects = run.journal_reconnects();
    let (r, mode) = match agent.start(mode, node, run.jdbc().expose(), timeout).await {
        Ok(r) => (r, mode),
        Err(e) => {
            // The hub's create and start give up at once on a database that
            // refuses connections (one restarting, say). Wait for it as the
            // journal does; when it had gone away meanwhile, ask once more.
            let there = run.schema_exists().await?;
            if run.journal_reconnects() == reconnects {
                return Err(e.into());
            }
            let mode = if there {
                StartMode::Start
            } else {
                StartMode::CreateAndStart
            };
            run.out().human(&format!(
                "  the database went away while {node} started; starting it again"
            ));
            let r = agent
                .start(mode, node, run.jdbc().expose(), timeout)
                .await?;
            (r, mode)
        }
    };
    // When the schema was made before this attempt (a crash in between),
    // the window opened no later than this attempt began.
    let fresh = mode == StartMode::CreateAndStart && !r.already_running;
    run.apply(StepOutcome::SchemaCreated {
        at_ms: if fresh { now_ms() } else { before },
        fresh,
    });
    ensure!(
        run.schema_exists().await?,
        "{node} started but schema {} was not created",
        run.facts().schema
    );
    let after = agent.status_brief().await?;
    ensure!(
        is_running(&after),
        "{node} is {} after its start; see its hub log on the host",
        state_name(&after)
    );
    ensure!(
        after.active_runtime == run.facts().version,
        "{node} runs runtime {:?}, not {}",
        after.active_runtime,
        run.facts().version
    );
    Ok(json!({ "pid": r.pid, "already_running": r.already_running,
               "carried_store_forward": r.carried_store_forward,
               "mode": if mode == StartMode::Start { "START" } else { "CREATE_AND_START" } }))
}

pub(super) async fn await_handback(
    run: &mut Run,
    primary: &str,
    secondaries: &[String],
) -> Result<Value> {
    let p = run.agent(primary)?.clone();
    let olds: Vec<Agent> = secondaries
        .iter()
        .map(|s| run.agent(s).cloned())
        .collect::<Result<_>>()?;
    let back = hand_back(
        &p,
        &olds,
        run.jdbc().expose(),
        &run.inv().timeouts,
        run.facts().primary_active_ms,
        run.out(),
    )
    .await?;
    let stopped_by_us = back.stopped_by_us.clone();
    run.apply(StepOutcome::HandedBack {
        primary: primary.to_string(),
        down: back.down,
        stopped_by_hubshift: back.stopped_by_us,
        shutdown_timeout_secs: run.inv().timeouts.secondary_shutdown,
        primary_active_ms: back.primary_active_ms,
    });
    let window = run
        .facts()
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
    let first = p.status_brief().await?;
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
            let s = a.status_brief().await?;
            if !is_running(&s) {
                down[i] = Some(now_ms());
            } else if began.elapsed() >= shutdown_timeout || primary_active.is_some() {
                // It did not see the new schema (another schema name, place or
                // credentials), or the upgraded primary is already active:
                // stop it now — never two active nodes for longer than a poll.
                let requested = now_ms();
                a.stop(stop_timeout).await?;
                let s = a.status_brief().await?;
                ensure!(!is_running(&s), "{} still runs after Stop", a.node);
                down[i] = Some(requested);
                stopped_by_us.push(a.node.clone());
            }
        }
        let ps = p.status_brief().await?;
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
