//! tar.gz archives in both directions. Building never follows symlinks;
//! unpacking refuses anything that could write outside the target directory
//! (absolute paths, `..`, escaping links, device nodes) and caps total size
//! and entry count, so a hostile archive cannot fill or escape the disk.

use crate::pgzip::ParallelGzEncoder;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Why an archive was not unpacked (or not fully read).
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// Reading the archive or writing the tree failed.
    #[error("archive I/O error: {0}")]
    Io(#[from] io::Error),
    /// An entry that must never be unpacked.
    #[error("refused archive entry {entry:?}: {reason}")]
    Refused {
        /// The entry's path as the archive names it.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// The archive holds more bytes than allowed.
    #[error("archive expands to more than {limit} bytes")]
    TooLarge {
        /// The configured cap.
        limit: u64,
    },
    /// The archive holds more entries than allowed.
    #[error("archive holds more than {limit} entries")]
    TooManyEntries {
        /// The configured cap.
        limit: u64,
    },
}

/// Caps applied while unpacking.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Largest sum of file sizes.
    pub max_total_bytes: u64,
    /// Largest number of entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 4 * 1024 * 1024 * 1024,
            max_entries: 200_000,
        }
    }
}

/// What an unpack or listing saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Entries read.
    pub entries: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

/// One directory to put into an archive, under a top-level name.
#[derive(Debug, Clone)]
pub struct PackSource {
    /// Top-level directory name inside the archive (e.g. `appdata`).
    pub name: String,
    /// Directory on disk.
    pub path: PathBuf,
}

/// gzip level for backups: fast, because the backup sits inside an outage
/// window on the primary and appdata is often already compressed data.
pub const BACKUP_LEVEL: u32 = 1;

/// Writes a standard tar.gz of `sources` into `out`, not following symlinks.
pub fn pack_tar_gz<W: Write>(sources: &[PackSource], out: W, level: u32) -> io::Result<W> {
    pack_tar(sources, GzEncoder::new(out, Compression::new(level)))?.finish()
}

/// [`pack_tar_gz`] compressed on all cores ([`crate::pgzip`]): the same
/// standard tar.gz, written faster where the time counts (a backup runs
/// while the group has no standby).
pub fn pack_tar_gz_parallel<W: Write>(sources: &[PackSource], out: W, level: u32) -> io::Result<W> {
    pack_tar(
        sources,
        ParallelGzEncoder::new(out, Compression::new(level)),
    )?
    .finish()
}

/// A tar stream of `sources` into `out`, not following symlinks.
fn pack_tar<W: Write>(sources: &[PackSource], out: W) -> io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    for source in sources {
        builder.append_dir_all(&source.name, &source.path)?;
    }
    builder.into_inner()
}

/// Reads a tar.gz from start to end, checking every entry as an unpack
/// would, without writing anything.
pub fn list_tar_gz<R: Read>(reader: R, limits: UnpackLimits) -> Result<ArchiveStats, ArchiveError> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut stats = ArchiveStats::default();
    let mut links = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        check_entry(&entry, &mut stats, &mut links, limits)?;
        io::copy(&mut entry, &mut io::sink())?;
    }
    Ok(stats)
}

/// Unpacks a tar.gz into `dest`, which should be a fresh private directory
/// that is renamed into place afterwards. On error the caller removes `dest`.
pub fn unpack_tar_gz<R: Read>(
    reader: R,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<ArchiveStats, ArchiveError> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut stats = ArchiveStats::default();
    let mut links = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        check_entry(&entry, &mut stats, &mut links, limits)?;
        if !entry.unpack_in(dest)? {
            return Err(ArchiveError::Refused {
                entry: entry_name(&entry),
                reason: "path leaves the target directory",
            });
        }
    }
    Ok(stats)
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&entry.path_bytes()).into_owned()
}

