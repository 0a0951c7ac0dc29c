//! What `resume`, `rollback` and `abandon` refuse, and the one command each
//! refusal names that is accepted in that state. Pure functions of the
//! journaled runs, so that a test can walk every state and follow every
//! piece of advice: a refusal never sends the operator to another refusal.

use crate::journal::{RunRecord, RunState, StepRecord, StepState};

/// What the refusals need to know of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    /// Run id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// `upgrade` or `rollback`.
    pub kind: String,
    /// Where it stands.
    pub state: RunState,
    /// For a rollback: the upgrade run it reverses.
    pub rollback_of: Option<String>,
    /// It recorded a backup (an upgrade can be rolled back only then).
    pub took_backup: bool,
    /// Steps it began that the backup is the way back from.
    pub irreversible: Vec<String>,
}

impl RunView {
    /// The view of a journaled run and its steps.
    pub fn new(record: &RunRecord, steps: &[StepRecord]) -> Self {
        let facts = &record.facts;
        RunView {
            id: record.id.clone(),
            group: record.group.clone(),
            kind: record.kind.clone(),
            state: record.state,
            rollback_of: facts["rollback_of"].as_str().map(str::to_string),
            took_backup: facts["backup_id"].is_string() && facts["backup_sha256"].is_string(),
            irreversible: steps
                .iter()
                .filter(|s| s.step.destructive() && s.state != StepState::Pending)
                .map(|s| format!("{} on {}", s.step.name(), s.step.node()))
                .collect(),
        }
    }

    fn is_rollback(&self) -> bool {
        self.kind == "rollback"
    }
}

/// A refusal: why, and the command to run instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why the command is refused; it ends with the command to run instead.
    pub message: String,
    /// That command.
    pub next: Next,
}

/// A command that is accepted next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// `hubshift resume --run ID`.
    Resume(String),
    /// `hubshift rollback --run ID`.
    Rollback(String),
    /// `hubshift abandon --run ID`.
    Abandon(String),
    /// `hubshift upgrade -g GROUP …`: the group has no unfinished run.
    Upgrade(String),
}

impl std::fmt::Display for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Next::Resume(id) => write!(f, "hubshift resume --run {id}"),
            Next::Rollback(id) => write!(f, "hubshift rollback --run {id}"),
            Next::Abandon(id) => write!(f, "hubshift abandon --run {id}"),
            Next::Upgrade(g) => write!(
                f,
                "hubshift upgrade -g {g} --runtime FILE --version VERSION"
            ),
        }
    }
}

fn refuse(run: &RunView, message: String, next: Next) -> Option<Refusal> {
    let how = match &next {
        Next::Resume(id) if *id == run.id => format!("continue it with `{next}`"),
        Next::Resume(id) => format!("first finish run {id} with `{next}`"),
        Next::Rollback(_) => format!("to reverse it: `{next}`"),
        Next::Abandon(_) => format!("give it up with `{next}`"),
        Next::Upgrade(_) => format!("a new upgrade starts with `{next}`"),
    };
    Some(Refusal {
        message: format!("{message}: {how}"),
        next,
    })
}

/// What comes next for a group when `run` has nothing left to do: the
/// group's unfinished run, if it has one, else a new upgrade.
fn fresh_start(run: &RunView, unfinished: Option<&RunView>) -> Next {
    match unfinished {
        Some(u) if u.id != run.id => Next::Resume(u.id.clone()),
        _ => Next::Upgrade(run.group.clone()),
    }
}

/// A newer run of the group that reverses `run` and did not finish: `run`
/// is left alone until it has.
fn reversed_by<'a>(run: &RunView, unfinished: Option<&'a RunView>) -> Option<&'a RunView> {
    unfinished.filter(|u| u.id != run.id && u.rollback_of.as_deref() == Some(run.id.as_str()))
}

fn reversal_pending(run: &RunView, rb: &RunView) -> Option<Refusal> {
    refuse(
        run,
        format!(
            "run {} is being rolled back by run {}, which did not finish ({})",
            run.id, rb.id, rb.state
        ),
        Next::Resume(rb.id.clone()),
    )
}

