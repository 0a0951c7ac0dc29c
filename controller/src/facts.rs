//! What a run knows and must remember across a crash: versions, the runtime
//! archive's digest, the backup, and the times that make up the outage
//! windows. Kept in the journal (no secret ever goes in here).

use serde::{Deserialize, Serialize};

/// The journaled facts of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunFacts {
    /// Target runtime version.
    pub version: String,
    /// Version the group ran before.
    pub from_version: String,
    /// Orchestration schema name.
    pub schema: String,
    /// SHA-256 of the runtime archive.
    pub runtime_sha256: String,
    /// Its size.
    pub runtime_bytes: u64,
    /// Where the archive was read from (informational; a resume may pass another path).
    pub runtime_file: String,
    /// Backup id on the primary's host.
    pub backup_id: Option<String>,
    /// Its SHA-256.
    pub backup_sha256: Option<String>,
    /// Its size.
    pub backup_bytes: Option<u64>,
    /// Where the primary's host keeps it.
    pub backup_path: Option<String>,
    /// Controller-side copy, if configured.
    pub backup_copy: Option<String>,
    /// The backup was re-read and its digest matched.
    pub backup_verified: bool,
    /// Unix ms: hubshift asked the primary to stop (outage window 1 starts:
    /// the hub may stop serving at any moment after the request, and a real
    /// hub takes seconds to exit, so the window opens at the request).
    pub primary_stopped_ms: Option<u64>,
    /// Unix ms: a secondary was seen active (window 1 ends).
    pub takeover_ms: Option<u64>,
    /// Which secondary took over.
    pub takeover_node: Option<String>,
    /// Unix ms: window 2 starts — when HA `create` had made the new schema
    /// (an old secondary shuts itself down on it at any moment after), or
    /// later when hubshift had to stop an old secondary.
    pub secondaries_down_ms: Option<u64>,
    /// Unix ms: the Start carrying HA `create` returned, so the new schema
    /// existed (the agent answers right after `create` exits and `start` is
    /// spawned).
    #[serde(default)]
    pub create_done_ms: Option<u64>,
    /// Unix ms: the last secondary was seen standby again (the group had no
    /// standby from the primary's stop until then).
    #[serde(default)]
    pub standby_again_ms: Option<u64>,
    /// Unix ms: the upgraded primary was seen active (window 2 ends).
    pub primary_active_ms: Option<u64>,
    /// How often a fallback gave the group back to its old primary: the
    /// next hand-over takes its backup anew under a new id.
    #[serde(default)]
    pub handover_round: u32,
    /// Steps (by name) the run parks before, as `--pause-before` asked.
    #[serde(default)]
    pub pause_before: Vec<String>,
    /// Plan positions where it already paused (a resume goes on past them).
    #[serde(default)]
    pub pauses_done: Vec<usize>,
    /// The fleet run this group's run belongs to, if any.
    #[serde(default)]
    pub fleet: Option<String>,
    /// For a rollback: the upgrade run it reverses.
    #[serde(default)]
    pub rollback_of: Option<String>,
    /// Things an operator should know (e.g. a secondary had to be stopped).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Unix ms: the node that took over was last positively seen serving
    /// (a fallback's outage is counted from here).
    #[serde(default)]
    pub serving_seen_ms: Option<u64>,
    /// Windows of hand-overs a fallback undid (their window 1), and the
    /// fallbacks' own outages (window 3: from the moment the group may have
    /// lost its serving node until the old primary was seen active again).
    #[serde(default)]
    pub earlier_windows: Vec<Window>,
    /// Pre-copy: the base taken before the outage, and what the backup
    /// after the stop made of it.
    #[serde(default)]
    pub pre_copy: Option<PreCopy>,
}

/// The base a run took of its primary's appdata while it still ran, and
/// the backup of record made against it: a delta (the pair is the backup),
/// or a full backup and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreCopy {
    /// The base's id on the primary's host.
    pub base_id: String,
    /// Its SHA-256.
    pub base_sha256: String,
    /// Its size.
    pub base_bytes: u64,
    /// The controller's copy of it (`backups.copy_to`), made before the stop.
    #[serde(default)]
    pub base_copy: Option<String>,
    /// The backup of record is a delta against this base.
    pub delta: bool,
    /// The delta's size (the backup file's).
    pub delta_bytes: Option<u64>,
    /// How long the agent took to write it, in ms.
    pub delta_ms: Option<u64>,
    /// Set when the backup after the stop is a full one instead: why.
    pub full_because: Option<String>,
}

