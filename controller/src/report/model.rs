//! The report as data: a run's journal rows (the run, its steps, its
//! observations) folded into lanes, step bars, windows and markers on one
//! time axis. Pure, so that what a report says is tested without a
//! database; `--format json` prints exactly this.

use crate::facts::RunFacts;
use crate::journal::{RunRecord, RunState, StepRecord, StepState};
use crate::timeline::{Kind, Observation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stretch without data ticks that something outside the controller
/// measured (the sandbox does, from hubsim's ticks), drawn beside the
/// reported windows so the two can be compared by eye.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredGap {
    /// Unix ms of the last tick before the gap.
    pub start_ms: u64,
    /// Unix ms of the first tick after it.
    pub end_ms: u64,
    /// Node of the last tick before.
    #[serde(default)]
    pub from: String,
    /// Node of the first tick after.
    #[serde(default)]
    pub to: String,
}

/// What a report is made from: the journal's rows of one run.
#[derive(Debug, Clone)]
pub struct Input {
    /// The run.
    pub run: RunRecord,
    /// Its steps.
    pub steps: Vec<StepRecord>,
    /// What it observed.
    pub observations: Vec<Observation>,
    /// Gaps measured outside the controller, if any.
    pub measured: Vec<MeasuredGap>,
}

/// One stretch of a node in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Unix ms.
    pub start_ms: u64,
    /// Unix ms.
    pub end_ms: u64,
    /// active, standby, starting, stopped, frozen, unreachable, unknown.
    pub state: String,
    /// The active runtime version.
    pub version: String,
}

/// One node over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lane {
    /// Node name.
    pub node: String,
    /// Its states, back to back.
    pub segments: Vec<Segment>,
}

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepBar {
    /// Position in the plan, from 1.
    pub index: usize,
    /// Step name.
    pub name: String,
    /// Node(s) it acts on.
    pub node: String,
    /// Unix ms.
    pub start_ms: u64,
    /// Unix ms (for an unfinished attempt: the last thing observed).
    pub end_ms: u64,
    /// done, failed or unfinished.
    pub outcome: String,
    /// Why it failed, redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An outage window the run reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowMark {
    /// 1: takeover, 2: hand-back, 3: a fallback.
    pub window: u8,
    /// Unix ms.
    pub start_ms: u64,
    /// Unix ms.
    pub end_ms: u64,
    /// Length.
    pub duration_ms: u64,
    /// What it spans.
    pub label: String,
}

/// Something that happened at one moment: a start, resume, stop or
/// abandon (with who), a pause or stop taking effect, a fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marker {
    /// Unix ms.
    pub at_ms: u64,
    /// upgrade, rollback, resume, stop, abandon, paused, stopped, fallback.
    pub kind: String,
    /// Shown beside it.
    pub label: String,
    /// user@host (CI job), for what a person or pipeline did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
}

/// The backup the run took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// Its id.
    pub id: String,
    /// Its size.
    pub bytes: Option<u64>,
    /// Its SHA-256.
    pub sha256: Option<String>,
    /// Where the primary's host keeps it.
    pub path: Option<String>,
}

/// A run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Run id.
    pub run: String,
    /// HA group.
    pub group: String,
    /// upgrade or rollback.
    pub kind: String,
    /// Where it stands.
    pub state: RunState,
    /// Version before.
    pub from_version: String,
    /// Version after (the target).
    pub to_version: String,
    /// Unix ms of the first thing recorded.
    pub start_ms: u64,
    /// Unix ms of the last.
    pub end_ms: u64,
    /// One per node.
    pub lanes: Vec<Lane>,
    /// Every attempt of every step, in order.
    pub steps: Vec<StepBar>,
    /// The outage windows.
    pub windows: Vec<WindowMark>,
    /// Starts, resumes, stops, parks, fallbacks.
    pub markers: Vec<Marker>,
    /// Gaps measured outside the controller.
    pub measured: Vec<MeasuredGap>,
    /// The backup.
    pub backup: Option<Backup>,
    /// Everyone who acted on the run.
    pub who: Vec<String>,
    /// What an operator should know.
    pub warnings: Vec<String>,
    /// The command that continues an unfinished run.
    pub next: Option<String>,
    /// The group's check after the run, if one ran: passed, and its output.
    pub check: Option<(bool, String)>,
}