/// Why `hubshift resume --run` refuses `run`, if it does; `unfinished` is
/// the group's newest unfinished run, if any. A done run is not refused
/// (resume says so and exits 0).
pub fn resume(run: &RunView, unfinished: Option<&RunView>) -> Option<Refusal> {
    if let Some(rb) = reversed_by(run, unfinished) {
        return reversal_pending(run, rb);
    }
    let why = match run.state {
        RunState::Abandoned => format!("run {} was abandoned; nothing is left to resume", run.id),
        RunState::RolledBack => format!(
            "run {} was rolled back; the group runs the version it started from",
            run.id
        ),
        _ => return None,
    };
    refuse(run, why, fresh_start(run, unfinished))
}

/// Why `hubshift rollback --run` refuses `run`, if it does; `unfinished` is
/// the group's newest unfinished run, if any.
pub fn rollback(run: &RunView, unfinished: Option<&RunView>) -> Option<Refusal> {
    if run.is_rollback() {
        let of = run
            .rollback_of
            .as_deref()
            .map_or(String::new(), |o| format!(" of run {o}"));
        return if run.state.is_finished() {
            refuse(
                run,
                format!(
                    "run {} is a rollback{of} and is {}; only upgrade runs are rolled back",
                    run.id, run.state
                ),
                fresh_start(run, unfinished),
            )
        } else {
            refuse(
                run,
                format!(
                    "run {} is a rollback{of} that did not finish ({}); a rollback is not rolled back",
                    run.id, run.state
                ),
                Next::Resume(run.id.clone()),
            )
        };
    }
    let why = match run.state {
        RunState::RolledBack => Some(format!("run {} was already rolled back", run.id)),
        RunState::Abandoned => Some(format!(
            "run {} was abandoned before anything irreversible: the group never left its version, and the run's backup is older than the group's data",
            run.id
        )),
        _ => None,
    };
    if let Some(why) = why {
        return refuse(run, why, fresh_start(run, unfinished));
    }
    if let Some(u) = unfinished.filter(|u| u.id != run.id) {
        let what = match (&u.rollback_of, u.is_rollback()) {
            (Some(of), true) => format!("run {} (a rollback of run {of})", u.id),
            _ => format!("run {}", u.id),
        };
        return refuse(
            run,
            format!(
                "{what} of group {} did not finish ({}); one run at a time",
                u.group, u.state
            ),
            Next::Resume(u.id.clone()),
        );
    }
    if !run.took_backup {
        // Without a backup no destructive step has run (the gates hold).
        let why = format!(
            "run {} took no backup (it stopped before its backup step): the group never left its version, nothing to roll back to",
            run.id
        );
        let next = if run.state.is_finished() {
            fresh_start(run, unfinished)
        } else {
            Next::Abandon(run.id.clone())
        };
        return refuse(run, why, next);
    }
    None
}

