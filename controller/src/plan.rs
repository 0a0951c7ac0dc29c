//! The upgrade plan as data: the steps `plan` prints and `upgrade` executes,
//! and the preflight findings. Everything here is a pure function of the
//! inventory and the observed state, so it is tested without I/O.

use crate::inventory::Group;
use serde::{Deserialize, Serialize};

/// One idempotent, journaled step. `procedure` is the step of the manual
/// procedure (README.md, "What it automates, and why") it belongs to; 0 is preparation before any outage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Upload and unpack the new runtime beside the old one (no outage).
    StageRuntime {
        /// Node.
        node: String,
    },
    /// Pre-copy: a base backup of the running primary's appdata, so that
    /// the backup after the stop only archives what changed (no outage).
    BaseBackup {
        /// Primary.
        node: String,
    },
    /// Stop the primary; the secondary takes over.
    StopPrimary {
        /// Primary.
        node: String,
    },
    /// Wait until one of the secondaries is active (outage window 1 ends).
    AwaitTakeover {
        /// Secondaries that may take over.
        candidates: Vec<String>,
    },
    /// Back up the primary's appdata.
    Backup {
        /// Primary.
        node: String,
    },
    /// Re-read the backup on the host (and the controller's copy, if any)
    /// and check its SHA-256. Gate for every destructive step.
    VerifyBackup {
        /// Primary.
        node: String,
    },
    /// `DROP SCHEMA <orchestration> CASCADE`.
    DropSchema,
    /// Put the run's backup back into the primary's appdata (rollback); the
    /// replaced tree is kept aside by the agent.
    RestoreBackup {
        /// Primary.
        node: String,
    },
    /// Switch the primary's `current` to the new runtime (procedure step 3).
    ActivateRuntime {
        /// Primary.
        node: String,
    },
    /// HA `create` then `start` on the primary.
    CreateAndStart {
        /// Primary.
        node: String,
    },
    /// Wait until the old secondaries have shut themselves down (stop them
    /// if not) and the primary is active (outage window 2).
    AwaitHandback {
        /// Primary.
        primary: String,
        /// Old secondaries.
        secondaries: Vec<String>,
    },
    /// Switch a secondary's `current` to the new runtime (procedure step 5).
    ActivateSecondaryRuntime {
        /// Secondary.
        node: String,
    },
    /// Copy the certificate store, comparing SHA-256.
    CopyCertificate {
        /// Primary.
        from: String,
        /// Secondary.
        to: String,
    },
    /// Start a secondary (HA `start`).
    StartSecondary {
        /// Secondary.
        node: String,
    },
    /// Wait until a secondary is standby.
    AwaitStandby {
        /// Secondary.
        node: String,
    },
}

