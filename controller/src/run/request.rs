//! What a run is asked to do: the target version, the runtime archive
//! (hashed here, checked against the published digest), the steps to
//! park before, and the refusals of bad input before anything changes.

use crate::exit::UsageError;
use crate::inventory::Group;
use crate::plan;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A runtime archive on this machine, hashed.
#[derive(Debug, Clone)]
pub struct ArchiveInfo {
    /// Its absolute path.
    pub path: PathBuf,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// What it declares of its own version (a tar.gz, read by
    /// [`read_declared`]).
    pub declared: Option<hubshift_common::declared::InArchive>,
}

/// Hashes the archive at `path`; a usage error when it cannot be read.
pub async fn read_archive(path: &Path) -> Result<ArchiveInfo> {
    let meta = std::fs::metadata(path)
        .map_err(|e| UsageError(format!("runtime archive {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(UsageError(format!("runtime archive {} is not a file", path.display())).into());
    }
    let owned = path.to_path_buf();
    let (sha256, bytes) =
        tokio::task::spawn_blocking(move || hubshift_common::digest::sha256_file(&owned))
            .await
            .context("hashing task ended abnormally")?
            .map_err(|e| UsageError(format!("reading runtime archive {}: {e}", path.display())))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(ArchiveInfo {
        path,
        sha256,
        bytes,
        declared: None,
    })
}

/// The archive a plan or an upgrade is asked to stage, hashed and checked
/// before anything else: against the published digest, against the
/// inventory's trusted keys, and what it declares of its own version.
pub async fn checked_archive(
    out: &crate::output::Output,
    trust: &crate::trust::Trust,
    path: &Path,
    published: Option<&str>,
    signature: Option<&Path>,
) -> Result<ArchiveInfo> {
    let mut archive = read_archive(path).await?;
    check_published_digest(&archive, published)?;
    check_signature(out, trust, &archive, signature).await?;
    read_declared(&mut archive).await;
    Ok(archive)
}

/// Reads what a tar.gz runtime archive declares of its own version, so
/// that plan and preflight can refuse a mislabelled archive before
/// anything changes. Other formats are read by the agent when it stages
/// them (their declaration stays None here).
async fn read_declared(archive: &mut ArchiveInfo) {
    if crate::steps::archive_format(&archive.path) != crate::hub::RuntimeFormat::TarGz {
        return;
    }
    let path = archive.path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        hubshift_common::declared::in_tar_gz(std::io::BufReader::with_capacity(1 << 20, file))
    })
    .await;
    archive.declared = match read {
        Ok(Ok(d)) => Some(d),
        Ok(Err(e)) => {
            tracing::warn!(archive = %archive.path.display(), error = %e, "cannot list the runtime archive; the agents check it when they stage it");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing the runtime archive ended abnormally");
            None
        }
    };
}

/// Refuses an archive whose digest is not the published one.
fn check_published_digest(archive: &ArchiveInfo, published: Option<&str>) -> Result<()> {
    let Some(published) = published else {
        return Ok(());
    };
    let published = published.trim().to_ascii_lowercase();
    if published.len() != 64 || !published.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UsageError(format!(
            "--sha256: {published:?} is not a SHA-256 (64 hex digits)"
        ))
        .into());
    }
    if archive.sha256 != published {
        return Err(UsageError(format!(
            "runtime archive {} has SHA-256 {}, not the published {published}: the file is damaged or not the release; nothing was changed",
            archive.path.display(),
            archive.sha256
        ))
        .into());
    }
    Ok(())
}

/// Checks the archive's signature against the inventory's `[trust]`
/// keys, before anything is staged; a usage error (exit 2) naming the key
/// when it is unsigned where one is required, signed by another key, or
/// does not match.
async fn check_signature(
    out: &crate::output::Output,
    trust: &crate::trust::Trust,
    archive: &ArchiveInfo,
    signature: Option<&Path>,
) -> Result<()> {
    let (trust, path, sig) = (
        trust.clone(),
        archive.path.clone(),
        signature.map(Path::to_path_buf),
    );
    let verified = tokio::task::spawn_blocking(move || trust.verify(&path, sig.as_deref()))
        .await
        .context("signature check ended abnormally")?
        .map_err(|e| UsageError(e.to_string()))?;
    if let Some(v) = verified {
        out.event(
            "signature_verified",
            serde_json::json!({ "key_id": v.key_id, "trusted_comment": v.trusted_comment }),
            || {
                format!(
                    "Runtime archive signed by trusted key {} ({})",
                    v.key_id, v.trusted_comment
                )
            },
        );
    }
    Ok(())
}

/// Refuses a version that cannot name a runtime directory.
pub fn check_version(version: &str) -> Result<()> {
    hubshift_common::names::validate_name("runtime version", version)
        .map_err(|e| UsageError(format!("--version: {e}")))?;
    Ok(())
}

/// Refuses `--pause-before` names that are not steps a run of `group` can
/// be parked before.
pub fn check_pause_before(group: &Group, pause_before: &[String]) -> Result<()> {
    let pausable = plan::pausable_step_names(&plan::build_plan(group));
    for p in pause_before {
        if !pausable.contains(&p.as_str()) {
            return Err(UsageError(format!(
                "--pause-before {p}: not a step a run can be parked before (one of: {})",
                pausable.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

/// What an upgrade of one group is asked to do.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// Target version.
    pub version: String,
    /// The archive to stage.
    pub archive: ArchiveInfo,
    /// Steps to park before.
    pub pause_before: Vec<String>,
    /// The fleet this run belongs to.
    pub fleet: Option<String>,
    /// A target older than what runs is allowed.
    pub allow_downgrade: bool,
}
