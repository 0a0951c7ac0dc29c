//! What the controller tells its caller: readable lines for people, one JSON
//! object per line for pipelines (`--json`), and progress bars only when a
//! person is watching a terminal.

use serde::Serialize;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where events go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    interactive: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Output {
    /// `json`: machine output. Progress bars only on a terminal without `--json`.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            interactive: !json && std::io::stderr().is_terminal(),
        }
    }

    /// Emits an event: JSON (with `event` and `ts_ms` fields) or the human line.
    pub fn event(&self, event: &str, fields: Value, human: impl FnOnce() -> String) {
        if self.json {
            let mut obj = json!({ "event": event, "ts_ms": now_ms() });
            if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{obj}");
            let _ = out.flush();
        } else {
            let line = human();
            if !line.is_empty() {
                println!("{line}");
            }
        }
    }

    /// A line for people only; nothing in JSON mode.
    pub fn human(&self, line: &str) {
        if !self.json {
            println!("{line}");
        }
    }

    /// Emits a serialisable record as one event (for listings).
    pub fn record<T: Serialize>(&self, event: &str, value: &T, human: impl FnOnce() -> String) {
        let fields = serde_json::to_value(value).unwrap_or(Value::Null);
        let fields = match fields {
            Value::Object(_) => fields,
            other => json!({ "value": other }),
        };
        self.event(event, fields, human);
    }

    /// A progress bar for `total` bytes, hidden unless interactive.
    pub fn bytes_bar(&self, total: u64, label: &str) -> indicatif::ProgressBar {
        if !self.interactive {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "  {prefix:<24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar
    }
}

/// `1.234 s` style durations.
pub fn secs(ms: u64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}
