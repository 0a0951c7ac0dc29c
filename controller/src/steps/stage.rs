//! Staging: the runtime archive uploaded and unpacked beside the current
//! one on every host, before any outage.

use crate::agents::Agent;
use crate::agents::Sent;
use crate::facts::RunFacts;
use crate::hub::{RuntimeFormat, RuntimeUpload};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::path::Path;

/// Uploads and unpacks the runtime beside the current one. Idempotent: the
/// agent answers `already_installed` for the same archive.
pub async fn stage_runtime(
    agent: &Agent,
    file: Option<&Path>,
    facts: &RunFacts,
    bar: indicatif::ProgressBar,
) -> Result<Value> {
    // With the archive at hand the upload answers for itself (the agent
    // says `already_installed`); without it, only a staged runtime will do.
    if file.is_none()
        && agent
            .status()
            .await?
            .staged_runtimes
            .contains(&facts.version)
    {
        return Ok(json!({ "already_staged": true }));
    }
    let file = file.context(
        "the runtime archive is needed to stage it: pass --runtime FILE (the same archive, checked by SHA-256)",
    )?;
    let reader = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening runtime archive {}", file.display()))?;
    let upload = RuntimeUpload {
        version: facts.version.clone(),
        sha256: facts.runtime_sha256.clone(),
        size_bytes: facts.runtime_bytes,
        format: archive_format(file),
    };
    let expected = facts.runtime_bytes;
    let reader_bar = bar.clone();
    let (response, sent) = agent
        .install_runtime(upload, reader, move |n| reader_bar.inc(n))
        .await;
    bar.finish_and_clear();
    let sent = sent.with_context(|| format!("reading the runtime archive {}", file.display()))?;
    if let Sent::All(sent) = sent {
        archive_unchanged(file, sent, expected).await?;
    }
    let response = match response {
        Ok(r) => r,
        Err(err) => {
            return Err(match sent {
                // The stream ended on the agent's side: that says nothing
                // about the file.
                Sent::CutOff(sent) if err.connection_lost() => {
                    anyhow::Error::new(err).context(format!(
                        "the connection to the agent of {} broke after {sent} of {expected} bytes of the runtime archive were sent",
                        agent.node
                    ))
                }
                Sent::CutOff(sent) => anyhow::Error::new(err).context(format!(
                    "the agent of {} refused the upload after {sent} of {expected} bytes",
                    agent.node
                )),
                Sent::All(_) => err.into(),
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
    let declared = after.staged.iter().find(|d| d.version == facts.version);
    Ok(json!({
        "already_installed": response.already_installed, "sha256": response.sha256,
        "declared_version": declared.map(|d| d.declared_version.clone()),
        "declared_by": declared.map(|d| d.declared_by.clone()),
    }))
}

/// An archive read to its end must have the size it was planned with:
/// otherwise the file changed under the upload (looked at again, so that
/// the message is true).
pub(super) async fn archive_unchanged(file: &Path, sent: u64, expected: u64) -> Result<()> {
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

/// The archive format by file name: `.zip`, `.tar` (a `docker save` image
/// for agents with the docker driver), else tar.gz.
pub fn archive_format(file: &std::path::Path) -> RuntimeFormat {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "zip" => RuntimeFormat::Zip,
        "tar" => RuntimeFormat::DockerImage,
        _ => RuntimeFormat::TarGz,
    }
}