/// Why `hubshift abandon --run` refuses `run`, if it does; `unfinished` is
/// the group's newest unfinished run, if any.
pub fn abandon(run: &RunView, unfinished: Option<&RunView>) -> Option<Refusal> {
    if let Some(rb) = reversed_by(run, unfinished) {
        return reversal_pending(run, rb);
    }
    let other_unfinished = unfinished.is_some_and(|u| u.id != run.id);
    match run.state {
        RunState::Done if !run.is_rollback() && run.took_backup && !other_unfinished => refuse(
            run,
            format!("run {} is done; nothing to abandon", run.id),
            Next::Rollback(run.id.clone()),
        ),
        s if s.is_finished() => refuse(
            run,
            format!("run {} is already {s}; nothing to abandon", run.id),
            fresh_start(run, unfinished),
        ),
        _ if !run.irreversible.is_empty() => {
            let did = format!(
                "run {} already did {} ({})",
                run.id,
                if run.irreversible.len() == 1 {
                    "an irreversible step"
                } else {
                    "irreversible steps"
                },
                run.irreversible.join(", ")
            );
            if run.is_rollback() {
                refuse(run, did, Next::Resume(run.id.clone()))
            } else {
                // Both are accepted; the message names the way back too.
                refuse(
                    run,
                    format!(
                        "{did}; `{}` reverses it instead",
                        Next::Rollback(run.id.clone())
                    ),
                    Next::Resume(run.id.clone()),
                )
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [RunState; 7] = [
        RunState::Running,
        RunState::Failed,
        RunState::Paused,
        RunState::Stopped,
        RunState::Done,
        RunState::Abandoned,
        RunState::RolledBack,
    ];

    fn view(id: &str, kind: &str, state: RunState, backup: bool, irreversible: bool) -> RunView {
        RunView {
            id: id.into(),
            group: "g".into(),
            kind: kind.into(),
            state,
            rollback_of: (kind == "rollback").then(|| "up".to_string()),
            took_backup: backup || kind == "rollback",
            irreversible: if irreversible {
                vec!["drop_schema on group".into()]
            } else {
                vec![]
            },
        }
    }

    /// Every journal a group can be in: one run looked at, and the group's
    /// unfinished run (itself, another upgrade, a rollback, or none).
    fn worlds() -> Vec<(RunView, Option<RunView>)> {
        let mut out = Vec::new();
        for kind in ["upgrade", "rollback"] {
            for state in STATES {
                for backup in [false, true] {
                    for irreversible in [false, true] {
                        // The gates: nothing destructive without a backup.
                        if irreversible && !backup && kind == "upgrade" {
                            continue;
                        }
                        // Abandon only takes runs that did nothing irreversible.
                        if state == RunState::Abandoned && irreversible {
                            continue;
                        }
                        let run = view("r", kind, state, backup, irreversible);
                        let others = [
                            None,
                            Some(view("o", "upgrade", RunState::Failed, true, true)),
                            Some(view("o", "rollback", RunState::Failed, true, false)),
                        ];
                        for other in others {
                            let unfinished = if !state.is_finished() {
                                // The newest unfinished run: this one.
                                Some(run.clone())
                            } else {
                                other
                            };
                            out.push((run.clone(), unfinished));
                        }
                        // A failed upgrade whose rollback failed too.
                        if kind == "upgrade" && backup && !state.is_finished() {
                            let mut rb = view("o", "rollback", RunState::Failed, true, false);
                            rb.rollback_of = Some(run.id.clone());
                            out.push((run.clone(), Some(rb)));
                        }
                    }
                }
            }
        }
        out
    }

    /// Is `next` accepted in this world?
    fn accepted(next: &Next, run: &RunView, unfinished: Option<&RunView>) -> bool {
        let find = |id: &str| -> Option<&RunView> {
            if id == run.id {
                Some(run)
            } else {
                unfinished.filter(|u| u.id == id)
            }
        };
        match next {
            Next::Resume(id) => find(id).is_some_and(|r| resume(r, unfinished).is_none()),
            Next::Rollback(id) => find(id).is_some_and(|r| rollback(r, unfinished).is_none()),
            Next::Abandon(id) => find(id).is_some_and(|r| abandon(r, unfinished).is_none()),
            Next::Upgrade(_) => unfinished.is_none(),
        }
    }

    #[test]
    fn every_refusal_names_a_command_that_is_accepted() {
        let mut walked = 0;
        for (run, unfinished) in worlds() {
            let u = unfinished.as_ref();
            let refusals = [
                ("resume", resume(&run, u)),
                ("rollback", rollback(&run, u)),
                ("abandon", abandon(&run, u)),
            ];
            for (command, refusal) in refusals {
                let Some(r) = refusal else { continue };
                walked += 1;
                assert!(
                    r.message.contains(&format!("`{}`", r.next)),
                    "{command} {run:?}: the message names its command: {}",
                    r.message
                );
                assert!(
                    accepted(&r.next, &run, u),
                    "{command} of {run:?} (unfinished {u:?}) says `{}`, which is refused too: {}",
                    r.next,
                    r.message
                );
            }
        }
        assert!(walked > 30, "the walk saw only {walked} refusals");
    }

    #[test]
    fn a_failed_rollback_is_resumed_not_rolled_back() {
        let up = view("up", "upgrade", RunState::Done, true, true);
        let rb = view("rb", "rollback", RunState::Failed, true, false);
        let r = rollback(&up, Some(&rb)).unwrap();
        assert_eq!(r.next, Next::Resume("rb".into()));
        assert!(r.message.contains("a rollback of run up"), "{}", r.message);
        let r = rollback(&rb, Some(&rb)).unwrap();
        assert_eq!(r.next, Next::Resume("rb".into()));
        assert!(resume(&rb, Some(&rb)).is_none());
    }

    #[test]
    fn abandon_of_a_rollback_that_restored_says_resume_only() {
        let rb = view("rb", "rollback", RunState::Failed, true, true);
        let r = abandon(&rb, Some(&rb)).unwrap();
        assert_eq!(r.next, Next::Resume("rb".into()));
        assert!(!r.message.contains("rollback --run"), "{}", r.message);
    }
}
