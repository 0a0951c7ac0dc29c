//! A delta and its base as one backup of record: the delta names its base
//! (id, SHA-256, size) and the paths deleted since, in two small files it
//! carries first, so GNU tar can apply the pair by hand (docs/backups.md)
//! and VerifyBackup and Restore follow it here.

use super::index::BaseIndex;
use crate::appdata;
use crate::config::Config;
use crate::error::{AgentError, Result};
use crate::places::backups_dir;
use flate2::read::MultiGzDecoder;
use hubshift_common::archive::{UnpackLimits, list_tar_gz, relative_depth, remove_tree};
use hubshift_common::digest::sha256_file;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path};

/// The delta's description of itself, its first entry.
pub const MANIFEST: &str = "hubshift-delta.json";
/// The paths deleted since the base, each ended by a NUL byte, its second.
pub const DELETED: &str = "hubshift-delta.deleted";

/// What a delta says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of this file.
    pub format: u32,
    /// The base it applies to.
    pub base_id: String,
    /// The base archive's SHA-256 (hex).
    pub base_sha256: String,
    /// The base archive's size.
    pub base_size: u64,
}

/// Writes the manifest and the deletion list as the archive's first entries.
pub fn write_head<W: Write>(
    builder: &mut tar::Builder<W>,
    manifest: &Manifest,
    deleted: &[String],
) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    let mut list = Vec::new();
    for d in deleted {
        list.extend_from_slice(d.as_bytes());
        list.push(0);
    }
    for (name, bytes) in [(MANIFEST, &json), (DELETED, &list)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, &bytes[..])?;
    }
    Ok(())
}

/// The manifest of the backup at `path` when it is a delta; `None` for a
/// full backup.
pub fn read_manifest(path: &Path, id: &str) -> Result<Option<Manifest>> {
    let file = fs::File::open(path).map_err(AgentError::io("cannot open", path))?;
    let unreadable = |e: &dyn std::fmt::Display| {
        AgentError::FailedPrecondition(format!("backup {id} is unreadable: {e}"))
    };
    let mut archive = tar::Archive::new(MultiGzDecoder::new(std::io::BufReader::new(file)));
    let mut entries = archive.entries().map_err(|e| unreadable(&e))?;
    let Some(first) = entries.next() else {
        return Ok(None);
    };
    let mut first = first.map_err(|e| unreadable(&e))?;
    if first.path_bytes().as_ref() != MANIFEST.as_bytes() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    first
        .by_ref()
        .take(1024 * 1024)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| unreadable(&e))?;
    hubshift_common::names::validate_name("base id", &manifest.base_id)?;
    Ok(Some(manifest))
}

/// The deletion list of a delta (its second entry).
fn read_deleted(path: &Path, id: &str) -> Result<Vec<String>> {
    let file = fs::File::open(path).map_err(AgentError::io("cannot open", path))?;
    let unreadable = |e: &dyn std::fmt::Display| {
        AgentError::FailedPrecondition(format!("backup {id} is unreadable: {e}"))
    };
    let mut archive = tar::Archive::new(MultiGzDecoder::new(std::io::BufReader::new(file)));
    for entry in archive.entries().map_err(|e| unreadable(&e))?.take(2) {
        let mut entry = entry.map_err(|e| unreadable(&e))?;
        if entry.path_bytes().as_ref() == DELETED.as_bytes() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| unreadable(&e))?;
            return Ok(bytes
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect());
        }
    }
    Err(unreadable(&"no deletion list"))
}

/// What VerifyBackup found of a delta's base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChecked {
    /// Its id.
    pub id: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// Checks a delta's base against what the delta names. The base was read
/// back in full when it was written; it is read again only when its file
/// changed since (or has no index to say so).
pub fn verify_base(cfg: &Config, id: &str, manifest: &Manifest) -> Result<BaseChecked> {
    let path = appdata::existing_backup(cfg, &manifest.base_id).map_err(|_| {
        AgentError::FailedPrecondition(format!(
            "backup {id} is a delta whose base {} is missing",
            manifest.base_id
        ))
    })?;
    let trusted = BaseIndex::load(&backups_dir(cfg), &manifest.base_id).is_ok_and(|index| {
        index.archive.sha256 == manifest.base_sha256 && index.archive_unchanged(&path).is_ok()
    });
    if !trusted {
        let (sha, size) = sha256_file(&path).map_err(AgentError::io("cannot read", &path))?;
        if !sha.eq_ignore_ascii_case(&manifest.base_sha256) || size != manifest.base_size {
            return Err(AgentError::FailedPrecondition(format!(
                "the base {} of backup {id} is not the one it was taken against (SHA-256 {sha}, expected {})",
                manifest.base_id, manifest.base_sha256
            )));
        }
        let file = fs::File::open(&path).map_err(AgentError::io("cannot open", &path))?;
        let limits = UnpackLimits {
            max_total_bytes: u64::MAX,
            max_entries: u64::MAX,
        };
        list_tar_gz(std::io::BufReader::with_capacity(256 * 1024, file), limits).map_err(|e| {
            AgentError::FailedPrecondition(format!(
                "the base {} of backup {id} is unreadable: {e}",
                manifest.base_id
            ))
        })?;
    }
    Ok(BaseChecked {
        id: manifest.base_id.clone(),
        sha256: manifest.base_sha256.clone(),
        size: manifest.base_size,
    })
}

