//! The operator is told the truth under every fault (issue 18): the real
//! `hubshift-agent` over mTLS, with real full and read-only file systems
//! (tmpfs mounts: these tests run as root, see [`require_root`]).

mod support;

use hubshift_common::pb::*;
use std::path::{Path, PathBuf};
use support::*;
use tonic::Code;

/// Set to `1` to skip, explicitly, the tests that need root (tmpfs mounts).
const SKIP_ROOT_ENV: &str = "HUBSHIFT_SKIP_ROOT_TESTS";

/// True when the test may mount; panics when it cannot and nobody opted out,
/// so a test never passes without having run.
fn require_root(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var(SKIP_ROOT_ENV).as_deref() == Ok("1") {
        eprintln!("{test}: SKIPPED ({SKIP_ROOT_ENV}=1): it mounts a tmpfs and needs root");
        return false;
    }
    panic!(
        "{test} mounts a tmpfs and must run as root; set {SKIP_ROOT_ENV}=1 to skip it explicitly"
    );
}

/// A small tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount ro {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `e` has `code` and its message names `cause` (and `path`, when given).
fn assert_refused(e: &tonic::Status, code: Code, cause: &str, path: Option<&Path>) {
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.message().contains(cause), "{}", e.message());
    if let Some(path) = path {
        assert!(
            e.message().contains(&path.display().to_string()),
            "{}",
            e.message()
        );
    }
}

