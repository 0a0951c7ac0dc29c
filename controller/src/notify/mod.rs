//! Notifications: JSON to the inventory's `[notify] webhook` when a run or
//! a fleet starts, falls back, fails, parks or is done — so that people
//! hear when an unattended fleet needs them. Sent by a background task from
//! a bounded queue, retried with backoff, never blocking or failing the
//! upgrade: a full queue drops, an unreachable webhook is logged.

mod http;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The events people are told about (the names of `--json`).
pub const NOTIFIED: &[&str] = &[
    "run_started",
    "run_resumed",
    "run_fell_back",
    "run_failed",
    "run_paused",
    "run_stopped",
    "run_finished",
    "group_parked",
    "fleet_started",
    "fleet_resumed",
    "fleet_parked",
    "fleet_finished",
];

/// How many notifications may wait; more are dropped (and logged).
const QUEUE: usize = 256;

/// `[notify]` of the inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// `https://…` (plain `http://` only to this machine).
    pub webhook: String,
    /// Header name → the environment variable holding its value (a token):
    /// the value is never in the inventory, a log or an error.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Seconds one attempt may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Attempts per notification (backoff 1 s, 2 s, 4 s … between them).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Seconds the controller waits at its end for notifications still
    /// queued; what is left then is given up (and logged).
    #[serde(default = "default_drain")]
    pub drain_secs: u64,
}

fn default_timeout() -> u64 {
    10
}
fn default_attempts() -> u32 {
    5
}
fn default_drain() -> u64 {
    15
}

impl NotifySection {
    /// Checks the section; `Err((key, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let uri: hyper::Uri = self
            .webhook
            .parse()
            .map_err(|e| ("webhook".to_string(), format!("not a URL: {e}")))?;
        let host = uri.host().unwrap_or("");
        let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1");
        match uri.scheme_str() {
            Some("https") if !host.is_empty() => {}
            Some("http") if local => {}
            _ => {
                return Err((
                    "webhook".into(),
                    "must be an https:// URL (http:// only to localhost)".into(),
                ));
            }
        }
        for (name, var) in &self.headers_env {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err((
                    format!("headers_env.{name}"),
                    "not an HTTP header name".into(),
                ));
            }
            if var.is_empty() || var.contains('=') {
                return Err((
                    format!("headers_env.{name}"),
                    "must name an environment variable".into(),
                ));
            }
        }
        for (k, v, max) in [
            ("timeout_secs", self.timeout_secs, 300),
            ("attempts", u64::from(self.attempts), 20),
            ("drain_secs", self.drain_secs, 600),
        ] {
            if v == 0 || v > max {
                return Err((k.into(), format!("must be between 1 and {max}")));
            }
        }
        Ok(())
    }
}

struct Sink {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
    drain: Duration,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Starts the process's notifier for `section` (once; later calls keep the
/// first). An environment variable named for a header that is not set is
/// an error naming the variable.
pub fn install(section: Option<&NotifySection>) -> Result<(), String> {
    let Some(s) = section else {
        return Ok(());
    };
    let mut headers = Vec::new();
    for (name, var) in &s.headers_env {
        let value = std::env::var(var).map_err(|_| {
            format!("[notify] headers_env.{name}: environment variable {var} is not set")
        })?;
        if hyper::header::HeaderValue::from_str(&value).is_err() {
            return Err(format!(
                "[notify] headers_env.{name}: the value of {var} cannot be an HTTP header"
            ));
        }
        headers.push((name.clone(), value));
    }
    let uri: hyper::Uri = s
        .webhook
        .parse()
        .map_err(|e| format!("[notify] webhook: {e}"))?;
    let ep = http::Endpoint {
        uri,
        headers,
        tls: http::system_tls(),
    };
    let Ok(mut slot) = SINK.lock() else {
        return Ok(());
    };
    if slot.is_some() {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(deliver(
        ep,
        rx,
        Duration::from_secs(s.timeout_secs),
        s.attempts,
    ));
    *slot = Some(Sink {
        tx,
        task,
        drain: Duration::from_secs(s.drain_secs),
    });
    Ok(())
}

/// Queues `event` if it is one people are told about and a notifier runs;
/// never waits.
pub fn offer(event: &str, group: Option<&str>, fleet: Option<&str>, fields: &Value) {
    if !NOTIFIED.contains(&event) {
        return;
    }
    let Ok(slot) = SINK.lock() else { return };
    let Some(sink) = slot.as_ref() else { return };
    let mut body = json!({ "source": "hubshift", "event": event, "ts_ms": now_ms() });
    if let Some(o) = body.as_object_mut() {
        o.insert("group".into(), json!(group));
        o.insert("fleet".into(), json!(fleet));
        if let Value::Object(f) = fields {
            for (k, v) in f {
                o.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let text = hubshift_common::redact::redact(&body.to_string());
    if sink.tx.try_send(Bytes::from(text)).is_err() {
        tracing::warn!(event, "notification queue full: notification dropped");
    }
}

/// Waits (bounded by `[notify] drain_secs`) for the notifications still
/// queued, at the controller's end.
pub async fn drain() {
    let sink = SINK.lock().ok().and_then(|mut s| s.take());
    let Some(Sink { tx, task, drain }) = sink else {
        return;
    };
    drop(tx);
    if tokio::time::timeout(drain, task).await.is_err() {
        tracing::warn!(
            "notifications still undelivered after {} s: given up",
            drain.as_secs()
        );
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The background task: one notification at a time, in order, each tried
/// `attempts` times with doubling pauses.
async fn deliver(
    ep: http::Endpoint,
    mut rx: mpsc::Receiver<Bytes>,
    timeout: Duration,
    attempts: u32,
) {
    while let Some(body) = rx.recv().await {
        let mut pause = Duration::from_secs(1);
        for attempt in 1..=attempts {
            let why = match tokio::time::timeout(timeout, http::post(&ep, body.clone())).await {
                Ok(Ok(code)) if (200..300).contains(&code) => break,
                Ok(Ok(code)) => format!("the webhook answered HTTP {code}"),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {} s", timeout.as_secs()),
            };
            tracing::warn!(attempt, attempts, error = %why, "notification not delivered");
            if attempt < attempts {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}
