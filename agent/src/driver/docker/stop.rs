//! Stop for the docker driver: the engine's stop with the agent's own
//! deadline, a kill when a more urgent Stop or a paused container asks
//! for it.

use super::spec::managed;
use super::{DockerHub, engine_error};
use crate::driver::Stopped;
use crate::error::{AgentError, Result};
use crate::fsutil;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{KillContainerOptionsBuilder, StopContainerOptionsBuilder};
use std::time::{Duration, Instant};

/// How long a killed container is given to end.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(10);

impl DockerHub {
    /// The engine's stop (SIGTERM, SIGKILL after `timeout`) as a request of
    /// its own, while the wait is the agent's: when the kill instant (moved
    /// earlier by a more urgent Stop) comes first, the agent kills. The
    /// engine's own client also gives up on a request after 120 s, which
    /// must not end a longer graceful stop.
    pub(super) async fn stop_leading(
        &self,
        timeout: Duration,
        mut kill_at: tokio::sync::watch::Receiver<tokio::time::Instant>,
    ) -> Result<Stopped> {
        let _ops = self.ops.acquire_until("Stop", &mut kill_at).await?;
        let Some(c) = self.inspect().await? else {
            return Ok(Stopped::default());
        };
        let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !managed(&c) || !running {
            return Ok(Stopped::default());
        }
        if c.state.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            return self.kill_paused(&c).await;
        }
        tracing::info!(container = %self.d.container, timeout_secs = timeout.as_secs(), "stopping the hub container");
        let began = Instant::now();
        let t = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let mut graceful = {
            let (engine, name) = (self.engine.clone(), self.d.container.clone());
            Some(tokio::spawn(async move {
                engine
                    .stop_container(
                        &name,
                        Some(StopContainerOptionsBuilder::default().t(t).build()),
                    )
                    .await
            }))
        };
        let mut killed = false;
        let mut refused = None;
        loop {
            if !self.running().await? {
                break;
            }
            if let Some(e) = refused.take() {
                // The engine refused the stop and the container still runs.
                if let Some(g) = graceful.take() {
                    g.abort();
                }
                return Err(engine_error("cannot stop the hub container")(e));
            }
            if graceful.as_ref().is_some_and(|g| g.is_finished()) {
                if let Some(g) = graceful.take() {
                    match g.await {
                        // The client's own request timeout is not the engine's answer.
                        Ok(Ok(())) | Ok(Err(bollard::errors::Error::RequestTimeoutError)) => {}
                        Ok(Err(e)) => refused = Some(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "the engine's stop request task failed")
                        }
                    }
                }
            }
            if tokio::time::Instant::now() >= *kill_at.borrow() {
                self.kill("the stop timeout passed").await?;
                killed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(g) = graceful.take() {
            g.abort();
        }
        let id = c.id.clone().unwrap_or_default();
        fsutil::write_atomic(&self.stopped_marker(), id.as_bytes(), 0o600)?;
        // The engine kills after its timeout too; the exit code then says SIGKILL.
        let code = self
            .inspect()
            .await?
            .and_then(|c| c.state)
            .and_then(|s| s.exit_code);
        let killed = killed || (code == Some(137) && began.elapsed() >= timeout);
        tracing::info!(container = %self.d.container, killed, "hub container stopped");
        Ok(Stopped {
            was_running: true,
            killed,
        })
    }

    /// SIGKILL, then waits until the container no longer runs.
    pub(super) async fn kill(&self, why: &str) -> Result<()> {
        tracing::warn!(container = %self.d.container, why, "killing the hub container");
        self.engine
            .kill_container(
                &self.d.container,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build(),
                ),
            )
            .await
            .or_else(|e| match &e {
                // Ended by itself meanwhile.
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                } => Ok(()),
                _ => Err(e),
            })
            .map_err(engine_error("cannot kill the hub container"))?;
        let deadline = Instant::now() + KILL_GRACE;
        while self.running().await? {
            if Instant::now() >= deadline {
                return Err(AgentError::Unavailable(format!(
                    "the hub container {} still runs after SIGKILL",
                    self.d.container
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stop of a paused (frozen) container: SIGKILL, which ends it without
    /// letting it run. The engine's stop would thaw it to deliver the stop
    /// signal, and the hub would carry on for a while as the node it was
    /// when it froze — the active one, say, while another node now serves.
    /// A SIGSTOPped hub under the process driver ends the same way: killed
    /// without running again.
    pub(super) async fn kill_paused(&self, c: &ContainerInspectResponse) -> Result<Stopped> {
        self.kill("it is paused: a stop would let it run again first")
            .await?;
        let id = c.id.clone().unwrap_or_default();
        fsutil::write_atomic(&self.stopped_marker(), id.as_bytes(), 0o600)?;
        tracing::info!(container = %self.d.container, killed = true, "hub container stopped");
        Ok(Stopped {
            was_running: true,
            killed: true,
        })
    }
}
