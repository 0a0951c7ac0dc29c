//! Preflight, by the kind of run: what is looked at before anything
//! changes — the upgrade's readiness checks; for a rollback the same
//! readiness as far as a half-done upgrade allows, the old runtime staged,
//! and the backup read back; for a resume every agent reachable — printed
//! one finding a line.

use super::open::Locked;
use crate::agents::Agent;
use crate::exit::Refused;
use crate::facts::RunFacts;
use crate::output::Output;
use crate::readiness::{self, Finding, Observed, Target};
use anyhow::Result;
use std::collections::HashMap;
use std::time::Duration;

/// What preflight found, and the agents it reached.
pub struct Checked {
    /// Connected agents by node.
    pub agents: HashMap<String, Agent>,
    /// Every finding, blocking or not.
    pub findings: Vec<Finding>,
    /// The version the first reachable node runs.
    pub from_version: String,
    /// What the agents and the database showed.
    pub observed: Observed,
}

/// The upgrade's preflight of a locked group.
pub async fn upgrade(locked: &Locked, target: &Target) -> Checked {
    let (agents, observed) =
        crate::observe::observe_on(&locked.inventory, &locked.group, &locked.client).await;
    let findings = readiness::preflight(&observed, target);

    let from_version = observed
        .nodes
        .iter()
        .find_map(|n| n.status.as_ref().ok().map(|f| f.active_runtime.clone()))
        .unwrap_or_default();
    Checked {
        agents,
        findings,
        from_version,
        observed,
    }
}

/// The rollback's preflight of upgrade run `run` (whose facts are
/// `original`): readiness as far as a half-done upgrade allows, and — when
/// nothing else refuses — the backup read back on the primary's host and
/// its controller-side copy checked.
pub async fn rollback(locked: &Locked, original: &RunFacts, run: &str) -> Checked {
    let (agents, observed) =
        crate::observe::observe_on(&locked.inventory, &locked.group, &locked.client).await;
    let mut findings = readiness::rollback_preflight(&observed, &original.from_version);
    if findings.iter().all(|f| !f.blocking) {
        let primary = locked.group.primary().name.clone();
        if let Some(agent) = agents.get(&primary) {
            let timeout = Duration::from_secs(locked.inventory.timeouts.backup);
            let health = crate::backup_check::check(agent, original, timeout).await;
            findings.push(health.finding(&primary, run, original));
        }
    }

    Checked {
        agents,
        findings,
        from_version: original.version.clone(),
        observed,
    }
}

/// What a resume needs before it goes on: every agent.
pub struct Reached {
    /// Connected agents by node.
    pub agents: HashMap<String, Agent>,
    /// The nodes whose agents do not answer, with why.
    pub unreachable: Vec<String>,
}

/// The resume's preflight: every agent must answer (the steps re-observe
/// everything else as they go).
pub async fn resume(locked: &Locked) -> Reached {
    let (agents, observed) = crate::observe::observe(&locked.inventory, &locked.group, None).await;
    let unreachable = observed
        .nodes
        .iter()
        .filter_map(|n| n.status.as_ref().err().cloned())
        .collect();
    Reached {
        agents,
        unreachable,
    }
}

/// Refused (exit 3) when some finding blocks; nothing was changed.
pub fn refuse_on_blocking(findings: &[Finding]) -> Result<()> {
    let blocking = findings.iter().filter(|f| f.blocking).count();
    if blocking > 0 {
        return Err(Refused(format!(
            "preflight found {blocking} problem(s); nothing was changed"
        ))
        .into());
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
