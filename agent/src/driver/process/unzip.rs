//! Zip runtime archives, unpacked as strictly as tar.gz ones: no absolute
//! paths, no `..`, no links out, no special files, no writing through
//! links, size and entry caps on the bytes actually written.

use crate::error::{AgentError, Result};
use hubshift_common::archive::{ArchiveStats, UnpackLimits, check_links_on_disk};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn refuse(entry: &str, reason: &str) -> AgentError {
    AgentError::InvalidArgument(format!("refused archive entry {entry:?}: {reason}"))
}

/// Refuses a path whose existing ancestors inside `dest` include a symlink:
/// writing through a link could land outside the tree.
fn no_symlink_ancestor(dest: &Path, rel: &Path, entry: &str) -> Result<()> {
    let mut at = dest.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(entry, "path goes through a symlink"));
            }
            Ok(m) if !m.is_dir() => return Err(refuse(entry, "path goes through a file")),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Unpacks a zip as strictly as the tar.gz path: no absolute paths, no
/// `..`, no links out, no special files, no writing through links, size
/// and entry caps enforced on the bytes actually written.
pub fn unpack_zip(file: File, dest: &Path, limits: UnpackLimits) -> Result<ArchiveStats> {
    let bad_zip =
        |e: zip::result::ZipError| AgentError::InvalidArgument(format!("bad zip archive: {e}"));
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(bad_zip)?;
    // The reader keeps the last of several entries with one name; which
    // one the hub would get is not for an archive to leave open.
    if zip.has_duplicate_names() {
        return Err(AgentError::InvalidArgument(
            "bad zip archive: two entries have the same name".into(),
        ));
    }
    if zip.len() as u64 > limits.max_entries {
        return Err(AgentError::InvalidArgument(format!(
            "archive holds more than {} entries",
            limits.max_entries
        )));
    }
    let mut stats = ArchiveStats::default();
    let mut seen = std::collections::HashSet::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad_zip)?;
        let name = entry.name().map_err(bad_zip)?.to_string();
        stats.entries += 1;
        if name.contains('\0') || name.contains('\\') {
            return Err(refuse(&name, "NUL or backslash in path"));
        }
        let rel = PathBuf::from(&name);
        let depth = hubshift_common::archive::relative_depth(&rel)
            .ok_or_else(|| refuse(&name, "absolute path or '..' component"))?;
        if depth == 0 {
            continue;
        }
        let normal: PathBuf = rel
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        if !seen.insert(normal) && !entry.is_dir() {
            return Err(refuse(&name, "duplicate entry name"));
        }
        no_symlink_ancestor(dest, &rel, &name)?;
        let target = dest.join(&rel);
        let parent = target.parent().unwrap_or(dest).to_path_buf();
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(AgentError::io("cannot create", &target))?;
            continue;
        }
        fs::create_dir_all(&parent).map_err(AgentError::io("cannot create", &parent))?;
        if entry.is_symlink() {
            let mut link = Vec::new();
            (&mut entry)
                .take(4097)
                .read_to_end(&mut link)
                .map_err(|e| refuse(&name, &e.to_string()))?;
            if link.is_empty() || link.len() > 4096 || link.contains(&0) {
                return Err(refuse(&name, "bad symlink target"));
            }
            let link = PathBuf::from(std::ffi::OsStr::from_bytes(&link));
            if !hubshift_common::archive::stays_inside(depth - 1, &link) {
                return Err(refuse(&name, "symlink points outside the archive root"));
            }
            std::os::unix::fs::symlink(&link, &target)
                .map_err(AgentError::io("cannot create link", &target))?;
            continue;
        }
        let mode = entry.unix_mode().unwrap_or(0o644);
        let kind = mode & libc::S_IFMT;
        if kind != 0 && kind != libc::S_IFREG {
            return Err(refuse(&name, "device, fifo or other special entry"));
        }
        let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm)
            .open(&target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    refuse(&name, "duplicate entry")
                } else {
                    AgentError::io("cannot create", &target)(e)
                }
            })?;
        let room = limits.max_total_bytes.saturating_sub(stats.bytes);
        // A full disk is the host's fault, a broken entry the archive's.
        let copied = io::copy(&mut (&mut entry).take(room + 1), &mut out).map_err(|e| {
            if crate::error::is_host_fault(&e) {
                AgentError::io("cannot write", &target)(e)
            } else {
                AgentError::InvalidArgument(format!("bad zip entry {name:?}: {e}"))
            }
        })?;
        stats.bytes += copied;
        if stats.bytes > limits.max_total_bytes {
            return Err(AgentError::InvalidArgument(format!(
                "archive expands to more than {} bytes",
                limits.max_total_bytes
            )));
        }
    }
    // Each link was checked as text; together (`y -> .`, `x -> y/y/../..`)
    // they may still lead out.
    check_links_on_disk(dest).map_err(AgentError::archive(dest))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::unix::fs::PermissionsExt;
    use zip::write::SimpleFileOptions;

    fn zip_of(build: impl FnOnce(&mut zip::ZipWriter<io::Cursor<Vec<u8>>>)) -> File {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        build(&mut w);
        let bytes = w.finish().unwrap().into_inner();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    /// Two entries named `bin/hub` (the writer refuses that, so the second
    /// name is patched in the bytes).
    fn zip_with_duplicate_names() -> File {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let o = SimpleFileOptions::default();
        w.start_file("bin/hub", o).unwrap();
        w.write_all(b"good").unwrap();
        w.start_file("bin/huX", o).unwrap();
        w.write_all(b"evil").unwrap();
        let mut bytes = w.finish().unwrap().into_inner();
        for i in 0..bytes.len() - 7 {
            if &bytes[i..i + 7] == b"bin/huX" {
                bytes[i + 6] = b'b';
            }
        }
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    #[test]
    fn zip_round_trip_with_inner_link() {
        let f = zip_of(|w| {
            let o = SimpleFileOptions::default().unix_permissions(0o755);
            w.add_directory("bin/", o).unwrap();
            w.start_file("bin/hub", o).unwrap();
            w.write_all(b"#!/bin/sh\n").unwrap();
            w.add_symlink("hub-link", "bin/hub", o).unwrap();
        });
        let dest = tempfile::tempdir().unwrap();
        let stats = unpack_zip(f, dest.path(), UnpackLimits::default()).unwrap();
        assert_eq!(stats.bytes, 10);
        let mode = fs::metadata(dest.path().join("bin/hub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dest.path().join("hub-link")).unwrap(),
            Path::new("bin/hub")
        );
    }

    #[test]
    fn zip_damage_only_the_crc_reveals_is_refused() {
        let payload = b"VERSION-4.2.0-payload-that-is-stored-not-deflated";
        let mut f = zip_of(|w| {
            let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            w.start_file("VERSION", o).unwrap();
            w.write_all(payload).unwrap();
        });
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        // Flip one byte of the stored data: sizes and names stay valid.
        let at = bytes
            .windows(payload.len())
            .position(|w| w == payload)
            .unwrap()
            + 10;
        bytes[at] ^= 0x20;
        let mut bad = tempfile::tempfile().unwrap();
        bad.write_all(&bytes).unwrap();
        bad.rewind().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = unpack_zip(bad, dest.path(), UnpackLimits::default()).unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("checksum") || err.to_string().contains("CRC"),
            "{err}"
        );
    }

    #[test]
    fn zip_refuses_hostile_entries() {
        let o = SimpleFileOptions::default();
        let cases: Vec<(&str, File)> = vec![
            (
                "dotdot",
                zip_of(|w| {
                    w.start_file("../evil", o).unwrap();
                    w.write_all(b"x").unwrap();
                }),
            ),
            (
                "absolute",
                zip_of(|w| {
                    w.start_file("/tmp/evil", o).unwrap();
                    w.write_all(b"x").unwrap();
                }),
            ),
            (
                "link out",
                zip_of(|w| {
                    w.add_symlink("l", "../../etc", o).unwrap();
                }),
            ),
            (
                "through link",
                zip_of(|w| {
                    w.add_symlink("l", ".", o).unwrap();
                    w.start_file("l/x", o).unwrap();
                    w.write_all(b"x").unwrap();
                }),
            ),
            (
                "too large",
                zip_of(|w| {
                    w.start_file("big", o).unwrap();
                    w.write_all(&[0u8; 5000]).unwrap();
                }),
            ),
            (
                "links chained out",
                zip_of(|w| {
                    w.add_symlink("y", ".", o).unwrap();
                    w.add_symlink("x", "y/y/y/../../../etc", o).unwrap();
                }),
            ),
            ("duplicate names", zip_with_duplicate_names()),
        ];
        for (what, f) in cases {
            let dest = tempfile::tempdir().unwrap();
            let limits = UnpackLimits {
                max_total_bytes: 4096,
                max_entries: 10,
            };
            let err = unpack_zip(f, dest.path(), limits).unwrap_err();
            assert!(
                matches!(err, AgentError::InvalidArgument(_)),
                "{what}: {err}"
            );
        }
    }
}
