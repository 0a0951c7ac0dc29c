//! Fetching a backup to the controller's side, so a copy survives the loss
//! of the primary's host. Written to a temp file, checked, then renamed.

use crate::agents::Agent;
use crate::output::Output;
use anyhow::{Context, Result, ensure};
use hubshift_common::digest::StreamDigest;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Streams backup `id` into `dir/<id>.tar.gz`, checking its SHA-256.
pub async fn fetch(
    agent: &Agent,
    id: &str,
    sha256: &str,
    dir: &Path,
    size: u64,
    out: &Output,
    timeout: Duration,
) -> Result<PathBuf> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating backup copy directory {}", dir.display()))?;
    let target = dir.join(format!("{id}.tar.gz"));
    if target.exists()
        && let Ok((have, _)) = hubshift_common::digest::sha256_file(&target)
        && have == sha256
    {
        return Ok(target);
    }
    let tmp = dir.join(format!(".{id}.tar.gz.partial"));
    let result = tokio::time::timeout(timeout, async {
        let mut stream = agent.fetch_backup(id).await?;
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut digest = StreamDigest::new();
        let bar = out.bytes_bar(size, &format!("fetch backup from {}", agent.node));
        while let Some(chunk) = stream.next().await? {
            digest.update(&chunk);
            bar.inc(chunk.len() as u64);
            file.write_all(&chunk).await?;
        }
        bar.finish_and_clear();
        file.sync_all().await?;
        let got = digest.finish();
        ensure!(
            got == sha256,
            "fetched backup has SHA-256 {got}, expected {sha256}"
        );
        Ok::<(), anyhow::Error>(())
    })
    .await;
    let outcome = match result {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "fetching the backup took longer than {}s",
            timeout.as_secs()
        )),
    };
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, &target)
        .await
        .with_context(|| format!("moving the backup copy to {}", target.display()))?;
    Ok(target)
}
