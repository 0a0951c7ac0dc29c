//! Backups compressed on all cores stay what operators and Restore expect:
//! a standard tar.gz that GNU tar lists and extracts to the same bytes, that
//! VerifyBackup reads and that Restore puts back byte for byte — for trees
//! that span many compression blocks, that do not compress, that are empty,
//! and that are thousands of tiny files.

mod support;

use hubshift_common::pb::*;
use std::path::Path;
use std::process::Command;
use support::*;

/// Bytes that compress well (JSON-like lines).
fn text(n: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut i = seed;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "{{\"topic\": \"plant/{}/line/{}/tag{}\", \"value\": {}, \"q\": \"GOOD\"}}\n",
                i % 17,
                i % 5,
                i % 1000,
                i * 7919 % 100_003
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn tree_bytes(dir: &Path) -> u64 {
    snapshot_tree(dir)
        .iter()
        .filter(|(_, kind, _)| kind == "file")
        .map(|(_, _, b)| b.len() as u64)
        .sum()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Backs up what `fill` put into appdata and the extra directory, then checks
/// the file with GNU tar and gzip, VerifyBackup, and a Restore after a
/// change. Returns the backup's size and the trees' size.
async fn round_trip(name: &str, fill: impl FnOnce(&Path, &Path)) -> (u64, u64) {
    let agent = Agent::start();
    let mut c = agent.controller().await;
    let (app, snf) = (agent.appdata(), agent.snf());
    fill(&app, &snf);
    let original = (snapshot_tree(&app), snapshot_tree(&snf));
    let input = tree_bytes(&app) + tree_bytes(&snf);

    let b = c
        .backup(BackupRequest {
            id: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let file = agent.state().join(format!("backups/{name}.tar.gz"));
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(b.size_bytes, bytes.len() as u64, "{name}");
    assert_eq!(b.sha256, sha256_hex(&bytes), "{name}");

    // The standard tools read it.
    run(Command::new("gzip").arg("-t").arg(&file));
    let listing = run(Command::new("tar").arg("-tzf").arg(&file));
    let out = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(out.path()));
    assert!(
        snapshot_tree(&out.path().join("appdata")) == original.0,
        "{name}: GNU tar extracted a different appdata"
    );
    assert!(
        snapshot_tree(&out.path().join("snf")) == original.1,
        "{name}: GNU tar extracted a different extra directory"
    );

    // VerifyBackup reads all of it.
    let v = c
        .verify_backup(VerifyBackupRequest {
            id: b.id.clone(),
            sha256: b.sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.entries as usize, listing.lines().count(), "{name}");

    // Restore puts the same bytes back.
    write(&app.join("changed-after-backup.txt"), b"later");
    write(&snf.join("queue-9999.snf"), b"more");
    c.restore(RestoreRequest {
        id: b.id.clone(),
        sha256: b.sha256.clone(),
    })
    .await
    .unwrap();
    assert!(
        snapshot_tree(&app) == original.0,
        "{name}: restored appdata differs"
    );
    assert!(
        snapshot_tree(&snf) == original.1,
        "{name}: restored extra directory differs"
    );
    (b.size_bytes, input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_of_many_blocks_round_trips_through_gnu_tar_and_restore() {
    let (size, input) = round_trip("many-blocks", |app, snf| {
        for i in 0..6 {
            write(
                &app.join(format!("projects/p{i}/config.json")),
                &text(700_000, i),
            );
        }
        write(&app.join("storeforward/cache.db"), &noise(1_500_000, 1));
        // Repeated across block boundaries: the blocks' shared window.
        let mut repeated = text(100_000, 99);
        repeated.extend_from_slice(&noise(50_000, 2).repeat(8));
        write(&app.join("storeforward/repeats.db"), &repeated);
        std::os::unix::fs::symlink("projects/p0/config.json", app.join("config-link")).unwrap();
        std::fs::create_dir_all(app.join("empty-dir")).unwrap();
        write(&snf.join("queue-0001.snf"), &text(300_000, 7));
    })
    .await;
    assert!(size < input / 2, "{input} bytes became {size}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompressible_tree_is_stored_not_inflated() {
    let (size, input) = round_trip("incompressible", |app, snf| {
        for i in 0..4 {
            write(
                &app.join(format!("blobs/blob-{i}.bin")),
                &noise(1_000_000, 10 + i),
            );
        }
        write(&snf.join("queue-0001.snf"), &noise(400_000, 20));
    })
    .await;
    // tar headers and padding, and 5 bytes per 64 KiB stored block.
    assert!(
        size <= input + input / 100 + 64 * 1024,
        "{input} bytes became {size}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_tree_round_trips() {
    // The harness writes the hub's settings into appdata; this tree holds
    // nothing at all.
    let (size, input) = round_trip("empty", |app, _| {
        std::fs::remove_file(app.join("intelligencehub-settings.json")).unwrap();
    })
    .await;
    assert_eq!(input, 0);
    assert!(size > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_of_many_tiny_files_round_trips() {
    round_trip("tiny-files", |app, snf| {
        for i in 0..3000usize {
            let body = text(i % 300, i);
            write(&app.join(format!("d{}/f{i}.json", i % 40)), &body);
        }
        for i in 0..200usize {
            write(&snf.join(format!("q-{i:04}.snf")), &noise(i % 97, i as u64));
        }
    })
    .await;
}