impl Step {
    /// Short machine name.
    pub fn name(&self) -> &'static str {
        match self {
            Step::StageRuntime { .. } => "stage_runtime",
            Step::BaseBackup { .. } => "base_backup",
            Step::StopPrimary { .. } => "stop_primary",
            Step::AwaitTakeover { .. } => "await_takeover",
            Step::Backup { .. } => "backup",
            Step::VerifyBackup { .. } => "verify_backup",
            Step::DropSchema => "drop_schema",
            Step::RestoreBackup { .. } => "restore_backup",
            Step::ActivateRuntime { .. } => "activate_runtime",
            Step::ActivateSecondaryRuntime { .. } => "activate_secondary_runtime",
            Step::CreateAndStart { .. } => "create_and_start",
            Step::AwaitHandback { .. } => "await_handback",
            Step::CopyCertificate { .. } => "copy_certificate",
            Step::StartSecondary { .. } => "start_secondary",
            Step::AwaitStandby { .. } => "await_standby",
        }
    }

    /// The node it acts on, for display.
    pub fn node(&self) -> String {
        match self {
            Step::StageRuntime { node }
            | Step::BaseBackup { node }
            | Step::StopPrimary { node }
            | Step::Backup { node }
            | Step::VerifyBackup { node }
            | Step::RestoreBackup { node }
            | Step::ActivateRuntime { node }
            | Step::ActivateSecondaryRuntime { node }
            | Step::CreateAndStart { node }
            | Step::StartSecondary { node }
            | Step::AwaitStandby { node } => node.clone(),
            Step::AwaitTakeover { candidates } => candidates.join(","),
            Step::AwaitHandback { primary, .. } => primary.clone(),
            Step::CopyCertificate { from, to } => format!("{from}->{to}"),
            Step::DropSchema => "database".into(),
        }
    }

    /// Which step of the manual procedure this belongs to.
    pub fn procedure(&self) -> u8 {
        match self {
            Step::StageRuntime { .. } | Step::BaseBackup { .. } => 0,
            Step::StopPrimary { .. }
            | Step::AwaitTakeover { .. }
            | Step::Backup { .. }
            | Step::VerifyBackup { .. } => 1,
            Step::DropSchema => 2,
            Step::ActivateRuntime { .. } | Step::RestoreBackup { .. } => 3,
            Step::CreateAndStart { .. } | Step::AwaitHandback { .. } => 4,
            Step::ActivateSecondaryRuntime { .. } | Step::CopyCertificate { .. } => 5,
            Step::StartSecondary { .. } | Step::AwaitStandby { .. } => 6,
        }
    }

    /// Whether the step changes something that the backup is the way back from.
    pub fn destructive(&self) -> bool {
        matches!(
            self,
            Step::DropSchema
                | Step::RestoreBackup { .. }
                | Step::ActivateRuntime { .. }
                | Step::ActivateSecondaryRuntime { .. }
                | Step::CreateAndStart { .. }
        )
    }

    /// One line for people.
    pub fn describe(&self, schema: &str, version: &str) -> String {
        match self {
            Step::StageRuntime { node } => {
                format!(
                    "stage runtime {version} on {node} (upload + unpack beside the current one)"
                )
            }
            Step::BaseBackup { node } => format!(
                "pre-copy: base backup of the running {node}'s appdata (the backup after the stop archives only what changed)"
            ),
            Step::StopPrimary { node } => format!("stop the primary {node}"),
            Step::AwaitTakeover { candidates } => {
                format!(
                    "wait until {} is active (outage window 1)",
                    candidates.join(" or ")
                )
            }
            Step::Backup { node } => format!("back up appdata of {node}"),
            Step::VerifyBackup { node } => {
                format!("verify the backup of {node} (SHA-256, full read)")
            }
            Step::DropSchema => format!("DROP SCHEMA {schema} CASCADE"),
            Step::RestoreBackup { node } => {
                format!(
                    "restore the run's backup into the appdata of {node} (current tree kept aside)"
                )
            }
            Step::ActivateRuntime { node } | Step::ActivateSecondaryRuntime { node } => {
                format!("switch {node} to runtime {version}")
            }
            Step::CreateAndStart { node } => format!("HA create + start on {node}"),
            Step::AwaitHandback {
                primary,
                secondaries,
            } => format!(
                "wait until {} shut down (stopping it if not) and {primary} is active (outage window 2)",
                secondaries.join(", ")
            ),
            Step::CopyCertificate { from, to } => {
                format!("copy the certificate store {from} -> {to}")
            }
            Step::StartSecondary { node } => format!("start {node}"),
            Step::AwaitStandby { node } => format!("wait until {node} is standby"),
        }
    }
}

/// The steps that upgrade `group`, in order.
pub fn build_plan(group: &Group) -> Vec<Step> {
    let mut steps: Vec<Step> = group
        .nodes
        .iter()
        .map(|n| Step::StageRuntime {
            node: n.name.clone(),
        })
        .collect();
    steps.push(Step::BaseBackup {
        node: group.primary().name.clone(),
    });
    steps.extend(hand_over(group, false));
    steps
}

/// The steps that take `group` back to the version and appdata recorded by
/// an upgrade run: the same hand-over as the upgrade (so data keeps flowing
/// on the secondary while the primary is restored), with the run's verified
/// backup restored instead of a new runtime staged.
pub fn build_rollback_plan(group: &Group) -> Vec<Step> {
    hand_over(group, true)
}

/// Procedure steps 1–6 once the target runtime is staged everywhere: the
/// primary hands over to a secondary, is backed up (upgrade) or restored
/// from the run's backup (rollback), switched, re-created, and the
/// secondaries follow.
fn hand_over(group: &Group, restore: bool) -> Vec<Step> {
    let primary = group.primary().name.clone();
    let secondaries: Vec<String> = group.secondaries().iter().map(|n| n.name.clone()).collect();
    let mut steps = vec![
        Step::StopPrimary {
            node: primary.clone(),
        },
        Step::AwaitTakeover {
            candidates: secondaries.clone(),
        },
    ];
    if !restore {
        steps.push(Step::Backup {
            node: primary.clone(),
        });
    }
    steps.extend([
        Step::VerifyBackup {
            node: primary.clone(),
        },
        Step::DropSchema,
    ]);
    if restore {
        steps.push(Step::RestoreBackup {
            node: primary.clone(),
        });
    }
    steps.extend([
        Step::ActivateRuntime {
            node: primary.clone(),
        },
        Step::CreateAndStart {
            node: primary.clone(),
        },
        Step::AwaitHandback {
            primary: primary.clone(),
            secondaries: secondaries.clone(),
        },
    ]);
    steps.extend(secondary_steps(&primary, &secondaries));
    steps
}

