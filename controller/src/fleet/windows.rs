//! Maintenance windows at work: what each group's hand-over needs, the
//! park of a group journaled in the fleet's record, the wait for a window,
//! and the same gate for a single group's upgrade. The decisions are the
//! scheduler's ([`super::scheduler`]) and [`crate::window::decide`]'s.

use super::scheduler::{GroupWindows, ParkedGroup};
use crate::exit::{ParkKind, Parked, Refused};
use crate::inventory::Group;
use crate::journal;
use crate::output::Output;
use crate::run::Site;
use crate::window::{self, Gate};
use anyhow::Result;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// What `group`'s hand-over needs before its window closes (as a run
/// decides it: [`crate::run::window_gate::handover_need`]).
pub async fn need(site: &Site, group: &Group) -> SignedDuration {
    let db = site.database(group).ok();
    crate::run::window_gate::handover_need(&site.inventory, db.as_ref(), group).await
}

/// The windows of the groups that have any.
pub(super) async fn group_windows(site: &Site, groups: &[Group]) -> HashMap<String, GroupWindows> {
    let mut out = HashMap::new();
    for g in groups.iter().filter(|g| !g.windows.is_empty()) {
        out.insert(
            g.name.clone(),
            GroupWindows {
                windows: g.windows.clone(),
                need: need(site, g).await,
            },
        );
    }
    out
}

/// `opens` for people, in the zone of the group's first window.
pub(super) fn show(site: &Site, p: &ParkedGroup) -> String {
    let windows = site
        .inventory
        .group(&p.group)
        .map(|g| g.windows.clone())
        .unwrap_or_default();
    format!(
        "waits for its window {}, which opens {}",
        p.window,
        window::show(p.opens, &windows)
    )
}

/// Journals `group` as parked (or no longer) in every member's database.
pub(super) async fn journal_park(
    site: &Site,
    members: &[Group],
    fleet: &str,
    group: &str,
    parked: Option<&ParkedGroup>,
) {
    let value = parked.map(|p| json!({ "opens": p.opens.to_string(), "window": p.window }));
    for (_, db) in site.distinct_databases_among(members) {
        if let Ok(db) = db
            && let Ok(client) = db.connect().await
            && let Err(e) = journal::set_fleet_parked(&client, fleet, group, value.as_ref()).await
        {
            tracing::warn!(group, error = %e, "cannot journal the group's wait for its window");
        }
    }
}

/// Sleeps until `t` on the window clock.
pub(super) async fn sleep_until(t: Timestamp) {
    loop {
        let left = t.duration_since(window::now());
        if left <= SignedDuration::ZERO {
            return;
        }
        let step = Duration::try_from(left)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(10));
        tokio::time::sleep(step.max(Duration::from_millis(50))).await;
    }
}

/// A single group's upgrade begins only inside its window: outside, it
/// waits (`--wait-for-window`) or exits 4 naming the next window, nothing
/// changed; with no window long enough it is refused (exit 3).
pub async fn await_window(out: &Output, site: &Site, group: &Group, wait: bool) -> Result<()> {
    if group.windows.is_empty() {
        return Ok(());
    }
    let need = need(site, group).await;
    loop {
        match window::decide(&group.windows, window::now(), need) {
            Gate::Open => return Ok(()),
            Gate::Never => {
                return Err(Refused(format!(
                    "no maintenance window of group {} is long enough for its hand-over (about {} s); nothing was changed",
                    group.name,
                    need.as_secs()
                ))
                .into());
            }
            Gate::Wait { opens, window: w } => {
                let when = window::show(opens, &group.windows);
                out.event(
                    "group_parked",
                    json!({ "opens": opens.to_string(), "window": w, "waiting": wait }),
                    || format!("outside its maintenance window: the next ({w}) opens {when}"),
                );
                if !wait {
                    return Err(Parked {
                        kind: ParkKind::Window,
                        message: format!(
                            "group {} is outside its maintenance window; nothing was changed. The next ({w}) opens {when}: run the upgrade again then, or with --wait-for-window",
                            group.name
                        ),
                    }
                    .into());
                }
                sleep_until(opens).await;
            }
        }
    }
}