/// A backup into a full file system says so (RESOURCE_EXHAUSTED, the OS
/// cause and the path), and into a read-only one (FAILED_PRECONDITION);
/// nothing partial stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_on_a_full_or_read_only_disk_names_the_cause() {
    if !require_root("backup_on_a_full_or_read_only_disk_names_the_cause") {
        return;
    }
    let agent = Agent::start();
    let mut c = agent.controller().await;
    std::fs::write(agent.appdata().join("big.bin"), noise(3 << 20, 1)).unwrap();
    let backups = agent.state().join("backups");
    let disk = Tmpfs::mount(&backups, "1m");

    let e = c
        .backup(BackupRequest {
            id: "full-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(
        &e,
        Code::ResourceExhausted,
        "No space left on device",
        Some(&backups),
    );
    assert_eq!(names_in(&backups), Vec::<String>::new());

    disk.read_only();
    let e = c
        .backup(BackupRequest {
            id: "ro-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(
        &e,
        Code::FailedPrecondition,
        "Read-only file system",
        Some(&backups),
    );
}

/// Pre-copy on a full file system: a base that does not fit, and a delta
/// that does not fit beside its base, each say so (RESOURCE_EXHAUSTED, the
/// OS cause and the path) and leave no temporary and no index behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_and_delta_on_a_full_disk_name_the_cause() {
    if !require_root("base_and_delta_on_a_full_disk_name_the_cause") {
        return;
    }
    let agent = Agent::start();
    let mut c = agent.controller().await;
    std::fs::write(agent.appdata().join("big.bin"), noise(3 << 20, 1)).unwrap();
    let backups = agent.state().join("backups");
    let disk = Tmpfs::mount(&backups, "1m");
    let e = c
        .backup_base(BackupRequest {
            id: "b-base".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(
        &e,
        Code::ResourceExhausted,
        "No space left on device",
        Some(&backups),
    );
    assert_eq!(names_in(&backups), Vec::<String>::new());
    drop(disk);

    let disk = Tmpfs::mount(&backups, "5m");
    c.backup_base(BackupRequest {
        id: "b-base".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut kept = names_in(&backups);
    kept.sort();
    assert_eq!(kept, vec!["b-base.index.json", "b-base.tar.gz"]);
    std::fs::write(agent.appdata().join("new.bin"), noise(2 << 20, 2)).unwrap();
    // Less room left than the delta needs.
    let _ = std::fs::write(backups.join("filler"), noise(5 << 20, 3));
    let e = c
        .backup(BackupRequest {
            id: "b".into(),
            base_id: "b-base".into(),
        })
        .await
        .unwrap_err();
    assert_refused(&e, Code::ResourceExhausted, "No space left on device", None);
    let mut left = names_in(&backups);
    left.retain(|n| n != "filler");
    left.sort();
    assert_eq!(left, kept, "nothing but the base stays");
    drop(disk);
}

/// A runtime unpacked onto a full file system is the host's fault, not a
/// bad archive: RESOURCE_EXHAUSTED with the OS cause; its staging goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_on_a_full_disk_is_not_a_bad_archive() {
    if !require_root("install_on_a_full_disk_is_not_a_bad_archive") {
        return;
    }
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let runtimes = agent.install_root().join("runtimes");
    let _disk = Tmpfs::mount(&runtimes, "1m");
    let bytes = tar_gz(&[("lib/noise.bin", noise(3 << 20, 2))]);
    let sha = sha256_hex(&bytes);
    let e = install(&mut c, "3.0.0", bytes, &sha, ArchiveFormat::TarGz, false)
        .await
        .unwrap_err();
    assert_refused(&e, Code::ResourceExhausted, "No space left on device", None);
    wait_for("the staging directory removed", || {
        names_in(&runtimes).is_empty().then_some(())
    });
}

async fn status(c: &mut Client) -> StatusResponse {
    c.status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn install_active(c: &mut Client, version: &str) {
    let bytes = runtime_archive(version);
    let sha = sha256_hex(&bytes);
    install(c, version, bytes, &sha, ArchiveFormat::TarGz, true)
        .await
        .unwrap();
}

async fn start_node(
    c: &mut Client,
    mode: StartMode,
    node: &str,
) -> Result<StartResponse, tonic::Status> {
    c.start(StartRequest {
        mode: mode as i32,
        node: node.into(),
        jdbc_uri: "jdbc:postgresql://db:5432/hub?user=hub&password=pw-truth".into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn wait_active(c: &mut Client) {
    wait_async("hub RUNNING and ACTIVE", || {
        let mut c = c.clone();
        async move {
            let s = status(&mut c).await;
            (s.state == HubState::Running as i32 && s.role == HubRole::Active as i32).then_some(())
        }
    })
    .await;
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Generous bound for an answer that must not wait on another request.
const ANSWER: std::time::Duration = std::time::Duration::from_secs(60);

/// A Stop timeout above the documented maximum is refused; an abandoned
/// Stop with a long timeout on a hub that ignores SIGTERM does not block a
/// later, more urgent Stop, which kills at its own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_long_stop_does_not_block_an_urgent_one() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    install_active(&mut c, "1.0.0").await;
    let r = start_node(&mut c, StartMode::Start, "stubborn")
        .await
        .unwrap();
    wait_active(&mut c).await;

    let e = tokio::time::timeout(
        ANSWER,
        c.stop(StopRequest {
            timeout_seconds: u32::MAX,
        }),
    )
    .await
    .expect("an absurd timeout is answered at once")
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("3600"), "{}", e.message());
    assert!(pid_alive(r.pid), "a refused stop stops nothing");

    // The first caller asks for a long graceful stop, then goes away.
    let mut c1 = c.clone();
    let long = tokio::spawn(async move {
        c1.stop(StopRequest {
            timeout_seconds: 3000,
        })
        .await
    });
    wait_for("the long stop under way", || {
        agent.stderr_all().contains("stopping hub").then_some(())
    });
    long.abort();

    let st = tokio::time::timeout(ANSWER, c.stop(StopRequest { timeout_seconds: 1 }))
        .await
        .expect("the urgent stop takes over instead of waiting for the long one")
        .unwrap()
        .into_inner();
    assert!(st.was_running && st.killed, "{st:?}");
    assert!(!pid_alive(r.pid));
    assert_eq!(status(&mut c).await.state, HubState::Stopped as i32);
}

/// A Stop that finds the hub held by another operation (a long HA create)
/// gives up at its own deadline with a clear answer instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_behind_a_long_create_answers_at_its_deadline() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    install_active(&mut c, "1.0.0").await;
    let mut c1 = c.clone();
    let create = tokio::spawn(async move {
        start_node(&mut c1, StartMode::CreateAndStart, "very-slow-create").await
    });
    wait_async("create running (STARTING)", || {
        let mut c = c.clone();
        async move { (status(&mut c).await.state == HubState::Starting as i32).then_some(()) }
    })
    .await;
    let e = tokio::time::timeout(ANSWER, c.stop(StopRequest { timeout_seconds: 1 }))
        .await
        .expect("the stop is answered at its deadline")
        .unwrap_err();
    assert!(!create.is_finished(), "answered while create still runs");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("Start"), "{}", e.message());
    assert!(e.message().contains("retry"), "{}", e.message());
    create.await.unwrap().unwrap();
    let st = c
        .stop(StopRequest { timeout_seconds: 5 })
        .await
        .unwrap()
        .into_inner();
    assert!(st.was_running, "{st:?}");
}

/// A second upload of a version that is being installed is answered at
/// once (ABORTED, naming the version), not left unread until it times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upload_of_a_version_in_progress_is_answered_at_once() {
    let agent = Agent::start_with("upload_idle_timeout_secs = 600\n", None);
    let mut c = agent.controller().await;
    let bytes = runtime_archive("2.0.0");
    let sha = sha256_hex(&bytes);
    // The first upload sends its header and half of its bytes, then waits.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(InstallRuntimeRequest {
        item: Some(install_runtime_request::Item::Header(RuntimeHeader {
            version: "2.0.0".into(),
            sha256: sha.clone(),
            size_bytes: bytes.len() as u64,
            format: ArchiveFormat::TarGz as i32,
            activate: false,
        })),
    })
    .await
    .unwrap();
    tx.send(InstallRuntimeRequest {
        item: Some(install_runtime_request::Item::Chunk(
            bytes[..bytes.len() / 2].to_vec(),
        )),
    })
    .await
    .unwrap();
    let mut c1 = c.clone();
    let first = tokio::spawn(async move {
        c1.install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    wait_for("the first upload staging", || {
        names_in(&agent.install_root().join("runtimes"))
            .iter()
            .any(|n| n.starts_with('.'))
            .then_some(())
    });
    let e = tokio::time::timeout(
        ANSWER,
        install(
            &mut c,
            "2.0.0",
            bytes.clone(),
            &sha,
            ArchiveFormat::TarGz,
            false,
        ),
    )
    .await
    .expect("the second upload is answered while the first one runs")
    .unwrap_err();
    assert!(!first.is_finished());
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(
        e.message().contains("2.0.0") && e.message().contains("another request"),
        "{}",
        e.message()
    );
    // The first one finishes; the same archive again is then already installed.
    tx.send(InstallRuntimeRequest {
        item: Some(install_runtime_request::Item::Chunk(
            bytes[bytes.len() / 2..].to_vec(),
        )),
    })
    .await
    .unwrap();
    drop(tx);
    first.await.unwrap().unwrap();
    let again = install(&mut c, "2.0.0", bytes, &sha, ArchiveFormat::TarGz, false)
        .await
        .unwrap();
    assert!(again.already_installed);
}

/// A tar.gz of (path, bytes) entries.
fn tar_gz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// intelligencehub-runtime.jar with an Implementation-Version.
fn runtime_jar(version: &str) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(
        "META-INF/MANIFEST.MF",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    write!(
        w,
        "Manifest-Version: 1.0\r\nImplementation-Title: Intelligence Hub\r\nImplementation-Version: {version}\r\n\r\n"
    )
    .unwrap();
    w.finish().unwrap().into_inner()
}

/// A runtime is installed only as the version it declares (VERSION file,
/// release folder, the runtime jar's manifest): a mislabelled one is
/// refused naming both versions and leaves nothing; one that declares
/// nothing is accepted and said to be unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mislabelled_runtime_is_refused_at_staging() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let runtimes = agent.install_root().join("runtimes");
    let hub = b"#!/bin/sh\nexit 0\n".to_vec();
    let refused = [
        ("plain VERSION", runtime_archive("4.1.0")),
        (
            "release folder",
            tar_gz(&[("HighByte-Intelligence-Hub-4.1/runtime/bin/hub", hub.clone())]),
        ),
        (
            "hubsim VERSION in a release",
            tar_gz(&[
                (
                    "HighByte-Intelligence-Hub-4.2.0/runtime/VERSION",
                    b"4.1.0\n".to_vec(),
                ),
                (
                    "HighByte-Intelligence-Hub-4.2.0/runtime/bin/hub",
                    hub.clone(),
                ),
            ]),
        ),
        (
            "jar manifest",
            tar_gz(&[
                (
                    "HighByte-Intelligence-Hub-4.2/runtime/intelligencehub-runtime.jar",
                    runtime_jar("4.1.0"),
                ),
                (
                    "HighByte-Intelligence-Hub-4.2/runtime/lib/x.jar",
                    hub.clone(),
                ),
            ]),
        ),
    ];
    for (what, bytes) in refused {
        let sha = sha256_hex(&bytes);
        let e = install(&mut c, "4.2.0", bytes, &sha, ArchiveFormat::TarGz, false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(
            e.message().contains("4.1") && e.message().contains("4.2.0"),
            "{what}: {}",
            e.message()
        );
        assert_eq!(names_in(&runtimes), Vec::<String>::new(), "{what}");
    }

    // The vendor folder names major.minor: 4.2 declares 4.2.0 too.
    let good = tar_gz(&[
        (
            "HighByte-Intelligence-Hub-4.2/runtime/intelligencehub-runtime.jar",
            runtime_jar("4.2.0"),
        ),
        ("HighByte-Intelligence-Hub-4.2/runtime/bin/hub", hub.clone()),
    ]);
    install(
        &mut c,
        "4.2.0",
        good.clone(),
        &sha256_hex(&good),
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap();

    // Nothing declared: accepted, and Status says it is unchecked.
    let bare = tar_gz(&[("bin/hub", hub)]);
    install(
        &mut c,
        "4.3.0",
        bare.clone(),
        &sha256_hex(&bare),
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap();
    let s = status(&mut c).await;
    let staged = |v: &str| {
        s.staged
            .iter()
            .find(|r| r.version == v)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(staged("4.3.0").version, "4.3.0", "{:?}", s.staged);
    assert_eq!(staged("4.3.0").declared_version, "", "{:?}", s.staged);
    assert_eq!(staged("4.2.0").declared_version, "4.2.0", "{:?}", s.staged);
    assert!(
        staged("4.2.0").declared_by.contains("MANIFEST"),
        "{:?}",
        s.staged
    );
    // The same bare archive again is already installed, still unchecked.
    let r = install(
        &mut c,
        "4.3.0",
        bare.clone(),
        &sha256_hex(&bare),
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap();
    assert!(r.already_installed, "{r:?}");
}

/// Temporaries a killed agent leaves, of every kind and in every place the
/// agent makes them, are gone after its next start; what must be kept
/// (the appdata a Restore set aside, previous certificate stores, runtime
/// directories) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_temporary_of_a_killed_agent_is_removed_at_start() {
    let mut agent = Agent::start();
    let mut c = agent.controller().await;
    install_active(&mut c, "1.0.0").await;
    std::fs::write(agent.appdata().join("project.json"), b"{}").unwrap();
    let b = c
        .backup(BackupRequest {
            id: "b1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let set_aside = c
        .restore(RestoreRequest {
            id: b.id,
            sha256: b.sha256,
        })
        .await
        .unwrap()
        .into_inner()
        .set_aside_path;
    let put = |content: &[u8]| Certificate {
        content: content.to_vec(),
        sha256: sha256_hex(content),
    };
    c.put_certificate(put(b"one")).await.unwrap();
    c.put_certificate(put(b"two")).await.unwrap();
    agent.kill();

    let state = agent.state();
    let opt = agent.install_root();
    let root = agent.root.path().to_path_buf();
    let planted_dirs = [
        opt.join("runtimes/.hubshift-tmp-staging-a1"),
        opt.join(".hubshift-tmp-restore-a1"),
        root.join(".hubshift-tmp-restore-a2"),
        // Names of older agents.
        opt.join("runtimes/.staging-a2"),
        opt.join(".hubshift-restore-a3"),
    ];
    for d in &planted_dirs {
        std::fs::create_dir_all(d.join("deep/locked")).unwrap();
        std::fs::write(d.join("deep/locked/f"), b"x").unwrap();
        let locked = d.join("deep/locked");
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o500))
            .unwrap();
    }
    let planted_files = [
        state.join("backups/.hubshift-tmp-backup-a1"),
        state.join("backups/.partial-a2"),
        state.join("staging/.hubshift-tmp-upload-a1"),
        state.join("staging/upload-a2"),
        state.join(".hubshift-tmp-write-a1"),
        state.join(".hubshift-tmp-store-forward-a1"),
        state.join(".store-forward-a2"),
        state.join(".tmp-a3"),
        state.join("runtime-archives/.hubshift-tmp-write-a2"),
        opt.join(".hubshift-tmp-current-a1"),
        opt.join(".current.tmp-1-2"),
        agent.appdata().join(".hubshift-tmp-write-a3"),
    ];
    for f in &planted_files {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"partial").unwrap();
    }
    // Look-alikes of old names where no agent made them: someone else's.
    let look_alikes = [
        agent.appdata().join(".tmp-the-hubs-own"),
        root.join(".partial-someone-elses"),
    ];
    for f in &look_alikes {
        std::fs::write(f, b"keep").unwrap();
    }
    let kept = [
        look_alikes[0].clone(),
        look_alikes[1].clone(),
        std::path::PathBuf::from(&set_aside),
        opt.join("runtimes/1.0.0"),
        opt.join("current"),
        state.join("backups/b1.tar.gz"),
        agent.appdata().join("project.json"),
        agent
            .appdata()
            .join("intelligencehub-certificatestore.pkcs12"),
    ];
    let appdata = agent.appdata();
    let previous_stores = || {
        names_in(&appdata)
            .into_iter()
            .filter(|n| n.contains(".pkcs12.previous-"))
            .count()
    };
    assert_eq!(previous_stores(), 1);

    agent.spawn();
    for p in planted_dirs.iter().chain(planted_files.iter()) {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "left behind: {}",
            p.display()
        );
    }
    for p in &kept {
        assert!(
            std::fs::symlink_metadata(p).is_ok(),
            "removed: {}",
            p.display()
        );
    }
    assert_eq!(previous_stores(), 1);
    let mut c = agent.controller().await;
    assert_eq!(status(&mut c).await.active_runtime, "1.0.0");
}

/// An agent killed (SIGKILL) in the middle of a Restore leaves its
/// unpacked tree beside appdata; the next start removes it, and keeps the
/// appdata an earlier Restore set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_cut_by_a_kill_leaves_nothing_after_restart() {
    let mut agent = Agent::start();
    let mut c = agent.controller().await;
    for i in 0..8u8 {
        std::fs::write(
            agent.appdata().join(format!("data-{i}.bin")),
            noise(12 << 20, u64::from(i)),
        )
        .unwrap();
    }
    let b = c
        .backup(BackupRequest {
            id: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = c
        .restore(RestoreRequest {
            id: b.id.clone(),
            sha256: b.sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .set_aside_path;
    let temporaries = |dir: &Path| -> Vec<String> {
        names_in(dir)
            .into_iter()
            .filter(|n| n.starts_with(".hubshift-"))
            .collect()
    };
    assert_eq!(temporaries(&agent.install_root()), Vec::<String>::new());

    let mut c2 = c.clone();
    let (id, sha) = (b.id.clone(), b.sha256.clone());
    let restore = tokio::spawn(async move { c2.restore(RestoreRequest { id, sha256: sha }).await });
    let opt = agent.install_root();
    let seen = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let names: Vec<String> = names_in(&opt)
                .into_iter()
                .filter(|n| n.starts_with(".hubshift-"))
                .collect();
            if !names.is_empty() {
                return names;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Vec::new()
    })
    .await
    .unwrap();
    assert!(
        !seen.is_empty(),
        "the restore's temporary tree was never seen"
    );
    agent.kill();
    let _ = restore.await;
    let after_kill = temporaries(&agent.install_root());
    assert!(
        !after_kill.is_empty(),
        "the kill came after the restore ended"
    );

    agent.spawn();
    assert_eq!(temporaries(&agent.install_root()), Vec::<String>::new());
    assert!(Path::new(&first).is_dir(), "the set-aside appdata is kept");
}

/// Set to `1` to skip, explicitly, the tests that need a Docker Engine.
const SKIP_DOCKER_ENV: &str = "HUBSHIFT_SKIP_DOCKER_TESTS";

/// True when the engine answers; panics when it does not and nobody opted out.
fn require_docker(test: &str) -> bool {
    let up = std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if up {
        return true;
    }
    if std::env::var(SKIP_DOCKER_ENV).as_deref() == Ok("1") {
        eprintln!("{test}: SKIPPED ({SKIP_DOCKER_ENV}=1): no Docker Engine");
        return false;
    }
    panic!("{test} needs a Docker Engine; set {SKIP_DOCKER_ENV}=1 to skip it explicitly");
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's containers and images, however the test ends.
struct DockerLeftovers {
    container: String,
    repository: String,
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        let previous = format!("{}-hubshift-previous", self.container);
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.container, &previous])
            .output();
        let images = std::process::Command::new("docker")
            .args(["images", "-q", &self.repository])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in images.split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", id])
                .output();
        }
    }
}

/// A `docker save` archive of a tiny image (this host's dash, sleep and
/// libc) labelled `hubsim.version=<declared>`.
fn tiny_image_archive(dir: &Path, declared: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(true);
    for (host, inside) in [
        ("/bin/sh", "bin/sh"),
        ("/bin/sleep", "bin/sleep"),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libc.so.6",
        ),
        ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
    ] {
        b.append_path_with_name(std::fs::canonicalize(host).unwrap(), inside)
            .unwrap();
    }
    let rootfs = dir.join("rootfs.tar");
    std::fs::write(&rootfs, b.into_inner().unwrap()).unwrap();
    let id = docker(&[
        "import",
        "--change",
        &format!("LABEL hubsim.version={declared}"),
        rootfs.to_str().unwrap(),
    ]);
    let saved = dir.join("image.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &id]);
    docker(&["rmi", "-f", &id]);
    std::fs::read(saved).unwrap()
}

/// The docker driver under the same faults: a mislabelled image is refused
/// before the engine loads it, and an abandoned long Stop of a container
/// that ignores SIGTERM does not block a later, urgent Stop, which kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_an_abandoned_long_stop_does_not_block_an_urgent_one() {
    if !require_docker("docker_an_abandoned_long_stop_does_not_block_an_urgent_one") {
        return;
    }
    let mut agent = Agent::start();
    agent.kill();
    let tag = format!("hubshift-truth-{}", std::process::id());
    let _leftovers = DockerLeftovers {
        container: tag.clone(),
        repository: tag.clone(),
    };
    let process_config = agent.config_text();
    let head = &process_config[..process_config.find("[paths]").unwrap()];
    let r = agent.root.path().display().to_string();
    let stubborn =
        r#"["/bin/sh", "-c", "trap '' TERM; echo 'HA role: active'; while :; do sleep 1; done"]"#;
    std::fs::write(
        agent.config_path(),
        format!(
            r#"{head}[paths]
state_dir = "{r}/state"
install_root = "{r}/opt"
appdata = "{r}/opt/appData"

[hub]
driver = "docker"
stop_timeout_secs = 10
create_timeout_secs = 20

[docker]
container = "{tag}"
image_repository = "{tag}"
appdata_target = "/appData"
runtime_target = "/runtime"
start_mode = "command"
start_command = {stubborn}
create_and_start_command = {stubborn}

[role_probe]
kind = "log"
active_pattern = "HA role: active"
standby_pattern = "HA role: standby"

[limits]
max_archive_bytes = 33554432
max_archive_entries = 1000
"#
        ),
    )
    .unwrap();
    agent.spawn();
    let mut c = agent.controller().await;
    let archive = tiny_image_archive(agent.root.path(), "4.1.0");
    let sha = sha256_hex(&archive);
    let e = install(
        &mut c,
        "4.2.0",
        archive.clone(),
        &sha,
        ArchiveFormat::DockerImage,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("4.1.0") && e.message().contains("4.2.0"),
        "{}",
        e.message()
    );
    assert!(docker(&["images", "-q", &tag]).is_empty(), "nothing loaded");
    install(
        &mut c,
        "4.1.0",
        archive,
        &sha,
        ArchiveFormat::DockerImage,
        true,
    )
    .await
    .unwrap();
    let s = status(&mut c).await;
    assert_eq!(
        s.staged.first().map(|r| r.declared_version.as_str()),
        Some("4.1.0"),
        "{:?}",
        s.staged
    );
    start_node(&mut c, StartMode::Start, "hub-a").await.unwrap();
    wait_active(&mut c).await;

    let e = c
        .stop(StopRequest {
            timeout_seconds: u32::MAX,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut c1 = c.clone();
    let long = tokio::spawn(async move {
        c1.stop(StopRequest {
            timeout_seconds: 3000,
        })
        .await
    });
    wait_for("the long stop under way", || {
        agent
            .stderr_all()
            .contains("stopping the hub container")
            .then_some(())
    });
    long.abort();
    let st = tokio::time::timeout(ANSWER, c.stop(StopRequest { timeout_seconds: 1 }))
        .await
        .expect("the urgent stop takes over instead of waiting for the long one")
        .unwrap()
        .into_inner();
    assert!(st.was_running && st.killed, "{st:?}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &tag]),
        "false"
    );
    assert_eq!(status(&mut c).await.state, HubState::Stopped as i32);
}

/// Pids whose command line contains `needle`.
fn pids_running(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
                && pid_alive(*pid)
        })
        .collect()
}

/// With a configured stop command that hangs, an urgent Stop still kills
/// the hub at its own deadline, and the hung command goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_stop_command_does_not_hold_up_an_urgent_stop() {
    let mut agent = Agent::start();
    agent.kill();
    let marker = format!("617.{}", std::process::id());
    let config = agent.config_text().replace(
        "stop_timeout_secs = 10\n",
        &format!("stop_timeout_secs = 10\nstop_command = [\"/bin/sleep\", \"{marker}\"]\n"),
    );
    std::fs::write(agent.config_path(), config).unwrap();
    agent.spawn();
    let mut c = agent.controller().await;
    install_active(&mut c, "1.0.0").await;
    let r = start_node(&mut c, StartMode::Start, "stubborn")
        .await
        .unwrap();
    wait_active(&mut c).await;

    let mut c1 = c.clone();
    let long = tokio::spawn(async move {
        c1.stop(StopRequest {
            timeout_seconds: 3000,
        })
        .await
    });
    wait_for("the stop command running", || {
        (!pids_running(&format!("sleep {marker}")).is_empty()).then_some(())
    });
    long.abort();
    let st = tokio::time::timeout(ANSWER, c.stop(StopRequest { timeout_seconds: 1 }))
        .await
        .expect("the urgent stop is not held up by the stop command")
        .unwrap()
        .into_inner();
    assert!(st.was_running && st.killed, "{st:?}");
    assert!(!pid_alive(r.pid));
    wait_for("the hung stop command killed", || {
        pids_running(&format!("sleep {marker}"))
            .is_empty()
            .then_some(())
    });
}
