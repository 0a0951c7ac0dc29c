//! Runtimes: client-streamed archive upload into `runtimes/<version>/`,
//! checked (size, SHA-256) before anything becomes visible, and the atomic
//! `current` switch. A tar.gz is unpacked into a private staging directory
//! while it arrives, so the install costs about one pass over the bytes; it
//! is renamed into place only once the whole archive's digest matched.
//! Old runtime directories are never deleted (store-and-forward data may
//! live there).

use crate::config::LimitsSection;
use crate::declared;
use crate::driver::upload::{check_header_fields, check_received, claim_install, receive_chunks};
use crate::driver::{ArchiveFormat, Installed, RuntimeHeader, Upload};
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::places::runtimes_dir;
use hubshift_common::archive::{ArchiveStats, UnpackLimits, check_links_on_disk, unpack_tar_gz};
use hubshift_common::digest::StreamDigest;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
