//! The data an active node produces: a numbered tick every tick interval
//! into `hubdata.ticks`, or into store and forward when the insert fails,
//! replayed (with the original `produced_at`) once the database takes data
//! again.
//!
//! The HA loop ([`super::node`]) opens and closes the gate. [`Ticker::stop`]
//! returns only when no tick is being produced and none will be until the
//! next [`Ticker::start`], so a node that hands over has really stopped.
//! While the database answers, the gate also closes when the node's lease
//! (last heartbeat sent + takeover timeout − one tick interval) runs out, so
//! a node that stalled does not tick after a standby may have taken over.
//! When the database does not answer the node keeps ticking, like the hub.

use super::db::Db;
use super::log::{self, Latch};
use super::schema::{self, TickRow};
use super::store_forward::StoreForward;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a failing database is tried again, and store and forward replayed.
const RETRY: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Gate {
    active: bool,
    not_before: Instant,
    lease_until: Instant,
    degraded: bool,
    epoch: u64,
}

/// Handle on the tick task.
pub struct Ticker {
    gate: Mutex<Gate>,
    producing: tokio::sync::Mutex<()>,
}

impl Ticker {
    /// Spawns the tick task, gate closed.
    pub fn spawn(
        db: Db,
        node: String,
        version: String,
        interval: Duration,
        store_forward: StoreForward,
    ) -> Arc<Ticker> {
        let now = Instant::now();
        let ticker = Arc::new(Ticker {
            gate: Mutex::new(Gate {
                active: false,
                not_before: now,
                lease_until: now,
                degraded: false,
                epoch: 0,
            }),
            producing: tokio::sync::Mutex::new(()),
        });
        let task = TickTask {
            ticker: ticker.clone(),
            db,
            node,
            version,
            interval,
            sf: store_forward,
        };
        tokio::spawn(task.run());
        ticker
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the gate: ticks from `not_before` on, while the lease lasts.
    pub fn start(&self, not_before: Instant, lease_until: Instant) {
        let mut g = self.gate();
        g.active = true;
        g.not_before = not_before;
        g.lease_until = lease_until;
        g.degraded = false;
        g.epoch += 1;
    }

    /// Extends the lease after a successful heartbeat.
    pub fn renew(&self, lease_until: Instant) {
        let mut g = self.gate();
        g.lease_until = lease_until;
        g.degraded = false;
    }

    /// The database did not answer the heartbeat: keep ticking regardless
    /// of the lease, as the hub does.
    pub fn set_degraded(&self) {
        self.gate().degraded = true;
    }

    /// Closes the gate and waits until no tick is in flight.
    pub async fn stop(&self) {
        self.gate().active = false;
        let _wait = self.producing.lock().await;
    }
}

struct TickTask {
    ticker: Arc<Ticker>,
    db: Db,
    node: String,
    version: String,
    interval: Duration,
    sf: StoreForward,
}

impl TickTask {
    async fn run(mut self) {
        let started = Instant::now();
        let mut timer = tokio::time::interval(self.interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut db_latch = Latch::default();
        let mut lease_latch = Latch::default();
        let mut last_try: Option<Instant> = None;
        let mut last_replay: Option<Instant> = None;
        let mut announced_epoch = 0;
        let mut sf_pending = self.sf.has_pending();
        let ticker = self.ticker.clone();
        loop {
            timer.tick().await;
            let slot = (started.elapsed().as_nanos() / self.interval.as_nanos().max(1)) as i64 + 1;
            let guard = ticker.producing.lock().await;
            let now = Instant::now();
            let (go, lease_ok, epoch) = {
                let g = ticker.gate();
                let lease_ok = g.degraded || now < g.lease_until;
                (g.active && now >= g.not_before, lease_ok, g.epoch)
            };
            if go && !lease_ok {
                lease_latch.fail("leadership lease ran out while the database answers: pausing data until the next heartbeat".into());
            }
            if go && lease_ok && !super::stopping() {
                lease_latch.ok("leadership lease renewed: data resumes");
                let produced_at_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros() as i64;
                let tick = TickRow {
                    node: self.node.clone(),
                    seq: slot,
                    version: self.version.clone(),
                    produced_at_us,
                };
                if epoch != announced_epoch {
                    announced_epoch = epoch;
                    log::info(&format!("producing data: first tick seq {slot}"));
                    log::role(true);
                }
                let try_db = !db_latch.failing() || last_try.is_none_or(|t| t.elapsed() >= RETRY);
                let stored = if try_db {
                    last_try = Some(now);
                    let one = vec![tick.clone()];
                    match self
                        .db
                        .run(|c| async move { schema::insert_ticks(&c, &one).await })
                        .await
                    {
                        Ok(_) => {
                            db_latch.ok("data flows to the database again");
                            true
                        }
                        Err(e) => {
                            if e.is_missing_schema() {
                                let _ = self.ensure_hubdata().await;
                            }
                            db_latch.fail(format!(
                                "tick insert failed ({e}); writing ticks to store-and-forward {}",
                                self.sf.current_path().display()
                            ));
                            false
                        }
                    }
                } else {
                    false
                };
                if !stored {
                    match self.sf.append(&tick) {
                        Ok(()) => sf_pending = true,
                        Err(e) => log::error(&format!(
                            "store-and-forward write failed, tick seq {slot} lost: {e}"
                        )),
                    }
                }
            }
            drop(guard);
            if sf_pending && !db_latch.failing() && last_replay.is_none_or(|t| t.elapsed() >= RETRY)
            {
                last_replay = Some(Instant::now());
                sf_pending = !self.replay().await;
            }
        }
    }

    async fn ensure_hubdata(&mut self) -> Result<(), super::db::DbFailure> {
        self.db
            .run(|c| async move { schema::ensure_hubdata(&c).await })
            .await
    }

    /// Replays every store-and-forward file; true when nothing is left.
    async fn replay(&mut self) -> bool {
        let batches = match self.sf.take_batches() {
            Ok(b) => b,
            Err(e) => {
                log::warn(&format!("cannot read store-and-forward files: {e}"));
                return false;
            }
        };
        for (path, ticks) in batches {
            let count = ticks.len();
            let rows = ticks.clone();
            match self
                .db
                .run(|c| async move { schema::insert_ticks(&c, &rows).await })
                .await
            {
                Ok(inserted) => {
                    log::info(&format!(
                        "replayed {count} store-and-forward ticks from {} ({inserted} new)",
                        path.display()
                    ));
                    if let Err(e) = self.sf.done(&path) {
                        log::warn(&format!("cannot remove replayed {}: {e}", path.display()));
                    }
                }
                Err(e) => {
                    log::warn(&format!(
                        "store-and-forward replay of {} failed: {e}",
                        path.display()
                    ));
                    return false;
                }
            }
        }
        true
    }
}
