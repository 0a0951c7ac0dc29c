//! Small file helpers shared by the modules: atomic writes, private
//! directories, time stamps.

use crate::error::{AgentError, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `path` through a temp file in the same directory,
/// fsync, `mode`, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| AgentError::Internal(format!("{} has no parent", path.display())))?;
    let mut tmp = crate::scratch::file_in(dir, "write")?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))
        })
        .map_err(AgentError::io("cannot write", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| AgentError::io("cannot rename into", path)(e.error))?;
    sync_dir(dir);
    Ok(())
}

/// fsync of a directory, so a rename in it is durable. Best effort.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Creates `path` (and parents) if missing, then sets `mode`.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(AgentError::io("cannot create directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(AgentError::io("cannot set mode of", path))?;
    Ok(())
}

/// Opens `path` for appending (created 0600 if missing).
pub fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(AgentError::io("cannot open for appending", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
