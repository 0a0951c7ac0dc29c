//! tar.gz archives in both directions. Building never follows symlinks;
//! unpacking refuses anything that could write outside the target directory
//! (absolute paths, `..`, escaping links, device nodes) and caps total size
//! and entry count, so a hostile archive cannot fill or escape the disk.
//! Directories are always left owner-writable, so a refused unpack can be
//! removed by the unprivileged user that made it.

use crate::pgzip::ParallelGzEncoder;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
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
    /// A symlink whose target, following the archive's own links, leaves
    /// the archive root (or loops).
    #[error("refused symlink {link}: {reason}")]
    LinkEscapes {
        /// The link's path inside the archive.
        link: String,
        /// Why.
        reason: &'static str,
    },
    /// A file that cannot be archived (socket, FIFO, device) while packing.
    #[error("{}: {kind} cannot be archived (only files, directories and symlinks)", path.display())]
    Unsupported {
        /// The file on disk.
        path: PathBuf,
        /// What it is ("a socket", "a FIFO", ...).
        kind: &'static str,
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
    /// When set, only the directory's own regular files whose names start
    /// with this (e.g. store-and-forward files in a runtime directory).
    pub only_prefix: Option<String>,
}

/// gzip level for backups: fast, because the backup sits inside an outage
/// window on the primary and appdata is often already compressed data.
pub const BACKUP_LEVEL: u32 = 1;

/// Writes a standard tar.gz of `sources` into `out`, not following symlinks.
/// A socket, FIFO or device in a tree is refused by name
/// ([`ArchiveError::Unsupported`]) instead of producing an archive that
/// could not be restored.
pub fn pack_tar_gz<W: Write>(
    sources: &[PackSource],
    out: W,
    level: u32,
) -> Result<W, ArchiveError> {
    Ok(pack_tar(sources, GzEncoder::new(out, Compression::new(level)))?.finish()?)
}

/// [`pack_tar_gz`] compressed on all cores ([`crate::pgzip`]): the same
/// standard tar.gz, written faster where the time counts (a backup runs
/// while the group has no standby).
pub fn pack_tar_gz_parallel<W: Write>(
    sources: &[PackSource],
    out: W,
    level: u32,
) -> Result<W, ArchiveError> {
    Ok(pack_tar(
        sources,
        ParallelGzEncoder::new(out, Compression::new(level)),
    )?
    .finish()?)
}

/// A tar stream of `sources` into `out`, not following symlinks.
fn pack_tar<W: Write>(sources: &[PackSource], out: W) -> Result<W, ArchiveError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    for source in sources {
        builder.append_dir(&source.name, &source.path)?;
        match &source.only_prefix {
            None => append_children(&mut builder, Path::new(&source.name), &source.path)?,
            Some(prefix) => {
                append_prefixed(&mut builder, Path::new(&source.name), &source.path, prefix)?
            }
        }
    }
    Ok(builder.into_inner()?)
}

/// Appends the regular files of `dir` whose names start with `prefix`.
fn append_prefixed<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &Path,
    dir: &Path,
    prefix: &str,
) -> Result<(), ArchiveError> {
    let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        if child.file_name().to_string_lossy().starts_with(prefix) && child.file_type()?.is_file() {
            builder.append_path_with_name(child.path(), name.join(child.file_name()))?;
        }
    }
    Ok(())
}

/// Appends the contents of directory `dir` under `name`, recursively.
fn append_children<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &Path,
    dir: &Path,
) -> Result<(), ArchiveError> {
    let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let inner = name.join(child.file_name());
        let kind = child.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&inner, &path)?;
            append_children(builder, &inner, &path)?;
        } else if kind.is_file() || kind.is_symlink() {
            builder.append_path_with_name(&path, &inner)?;
        } else {
            let kind = if kind.is_socket() {
                "a socket"
            } else if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else {
                "a special file"
            };
            return Err(ArchiveError::Unsupported { path, kind });
        }
    }
    Ok(())
}

