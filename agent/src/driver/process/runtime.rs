//! Runtimes: client-streamed archive upload into `runtimes/<version>/`,
//! checked (size, SHA-256) before anything becomes visible, and the atomic
//! `current` switch. A tar.gz is unpacked into a private staging directory
//! while it arrives, so the install costs about one pass over the bytes; it
//! is renamed into place only once the whole archive's digest matched.
//! Old runtime directories are never deleted (store-and-forward data may
//! live there).

use super::unzip::unpack_zip;
use crate::config::LimitsSection;
use crate::declared;
use crate::driver::upload::{check_header_fields, check_received, claim_install, receive_chunks};
use crate::driver::{ArchiveFormat, Installed, RuntimeHeader, Upload};
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::places::runtimes_dir;
use hubshift_common::archive::{ArchiveStats, UnpackLimits, unpack_tar_gz};
use hubshift_common::digest::StreamDigest;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every version unpacked under runtimes/, sorted.
pub fn staged_versions(install_root: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(runtimes_dir(install_root))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Where the agent remembers which archive a staged runtime came from.
fn archive_record(state_dir: &Path, version: &str) -> PathBuf {
    state_dir
        .join("runtime-archives")
        .join(format!("{version}.sha256"))
}

/// Checks a header: version, digest, size, format.
fn check_header(h: &mut RuntimeHeader, limits: &LimitsSection) -> Result<()> {
    check_header_fields(h, limits)?;
    match h.format {
        Some(ArchiveFormat::TarGz | ArchiveFormat::Zip) => Ok(()),
        Some(ArchiveFormat::DockerImage) => Err(AgentError::InvalidArgument(
            "this agent runs the hub as a host process (driver \"process\"): an image archive cannot be installed, send TAR_GZ or ZIP".into(),
        )),
        _ => Err(AgentError::InvalidArgument(
            "format must be TAR_GZ or ZIP".into(),
        )),
    }
}

/// Receives an InstallRuntime stream, verifies it and unpacks it into
/// `runtimes/<version>/`. Leaves nothing behind on failure. Activation is
/// the caller's (it needs the hub to be stopped).
pub async fn install(
    upload: Upload,
    state_dir: &Path,
    install_root: &Path,
    limits: LimitsSection,
) -> Result<Installed> {
    let Upload {
        mut header,
        mut chunks,
    } = upload;
    check_header(&mut header, &limits)?;
    let version = header.version.clone();
    let runtimes = runtimes_dir(install_root);
    fsutil::ensure_dir(&runtimes, 0o755)?;
    // One install per version at a time, so the record always describes
    // the published directory; a second one is told so at once.
    let _claim = claim_install(&runtimes.join(&version).display().to_string(), &version)?;
    if let Some(already) = existing(state_dir, &runtimes, &header)? {
        return Ok(Installed {
            header,
            already_installed: already,
        });
    }

    let format = header.format;
    let unpack_limits = UnpackLimits {
        max_total_bytes: limits.max_archive_bytes,
        max_entries: limits.max_archive_entries,
    };
    let started = std::time::Instant::now();

    // tar.gz: unpack into a private staging dir as the bytes arrive.
    // zip (its index sits at the end): keep the bytes in a private temp file.
    let (sink, unpacker) = match format {
        Some(ArchiveFormat::Zip) => {
            let staging = state_dir.join("staging");
            fsutil::ensure_dir(&staging, 0o700)?;
            let tmp = crate::scratch::file_in(&staging, "upload")?;
            (Sink::File(tmp), None)
        }
        _ => {
            let staging = staging_dir(&runtimes)?;
            let (feed, bytes) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
            let dest = staging.path().to_path_buf();
            let unpacker = std::thread::Builder::new()
                .name("runtime-unpack".into())
                .spawn(move || {
                    let reader =
                        io::BufReader::with_capacity(256 * 1024, ChannelReader::new(bytes));
                    unpack_tar_gz(reader, &dest, unpack_limits)
                })
                .map_err(AgentError::io(
                    "cannot start the unpacker for",
                    staging.path(),
                ))?;
            (Sink::Unpack(feed), Some((staging, unpacker)))
        }
    };

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<(Sink, String, u64)> {
        let mut sink = sink;
        let mut digest = StreamDigest::new();
        while let Some(chunk) = rx.blocking_recv() {
            digest.update(&chunk);
            sink.write(chunk)?;
        }
        let size = digest.size();
        Ok((sink, digest.finish(), size))
    });
    let failure = receive_chunks(&mut chunks, &tx, &header, &limits).await;
    drop(tx);
    let written = writer.await?;
    // The feed to the unpacker is closed by now (the sink was dropped or
    // returned): wait for it before judging, so nothing writes afterwards.
    let (sink, sha, size) = match written {
        Ok(w) => w,
        Err(e) => {
            if let Some((_staging, unpacker)) = unpacker {
                let _ = unpacker.join();
            }
            return Err(AgentError::io("cannot write upload in", state_dir)(e));
        }
    };
    let (unpacked, zip_file) = match (unpacker, sink) {
        (Some((staging, unpacker)), sink) => {
            drop(sink);
            let result = unpacker
                .join()
                .map_err(|_| AgentError::Internal("the unpacker panicked".into()))?;
            (Some((staging, result)), None)
        }
        (None, Sink::File(tmp)) => (None, Some(tmp)),
        (None, Sink::Unpack(_)) => {
            return Err(AgentError::Internal("no unpacker for this upload".into()));
        }
    };
    let receive_ms = started.elapsed().as_millis() as u64;
    if let Some(f) = failure {
        return Err(f);
    }
    check_received(&header, size, &sha)?;

    let state_dir = state_dir.to_path_buf();
    let sha_for_record = sha.clone();
    let v = version.clone();
    tokio::task::spawn_blocking(move || match (unpacked, zip_file) {
        (Some((staging, result)), _) => {
            let stats = result.map_err(AgentError::archive(staging.path()))?;
            publish(staging, stats, &runtimes, &v, &state_dir, &sha_for_record)
        }
        (None, Some(tmp)) => {
            let staging = staging_dir(&runtimes)?;
            let mut file = tmp
                .reopen()
                .map_err(AgentError::io("cannot reopen", tmp.path()))?;
            file.rewind()
                .map_err(AgentError::io("cannot rewind", tmp.path()))?;
            let stats = unpack_zip(file, staging.path(), unpack_limits)?;
            drop(tmp);
            publish(staging, stats, &runtimes, &v, &state_dir, &sha_for_record)
        }
        (None, None) => Err(AgentError::Internal("no unpacker for this upload".into())),
    })
    .await??;
    tracing::info!(
        version = %version,
        receive_ms,
        total_ms = started.elapsed().as_millis() as u64,
        "runtime archive received and unpacked"
    );
    tracing::info!(version = %version, sha256 = %sha, bytes = size, "runtime installed");
    Ok(Installed {
        header,
        already_installed: false,
    })
}