impl RunFacts {
    /// How long the group ran on one node: from the primary's stop until
    /// the last secondary was standby again.
    /// None while unknown, and for an impossible span (see
    /// [`RunFacts::impossible_spans`]), never a 0 that hides it.
    pub fn single_node_ms(&self) -> Option<u64> {
        match (self.primary_stopped_ms, self.standby_again_ms) {
            (Some(a), Some(b)) => b.checked_sub(a),
            _ => None,
        }
    }

    /// Spans that end before they start: the times were recorded by clocks
    /// that disagree (a journal written before times came from the
    /// database server's clock, or a server whose clock jumped). Reported
    /// as such instead of as 0.
    pub fn impossible_spans(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, start: Option<u64>, end: Option<u64>| {
            if let (Some(s), Some(e)) = (start, end)
                && e < s
            {
                out.push(format!(
                    "{what} ends {} ms before it starts: its times come from clocks that disagree",
                    s - e
                ));
            }
        };
        check("outage window 1", self.primary_stopped_ms, self.takeover_ms);
        check(
            "the single-node time",
            self.primary_stopped_ms,
            self.standby_again_ms,
        );
        for w in self.earlier_windows.iter().filter(|w| w.window == 3) {
            check("a fallback's outage", Some(w.start_ms), Some(w.end_ms));
        }
        out
    }
}

/// An outage window the run caused, as observed through the agents; times
/// in Unix ms on the database server's clock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Window {
    /// 1: primary stop → takeover; 2: old secondary down → upgraded primary
    /// active; 3: a fallback (serving node possibly lost → old primary active).
    pub window: u8,
    /// Unix ms start.
    pub start_ms: u64,
    /// Unix ms end.
    pub end_ms: u64,
    /// Length in ms.
    pub duration_ms: u64,
}

impl RunFacts {
    /// The windows measured so far.
    pub fn windows(&self) -> Vec<Window> {
        let mut out = Vec::new();
        for (window, start, end) in [
            (1, self.primary_stopped_ms, self.takeover_ms),
            (2, self.secondaries_down_ms, self.primary_active_ms),
        ] {
            if let (Some(start_ms), Some(end_ms)) = (start, end) {
                if window == 1 && end_ms < start_ms {
                    // Impossible: reported by `impossible_spans`.
                    continue;
                }
                out.push(Window {
                    window,
                    start_ms,
                    end_ms,
                    duration_ms: end_ms.saturating_sub(start_ms),
                });
            }
        }
        // Earlier hand-overs and fallbacks first: in the order they happened.
        let mut all: Vec<Window> = self
            .earlier_windows
            .iter()
            .filter(|w| w.end_ms >= w.start_ms)
            .cloned()
            .collect();
        all.extend(out);
        all.sort_by_key(|w| w.start_ms);
        all
    }
}

/// Something a step found to be true that the run must remember. Steps
/// report outcomes; [`fold`] alone turns them into facts, so what each
/// outcome does to the outage windows and the backup is one pure function,
/// tested without agents or a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// hubshift asked the primary to stop at `requested_ms`; `was_running`
    /// is false for a repeat after a crash (the hub was down already).
    PrimaryStopped {
        /// Unix ms of the request.
        requested_ms: u64,
        /// The hub ran when asked.
        was_running: bool,
    },
    /// `node` was seen active at `at_ms`.
    TookOver {
        /// The secondary that took over.
        node: String,
        /// Unix ms.
        at_ms: u64,
    },
    /// A rollback found nobody to hand over to and went on.
    NoTakeover {
        /// Why, for the run's warnings.
        why: String,
    },
    /// The old primary was started again: the hand-over starts anew from
    /// the primary's stop.
    FellBack {
        /// Unix ms from which the group may have had no serving node.
        lost_ms: Option<u64>,
        /// Unix ms the old primary was seen active again, if it was.
        active_ms: Option<u64>,
    },
    /// The node that took over was positively seen serving at `at_ms`.
    SeenServing {
        /// Unix ms.
        at_ms: u64,
    },
    /// The primary's appdata was backed up.
    BackedUp {
        /// Backup id.
        id: String,
        /// Its SHA-256.
        sha256: String,
        /// Its size.
        bytes: u64,
        /// Where the host keeps it.
        path: String,
    },
    /// Pre-copy: the base of the running primary's appdata was written.
    BaseTaken {
        /// Its id.
        id: String,
        /// Its SHA-256.
        sha256: String,
        /// Its size.
        bytes: u64,
        /// The controller's copy, if one was made.
        copy: Option<String>,
    },
    /// The backup after the stop was made against the base: a delta of
    /// `bytes` written in `ms` (`delta`), or a full backup because of
    /// `full_because`.
    BackedUpAgainstBase {
        /// It is a delta.
        delta: bool,
        /// The backup file's size.
        bytes: u64,
        /// Milliseconds the agent took.
        ms: u64,
        /// Why a full backup instead, if so.
        full_because: Option<String>,
    },
    /// The backup was re-read and matched; `copy` is the controller-side
    /// copy, if one was made.
    BackupVerified {
        /// Path of the copy.
        copy: Option<String>,
    },
    /// The new schema existed at `at_ms`: made by this attempt's HA
    /// `create` (`fresh`), or found made by an earlier one (then the window
    /// opened no later than `at_ms`).
    SchemaCreated {
        /// Unix ms.
        at_ms: u64,
        /// This attempt ran `create`.
        fresh: bool,
    },
    /// The upgraded primary is active and the old secondaries are down.
    HandedBack {
        /// The upgraded primary.
        primary: String,
        /// Each old secondary with when it was seen down (or asked to stop).
        down: Vec<(String, u64)>,
        /// The old secondaries hubshift had to stop.
        stopped_by_hubshift: Vec<String>,
        /// How long they were given to shut themselves down, in seconds.
        shutdown_timeout_secs: u64,
        /// Unix ms: the primary was seen active.
        primary_active_ms: u64,
    },
    /// Something the operator should know, said once in the summary.
    Warned(String),
    /// A secondary was seen standby at `at_ms`.
    StandbyAgain {
        /// Unix ms.
        at_ms: u64,
    },
}