/// Steps 5 and 6 of the procedure for each secondary.
fn secondary_steps(primary: &str, secondaries: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    for s in secondaries {
        steps.extend([
            Step::ActivateSecondaryRuntime { node: s.clone() },
            Step::CopyCertificate {
                from: primary.to_string(),
                to: s.clone(),
            },
            Step::StartSecondary { node: s.clone() },
            Step::AwaitStandby { node: s.clone() },
        ]);
    }
    steps
}

/// Whether a run may be parked (paused or stopped) right after `step`: not
/// inside a hand-over, where the group has no active node (after the
/// primary's stop, until the takeover) or may be about to have two (after
/// create+start, until the old secondaries are down).
pub fn safe_to_park_after(step: &Step) -> bool {
    !matches!(step, Step::StopPrimary { .. } | Step::CreateAndStart { .. })
}

/// Names `--pause-before` accepts: steps that start at a safe point.
pub fn pausable_step_names(steps: &[Step]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = steps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || safe_to_park_after(&steps[i - 1]))
        .map(|(_, s)| s.name())
        .collect();
    names.dedup();
    names
}

/// Whether every destructive step comes after a verified backup: the gate
/// the executor relies on, checked on every plan it runs.
pub fn gates_hold(steps: &[Step]) -> bool {
    let verified = steps
        .iter()
        .position(|s| matches!(s, Step::VerifyBackup { .. }));
    steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.destructive())
        .all(|(i, _)| verified.is_some_and(|v| v < i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(secondaries: usize) -> Group {
        crate::testing::sample_group(secondaries)
    }

    #[test]
    fn plan_follows_the_procedure_and_stages_first() {
        let steps = build_plan(&group(1));
        let procedures: Vec<u8> = steps.iter().map(Step::procedure).collect();
        let mut sorted = procedures.clone();
        sorted.sort();
        assert_eq!(procedures, sorted, "steps follow the procedure's order");
        assert_eq!(steps[0], Step::StageRuntime { node: "a".into() });
        assert_eq!(steps[1], Step::StageRuntime { node: "s0".into() });
        // The pre-copy base while the primary still runs, then its stop.
        assert_eq!(steps[2], Step::BaseBackup { node: "a".into() });
        assert_eq!(steps[3], Step::StopPrimary { node: "a".into() });
        assert!(steps.contains(&Step::DropSchema));
        assert_eq!(
            steps.last(),
            Some(&Step::AwaitStandby { node: "s0".into() })
        );
        assert!(gates_hold(&steps));
    }

    #[test]
    fn rollback_restores_only_after_verifying_and_never_stages() {
        let steps = build_rollback_plan(&group(1));
        assert!(gates_hold(&steps));
        assert!(!steps.iter().any(|s| matches!(
            s,
            Step::StageRuntime { .. } | Step::BaseBackup { .. } | Step::Backup { .. }
        )));
        let verify = steps
            .iter()
            .position(|s| matches!(s, Step::VerifyBackup { .. }))
            .unwrap();
        let restore = steps
            .iter()
            .position(|s| matches!(s, Step::RestoreBackup { .. }))
            .unwrap();
        let create = steps
            .iter()
            .position(|s| matches!(s, Step::CreateAndStart { .. }))
            .unwrap();
        assert!(verify < restore && restore < create);
    }

    #[test]
    fn every_secondary_gets_its_steps() {
        let steps = build_plan(&group(2));
        for s in ["s0", "s1"] {
            assert!(steps.contains(&Step::CopyCertificate {
                from: "a".into(),
                to: s.into()
            }));
            assert!(steps.contains(&Step::AwaitStandby { node: s.into() }));
        }
    }

    #[test]
    fn gate_detects_destructive_step_before_verified_backup() {
        let mut steps = build_plan(&group(1));
        let drop = steps.iter().position(|s| *s == Step::DropSchema).unwrap();
        let step = steps.remove(drop);
        steps.insert(2, step);
        assert!(!gates_hold(&steps));
    }

    #[test]
    fn steps_round_trip_through_json() {
        for step in build_plan(&group(2)) {
            let v = serde_json::to_value(&step).unwrap();
            assert_eq!(serde_json::from_value::<Step>(v).unwrap(), step);
        }
    }
}
