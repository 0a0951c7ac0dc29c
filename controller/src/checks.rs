//! The inventory's check command: does an upgraded group really serve?
//! Run after each group's upgrade and repeatedly while a canary soaks; a
//! non-zero exit (or a timeout) fails the group and says how to roll back.

use crate::inventory::{ChecksSection, Group};
use crate::run::context::Run;
use anyhow::Result;
use hubshift_common::redact::redact;
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

/// What one check run found.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Exit 0 within the timeout.
    pub passed: bool,
    /// Exit status or "timed out after …", and the output's last lines.
    pub detail: String,
}

/// A group's check failed: the run is done, the group is not healthy.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// Runs `checks` for `group` at `version` with `active` serving.
pub async fn run_check(
    checks: &ChecksSection,
    group: &Group,
    version: &str,
    active: &str,
    fleet: Option<&str>,
) -> CheckResult {
    let Some((program, args)) = checks.command.split_first() else {
        return CheckResult {
            passed: false,
            detail: "no command".into(),
        };
    };
    let nodes: Vec<&str> = group.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(&checks.env)
        .env("HUBSHIFT_GROUP", &group.name)
        .env("HUBSHIFT_VERSION", version)
        .env("HUBSHIFT_NODES", nodes.join(","))
        .env("HUBSHIFT_ACTIVE_NODE", active)
        .env("HUBSHIFT_FLEET", fleet.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CheckResult {
                passed: false,
                detail: format!("cannot run {program}: {e}"),
            };
        }
    };
    let timeout = Duration::from_secs(checks.timeout_secs);
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => CheckResult {
            passed: false,
            detail: format!("{program} timed out after {}s", checks.timeout_secs),
        },
        Ok(Err(e)) => CheckResult {
            passed: false,
            detail: format!("waiting for {program}: {e}"),
        },
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            let status = match output.status.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_string(),
            };
            CheckResult {
                passed: output.status.success(),
                detail: redact(&if tail.is_empty() {
                    status
                } else {
                    format!("{status}: {tail}")
                }),
            }
        }
    }
}

/// Runs the group's check after its run finished, if one is configured;
/// an error naming the rollback when it fails.
pub async fn after_upgrade(run: &mut Run) -> Result<()> {
    let Some(checks) = &run.group().checks else {
        return Ok(());
    };
    let active = run.group().primary().name.clone();
    let r = run_check(
        checks,
        run.group(),
        &run.facts().version,
        &active,
        run.facts().fleet.as_deref(),
    )
    .await;
    report(run, &r);
    run.note(
        &active,
        crate::timeline::Kind::Check,
        json!({ "passed": r.passed, "detail": r.detail }),
    );
    run.flush_timeline().await;
    if r.passed {
        Ok(())
    } else {
        Err(CheckFailed(format!(
            "the check of group {} failed after run {} ({}); roll it back with: hubshift rollback --run {}",
            run.group().name, run.id(), r.detail, run.id()
        ))
        .into())
    }
}

fn report(run: &Run, r: &CheckResult) {
    run.out().event(
        if r.passed {
            "check_passed"
        } else {
            "check_failed"
        },
        json!({ "run": run.id(), "detail": r.detail }),
        || {
            format!(
                "check of group {}: {} ({})",
                run.group().name,
                if r.passed { "passed" } else { "FAILED" },
                r.detail
            )
        },
    );
}