/// Reads a tar.gz from start to end, checking every entry as an unpack
/// would, without writing anything.
pub fn list_tar_gz<R: Read>(reader: R, limits: UnpackLimits) -> Result<ArchiveStats, ArchiveError> {
    let mut archive = tar::Archive::new(MultiGzDecoder::new(reader));
    let mut stats = ArchiveStats::default();
    let mut links = HashMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        check_entry(&entry, &mut stats, &mut links, limits)?;
        io::copy(&mut entry, &mut io::sink())?;
    }
    read_to_gzip_end(archive)?;
    for (link, target) in &links {
        check_link_stays_inside(link, target, |p| links.get(p).cloned())?;
    }
    Ok(stats)
}

/// Unpacks a tar.gz into `dest`, which should be a fresh private directory
/// that is renamed into place afterwards. On error the caller removes `dest`
/// (its directories are always owner-writable, see [`remove_tree`]). Once
/// every entry is written, each symlink in `dest` is resolved through the
/// links on disk and must stay inside `dest`.
pub fn unpack_tar_gz<R: Read>(
    reader: R,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<ArchiveStats, ArchiveError> {
    let mut archive = tar::Archive::new(MultiGzDecoder::new(reader));
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut stats = ArchiveStats::default();
    let mut links = HashMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !check_entry(&entry, &mut stats, &mut links, limits)? {
            continue;
        }
        if !entry.unpack_in(dest)? {
            return Err(ArchiveError::Refused {
                entry: entry_name(&entry),
                reason: "path leaves the target directory",
            });
        }
        if entry.header().entry_type() == tar::EntryType::Directory {
            // The archive's mode, but never one that stops the owner from
            // writing into it (later entries) or emptying it (cleanup).
            let dir = dest.join(normalized(&entry.path()?));
            let mode = entry.header().mode().unwrap_or(0o755) & 0o777;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o700))?;
        }
    }
    read_to_gzip_end(archive)?;
    check_links_on_disk(dest)?;
    Ok(stats)
}

/// tar stops at its end-of-archive marker, before the gzip trailer: read on
/// to the end of the stream so that the CRC-32 and length of every member
/// are checked (a flipped byte that only the CRC reveals is refused), and
/// anything after the last member is refused as trailing garbage.
fn read_to_gzip_end<R: Read>(archive: tar::Archive<MultiGzDecoder<R>>) -> io::Result<()> {
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(())
}

/// Checks every symlink under `root`: resolved through the links on disk
/// (as the kernel would), its target must stay inside `root`.
pub fn check_links_on_disk(root: &Path) -> Result<(), ArchiveError> {
    let lookup = |rel: &Path| {
        let at = root.join(rel);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(&at).ok(),
            _ => None,
        }
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                check_link_stays_inside(&child, &target, lookup)?;
            }
        }
    }
    Ok(())
}

/// Most links followed while resolving one target (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Resolves the symlink at `link` (normal components relative to the root)
/// with target `target`, following the links `lookup` knows, and refuses
/// it when the result climbs above the root, is absolute or loops. Each
/// target may look harmless as text (`y -> .`, `x -> y/y/../..`): only the
/// resolution shows where it leads.
pub fn check_link_stays_inside(
    link: &Path,
    target: &Path,
    lookup: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<(), ArchiveError> {
    let refuse = |reason| ArchiveError::LinkEscapes {
        link: link.display().to_string(),
        reason,
    };
    let mut dir: Vec<OsString> = normalized(link)
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    dir.pop();
    let mut hops = 0;
    resolve(dir, target, &lookup, &mut hops).map_err(refuse)?;
    Ok(())
}

/// Resolves `target` from directory `dir` (real directories from the
/// root), substituting known links; returns the resolved components.
fn resolve(
    mut at: Vec<OsString>,
    target: &Path,
    lookup: &dyn Fn(&Path) -> Option<PathBuf>,
    hops: &mut usize,
) -> Result<Vec<OsString>, &'static str> {
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute symlink target");
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return Err("resolves outside the archive root");
                }
            }
            Component::Normal(name) => {
                at.push(name.to_os_string());
                let here: PathBuf = at.iter().collect();
                if let Some(next) = lookup(&here) {
                    *hops += 1;
                    if *hops > MAX_LINK_HOPS {
                        return Err("symlink loop or too many levels of links");
                    }
                    at.pop();
                    at = resolve(at, &next, lookup, hops)?;
                }
            }
        }
    }
    Ok(at)
}

