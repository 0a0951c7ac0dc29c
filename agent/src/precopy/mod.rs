//! Pre-copy: the bulk of a backup taken while the hub still runs, so that
//! the backup inside the outage only archives what changed since.
//!
//! [`take_base`] archives the running trees (each file stat-ed before and
//! after it is read, see [`tree`]) and keeps an [`index::BaseIndex`] of
//! what it saw; [`backup_with_base`] then writes a delta of the stopped
//! trees: every directory, every link, and the regular files whose key
//! (size, mtime, ctime, inode, mode) moved, that were changed while the
//! base read them, or that were changed so recently that their digest
//! decides. Paths gone since are listed for deletion ([`pair`]). A base
//! that cannot be trusted, or a delta that would carry more than
//! [`DELTA_MAX_SHARE`] of the bytes, gives a full backup instead, and the
//! answer says why.

pub mod index;
pub mod pair;
pub mod tree;

use crate::appdata::{self, BackupInfo};
use crate::config::Config;
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::places::backups_dir;
use flate2::Compression;
use hubshift_common::archive::{ArchiveError, BACKUP_LEVEL, UnpackLimits, list_tar_gz};
use hubshift_common::digest::{HashingWriter, sha256_file};
use hubshift_common::pgzip::ParallelGzEncoder;
use index::{ArchiveMark, BaseIndex, Copied, Entry, FileKey, Kind};
use std::collections::HashMap;
use std::fs;
use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

/// A delta carrying more than this share of the trees' file bytes is not
/// worth its base: a full backup is written instead.
pub const DELTA_MAX_SHARE: f64 = 0.5;

/// A backup written against a base: the file, and the pair's other half.
#[derive(Debug, Clone)]
pub struct Made {
    /// The backup file (a delta, or a full backup).
    pub info: BackupInfo,
    /// Set when it is a delta.
    pub base: Option<pair::Manifest>,
    /// A base was asked for and this is a full backup: why.
    pub full_because: String,
    /// Milliseconds spent writing it.
    pub write_ms: u64,
}

impl Made {
    /// A full backup (or a base) with no delta, written since `started`
    /// (0 ms when it existed already).
    pub fn full(info: BackupInfo, started: Instant) -> Self {
        Self {
            write_ms: if info.existed {
                0
            } else {
                started.elapsed().as_millis() as u64
            },
            info,
            base: None,
            full_because: String::new(),
        }
    }
}

fn archive_error(path: &Path) -> impl FnOnce(ArchiveError) -> AgentError + '_ {
    move |e| match e {
        ArchiveError::Unsupported { .. } => {
            AgentError::FailedPrecondition(format!("cannot back up: {e}"))
        }
        ArchiveError::Io(e) => AgentError::io("cannot archive appdata into", path)(e),
        other => AgentError::Internal(other.to_string()),
    }
}

type Encoder = ParallelGzEncoder<HashingWriter<BufWriter<fs::File>>>;

/// A tar.gz being written into a temporary in the backups directory.
struct Writing {
    tmp: tempfile::NamedTempFile,
    builder: tar::Builder<Encoder>,
}

impl Writing {
    /// `workers`: compression threads (all cores after the stop; half of
    /// them for a base, which shares the host with the running hub).
    fn start(cfg: &Config, kind: &str, workers: usize) -> Result<Self> {
        let dir = backups_dir(cfg);
        fsutil::ensure_dir(&dir, 0o700)?;
        let tmp = crate::scratch::file_in(&dir, kind)?;
        let file = tmp
            .reopen()
            .map_err(AgentError::io("cannot open", tmp.path()))?;
        let writer = HashingWriter::new(BufWriter::with_capacity(1024 * 1024, file));
        let mut builder = tar::Builder::new(ParallelGzEncoder::with_workers(
            writer,
            Compression::new(BACKUP_LEVEL),
            workers,
        ));
        builder.follow_symlinks(false);
        builder.mode(tar::HeaderMode::Complete);
        Ok(Self { tmp, builder })
    }

    /// Ends the archive, fsyncs it; returns SHA-256 and size.
    fn finish(self, path: &Path) -> Result<(tempfile::NamedTempFile, String, u64)> {
        let Writing { tmp, builder } = self;
        let io = AgentError::io("cannot archive appdata into", path);
        let encoder = builder.into_inner().map_err(io)?;
        let writer = encoder
            .finish()
            .map_err(AgentError::io("cannot archive appdata into", path))?;
        let (sha256, size) = crate::appdata::seal(writer, tmp.path())?;
        Ok((tmp, sha256, size))
    }
}

