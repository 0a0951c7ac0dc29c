//! The operator is told the truth under every fault (issue 18): the real
//! `hubshift-agent` over mTLS, with real full and read-only file systems
//! (tmpfs mounts: these tests run as root, see [`require_root`]).

mod support;

use hubshift_common::pb::*;
use sha2::Digest;
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

/// `n` bytes that do not compress.
fn noise(n: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut block = [seed; 32];
    for chunk in out.chunks_mut(32) {
        block = sha2::Sha256::digest(block).into();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    out
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
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("No space left on device"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains(&backups.display().to_string()),
        "{}",
        e.message()
    );
    assert_eq!(names_in(&backups), Vec::<String>::new());

    disk.read_only();
    let e = c
        .backup(BackupRequest { id: "ro-1".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("Read-only file system"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains(&backups.display().to_string()),
        "{}",
        e.message()
    );
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
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let data = noise(3 << 20, 2);
    let mut h = tar::Header::new_gnu();
    h.set_path("lib/noise.bin").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
    let bytes = b.into_inner().unwrap().finish().unwrap();
    let sha = sha256_hex(&bytes);
    let e = install(&mut c, "3.0.0", bytes, &sha, ArchiveFormat::TarGz, false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("No space left on device"),
        "{}",
        e.message()
    );
    wait_for("the staging directory removed", || {
        names_in(&runtimes).is_empty().then_some(())
    });
}
