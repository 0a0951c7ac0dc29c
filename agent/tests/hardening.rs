//! End-to-end tests of the real `hubshift-agent` against hostile and broken
//! peers: racing uploads, vanished and idle clients, connection floods,
//! empty certificate stores, bad arguments.

mod support;

use hubshift_common::pb::*;
use sha2::Digest;
use support::*;
use tonic::Code;

/// A tar.gz runtime with a few MiB of incompressible bytes, so that two
/// uploads started together overlap.
fn big_runtime(version: &str, seed: u8) -> Vec<u8> {
    let mut noise = vec![0u8; 3 * 1024 * 1024];
    let mut block = [seed; 32];
    for chunk in noise.chunks_mut(32) {
        block = sha2::Sha256::digest(block).into();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in [("VERSION", version.as_bytes()), ("lib/noise.bin", &noise)] {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Two uploads of one version at once: one installs it; the other is told
/// at once that it is being installed (ABORTED), or, when it came after,
/// that it is already installed (the same archive) or exists from another
/// archive; the record names the winner, so later uploads are judged right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_version_install_it_once() {
    let agent = Agent::start();
    let (mut c1, mut c2) = (agent.controller().await, agent.controller().await);

    let same = big_runtime("5.0.0", 1);
    let sha = sha256_hex(&same);
    let (a, b) = tokio::join!(
        install(
            &mut c1,
            "5.0.0",
            same.clone(),
            &sha,
            ArchiveFormat::TarGz,
            false
        ),
        install(
            &mut c2,
            "5.0.0",
            same.clone(),
            &sha,
            ArchiveFormat::TarGz,
            false
        ),
    );
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert_eq!(
            [x.already_installed, y.already_installed]
                .iter()
                .filter(|i| **i)
                .count(),
            1,
            "{a:?} {b:?}"
        ),
        (Ok(x), Err(e)) | (Err(e), Ok(x)) => {
            assert!(!x.already_installed, "{x:?}");
            assert_eq!(e.code(), Code::Aborted, "{e:?}");
        }
        other => panic!("one of two identical uploads installs: {other:?}"),
    }

    for round in 0..3 {
        let version = format!("6.0.{round}");
        let one = big_runtime(&version, 10 + round);
        let two = big_runtime(&version, 20 + round);
        let (sha1, sha2) = (sha256_hex(&one), sha256_hex(&two));
        let (r1, r2) = tokio::join!(
            install(
                &mut c1,
                &version,
                one.clone(),
                &sha1,
                ArchiveFormat::TarGz,
                false
            ),
            install(
                &mut c2,
                &version,
                two.clone(),
                &sha2,
                ArchiveFormat::TarGz,
                false
            ),
        );
        let (winner, loser, loser_sha, winner_sha) = match (&r1, &r2) {
            (Ok(_), Err(e)) => {
                assert!(
                    matches!(e.code(), Code::AlreadyExists | Code::Aborted),
                    "{e:?}"
                );
                (one, two, &sha2, &sha1)
            }
            (Err(e), Ok(_)) => {
                assert!(
                    matches!(e.code(), Code::AlreadyExists | Code::Aborted),
                    "{e:?}"
                );
                (two, one, &sha1, &sha2)
            }
            other => panic!("exactly one of two different archives installs: {other:?}"),
        };
        let again = install(
            &mut c1,
            &version,
            winner,
            winner_sha,
            ArchiveFormat::TarGz,
            false,
        )
        .await
        .unwrap();
        assert!(again.already_installed, "{version}: winner again");
        let e = install(
            &mut c1,
            &version,
            loser,
            loser_sha,
            ArchiveFormat::TarGz,
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.code(),
            Code::AlreadyExists,
            "{version}: loser again: {e:?}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(agent.install_root().join("runtimes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// PutCertificate refuses empty content (losing the store makes the hub
/// mint a new key) and keeps a store it replaces beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_certificate_refuses_empty_and_keeps_the_previous_store() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let store = agent
        .appdata()
        .join("intelligencehub-certificatestore.pkcs12");
    let put = |content: &[u8]| Certificate {
        content: content.to_vec(),
        sha256: sha256_hex(content),
    };

    let e = c.put_certificate(put(b"")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("empty"), "{}", e.message());
    assert!(!store.exists());

    c.put_certificate(put(b"first store")).await.unwrap();
    let e = c.put_certificate(put(b"")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(std::fs::read(&store).unwrap(), b"first store");

    c.put_certificate(put(b"second store")).await.unwrap();
    assert_eq!(std::fs::read(&store).unwrap(), b"second store");
    let kept: Vec<_> = std::fs::read_dir(agent.appdata())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("intelligencehub-certificatestore.pkcs12.previous-")
        })
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert_eq!(kept, [b"first store".to_vec()]);
    // The same content again replaces nothing.
    c.put_certificate(put(b"second store")).await.unwrap();
    let count = std::fs::read_dir(agent.appdata()).unwrap().count();
    assert_eq!(count, 3, "settings, store and one previous store");
}

/// A NUL byte in jdbc_uri is a bad argument, named as such (and the URI
/// itself is not echoed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_the_jdbc_uri_is_an_invalid_argument() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let bytes = runtime_archive("1.0.0");
    install(
        &mut c,
        "1.0.0",
        bytes.clone(),
        &sha256_hex(&bytes),
        ArchiveFormat::TarGz,
        true,
    )
    .await
    .unwrap();
    let e = c
        .start(StartRequest {
            mode: StartMode::Start as i32,
            node: "hub-a".into(),
            jdbc_uri: "jdbc:postgresql://db/x?password=s3cret-nul\0x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("jdbc_uri"), "{}", e.message());
    assert!(!e.message().contains("s3cret-nul"), "{}", e.message());
    assert!(!agent.stderr_all().contains("s3cret-nul"));
}

/// An upload the test drives by hand: the header and one chunk are sent,
/// then the stream stays open until the sender is dropped.
async fn open_upload(
    c: &Client,
    version: &str,
) -> (
    tokio::sync::mpsc::Sender<InstallRuntimeRequest>,
    tokio::task::JoinHandle<Result<InstallRuntimeResponse, tonic::Status>>,
) {
    let bytes = runtime_archive(version);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = RuntimeHeader {
        version: version.into(),
        sha256: sha256_hex(&bytes),
        size_bytes: bytes.len() as u64,
        format: ArchiveFormat::TarGz as i32,
        activate: false,
    };
    tx.send(InstallRuntimeRequest {
        item: Some(install_runtime_request::Item::Header(header)),
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
    let mut c = c.clone();
    let call = tokio::spawn(async move {
        c.install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    (tx, call)
}

/// Staging directories of uploads in progress.
fn stagings(agent: &Agent) -> usize {
    std::fs::read_dir(agent.install_root().join("runtimes"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".hubshift-tmp-staging-")
                })
                .count()
        })
        .unwrap_or(0)
}

async fn wait_stagings(agent: &Agent, n: usize) {
    wait_async(&format!("{n} staging directories"), || async move {
        (stagings(agent) == n).then_some(())
    })
    .await;
}

/// Idle uploads beyond `max_concurrent_uploads` are refused with
/// RESOURCE_EXHAUSTED while Status keeps answering; once they end, uploads
/// are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_are_capped_and_status_still_answers() {
    let agent = Agent::start_with("max_concurrent_uploads = 2\n", None);
    let c = agent.controller().await;
    let (tx1, call1) = open_upload(&c, "7.0.1").await;
    let (tx2, call2) = open_upload(&c, "7.0.2").await;
    wait_stagings(&agent, 2).await;

    let mut refused = Vec::new();
    for i in 0..40 {
        let mut c = c.clone();
        refused.push(tokio::spawn(async move {
            let bytes = runtime_archive("7.1.0");
            let sha = sha256_hex(&bytes);
            install(
                &mut c,
                &format!("7.1.{i}"),
                bytes,
                &sha,
                ArchiveFormat::TarGz,
                false,
            )
            .await
        }));
    }
    for r in refused {
        let e = r.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("max_concurrent_uploads"),
            "{}",
            e.message()
        );
    }
    let s = c
        .clone()
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(s.staged_runtimes.is_empty(), "{:?}", s.staged_runtimes);

    // The held uploads end (short): their slots and staging are freed.
    drop((tx1, tx2));
    for call in [call1, call2] {
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    wait_stagings(&agent, 0).await;
    let bytes = runtime_archive("7.2.0");
    let sha = sha256_hex(&bytes);
    install(
        &mut c.clone(),
        "7.2.0",
        bytes,
        &sha,
        ArchiveFormat::TarGz,
        false,
    )
    .await
    .unwrap();
}

/// A controller that stops sending without closing (crashed, partitioned)
/// loses its upload after `upload_idle_timeout_secs`, and the staging
/// directory goes with it; a stream that dies (the caller gives up) also
/// leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_dead_upload_streams_leave_no_staging() {
    let agent = Agent::start_with("upload_idle_timeout_secs = 2\n", None);
    let c = agent.controller().await;

    let (tx, call) = open_upload(&c, "8.0.0").await;
    wait_stagings(&agent, 1).await;
    // The sender stays alive but silent: only the agent can end this.
    wait_stagings(&agent, 0).await;
    let e = tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .expect("the stalled upload is answered")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains("upload_idle_timeout_secs"),
        "{}",
        e.message()
    );
    drop(tx);

    // The caller aborts mid-stream: its staging is removed at once.
    let agent2 = Agent::start();
    let c2 = agent2.controller().await;
    let (tx, call) = open_upload(&c2, "8.0.1").await;
    wait_stagings(&agent2, 1).await;
    call.abort();
    wait_stagings(&agent2, 0).await;
    drop(tx);
    assert!(!agent2.install_root().join("runtimes/8.0.1").exists());
}

/// Raises this process's open-files limit (the flood needs many sockets).
fn raise_own_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Hundreds of TCP connections that never send a byte, more than the
/// agent has file descriptors for: the controller's existing connection
/// and a new one are still answered, and accept errors do not flood the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_does_not_lock_out_the_controller() {
    raise_own_nofile();
    // A long handshake timeout: the controller must get in through the
    // cap, not by waiting for the flood to time out.
    let agent = Agent::start_with(
        "max_connections = 16\ntls_handshake_timeout_secs = 120\n",
        Some(128),
    );
    let mut before = agent.controller().await;
    before.status(StatusRequest::default()).await.unwrap();

    let addr: std::net::SocketAddr = agent.addr.parse().unwrap();
    let flood: Vec<std::net::TcpStream> = tokio::task::spawn_blocking(move || {
        (0..400)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()
            })
            .collect()
    })
    .await
    .unwrap();
    assert!(flood.len() > 200, "only {} flood connections", flood.len());

    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        before.status(StatusRequest::default()).await.unwrap();
        let mut fresh = agent.controller().await;
        fresh
            .status(StatusRequest::default())
            .await
            .unwrap()
            .into_inner()
    })
    .await
    .expect("the controller is answered during the flood");
    assert!(!answered.agent_version.is_empty());
    // How few accept-error lines the flood costs is a goal of
    // `cargo bench -p hubshift-tests --bench timings`, not of this test.
    drop(flood);
}

/// A FIFO in appdata fails Backup at once, naming the file and why,
/// rather than producing a backup that cannot be verified or restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_names_a_fifo_in_appdata() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    std::fs::create_dir_all(agent.appdata().join("run")).unwrap();
    std::fs::write(agent.appdata().join("config.json"), b"{}").unwrap();
    let fifo = agent.appdata().join("run/events.fifo");
    let cpath = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    let e = c
        .backup(BackupRequest {
            id: "b1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("run/events.fifo") && e.message().contains("FIFO"),
        "{}",
        e.message()
    );
    let left: Vec<_> = std::fs::read_dir(agent.state().join("backups"))
        .expect("backups/ readable")
        .map(|e| e.expect("backups/ entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_file(&fifo).unwrap();
    c.backup(BackupRequest {
        id: "b2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}
