//! Pre-copy against the real agent: a base of the running trees, a delta
//! after the stop, and the pair restored byte for byte (contents, modes,
//! links, empty directories, deletions and type changes), applied by hand
//! with GNU tar as docs/backups.md says, verified, and refused or replaced
//! by a full backup when the base cannot be trusted.

mod support;

use hubshift_common::pb::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use support::*;
use tonic::Code;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The tree with each entry's permission bits (directories' as Restore
/// leaves them: always owner-writable).
fn snapshot(dir: &Path) -> Vec<(String, String, Vec<u8>, u32)> {
    snapshot_tree(dir)
        .into_iter()
        .map(|(rel, kind, bytes)| {
            let meta = std::fs::symlink_metadata(dir.join(&rel)).unwrap();
            let mode = match kind.as_str() {
                "link" => 0,
                "dir" => meta.permissions().mode() & 0o777 | 0o700,
                _ => meta.permissions().mode() & 0o777,
            };
            (rel, kind, bytes, mode)
        })
        .collect()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fill(app: &Path, snf: &Path) {
    write(&app.join("config/project.json"), b"{\"project\": 1}");
    write(&app.join("config/keep.json"), b"{\"keep\": true}");
    write(&app.join("store/big.bin"), &noise(3 << 20, 7));
    write(&app.join("store/queue-1.snf"), &noise(4096, 1));
    write(
        &app.join("old/a/b.txt"),
        b"to be deleted with its directory",
    );
    write(&app.join("becomes-dir"), b"a file first");
    write(&app.join("becomes-file/x"), b"a directory first");
    write(&app.join("secret.key"), b"k");
    chmod(&app.join("secret.key"), 0o600);
    std::fs::create_dir_all(app.join("empty-kept")).unwrap();
    std::os::unix::fs::symlink("config/project.json", app.join("link")).unwrap();
    write(&snf.join("queue-0001.snf"), b"forward me");
}

/// Changes of every kind after the base.
fn change(app: &Path, snf: &Path) {
    // Same size, new bytes.
    write(&app.join("config/project.json"), b"{\"project\": 2}");
    write(&app.join("store/queue-1.snf"), &noise(8192, 2));
    std::fs::remove_dir_all(app.join("old")).unwrap();
    std::fs::remove_file(app.join("becomes-dir")).unwrap();
    write(&app.join("becomes-dir/inner.txt"), b"now a directory");
    std::fs::remove_dir_all(app.join("becomes-file")).unwrap();
    write(&app.join("becomes-file"), b"now a file");
    chmod(&app.join("secret.key"), 0o640);
    std::fs::create_dir_all(app.join("new-empty/deeper")).unwrap();
    chmod(&app.join("new-empty"), 0o750);
    std::fs::remove_file(app.join("link")).unwrap();
    std::os::unix::fs::symlink("config/keep.json", app.join("link")).unwrap();
    std::os::unix::fs::symlink("store", app.join("new-link")).unwrap();
    write(&app.join("added.txt"), b"new after the base");
    write(&snf.join("queue-0002.snf"), b"more");
    std::fs::remove_file(snf.join("queue-0001.snf")).unwrap();
}

async fn base(c: &mut Client, id: &str) -> BackupResponse {
    c.backup_base(BackupRequest {
        id: id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn delta(c: &mut Client, id: &str, base_id: &str) -> BackupResponse {
    c.backup(BackupRequest {
        id: id.into(),
        base_id: base_id.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pair_restores_byte_for_byte_and_gnu_tar_applies_it() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let (app, snf) = (agent.appdata(), agent.snf());
    fill(&app, &snf);
    let b = base(&mut c, "run-1-base").await;
    assert!(!b.existed && b.size_bytes > 3 << 20, "{b:?}");
    // Written just now: within a clock tick of a write that would keep its
    // key, so its digest decides whether the delta carries it.
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.state().join("backups/run-1-base.index.json")).unwrap(),
    )
    .unwrap();
    let big = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "appdata/store/big.bin")
        .unwrap();
    assert!(big["copied"]["recent"]["sha256"].is_string(), "{big}");
    change(&app, &snf);
    let expected = (snapshot(&app), snapshot(&snf));

    let d = delta(&mut c, "run-1", "run-1-base").await;
    assert_eq!(d.full_because, "", "{d:?}");
    assert_eq!(
        (
            d.base_id.as_str(),
            d.base_sha256.as_str(),
            d.base_size_bytes
        ),
        ("run-1-base", b.sha256.as_str(), b.size_bytes)
    );
    assert!(
        d.size_bytes < 64 * 1024,
        "the delta carries only what changed: {} bytes",
        d.size_bytes
    );
    // Asked again, the same pair.
    let again = delta(&mut c, "run-1", "run-1-base").await;
    assert!(again.existed && again.base_sha256 == b.sha256, "{again:?}");

    let v = c
        .verify_backup(VerifyBackupRequest {
            id: "run-1".into(),
            sha256: d.sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.base_id.as_str(), v.base_sha256.as_str()),
        ("run-1-base", b.sha256.as_str())
    );

    // By hand, as docs/backups.md says.
    let backups = agent.state().join("backups");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(backups.join("run-1-base.tar.gz"))
        .arg("-C")
        .arg(dir));
    let deleted = run(Command::new("tar")
        .arg("-xzOf")
        .arg(backups.join("run-1.tar.gz"))
        .arg("hubshift-delta.deleted"));
    let mut xargs = Command::new("xargs");
    xargs.args(["-0", "-r", "rm", "-rf", "--"]).current_dir(dir);
    xargs.stdin(std::process::Stdio::piped());
    let mut child = xargs.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &deleted).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    run(Command::new("tar")
        .arg("-xzf")
        .arg(backups.join("run-1.tar.gz"))
        .arg("-C")
        .arg(dir)
        .arg("--exclude=hubshift-delta.*"));
    assert!(
        snapshot(&dir.join("appdata")) == expected.0,
        "GNU tar applied the pair differently"
    );
    assert!(
        snapshot(&dir.join("snf")) == expected.1,
        "GNU tar applied the pair differently (snf)"
    );

    // Restore over a tree that moved on.
    write(&app.join("added-later.txt"), b"later");
    std::fs::remove_file(app.join("store/big.bin")).unwrap();
    write(&snf.join("queue-0003.snf"), b"later");
    c.restore(RestoreRequest {
        id: "run-1".into(),
        sha256: d.sha256.clone(),
    })
    .await
    .unwrap();
    assert!(snapshot(&app) == expected.0, "restored appdata differs");
    assert!(
        snapshot(&snf) == expected.1,
        "restored extra directory differs"
    );
}

/// A file written all the time the base reads it is marked as changed in
/// the base's index, and the delta carries its final bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changing_while_the_base_reads_it_is_caught_by_the_delta() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let app = agent.appdata();
    let hot = app.join("store/hot.bin");
    write(&hot, &noise(16 << 20, 3));
    write(&app.join("store/cold.bin"), &noise(24 << 20, 4));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, hot) = (stop.clone(), hot.clone());
        std::thread::spawn(move || {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&hot).unwrap();
            let mut i = 0u64;
            let mut writes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                f.seek(SeekFrom::Start((i * 65_537) % (16 << 20))).unwrap();
                f.write_all(&i.to_le_bytes()).unwrap();
                i += 1;
                writes += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            writes
        })
    };
    base(&mut c, "hot-base").await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        writer.join().unwrap() > 0,
        "the file was written during the base"
    );
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.state().join("backups/hot-base.index.json")).unwrap(),
    )
    .unwrap();
    let entry = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "appdata/store/hot.bin")
        .unwrap();
    assert_eq!(
        entry["copied"], "changed",
        "the change under the read landed: {entry}"
    );

    let final_bytes = std::fs::read(&hot).unwrap();
    let d = delta(&mut c, "hot", "hot-base").await;
    assert_eq!(d.base_id, "hot-base", "{d:?}");
    write(&hot, b"overwritten later");
    c.restore(RestoreRequest {
        id: "hot".into(),
        sha256: d.sha256.clone(),
    })
    .await
    .unwrap();
    assert!(
        std::fs::read(&hot).unwrap() == final_bytes,
        "the final bytes came back"
    );
}