/// Checks one entry's path, type and link target, and counts it. `links`
/// collects the symlinks seen so far: an entry whose path (or hard link
/// target) goes through one of them is refused, because the lexical
/// checks below assume every directory component is a real directory
/// (`a -> .` followed by `a/b/l -> ../..` would otherwise plant a link that
/// points one level above the root).
fn check_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    stats: &mut ArchiveStats,
    links: &mut HashSet<PathBuf>,
    limits: UnpackLimits,
) -> Result<(), ArchiveError> {
    let name = entry_name(entry);
    let refuse = |reason| ArchiveError::Refused {
        entry: name.clone(),
        reason,
    };
    stats.entries += 1;
    if stats.entries > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    let path = entry.path()?;
    let depth = relative_depth(&path).ok_or_else(|| refuse("absolute path or '..' component"))?;
    let normal = normalized(&path);
    if through_link(&normal, links) {
        return Err(refuse("path goes through a symlink in the archive"));
    }
    let kind = entry.header().entry_type();
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            stats.bytes = stats.bytes.saturating_add(entry.header().size()?);
            if stats.bytes > limits.max_total_bytes {
                return Err(ArchiveError::TooLarge {
                    limit: limits.max_total_bytes,
                });
            }
        }
        tar::EntryType::Directory => {}
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()?
                .ok_or_else(|| refuse("symlink without a target"))?;
            // The link lives at `depth` components below the root; its
            // parent directory is one less. The target, resolved from there,
            // must stay inside the root.
            let parent_depth = depth.saturating_sub(1);
            if !stays_inside(parent_depth, &target) {
                return Err(refuse("symlink points outside the archive root"));
            }
            links.insert(normal);
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()?
                .ok_or_else(|| refuse("hard link without a target"))?;
            if relative_depth(&target).is_none() {
                return Err(refuse("hard link points outside the archive root"));
            }
            let target = normalized(&target);
            if through_link(&target, links) || links.contains(&target) {
                return Err(refuse("hard link goes through a symlink in the archive"));
            }
        }
        _ => return Err(refuse("device, fifo or other special entry")),
    }
    Ok(())
}

/// Number of normal components of a relative path with no `..`; `None` for
/// absolute paths or paths with `..`.
pub fn relative_depth(path: &Path) -> Option<usize> {
    let mut depth = 0;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(depth)
}

/// The normal components of a relative path (no `.`).
fn normalized(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Whether a proper ancestor of `path` is one of `links`.
fn through_link(path: &Path, links: &HashSet<PathBuf>) -> bool {
    !links.is_empty() && path.ancestors().skip(1).any(|a| links.contains(a))
}

/// Whether `target`, resolved lexically from a directory `depth` levels
/// below the root, stays within the root.
pub fn stays_inside(depth: usize, target: &Path) -> bool {
    let mut level = depth as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                level -= 1;
                if level < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_are_resolved_from_the_link_directory() {
        assert!(stays_inside(1, Path::new("../x")));
        assert!(!stays_inside(1, Path::new("../../x")));
        assert!(!stays_inside(0, Path::new("/etc/passwd")));
        assert!(stays_inside(0, Path::new("a/./b")));
        assert_eq!(relative_depth(Path::new("a/b/c")), Some(3));
        assert_eq!(relative_depth(Path::new("a/../c")), None);
    }

    #[test]
    fn refuses_links_planted_through_a_symlinked_directory() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, link: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o755);
            if !link.is_empty() {
                h.set_link_name_literal(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        };
        add("b/", tar::EntryType::Directory, "");
        add("a", tar::EntryType::Symlink, ".");
        add("a/b/l", tar::EntryType::Symlink, "../..");
        let tar_bytes = b.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        let bytes = gz.finish().unwrap();
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("root");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack_tar_gz(&bytes[..], &dest, UnpackLimits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Refused { .. }), "{err}");
        assert!(!dest.join("b/l").exists() && std::fs::symlink_metadata(dest.join("b/l")).is_err());
        assert!(list_tar_gz(&bytes[..], UnpackLimits::default()).is_err());
    }

    #[test]
    fn pack_then_unpack_round_trips() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/f.json"), b"{\"a\":1}").unwrap();
        std::os::unix::fs::symlink("sub/f.json", src.path().join("link")).unwrap();
        let bytes = pack_tar_gz(
            &[PackSource {
                name: "appdata".into(),
                path: src.path().to_path_buf(),
            }],
            Vec::new(),
            BACKUP_LEVEL,
        )
        .unwrap();
        let stats = list_tar_gz(&bytes[..], UnpackLimits::default()).unwrap();
        assert_eq!(stats.bytes, 7);
        let dest = tempfile::tempdir().unwrap();
        unpack_tar_gz(&bytes[..], dest.path(), UnpackLimits::default()).unwrap();
        assert_eq!(
            std::fs::read(dest.path().join("appdata/sub/f.json")).unwrap(),
            b"{\"a\":1}"
        );
        let link = std::fs::read_link(dest.path().join("appdata/link")).unwrap();
        assert_eq!(link, Path::new("sub/f.json"));
    }
}
