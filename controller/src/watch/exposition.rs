//! `hubshift watch`'s `/metrics` and `/healthz`: the latest look at every
//! group, as numbers per group and per node. Scrapes read what the last
//! poll found; they never wait on an agent or a database.

use super::health::{GroupHealth, GroupLook};
use hubshift_common::exposition::{Answer, Exposed, Health};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// What the last poll found, shared with the listener.
#[derive(Debug, Default)]
pub struct Picture {
    /// Per group: the look and its judgement.
    pub groups: BTreeMap<String, (GroupLook, GroupHealth)>,
    /// Polls made.
    pub polls: u64,
    /// When the last poll ended (Unix seconds).
    pub last_poll_unix: f64,
    /// How long it took.
    pub last_poll_secs: f64,
}

/// The listener's view of the picture.
pub struct WatchExposition {
    picture: Arc<RwLock<Picture>>,
    /// A poll older than this makes `/healthz` fail: the watcher is stuck.
    stale_after: Duration,
}

impl WatchExposition {
    /// Serves `picture`; unhealthy when no poll ended within `stale_after`.
    pub fn new(picture: Arc<RwLock<Picture>>, stale_after: Duration) -> Self {
        Self {
            picture,
            stale_after,
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The registry of one scrape.
pub fn registry(p: &Picture) -> Registry {
    let mut r = Registry::with_prefix("hubshift");
    r.register(
        "watch_build",
        "The watcher's version",
        Info::new(vec![(
            "version".to_string(),
            hubshift_common::VERSION.to_string(),
        )]),
    );
    let polls = prometheus_client::metrics::counter::Counter::<u64>::default();
    polls.inc_by(p.polls);
    r.register("watch_polls", "Polls made since the watcher started", polls);
    let last = FloatGauge::default();
    last.set(p.last_poll_unix);
    r.register(
        "watch_last_poll_timestamp_seconds",
        "When the last poll of every group ended (Unix seconds)",
        last,
    );
    let took = FloatGauge::default();
    took.set(p.last_poll_secs);
    r.register(
        "watch_last_poll_duration_seconds",
        "How long the last poll took",
        took,
    );

    let g = |name: &str,
             help: &str,
             r: &mut Registry,
             value: &dyn Fn(&GroupLook, &GroupHealth) -> Option<f64>| {
        let fam = Family::<Labels, FloatGauge>::default();
        for (group, (look, health)) in &p.groups {
            if let Some(v) = value(look, health) {
                fam.get_or_create(&labels(&[("group", group)])).set(v);
            }
        }
        r.register(name, help, fam);
    };
    g(
        "group_nodes",
        "Nodes of the group in the inventory",
        &mut r,
        &|_, h| Some(h.nodes as f64),
    );
    g(
        "group_reachable_nodes",
        "Nodes whose agent answered",
        &mut r,
        &|_, h| Some(h.reachable as f64),
    );
    g(
        "group_active_nodes",
        "Nodes serving as HA active (running, not frozen): 1 is healthy, 0 is no data flowing, 2 is split brain",
        &mut r,
        &|_, h| (h.reachable > 0).then_some(h.active as f64),
    );
    g(
        "group_standby_nodes",
        "Nodes ready to take over (running standby, not frozen)",
        &mut r,
        &|_, h| (h.reachable > 0).then_some(h.standby as f64),
    );
    g(
        "group_versions",
        "Distinct runtime versions among the reachable nodes (above 1: version skew)",
        &mut r,
        &|_, h| (h.reachable > 0).then_some(h.versions.len() as f64),
    );
    g(
        "group_certificate_stores_equal",
        "1 when every reachable node has the same certificate store",
        &mut r,
        &|_, h| (h.reachable > 0).then_some(h.certificates_equal as u8 as f64),
    );
    g(
        "group_ready_to_upgrade",
        "1 when nothing stands in the way of `hubshift upgrade` (hubshift_group_not_ready says why not)",
        &mut r,
        &|_, h| Some(h.ready as u8 as f64),
    );
    g(
        "group_database_up",
        "1 when the group's database answered",
        &mut r,
        &|l, _| Some(l.database.is_ok() as u8 as f64),
    );
    g(
        "group_schema_present",
        "1 when the hubs' orchestration schema exists",
        &mut r,
        &|l, _| {
            l.database
                .as_ref()
                .ok()
                .map(|d| d.schema_present as u8 as f64)
        },
    );
    g(
        "group_heartbeat_age_seconds",
        "Age of the active hub's heartbeat (only with the inventory's heartbeat_query)",
        &mut r,
        &|l, _| l.database.as_ref().ok().and_then(|d| d.heartbeat_age_secs),
    );
    g(
        "group_upgrade_running",
        "1 while a controller holds the group's lock",
        &mut r,
        &|l, _| l.database.as_ref().ok().map(|d| d.lock_held as u8 as f64),
    );
    g(
        "group_last_run_timestamp_seconds",
        "When the group's newest run last changed (Unix seconds, the database's clock)",
        &mut r,
        &|l, _| {
            l.database
                .as_ref()
                .ok()
                .and_then(|d| d.last_run.as_ref())
                .and_then(|r| r.updated_unix)
        },
    );

    let versions = Family::<Labels, Gauge>::default();
    let not_ready = Family::<Labels, Gauge>::default();
    let last_run = Family::<Labels, Gauge>::default();
    let outage = Family::<Labels, FloatGauge>::default();
    let reachable = Family::<Labels, Gauge>::default();
    let active = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    for (group, (look, health)) in &p.groups {
        for (version, n) in &health.versions {
            versions
                .get_or_create(&labels(&[("group", group), ("version", version)]))
                .set(*n as i64);
        }
        if let Some(reason) = health.not_ready_reason {
            not_ready
                .get_or_create(&labels(&[("group", group), ("reason", reason)]))
                .set(1);
        }
        if let Some(run) = look
            .database
            .as_ref()
            .ok()
            .and_then(|d| d.last_run.as_ref())
        {
            last_run
                .get_or_create(&labels(&[
                    ("group", group),
                    ("kind", &run.kind),
                    ("state", &run.state),
                ]))
                .set(1);
            let mut by_window: BTreeMap<u8, f64> = BTreeMap::new();
            for (w, secs) in &run.windows {
                *by_window.entry(*w).or_default() += secs;
            }
            for (w, secs) in by_window {
                outage
                    .get_or_create(&labels(&[("group", group), ("window", &w.to_string())]))
                    .set(secs);
            }
        }
        for n in &look.nodes {
            let l = labels(&[("group", group), ("node", &n.name)]);
            reachable.get_or_create(&l).set(n.seen.is_ok() as i64);
            if let Ok(s) = &n.seen {
                active.get_or_create(&l).set(s.is_active() as i64);
                up.get_or_create(&l).set(s.running as i64);
            }
        }
    }
    r.register(
        "group_nodes_by_version",
        "Reachable nodes per active runtime version",
        versions,
    );
    r.register(
        "group_not_ready",
        "1 for the reason a group is not ready to upgrade (a preflight check's name, database, lock_held, run_unfinished or agent_unreachable)",
        not_ready,
    );
    r.register(
        "group_last_run",
        "1 for the kind and state of the group's newest run",
        last_run,
    );
    r.register(
        "group_last_run_outage_seconds",
        "The newest run's outage, per window (1: hand-over, 2: new version start, 3: fallback)",
        outage,
    );
    r.register(
        "node_reachable",
        "1 when the node's agent answered",
        reachable,
    );
    r.register(
        "node_active",
        "1 while the node serves as HA active",
        active,
    );
    r.register("node_up", "1 while the node's hub process runs", up);
    r
}

impl Exposed for WatchExposition {
    fn metrics(&self) -> Answer<'_, String> {
        Box::pin(async move {
            let mut text = String::new();
            let p = self.picture.read().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = encode(&mut text, &registry(&p)) {
                tracing::warn!(error = %e, "cannot encode the metrics");
            }
            text
        })
    }

    fn health(&self) -> Answer<'_, Health> {
        Box::pin(async move {
            let p = self.picture.read().unwrap_or_else(|e| e.into_inner());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let age = now - p.last_poll_unix;
            if p.polls == 0 {
                Health {
                    ok: false,
                    body: "no poll has ended yet".into(),
                }
            } else if age > self.stale_after.as_secs_f64() {
                Health {
                    ok: false,
                    body: format!("the last poll ended {age:.0} s ago: the watcher is stuck"),
                }
            } else {
                Health {
                    ok: true,
                    body: format!("ok: {} group(s), last poll {age:.1} s ago", p.groups.len()),
                }
            }
        })
    }
}