/// Restores backup `id`: a full one as it is; a delta as its base, minus
/// the deletions, plus the delta, checked against the SHA-256 it names.
pub fn restore(cfg: &Config, id: &str, expected: &str) -> Result<String> {
    let path = appdata::existing_backup(cfg, id)?;
    let Some(manifest) = read_manifest(&path, id)? else {
        return appdata::restore(cfg, id, expected);
    };
    let (sha, _) = sha256_file(&path).map_err(AgentError::io("cannot read", &path))?;
    appdata::check_sha(&sha, expected)?;
    let base = appdata::existing_backup(cfg, &manifest.base_id)?;
    let (base_sha, _) = sha256_file(&base).map_err(AgentError::io("cannot read", &base))?;
    if !base_sha.eq_ignore_ascii_case(&manifest.base_sha256) {
        return Err(AgentError::FailedPrecondition(format!(
            "the base {} of backup {id} is not the one it was taken against (SHA-256 {base_sha}, expected {})",
            manifest.base_id, manifest.base_sha256
        )));
    }
    let staging = appdata::restore_staging_for(cfg)?;
    let file = fs::File::open(&base).map_err(AgentError::io("cannot open", &base))?;
    appdata::unpack_backup(file, staging.path(), &manifest.base_id)?;
    for rel in read_deleted(&path, id)? {
        delete_in(staging.path(), &rel, id)?;
    }
    let file = fs::File::open(&path).map_err(AgentError::io("cannot open", &path))?;
    appdata::unpack_backup(file, staging.path(), id)?;
    for name in [MANIFEST, DELETED] {
        let _ = fs::remove_file(staging.path().join(name));
    }
    appdata::place_restored(cfg, staging.path(), id)
}

/// Removes `rel` under `root` without following any link on the way: a
/// deletion list cannot reach outside the tree being restored.
fn delete_in(root: &Path, rel: &str, id: &str) -> Result<()> {
    let rel_path = Path::new(rel);
    let refuse = || {
        AgentError::FailedPrecondition(format!(
            "backup {id} lists a deletion outside the tree: {rel:?}"
        ))
    };
    if rel.is_empty()
        || relative_depth(rel_path).is_none()
        || rel_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(refuse());
    }
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel_path.components().collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c.as_os_str());
        let Ok(meta) = fs::symlink_metadata(&at) else {
            return Ok(()); // gone already (a parent was deleted first)
        };
        if i + 1 < parts.len() && !meta.is_dir() {
            return Ok(()); // a parent is a file or link: nothing below it
        }
        if i + 1 == parts.len() {
            let res = if meta.is_dir() {
                remove_tree(&at)
            } else {
                fs::remove_file(&at)
            };
            res.map_err(AgentError::io("cannot remove", &at))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_list_cannot_reach_outside_the_tree() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        let outside = outer.path().join("outside");
        std::fs::create_dir_all(root.join("appdata/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        std::fs::write(root.join("appdata/sub/gone"), b"g").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("appdata/link")).unwrap();
        for bad in [
            "../outside/keep",
            "/etc/passwd",
            "appdata/../../outside/keep",
            "",
        ] {
            let e = delete_in(&root, bad, "b1").unwrap_err();
            assert!(e.to_string().contains("outside the tree"), "{bad}: {e}");
        }
        // Through a link: the link is not followed.
        delete_in(&root, "appdata/link/keep", "b1").unwrap();
        assert!(outside.join("keep").exists());
        // A directory goes with what it holds; a path gone already is fine.
        delete_in(&root, "appdata/sub", "b1").unwrap();
        assert!(!root.join("appdata/sub").exists());
        delete_in(&root, "appdata/sub/gone", "b1").unwrap();
        // A link itself is removed, not its target.
        delete_in(&root, "appdata/link", "b1").unwrap();
        assert!(std::fs::symlink_metadata(root.join("appdata/link")).is_err());
        assert!(outside.join("keep").exists());
    }
}