/// A base that cannot be trusted gives a full backup, saying why; so does
/// a delta that would carry most of the bytes; a delta whose base is gone
/// fails verification naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_base_or_a_large_delta_gives_a_full_backup() {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let (app, snf) = (agent.appdata(), agent.snf());
    fill(&app, &snf);
    let backups = agent.state().join("backups");

    base(&mut c, "b1-base").await;
    std::fs::remove_file(backups.join("b1-base.index.json")).unwrap();
    let d = delta(&mut c, "b1", "b1-base").await;
    assert!(
        d.base_id.is_empty() && d.full_because.contains("index"),
        "{d:?}"
    );

    base(&mut c, "b2-base").await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(backups.join("b2-base.tar.gz"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"x").unwrap();
    let d = delta(&mut c, "b2", "b2-base").await;
    assert!(
        d.base_id.is_empty() && d.full_because.contains("changed"),
        "{d:?}"
    );

    let d = delta(&mut c, "b3", "no-such-base").await;
    assert!(
        d.base_id.is_empty() && d.full_because.contains("does not exist"),
        "{d:?}"
    );

    base(&mut c, "b4-base").await;
    write(&app.join("store/big.bin"), &noise(3 << 20, 99));
    let d = delta(&mut c, "b4", "b4-base").await;
    assert!(
        d.base_id.is_empty() && d.full_because.contains("would carry"),
        "{d:?}"
    );

    // A full backup is never taken for a base, nor replaced by one.
    let e = c
        .backup_base(BackupRequest {
            id: "b1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(backups.join("b1.tar.gz").is_file());

    base(&mut c, "b5-base").await;
    write(&app.join("added.txt"), b"x");
    let d = delta(&mut c, "b5", "b5-base").await;
    assert_eq!(d.base_id, "b5-base");
    std::fs::rename(backups.join("b5-base.tar.gz"), backups.join("elsewhere")).unwrap();
    let e = c
        .verify_backup(VerifyBackupRequest {
            id: "b5".into(),
            sha256: d.sha256.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("b5-base") && e.message().contains("missing"),
        "{e:?}"
    );
    let e = c
        .restore(RestoreRequest {
            id: "b5".into(),
            sha256: d.sha256.clone(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("b5-base"), "{e:?}");
    assert!(
        app.join("added.txt").exists(),
        "a refused restore changes nothing"
    );
}
