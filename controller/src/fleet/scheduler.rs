//! The fleet's decisions as a pure state machine: groups and policy in,
//! the next actions out (start a group, soak the canary, wait, finish),
//! each group's outcome and a stop request fed back. No I/O: the loop in
//! `mod.rs` does what it says, and these rules are unit-tested alone.

use super::FleetPolicy;
use crate::window::{self, Gate, Window};
use jiff::{SignedDuration, Timestamp};
use std::collections::{HashMap, VecDeque};

/// A group's maintenance windows and the time its hand-over needs.
#[derive(Debug, Clone)]
pub struct GroupWindows {
    /// Its windows (none: any time).
    pub windows: Vec<Window>,
    /// What the hand-over needs before the window closes.
    pub need: SignedDuration,
}

/// A group waiting for its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedGroup {
    /// The group.
    pub group: String,
    /// When its next window it fits in opens.
    pub opens: Timestamp,
    /// That window, as the inventory writes it.
    pub window: String,
}

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
    /// Not begun: waits for its maintenance window (when it opens, which).
    Parked(String),
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
            Outcome::Parked(_) => "parked",
        }
    }

    /// Why, when there is more to say than the name.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Failed(r)
            | Outcome::Skipped(r)
            | Outcome::Taken(r)
            | Outcome::NotStarted(r)
            | Outcome::Parked(r) => Some(r),
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
    /// This group must wait for its window: journal and announce it.
    Park(ParkedGroup),
    /// Nothing runs, and groups wait for windows (`--wait-for-window`):
    /// sleep until the first opens.
    SleepUntil(Timestamp),
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
    /// Waiting for its window; the others wait for it.
    Parked(String),
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
    windows: HashMap<String, GroupWindows>,
    parked: Vec<ParkedGroup>,
    never: Vec<(String, String)>,
    wait_for_window: bool,
    canary_name: Option<String>,
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
            windows: HashMap::new(),
            parked: Vec::new(),
            never: Vec::new(),
            wait_for_window: policy.wait_for_window,
            canary_name: policy.canary.clone(),
        }
    }

    /// The groups' maintenance windows (a group without an entry: any time).
    pub fn with_windows(mut self, windows: HashMap<String, GroupWindows>) -> Self {
        self.windows = windows;
        self
    }

    /// The window decision for `group` at `now`.
    fn gate(&self, group: &str, now: Timestamp) -> Gate {
        match self.windows.get(group) {
            Some(w) => window::decide(&w.windows, now, w.need),
            None => Gate::Open,
        }
    }

    /// Parks `group`, or records that no window fits it; the action to
    /// announce it.
    fn park(&mut self, group: String, gate: Gate) -> Option<Action> {
        match gate {
            Gate::Open => None,
            Gate::Wait { opens, window } => {
                let p = ParkedGroup {
                    group,
                    opens,
                    window,
                };
                self.parked.push(p.clone());
                Some(Action::Park(p))
            }
            Gate::Never => {
                let need = self.windows.get(&group).map_or(0, |w| w.need.as_secs());
                self.never.push((
                    group,
                    format!("no maintenance window of it is long enough for its hand-over (about {need} s)"),
                ));
                None
            }
        }
    }

    /// Groups whose window has opened by `now` are taken again, first.
    fn unpark(&mut self, now: Timestamp) {
        let (open, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.opens <= now);
        self.parked = wait;
        for p in open.into_iter().rev() {
            if self.canary_name.as_deref() == Some(p.group.as_str()) {
                self.canary = Canary::Waiting(p.group);
            } else {
                self.queue.push_front(p.group);
            }
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

    /// The next actions at `now`: groups to start (as many as the policy
    /// allows, each inside its window), groups parked for their window, a
    /// soak, a wait, a sleep until a window opens, or the end.
    pub fn next(&mut self, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        if self.halt.is_none() {
            self.unpark(now);
        }
        match self.canary.clone() {
            Canary::Waiting(c) if self.halt.is_none() => {
                let gate = self.gate(&c, now);
                if gate != Gate::Open {
                    // The others wait for the canary, and it for its window.
                    self.canary = Canary::Parked(c.clone());
                    out.extend(self.park(c, gate));
                    if self.parked.is_empty() {
                        self.canary = Canary::Passed;
                        self.halt_with("the canary has no maintenance window long enough".into());
                    }
                    out.push(self.idle());
                    return out;
                }
                self.canary = Canary::Running(c.clone());
                self.running += 1;
                return vec![Action::Start(c)];
            }
            Canary::Parked(_) => return vec![self.idle()],
            Canary::ToSoak(c) => {
                self.canary = Canary::Soaking(c.clone());
                return vec![Action::Soak(c)];
            }
            Canary::Running(_) | Canary::Soaking(_) => return vec![Action::Wait],
            Canary::Waiting(_) | Canary::Passed => {}
        }
        let mut started = false;
        while self.halt.is_none() && self.running < self.parallel {
            let Some(g) = self.queue.pop_front() else {
                break;
            };
            let gate = self.gate(&g, now);
            if gate != Gate::Open {
                out.extend(self.park(g, gate));
                continue;
            }
            self.running += 1;
            started = true;
            out.push(Action::Start(g));
        }
        if !started {
            out.push(self.idle());
        }
        out
    }

    /// Nothing to start: wait for a running group, sleep until a window
    /// opens, or finish.
    fn idle(&self) -> Action {
        if self.running > 0 {
            return Action::Wait;
        }
        match self.parked.iter().map(|p| p.opens).min() {
            Some(t) if self.wait_for_window && self.halt.is_none() => Action::SleepUntil(t),
            _ => Action::Finish,
        }
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

    /// The groups waiting for their windows.
    pub fn parked(&self) -> &[ParkedGroup] {
        &self.parked
    }

    /// The groups never started, each with why (the fleet's halt, their
    /// window, or none fitting).
    pub fn not_started(&self, show: impl Fn(&ParkedGroup) -> String) -> Vec<(String, Outcome)> {
        let why = self.halt.clone().unwrap_or_default();
        let mut out: Vec<(String, Outcome)> = Vec::new();
        for p in &self.parked {
            out.push((p.group.clone(), Outcome::Parked(show(p))));
        }
        for (g, why) in &self.never {
            out.push((g.clone(), Outcome::Skipped(why.clone())));
        }
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
            wait_for_window: false,
        }
    }

    const T0: Timestamp = Timestamp::UNIX_EPOCH;

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
        assert_eq!(s.next(T0), vec![start("g1"), start("g2")]);
        assert_eq!(s.next(T0), vec![Action::Wait]);
        s.on(ended("g1", Outcome::Done));
        assert_eq!(s.next(T0), vec![start("g3")]);
        s.on(ended("g2", Outcome::Done));
        s.on(ended("g3", Outcome::Done));
        assert_eq!(s.next(T0), vec![Action::Finish]);
        assert_eq!(s.halted(), None);
        assert!(s.not_started(|p| p.window.clone()).is_empty());
    }

    #[test]
    fn the_canary_goes_first_alone_and_the_others_wait_for_its_soak() {
        let mut s = Scheduler::new(groups(3), &policy(3, Some("g2"), 0));
        assert_eq!(s.next(T0), vec![start("g2")]);
        assert_eq!(s.next(T0), vec![Action::Wait]);
        s.on(ended("g2", Outcome::Done));
        assert_eq!(s.next(T0), vec![Action::Soak("g2".into())]);
        assert_eq!(
            s.next(T0),
            vec![Action::Wait],
            "nothing starts while it soaks"
        );
        s.on(Event::Soaked {
            group: "g2".into(),
            outcome: Outcome::Done,
        });
        assert_eq!(s.next(T0), vec![start("g1"), start("g3")]);
    }

    #[test]
    fn a_canary_that_fails_its_soak_starts_no_other_group() {
        let mut s = Scheduler::new(groups(3), &policy(3, Some("g1"), 5));
        s.next(T0);
        s.on(ended("g1", Outcome::Done));
        s.next(T0);
        s.on(Event::Soaked {
            group: "g1".into(),
            outcome: Outcome::Failed("role flapping".into()),
        });
        assert_eq!(s.next(T0), vec![Action::Finish]);
        assert_eq!(s.halted(), Some("the canary g1 failed"));
        let not: Vec<String> = s
            .not_started(|p| p.window.clone())
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        assert_eq!(not, vec!["g2", "g3"]);
    }

    #[test]
    fn a_canary_taken_or_parked_halts_without_counting_a_failure() {
        for (outcome, why) in [
            (Outcome::Taken("locked".into()), "another controller"),
            (Outcome::Paused, "was parked"),
        ] {
            let mut s = Scheduler::new(groups(2), &policy(2, Some("g1"), 0));
            s.next(T0);
            s.on(ended("g1", outcome));
            assert_eq!(s.next(T0), vec![Action::Finish]);
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
        assert_eq!(s.next(T0), vec![start("g1"), start("g2")]);
        s.on(ended("g1", Outcome::Failed("x".into())));
        assert_eq!(
            s.next(T0),
            vec![start("g3")],
            "one failure is within budget"
        );
        s.on(ended("g3", Outcome::Failed("y".into())));
        assert_eq!(s.next(T0), vec![Action::Wait], "g2 still runs");
        assert!(!s.would_start());
        s.on(ended("g2", Outcome::Done));
        assert_eq!(s.next(T0), vec![Action::Finish]);
        assert_eq!(
            s.halted(),
            Some("2 group(s) failed, more than --max-failed 1")
        );
        assert_eq!(s.not_started(|p| p.window.clone()).len(), 2);
    }

    #[test]
    fn a_stop_or_a_parked_group_starts_nothing_more() {
        let mut s = Scheduler::new(groups(4), &policy(1, None, 0));
        assert_eq!(s.next(T0), vec![start("g1")]);
        s.on(ended("g1", Outcome::Done));
        assert!(s.would_start());
        s.on(Event::StopAsked);
        assert!(!s.would_start());
        assert_eq!(s.next(T0), vec![Action::Finish]);
        assert_eq!(s.halted(), Some("the fleet was asked to stop"));
        assert!(
            s.not_started(|p| p.window.clone())
                .iter()
                .all(|(_, o)| *o == Outcome::NotStarted("the fleet was asked to stop".into()))
        );

        let mut s = Scheduler::new(groups(3), &policy(1, None, 0));
        s.next(T0);
        s.on(ended("g1", Outcome::Stopped));
        assert_eq!(s.next(T0), vec![Action::Finish]);
        assert_eq!(s.halted(), Some("group g1 was parked"));
    }

    #[test]
    fn a_taken_group_is_neither_a_failure_nor_a_halt() {
        let mut s = Scheduler::new(groups(2), &policy(1, None, 0));
        s.next(T0);
        s.on(ended("g1", Outcome::Taken("already at 2.0".into())));
        assert_eq!(s.next(T0), vec![start("g2")]);
    }

    #[test]
    fn outcomes_name_themselves_as_the_table_does() {
        assert_eq!(Outcome::NotStarted("x".into()).name(), "not_started");
        assert_eq!(Outcome::Failed("why".into()).reason(), Some("why"));
        assert_eq!(Outcome::Paused.reason(), None);
    }

    fn windowed(groups: &[&str], window: &str, need_mins: i64) -> HashMap<String, GroupWindows> {
        groups
            .iter()
            .map(|g| {
                (
                    g.to_string(),
                    GroupWindows {
                        windows: vec![Window::parse(window).unwrap()],
                        need: SignedDuration::from_mins(need_mins),
                    },
                )
            })
            .collect()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_group_outside_its_window_is_parked_and_the_others_go_on() {
        // Friday 23:00 UTC; g2's window opens Saturday 01:00 UTC.
        let now = at("2026-12-04T23:00:00Z");
        let mut s = Scheduler::new(groups(3), &policy(3, None, 0)).with_windows(windowed(
            &["g2"],
            "Sat 01:00-05:00 UTC",
            30,
        ));
        let opens = at("2026-12-05T01:00:00Z");
        let parked = ParkedGroup {
            group: "g2".into(),
            opens,
            window: "Sat 01:00-05:00 UTC".into(),
        };
        assert_eq!(
            s.next(now),
            vec![start("g1"), Action::Park(parked.clone()), start("g3")]
        );
        s.on(ended("g1", Outcome::Done));
        s.on(ended("g3", Outcome::Done));
        assert_eq!(s.next(now), vec![Action::Finish]);
        assert_eq!(s.parked(), [parked]);
        assert_eq!(
            s.not_started(|p| p.opens.to_string()),
            vec![("g2".into(), Outcome::Parked(opens.to_string()))]
        );
    }

    #[test]
    fn waiting_for_windows_sleeps_until_one_opens_then_starts_the_group() {
        let mut p = policy(1, None, 0);
        p.wait_for_window = true;
        let mut s = Scheduler::new(groups(1), &p).with_windows(windowed(
            &["g1"],
            "Sat 01:00-05:00 UTC",
            30,
        ));
        let opens = at("2026-12-05T01:00:00Z");
        let actions = s.next(at("2026-12-04T23:00:00Z"));
        assert!(matches!(actions[0], Action::Park(_)), "{actions:?}");
        assert_eq!(actions[1], Action::SleepUntil(opens));
        assert_eq!(s.next(opens), vec![start("g1")]);
        // Too late in the window for the hand-over: next week.
        let mut s = Scheduler::new(groups(1), &p).with_windows(windowed(
            &["g1"],
            "Sat 01:00-05:00 UTC",
            30,
        ));
        let actions = s.next(at("2026-12-05T04:45:00Z"));
        assert_eq!(
            actions[1],
            Action::SleepUntil(at("2026-12-12T01:00:00Z")),
            "{actions:?}"
        );
    }

    #[test]
    fn a_parked_canary_holds_the_others_and_a_window_too_short_skips_a_group() {
        let mut s = Scheduler::new(groups(3), &policy(3, Some("g1"), 0)).with_windows({
            let mut w = windowed(&["g1"], "Sat 01:00-05:00 UTC", 30);
            w.extend(windowed(&["g3"], "Sat 01:00-01:10 UTC", 30));
            w
        });
        let actions = s.next(at("2026-12-04T23:00:00Z"));
        assert!(matches!(actions[0], Action::Park(_)), "{actions:?}");
        assert_eq!(actions[1], Action::Finish);
        // Inside the canary's window: it goes first and alone.
        assert_eq!(s.next(at("2026-12-05T01:00:00Z")), vec![start("g1")]);
        s.on(ended("g1", Outcome::Done));
        assert_eq!(
            s.next(at("2026-12-05T01:20:00Z")),
            vec![Action::Soak("g1".into())]
        );
        s.on(Event::Soaked {
            group: "g1".into(),
            outcome: Outcome::Done,
        });
        assert_eq!(s.next(at("2026-12-05T01:30:00Z")), vec![start("g2")]);
        s.on(ended("g2", Outcome::Done));
        assert_eq!(s.next(at("2026-12-05T01:40:00Z")), vec![Action::Finish]);
        let left = s.not_started(|p| p.window.clone());
        assert!(
            matches!(&left[..], [(g, Outcome::Skipped(why))] if g == "g3" && why.contains("long enough")),
            "{left:?}"
        );
    }
}