fn who_of(entry: &Value) -> String {
    let user = entry["user"].as_str().unwrap_or("?");
    let host = entry["host"].as_str().unwrap_or("");
    let mut s = if host.is_empty() {
        user.to_string()
    } else {
        format!("{user}@{host}")
    };
    if let Some(job) = entry["ci_job"].as_str() {
        s.push_str(&format!(" ({job})"));
    }
    s
}

fn window_label(window: u8) -> &'static str {
    match window {
        1 => "primary stopped -> secondary active",
        2 => "HA create -> upgraded primary active",
        _ => "fallback: serving node lost -> old primary active again",
    }
}

/// The run's facts; what a journal lacks (an older one, a run cut off
/// early) reads as unknown.
fn facts_of(journaled: &Value) -> RunFacts {
    let mut merged = serde_json::to_value(RunFacts::default()).unwrap_or(Value::Null);
    if let (Some(m), Some(j)) = (merged.as_object_mut(), journaled.as_object()) {
        for (k, v) in j {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(merged).unwrap_or_default()
}

/// Folds a run's journal rows into its report.
pub fn build(input: &Input) -> Report {
    let run = &input.run;
    let facts = facts_of(&run.facts);
    let mut markers = Vec::new();
    let mut who = Vec::new();
    for e in run.audit.as_array().into_iter().flatten() {
        let Some(at_ms) = e["at_ms"].as_u64() else {
            continue;
        };
        let action = e["action"].as_str().unwrap_or("acted").to_string();
        let person = who_of(e);
        if !who.contains(&person) {
            who.push(person.clone());
        }
        markers.push(Marker {
            at_ms,
            label: format!("{action} by {person}"),
            kind: action,
            who: Some(person),
        });
    }
    let windows: Vec<WindowMark> = facts
        .windows()
        .into_iter()
        .map(|w| WindowMark {
            window: w.window,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            duration_ms: w.duration_ms,
            label: window_label(w.window).to_string(),
        })
        .collect();

    let obs = &input.observations;
    let mut times: Vec<u64> = obs.iter().map(|o| o.at_ms).collect();
    times.extend(markers.iter().map(|m| m.at_ms));
    times.extend(windows.iter().flat_map(|w| [w.start_ms, w.end_ms]));
    let start_ms = times.iter().copied().min().unwrap_or(0);
    let end_ms = times.iter().copied().max().unwrap_or(start_ms);

    let mut check = None;
    let mut lanes: Vec<Lane> = Vec::new();
    let mut steps: Vec<StepBar> = Vec::new();
    for o in obs {
        match o.kind {
            Kind::Node => {
                let seg = Segment {
                    start_ms: o.at_ms,
                    end_ms,
                    state: o.details["state"].as_str().unwrap_or("unknown").to_string(),
                    version: o.details["version"].as_str().unwrap_or("").to_string(),
                };
                match lanes.iter_mut().find(|l| l.node == o.node) {
                    Some(lane) => {
                        if let Some(last) = lane.segments.last_mut() {
                            last.end_ms = o.at_ms;
                        }
                        lane.segments.push(seg);
                    }
                    None => lanes.push(Lane {
                        node: o.node.clone(),
                        segments: vec![seg],
                    }),
                }
            }
            Kind::StepStarted => {
                let idx = o.details["idx"].as_u64().unwrap_or(0) as usize;
                // A step started again while an attempt was open: that
                // attempt was cut off (its controller died).
                close_open(&mut steps, idx + 1, o.at_ms, "unfinished", None);
                steps.push(StepBar {
                    index: idx + 1,
                    name: o.details["name"].as_str().unwrap_or("?").to_string(),
                    node: o.node.clone(),
                    start_ms: o.at_ms,
                    end_ms: o.at_ms,
                    outcome: "running".into(),
                    error: None,
                });
            }
            Kind::StepDone | Kind::StepFailed => {
                let idx = o.details["idx"].as_u64().unwrap_or(0) as usize;
                let (outcome, error) = if o.kind == Kind::StepDone {
                    ("done", None)
                } else {
                    ("failed", o.details["error"].as_str().map(|e| e.to_string()))
                };
                close_open(&mut steps, idx + 1, o.at_ms, outcome, error);
            }
            Kind::Fallback => markers.push(Marker {
                at_ms: o.at_ms,
                kind: "fallback".into(),
                label: format!("fallback: {} started again on its old runtime", o.node),
                who: None,
            }),
            Kind::Check => {
                let passed = o.details["passed"].as_bool().unwrap_or(false);
                let detail = o.details["detail"].as_str().unwrap_or("").to_string();
                markers.push(Marker {
                    at_ms: o.at_ms,
                    kind: "check".into(),
                    label: format!(
                        "check {}: {detail}",
                        if passed { "passed" } else { "FAILED" }
                    ),
                    who: None,
                });
                check = Some((passed, detail));
            }
            Kind::Parked => {
                let state = o.details["state"].as_str().unwrap_or("parked").to_string();
                markers.push(Marker {
                    at_ms: o.at_ms,
                    label: format!(
                        "{state} before step {} ({})",
                        o.details["before_step"].as_u64().unwrap_or(0),
                        o.details["name"].as_str().unwrap_or("?")
                    ),
                    kind: state,
                    who: None,
                });
            }
        }
    }
    // Attempts still open: the run is interrupted there, or still runs —
    // unless the journal's step says done (the controller died between
    // journaling the step and its timeline): then it ended no later than
    // the next attempt of any step began.
    let starts: Vec<u64> = steps.iter().map(|s| s.start_ms).collect();
    let last_attempt: Vec<usize> = (0..steps.len())
        .filter(|&i| !steps[i + 1..].iter().any(|s| s.index == steps[i].index))
        .collect();
    for (i, s) in steps.iter_mut().enumerate() {
        if s.outcome == "running" || s.outcome == "unfinished" {
            let journaled_done = input
                .steps
                .iter()
                .any(|r| r.idx as usize + 1 == s.index && r.state == StepState::Done);
            if journaled_done && last_attempt.contains(&i) {
                s.outcome = "done".into();
                s.end_ms = starts
                    .iter()
                    .copied()
                    .filter(|&t| t > s.start_ms)
                    .min()
                    .unwrap_or(end_ms);
            } else if s.outcome == "running" {
                s.end_ms = end_ms;
                s.outcome = "unfinished".into();
            }
        }
    }
    lanes.sort_by(|a, b| a.node.cmp(&b.node));
    markers.sort_by_key(|m| m.at_ms);

    let mut warnings = facts.warnings.clone();
    warnings.extend(facts.impossible_spans());
    let next = match run.state {
        RunState::Done | RunState::RolledBack | RunState::Abandoned => None,
        _ => Some(format!("hubshift resume --run {}", run.id)),
    };
    Report {
        run: run.id.clone(),
        group: run.group.clone(),
        kind: run.kind.clone(),
        state: run.state,
        from_version: facts.from_version.clone(),
        to_version: facts.version.clone(),
        start_ms,
        end_ms,
        lanes,
        steps,
        windows,
        markers,
        measured: input.measured.clone(),
        backup: facts.backup_id.clone().map(|id| Backup {
            id,
            bytes: facts.backup_bytes,
            sha256: facts.backup_sha256.clone(),
            path: facts.backup_path.clone(),
        }),
        who,
        warnings,
        next,
        check,
    }
}

/// Ends the open attempt of step `index`, if there is one.
fn close_open(
    steps: &mut [StepBar],
    index: usize,
    at_ms: u64,
    outcome: &str,
    error: Option<String>,
) {
    if let Some(s) = steps
        .iter_mut()
        .rev()
        .find(|s| s.index == index && s.outcome == "running")
    {
        s.end_ms = at_ms;
        s.outcome = outcome.to_string();
        s.error = error;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn obs(at_ms: u64, node: &str, kind: Kind, details: Value) -> Observation {
        Observation {
            at_ms,
            node: node.into(),
            kind,
            details,
        }
    }

    pub fn node(at_ms: u64, node: &str, state: &str, version: &str) -> Observation {
        obs(
            at_ms,
            node,
            Kind::Node,
            json!({ "state": state, "version": version }),
        )
    }

    pub fn step(at_ms: u64, node: &str, kind: Kind, idx: usize, name: &str) -> Observation {
        obs(at_ms, node, kind, json!({ "idx": idx, "name": name }))
    }

    pub fn run_record(state: RunState, facts: Value, audit: Value) -> RunRecord {
        RunRecord {
            id: "20261206T101010-abcdef".into(),
            group: "plant-a".into(),
            kind: "upgrade".into(),
            state,
            facts,
            created_at: "2026-12-06 10:10:10Z".into(),
            audit,
            updated_at: "2026-12-06 10:20:10Z".into(),
        }
    }

    #[test]
    fn lanes_steps_windows_and_who_come_from_the_journal() {
        let t = 1_000_000;
        let facts = json!({
            "version": "4.2.0", "from_version": "4.1.0",
            "primary_stopped_ms": t + 1_000, "takeover_ms": t + 4_000,
            "backup_id": "b1", "backup_sha256": "ab12", "backup_bytes": 4096,
        });
        let audit = json!([{ "action": "upgrade", "user": "ana", "host": "ctl", "ci_job": null, "at_ms": t }]);
        let input = Input {
            run: run_record(RunState::Failed, facts, audit),
            steps: vec![],
            observations: vec![
                node(t, "hub-a", "active", "4.1.0"),
                node(t, "hub-b", "standby", "4.1.0"),
                step(t + 900, "hub-a", Kind::StepStarted, 3, "stop_primary"),
                node(t + 1_200, "hub-a", "stopped", "4.1.0"),
                step(t + 1_300, "hub-a", Kind::StepDone, 3, "stop_primary"),
                step(t + 1_300, "hub-b", Kind::StepStarted, 4, "await_takeover"),
                node(t + 4_000, "hub-b", "active", "4.1.0"),
                obs(
                    t + 4_100,
                    "hub-b",
                    Kind::StepFailed,
                    json!({ "idx": 4, "name": "await_takeover", "error": "no" }),
                ),
            ],
            measured: vec![],
        };
        let r = build(&input);
        assert_eq!(r.start_ms, t);
        assert_eq!(r.end_ms, t + 4_100);
        let a = &r.lanes[0];
        assert_eq!(a.node, "hub-a");
        assert_eq!(a.segments.len(), 2);
        assert_eq!(
            (a.segments[0].end_ms, a.segments[1].state.as_str()),
            (t + 1_200, "stopped")
        );
        assert_eq!(a.segments[1].end_ms, t + 4_100, "the last lasts to the end");
        assert_eq!(r.steps.len(), 2);
        assert_eq!((r.steps[0].index, r.steps[0].outcome.as_str()), (4, "done"));
        assert_eq!(r.steps[1].outcome, "failed");
        assert_eq!(r.steps[1].error.as_deref(), Some("no"));
        assert_eq!(r.windows.len(), 1);
        assert_eq!(r.windows[0].duration_ms, 3_000);
        assert_eq!(r.who, ["ana@ctl"]);
        assert_eq!(r.backup.as_ref().map(|b| b.bytes), Some(Some(4096)));
        assert_eq!(
            r.next.as_deref(),
            Some("hubshift resume --run 20261206T101010-abcdef")
        );
    }

    #[test]
    fn an_attempt_the_journal_says_done_is_done_though_its_end_was_not_observed() {
        let plan = crate::plan::build_plan(&crate::testing::sample_group(2));
        let journaled = |idx: usize, state| StepRecord {
            idx: idx as i32,
            step: plan[idx].clone(),
            state,
            attempts: 1,
            detail: json!({}),
            error: None,
        };
        let input = Input {
            run: run_record(RunState::Interrupted, json!({}), json!([])),
            steps: vec![
                journaled(0, StepState::Done),
                journaled(1, StepState::Running),
            ],
            observations: vec![
                step(10, "hub-a", Kind::StepStarted, 0, "stage_runtime"),
                step(40, "hub-b", Kind::StepStarted, 1, "stage_runtime"),
                node(70, "hub-a", "active", "4.1.0"),
            ],
            measured: vec![],
        };
        let r = build(&input);
        let bars: Vec<(&str, u64)> = r
            .steps
            .iter()
            .map(|s| (s.outcome.as_str(), s.end_ms))
            .collect();
        assert_eq!(bars, [("done", 40), ("unfinished", 70)]);
    }

    #[test]
    fn a_cut_off_attempt_is_unfinished_and_the_next_attempt_is_its_own_bar() {
        let input = Input {
            run: run_record(RunState::Done, json!({}), json!([])),
            steps: vec![],
            observations: vec![
                step(10, "hub-a", Kind::StepStarted, 0, "backup"),
                step(50, "hub-a", Kind::StepStarted, 0, "backup"),
                step(90, "hub-a", Kind::StepDone, 0, "backup"),
                step(95, "hub-b", Kind::StepStarted, 1, "await_standby"),
            ],
            measured: vec![],
        };
        let r = build(&input);
        let outcomes: Vec<(&str, u64, u64)> = r
            .steps
            .iter()
            .map(|s| (s.outcome.as_str(), s.start_ms, s.end_ms))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("unfinished", 10, 50),
                ("done", 50, 90),
                ("unfinished", 95, 95)
            ]
        );
        assert_eq!(r.next, None, "a done run has no next action");
    }
}
