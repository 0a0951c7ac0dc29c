//! The fleet's decisions as a pure state machine: groups and policy in,
//! the next actions out (start a group, soak the canary, wait, finish),
//! each group's outcome and a stop request fed back. No I/O: the loop in
//! `mod.rs` does what it says, and these rules are unit-tested alone.

use super::FleetPolicy;
use std::collections::VecDeque;

/// How a group ended in this fleet run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Upgraded (and, for the canary, soaked).
    Done,
    /// Failed, with why and what to do.
    Failed(String),
    /// Not ready at preflight, skipped as `--skip-unready` asked.
    Skipped(String),
    /// Another controller holds it, or it already runs the version.
    Taken(String),
    /// Not begun: the fleet halted first.
    NotStarted(String),
    /// Parked before a `--pause-before` step.
    Paused,
    /// Parked at a safe point as a stop asked.
    Stopped,
}

impl Outcome {
    /// As the closing table and the JSON events name it.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::Taken(_) => "taken",
            Outcome::NotStarted(_) => "not_started",
            Outcome::Paused => "paused",
            Outcome::Stopped => "stopped",
        }
    }

    /// Why, when there is more to say than the name.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Failed(r)
            | Outcome::Skipped(r)
            | Outcome::Taken(r)
            | Outcome::NotStarted(r) => Some(r),
            _ => None,
        }
    }

    fn parked(&self) -> bool {
        matches!(self, Outcome::Paused | Outcome::Stopped)
    }
}

/// What the loop is to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Upgrade (or resume) this group now.
    Start(String),
    /// Watch the canary, which just finished, for the soak time.
    Soak(String),
    /// Wait for a running group to end.
    Wait,
    /// Nothing runs and nothing will start: write the closing table.
    Finish,
}

/// What happened, as the loop tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A started group ended (for the canary: its run, before the soak).
    Ended {
        /// The group.
        group: String,
        /// How.
        outcome: Outcome,
    },
    /// The canary's soak ended; `outcome` is its final one (done, or
    /// failed naming the rollback).
    Soaked {
        /// The canary.
        group: String,
        /// Done, or why not.
        outcome: Outcome,
    },
    /// `hubshift stop --fleet` or Ctrl-C asked the fleet to start no more.
    StopAsked,
}

/// Where the canary stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Canary {
    /// None, or it passed: the others run.
    Passed,
    /// Not started yet: it goes first and alone.
    Waiting(String),
    /// Running alone.
    Running(String),
    /// Finished its run; to be soaked.
    ToSoak(String),
    /// Being soaked.
    Soaking(String),
}

/// The fleet's state.
#[derive(Debug)]
pub struct Scheduler {
    queue: VecDeque<String>,
    canary: Canary,
    running: usize,
    parallel: usize,
    max_failed: u32,
    failed: u32,
    halt: Option<String>,
}

impl Scheduler {
    /// `queue` in the order groups are taken; the policy's canary (if it is
    /// in the queue) goes first and alone.
    pub fn new(queue: Vec<String>, policy: &FleetPolicy) -> Self {
        let mut queue: VecDeque<String> = queue.into();
        let canary = match &policy.canary {
            Some(c) => match queue.iter().position(|g| g == c) {
                Some(pos) => {
                    queue.remove(pos);
                    Canary::Waiting(c.clone())
                }
                None => Canary::Passed,
            },
            None => Canary::Passed,
        };
        Scheduler {
            queue,
            canary,
            running: 0,
            parallel: usize::from(policy.parallel.max(1)),
            max_failed: policy.max_failed,
            failed: 0,
            halt: None,
        }
    }

    /// Whether [`Scheduler::next`] would start a group now: the loop asks
    /// whether a stop was requested just before.
    pub fn would_start(&self) -> bool {
        self.halt.is_none()
            && match &self.canary {
                Canary::Waiting(_) => true,
                Canary::Passed => !self.queue.is_empty() && self.running < self.parallel,
                _ => false,
            }
    }

