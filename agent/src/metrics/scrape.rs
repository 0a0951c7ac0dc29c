//! `/metrics` and `/healthz`: the hub as the drivers see it at the moment
//! of the scrape, beside what the agent counted. Read-only; names, labels
//! and values carry no secret (no JDBC URI, no key, no file content — the
//! certificate store only as a short number that changes when it does).

use super::counters::{Counters, FloatGauge};
use crate::certificate;
use crate::config::Config;
use crate::disk;
use crate::driver::{HubDriver, HubState, RuntimeStore};
use crate::places;
use crate::role::Role;
use hubshift_common::exposition::{Answer, Exposed, Health};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Labels = Vec<(String, String)>;

/// A health check or scrape that waits longer on the driver than this says
/// the driver does not answer (a hung engine, a blocked disk).
const DRIVER_PATIENCE: Duration = Duration::from_secs(3);

/// What the metrics listener serves for this agent.
pub struct AgentExposition {
    cfg: Arc<Config>,
    hub: Arc<dyn HubDriver>,
    runtimes: Arc<dyn RuntimeStore>,
    counters: Counters,
    /// What each staged version declares: staged runtimes do not change,
    /// so their archives are read once, not at every scrape.
    declared: Mutex<HashMap<String, String>>,
}

/// The hub at the moment of a scrape.
struct Snapshot {
    view: Option<crate::driver::HubView>,
    active: Option<String>,
    staged: Vec<(String, String)>,
    certificate: Option<String>,
    free: Vec<(&'static str, u64)>,
}

impl AgentExposition {
    /// Reads the drivers and the counters at each request.
    pub fn new(
        cfg: Arc<Config>,
        hub: Arc<dyn HubDriver>,
        runtimes: Arc<dyn RuntimeStore>,
        counters: Counters,
    ) -> Self {
        Self {
            cfg,
            hub,
            runtimes,
            counters,
            declared: Mutex::new(HashMap::new()),
        }
    }

    async fn snapshot(&self) -> Snapshot {
        let view = tokio::time::timeout(DRIVER_PATIENCE, self.hub.view())
            .await
            .ok()
            .and_then(|v| v.ok());
        let active = self.runtimes.active_version().await;
        let mut staged = Vec::new();
        for version in self.runtimes.staged_versions().await {
            let known = self.declared_cache().get(&version).cloned();
            let declared = match known {
                Some(d) => d,
                None => {
                    let d = self
                        .runtimes
                        .declared(&version)
                        .await
                        .map(|d| d.version)
                        .unwrap_or_default();
                    self.declared_cache().insert(version.clone(), d.clone());
                    d
                }
            };
            staged.push((version, declared));
        }
        let cfg = self.cfg.clone();
        let room = self.runtimes.room_dir();
        let (certificate, free) = tokio::task::spawn_blocking(move || {
            let certificate = certificate::get(&cfg).ok().map(|s| s.sha256);
            let free = vec![
                ("install_root", disk::free_bytes(&room)),
                ("state_dir", disk::free_bytes(&cfg.paths.state_dir)),
                ("appdata", disk::free_bytes(&cfg.paths.appdata)),
            ];
            (certificate, free)
        })
        .await
        .unwrap_or_default();
        Snapshot {
            view,
            active,
            staged,
            certificate,
            free,
        }
    }