/// The facts after `outcome`. A repeat of a step (a resume after a crash)
/// keeps the earliest start of a window: it opened when hubshift first
/// acted, not when it looked again.
pub fn fold(mut f: RunFacts, outcome: &StepOutcome) -> RunFacts {
    match outcome {
        StepOutcome::PrimaryStopped {
            requested_ms,
            was_running,
        } => {
            if f.primary_stopped_ms.is_none() || *was_running {
                f.primary_stopped_ms = Some(*requested_ms);
            }
        }
        StepOutcome::TookOver { node, at_ms } => {
            f.serving_seen_ms = Some(f.serving_seen_ms.map_or(*at_ms, |t| t.max(*at_ms)));
            f.takeover_ms.get_or_insert(*at_ms);
            f.takeover_node = Some(node.clone());
        }
        StepOutcome::NoTakeover { why } => f.warnings.push(format!(
            "{why}: the group had no active node until the restored primary started"
        )),
        StepOutcome::FellBack { lost_ms, active_ms } => {
            // The undone hand-over's window 1 happened all the same.
            if let (Some(start_ms), Some(end_ms)) = (f.primary_stopped_ms, f.takeover_ms)
                && end_ms >= start_ms
            {
                f.earlier_windows.push(Window {
                    window: 1,
                    start_ms,
                    end_ms,
                    duration_ms: end_ms - start_ms,
                });
            }
            if let (Some(start_ms), Some(end_ms)) = (*lost_ms, *active_ms) {
                f.earlier_windows.push(Window {
                    window: 3,
                    start_ms,
                    end_ms,
                    duration_ms: end_ms.saturating_sub(start_ms),
                });
            }
            // What this hand-over measured and backed up belongs to a
            // primary that has run since.
            f.serving_seen_ms = None;
            f.takeover_ms = None;
            f.takeover_node = None;
            if f.rollback_of.is_none() {
                f.handover_round += 1;
                f.backup_id = None;
                f.backup_sha256 = None;
                f.backup_bytes = None;
                f.backup_path = None;
                f.backup_verified = false;
            }
        }
        StepOutcome::BackedUp {
            id,
            sha256,
            bytes,
            path,
        } => {
            f.backup_id = Some(id.clone());
            f.backup_sha256 = Some(sha256.clone());
            f.backup_bytes = Some(*bytes);
            f.backup_path = Some(path.clone());
            f.backup_verified = false;
        }
        StepOutcome::BaseTaken {
            id,
            sha256,
            bytes,
            copy,
        } => {
            f.pre_copy = Some(PreCopy {
                base_id: id.clone(),
                base_sha256: sha256.clone(),
                base_bytes: *bytes,
                base_copy: copy.clone(),
                ..PreCopy::default()
            });
        }
        StepOutcome::BackedUpAgainstBase {
            delta,
            bytes,
            ms,
            full_because,
        } => {
            if let Some(p) = &mut f.pre_copy {
                p.delta = *delta;
                p.delta_bytes = delta.then_some(*bytes);
                p.delta_ms = Some(*ms);
                p.full_because = full_because.clone();
            }
        }
        StepOutcome::BackupVerified { copy } => {
            f.backup_copy = copy.clone();
            f.backup_verified = true;
        }
        StepOutcome::SchemaCreated { at_ms, fresh } => {
            if *fresh || f.create_done_ms.is_none() {
                f.create_done_ms = Some(*at_ms);
            }
        }
        StepOutcome::HandedBack {
            primary,
            down,
            stopped_by_hubshift,
            shutdown_timeout_secs,
            primary_active_ms,
        } => {
            // Window 2 opens when the old secondaries may stop serving: at
            // the create (they shut themselves down on the new schema at
            // any moment after it), or when hubshift stopped one that did not.
            let stopped = down
                .iter()
                .filter(|(n, _)| stopped_by_hubshift.contains(n))
                .map(|(_, d)| *d)
                .max();
            let last_down = match (f.create_done_ms, stopped) {
                (Some(c), Some(s)) => Some(c.max(s)),
                (c, s) => c.or(s).or_else(|| down.iter().map(|(_, d)| *d).max()),
            };
            if f.secondaries_down_ms.is_none() {
                f.secondaries_down_ms = last_down;
            }
            f.primary_active_ms.get_or_insert(*primary_active_ms);
            if let Some(d) = last_down
                && *primary_active_ms < d
            {
                f.warnings.push(format!(
                    "{primary} was seen active {} ms before the last old secondary was seen down",
                    d - primary_active_ms
                ));
            }
            for n in stopped_by_hubshift {
                f.warnings.push(format!(
                    "{n} did not shut itself down after the new schema appeared (within {shutdown_timeout_secs}s, or before {primary} was active) and was stopped by hubshift"
                ));
            }
        }
        StepOutcome::Warned(w) => {
            if !f.warnings.contains(w) {
                f.warnings.push(w.clone());
            }
        }
        StepOutcome::SeenServing { at_ms } => {
            f.serving_seen_ms = Some(f.serving_seen_ms.map_or(*at_ms, |t| t.max(*at_ms)));
        }
        StepOutcome::StandbyAgain { at_ms } => {
            f.standby_again_ms = Some(f.standby_again_ms.map_or(*at_ms, |t| t.max(*at_ms)));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(outcomes: &[StepOutcome]) -> RunFacts {
        outcomes.iter().fold(RunFacts::default(), fold)
    }

    #[test]
    fn a_whole_hand_over_makes_both_windows() {
        let f = folded(&[
            StepOutcome::PrimaryStopped {
                requested_ms: 1_000,
                was_running: true,
            },
            StepOutcome::TookOver {
                node: "s".into(),
                at_ms: 3_000,
            },
            StepOutcome::SchemaCreated {
                at_ms: 10_000,
                fresh: true,
            },
            StepOutcome::HandedBack {
                primary: "p".into(),
                down: vec![("s".into(), 10_200)],
                stopped_by_hubshift: vec![],
                shutdown_timeout_secs: 30,
                primary_active_ms: 12_000,
            },
            StepOutcome::StandbyAgain { at_ms: 20_000 },
        ]);
        let w: Vec<(u8, u64)> = f
            .windows()
            .iter()
            .map(|w| (w.window, w.duration_ms))
            .collect();
        assert_eq!(w, [(1, 2_000), (2, 2_000)], "window 2 opens at the create");
        assert_eq!(f.single_node_ms(), Some(19_000));
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    #[test]
    fn a_repeated_step_keeps_the_first_start_of_a_window() {
        let f = folded(&[
            StepOutcome::PrimaryStopped {
                requested_ms: 1_000,
                was_running: true,
            },
            // Resumed after a crash: the primary was down already.
            StepOutcome::PrimaryStopped {
                requested_ms: 5_000,
                was_running: false,
            },
            StepOutcome::TookOver {
                node: "s".into(),
                at_ms: 3_000,
            },
            StepOutcome::TookOver {
                node: "s".into(),
                at_ms: 6_000,
            },
            StepOutcome::SchemaCreated {
                at_ms: 9_000,
                fresh: true,
            },
            StepOutcome::SchemaCreated {
                at_ms: 9_500,
                fresh: false,
            },
        ]);
        assert_eq!(f.primary_stopped_ms, Some(1_000));
        assert_eq!(f.takeover_ms, Some(3_000));
        assert_eq!(f.create_done_ms, Some(9_000));
    }

    #[test]
    fn a_fallback_forgets_the_hand_over_and_its_backup() {
        let backed_up = StepOutcome::BackedUp {
            id: "r-p".into(),
            sha256: "ab".repeat(32),
            bytes: 10,
            path: "/b/r-p.tar.gz".into(),
        };
        let f = folded(&[
            StepOutcome::PrimaryStopped {
                requested_ms: 1_000,
                was_running: true,
            },
            StepOutcome::TookOver {
                node: "s".into(),
                at_ms: 3_000,
            },
            backed_up.clone(),
            StepOutcome::BackupVerified { copy: None },
            StepOutcome::FellBack {
                lost_ms: None,
                active_ms: None,
            },
        ]);
        assert_eq!((f.takeover_ms, f.takeover_node.as_deref()), (None, None));
        assert_eq!((f.backup_id.as_deref(), f.backup_verified), (None, false));
        assert_eq!(f.handover_round, 1, "the next backup gets a new id");
        // A rollback keeps its backup: it is what it restores.
        let f = folded(&[backed_up, StepOutcome::BackupVerified { copy: None }]);
        let f = fold(
            RunFacts {
                rollback_of: Some("r".into()),
                ..f
            },
            &StepOutcome::FellBack {
                lost_ms: None,
                active_ms: None,
            },
        );
        assert!(f.backup_verified && f.backup_id.is_some());
        assert_eq!(f.handover_round, 0);
    }

    #[test]
    fn a_secondary_stopped_by_hubshift_opens_window_two_and_is_warned_about() {
        let f = folded(&[
            StepOutcome::SchemaCreated {
                at_ms: 10_000,
                fresh: true,
            },
            StepOutcome::HandedBack {
                primary: "p".into(),
                down: vec![("s1".into(), 10_100), ("s2".into(), 40_000)],
                stopped_by_hubshift: vec!["s2".into()],
                shutdown_timeout_secs: 30,
                primary_active_ms: 12_000,
            },
        ]);
        assert_eq!(f.secondaries_down_ms, Some(40_000));
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("p was seen active 28000 ms before"));
        assert!(f.warnings[1].starts_with("s2 did not shut itself down"));
        assert!(f.warnings[1].contains("within 30s"));
    }

    #[test]
    fn standby_again_is_the_last_secondary() {
        let f = folded(&[
            StepOutcome::StandbyAgain { at_ms: 9_000 },
            StepOutcome::StandbyAgain { at_ms: 7_000 },
        ]);
        assert_eq!(f.standby_again_ms, Some(9_000));
    }

    #[test]
    fn a_fallback_after_the_serving_node_was_lost_is_a_window_of_its_own() {
        let f = folded(&[
            StepOutcome::PrimaryStopped {
                requested_ms: 1_000,
                was_running: true,
            },
            StepOutcome::TookOver {
                node: "s".into(),
                at_ms: 3_000,
            },
            StepOutcome::SeenServing { at_ms: 5_000 },
            StepOutcome::FellBack {
                lost_ms: Some(5_000),
                active_ms: Some(9_500),
            },
        ]);
        let w: Vec<(u8, u64)> = f
            .windows()
            .iter()
            .map(|w| (w.window, w.duration_ms))
            .collect();
        // The undone hand-over's window 1, then the fallback's outage.
        assert_eq!(w, vec![(1, 2_000), (3, 4_500)]);
        assert_eq!(f.serving_seen_ms, None, "the next hand-over starts afresh");
    }

    #[test]
    fn spans_that_end_before_they_start_are_reported_not_zeroed() {
        let f = RunFacts {
            // Stopped by a controller whose clock ran 3 minutes ahead.
            primary_stopped_ms: Some(190_000),
            takeover_ms: Some(12_000),
            standby_again_ms: Some(18_400),
            ..Default::default()
        };
        assert!(f.windows().is_empty(), "{:?}", f.windows());
        assert_eq!(f.single_node_ms(), None);
        let spans = f.impossible_spans();
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!(spans[0].starts_with("outage window 1 ends 178000 ms before it starts"));
        assert!(spans[1].contains("single-node time"));
    }

    #[test]
    fn windows_need_both_ends() {
        let mut f = RunFacts {
            primary_stopped_ms: Some(1_000),
            ..Default::default()
        };
        assert!(f.windows().is_empty());
        f.takeover_ms = Some(2_500);
        f.secondaries_down_ms = Some(10_000);
        f.primary_active_ms = Some(9_000);
        let w = f.windows();
        assert_eq!(w[0].duration_ms, 1_500);
        assert_eq!(w[1].duration_ms, 0, "an overlap is not a negative outage");
    }
}
