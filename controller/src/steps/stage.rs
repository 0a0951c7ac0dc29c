//! Staging: the runtime archive uploaded and unpacked beside the current
//! one on every host, before any outage.

use crate::agents::Agent;
use crate::facts::RunFacts;
use anyhow::{Context, Result, bail, ensure};
use hubshift_common::pb::{self};
use serde_json::{Value, json};
use std::path::Path;
use tokio::io::AsyncReadExt;

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
    let declared = after.staged.iter().find(|d| d.version == facts.version);
    Ok(json!({
        "already_installed": response.already_installed, "sha256": response.sha256,
        "declared_version": declared.map(|d| d.declared_version.clone()),
        "declared_by": declared.map(|d| d.declared_by.clone()),
    }))
}

/// How far the producer of an upload got.
pub(super) enum Upload {
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
pub(super) fn connection_lost(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
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