/// Publishes a finished temporary as `path`, never over another file.
fn publish(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    tmp.persist_noclobber(path)
        .map_err(|e| AgentError::io("cannot rename into", path)(e.error))?;
    if let Some(dir) = path.parent() {
        fsutil::sync_dir(dir);
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Nice value of the thread that takes a base (and of the compression
/// threads it starts, which inherit it): the running hub comes first.
const BASE_NICE: i32 = 10;

/// [`take_base`] on a thread of its own at a lower priority ([`BASE_NICE`]),
/// so that the hub, still serving, is not starved of CPU by the copy.
pub fn take_base_gently(cfg: std::sync::Arc<Config>, id: String) -> Result<BackupInfo> {
    std::thread::Builder::new()
        .name("base-backup".into())
        .spawn(move || {
            // Linux: nice is per thread; only this one (and its children).
            // SAFETY: plain syscalls on the calling thread.
            let rc = unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BASE_NICE)
            };
            if rc != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "base backup runs at normal priority");
            }
            take_base(&cfg, &id)
        })
        .map_err(|e| AgentError::Internal(format!("cannot start the base backup: {e}")))?
        .join()
        .map_err(|_| AgentError::Internal("the base backup ended abnormally".into()))?
}

/// Takes (or finds) base `id` of the running trees: archive read back in
/// full, then its index, then the archive published under its name.
pub fn take_base(cfg: &Config, id: &str) -> Result<BackupInfo> {
    let path = appdata::backup_path(cfg, id)?;
    let dir = backups_dir(cfg);
    if path.is_file() {
        match BaseIndex::load(&dir, id).and_then(|i| i.archive_unchanged(&path).map(|_| i)) {
            Ok(index) => {
                return Ok(BackupInfo {
                    id: id.to_string(),
                    size: index.archive.size,
                    sha256: index.archive.sha256,
                    path,
                    existed: true,
                });
            }
            // A file without an index is not a base (the index is written
            // before the archive is published): a backup, never removed.
            Err(_) if !index::index_path(&dir, id).exists() => {
                return Err(AgentError::AlreadyExists(format!(
                    "backup {id} exists and is not a base"
                )));
            }
            Err(why) => {
                // A base no delta can trust is of no use: taken again.
                tracing::warn!(id, why = %why, "replacing a base that cannot be trusted");
                fs::remove_file(&path).map_err(AgentError::io("cannot remove", &path))?;
            }
        }
    }
    if !cfg.paths.appdata.is_dir() {
        return Err(AgentError::FailedPrecondition(format!(
            "appdata {} does not exist",
            cfg.paths.appdata.display()
        )));
    }
    let found = tree::walk(&appdata::backup_sources(cfg)).map_err(archive_error(&path))?;
    let mut writing = Writing::start(cfg, "base", (cores() / 2).max(1))?;
    let mut entries = Vec::with_capacity(found.len());
    for f in &found {
        if let Some(e) = tree::append(&mut writing.builder, f).map_err(archive_error(&path))? {
            entries.push(e);
        }
    }
    let (tmp, sha256, size) = writing.finish(&path)?;
    // Read back in full now, outside any outage: the delta's verification
    // then only reads the base again if its file changes.
    let (again, _) = sha256_file(tmp.path()).map_err(AgentError::io("cannot read", tmp.path()))?;
    if again != sha256 {
        return Err(AgentError::Internal(format!(
            "base {id} reads back as {again}, written as {sha256}"
        )));
    }
    let file = fs::File::open(tmp.path()).map_err(AgentError::io("cannot open", tmp.path()))?;
    list_tar_gz(
        std::io::BufReader::with_capacity(256 * 1024, file),
        UnpackLimits {
            max_total_bytes: u64::MAX,
            max_entries: u64::MAX,
        },
    )
    .map_err(|e| AgentError::Internal(format!("base {id} does not read back: {e}")))?;
    let meta = fs::metadata(tmp.path()).map_err(AgentError::io("cannot stat", tmp.path()))?;
    let key = FileKey::of(&meta);
    let changed = entries
        .iter()
        .filter(|e| e.copied == Some(Copied::Changed))
        .count();
    BaseIndex {
        format: index::FORMAT,
        id: id.to_string(),
        appdata: cfg.paths.appdata.clone(),
        archive: ArchiveMark {
            sha256: sha256.clone(),
            size,
            ino: key.ino,
            mtime_ns: key.mtime_ns,
        },
        entries,
    }
    .store(&dir)?;
    publish(tmp, &path)?;
    tracing::info!(
        id,
        bytes = size,
        changed_while_read = changed,
        "base backup written"
    );
    Ok(BackupInfo {
        id: id.to_string(),
        size,
        sha256,
        path,
        existed: false,
    })
}

/// Whether the current file `found` may be left out of the delta.
fn unchanged(found: &tree::Found, base: Option<&Entry>) -> bool {
    let Some(Entry {
        kind: Kind::File,
        key: Some(key),
        copied: Some(copied),
        ..
    }) = base
    else {
        return false;
    };
    if FileKey::of(&found.meta) != *key {
        return false;
    }
    match copied {
        Copied::Settled => true,
        Copied::Recent { sha256 } => tree::sha256_of(&found.path).is_ok_and(|s| s == *sha256),
        Copied::Changed => false,
    }
}