    /// The next actions: groups to start (as many as the policy allows), a
    /// soak, a wait, or the end.
    pub fn next(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        match self.canary.clone() {
            Canary::Waiting(c) if self.halt.is_none() => {
                self.canary = Canary::Running(c.clone());
                self.running += 1;
                return vec![Action::Start(c)];
            }
            Canary::ToSoak(c) => {
                self.canary = Canary::Soaking(c.clone());
                return vec![Action::Soak(c)];
            }
            Canary::Running(_) | Canary::Soaking(_) => return vec![Action::Wait],
            Canary::Waiting(_) | Canary::Passed => {}
        }
        while self.halt.is_none() && self.running < self.parallel {
            let Some(g) = self.queue.pop_front() else {
                break;
            };
            self.running += 1;
            out.push(Action::Start(g));
        }
        if out.is_empty() {
            out.push(if self.running > 0 {
                Action::Wait
            } else {
                Action::Finish
            });
        }
        out
    }

    /// Takes in what happened.
    pub fn on(&mut self, event: Event) {
        match event {
            Event::StopAsked => self.halt_with("the fleet was asked to stop".into()),
            Event::Ended { group, outcome } => {
                self.running = self.running.saturating_sub(1);
                if self.canary == Canary::Running(group.clone()) {
                    if outcome == Outcome::Done {
                        self.canary = Canary::ToSoak(group);
                    } else {
                        self.canary_ended(&group, &outcome);
                    }
                    return;
                }
                match &outcome {
                    Outcome::Failed(_) => {
                        self.failed += 1;
                        if self.failed > self.max_failed {
                            self.halt_with(format!(
                                "{} group(s) failed, more than --max-failed {}",
                                self.failed, self.max_failed
                            ));
                        }
                    }
                    o if o.parked() => self.halt_with(format!("group {group} was parked")),
                    _ => {}
                }
            }
            Event::Soaked { group, outcome } => self.canary_ended(&group, &outcome),
        }
    }

    /// The canary's final outcome: the others run only when it is done.
    fn canary_ended(&mut self, canary: &str, outcome: &Outcome) {
        self.canary = Canary::Passed;
        match outcome {
            Outcome::Done => {}
            o if o.parked() => self.halt_with(format!("the canary {canary} was parked")),
            Outcome::Taken(_) => self.halt_with(format!(
                "the canary {canary} is being upgraded by another controller: this one cannot watch it soak"
            )),
            _ => {
                self.failed += 1;
                self.halt_with(format!("the canary {canary} failed"));
            }
        }
    }

    /// The first reason to halt wins.
    fn halt_with(&mut self, why: String) {
        if self.halt.is_none() {
            self.halt = Some(why);
        }
    }

    /// Why the fleet halted, if it did.
    pub fn halted(&self) -> Option<&str> {
        self.halt.as_deref()
    }