/// Removes a tree made by an unpack whatever modes its directories were
/// given: every directory is first made owner-accessible (an unprivileged
/// owner cannot otherwise empty a 0555 or 000 directory).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if !is_dir {
            continue;
        }
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    std::fs::remove_dir_all(path)
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&entry.path_bytes()).into_owned()
}

/// Checks one entry's path, type and link target, and counts it; false for
/// an entry that carries no file (pax global metadata, as `git archive`
/// writes first). `links` collects the symlinks seen so far (path →
/// target): an entry whose path (or hard link target) goes through one of
/// them is refused, because the lexical checks below assume every
/// directory component is a real directory (`a -> .` followed by
/// `a/b/l -> ../..` would otherwise plant a link that points one level
/// above the root). Chains of links are resolved once all are known.
fn check_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    stats: &mut ArchiveStats,
    links: &mut HashMap<PathBuf, PathBuf>,
    limits: UnpackLimits,
) -> Result<bool, ArchiveError> {
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
    let kind = entry.header().entry_type();
    if kind == tar::EntryType::XGlobalHeader {
        return Ok(false);
    }
    let path = entry.path()?;
    let depth = relative_depth(&path).ok_or_else(|| refuse("absolute path or '..' component"))?;
    let normal = normalized(&path);
    if through_link(&normal, links) {
        return Err(refuse("path goes through a symlink in the archive"));
    }
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
            links.insert(normal, target.into_owned());
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()?
                .ok_or_else(|| refuse("hard link without a target"))?;
            if relative_depth(&target).is_none() {
                return Err(refuse("hard link points outside the archive root"));
            }
            let target = normalized(&target);
            if through_link(&target, links) || links.contains_key(&target) {
                return Err(refuse("hard link goes through a symlink in the archive"));
            }
        }
        _ => return Err(refuse("device, fifo or other special entry")),
    }
    Ok(true)
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
fn through_link(path: &Path, links: &HashMap<PathBuf, PathBuf>) -> bool {
    !links.is_empty() && path.ancestors().skip(1).any(|a| links.contains_key(a))
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

    /// A tar.gz of (path, type, link target or data, mode) entries.
    fn tar_gz(entries: &[(&str, tar::EntryType, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            let data = match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_link_name_literal(link).unwrap();
                    &b""[..]
                }
                _ => link.as_bytes(),
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        let tar_bytes = b.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn refuses_links_that_escape_through_other_links() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "y -> . then a link climbing through y/y/y",
                tar_gz(&[
                    ("y", Symlink, ".", 0o777),
                    ("x", Symlink, "y/y/y/../../../escape", 0o777),
                ]),
            ),
            (
                "the climbing link first, y -> . after it",
                tar_gz(&[
                    ("d/", Directory, "", 0o755),
                    ("d/x", Symlink, "../y/y/../..", 0o777),
                    ("y", Symlink, ".", 0o777),
                ]),
            ),
            (
                "a link to a link that climbs",
                tar_gz(&[
                    ("d/", Directory, "", 0o755),
                    ("d/up", Symlink, "..", 0o777),
                    ("d/e/", Directory, "", 0o755),
                    ("d/e/x", Symlink, "../up/d/up/../..", 0o777),
                    ("f", Regular, "data", 0o644),
                ]),
            ),
            (
                "a loop",
                tar_gz(&[("a", Symlink, "b", 0o777), ("b", Symlink, "a/c", 0o777)]),
            ),
        ];
        for (what, bytes) in cases {
            let outer = tempfile::tempdir().unwrap();
            let dest = outer.path().join("root");
            std::fs::create_dir(&dest).unwrap();
            let err = unpack_tar_gz(&bytes[..], &dest, UnpackLimits::default()).unwrap_err();
            assert!(
                matches!(err, ArchiveError::LinkEscapes { .. }),
                "{what}: {err}"
            );
            let err = list_tar_gz(&bytes[..], UnpackLimits::default()).unwrap_err();
            assert!(
                matches!(err, ArchiveError::LinkEscapes { .. }),
                "{what}: {err}"
            );
        }
        // Links that climb through links and stay inside are fine.
        let fine = tar_gz(&[
            ("lib/", Directory, "", 0o755),
            ("lib/jvm/", Directory, "", 0o755),
            ("lib/jvm/cur", Symlink, "../../lib", 0o777),
            ("java", Symlink, "lib/jvm/cur/jvm/cur/../bin/java", 0o777),
        ]);
        let dest = tempfile::tempdir().unwrap();
        unpack_tar_gz(&fine[..], dest.path(), UnpackLimits::default()).unwrap();
        list_tar_gz(&fine[..], UnpackLimits::default()).unwrap();
    }

    #[test]
    fn a_pax_global_header_is_metadata_not_a_special_file() {
        use tar::EntryType::{Regular, XGlobalHeader};
        // What `git archive` writes first.
        let bytes = tar_gz(&[
            (
                "pax_global_header",
                XGlobalHeader,
                "52 comment=0123456789abcdef0123456789abcdef01234567\n",
                0o666,
            ),
            ("VERSION", Regular, "1.0", 0o644),
        ]);
        let dest = tempfile::tempdir().unwrap();
        let stats = unpack_tar_gz(&bytes[..], dest.path(), UnpackLimits::default()).unwrap();
        assert_eq!(std::fs::read(dest.path().join("VERSION")).unwrap(), b"1.0");
        assert!(!dest.path().join("pax_global_header").exists());
        assert_eq!(stats.bytes, 3);
        list_tar_gz(&bytes[..], UnpackLimits::default()).unwrap();
    }

    #[test]
    fn directory_modes_never_lock_the_owner_out() {
        use tar::EntryType::{Directory, Regular};
        let bytes = tar_gz(&[
            ("ro/", Directory, "", 0o555),
            ("none/", Directory, "", 0o000),
            ("ro/f", Regular, "x", 0o644),
            ("none/g", Regular, "y", 0o600),
        ]);
        let dest = tempfile::tempdir().unwrap();
        unpack_tar_gz(&bytes[..], dest.path(), UnpackLimits::default()).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(dest.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ro"), 0o755);
        assert_eq!(mode("none"), 0o700);
        std::fs::set_permissions(
            dest.path().join("ro"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        remove_tree(&dest.path().join("ro")).unwrap();
        assert!(!dest.path().join("ro").exists());
    }

    #[test]
    fn packing_names_a_socket_instead_of_archiving_it() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("run")).unwrap();
        std::fs::write(src.path().join("a.json"), b"{}").unwrap();
        let sock = src.path().join("run/hub.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let sources = [PackSource {
            name: "appdata".into(),
            path: src.path().to_path_buf(),
            only_prefix: None,
        }];
        let err = pack_tar_gz(&sources, Vec::new(), BACKUP_LEVEL).unwrap_err();
        assert!(matches!(err, ArchiveError::Unsupported { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("run/hub.sock") && msg.contains("a socket"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_links_planted_through_a_symlinked_directory() {
        use tar::EntryType::{Directory, Symlink};
        let bytes = tar_gz(&[
            ("b/", Directory, "", 0o755),
            ("a", Symlink, ".", 0o755),
            ("a/b/l", Symlink, "../..", 0o755),
        ]);
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
                only_prefix: None,
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

    fn small_archive() -> Vec<u8> {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("VERSION"), b"4.2.0\n").unwrap();
        pack_tar_gz(
            &[PackSource {
                name: "rt".into(),
                path: src.path().to_path_buf(),
                only_prefix: None,
            }],
            Vec::new(),
            BACKUP_LEVEL,
        )
        .unwrap()
    }

    #[test]
    fn damage_only_the_gzip_trailer_reveals_is_refused() {
        let good = small_archive();
        assert!(list_tar_gz(&good[..], UnpackLimits::default()).is_ok());
        // The last 8 bytes are CRC-32 and length: tar never reads them.
        for at in [good.len() - 8, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(
                list_tar_gz(&bad[..], UnpackLimits::default()).is_err(),
                "trailer byte {at} flipped was accepted by list"
            );
            let dest = tempfile::tempdir().unwrap();
            assert!(
                unpack_tar_gz(&bad[..], dest.path(), UnpackLimits::default()).is_err(),
                "trailer byte {at} flipped was accepted by unpack"
            );
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"garbage after the last member");
        assert!(list_tar_gz(&trailing[..], UnpackLimits::default()).is_err());
    }
}
