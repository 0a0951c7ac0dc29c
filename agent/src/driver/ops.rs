//! How operations on the hub wait for each other, for both drivers: the
//! operations lock (Start, Stop, ActivateRuntime, Restore) is never
//! waited for without bound, and Stops share one stop, so a later, more
//! urgent Stop is not queued behind an abandoned one with a long timeout:
//! it brings the kill forward to its own deadline.

use crate::error::{AgentError, Result};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub use crate::config::MAX_STOP_TIMEOUT_SECS;

/// The timeout a Stop asks for: `requested` seconds (0: the configured
/// `hub.stop_timeout_secs`), at most [`MAX_STOP_TIMEOUT_SECS`].
pub fn stop_timeout(requested: u32, configured: u64) -> Result<Duration> {
    if requested > MAX_STOP_TIMEOUT_SECS {
        return Err(AgentError::InvalidArgument(format!(
            "timeout_seconds {requested} is above the maximum of {MAX_STOP_TIMEOUT_SECS} s \
             (0 means the agent's configured hub.stop_timeout_secs)"
        )));
    }
    Ok(Duration::from_secs(if requested == 0 {
        configured
    } else {
        u64::from(requested)
    }))
}

/// The longest a Start, ActivateRuntime or Restore waits for the
/// operations lock: as long as a Start (its create) and a Stop with the
/// configured timeouts may hold it, plus a margin. Then it is answered
/// ABORTED, naming the holder.
pub fn lock_wait(cfg: &crate::config::Config) -> Duration {
    Duration::from_secs(cfg.hub.create_timeout_secs + cfg.hub.stop_timeout_secs + 30)
}

/// The operations lock, which knows who holds it, so a waiter that gives
/// up can say why.
#[derive(Default)]
pub struct OpsLock {
    lock: tokio::sync::Mutex<()>,
    holder: Mutex<Option<(&'static str, Instant)>>,
}

/// Held while an operation needs the hub to stay as it is.
pub struct OpsGuard<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    holder: &'a Mutex<Option<(&'static str, Instant)>>,
}

impl Drop for OpsGuard<'_> {
    fn drop(&mut self) {
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl OpsLock {
    /// Takes the lock for `what`, waiting at most `wait`.
    pub async fn acquire(&self, what: &'static str, wait: Duration) -> Result<OpsGuard<'_>> {
        let began = Instant::now();
        match tokio::time::timeout(wait, self.lock.lock()).await {
            Ok(guard) => Ok(self.held(guard, what)),
            Err(_) => Err(self.busy(what, began)),
        }
    }

    /// Takes the lock for `what`, waiting until the deadline `until` says,
    /// which may move while it waits (a more urgent Stop joined).
    pub async fn acquire_until(
        &self,
        what: &'static str,
        until: &mut watch::Receiver<Instant>,
    ) -> Result<OpsGuard<'_>> {
        let began = Instant::now();
        loop {
            let deadline = *until.borrow_and_update();
            tokio::select! {
                guard = self.lock.lock() => return Ok(self.held(guard, what)),
                _ = tokio::time::sleep_until(deadline) => return Err(self.busy(what, began)),
                changed = until.changed() => {
                    if changed.is_err() {
                        // Nobody can move it any more: wait for the last one.
                        return match tokio::time::timeout_at(deadline, self.lock.lock()).await {
                            Ok(guard) => Ok(self.held(guard, what)),
                            Err(_) => Err(self.busy(what, began)),
                        };
                    }
                }
            }
        }
    }

    fn held<'a>(
        &'a self,
        guard: tokio::sync::MutexGuard<'a, ()>,
        what: &'static str,
    ) -> OpsGuard<'a> {
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = Some((what, Instant::now()));
        OpsGuard {
            _guard: guard,
            holder: &self.holder,
        }
    }

    fn busy(&self, what: &'static str, began: Instant) -> AgentError {
        let holder = *self.holder.lock().unwrap_or_else(PoisonError::into_inner);
        let by = match holder {
            Some((name, since)) => format!("{name} (for {} s)", since.elapsed().as_secs()),
            None => "another operation".to_string(),
        };
        AgentError::Aborted(format!(
            "{what} gave up after waiting {} s: the hub is held by {by}; nothing was done by this {what}, retry",
            began.elapsed().as_secs()
        ))
    }
}

/// How a stop ended, as every Stop sharing it sees it.
type Outcome<T> = std::result::Result<T, AgentError>;

/// The stop in progress, shared by every Stop that arrives meanwhile.
struct Shared<T> {
    /// When the hub is killed if it has not stopped: the earliest deadline
    /// of the Stops sharing it.
    kill_at: watch::Sender<Instant>,
    /// The outcome, once the stop has ended.
    done: watch::Sender<Option<Outcome<T>>>,
}

