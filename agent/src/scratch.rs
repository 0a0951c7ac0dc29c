//! Every temporary file and directory the agent makes carries one prefix,
//! [`PREFIX`], and lies in one of the places [`places`] names, so an agent
//! killed in the middle of anything (an upload, a backup, a Restore's
//! unpacked tree, an atomic write, a link switch) leaves nothing that its
//! next start does not find and remove. A temporary is also removed on
//! failure (dropped) while the agent lives.

use crate::config::Config;
use crate::error::{AgentError, Result};
use std::path::{Path, PathBuf};

/// The one prefix of every temporary name: `.hubshift-tmp-<kind>-…`.
pub const PREFIX: &str = ".hubshift-tmp-";

/// Names older agents gave their temporaries, each only where they made
/// it (so a file of someone else's that looks alike elsewhere, in appdata
/// or beside it, is never touched).
const LEGACY_STATE: &[&str] = &[".tmp-", ".store-forward-"];
const LEGACY_BACKUPS: &[&str] = &[".partial-"];
const LEGACY_RECORDS: &[&str] = &[".tmp-"];
const LEGACY_INSTALL_ROOT: &[&str] = &[".current.tmp-"];
const LEGACY_RUNTIMES: &[&str] = &[".staging-"];
const LEGACY_BESIDE_TREES: &[&str] = &[".hubshift-restore-"];

/// A temporary file in `dir`, named `.hubshift-tmp-<kind>-…`, removed on drop.
pub fn file_in(dir: &Path, kind: &str) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{kind}-"))
        .tempfile_in(dir)
        .map_err(AgentError::io("cannot create a temp file in", dir))
}

/// A temporary directory in `dir`, named `.hubshift-tmp-<kind>-…`, removed
/// on drop.
pub fn dir_in(dir: &Path, kind: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{kind}-"))
        .tempdir_in(dir)
        .map_err(AgentError::io(
            "cannot create a temporary directory in",
            dir,
        ))
}

/// A fresh temporary name in `dir` for what tempfile cannot make (a symlink).
pub fn name_in(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!(
        "{PREFIX}{kind}-{}-{}",
        std::process::id(),
        crate::clock::now_unix_ms()
    ))
}

/// Where the agent makes temporaries, each with the names older agents
/// used there: the state directory and its `backups/`,
/// `runtime-archives/`; the install root (the `current` switch) and its
/// `runtimes/` (unpacks); appdata (the certificate store's atomic write);
/// beside appdata and beside each extra backup directory (Restore's
/// unpacked trees). `state_dir/staging/` is private: all of it goes.
pub fn places(cfg: &Config) -> Vec<(PathBuf, Vec<&'static str>)> {
    let p = &cfg.paths;
    let mut out: Vec<(PathBuf, Vec<&'static str>)> = vec![
        (p.state_dir.clone(), LEGACY_STATE.to_vec()),
        (crate::places::backups_dir(cfg), LEGACY_BACKUPS.to_vec()),
        (
            p.state_dir.join("runtime-archives"),
            LEGACY_RECORDS.to_vec(),
        ),
        (p.install_root.clone(), LEGACY_INSTALL_ROOT.to_vec()),
        (
            crate::places::runtimes_dir(&p.install_root),
            LEGACY_RUNTIMES.to_vec(),
        ),
        (p.appdata.clone(), Vec::new()),
    ];
    for dir in std::iter::once(&p.appdata).chain(p.extra_backup_dirs.iter()) {
        if let Some(parent) = dir.parent() {
            out.push((parent.to_path_buf(), LEGACY_BESIDE_TREES.to_vec()));
        }
    }
    out.sort();
    // One entry per directory, with the old names of every role it has.
    out.dedup_by(|a, b| {
        if a.0 == b.0 {
            b.1.append(&mut a.1);
            true
        } else {
            false
        }
    });
    out
}

/// Whether `name` is a temporary of this agent, or of an older one by one
/// of the `legacy` names used in its place.
fn is_temporary(name: &str, legacy: &[&str]) -> bool {
    name.starts_with(PREFIX) || legacy.iter().any(|l| name.starts_with(l))
}

/// Removes every temporary a killed agent left (and all of
/// `state_dir/staging/`). Returns how many were removed. Run at start,
/// before anything else touches these places.
pub fn clean(cfg: &Config) -> usize {
    let mut removed = 0;
    let staging = cfg.paths.state_dir.join("staging");
    let mut found: Vec<PathBuf> = entries(&staging).into_iter().map(|(p, _)| p).collect();
    for (dir, legacy) in places(cfg) {
        found.extend(
            entries(&dir)
                .into_iter()
                .filter(|(_, name)| is_temporary(name, &legacy))
                .map(|(p, _)| p),
        );
    }
    for path in found {
        let res = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => hubshift_common::archive::remove_tree(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        match res {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %path.display(), "removed a temporary left by an interrupted agent");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary")
            }
        }
    }
    removed
}

fn entries(dir: &Path) -> Vec<(PathBuf, String)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_are_told_from_what_must_stay() {
        for name in [".hubshift-tmp-backup-x", ".hubshift-tmp-restore-1"] {
            assert!(is_temporary(name, &[]), "{name}");
        }
        assert!(is_temporary(".partial-x", LEGACY_BACKUPS));
        assert!(
            !is_temporary(".partial-x", LEGACY_RUNTIMES),
            "only in backups/"
        );
        assert!(!is_temporary(".tmp-q", &[]), "not in appdata");
        let all: Vec<&str> = [
            LEGACY_STATE,
            LEGACY_BACKUPS,
            LEGACY_RECORDS,
            LEGACY_INSTALL_ROOT,
            LEGACY_RUNTIMES,
            LEGACY_BESIDE_TREES,
        ]
        .concat();
        for name in [
            "appData.replaced-20260101T000000Z",
            "intelligencehub-certificatestore.pkcs12.previous-20260101T000000Z",
            "hubshift-set-aside-1-intelligencehub-writestore-1",
            "4.2.0",
            "current",
            "b1.tar.gz",
            "hub.json",
        ] {
            assert!(!is_temporary(name, &all), "{name}");
        }
    }

    #[test]
    fn helpers_name_with_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let f = file_in(dir.path(), "backup").unwrap();
        let d = dir_in(dir.path(), "restore").unwrap();
        let n = name_in(dir.path(), "current");
        for p in [f.path(), d.path(), n.as_path()] {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(PREFIX), "{name}");
        }
    }
}
