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

/// Two uploads of one version at once: the identical archive twice both
/// succeed (one as already installed); two different archives: one wins
/// and the record names the winner, so later uploads are judged right.
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
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.already_installed, b.already_installed]
            .iter()
            .filter(|x| **x)
            .count(),
        1,
        "{a:?} {b:?}"
    );

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
                assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
                (one, two, &sha2, &sha1)
            }
            (Err(e), Ok(_)) => {
                assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
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
    assert_eq!(count, 2, "store and one previous store");
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
