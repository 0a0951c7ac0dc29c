//! A hubsim process under test: stdout and stderr into a log file, waits
//! that poll a condition (a log line, the exit) with a timeout, SIGTERM,
//! and a kill on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often waits poll.
const POLL: Duration = Duration::from_millis(20);

/// A running hubsim (or a runtime's `bin/hubsim` launcher, which execs it).
pub struct HubsimProcess {
    child: Child,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl HubsimProcess {
    /// Spawns the workspace's hubsim binary (found by [`crate::bins::binary`]).
    pub fn spawn<S: AsRef<str>>(args: &[S], log_path: &Path) -> std::io::Result<HubsimProcess> {
        let bin = crate::bins::binary("hubsim").map_err(std::io::Error::other)?;
        Self::spawn_program(&bin, args, log_path, &[])
    }

    /// Spawns `program` with `args` and extra environment `env`, output
    /// appended to `log_path`.
    pub fn spawn_program<S: AsRef<str>>(
        program: &Path,
        args: &[S],
        log_path: &Path,
        env: &[(&str, &str)],
    ) -> std::io::Result<HubsimProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let mut command = Command::new(program);
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the
        // child when the spawning thread dies (a killed test run), so no
        // hubsim outlives its test.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .args(args.iter().map(AsRef::as_ref))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(HubsimProcess {
            child,
            log_path: log_path.to_path_buf(),
            status: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until a line containing `pattern` appears at or after byte
    /// `from` of the log; returns the line and the offset just past it.
    pub async fn wait_for_log_line_from(
        &mut self,
        from: usize,
        pattern: &str,
        timeout: Duration,
    ) -> Result<(String, usize), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log();
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                let end = offset + line.len();
                if offset >= from && line.ends_with('\n') && line.contains(pattern) {
                    return Ok((line.trim_end().to_string(), end));
                }
                offset = end;
            }
            let exited = self.try_status();
            if exited.is_some() || Instant::now() >= deadline {
                let why = match exited {
                    Some(s) => format!("process exited ({s})"),
                    None => format!("timed out after {timeout:?}"),
                };
                return Err(format!(
                    "no log line containing {pattern:?} in {}: {why}; log:\n{text}",
                    self.log_path.display()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a line containing `pattern` appears anywhere in the log.
    pub async fn wait_for_log_line(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        self.wait_for_log_line_from(0, pattern, timeout)
            .await
            .map(|(l, _)| l)
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "process {} still running after {timeout:?}; log:\n{}",
                    self.pid(),
                    self.log()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&mut self) -> std::io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL (a crash) and reaps the process.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if self.try_status().is_none() {
            self.child.kill()?;
            self.status = Some(self.child.wait()?);
        }
        Ok(())
    }

    fn signal(&mut self, sig: i32) -> std::io::Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own unreaped child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Drop for HubsimProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
