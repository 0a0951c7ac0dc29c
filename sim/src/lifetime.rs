//! Nothing the sandbox starts outlives it, even when it is killed outright
//! (SIGKILL, an OOM kill, a CI runner cancelled hard) and runs no teardown.
//!
//! - Its direct children (agents, the controller) get a parent-death signal
//!   ([`die_with_parent`]).
//! - The hubs the agents start watch the sandbox's pid themselves
//!   (`hubsim`'s `HUBSIM_EXIT_WITH_PID`): they live in their own process
//!   group and outlive their agent on purpose.
//! - PostgreSQL detaches from whoever starts it and temporary directories
//!   are not processes: a [`Watchdog`] — a small `sh` process holding the
//!   read end of a pipe from the sandbox — runs their cleanup when that pipe
//!   closes, which the kernel does when the sandbox ends, however it ends.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A `pre_exec` hook: the child receives `signal` when the thread that
/// spawned it ends (with the process, for the main thread or a runtime's
/// worker). Refuses to start the child when its parent is already gone.
pub fn die_with_parent(signal: i32) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let parent = std::process::id() as libc::pid_t;
    move || {
        // SAFETY: prctl and getppid are async-signal-safe and touch no memory
        // of ours; this runs in the forked child before exec.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("the parent process is already gone"));
            }
        }
        Ok(())
    }
}

/// Applies [`die_with_parent`] to a std command.
pub fn set_die_with_parent(command: &mut Command, signal: i32) -> &mut Command {
    // SAFETY: the hook only makes async-signal-safe calls.
    unsafe { command.pre_exec(die_with_parent(signal)) }
}

/// Removes a directory (after stopping what runs from it) when this
/// process ends or the watchdog is dropped, whichever comes first. It is an
/// `sh` process (so it exists whatever killed us and needs no binary of ours)
/// that first reads its stdin — a pipe whose only write end we hold, closed
/// by the kernel when we end — to its end.
pub struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
}

/// How long dropping a watchdog waits for its cleanup.
const CLEANUP_WAIT: Duration = Duration::from_secs(60);

/// The script's head: no terminal signal stops it before its time.
const WAIT_FOR_OWNER: &str = "trap '' HUP INT\ncat >/dev/null\n";

/// The script's tail: removes `$1`, retrying while processes that were
/// writing into it are still going away.
const REMOVE_DIR: &str = r#"i=0
while [ -e "$1" ] && [ $i -lt 20 ]; do
  rm -rf -- "$1" 2>/dev/null
  [ -e "$1" ] && sleep 0.5
  i=$((i+1))
done
"#;

impl Watchdog {
    /// Starts a watchdog for `dir`: once we are gone it runs `stop` (an `sh`
    /// fragment, `dir` as `$1`), then removes `dir`. It runs in a process
    /// group of its own, so a Ctrl-C at the terminal reaches the sandbox
    /// (which tears down in order) but not the watchdog, and with no
    /// inherited output, so it never keeps a reader of our output waiting.
    pub fn spawn(dir: &Path, stop: &str) -> io::Result<Self> {
        let script = format!("{WAIT_FOR_OWNER}{stop}\n{REMOVE_DIR}");
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("hubshift-watchdog")
            .arg(dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Self { child, pipe })
    }

    /// A watchdog that only removes `dir`.
    pub fn remove_dir(dir: &Path) -> io::Result<Self> {
        Self::spawn(dir, ":")
    }
}

impl Drop for Watchdog {
    /// Closes the pipe, which starts the cleanup, and waits for it so that
    /// an orderly teardown is complete when the sandbox exits.
    fn drop(&mut self) {
        drop(self.pipe.take());
        let deadline = Instant::now() + CLEANUP_WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_cleanup_waits_for_the_owner_then_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("owned");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/file"), "x").unwrap();
        let dog = Watchdog::remove_dir(&dir).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(dir.exists(), "removed while its owner was alive");
        drop(dog);
        assert!(!dir.exists(), "not removed when the watchdog was dropped");
    }

    #[test]
    fn the_cleanup_runs_when_the_owner_dies_without_a_word() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("owned");
        std::fs::create_dir_all(&dir).unwrap();
        let mut dog = Watchdog::remove_dir(&dir).unwrap();
        // What the kernel does when the owner is killed: its end of the pipe
        // closes, no Drop runs.
        drop(dog.pipe.take());
        wait_until("the directory is removed", || !dir.exists());
        let _ = dog.child.wait();
    }

    #[test]
    fn a_child_gets_the_signal_when_its_spawning_thread_ends() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("30");
            set_die_with_parent(&mut command, libc::SIGKILL);
            command.spawn().unwrap()
        })
        .join()
        .unwrap();
        let mut status = None;
        wait_until("the child is killed", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    }
}
