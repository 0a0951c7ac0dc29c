//! What a base backup saw of each file, so that the delta taken after the
//! hub stops can tell what changed without reading unchanged files again,
//! and what makes a base trustworthy.

use crate::error::{AgentError, Result};
use serde::{Deserialize, Serialize};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The identity of a file's contents as `stat` shows it: a write changes
/// size or mtime (and ctime, which cannot be set back); a replacement
/// changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i128,
    /// Permission bits.
    pub mode: u32,
}

impl FileKey {
    /// The key of `meta`.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            mode: meta.mode(),
        }
    }
}

/// What kind of entry a path was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Link,
}

/// How far the base's copy of a regular file can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Copied {
    /// The same before and after it was read, and last changed well before:
    /// unchanged while its key is.
    Settled,
    /// The same before and after, but changed so recently that a write
    /// within the same clock tick would keep its key: unchanged only while
    /// its key is and its contents still have this SHA-256.
    Recent {
        /// SHA-256 (hex) of the bytes archived.
        sha256: String,
    },
    /// Changed while it was read: the delta always carries it.
    Changed,
}

/// One path of the base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its path inside the archive (`appdata/...`).
    pub path: String,
    /// What it was.
    pub kind: Kind,
    /// Regular files: the key seen before reading it.
    pub key: Option<FileKey>,
    /// Regular files: how far the archived copy can be trusted.
    pub copied: Option<Copied>,
}

/// The base archive's own file, as it was when it had been read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveMark {
    /// SHA-256 (hex) of the archive.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Inode, size and mtime: a file replaced or written since differs.
    pub ino: u64,
    /// Modification time, ns.
    pub mtime_ns: i128,
}

/// The index kept beside a base (`<id>.index.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseIndex {
    /// Format of this file.
    pub format: u32,
    /// The base's id.
    pub id: String,
    /// The appdata it was taken of: a base of another tree is no base.
    pub appdata: PathBuf,
    /// The archive, read back in full once written.
    pub archive: ArchiveMark,
    /// Every path archived.
    pub entries: Vec<Entry>,
}

/// The format this agent writes and reads.
pub const FORMAT: u32 = 1;

/// Where the index of base `id` lies.
pub fn index_path(backups: &Path, id: &str) -> PathBuf {
    backups.join(format!("{id}.index.json"))
}

impl BaseIndex {
    /// Reads the index of base `id`; why it cannot be used otherwise.
    pub fn load(backups: &Path, id: &str) -> std::result::Result<Self, String> {
        let path = index_path(backups, id);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("its index {} cannot be read ({e})", path.display()))?;
        let index: BaseIndex = serde_json::from_slice(&bytes)
            .map_err(|e| format!("its index {} is unreadable ({e})", path.display()))?;
        if index.format != FORMAT || index.id != id {
            return Err(format!(
                "its index {} is of another format or base",
                path.display()
            ));
        }
        Ok(index)
    }

    /// Writes the index atomically.
    pub fn store(&self, backups: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| AgentError::Internal(format!("cannot encode the base index: {e}")))?;
        crate::fsutil::write_atomic(&index_path(backups, &self.id), &bytes, 0o600)
    }

    /// Whether the base archive at `file` is still the one read back:
    /// none of size, inode or mtime moved. Otherwise why not.
    pub fn archive_unchanged(&self, file: &Path) -> std::result::Result<(), String> {
        let meta = std::fs::metadata(file)
            .map_err(|e| format!("its archive {} cannot be read ({e})", file.display()))?;
        let key = FileKey::of(&meta);
        if key.size != self.archive.size
            || key.ino != self.archive.ino
            || key.mtime_ns != self.archive.mtime_ns
        {
            return Err(format!(
                "its archive {} changed since it was read back",
                file.display()
            ));
        }
        Ok(())
    }
}