/// `Some(true)`: the same archive is staged; `None`: not staged;
/// AlreadyExists when the version is staged from another archive.
fn existing(state_dir: &Path, runtimes: &Path, header: &RuntimeHeader) -> Result<Option<bool>> {
    let dir = runtimes.join(&header.version);
    if fs::symlink_metadata(&dir).is_err() {
        return Ok(None);
    }
    let recorded =
        fs::read_to_string(archive_record(state_dir, &header.version)).unwrap_or_default();
    if recorded.trim() == header.sha256 {
        Ok(Some(true))
    } else {
        Err(AgentError::AlreadyExists(format!(
            "runtime {} is already staged from a different archive",
            header.version
        )))
    }
}

/// Where an upload goes while it arrives.
enum Sink {
    /// A zip's bytes, kept whole until its index (at the end) can be read.
    File(tempfile::NamedTempFile),
    /// A tar.gz's bytes, fed to the unpacker as they come.
    Unpack(std::sync::mpsc::SyncSender<Vec<u8>>),
}

impl Sink {
    fn write(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        match self {
            Sink::File(f) => f.as_file_mut().write_all(&chunk),
            // An unpacker that stopped (a refused entry, or the end of the
            // archive) reports why when joined; keep hashing the rest.
            Sink::Unpack(feed) => {
                let _ = feed.send(chunk);
                Ok(())
            }
        }
    }
}

