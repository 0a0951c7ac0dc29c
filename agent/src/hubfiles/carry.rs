//! Store-and-forward files across a runtime switch, between two runtime
//! directories (the process driver's `activate.rs` does the switch). With
//! `directories.storeForwardData` unset the hub keeps them in its runtime
//! directory; a hub started from a new runtime directory would not see
//! them and the data cached there would never be forwarded. So the switch
//! moves them (renames, same filesystem) into the new runtime directory
//! before the link changes, and a switch back moves them back.

use super::settings::writestore_files;
use crate::error::{AgentError, Result};
use crate::{clock, fsutil};
use std::fs;
use std::path::{Path, PathBuf};

/// Name prefix of a file moved out of a carried file's way.
pub const SET_ASIDE: &str = "hubshift-set-aside-";

/// Moves every store-and-forward file of `from` into `to`. A file of the
/// same name already in `to` (left by an earlier run there) is kept beside
/// it as `hubshift-set-aside-<time>-<name>`, never overwritten. Returns the moved
/// names. On a failure the files already moved are moved back.
pub fn carry(from: &Path, to: &Path) -> Result<Vec<String>> {
    if from == to {
        return Ok(Vec::new());
    }
    let files = writestore_files(from).map_err(AgentError::io("cannot list", from))?;
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    let stamp = clock::timestamp();
    for src in files {
        let Some(name) = src.file_name() else {
            continue;
        };
        let dst = to.join(name);
        let result = set_aside_existing(&dst, &stamp)
            .and_then(|()| fs::rename(&src, &dst).map_err(AgentError::io("cannot move", &src)));
        if let Err(e) = result {
            undo(&moved);
            return Err(e);
        }
        moved.push((src, dst));
    }
    if !moved.is_empty() {
        fsutil::sync_dir(to);
        fsutil::sync_dir(from);
        tracing::info!(
            from = %from.display(),
            to = %to.display(),
            files = moved.len(),
            "carried store-and-forward files into the new runtime directory"
        );
    }
    Ok(moved
        .iter()
        .filter_map(|(_, d)| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect())
}

/// Moves the files of an earlier [`carry`] back (`names` from `to` to `from`).
pub fn carry_back(from: &Path, to: &Path, names: &[String]) {
    let pairs: Vec<(PathBuf, PathBuf)> = names.iter().map(|n| (from.join(n), to.join(n))).collect();
    undo(&pairs);
}

fn undo(moved: &[(PathBuf, PathBuf)]) {
    for (src, dst) in moved.iter().rev() {
        if let Err(e) = fs::rename(dst, src) {
            tracing::error!(file = %dst.display(), error = %e, "cannot move a store-and-forward file back");
        }
    }
}

fn set_aside_existing(dst: &Path, stamp: &str) -> Result<()> {
    if fs::symlink_metadata(dst).is_err() {
        return Ok(());
    }
    let (Some(dir), Some(name)) = (dst.parent(), dst.file_name()) else {
        return Ok(());
    };
    // A prefix that no longer matches the hub's file names: the hub does not
    // open it, and later switches leave it where it is.
    let name = name.to_string_lossy();
    let mut aside = dir.join(format!("{SET_ASIDE}{stamp}-{name}"));
    let mut n = 1;
    while fs::symlink_metadata(&aside).is_ok() {
        aside = dir.join(format!("{SET_ASIDE}{stamp}-{n}-{name}"));
        n += 1;
    }
    tracing::warn!(file = %dst.display(), aside = %aside.display(), "an older store-and-forward file was in the way; kept aside");
    fs::rename(dst, &aside).map_err(AgentError::io("cannot move aside", dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_only_writestore_files_and_back_without_losing_any() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("intelligencehub-writestore-x.db"), b"new").unwrap();
        fs::write(a.join("intelligencehub-runtime.jar"), b"jar").unwrap();
        fs::write(b.join("intelligencehub-writestore-x.db"), b"stale").unwrap();
        let moved = carry(&a, &b).unwrap();
        assert_eq!(moved, ["intelligencehub-writestore-x.db"]);
        assert!(a.join("intelligencehub-runtime.jar").is_file());
        assert!(!a.join("intelligencehub-writestore-x.db").exists());
        assert_eq!(
            fs::read(b.join("intelligencehub-writestore-x.db")).unwrap(),
            b"new"
        );
        let aside: Vec<_> = fs::read_dir(&b)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(SET_ASIDE))
            .collect();
        assert_eq!(aside.len(), 1, "the stale file is kept");
        assert_eq!(fs::read(aside[0].path()).unwrap(), b"stale");
        let back = carry(&b, &a).unwrap();
        assert_eq!(back, ["intelligencehub-writestore-x.db"]);
        assert_eq!(
            fs::read(a.join("intelligencehub-writestore-x.db")).unwrap(),
            b"new"
        );
        assert!(carry(&a, &a).unwrap().is_empty());
    }
}
