//! `hubshift watch`: a long-running exporter for the days between
//! upgrades. Every interval it looks at each group (agents and database),
//! judges its health, emits one event per transition (lost its active
//! node, two actives, version skew, a node unreachable, healthy again) and
//! serves the latest numbers at `/metrics` for Prometheus.

pub mod exposition;
pub mod health;
pub mod look;

use crate::output::Output;
use crate::run::Site;
use anyhow::{Context, Result};
use exposition::{Picture, WatchExposition};
use health::{Condition, GroupLook};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What `hubshift watch` was asked to do.
#[derive(Debug, Clone)]
pub struct WatchArgs {
    /// Groups to watch; empty: all.
    pub groups: Vec<String>,
    /// Address of `/metrics` and `/healthz`.
    pub listen: String,
    /// Time between looks.
    pub interval: Duration,
}

/// Watches until SIGINT or SIGTERM.
pub async fn watch(out: Output, inventory: &Path, args: &WatchArgs) -> Result<()> {
    let site = Site::load(inventory)?;
    let groups = if args.groups.is_empty() {
        site.inventory.groups.clone()
    } else {
        let mut v = Vec::new();
        for n in &args.groups {
            v.push(site.group(n)?.clone());
        }
        v
    };
    let addr: std::net::SocketAddr = args.listen.parse().map_err(|e| {
        crate::exit::UsageError(format!(
            "--listen {:?} is not an address:port ({e})",
            args.listen
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --listen {addr}"))?;
    let bound = listener.local_addr()?;
    let picture = Arc::new(RwLock::new(Picture::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Three missed polls (and at least a minute) make /healthz fail.
    let stale_after = (args.interval * 3).max(Duration::from_secs(60));
    tokio::spawn(hubshift_common::exposition::serve(
        listener,
        hubshift_common::exposition::Bounds::default(),
        Arc::new(WatchExposition::new(picture.clone(), stale_after)),
        stop_rx,
    ));
    out.event(
        "watch_started",
        json!({
            "listen": bound.to_string(),
            "groups": groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            "interval_ms": args.interval.as_millis() as u64,
        }),
        || {
            format!(
                "watching {} group(s) every {:?}; metrics at http://{bound}/metrics",
                groups.len(),
                args.interval
            )
        },
    );
    let patience = Duration::from_secs(site.inventory.timeouts.rpc)
        .min(args.interval.max(Duration::from_secs(2)));
    let conns = look::Connections::default();
    let mut before: BTreeMap<String, BTreeSet<Condition>> = BTreeMap::new();
    let mut stop = Box::pin(stop_signal());
    loop {
        let began = Instant::now();
        let looks = futures_util::future::join_all(groups.iter().map(|g| {
            let database = site.database(g).map_err(|e| e.to_string());
            look::look(&site.inventory, g, database, &conns, patience)
        }))
        .await;
        let mut judged = BTreeMap::new();
        for l in looks {
            let h = health::judge(&l);
            let now = health::conditions(&l, &h);
            report(&out, &l, before.get(&l.group), &now);
            before.insert(l.group.clone(), now);
            judged.insert(l.group.clone(), (l, h));
        }
        {
            let mut p = picture.write().unwrap_or_else(|e| e.into_inner());
            p.groups = judged;
            p.polls += 1;
            p.last_poll_secs = began.elapsed().as_secs_f64();
            p.last_poll_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        }
        let next = began + args.interval;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = &mut stop => break,
        }
    }
    let _ = stop_tx.send(true);
    out.event("watch_stopped", json!({}), || "watch stopped".into());
    Ok(())
}

/// Logs and prints each transition of one group.
fn report(
    out: &Output,
    look: &GroupLook,
    before: Option<&BTreeSet<Condition>>,
    now: &BTreeSet<Condition>,
) {
    let out = out.for_group(&look.group);
    for t in health::transitions(before, now) {
        let detail = detail(look, t.condition.as_ref());
        let bad =
            t.event != "group_healthy" && t.condition.as_ref().is_some_and(|c| now.contains(c));
        if bad {
            tracing::warn!(group = %look.group, event = t.event, %detail, "group health changed");
        } else {
            tracing::info!(group = %look.group, event = t.event, %detail, "group health changed");
        }
        let node = match &t.condition {
            Some(Condition::NodeUnreachable { node }) => Some(node.clone()),
            _ => None,
        };
        out.event(t.event, json!({ "node": node, "detail": detail }), || {
            format!("{:<16} {}: {detail}", look.group, t.event.replace('_', " "))
        });
    }
}

/// One line saying what the look showed about `condition`.
fn detail(look: &GroupLook, condition: Option<&Condition>) -> String {
    let roles = || {
        look.nodes
            .iter()
            .map(|n| match &n.seen {
                Ok(s) if s.is_active() => format!("{} active", n.name),
                Ok(s) if s.is_standby() => format!("{} standby", n.name),
                Ok(s) if s.frozen => format!("{} frozen", n.name),
                Ok(s) if s.running => format!("{} {}", n.name, s.role),
                Ok(_) => format!("{} not running", n.name),
                Err(_) => format!("{} unreachable", n.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match condition {
        None | Some(Condition::NoActive | Condition::TwoActives) => roles(),
        Some(Condition::VersionSkew) => look
            .nodes
            .iter()
            .filter_map(|n| {
                n.seen
                    .as_ref()
                    .ok()
                    .map(|s| format!("{} {}", n.name, s.version))
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(Condition::CertificatesDiffer) => look
            .nodes
            .iter()
            .filter_map(|n| {
                n.seen.as_ref().ok().map(|s| {
                    let d = s.certificate_sha256.get(..12).unwrap_or("none");
                    format!("{} {d}", n.name)
                })
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(Condition::NodeUnreachable { node }) => look
            .nodes
            .iter()
            .find(|n| &n.name == node)
            .map(|n| match &n.seen {
                Err(e) => e.clone(),
                Ok(_) => "answers".into(),
            })
            .unwrap_or_default(),
        Some(Condition::DatabaseUnreachable) => match &look.database {
            Err(e) => e.clone(),
            Ok(_) => "answers".into(),
        },
    }
}

/// Resolves at SIGINT or SIGTERM (a terminal's Ctrl-C, systemd's stop).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