    fn declared_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.declared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry of one scrape: the shared counters and the snapshot.
    fn registry(&self, s: &Snapshot) -> Registry {
        let mut r = Registry::with_prefix("hubshift_agent");
        let c = &self.counters;
        r.register(
            "build",
            "The agent's version",
            Info::new(vec![(
                "version".to_string(),
                hubshift_common::VERSION.to_string(),
            )]),
        );
        r.register(
            "driver_up",
            "1 when the hub driver answered this scrape (the process table, or the Docker Engine)",
            gauge(s.view.is_some() as i64),
        );
        if let Some(v) = &s.view {
            let running = matches!(v.state, HubState::Starting | HubState::Running);
            r.register(
                "hub_up",
                "1 while the hub process (or container) runs",
                gauge(running as i64),
            );
            let states = Family::<Labels, Gauge>::default();
            for (name, state) in [
                ("stopped", HubState::Stopped),
                ("starting", HubState::Starting),
                ("running", HubState::Running),
                ("exited", HubState::Exited),
            ] {
                states
                    .get_or_create(&label("state", name))
                    .set((v.state == state) as i64);
            }
            r.register(
                "hub_state",
                "The hub's state, one series per state set to 1",
                states,
            );
            let roles = Family::<Labels, Gauge>::default();
            for (name, role) in [
                ("active", Role::Active),
                ("standby", Role::Standby),
                ("unknown", Role::Unknown),
            ] {
                roles
                    .get_or_create(&label("role", name))
                    .set((running && v.role == role) as i64);
            }
            r.register(
                "hub_role",
                "The running hub's HA role, one series per role set to 1 (all 0 while it does not run)",
                roles,
            );
            r.register(
                "hub_active",
                "1 while the hub runs, is HA active and is not frozen: sum it over a group to count its active nodes",
                gauge((running && v.role == Role::Active && !v.frozen) as i64),
            );
            r.register(
                "hub_frozen",
                "1 while the hub process exists but is not scheduled (stopped by a signal or traced)",
                gauge(v.frozen as i64),
            );
            if v.started_at_unix_ms > 0 {
                r.register(
                    "hub_start_time_seconds",
                    "When the current or last hub process started (Unix seconds)",
                    float(v.started_at_unix_ms as f64 / 1000.0),
                );
            }
        }
        let runtime = s.active.clone().unwrap_or_default();
        let node = s.view.as_ref().map(|v| v.node.clone()).unwrap_or_default();
        r.register(
            "runtime",
            "The active runtime version and the HA node name the hub last started as",
            Info::new(vec![
                ("version".to_string(), runtime),
                ("node".to_string(), node),
            ]),
        );
        let staged = Family::<Labels, Gauge>::default();
        for (version, declared) in &s.staged {
            staged
                .get_or_create(&vec![
                    ("version".to_string(), version.clone()),
                    ("declared".to_string(), declared.clone()),
                ])
                .set(1);
        }
        r.register(
            "staged_runtime",
            "Every staged runtime, with the version it declares itself (empty: declares none)",
            staged,
        );
        r.register(
            "hub_starts",
            "Hub starts this agent made since it started (restarts included)",
            c.hub_starts.clone(),
        );
        let b = &c.last_backup;
        r.register(
            "last_backup_timestamp_seconds",
            "When the newest backup was written (Unix seconds; 0: none known)",
            b.at.clone(),
        );
        r.register(
            "last_backup_bytes",
            "Size of the newest backup",
            b.bytes.clone(),
        );
        r.register(
            "last_backup_duration_seconds",
            "How long writing and checking the newest backup took (0 when known only from its file)",
            b.seconds.clone(),
        );
        r.register(
            "certificate_store_present",
            "1 when the certificate store file exists",
            gauge(s.certificate.is_some() as i64),
        );
        r.register(
            "certificate_store_digest",
            "The first 48 bits of the certificate store's SHA-256 as a number (0: no store): equal on every node of a group when the stores are equal",
            float(s.certificate.as_deref().map(digest_number).unwrap_or(0.0)),
        );
        r.register(
            "upload_bytes",
            "Bytes of runtime archives accepted",
            c.upload_bytes.clone(),
        );
        r.register(
            "upload_refusals",
            "Runtime uploads refused, by gRPC status code",
            c.upload_refusals.clone(),
        );
        r.register(
            "connections_open",
            "gRPC connections open past their TLS handshake",
            c.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "gRPC connections dropped at limits.max_connections",
            c.connections_refused.clone(),
        );
        r.register(
            "tls_handshake_timeouts",
            "TLS handshakes cut at limits.tls_handshake_timeout_secs",
            c.tls_handshake_timeouts.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed (unknown CA, no client certificate, not TLS)",
            c.tls_handshake_failures.clone(),
        );
        let free = Family::<Labels, FloatGauge>::default();
        for (dir, bytes) in &s.free {
            free.get_or_create(&label("dir", dir)).set(*bytes as f64);
        }
        r.register(
            "free_bytes",
            "Free space where runtimes are staged (install_root), of the state directory (backups) and of appdata",
            free,
        );
        r
    }
}

impl Exposed for AgentExposition {
    fn metrics(&self) -> Answer<'_, String> {
        Box::pin(async move {
            let snapshot = self.snapshot().await;
            let mut text = String::new();
            if let Err(e) = encode(&mut text, &self.registry(&snapshot)) {
                tracing::warn!(error = %e, "cannot encode the metrics");
            }
            text
        })
    }

    fn health(&self) -> Answer<'_, Health> {
        Box::pin(async move {
            match tokio::time::timeout(DRIVER_PATIENCE, self.hub.view()).await {
                Ok(Ok(v)) => Health {
                    ok: true,
                    body: format!(
                        "ok: agent {} serving; hub {:?}, role {:?}{}",
                        hubshift_common::VERSION,
                        v.state,
                        v.role,
                        if v.frozen { ", frozen" } else { "" }
                    )
                    .to_lowercase(),
                },
                Ok(Err(e)) => Health {
                    ok: false,
                    body: format!("the hub driver failed: {e}"),
                },
                Err(_) => Health {
                    ok: false,
                    body: format!(
                        "the hub driver did not answer within {} s",
                        DRIVER_PATIENCE.as_secs()
                    ),
                },
            }
        })
    }
}

/// Looks for the newest backup file, so that a restarted agent still says
/// when the last backup was made.
pub fn find_last_backup(cfg: &Config, counters: &Counters) {
    let Ok(entries) = std::fs::read_dir(places::backups_dir(cfg)) else {
        return;
    };
    let newest = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .filter_map(|m| Some((m.modified().ok()?, m.len())))
        .max_by_key(|(at, _)| *at);
    if let Some((at, bytes)) = newest {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        counters.backup_found(secs, bytes);
    }
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn float(v: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(v);
    g
}

/// 48 bits fit a float exactly: equal stores give equal numbers, and two
/// different stores differ but for a 2^-48 chance.
fn digest_number(sha256_hex: &str) -> f64 {
    let prefix = sha256_hex.get(..12).unwrap_or("0");
    u64::from_str_radix(prefix, 16).unwrap_or(0) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_a_whole_number_that_follows_the_store() {
        let a = digest_number("0123456789abcdef");
        assert_eq!(a, 0x0123_4567_89ab_u64 as f64);
        assert_ne!(a, digest_number("0123456789acffff"));
        assert_eq!(digest_number(""), 0.0);
    }
}
