//! appdata backups: write, verify, stream back, restore. A backup holds
//! `appdata/` and each extra directory under its own top-level name.

use crate::clock;
use crate::config::Config;
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::places::backups_dir;
use hubshift_common::archive::{
    ArchiveError, BACKUP_LEVEL, PackSource, UnpackLimits, list_tar_gz, pack_tar_gz_parallel,
    unpack_tar_gz,
};
use hubshift_common::digest::{HashingWriter, sha256_file};
use hubshift_common::names::validate_name;
use std::fs;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

/// A backup file on this host.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    /// Its id.
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Where it lives.
    pub path: PathBuf,
    /// True when it existed already.
    pub existed: bool,
}

/// Where backup `id` lies (the id checked first).
pub fn backup_path(cfg: &Config, id: &str) -> Result<PathBuf> {
    validate_name("backup id", id)?;
    Ok(backups_dir(cfg).join(format!("{id}.tar.gz")))
}

/// Top-level names in a backup: `appdata`, then each extra directory under
/// its base name, or `extra-<i>` when that is taken or unusable.
pub fn sources(cfg: &Config) -> Vec<PackSource> {
    let mut out = vec![PackSource {
        name: "appdata".into(),
        path: cfg.paths.appdata.clone(),
        only_prefix: None,
    }];
    for (i, dir) in cfg.paths.extra_backup_dirs.iter().enumerate() {
        let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = if validate_name("dir", base).is_ok() && !out.iter().any(|s| s.name == base) {
            base.to_string()
        } else {
            format!("extra-{i}")
        };
        out.push(PackSource {
            name,
            path: dir.clone(),
            only_prefix: None,
        });
    }
    out
}

/// Top-level name, in a backup, of the store-and-forward files found in the
/// active runtime directory (`directories.storeForwardData` unset).
pub const RUNTIME_STORE_FORWARD: &str = "runtime-store-forward";

/// What Backup archives: [`sources`], plus the store-and-forward files of
/// the active runtime directory when it holds any. Restore never puts
/// those back (the live files follow the runtime switch instead; replaying
/// old ones again would duplicate data): they are there for an operator.
pub fn backup_sources(cfg: &Config) -> Vec<PackSource> {
    let mut out = sources(cfg);
    if let Some(dir) = crate::hubfiles::layout::active_runtime_dir(cfg)
        && crate::hubfiles::settings::writestore_files(&dir).is_ok_and(|f| !f.is_empty())
    {
        out.push(PackSource {
            name: RUNTIME_STORE_FORWARD.into(),
            path: dir,
            only_prefix: Some(crate::hubfiles::settings::WRITESTORE_PREFIX.into()),
        });
    }
    out
}

/// Four hex digits for time-based ids.
pub fn random_suffix() -> String {
    let mut b = [0u8; 2];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

/// Writes `<state>/backups/<id>.tar.gz` (temp file, fsync, rename), or
/// returns the existing one.
pub fn backup(cfg: &Config, id: &str) -> Result<BackupInfo> {
    let id = if id.is_empty() {
        format!("{}-{}", clock::timestamp(), random_suffix())
    } else {
        id.to_string()
    };
    let path = backup_path(cfg, &id)?;
    if path.is_file() {
        let (sha256, size) = sha256_file(&path).map_err(AgentError::io("cannot read", &path))?;
        return Ok(BackupInfo {
            id,
            size,
            sha256,
            path,
            existed: true,
        });
    }
    if !cfg.paths.appdata.is_dir() {
        return Err(AgentError::FailedPrecondition(format!(
            "appdata {} does not exist",
            cfg.paths.appdata.display()
        )));
    }
    let dir = backups_dir(cfg);
    fsutil::ensure_dir(&dir, 0o700)?;
    let tmp = crate::scratch::file_in(&dir, "backup")?;
    let file = tmp
        .reopen()
        .map_err(AgentError::io("cannot open", tmp.path()))?;
    let writer = HashingWriter::new(BufWriter::with_capacity(1024 * 1024, file));
    let writer =
        pack_tar_gz_parallel(&backup_sources(cfg), writer, BACKUP_LEVEL).map_err(|e| match e {
            // A socket or FIFO in appdata: name it now rather than write a
            // backup that VerifyBackup or Restore would refuse later.
            ArchiveError::Unsupported { .. } => {
                AgentError::FailedPrecondition(format!("cannot back up: {e}"))
            }
            ArchiveError::Io(e) => AgentError::io("cannot archive appdata into", &path)(e),
            other => AgentError::Internal(other.to_string()),
        })?;
    let (sha256, size) = seal(writer, tmp.path())?;
    tmp.persist_noclobber(&path)
        .map_err(|e| AgentError::io("cannot rename into", &path)(e.error))?;
    fsutil::sync_dir(&dir);
    tracing::info!(id = %id, bytes = size, sha256 = %sha256, "backup written");
    Ok(BackupInfo {
        id,
        size,
        sha256,
        path,
        existed: false,
    })
}

/// Backup `id`'s file; NotFound when there is none.
pub fn existing_backup(cfg: &Config, id: &str) -> Result<PathBuf> {
    let path = backup_path(cfg, id)?;
    if !path.is_file() {
        return Err(AgentError::NotFound(format!("no backup {id}")));
    }
    Ok(path)
}

/// Refuses a SHA-256 other than the expected one (empty: any).
pub fn check_sha(actual: &str, expected: &str) -> Result<()> {
    if !expected.is_empty() && !actual.eq_ignore_ascii_case(expected) {
        return Err(AgentError::FailedPrecondition(format!(
            "checksum mismatch: expected {expected}, found {actual}"
        )));
    }
    Ok(())
}

/// What a backup's re-reading found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// SHA-256 (hex) of the file.
    pub sha256: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Entries in the archive.
    pub entries: u64,
}

