//! How the steps wait: a poll interval and a bounded poll.

use anyhow::{Result, bail};
use std::time::Duration;
// The tokio clock, so that unit tests under paused time wait in no time.
use tokio::time::Instant;

/// How often waits look again.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `f` until it yields a value, failing after `timeout` with `what`.
pub(super) async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}