    /// The groups never started, each with why (the fleet's halt).
    pub fn not_started(&self) -> Vec<(String, Outcome)> {
        let why = self.halt.clone().unwrap_or_default();
        let mut out: Vec<(String, Outcome)> = Vec::new();
        if let Canary::Waiting(c) = &self.canary {
            out.push((c.clone(), Outcome::NotStarted(why.clone())));
        }
        out.extend(
            self.queue
                .iter()
                .map(|g| (g.clone(), Outcome::NotStarted(why.clone()))),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(parallel: u16, canary: Option<&str>, max_failed: u32) -> FleetPolicy {
        FleetPolicy {
            parallel,
            canary: canary.map(str::to_string),
            soak_ms: 1000,
            max_failed,
            skip_unready: false,
        }
    }

    fn groups(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("g{i}")).collect()
    }

    fn ended(g: &str, outcome: Outcome) -> Event {
        Event::Ended {
            group: g.into(),
            outcome,
        }
    }

    fn start(g: &str) -> Action {
        Action::Start(g.into())
    }

    #[test]
    fn groups_run_parallel_at_a_time_until_all_are_done() {
        let mut s = Scheduler::new(groups(3), &policy(2, None, 0));
        assert_eq!(s.next(), vec![start("g1"), start("g2")]);
        assert_eq!(s.next(), vec![Action::Wait]);
        s.on(ended("g1", Outcome::Done));
        assert_eq!(s.next(), vec![start("g3")]);
        s.on(ended("g2", Outcome::Done));
        s.on(ended("g3", Outcome::Done));
        assert_eq!(s.next(), vec![Action::Finish]);
        assert_eq!(s.halted(), None);
        assert!(s.not_started().is_empty());
    }

    #[test]
    fn the_canary_goes_first_alone_and_the_others_wait_for_its_soak() {
        let mut s = Scheduler::new(groups(3), &policy(3, Some("g2"), 0));
        assert_eq!(s.next(), vec![start("g2")]);
        assert_eq!(s.next(), vec![Action::Wait]);
        s.on(ended("g2", Outcome::Done));
        assert_eq!(s.next(), vec![Action::Soak("g2".into())]);
        assert_eq!(
            s.next(),
            vec![Action::Wait],
            "nothing starts while it soaks"
        );
        s.on(Event::Soaked {
            group: "g2".into(),
            outcome: Outcome::Done,
        });
        assert_eq!(s.next(), vec![start("g1"), start("g3")]);
    }

    #[test]
    fn a_canary_that_fails_its_soak_starts_no_other_group() {
        let mut s = Scheduler::new(groups(3), &policy(3, Some("g1"), 5));
        s.next();
        s.on(ended("g1", Outcome::Done));
        s.next();
        s.on(Event::Soaked {
            group: "g1".into(),
            outcome: Outcome::Failed("role flapping".into()),
        });
        assert_eq!(s.next(), vec![Action::Finish]);
        assert_eq!(s.halted(), Some("the canary g1 failed"));
        let not: Vec<String> = s.not_started().into_iter().map(|(g, _)| g).collect();
        assert_eq!(not, vec!["g2", "g3"]);
    }

    #[test]
    fn a_canary_taken_or_parked_halts_without_counting_a_failure() {
        for (outcome, why) in [
            (Outcome::Taken("locked".into()), "another controller"),
            (Outcome::Paused, "was parked"),
        ] {
            let mut s = Scheduler::new(groups(2), &policy(2, Some("g1"), 0));
            s.next();
            s.on(ended("g1", outcome));
            assert_eq!(s.next(), vec![Action::Finish]);
            assert!(
                s.halted().is_some_and(|h| h.contains(why)),
                "{:?}",
                s.halted()
            );
        }
    }

    #[test]
    fn the_failure_budget_stops_new_starts_but_running_groups_finish() {
        let mut s = Scheduler::new(groups(5), &policy(2, None, 1));
        assert_eq!(s.next(), vec![start("g1"), start("g2")]);
        s.on(ended("g1", Outcome::Failed("x".into())));
        assert_eq!(s.next(), vec![start("g3")], "one failure is within budget");
        s.on(ended("g3", Outcome::Failed("y".into())));
        assert_eq!(s.next(), vec![Action::Wait], "g2 still runs");
        assert!(!s.would_start());
        s.on(ended("g2", Outcome::Done));
        assert_eq!(s.next(), vec![Action::Finish]);
        assert_eq!(
            s.halted(),
            Some("2 group(s) failed, more than --max-failed 1")
        );
        assert_eq!(s.not_started().len(), 2);
    }

    #[test]
    fn a_stop_or_a_parked_group_starts_nothing_more() {
        let mut s = Scheduler::new(groups(4), &policy(1, None, 0));
        assert_eq!(s.next(), vec![start("g1")]);
        s.on(ended("g1", Outcome::Done));
        assert!(s.would_start());
        s.on(Event::StopAsked);
        assert!(!s.would_start());
        assert_eq!(s.next(), vec![Action::Finish]);
        assert_eq!(s.halted(), Some("the fleet was asked to stop"));
        assert!(
            s.not_started()
                .iter()
                .all(|(_, o)| *o == Outcome::NotStarted("the fleet was asked to stop".into()))
        );

        let mut s = Scheduler::new(groups(3), &policy(1, None, 0));
        s.next();
        s.on(ended("g1", Outcome::Stopped));
        assert_eq!(s.next(), vec![Action::Finish]);
        assert_eq!(s.halted(), Some("group g1 was parked"));
    }

    #[test]
    fn a_taken_group_is_neither_a_failure_nor_a_halt() {
        let mut s = Scheduler::new(groups(2), &policy(1, None, 0));
        s.next();
        s.on(ended("g1", Outcome::Taken("already at 2.0".into())));
        assert_eq!(s.next(), vec![start("g2")]);
    }

    #[test]
    fn outcomes_name_themselves_as_the_table_does() {
        assert_eq!(Outcome::NotStarted("x".into()).name(), "not_started");
        assert_eq!(Outcome::Failed("why".into()).reason(), Some("why"));
        assert_eq!(Outcome::Paused.reason(), None);
    }
}
