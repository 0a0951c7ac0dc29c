//! What a run observed, as it happened: each node's process, role and
//! version changes, each step's start and end, fallbacks and parks. Kept
//! in the journal (`hubshift.observations`) so that `hubshift report` can
//! draw the run afterwards, from any machine, also when the run was
//! interrupted and resumed by another controller.
//!
//! Recording is cheap: every agent Status answer passes through
//! [`Timeline::saw`], which keeps only changes; observations wait in memory
//! and the executor writes them between steps, in one statement.

use crate::hub::{HubStatus, role_name};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What an observation is of. Stored as its text; a journal written by a
/// newer hubshift may hold kinds this one skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A node's process, role or active version changed (`state`,
    /// `version`), or its agent stopped answering (`state: unreachable`).
    Node,
    /// A step began (`idx`, `name`).
    StepStarted,
    /// A step ended well (`idx`, `name`).
    StepDone,
    /// A step failed (`idx`, `name`, `error`, redacted).
    StepFailed,
    /// The old primary was started again (`lost_ms`, `active_ms`).
    Fallback,
    /// The run parked before a step (`state`: paused or stopped, `before_step`, `name`).
    Parked,
    /// The group's check ran after the run (`passed`, `detail`).
    Check,
}

impl Kind {
    /// The text the journal stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::StepStarted => "step_started",
            Kind::StepDone => "step_done",
            Kind::StepFailed => "step_failed",
            Kind::Fallback => "fallback",
            Kind::Parked => "parked",
            Kind::Check => "check",
        }
    }

    /// The kind a journal text names, if this version knows it.
    pub fn parse(text: &str) -> Option<Kind> {
        [
            Kind::Node,
            Kind::StepStarted,
            Kind::StepDone,
            Kind::StepFailed,
            Kind::Fallback,
            Kind::Parked,
            Kind::Check,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One observation; times in Unix ms on the database server's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// When.
    pub at_ms: u64,
    /// Of which node ("" for the run as a whole).
    pub node: String,
    /// What.
    pub kind: Kind,
    /// The rest, by kind (no secret: errors are redacted before).
    pub details: Value,
}

/// The last state seen of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: String,
    version: String,
}

/// A run's recorder, shared by its agents and its executor.
#[derive(Debug, Default)]
pub struct Timeline {
    seen: Mutex<HashMap<String, Seen>>,
    pending: Mutex<Vec<Observation>>,
}

impl Timeline {
    /// A new, empty recorder.
    pub fn new() -> Arc<Timeline> {
        Arc::new(Timeline::default())
    }

    /// An agent answered Status: recorded when the node's state (stopped,
    /// starting, active, standby …) or active version changed.
    pub fn saw(&self, node: &str, status: &HubStatus) {
        let state = if status.frozen {
            "frozen"
        } else if matches!(status.process, crate::hub::HubProcess::Starting) {
            "starting"
        } else if matches!(status.process, crate::hub::HubProcess::Exited) {
            // Ended by itself (a version mismatch, a crash), not stopped.
            "exited"
        } else {
            role_name(status)
        };
        self.changed(node, state, &status.active_runtime);
    }

    /// An agent did not answer.
    pub fn unreachable(&self, node: &str) {
        let version = self
            .seen
            .lock()
            .ok()
            .and_then(|s| s.get(node).map(|x| x.version.clone()))
            .unwrap_or_default();
        self.changed(node, "unreachable", &version);
    }

    fn changed(&self, node: &str, state: &str, version: &str) {
        let now = Seen {
            state: state.to_string(),
            version: version.to_string(),
        };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if seen.get(node) == Some(&now) {
            return;
        }
        seen.insert(node.to_string(), now);
        drop(seen);
        self.note(
            node,
            Kind::Node,
            json!({ "state": state, "version": version }),
        );
    }

    /// Records an observation now.
    pub fn note(&self, node: &str, kind: Kind, details: Value) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(Observation {
                at_ms: crate::clock::now_ms(),
                node: node.to_string(),
                kind,
                details,
            });
        }
    }

    /// Takes what waits to be written.
    pub fn take(&self) -> Vec<Observation> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    /// Puts back what could not be written, before anything newer.
    pub fn put_back(&self, mut unwritten: Vec<Observation>) {
        if let Ok(mut p) = self.pending.lock() {
            unwritten.append(&mut p);
            *p = unwritten;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{HubProcess, HubRole};

    fn status(process: HubProcess, role: HubRole, version: &str) -> HubStatus {
        HubStatus {
            node: "hub-a".into(),
            process,
            exit_code: None,
            pid: 1,
            role,
            frozen: false,
            active_runtime: version.into(),
            staged_runtimes: vec![],
            staged: vec![],
            certificate_sha256: String::new(),
            free_space: vec![],
            agent_version: String::new(),
            start_mode: String::new(),
            appdata_bytes: 0,
            runtime_dir: String::new(),
            layout: String::new(),
            settings: Default::default(),
        }
    }

    #[test]
    fn only_changes_are_recorded() {
        let t = Timeline::new();
        let active = status(HubProcess::Running, HubRole::Active, "4.1.0");
        for _ in 0..50 {
            t.saw("hub-a", &active);
        }
        t.saw(
            "hub-a",
            &status(HubProcess::Stopped, HubRole::Unknown, "4.1.0"),
        );
        t.saw(
            "hub-a",
            &status(HubProcess::Stopped, HubRole::Unknown, "4.2.0"),
        );
        t.unreachable("hub-a");
        t.unreachable("hub-a");
        let seen = t.take();
        let states: Vec<_> = seen
            .iter()
            .map(|o| {
                (
                    o.details["state"].as_str().unwrap(),
                    o.details["version"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("active", "4.1.0"),
                ("stopped", "4.1.0"),
                ("stopped", "4.2.0"),
                ("unreachable", "4.2.0")
            ]
        );
        assert!(t.take().is_empty(), "taken once");
    }

    #[test]
    fn what_could_not_be_written_comes_first_again() {
        let t = Timeline::new();
        t.note("", Kind::StepStarted, json!({ "idx": 0 }));
        let first = t.take();
        t.note("", Kind::StepDone, json!({ "idx": 0 }));
        t.put_back(first);
        let kinds: Vec<Kind> = t.take().iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [Kind::StepStarted, Kind::StepDone]);
        for k in ["node", "step_started", "parked"] {
            assert_eq!(Kind::parse(k).map(Kind::as_str), Some(k));
        }
        assert_eq!(Kind::parse("later_kind"), None);
    }
}
