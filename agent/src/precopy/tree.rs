//! Walking the backed-up trees and writing their entries into a tar stream
//! the way a tree that may change under the reader needs: each regular file
//! is stat-ed before and after it is read and archived with exactly the
//! size first seen (a file that grows or shrinks meanwhile still gives a
//! well-formed archive, and is marked as changed).

use super::index::{Copied, Entry, FileKey, Kind};
use hubshift_common::archive::{ArchiveError, PackSource};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A file changed this close (ns) before it was read may change again
/// within the same clock tick without its key moving: its digest decides.
const RECENT_NS: i128 = 2_000_000_000;

/// One path found in the trees.
#[derive(Debug)]
pub struct Found {
    /// Path inside the archive.
    pub name: String,
    /// Path on disk.
    pub path: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Its metadata (not following links).
    pub meta: fs::Metadata,
}

/// Every path of `sources` in archive order (a directory before its
/// children, names sorted). A path that vanishes while walking is left
/// out; a socket, FIFO or device is refused by name.
pub fn walk(sources: &[PackSource]) -> Result<Vec<Found>, ArchiveError> {
    let mut out = Vec::new();
    for source in sources {
        let meta = fs::symlink_metadata(&source.path)?;
        out.push(Found {
            name: source.name.clone(),
            path: source.path.clone(),
            kind: Kind::Dir,
            meta,
        });
        walk_dir(
            &source.name,
            &source.path,
            source.only_prefix.as_deref(),
            &mut out,
        )?;
    }
    Ok(out)
}

fn walk_dir(
    name: &str,
    dir: &Path,
    only_prefix: Option<&str>,
    out: &mut Vec<Found>,
) -> Result<(), ArchiveError> {
    let children = match fs::read_dir(dir) {
        Ok(c) => c.collect::<io::Result<Vec<_>>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut children = match children {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let file_name = child.file_name().to_string_lossy().into_owned();
        if only_prefix.is_some_and(|p| !file_name.starts_with(p)) {
            continue;
        }
        let path = child.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let ft = meta.file_type();
        let inner = format!("{name}/{file_name}");
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Link
        } else {
            let kind = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a FIFO"
            } else {
                "a device or special file"
            };
            return Err(ArchiveError::Unsupported { path, kind });
        };
        if only_prefix.is_some() && kind != Kind::File {
            continue;
        }
        out.push(Found {
            name: inner.clone(),
            path: path.clone(),
            kind,
            meta,
        });
        if kind == Kind::Dir {
            walk_dir(&inner, &path, None, out)?;
        }
    }
    Ok(())
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Appends `found` to `builder`; for a regular file, returns how far the
/// archived copy can be trusted. A path gone meanwhile gives `None` and
/// nothing is written.
pub fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    found: &Found,
) -> Result<Option<Entry>, ArchiveError> {
    match found.kind {
        Kind::Dir | Kind::Link => {
            match builder.append_path_with_name(&found.path, &found.name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            Ok(Some(Entry {
                path: found.name.clone(),
                kind: found.kind,
                key: None,
                copied: None,
            }))
        }
        Kind::File => append_file(builder, found),
    }
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    found: &Found,
) -> Result<Option<Entry>, ArchiveError> {
    let started = now_ns();
    let mut file = match fs::File::open(&found.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let before = file.metadata()?;
    let key = FileKey::of(&before);
    let recent = started - key.mtime_ns < RECENT_NS || started - key.ctime_ns < RECENT_NS;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&before, tar::HeaderMode::Complete);
    let mut reader = Exactly {
        inner: (&mut file).take(key.size),
        left: key.size,
        short: false,
        hasher: recent.then(Sha256::new),
    };
    builder.append_data(&mut header, &found.name, &mut reader)?;
    let short = reader.short;
    let digest = reader.hasher.take().map(|h| hex::encode(h.finalize()));
    let after = FileKey::of(&fs::symlink_metadata(&found.path).unwrap_or(before));
    let copied = if short || after != key {
        Copied::Changed
    } else {
        match digest {
            Some(sha256) => Copied::Recent { sha256 },
            None => Copied::Settled,
        }
    };
    Ok(Some(Entry {
        path: found.name.clone(),
        kind: Kind::File,
        key: Some(key),
        copied: Some(copied),
    }))
}

/// Exactly `left` bytes: the file's own, then zeros if it shrank.
struct Exactly<R> {
    inner: R,
    left: u64,
    short: bool,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            n = want;
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// SHA-256 (hex) of a file's contents.
pub fn sha256_of(path: &Path) -> io::Result<String> {
    hubshift_common::digest::sha256_file(path).map(|(sha, _)| sha)
}
