//! What the controller tells its caller: readable lines for people, one JSON
//! object per line for pipelines (`--json`), and progress bars only when a
//! person is watching a terminal. In a fleet every event carries its group
//! and fleet, and every human line starts with the group, written whole so
//! that parallel groups never interleave inside a line.

use serde::Serialize;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where events go.
#[derive(Debug, Clone)]
pub struct Output {
    json: bool,
    /// All bars of the process share one: several `MultiProgress` drawing
    /// on one terminal overwrite each other.
    bars: Option<indicatif::MultiProgress>,
    group: Option<Arc<str>>,
    fleet: Option<Arc<str>>,
    /// Human lines start with `[group]` (fleets).
    prefix: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Output {
    /// `json`: machine output. Progress bars only on a terminal without `--json`.
    pub fn new(json: bool) -> Self {
        Self::with_bars(json, !json && std::io::stderr().is_terminal())
    }

    /// Like [`Output::new`], with bars drawn (on stderr) or not.
    pub fn with_bars(json: bool, bars: bool) -> Self {
        Self {
            json,
            bars: bars.then(indicatif::MultiProgress::new),
            group: None,
            fleet: None,
            prefix: false,
        }
    }

    /// The same sink, its events marked with `group`.
    pub fn for_group(&self, group: &str) -> Self {
        Self {
            group: Some(group.into()),
            ..self.clone()
        }
    }

    /// The same sink, its events marked with `fleet` and its human lines
    /// prefixed with their group.
    pub fn in_fleet(&self, fleet: &str) -> Self {
        Self {
            fleet: Some(fleet.into()),
            prefix: true,
            ..self.clone()
        }
    }

    /// Whether events are JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Emits an event: JSON (with `event`, `ts_ms`, and `group`/`fleet` when
    /// known) or the human line(s).
    pub fn event(&self, event: &str, fields: Value, human: impl FnOnce() -> String) {
        crate::notify::offer(event, self.group.as_deref(), self.fleet.as_deref(), &fields);
        if self.json {
            let mut obj = json!({ "event": event, "ts_ms": now_ms() });
            if let Some(o) = obj.as_object_mut() {
                if let Some(g) = &self.group {
                    o.insert("group".into(), json!(g.as_ref()));
                }
                if let Some(f) = &self.fleet {
                    o.insert("fleet".into(), json!(f.as_ref()));
                }
                if let Value::Object(f) = fields {
                    o.extend(f);
                }
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{obj}");
            let _ = out.flush();
        } else {
            let text = human();
            if !text.is_empty() {
                self.print(&text);
            }
        }
    }

    /// Writes human text whole (each line prefixed in a fleet), above any
    /// progress bars.
    fn print(&self, text: &str) {
        let mut block = String::with_capacity(text.len() + 16);
        for line in text.split('\n') {
            if self.prefix
                && let Some(g) = &self.group
            {
                block.push_str(&format!("[{g}] "));
            }
            block.push_str(line);
            block.push('\n');
        }
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(block.as_bytes());
            let _ = out.flush();
        };
        match &self.bars {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }

    /// A line for people only; nothing in JSON mode.
    pub fn human(&self, line: &str) {
        if !self.json {
            self.print(line);
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

    /// A progress bar for `total` bytes, hidden unless interactive. It is
    /// drawn only once it belongs to the process's bars (a bar drawn before
    /// that stays on screen, frozen at zero, for the rest of the run); call
    /// `finish_and_clear` when done.
    pub fn bytes_bar(&self, total: u64, label: &str) -> indicatif::ProgressBar {
        let Some(multi) = &self.bars else {
            return indicatif::ProgressBar::hidden();
        };
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::hidden(),
        );
        let style = indicatif::ProgressStyle::with_template(
            "  {prefix:<30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(match &self.group {
            Some(g) if self.prefix => format!("[{g}] {label}"),
            _ => label.to_string(),
        });
        multi.add(bar)
    }
}

/// `1.234 s` style durations.
pub fn secs(ms: u64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}
