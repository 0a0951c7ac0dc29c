//! Ends hubsim with the process it was started for. A hub is started by an
//! agent in its own process group and outlives the agent on purpose (an agent
//! restart must not stop data), so neither the agent's death nor a parent-death
//! signal can end it; a sandbox that was killed outright would leave its hubs
//! ticking forever. With `HUBSIM_EXIT_WITH_PID=<pid>` in its environment
//! (the sandbox puts it in the agents' `[hub] env`), hubsim watches that
//! process and exits as soon as it is gone, zombie included.

use super::log;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Environment variable naming the process hubsim lives and dies with.
pub const EXIT_WITH_PID_ENV: &str = "HUBSIM_EXIT_WITH_PID";

/// Reads [`EXIT_WITH_PID_ENV`]; when set, spawns a task that exits the
/// process when the named process ends. A value that is not a pid is an
/// error, so a typo cannot silently turn the watch off.
pub fn watch_from_env() -> Result<(), String> {
    let Some(value) = std::env::var_os(EXIT_WITH_PID_ENV) else {
        return Ok(());
    };
    let pid = value
        .to_str()
        .and_then(|v| v.trim().parse::<libc::pid_t>().ok())
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("{EXIT_WITH_PID_ENV} must be a process id, got {value:?}"))?;
    tokio::spawn(async move {
        wait_for_exit(pid).await;
        log::info(&format!(
            "process {pid} ({EXIT_WITH_PID_ENV}) is gone: shutting down"
        ));
        log::flush();
        std::process::exit(0);
    });
    Ok(())
}

/// Returns when process `pid` has ended. A pidfd becomes readable when the
/// process exits, even while it is an unreaped zombie (which `kill(pid, 0)`
/// would still report alive); kernels without pidfd_open get a poll.
async fn wait_for_exit(pid: libc::pid_t) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return;
        }
        return poll_for_exit(pid).await;
    }
    // SAFETY: fd is a freshly opened descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged for as
    // long as the AsyncFd owns it.
    match unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => poll_for_exit(pid).await,
    }
}

async fn poll_for_exit(pid: libc::pid_t) {
    loop {
        // SAFETY: signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_when_the_watched_process_ends_even_unreaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Not reaped until after the wait: a zombie must count as gone.
        tokio::time::timeout(Duration::from_secs(30), wait_for_exit(pid))
            .await
            .expect("the end of the watched process was not noticed");
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn keeps_waiting_while_the_process_lives() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let waited = tokio::time::timeout(Duration::from_millis(300), wait_for_exit(pid)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(waited.is_err(), "returned while the process was running");
    }

    #[tokio::test]
    async fn a_missing_process_is_gone_at_once() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        child.wait().unwrap();
        tokio::time::timeout(Duration::from_secs(30), wait_for_exit(pid))
            .await
            .expect("a reaped process was not seen as gone");
    }
}
