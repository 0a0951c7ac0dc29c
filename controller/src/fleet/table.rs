//! The closing table: one row per group, for people and pipelines.

use super::scheduler::Outcome;
use crate::facts::{RunFacts, Window};
use crate::output::{Output, secs};
use serde_json::json;

/// One line of the closing table.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) group: String,
    pub(super) outcome: Outcome,
    pub(super) run: Option<String>,
    pub(super) duration_ms: u64,
    pub(super) facts: Option<RunFacts>,
}

impl Row {
    pub(super) fn new(group: &str, outcome: Outcome) -> Self {
        Self {
            group: group.to_string(),
            outcome,
            run: None,
            duration_ms: 0,
            facts: None,
        }
    }

    pub(super) fn windows(&self) -> Vec<Window> {
        self.facts.as_ref().map(|f| f.windows()).unwrap_or_default()
    }
}

pub(super) fn closing_table(
    out: &Output,
    fleet: &str,
    rows: &[Row],
    wall_ms: u64,
    halt: Option<&str>,
) {
    let count = |name: &str| rows.iter().filter(|r| r.outcome.name() == name).count();
    let json_rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "group": r.group, "result": r.outcome.name(), "reason": r.outcome.reason(),
                "run": r.run, "duration_ms": r.duration_ms, "windows": r.windows(),
                "single_node_ms": r.facts.as_ref().and_then(|f| f.single_node_ms()),
                "backup_id": r.facts.as_ref().and_then(|f| f.backup_id.clone()),
                "backup_sha256": r.facts.as_ref().and_then(|f| f.backup_sha256.clone()),
            })
        })
        .collect();
    let base = out.clone();
    base.event(
        "fleet_finished",
        json!({ "wall_ms": wall_ms, "groups": json_rows, "halted": halt,
                "done": count("done"), "failed": count("failed") }),
        || {
            let mut s = format!(
                "\nFleet {}: {} done, {} failed, {} skipped, {} taken, {} not started, {} parked, in {}",
                fleet,
                count("done"),
                count("failed"),
                count("skipped"),
                count("taken"),
                count("not_started"),
                count("paused") + count("stopped"),
                secs(wall_ms)
            );
            if let Some(h) = halt {
                s.push_str(&format!("\n  no new group was started: {h}"));
            }
            s.push_str(&format!(
                "\n  {:<16} {:<11} {:<24} {:>10} {:>10} {:>10}  {}",
                "group", "result", "run", "window 1", "window 2", "duration", "backup"
            ));
            for r in rows {
                let w = r.windows();
                let win = |n: u8| {
                    w.iter()
                        .find(|x| x.window == n)
                        .map_or("-".to_string(), |x| secs(x.duration_ms))
                };
                s.push_str(&format!(
                    "\n  {:<16} {:<11} {:<24} {:>10} {:>10} {:>10}  {}",
                    r.group,
                    r.outcome.name(),
                    r.run.as_deref().unwrap_or("-"),
                    win(1),
                    win(2),
                    if r.duration_ms > 0 { secs(r.duration_ms) } else { "-".into() },
                    r.facts.as_ref().and_then(|f| f.backup_id.clone()).unwrap_or_else(|| "-".into())
                ));
                if let Some(reason) = r.outcome.reason() {
                    s.push_str(&format!("\n  {:<16} {reason}", ""));
                }
            }
            s
        },
    );
}