/// Reads the chunks of a channel as one byte stream; EOF when the sender is gone.
struct ChannelReader {
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(chunks: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            chunks,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A private (0700) staging directory beside the runtimes, removed on drop
/// whatever modes the archive gave its subdirectories.
struct Staging(Option<tempfile::TempDir>);

impl Staging {
    fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Leaves the directory in place (it was renamed into a runtime).
    fn keep(mut self) {
        if let Some(dir) = self.0.take() {
            let _ = dir.keep();
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let path = dir.keep();
            if let Err(e) = hubshift_common::archive::remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove staging directory");
            }
        }
    }
}

fn staging_dir(runtimes: &Path) -> Result<Staging> {
    crate::scratch::dir_in(runtimes, "staging").map(|d| Staging(Some(d)))
}

/// Makes a verified, unpacked runtime visible: records the archive digest
/// and renames the staging directory to `runtimes/<version>`.
fn publish(
    staging: Staging,
    stats: ArchiveStats,
    runtimes: &Path,
    version: &str,
    state_dir: &Path,
    sha: &str,
) -> Result<()> {
    // A runtime is installed only as the version it says it is; on a
    // refusal the staging tree goes with `staging`.
    let declared = declared::check(version, &declared::read_tree(staging.path()))?;
    if declared.is_none() {
        tracing::warn!(
            version,
            "the runtime declares no version: its label is not checked"
        );
    }
    declared::write_record(state_dir, version, declared.as_ref())?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
        .map_err(AgentError::io("cannot set mode of", staging.path()))?;
    let target = runtimes.join(version);
    let appeared =
        || AgentError::AlreadyExists(format!("runtime {version} appeared while unpacking"));
    // The caller holds the version's claim, so only something outside the
    // agent can make the target appear; then the record is left alone.
    if fs::symlink_metadata(&target).is_ok() {
        return Err(appeared());
    }
    // Record first: a crash before the rename leaves a record without a
    // directory, which the next upload simply rewrites.
    let record = archive_record(state_dir, version);
    if let Some(dir) = record.parent() {
        fsutil::ensure_dir(dir, 0o700)?;
    }
    fsutil::write_atomic(&record, format!("{sha}\n").as_bytes(), 0o600)?;
    if let Err(e) = rename_noreplace(staging.path(), &target) {
        let _ = fs::remove_file(&record);
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            appeared()
        } else {
            AgentError::io("cannot rename staging directory to", &target)(e)
        });
    }
    // Renamed away: nothing left to clean.
    staging.keep();
    fsutil::sync_dir(runtimes);
    tracing::debug!(entries = stats.entries, bytes = stats.bytes, "unpacked");
    Ok(())
}