/// One stop at a time; later Stops join it and get a copy of its outcome
/// (`T`, the driver's stop result).
pub struct Stops<T> {
    current: Mutex<Option<Arc<Shared<T>>>>,
}

impl<T> Default for Stops<T> {
    fn default() -> Self {
        Self {
            current: Mutex::new(None),
        }
    }
}

/// Clears the stop in progress when the leading Stop ends, however it ends.
struct Clear<'a, T>(&'a Stops<T>);

impl<T> Drop for Clear<'_, T> {
    fn drop(&mut self) {
        *self
            .0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl<T: Copy> Stops<T> {
    /// Runs a Stop whose caller gives the hub until `deadline` before it is
    /// killed. With no stop in progress, `lead` stops the hub, killing it
    /// when the receiver's instant has passed (it moves earlier when a more
    /// urgent Stop joins). With one in progress, this Stop joins it, brings
    /// its kill forward to `deadline` if that is earlier, and returns its
    /// outcome; it waits at most until `deadline` plus `grace` (the kill's
    /// own wait).
    pub async fn run<F, Fut>(&self, deadline: Instant, grace: Duration, lead: F) -> Outcome<T>
    where
        F: FnOnce(watch::Receiver<Instant>) -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        let (shared, leading) = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            match current.as_ref() {
                Some(s) => {
                    s.kill_at.send_if_modified(|at| {
                        let earlier = deadline < *at;
                        if earlier {
                            *at = deadline;
                        }
                        earlier
                    });
                    (s.clone(), false)
                }
                None => {
                    let s = Arc::new(Shared {
                        kill_at: watch::channel(deadline).0,
                        done: watch::channel(None).0,
                    });
                    *current = Some(s.clone());
                    (s, true)
                }
            }
        };
        if leading {
            let clear = Clear(self);
            let outcome = lead(shared.kill_at.subscribe()).await;
            drop(clear);
            let copy = match &outcome {
                Ok(r) => Ok(*r),
                Err(e) => Err(e.duplicate()),
            };
            shared.done.send_replace(Some(copy));
            return outcome;
        }
        tracing::info!(
            "a stop is in progress: this Stop joins it (its deadline applies if earlier)"
        );
        let mut done = shared.done.subscribe();
        drop(shared);
        let waited =
            tokio::time::timeout_at(deadline + grace, done.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(outcome)) => match outcome.as_ref() {
                Some(Ok(r)) => Ok(*r),
                Some(Err(e)) => Err(e.duplicate()),
                None => Err(AgentError::Internal("the shared stop ended without an outcome".into())),
            },
            Ok(Err(_)) => Err(AgentError::Internal(
                "the stop this Stop joined ended without an outcome".into(),
            )),
            Err(_) => Err(AgentError::DeadlineExceeded(
                "the stop in progress did not end by this Stop's deadline; ask Status, then Stop again".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_timeouts_above_the_maximum_are_refused() {
        assert_eq!(stop_timeout(0, 60).unwrap(), Duration::from_secs(60));
        assert_eq!(stop_timeout(5, 60).unwrap(), Duration::from_secs(5));
        assert!(stop_timeout(MAX_STOP_TIMEOUT_SECS, 60).is_ok());
        let err = stop_timeout(u32::MAX, 60).unwrap_err();
        assert!(matches!(err, AgentError::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("3600"), "{err}");
    }

    #[tokio::test]
    async fn a_waiter_gives_up_naming_the_holder() {
        let lock = OpsLock::default();
        let _held = lock.acquire("Start", Duration::from_secs(1)).await.unwrap();
        let err = lock
            .acquire("ActivateRuntime", Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, AgentError::Aborted(_)), "{err}");
        assert!(err.to_string().contains("held by Start"), "{err}");
    }

    /// A later Stop with an earlier deadline moves the leader's kill.
    #[tokio::test]
    async fn a_more_urgent_stop_brings_the_kill_forward() {
        let stops = Arc::new(Stops::default());
        let far = Instant::now() + Duration::from_secs(3600);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(1);
        let leader = {
            let stops = stops.clone();
            tokio::spawn(async move {
                stops
                    .run(far, Duration::from_secs(10), |mut kill_at| async move {
                        let _ = seen_tx.send(()).await;
                        // "Stopping": until the kill instant, which a joiner moves.
                        loop {
                            let at = *kill_at.borrow_and_update();
                            tokio::select! {
                                _ = tokio::time::sleep_until(at) => return Ok((true, true)),
                                _ = kill_at.changed() => {}
                            }
                        }
                    })
                    .await
            })
        };
        seen_rx.recv().await.unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        let joined = stops
            .run(soon, Duration::from_secs(10), |_| async {
                Err(AgentError::Internal("a joiner never leads".into()))
            })
            .await
            .unwrap();
        assert_eq!(joined, (true, true));
        assert_eq!(leader.await.unwrap().unwrap(), (true, true));
    }
}