/// Why base `base_id` cannot serve a delta of this agent's trees, if so.
fn distrust(cfg: &Config, base_id: &str) -> std::result::Result<BaseIndex, String> {
    let path = appdata::backup_path(cfg, base_id).map_err(|e| e.to_string())?;
    if !path.is_file() {
        return Err(format!("base {base_id} does not exist"));
    }
    let index = BaseIndex::load(&backups_dir(cfg), base_id)
        .map_err(|why| format!("base {base_id}: {why}"))?;
    index
        .archive_unchanged(&path)
        .map_err(|why| format!("base {base_id}: {why}"))?;
    if index.appdata != cfg.paths.appdata {
        return Err(format!(
            "base {base_id} was taken of {}, not of {}",
            index.appdata.display(),
            cfg.paths.appdata.display()
        ));
    }
    Ok(index)
}

/// Writes backup `id` of the stopped trees against base `base_id`: a delta
/// when the base can be trusted and the delta is small enough, a full
/// backup otherwise. An existing backup `id` is returned as it is.
pub fn backup_with_base(cfg: &Config, id: &str, base_id: &str) -> Result<Made> {
    let started = Instant::now();
    let path = appdata::backup_path(cfg, id)?;
    hubshift_common::names::validate_name("base id", base_id)?;
    if path.is_file() {
        let info = appdata::backup(cfg, id)?;
        let base = pair::read_manifest(&path, id)?;
        return Ok(Made {
            info,
            full_because: String::new(),
            base,
            write_ms: 0,
        });
    }
    let full = |why: String| -> Result<Made> {
        tracing::info!(id, base_id, why = %why, "full backup instead of a delta");
        let info = appdata::backup(cfg, id)?;
        Ok(Made {
            info,
            base: None,
            full_because: why,
            write_ms: started.elapsed().as_millis() as u64,
        })
    };
    let index = match distrust(cfg, base_id) {
        Ok(index) => index,
        Err(why) => return full(why),
    };
    if !cfg.paths.appdata.is_dir() {
        return Err(AgentError::FailedPrecondition(format!(
            "appdata {} does not exist",
            cfg.paths.appdata.display()
        )));
    }
    let found = tree::walk(&appdata::backup_sources(cfg)).map_err(archive_error(&path))?;
    let by_path: HashMap<&str, &Entry> =
        index.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut total = 0u64;
    let mut carried = 0u64;
    let mut take = Vec::new();
    for f in &found {
        let base = by_path.get(f.name.as_str()).copied();
        if f.kind == Kind::File {
            total += f.meta.len();
            if unchanged(f, base) {
                continue;
            }
            carried += f.meta.len();
        }
        take.push(f);
    }
    if total > 0 && carried as f64 > DELTA_MAX_SHARE * total as f64 {
        return full(format!(
            "the delta would carry {carried} of {total} bytes (more than {}%)",
            (DELTA_MAX_SHARE * 100.0) as u32
        ));
    }
    let now: HashMap<&str, Kind> = found.iter().map(|f| (f.name.as_str(), f.kind)).collect();
    let deleted: Vec<String> = index
        .entries
        .iter()
        .filter(|e| now.get(e.path.as_str()) != Some(&e.kind))
        .map(|e| e.path.clone())
        .collect();
    let manifest = pair::Manifest {
        format: index::FORMAT,
        base_id: base_id.to_string(),
        base_sha256: index.archive.sha256.clone(),
        base_size: index.archive.size,
    };
    let mut writing = Writing::start(cfg, "backup", cores())?;
    pair::write_head(&mut writing.builder, &manifest, &deleted)
        .map_err(AgentError::io("cannot archive appdata into", &path))?;
    for f in take {
        tree::append(&mut writing.builder, f).map_err(archive_error(&path))?;
    }
    let (tmp, sha256, size) = writing.finish(&path)?;
    publish(tmp, &path)?;
    let write_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        id,
        base_id,
        bytes = size,
        carried,
        deleted = deleted.len(),
        write_ms,
        "delta backup written"
    );
    Ok(Made {
        info: BackupInfo {
            id: id.to_string(),
            size,
            sha256,
            path,
            existed: false,
        },
        base: Some(manifest),
        full_because: String::new(),
        write_ms,
    })
}

/// Restore: see [`pair::restore`].
pub use pair::restore;

/// VerifyBackup: the backup re-read in full; for a delta, its base checked
/// against what the delta names too ([`pair::verify_base`]).
pub fn verify(
    cfg: &Config,
    id: &str,
    expected: &str,
) -> Result<(appdata::Verified, Option<pair::BaseChecked>)> {
    let verified = appdata::verify(cfg, id, expected)?;
    let path = appdata::existing_backup(cfg, id)?;
    let base = match pair::read_manifest(&path, id)? {
        Some(m) => Some(pair::verify_base(cfg, id, &m)?),
        None => None,
    };
    Ok((verified, base))
}
