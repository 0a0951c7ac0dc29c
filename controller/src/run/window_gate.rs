//! A run's hand-over (the stop of its primary) begins only inside one of
//! its group's maintenance windows and only when the time it needs fits
//! before the window closes; staging before it may run at any time. What
//! it needs is the group's previous upgrade's time with half again as
//! margin, or else the sum of the timeouts — the same estimate the fleet's
//! scheduler parks groups by.

use super::Run;
use crate::db::Database;
use crate::inventory::{Group, Inventory};
use crate::plan::Step;
use crate::window::{self, Gate};
use jiff::SignedDuration;
use std::time::Duration;

/// What `group`'s hand-over needs before its window closes.
pub async fn handover_need(
    inv: &Inventory,
    db: Option<&Database>,
    group: &Group,
) -> SignedDuration {
    let mut previous = None;
    if let Some(db) = db
        && let Ok(client) = db.connect().await
    {
        previous = crate::journal::last_upgrade_ms(&client, &group.name)
            .await
            .ok()
            .flatten();
    }
    let d = match previous {
        Some(ms) if ms > 0 => Duration::from_millis(ms as u64 * 3 / 2),
        _ => inv.handover_estimate(),
    };
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Why an upgrade must not begin its hand-over with `step` now (None: it
/// may, or `step` does not begin one). A rollback is never held back.
pub(super) async fn closed(run: &Run, step: &Step) -> Option<String> {
    if !matches!(step, Step::StopPrimary { .. })
        || run.group.windows.is_empty()
        || run.facts.rollback_of.is_some()
    {
        return None;
    }
    let need = handover_need(&run.inv, Some(&run.db), &run.group).await;
    match window::decide(&run.group.windows, window::now(), need) {
        Gate::Open => None,
        Gate::Wait { opens, window: w } => Some(format!(
            "parked before its hand-over: outside its maintenance window (the next, {w}, opens {})",
            window::show(opens, &run.group.windows)
        )),
        Gate::Never => Some(format!(
            "parked before its hand-over: no maintenance window is long enough for it (about {} s)",
            need.as_secs()
        )),
    }
}
