//! The group as it must be at the end of a run.

use super::secondary::start_if_down;
use super::wait::POLL;
use crate::agents::{Agent, is_running, role_name, state_name};
use crate::run::context::Run;
use anyhow::{Result, bail};
use std::time::Duration;
// The tokio clock (the system's monotonic clock in production) so that
// unit tests under paused time wait out timeouts in no time.
use tokio::time::Instant;

/// What keeps the group from being as it should be: every node running
/// `version` (a runtime that declares itself another version does not
/// count), exactly one active, the others standby.
pub(super) async fn group_problems(agents: &[Agent], version: &str) -> Result<Vec<String>> {
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
        } else if let Some(d) = s.staged.iter().find(|d| {
            d.version == version
                && !d.declared_version.is_empty()
                && !hubshift_common::declared::matches(&d.declared_version, version)
        }) {
            // The runtime switched to says it is another version.
            problems.push(format!(
                "{} runs runtime {version}, which declares itself {} ({})",
                a.node, d.declared_version, d.declared_by
            ));
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
    let nodes: Vec<String> = run.group().nodes.iter().map(|n| n.name.clone()).collect();
    for n in &nodes {
        start_if_down(run, n).await?;
    }
    let mut agents: Vec<Agent> = run.agent_list();
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    let deadline = Instant::now() + Duration::from_secs(run.inv().timeouts.standby_join.min(60));
    loop {
        let problems = group_problems(&agents, &run.facts().version).await?;
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
