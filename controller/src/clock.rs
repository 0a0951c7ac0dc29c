//! Wall-clock time as the journal and the outage windows record it: the
//! database server's clock, not this machine's. A run started on one
//! machine and resumed on another whose clock is minutes off still has its
//! windows, its single-node time and its audit entries on one clock, so no
//! span is computed across two controllers' clocks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds to add to this machine's clock to read the database
/// server's (0 until [`sync`] ran).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// This machine's Unix milliseconds.
fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix milliseconds now, on the database server's clock once [`sync`] ran.
pub fn now_ms() -> u64 {
    local_ms()
        .saturating_add(OFFSET_MS.load(Ordering::Relaxed))
        .max(0) as u64
}

/// Reads the server's clock through `client` and keeps the offset of this
/// machine's clock to it (taken at the middle of the round trip); returns
/// the offset in ms. Called when a run is opened or resumed, before it
/// records any time.
pub async fn sync(client: &tokio_postgres::Client) -> Result<i64, crate::db::DbError> {
    let sent = Instant::now();
    let local_before = local_ms();
    let row = client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .await
        .map_err(crate::db::query_err("reading the database server's clock"))?;
    let server: i64 = row.get(0);
    let half_trip = (sent.elapsed().as_millis() / 2) as i64;
    let offset = offset_of(server, local_before, half_trip);
    OFFSET_MS.store(offset, Ordering::Relaxed);
    if offset.abs() > 2_000 {
        tracing::warn!(
            offset_ms = offset,
            "this machine's clock differs from the database server's; the run records the server's time"
        );
    }
    Ok(offset)
}

/// The offset that maps a local reading to the server's, given the server's
/// answer, the local time when it was asked, and half the round trip.
fn offset_of(server_ms: i64, local_asked_ms: i64, half_trip_ms: i64) -> i64 {
    server_ms - (local_asked_ms + half_trip_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_at_the_middle_of_the_round_trip() {
        // Asked at local 1000, answered 40 ms later; the server said 181020.
        assert_eq!(offset_of(181_020, 1_000, 20), 180_000);
        // A server behind this machine gives a negative offset.
        assert_eq!(offset_of(1_020, 181_000, 20), -180_000);
    }
}