/// Re-hashes and lists a backup.
pub fn verify(cfg: &Config, id: &str, expected: &str) -> Result<Verified> {
    let path = existing_backup(cfg, id)?;
    let (sha, size) = sha256_file(&path).map_err(AgentError::io("cannot read", &path))?;
    check_sha(&sha, expected)?;
    let file = fs::File::open(&path).map_err(AgentError::io("cannot open", &path))?;
    let limits = UnpackLimits {
        max_total_bytes: u64::MAX,
        max_entries: u64::MAX,
    };
    let stats = list_tar_gz(std::io::BufReader::with_capacity(256 * 1024, file), limits)
        .map_err(|e| AgentError::FailedPrecondition(format!("backup {id} is unreadable: {e}")))?;
    Ok(Verified {
        sha256: sha,
        size_bytes: size,
        entries: stats.entries,
    })
}

/// Opens a backup for streaming.
pub fn open(cfg: &Config, id: &str) -> Result<fs::File> {
    let path = existing_backup(cfg, id)?;
    fs::File::open(&path).map_err(AgentError::io("cannot open", &path))
}

/// Streams `file` in CHUNK_SIZE pieces into `tx` (blocking side); a read
/// error ends the stream with that error.
pub fn stream_file(mut file: fs::File, tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let mut buf = vec![0u8; hubshift_common::CHUNK_SIZE];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot read backup while streaming");
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
            return; // the client went away
        }
    }
}

/// Replaces appdata (and extra directories present in the backup) with the
/// backup's trees. The replaced trees are renamed to
/// `<dir>.replaced-<timestamp>`, never deleted. Returns appdata's set-aside
/// path (empty when there was no appdata). The caller makes sure the hub
/// does not run.
pub fn restore(cfg: &Config, id: &str, expected: &str) -> Result<String> {
    let path = existing_backup(cfg, id)?;
    let (sha, _) = sha256_file(&path).map_err(AgentError::io("cannot read", &path))?;
    check_sha(&sha, expected)?;
    // Unpack once next to appdata (same filesystem), then move each tree.
    let staging = restore_staging_for(cfg)?;
    let file = fs::File::open(&path).map_err(AgentError::io("cannot open", &path))?;
    unpack_backup(file, staging.path(), id)?;
    place_restored(cfg, staging.path(), id)
}

/// A private directory beside appdata to unpack a backup into.
pub fn restore_staging_for(cfg: &Config) -> Result<tempfile::TempDir> {
    let parent = cfg
        .paths
        .appdata
        .parent()
        .ok_or_else(|| AgentError::Internal("appdata has no parent".into()))?;
    restore_staging(parent)
}

