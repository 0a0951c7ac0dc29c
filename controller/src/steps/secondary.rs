//! The secondaries follow: certificate store, start, standby.

use super::wait::poll_until;
use crate::agents::{is_running, role_name, state_name};
use crate::clock::now_ms;
use crate::facts::StepOutcome;
use crate::hub::{CertificateStore, StartMode};
use crate::run::context::Run;
use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};
use std::time::Duration;

pub(super) async fn copy_certificate(run: &mut Run, from: &str, to: &str) -> Result<Value> {
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
        .put_certificate(CertificateStore {
            content: cert.content,
            sha256: sha.clone(),
        })
        .await?;
    let after = dst.status().await?;
    ensure!(
        put == sha && after.certificate_sha256 == sha,
        "certificate store on {to} has SHA-256 {:?}, expected {sha}",
        after.certificate_sha256
    );
    Ok(json!({ "sha256": sha }))
}

pub(super) async fn start_secondary(run: &mut Run, node: &str) -> Result<Value> {
    let agent = run.agent(node)?.clone();
    let status = agent.status_brief().await?;
    if is_running(&status) {
        return Ok(json!({ "already_running": true }));
    }
    ensure!(
        status.active_runtime == run.facts().version,
        "{node} would start runtime {:?}, not {}",
        status.active_runtime,
        run.facts().version
    );
    let timeout = Duration::from_secs(run.inv().timeouts.start);
    let r = agent
        .start(StartMode::Start, node, run.jdbc().expose(), timeout)
        .await?;
    Ok(json!({ "pid": r.pid, "carried_store_forward": r.carried_store_forward }))
}

/// Starts `node` (HA `start`; the schema exists by now) when its hub is not
/// running: a hub that died after its start step, or that a crash left
/// stopped, is started again by the step that waits for it.
pub(super) async fn start_if_down(run: &mut Run, node: &str) -> Result<bool> {
    let agent = run.agent(node)?.clone();
    let s = agent.status_brief().await?;
    if is_running(&s) {
        return Ok(false);
    }
    ensure!(
        s.active_runtime == run.facts().version,
        "{node} is {} on runtime {:?}, not {}",
        state_name(&s),
        s.active_runtime,
        run.facts().version
    );
    run.out().human(&format!(
        "  {node} is {}: starting it again",
        state_name(&s)
    ));
    let timeout = Duration::from_secs(run.inv().timeouts.start);
    agent
        .start(StartMode::Start, node, run.jdbc().expose(), timeout)
        .await?;
    Ok(true)
}

pub(super) async fn await_standby(run: &mut Run, node: &str) -> Result<Value> {
    start_if_down(run, node).await?;
    let agent = run.agent(node)?.clone();
    let timeout = Duration::from_secs(run.inv().timeouts.standby_join);
    poll_until(timeout, &format!("{node} to become standby"), || {
        let agent = agent.clone();
        async move {
            let s = agent.status_brief().await?;
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
