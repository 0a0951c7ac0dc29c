//! The way back before anything irreversible: the old primary started again
//! when nobody serves, and the check that the secondary still does.

use crate::agents::{Agent, is_running, role_name, state_name};
use crate::clock::now_ms;
use crate::facts::StepOutcome;
use crate::hub::StartMode;
use crate::inventory::TimeoutsSection;
use crate::run::context::Run;
use anyhow::{Result, bail};
use serde_json::Value;
use std::time::Duration;
// The tokio clock (the system's monotonic clock in production) so that
// unit tests under paused time wait out timeouts in no time.
use super::wait::{POLL, poll_until};
use tokio::time::Instant;

/// A step gave up and undid the hand-over it was part of: the old primary
/// was started again and serves. Nothing irreversible had happened; the
/// executor puts the hand-over's steps back to pending so that a resume
/// starts again at the primary's stop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FellBack(pub String);

/// The fallback's first half: starts the old primary again on its
/// untouched runtime, unless it runs.
pub async fn start_unless_running(
    primary: &Agent,
    jdbc: &str,
    timeouts: &TimeoutsSection,
) -> Result<()> {
    let status = primary.status_brief().await?;
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
                let s = agent.status_brief().await?;
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
pub(super) async fn fall_back_to_primary(
    run: &mut Run,
    why: &str,
    lost_ms: Option<u64>,
    fix: &str,
) -> Result<Value> {
    let primary = run.group().primary().name.clone();
    let agent = run.agent(&primary)?.clone();
    run.out().human(&format!(
        "  {why}: starting {primary} again on its untouched runtime"
    ));
    let started = start_unless_running(&agent, run.jdbc().expose(), &run.inv().timeouts).await;
    let active = match started {
        Ok(()) => await_active_again(&agent, &run.inv().timeouts).await,
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

/// How long an agent that does not answer is asked again before the node
/// counts as not serving.
pub(super) const UNANSWERED_PATIENCE: Duration = Duration::from_secs(3);

/// From the takeover until the schema is dropped the group serves on the
/// secondary that took over. Before each of those steps it must be seen
/// serving — its agent answers now, its hub runs, is active and not
/// frozen. Otherwise (exited, no longer active, frozen, or its host does
/// not answer within [`UNANSWERED_PATIENCE`]) nothing irreversible has
/// happened yet: fall back to the old primary instead of going on with a
/// group that may produce nothing.
pub(super) async fn ensure_still_serving(run: &mut Run) -> Result<()> {
    let Some(node) = run.facts().takeover_node.clone() else {
        // A rollback whose secondaries were all down: nobody serves anyway.
        return Ok(());
    };
    let agent = run.agent(&node)?.clone();
    let asked = Instant::now();
    let why = loop {
        match agent.status_brief().await {
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
    let lost_ms = run
        .facts()
        .serving_seen_ms
        .or(run.facts().primary_stopped_ms);
    let fix = format!(
        "Once {node} serves again, `hubshift resume --run {}` starts again at the primary's stop with a new backup; or `hubshift abandon --run {}`",
        run.id(),
        run.id()
    );
    fall_back_to_primary(run, &why, lost_ms, &fix)
        .await
        .map(|_| ())
}