/// rename(2) that refuses to replace an existing target.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cfrom = CString::new(from.as_os_str().as_bytes())?;
    let cto = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD for both.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_install_per_version_the_second_is_told_at_once() {
        let first = claim_install("/opt/runtimes/9.9.1", "9.9.1").unwrap();
        let err = claim_install("/opt/runtimes/9.9.1", "9.9.1").unwrap_err();
        assert!(matches!(err, AgentError::Aborted(_)), "{err}");
        assert!(err.to_string().contains("9.9.1"), "{err}");
        let other = claim_install("/opt/runtimes/9.9.2", "9.9.2").unwrap();
        drop(first);
        let again = claim_install("/opt/runtimes/9.9.1", "9.9.1").unwrap();
        drop((other, again));
    }

    #[test]
    fn a_process_agent_refuses_image_archives_by_their_format() {
        let mut h = RuntimeHeader {
            version: "4.5.0".into(),
            sha256: "A".repeat(64),
            size_bytes: 10,
            format: Some(ArchiveFormat::DockerImage),
            activate: false,
        };
        let err = check_header(&mut h, &LimitsSection::default()).unwrap_err();
        assert!(err.to_string().contains("driver \"process\""), "{err}");
        h.format = Some(ArchiveFormat::TarGz);
        check_header(&mut h, &LimitsSection::default()).unwrap();
        assert_eq!(h.sha256, "a".repeat(64), "digest normalised");
    }
    /// A tar.gz of (path, type, data, mode) entries, written raw (names
    /// such as `../x` included).
    fn raw_tar_gz(entries: &[(&str, tar::EntryType, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_entry_type(*kind);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    /// Uploads `bytes` through [`install`] and returns its outcome.
    fn upload(state: &Path, root: &Path, version: &str, bytes: Vec<u8>, sha: &str) -> Result<()> {
        let header = RuntimeHeader {
            version: version.into(),
            sha256: sha.into(),
            size_bytes: bytes.len() as u64,
            format: Some(ArchiveFormat::TarGz),
            activate: false,
        };
        let upload = Upload {
            header,
            chunks: Box::pin(tokio_stream::iter(vec![Ok(bytes)])),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(install(upload, state, root, LimitsSection::default()))
            .map(|_| ())
    }

    /// Modes do not bind root, and the agent runs unprivileged: as root
    /// this test runs itself again as `nobody`.
    #[test]
    fn refused_archives_leave_nothing_behind_when_unprivileged() {
        use std::os::unix::process::CommandExt;
        const NAME: &str = "driver::process::runtime::tests::refused_archives_leave_nothing_behind_when_unprivileged";
        const NOBODY: u32 = 65534;
        let base = match std::env::var_os("HUBSHIFT_UNPRIVILEGED_DIR") {
            Some(dir) => PathBuf::from(dir),
            None if unsafe { libc::geteuid() } == 0 => {
                let dir = tempfile::tempdir().unwrap();
                std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                    .env("HUBSHIFT_UNPRIVILEGED_DIR", dir.path())
                    .uid(NOBODY)
                    .gid(NOBODY)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "as nobody: {text}");
                assert!(text.contains("1 passed"), "as nobody: {text}");
                return;
            }
            None => tempfile::tempdir().unwrap().keep(),
        };
        assert_ne!(unsafe { libc::geteuid() }, 0, "must run unprivileged");
        let state = base.join("state");
        let root = base.join("opt");
        fs::create_dir_all(&root).unwrap();
        use tar::EntryType::{Directory, Regular};
        // A file, then its directory made read-only (or unreadable), then a
        // refused entry.
        let hostile = raw_tar_gz(&[
            ("ro/f", Regular, b"x", 0o644),
            ("ro/", Directory, b"", 0o555),
            ("none/g", Regular, b"y", 0o644),
            ("none/", Directory, b"", 0o000),
            ("../escape", Regular, b"evil", 0o644),
        ]);
        let sha = hubshift_common::digest::sha256_hex(&hostile);
        let err = upload(&state, &root, "9.9.9", hostile, &sha).unwrap_err();
        assert!(matches!(err, AgentError::InvalidArgument(_)), "{err}");
        // Fully unpacked, then refused for its checksum.
        let locked = raw_tar_gz(&[
            ("ro/f", Regular, b"x", 0o644),
            ("ro/", Directory, b"", 0o555),
            ("none/", Directory, b"", 0o000),
        ]);
        let err = upload(&state, &root, "9.9.8", locked.clone(), &"a".repeat(64)).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        let left: Vec<_> = fs::read_dir(runtimes_dir(&root))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left behind in runtimes/: {left:?}");
        // The same archive with the right checksum installs, and its
        // directories stay the owner's.
        let sha = hubshift_common::digest::sha256_hex(&locked);
        upload(&state, &root, "9.9.8", locked, &sha).unwrap();
        let ro = runtimes_dir(&root).join("9.9.8/ro");
        assert_eq!(
            fs::metadata(&ro).unwrap().permissions().mode() & 0o777,
            0o755
        );
        hubshift_common::archive::remove_tree(&base).unwrap();
    }
}
