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

/// Names older agents gave their temporaries (removed at start too), by
/// place: only in the agent's own directories, never in appdata, where a
/// file of the hub's could look alike.
const LEGACY: &[&str] = &[
    ".staging-",
    ".partial-",
    ".hubshift-restore-",
    ".tmp-",
    ".current.tmp-",
    ".store-forward-",
];

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
        crate::fsutil::now_unix_ms()
    ))
}

/// Where the agent makes temporaries, each with whether names of older
/// agents count there too: the state directory and its `backups/`,
/// `runtime-archives/`; the install root (the `current` switch) and its
/// `runtimes/` (unpacks); appdata (the certificate store's atomic write);
/// beside appdata and beside each extra backup directory (Restore's
/// unpacked trees). `state_dir/staging/` is private: all of it goes.
pub fn places(cfg: &Config) -> Vec<(PathBuf, bool)> {
    let p = &cfg.paths;
    let mut out = vec![
        (p.state_dir.clone(), true),
        (crate::appdata::backups_dir(cfg), true),
        (p.state_dir.join("runtime-archives"), true),
        (p.install_root.clone(), true),
        (crate::runtime::runtimes_dir(&p.install_root), true),
        (p.appdata.clone(), false),
    ];
    for dir in std::iter::once(&p.appdata).chain(p.extra_backup_dirs.iter()) {
        if let Some(parent) = dir.parent() {
            out.push((parent.to_path_buf(), !parent.starts_with(&p.appdata)));
        }
    }
    out.sort();
    out.dedup_by(|a, b| {
        // Same directory twice: keep one, legacy names only if both allow.
        if a.0 == b.0 {
            b.1 &= a.1;
            true
        } else {
            false
        }
    });
    out
}

/// Whether `name` is a temporary of this agent (or of an older one, when
/// `legacy`).
fn is_temporary(name: &str, legacy: bool) -> bool {
    name.starts_with(PREFIX) || (legacy && LEGACY.iter().any(|l| name.starts_with(l)))
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
                .filter(|(_, name)| is_temporary(name, legacy))
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
            assert!(is_temporary(name, false), "{name}");
        }
        for name in [".partial-x", ".staging-y", ".hubshift-restore-z", ".tmp-q"] {
            assert!(is_temporary(name, true), "{name}");
            assert!(!is_temporary(name, false), "{name}: not in appdata");
        }
        for name in [
            "appData.replaced-20260101T000000Z",
            "intelligencehub-certificatestore.pkcs12.previous-20260101T000000Z",
            "hubshift-set-aside-1-intelligencehub-writestore-1",
            "4.2.0",
            "current",
            "b1.tar.gz",
            "hub.json",
        ] {
            assert!(!is_temporary(name, true), "{name}");
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