/// Unpacks backup `id` (read from `file`) into `staging`, mapping errors
/// to the host's fault or the backup's.
pub fn unpack_backup(file: impl Read, staging: &Path, id: &str) -> Result<()> {
    let limits = UnpackLimits {
        max_total_bytes: u64::MAX,
        max_entries: u64::MAX,
    };
    unpack_tar_gz(
        std::io::BufReader::with_capacity(256 * 1024, file),
        staging,
        limits,
    )
    .map_err(|e| match e {
        // No room beside appdata is the host's fault, not the backup's.
        ArchiveError::Io(e) if crate::error::is_host_fault(&e) => {
            AgentError::io("cannot unpack the backup into", staging)(e)
        }
        e => AgentError::FailedPrecondition(format!("backup {id} cannot be unpacked: {e}")),
    })?;
    Ok(())
}

/// Moves the trees unpacked into `staging` into place, each old one set
/// aside. Returns appdata's set-aside path (empty when there was none).
pub fn place_restored(cfg: &Config, staging: &Path, id: &str) -> Result<String> {
    let stamp = clock::timestamp();
    let mut set_aside = String::new();
    if !staging.join("appdata").is_dir() {
        return Err(AgentError::FailedPrecondition(format!(
            "backup {id} holds no appdata/ tree"
        )));
    }
    for source in &sources(cfg) {
        let restored = staging.join(&source.name);
        if !restored.is_dir() {
            continue;
        }
        let aside = place(&restored, &source.path, &stamp)?;
        if source.name == "appdata" {
            set_aside = aside.map(|p| p.display().to_string()).unwrap_or_default();
        }
    }
    tracing::info!(id = %id, set_aside = %set_aside, "appdata restored");
    Ok(set_aside)
}

/// A private directory beside `parent`'s contents (same filesystem, so its
/// trees can be renamed into place), removed on drop; an agent killed
/// meanwhile leaves it for the next start to remove ([`crate::scratch`]).
fn restore_staging(parent: &Path) -> Result<tempfile::TempDir> {
    crate::scratch::dir_in(parent, "restore")
}

/// Moves `target` aside (if present) and renames `restored` into its place.
/// `restored` must be on the same filesystem as `target`; when it is not
/// (an extra directory elsewhere) it is first copied next to `target`.
fn place(restored: &Path, target: &Path, stamp: &str) -> Result<Option<PathBuf>> {
    let parent = target
        .parent()
        .ok_or_else(|| AgentError::Internal(format!("{} has no parent", target.display())))?;
    fs::create_dir_all(parent).map_err(AgentError::io("cannot create", parent))?;
    let local = restore_staging(parent)?;
    let incoming = local.path().join("tree");
    if fs::rename(restored, &incoming).is_err() {
        copy_tree(restored, &incoming)?;
    }
    let aside = if fs::symlink_metadata(target).is_ok() {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut aside = parent.join(format!("{name}.replaced-{stamp}"));
        let mut n = 1;
        while fs::symlink_metadata(&aside).is_ok() {
            aside = parent.join(format!("{name}.replaced-{stamp}-{n}"));
            n += 1;
        }
        fs::rename(target, &aside).map_err(AgentError::io("cannot move aside", target))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = fs::rename(&incoming, target) {
        // Put the old tree back rather than leave no appdata at all.
        if let Some(a) = &aside {
            let _ = fs::rename(a, target);
        }
        return Err(AgentError::io("cannot rename restored tree to", target)(e));
    }
    fsutil::sync_dir(parent);
    Ok(aside)
}

/// Copies a tree (files, dirs, symlinks as links).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir(to).map_err(AgentError::io("cannot create", to))?;
    for entry in fs::read_dir(from).map_err(AgentError::io("cannot list", from))? {
        let entry = entry.map_err(AgentError::io("cannot list", from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(AgentError::io("cannot stat", &src))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&src).map_err(AgentError::io("cannot read link", &src))?;
            std::os::unix::fs::symlink(link, &dst)
                .map_err(AgentError::io("cannot create link", &dst))?;
        } else {
            fs::copy(&src, &dst).map_err(AgentError::io("cannot copy", &src))?;
        }
    }
    Ok(())
}

/// Flushes an archive written through `writer` into its temporary file
/// `tmp` and fsyncs it; its SHA-256 and size.
pub(crate) fn seal(
    writer: HashingWriter<BufWriter<std::fs::File>>,
    tmp: &Path,
) -> Result<(String, u64)> {
    let (buf, sha256, size) = writer.finish();
    let file = buf
        .into_inner()
        .map_err(|e| AgentError::io("cannot write", tmp)(e.into_error()))?;
    file.sync_all()
        .map_err(AgentError::io("cannot fsync", tmp))?;
    Ok((sha256, size))
}
