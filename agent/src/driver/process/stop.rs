//! Stop for the process driver: the configured stop command or SIGTERM to
//! the hub's process group, a bounded wait, then SIGKILL; later Stops join
//! the one running.

use super::hub::{Hub, Phase};
use super::procfs::{group_exists, process_alive, signal_group};
use crate::config::{Vars, fill_argv};
use crate::driver::Stopped;
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::hubfiles::layout;
use std::process::Stdio;
use std::time::{Duration, Instant};

impl Hub {
    /// Stop: stop command or SIGTERM to the group, wait, then SIGKILL.
    /// `timeout` is the caller's (checked against the maximum); a Stop that
    /// arrives while another runs joins it and kills at its own deadline if
    /// that comes first.
    pub async fn stop(&self, timeout: Duration) -> Result<Stopped> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.stops
            .run(deadline, KILL_GRACE + Duration::from_secs(5), |kill_at| {
                self.stop_leading(timeout, kill_at)
            })
            .await
    }

    async fn stop_leading(
        &self,
        timeout: Duration,
        mut kill_at: tokio::sync::watch::Receiver<tokio::time::Instant>,
    ) -> Result<Stopped> {
        let _ops = self.ops.acquire_until("Stop", &mut kill_at).await?;
        let (record, generation) = {
            let inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match (&inner.record, inner.phase) {
                (Some(r), Phase::Running) => (r.clone(), inner.generation),
                _ => return Ok(Stopped::default()),
            }
        };
        let pgid = record.pid as i32;
        let alive = || {
            process_alive(record.pid, record.start_time_ticks)
                || (record.pid > 1 && group_exists(pgid))
        };
        if !alive() {
            self.finish_stop(generation);
            return Ok(Stopped::default());
        }
        tracing::info!(
            pid = record.pid,
            timeout_secs = timeout.as_secs(),
            "stopping hub"
        );
        // The stop command runs beside the wait, so that a kill brought
        // forward by a later Stop is not held up by it; it is killed with
        // the hub, or left to end (within its timeout) when the hub stopped.
        let stop_command = if self.cfg.hub.stop_command.is_empty() {
            signal_group(pgid, libc::SIGTERM);
            None
        } else {
            Some(self.spawn_stop_command(timeout))
        };
        while alive() && tokio::time::Instant::now() < *kill_at.borrow() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut killed = false;
        if alive() {
            tracing::warn!(
                pid = record.pid,
                "hub did not stop in time; killing its process group"
            );
            signal_group(pgid, libc::SIGKILL);
            killed = true;
            let kill_deadline = Instant::now() + KILL_GRACE;
            while alive() && Instant::now() < kill_deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if alive() {
                return Err(AgentError::Internal(format!(
                    "hub process group {pgid} survived SIGKILL"
                )));
            }
        } else if let Some(command) = stop_command {
            command.detach();
        }
        self.finish_stop(generation);
        tracing::info!(pid = record.pid, killed, "hub stopped");
        Ok(Stopped {
            was_running: true,
            killed,
        })
    }

    fn finish_stop(&self, generation: u64) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.generation == generation {
            inner.phase = Phase::Stopped;
        }
        let _ = std::fs::remove_file(self.record_path());
    }

    /// Runs the configured stop command in a task of its own, bounded by
    /// `timeout`; the task kills the command when aborted or dropped.
    fn spawn_stop_command(&self, timeout: Duration) -> AbortOnDrop {
        let runtime = layout::active_runtime_dir(&self.cfg)
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let appdata = self.cfg.paths.appdata.display().to_string();
        let argv = fill_argv(
            &self.cfg.hub.stop_command,
            Vars {
                runtime: &runtime,
                node: "",
                jdbc: "",
                appdata: &appdata,
            },
        );
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).kill_on_drop(true);
        if let Ok(log) = fsutil::open_append(&self.log_path()) {
            if let Ok(log2) = log.try_clone() {
                cmd.stdout(log).stderr(log2);
            }
        }
        AbortOnDrop(Some(tokio::spawn(async move {
            match tokio::time::timeout(timeout, cmd.status()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::warn!(%status, "stop command failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "stop command could not run"),
                Err(_) => tracing::warn!("stop command timed out"),
            }
        })))
    }
}

/// How long a killed process group is given to disappear.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// A task aborted when this is dropped, unless detached.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Lets the task run to its own end.
    fn detach(mut self) {
        self.0.take();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
