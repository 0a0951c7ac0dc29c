//! End-to-end tests of the real `hubshift-agent` binary over real mTLS, with
//! a shell-script hub installed through InstallRuntime.

mod support;

use hubshift_common::pb::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::*;
use tonic::Code;

const PASSWORD: &str = "pw-7f3c9e1d-unique-secret";

fn jdbc() -> String {
    format!("jdbc:postgresql://db.example:5432/hub?user=hb&password={PASSWORD}")
}

async fn status(c: &mut Client) -> StatusResponse {
    c.status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn start(
    c: &mut Client,
    mode: StartMode,
    node: &str,
) -> Result<StartResponse, tonic::Status> {
    c.start(StartRequest {
        mode: mode as i32,
        node: node.into(),
        jdbc_uri: jdbc(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn wait_running_active(c: &mut Client) -> StatusResponse {
    wait_async("hub RUNNING and ACTIVE", || {
        let mut c = c.clone();
        async move {
            let s = status(&mut c).await;
            (s.state == HubState::Running as i32 && s.role == HubRole::Active as i32).then_some(s)
        }
    })
    .await
}

/// Whether `pid` runs: its stat is there and not a zombie's. A stat that
/// cannot be read for another reason than the process being gone panics,
/// so that "it is gone" is never a failed read.
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .expect("stat format")
            .trim_start()
            .starts_with('Z'),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => false,
        Err(e) => panic!("/proc/{pid}/stat: {e}"),
    }
}

/// Install, CREATE_AND_START, observe RUNNING/ACTIVE, refuse runtime switch
/// and restore while running, survive an agent SIGKILL (re-adoption, one
/// hub), stop, exit codes, kill after timeout, failing create, and the JDBC
/// password nowhere in logs or state files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_lifecycle_with_readoption_and_no_secret_leaks() {
    let mut agent = Agent::start();
    let mut c = agent.controller().await;

    let s = status(&mut c).await;
    assert_eq!(s.state, HubState::Stopped as i32);
    assert_eq!(s.role, HubRole::Unknown as i32);
    assert_eq!(s.active_runtime, "");
    assert!(s.staged_runtimes.is_empty());
    assert_eq!(s.agent_version, hubshift_common::VERSION);
    assert_eq!(s.appdata, agent.appdata().display().to_string());
    assert_eq!(s.certificate_sha256, "");
    let names: Vec<_> = s.free_space.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["state", "install_root", "appdata"]);
    assert!(s.free_space.iter().all(|d| d.free_bytes > 0));

    // Stop with nothing running is fine; start without a runtime is not.
    let r = c
        .stop(StopRequest { timeout_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.was_running && !r.killed);
    let e = start(&mut c, StartMode::Start, "hub-a").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Bad node names and empty URIs are refused before anything runs.
    let e = start(&mut c, StartMode::Start, "../x").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .start(StartRequest {
            mode: StartMode::Start as i32,
            node: "hub-a".into(),
            jdbc_uri: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Install and activate; a retry is idempotent; another archive under the
    // same version is refused.
    let v1 = runtime_archive("1.0.0");
    let sha1 = sha256_hex(&v1);
    let r = install(
        &mut c,
        "1.0.0",
        v1.clone(),
        &sha1,
        ArchiveFormat::TarGz,
        true,
    )
    .await
    .unwrap();
    assert!(r.activated && !r.already_installed);
    assert_eq!(r.sha256, sha1);
    let r = install(
        &mut c,
        "1.0.0",
        v1.clone(),
        &sha1,
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap();
    assert!(r.already_installed && !r.activated);
    let other = runtime_archive("1.0.0-other");
    let e = install(
        &mut c,
        "1.0.0",
        other.clone(),
        &sha256_hex(&other),
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let v2 = runtime_archive("2.0.0");
    install(
        &mut c,
        "2.0.0",
        v2.clone(),
        &sha256_hex(&v2),
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap();
    let s = status(&mut c).await;
    assert_eq!(s.active_runtime, "1.0.0");
    assert_eq!(s.staged_runtimes, ["1.0.0", "2.0.0"]);
    let link = std::fs::read_link(agent.install_root().join("current")).unwrap();
    assert_eq!(link, std::path::Path::new("runtimes/1.0.0"));

    // A failing create is reported with its output, the password masked.
    let e = start(&mut c, StartMode::CreateAndStart, "bad-node")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("cannot connect to"), "{}", e.message());
    assert!(!e.message().contains(PASSWORD), "{}", e.message());
    assert!(agent.hub_pids().is_empty());

    // CREATE_AND_START: create runs to completion on the agent, then start.
    let r = start(&mut c, StartMode::CreateAndStart, "hub-a")
        .await
        .unwrap();
    assert!(!r.already_running && r.pid > 0);
    let marker = std::fs::read_to_string(agent.appdata().join("created-marker")).unwrap();
    assert_eq!(marker.trim(), "created by hub-a");
    let s = wait_running_active(&mut c).await;
    assert_eq!(s.pid, r.pid);
    assert_eq!(s.node, "hub-a");
    assert_eq!(s.start_mode, "CREATE_AND_START");
    assert!(s.started_at_unix_ms > 0);
    // A brief status, as polling loops ask: the hub and its runtime as in
    // full, the host's files left out.
    let brief = c
        .status(StatusRequest {
            brief: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (brief.state, brief.role, brief.pid, brief.frozen),
        (s.state, s.role, s.pid, s.frozen)
    );
    assert_eq!(
        (&brief.active_runtime, &brief.node, &brief.start_mode),
        (&s.active_runtime, &s.node, &s.start_mode)
    );
    assert!(!s.staged_runtimes.is_empty() && !s.free_space.is_empty());
    assert!(brief.staged_runtimes.is_empty() && brief.staged.is_empty());
    assert!(brief.free_space.is_empty() && brief.certificate_sha256.is_empty());
    assert!(brief.settings.is_none() && brief.runtime_dir.is_empty());
    let log = std::fs::read_to_string(agent.state().join("hub.log")).unwrap();
    assert!(log.contains("extra=from-config"), "{log}");
    let again = start(&mut c, StartMode::Start, "hub-a").await.unwrap();
    assert!(again.already_running);
    assert_eq!(again.pid, r.pid);
    assert_eq!(agent.hub_pids(), [r.pid]);

    // No runtime switch, no restore while the hub runs; backup is allowed.
    let e = c
        .activate_runtime(ActivateRuntimeRequest {
            version: "2.0.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Installing with activate says what was done and what was not.
    let v3 = runtime_archive("2.1.0");
    let e = install(
        &mut c,
        "2.1.0",
        v3.clone(),
        &sha256_hex(&v3),
        ArchiveFormat::TarGz,
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("installed but not activated") && e.message().contains("running"),
        "{}",
        e.message()
    );
    assert!(agent.install_root().join("runtimes/2.1.0").is_dir());
    let b = c
        .backup(BackupRequest {
            id: "while-running".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = c
        .restore(RestoreRequest {
            id: b.id.clone(),
            sha256: b.sha256.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // The agent crashes; the hub keeps running and is re-adopted.
    agent.kill();
    assert!(pid_alive(r.pid), "the hub must survive the agent");
    agent.spawn();
    let mut c = agent.controller().await;
    let s = wait_running_active(&mut c).await;
    assert_eq!(s.pid, r.pid);
    assert_eq!(s.node, "hub-a");
    let again = start(&mut c, StartMode::Start, "hub-a").await.unwrap();
    assert!(again.already_running);
    assert_eq!(agent.hub_pids(), [r.pid], "exactly one hub process");

    // Stop: graceful, then idempotent.
    let st = c
        .stop(StopRequest {
            timeout_seconds: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.was_running && !st.killed);
    assert!(!pid_alive(r.pid));
    assert!(agent.hub_pids().is_empty());
    let s = status(&mut c).await;
    assert_eq!(s.state, HubState::Stopped as i32);
    assert_eq!(s.role, HubRole::Unknown as i32);
    let st = c
        .stop(StopRequest { timeout_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(!st.was_running);

    // With the hub stopped the runtime switch works.
    let a = c
        .activate_runtime(ActivateRuntimeRequest {
            version: "2.0.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((a.previous.as_str(), a.active.as_str()), ("1.0.0", "2.0.0"));
    assert!(
        agent.install_root().join("runtimes/1.0.0/bin/hub").exists(),
        "old runtime kept"
    );
    let e = c
        .activate_runtime(ActivateRuntimeRequest {
            version: "9.9.9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A hub that exits by itself: EXITED with its code.
    start(&mut c, StartMode::Start, "exit-7").await.unwrap();
    let s = wait_async("hub EXITED", || {
        let mut c = c.clone();
        async move {
            let s = status(&mut c).await;
            (s.state == HubState::Exited as i32).then_some(s)
        }
    })
    .await;
    assert_eq!(s.exit_code, Some(7));

    // A hub that ignores SIGTERM is killed after the timeout.
    let r = start(&mut c, StartMode::Start, "stubborn").await.unwrap();
    wait_running_active(&mut c).await;
    let st = c
        .stop(StopRequest { timeout_seconds: 1 })
        .await
        .unwrap()
        .into_inner();
    assert!(st.was_running && st.killed);
    assert!(!pid_alive(r.pid));

    // SIGTERM: clean exit.
    assert!(agent.terminate().success());

    // The password is nowhere: not in the agent's logs, not in state files.
    let logs = agent.stderr_all();
    assert!(logs.contains("hub started"), "debug logs expected: {logs}");
    assert!(!logs.contains(PASSWORD), "password in the agent log");
    let leaked = files_containing(&agent.state(), PASSWORD);
    assert!(leaked.is_empty(), "password in {leaked:?}");
}

/// Certificate put/get, backup (readable by GNU tar, SHA-256 right,
/// idempotent), verify, fetch, and a byte-identical restore round trip with
/// the replaced tree kept aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_round_trip_and_certificate() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let app = agent.appdata();
    std::fs::create_dir_all(app.join("projects/p1")).unwrap();
    std::fs::write(
        app.join("projects/p1/config.json"),
        br#"{"name":"p1","pipelines":[1,2,3]}"#,
    )
    .unwrap();
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(app.join("store.db"), &noise).unwrap();
    std::os::unix::fs::symlink("projects/p1/config.json", app.join("config-link")).unwrap();
    std::fs::write(agent.snf().join("queue-0001.snf"), b"buffered data").unwrap();

    // Status measures what a backup will hold only when asked to.
    let plain = c
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.appdata_bytes, 0);
    let measured = c
        .status(StatusRequest {
            measure_appdata: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let expected = (br#"{"name":"p1","pipelines":[1,2,3]}"#.len()
        + noise.len()
        + b"buffered data".len()) as u64
        + std::fs::metadata(app.join("intelligencehub-settings.json"))
            .unwrap()
            .len();
    assert_eq!(
        measured.appdata_bytes, expected,
        "appdata + extra dir, links not followed"
    );

    // Certificate store.
    let e = c
        .get_certificate(GetCertificateRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let store = b"PKCS12-bytes-of-the-store".to_vec();
    let e = c
        .put_certificate(Certificate {
            content: store.clone(),
            sha256: sha256_hex(b"other"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let put = c
        .put_certificate(Certificate {
            content: store.clone(),
            sha256: sha256_hex(&store),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.sha256, sha256_hex(&store));
    let path = app.join("intelligencehub-certificatestore.pkcs12");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let got = c
        .get_certificate(GetCertificateRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content, store);
    assert_eq!(got.sha256, put.sha256);
    assert_eq!(status(&mut c).await.certificate_sha256, put.sha256);

    let original = snapshot_tree(&app);
    let original_snf = snapshot_tree(&agent.snf());

    // Backup.
    let e = c
        .backup(BackupRequest {
            id: "../evil".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let b = c
        .backup(BackupRequest {
            id: "pre-upgrade-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!b.existed);
    let file = agent.state().join("backups/pre-upgrade-1.tar.gz");
    assert_eq!(b.path, file.display().to_string());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(b.size_bytes, bytes.len() as u64);
    assert_eq!(b.sha256, sha256_hex(&bytes));
    let out = Command::new("tar").arg("-tzf").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    for want in [
        "appdata/projects/p1/config.json",
        "appdata/store.db",
        "appdata/config-link",
        "snf/queue-0001.snf",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} missing from:\n{listing}"
        );
    }
    let again = c
        .backup(BackupRequest {
            id: "pre-upgrade-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.existed);
    assert_eq!(again.sha256, b.sha256);
    let auto = c
        .backup(BackupRequest {
            id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!auto.id.is_empty() && auto.id != b.id);

    // Verify.
    let v = c
        .verify_backup(VerifyBackupRequest {
            id: b.id.clone(),
            sha256: b.sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.sha256, b.sha256);
    assert_eq!(v.size_bytes, b.size_bytes);
    assert_eq!(v.entries as usize, listing.lines().count());
    let e = c
        .verify_backup(VerifyBackupRequest {
            id: b.id.clone(),
            sha256: "0".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .verify_backup(VerifyBackupRequest {
            id: "nope".into(),
            sha256: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Fetch.
    let mut stream = c
        .fetch_backup(FetchBackupRequest { id: b.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut fetched = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(chunk.data.len() <= hubshift_common::CHUNK_SIZE);
        fetched.extend_from_slice(&chunk.data);
    }
    assert_eq!(fetched, bytes);

    // Change appdata and the extra dir, then restore.
    std::fs::write(app.join("projects/p1/config.json"), b"{\"changed\":true}").unwrap();
    std::fs::remove_file(app.join("store.db")).unwrap();
    std::fs::write(app.join("new-after-backup.txt"), b"later").unwrap();
    std::fs::write(agent.snf().join("queue-0002.snf"), b"more").unwrap();
    let changed = snapshot_tree(&app);
    let e = c
        .restore(RestoreRequest {
            id: b.id.clone(),
            sha256: "f".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let r = c
        .restore(RestoreRequest {
            id: b.id.clone(),
            sha256: b.sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.set_aside_path.contains("appData.replaced-"),
        "{}",
        r.set_aside_path
    );
    assert_eq!(
        snapshot_tree(&app),
        original,
        "restored appdata is byte-identical"
    );
    assert_eq!(
        snapshot_tree(&agent.snf()),
        original_snf,
        "extra dir restored"
    );
    assert_eq!(
        snapshot_tree(std::path::Path::new(&r.set_aside_path)),
        changed,
        "old tree kept aside"
    );
    let leftovers: Vec<_> = std::fs::read_dir(agent.install_root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hubshift-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A hostile runtime archive (tar.gz built with the Header API, or zip).
/// One raw tar entry: name bytes, type, data, link name bytes.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a [u8]>);

fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Hostile archives are refused with InvalidArgument and leave nothing
/// behind: nothing outside, nothing in runtimes/, nothing in staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_runtime_archives_are_refused_and_leave_nothing() {
    use tar::EntryType::*;
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let outside_abs = agent.root.path().join("escape-abs");
    let abs_name = outside_abs.display().to_string();
    let zeros = vec![0u8; 40 * 1024 * 1024];
    let many: Vec<Vec<u8>> = (0..1001).map(|i| format!("f{i}").into_bytes()).collect();
    let many_refs: Vec<RawEntry<'_>> = many
        .iter()
        .map(|n| (n.as_slice(), Regular, &b"x"[..], None))
        .collect();
    let zip_dotdot = {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(
            "../../../escape-zip",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.write_all(b"evil").unwrap();
        w.finish().unwrap().into_inner()
    };
    let cases: Vec<(&str, Vec<u8>, ArchiveFormat)> = vec![
        (
            "dotdot path",
            raw_tar(&[(b"../../../escape-dotdot", Regular, b"evil", None)]),
            ArchiveFormat::TarGz,
        ),
        (
            "absolute path",
            raw_tar(&[(abs_name.as_bytes(), Regular, b"evil", None)]),
            ArchiveFormat::TarGz,
        ),
        (
            "symlink out",
            raw_tar(&[
                (b"link", Symlink, b"", Some(b"../../../")),
                (b"link/escape-link", Regular, b"evil", None),
            ]),
            ArchiveFormat::TarGz,
        ),
        (
            "hard link out",
            raw_tar(&[(b"passwd", Link, b"", Some(b"/etc/passwd"))]),
            ArchiveFormat::TarGz,
        ),
        (
            "fifo",
            raw_tar(&[(b"fifo", Fifo, b"", None)]),
            ArchiveFormat::TarGz,
        ),
        (
            "char device",
            raw_tar(&[(b"null", Char, b"", None)]),
            ArchiveFormat::TarGz,
        ),
        (
            "too large",
            raw_tar(&[(b"big", Regular, &zeros, None)]),
            ArchiveFormat::TarGz,
        ),
        (
            "too many entries",
            raw_tar(&many_refs),
            ArchiveFormat::TarGz,
        ),
        (
            "symlink chained through a symlinked directory",
            raw_tar(&[
                (b"b/", Directory, b"", None),
                (b"a", Symlink, b"", Some(b".")),
                (b"a/b/l", Symlink, b"", Some(b"../..")),
            ]),
            ArchiveFormat::TarGz,
        ),
        (
            "symlink climbing out through a self link",
            raw_tar(&[
                (b"y", Symlink, b"", Some(b".")),
                (b"x", Symlink, b"", Some(b"y/y/y/../../../")),
            ]),
            ArchiveFormat::TarGz,
        ),
        ("zip dotdot", zip_dotdot, ArchiveFormat::Zip),
        (
            "not an archive",
            b"this is not gzip at all".to_vec(),
            ArchiveFormat::TarGz,
        ),
    ];
    for (i, (what, bytes, format)) in cases.into_iter().enumerate() {
        let sha = sha256_hex(&bytes);
        let e = install(&mut c, &format!("hostile-{i}"), bytes, &sha, format, false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert_no_leftovers(&agent, what);
    }
    assert!(!outside_abs.exists());
    let escaped = |n: &str| {
        let mut hits = Vec::new();
        let mut stack = vec![agent.root.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(n) {
                    hits.push(e.path());
                }
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        hits
    };
    assert!(escaped("escape").is_empty(), "{:?}", escaped("escape"));

    // Wrong checksum, wrong size, missing header, bad version: refused
    // before anything is unpacked.
    let good = runtime_archive("3.0.0");
    let e = install(
        &mut c,
        "3.0.0",
        good.clone(),
        &"a".repeat(64),
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("checksum mismatch"), "{}", e.message());
    assert_no_leftovers(&agent, "wrong sha");
    let mut short = good.clone();
    short.truncate(good.len() - 10);
    let sha = sha256_hex(&good);
    let header = RuntimeHeader {
        version: "3.0.0".into(),
        sha256: sha.clone(),
        size_bytes: good.len() as u64,
        format: ArchiveFormat::TarGz as i32,
        activate: false,
    };
    let msgs = vec![
        InstallRuntimeRequest {
            item: Some(install_runtime_request::Item::Header(header.clone())),
        },
        InstallRuntimeRequest {
            item: Some(install_runtime_request::Item::Chunk(short)),
        },
    ];
    let e = c
        .install_runtime(tokio_stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let msgs = vec![InstallRuntimeRequest {
        item: Some(install_runtime_request::Item::Chunk(good.clone())),
    }];
    let e = c
        .install_runtime(tokio_stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = install(
        &mut c,
        "../3.0.0",
        good.clone(),
        &sha,
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_no_leftovers(&agent, "protocol errors");

    // The good archive, as tar.gz and as zip, still installs.
    install(&mut c, "3.0.0", good, &sha, ArchiveFormat::TarGz, false)
        .await
        .unwrap();
    let zip_bytes = {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        w.start_file("bin/hub", o).unwrap();
        w.write_all(HUB_SCRIPT.as_bytes()).unwrap();
        w.finish().unwrap().into_inner()
    };
    install(
        &mut c,
        "3.0.1-zip",
        zip_bytes.clone(),
        &sha256_hex(&zip_bytes),
        ArchiveFormat::Zip,
        false,
    )
    .await
    .unwrap();
    let hub = agent.install_root().join("runtimes/3.0.1-zip/bin/hub");
    assert_eq!(std::fs::read(&hub).unwrap(), HUB_SCRIPT.as_bytes());
    assert_eq!(status(&mut c).await.staged_runtimes, ["3.0.0", "3.0.1-zip"]);
}

fn assert_no_leftovers(agent: &Agent, what: &str) {
    let runtimes: Vec<_> = std::fs::read_dir(agent.install_root().join("runtimes"))
        .expect("runtimes/ readable")
        .map(|e| e.expect("runtimes/ entry").file_name())
        .collect();
    let allowed = ["3.0.0", "3.0.1-zip"];
    assert!(
        runtimes
            .iter()
            .all(|n| allowed.contains(&n.to_string_lossy().as_ref())),
        "{what}: runtimes/ holds {runtimes:?}"
    );
    let staging: Vec<_> = std::fs::read_dir(agent.state().join("staging"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(staging.is_empty(), "{what}: staging holds {staging:?}");
}

/// mTLS: a client from a foreign CA fails the handshake; a client of the
/// right CA but not on the allow-list gets PermissionDenied on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_foreign_ca_and_unlisted_identity() {
    let agent = Agent::start();
    let mut ok = agent.controller().await;
    status(&mut ok).await;

    match agent.client("foreign").await {
        Err(_) => {}
        Ok(mut c) => {
            let e = c.status(StatusRequest::default()).await.unwrap_err();
            assert_ne!(
                e.code(),
                Code::PermissionDenied,
                "must fail at the handshake, not later: {e:?}"
            );
            assert_ne!(e.code(), Code::Ok);
        }
    }

    let mut intruder = agent.client("intruder").await.unwrap();
    let e = intruder.status(StatusRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = intruder
        .stop(StopRequest { timeout_seconds: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = intruder
        .put_certificate(Certificate {
            content: b"x".to_vec(),
            sha256: sha256_hex(b"x"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        !agent
            .appdata()
            .join("intelligencehub-certificatestore.pkcs12")
            .exists()
    );
    let bytes = runtime_archive("1.0.0");
    let e = install(
        &mut intruder,
        "1.0.0",
        bytes.clone(),
        &sha256_hex(&bytes),
        ArchiveFormat::TarGz,
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(!agent.install_root().join("runtimes/1.0.0").exists());
}

/// check-config accepts a good file and names the key and the file of a bad
/// one with exit code 2; `run` refuses to serve without [tls].
#[test]
fn check_config_and_tls_required() {
    let agent = Agent::start();
    let bin = env!("CARGO_BIN_EXE_hubshift-agent");
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(agent.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // {jdbc} on a command line is usable but warned about.
    let warned = agent.root.path().join("warned.toml");
    std::fs::write(
        &warned,
        agent
            .config_text()
            .replace("\"{node}\"]", "\"{node}\", \"-j\", \"{jdbc}\"]"),
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&warned)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("hub.start_command") && err.contains("{jdbc}"),
        "{err}"
    );

    let bad = agent.root.path().join("bad.toml");
    let cases = [
        (
            agent
                .config_text()
                .replace("\"{node}\"]", "\"{nodename}\"]"),
            "hub.start_command",
        ),
        (
            agent.config_text().replace("agent.crt", "missing.crt"),
            "tls.cert",
        ),
        (
            agent.config_text().replace(
                "active_pattern = \"HA role: active\"",
                "active_pattern = \"([\"",
            ),
            "role_probe.active_pattern",
        ),
        (
            agent
                .config_text()
                .replace("stop_timeout_secs", "stop_timeout"),
            "stop_timeout",
        ),
        (
            agent.config_text().replace("[tls]", "[tls]\nbogus = 1"),
            "bogus",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(bin)
            .args(["check-config", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains(key) && err.contains("bad.toml"),
            "{key}: {err}"
        );
    }

    let no_tls: String = {
        let t = agent.config_text();
        let start = t.find("[tls]").unwrap();
        let end = t.find("[paths]").unwrap();
        format!("{}{}", &t[..start], &t[end..])
    };
    std::fs::write(&bad, no_tls).unwrap();
    let out = Command::new(bin)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`tls`"));
}

/// An operation the agent accepted runs to its end when the caller vanishes:
/// a CREATE_AND_START abandoned during `create` still starts the hub (Status
/// says STARTING meanwhile, never a state that stays untrue), and a Backup
/// abandoned mid-write is joined by its retry instead of colliding with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_operations_finish_when_the_caller_vanishes() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let archive = runtime_archive("4.1.0");
    let sha = sha256_hex(&archive);
    install(&mut c, "4.1.0", archive, &sha, ArchiveFormat::TarGz, true)
        .await
        .unwrap();

    // The caller gives up while the two-second create runs: once Status
    // reports the hub STARTING, its call is dropped unanswered.
    let mut caller = c.clone();
    let call =
        tokio::spawn(
            async move { start(&mut caller, StartMode::CreateAndStart, "slow-create").await },
        );
    wait_async("Status to report the create running", || {
        let mut c = c.clone();
        async move { (status(&mut c).await.state == HubState::Starting as i32).then_some(()) }
    })
    .await;
    assert!(!call.is_finished(), "the start should still be running");
    call.abort();
    let during = status(&mut c).await;
    assert_eq!(during.state, HubState::Starting as i32, "{during:?}");
    let s = wait_running_active(&mut c).await;
    assert_eq!(s.node, "slow-create");
    assert_eq!(s.start_mode, "CREATE_AND_START");
    assert!(agent.appdata().join("created-marker").is_file());
    assert_eq!(agent.hub_pids().len(), 1, "one hub process");
    c.stop(StopRequest { timeout_seconds: 5 }).await.unwrap();

    // A backup big enough to take a while (random digits: compressible,
    // so deflated rather than stored), abandoned, then retried at once.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..64_000_000u32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'0' + (x % 10) as u8
        })
        .collect();
    std::fs::write(agent.appdata().join("store.db"), &noise).unwrap();
    // Its caller is dropped once the agent is seen writing it (its
    // temporary file in backups/).
    let mut caller = c.clone();
    let call = tokio::spawn(async move {
        caller
            .backup(BackupRequest {
                id: "run-1-hub".into(),
                ..Default::default()
            })
            .await
    });
    let backups = agent.state().join("backups");
    let writing = || match std::fs::read_dir(&backups) {
        Ok(d) => d
            .map(|e| e.expect("backups/ entry").file_name())
            .any(|n| n.to_string_lossy().starts_with(".hubshift-tmp-backup-")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("{}: {e}", backups.display()),
    };
    while !writing() {
        assert!(
            !call.is_finished(),
            "the backup ended before it was seen being written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(!call.is_finished(), "the backup should still be running");
    call.abort();
    let retried = c
        .backup(BackupRequest {
            id: "run-1-hub".into(),
            ..Default::default()
        })
        .await
        .expect("the retry joins the running backup")
        .into_inner();
    let verified = c
        .verify_backup(VerifyBackupRequest {
            id: "run-1-hub".into(),
            sha256: retried.sha256.clone(),
        })
        .await
        .expect("the backup the retry returned is whole")
        .into_inner();
    assert_eq!(verified.sha256, retried.sha256);
    assert!(verified.entries > 0);
    let backups = agent.state().join("backups");
    let partials: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hubshift-tmp-") || n.starts_with(".partial-"))
        .collect();
    assert!(partials.is_empty(), "partial files left: {partials:?}");
}

/// Status tells a frozen hub (SIGSTOP) from a live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_frozen_hub() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let archive = runtime_archive("4.1.0");
    let sha = sha256_hex(&archive);
    install(&mut c, "4.1.0", archive, &sha, ArchiveFormat::TarGz, true)
        .await
        .unwrap();
    start(&mut c, StartMode::Start, "hub-a").await.unwrap();
    let s = wait_running_active(&mut c).await;
    assert!(!s.frozen);
    // SAFETY: signals to the hub's process group, which this test started.
    unsafe { libc::kill(-(s.pid as i32), libc::SIGSTOP) };
    wait_async("Status to report the hub frozen", || {
        let mut c = c.clone();
        async move { status(&mut c).await.frozen.then_some(()) }
    })
    .await;
    unsafe { libc::kill(-(s.pid as i32), libc::SIGCONT) };
    wait_async("Status to report the hub live again", || {
        let mut c = c.clone();
        async move { (!status(&mut c).await.frozen).then_some(()) }
    })
    .await;
    c.stop(StopRequest { timeout_seconds: 5 }).await.unwrap();
}
