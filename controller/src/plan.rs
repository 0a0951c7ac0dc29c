//! The upgrade plan as data: the steps `plan` prints and `upgrade` executes,
//! and the preflight findings. Everything here is a pure function of the
//! inventory and the observed state, so it is tested without I/O.

use crate::inventory::{Group, Role};
use serde::{Deserialize, Serialize};

/// One idempotent, journaled step. `procedure` is the step of the manual
/// procedure (DESIGN.md) it belongs to; 0 is preparation before any outage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Upload and unpack the new runtime beside the old one (no outage).
    StageRuntime {
        /// Node.
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
            Step::StageRuntime { .. } => 0,
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

/// What the agents and the database showed before planning.
#[derive(Debug, Clone)]
pub struct Observed {
    /// One entry per inventory node, in inventory order.
    pub nodes: Vec<ObservedNode>,
    /// Database reachable and the orchestration schema present; `Err` holds why not.
    pub database: Result<bool, String>,
}

/// What one node's agent showed.
#[derive(Debug, Clone)]
pub struct ObservedNode {
    /// HA node name.
    pub name: String,
    /// Role the inventory gives it.
    pub role: Role,
    /// The agent's answer, or why there was none.
    pub status: Result<NodeFacts, String>,
}

/// The parts of an agent's Status that planning needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Process running.
    pub running: bool,
    /// "active", "standby" or "unknown".
    pub role: String,
    /// Active runtime version.
    pub active_runtime: String,
    /// Staged runtime versions.
    pub staged: Vec<String>,
    /// Certificate store SHA-256; empty when absent.
    pub certificate_sha256: String,
    /// Free bytes of the agent's state dir (staging, backups).
    pub free_state: u64,
    /// Free bytes where runtimes are unpacked (on a Docker host: where the
    /// engine keeps images).
    pub free_install: u64,
    /// That place, as the agent reported it.
    pub install_path: String,
    /// Size of appdata (what a backup holds at most).
    pub appdata_bytes: u64,
    /// HA node name the agent last started its hub as; empty if unknown.
    pub node: String,
    /// The hub process is stopped by a signal: alive, but it serves nothing
    /// and cannot take over.
    pub frozen: bool,
    /// Runtime layout the agent is configured with ("plain" or "vendor").
    pub layout: String,
    /// What `{runtime}` resolves to for the active version.
    pub runtime_dir: String,
    /// The hub's settings file (HIGHBYTE_SETTINGS_FILE).
    pub settings_file: String,
    /// Why the settings do not bind the hub to the configured appdata; empty when they do.
    pub settings_problem: String,
    /// `directories.appData` resolved.
    pub app_data: String,
    /// Where store-and-forward files are written.
    pub store_forward_dir: String,
    /// `directories.storeForwardData` is unset: they live in the runtime directory.
    pub store_forward_in_runtime: bool,
}

/// A preflight finding; any `blocking` one refuses the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Refuses the upgrade.
    pub blocking: bool,
    /// Does not refuse, but an operator must read it.
    #[serde(default)]
    pub warning: bool,
    /// Which check.
    pub check: &'static str,
    /// Node, or empty for group-wide checks.
    pub node: String,
    /// What was found.
    pub message: String,
}

/// Runtime archive being rolled out.
#[derive(Debug, Clone)]
pub struct Target {
    /// Version.
    pub version: String,
    /// Archive size in bytes.
    pub archive_bytes: u64,
    /// An older target than what runs is planned (with a warning) instead
    /// of refused.
    pub allow_downgrade: bool,
}

/// Room a staging upload needs on a host: the archive, and its unpacked
/// tree (assumed at most four times the archive).
pub fn staging_room(archive_bytes: u64) -> (u64, u64) {
    (archive_bytes, archive_bytes.saturating_mul(4))
}

/// All preflight checks over the observed state.
pub fn preflight(observed: &Observed, target: &Target) -> Vec<Finding> {
    let mut out = Vec::new();
    let ok = |check: &'static str, node: &str, message: String| Finding {
        blocking: false,
        warning: false,
        check,
        node: node.to_string(),
        message,
    };
    let bad = |check: &'static str, node: &str, message: String| Finding {
        blocking: true,
        warning: false,
        check,
        node: node.to_string(),
        message,
    };
    let warn = |check: &'static str, node: &str, message: String| Finding {
        blocking: false,
        warning: true,
        check,
        node: node.to_string(),
        message,
    };
    match &observed.database {
        Ok(true) => out.push(ok(
            "database",
            "",
            "reachable, orchestration schema present".into(),
        )),
        Ok(false) => out.push(bad(
            "database",
            "",
            "the orchestration schema is missing: the group is not running in HA".into(),
        )),
        Err(e) => out.push(bad("database", "", format!("unreachable: {e}"))),
    }
    let mut versions = std::collections::BTreeSet::new();
    for n in &observed.nodes {
        let facts = match &n.status {
            Ok(f) => f,
            Err(e) => {
                out.push(bad("agent", &n.name, format!("agent unreachable: {e}")));
                continue;
            }
        };
        out.push(ok("agent", &n.name, "reachable".into()));
        if !facts.node.is_empty() && facts.node != n.name {
            out.push(bad(
                "node",
                &n.name,
                format!(
                    "the agent at this address runs HA node {:?}, not {:?}: check the inventory's agent addresses",
                    facts.node, n.name
                ),
            ));
        }
        let expected = match n.role {
            Role::Primary => "active",
            Role::Secondary => "standby",
        };
        if !facts.running {
            out.push(bad(
                "role",
                &n.name,
                format!("hub is not running (expected {expected})"),
            ));
        } else if facts.frozen {
            out.push(bad(
                "role",
                &n.name,
                "hub process is frozen (stopped by a signal): it serves nothing and cannot take over".into(),
            ));
        } else if facts.role != expected {
            out.push(bad(
                "role",
                &n.name,
                format!("hub is {} (expected {expected})", facts.role),
            ));
        } else {
            out.push(ok("role", &n.name, format!("{expected} as expected")));
        }
        if n.role == Role::Primary {
            if facts.certificate_sha256.is_empty() {
                out.push(bad(
                    "certificate",
                    &n.name,
                    "no certificate store in appdata: secondaries could not decrypt shared secrets"
                        .into(),
                ));
            } else {
                out.push(ok(
                    "certificate",
                    &n.name,
                    "certificate store present".into(),
                ));
            }
        }
        settings_findings(facts, &n.name, &mut out, ok, bad, warn);
        if facts.active_runtime.is_empty() {
            out.push(bad(
                "version",
                &n.name,
                "no active runtime (`current` link missing)".into(),
            ));
        } else if facts.active_runtime == target.version {
            out.push(bad(
                "version",
                &n.name,
                format!("already runs {}: nothing to upgrade", target.version),
            ));
        } else if crate::version::is_downgrade(&facts.active_runtime, &target.version) {
            let why = format!(
                "{} is older than {}, which runs now: an older hub may not read a project saved by a newer one; to go back after an upgrade, `hubshift rollback --run ID` restores the backup taken before it",
                target.version, facts.active_runtime
            );
            if target.allow_downgrade {
                out.push(warn(
                    "version",
                    &n.name,
                    format!("downgrade as asked (--allow-downgrade): {why}"),
                ));
            } else {
                out.push(bad(
                    "version",
                    &n.name,
                    format!("{why}; pass --allow-downgrade to install it anyway"),
                ));
            }
        }
        versions.insert(facts.active_runtime.clone());
        let (archive, unpacked) = staging_room(target.archive_bytes);
        let already = facts.staged.contains(&target.version);
        let mut need_state = if already { 0 } else { archive };
        if n.role == Role::Primary {
            need_state = need_state.saturating_add(facts.appdata_bytes);
        }
        if facts.free_state < need_state {
            out.push(bad(
                "disk",
                &n.name,
                format!(
                    "state dir has {} free, needs {} (staging{})",
                    human_bytes(facts.free_state),
                    human_bytes(need_state),
                    if n.role == Role::Primary {
                        " + backup"
                    } else {
                        ""
                    }
                ),
            ));
        } else if !already && facts.free_install < unpacked {
            out.push(bad(
                "disk",
                &n.name,
                format!(
                    "{} has {} free, needs about {} for the new runtime",
                    if facts.install_path.is_empty() {
                        "the install root".to_string()
                    } else {
                        facts.install_path.clone()
                    },
                    human_bytes(facts.free_install),
                    human_bytes(unpacked)
                ),
            ));
        } else {
            out.push(ok("disk", &n.name, "room for staging and backup".into()));
        }
    }
    if versions.len() > 1 {
        out.push(bad(
            "version",
            "",
            format!(
                "nodes run different versions ({}): bring them to one version first",
                versions.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    } else if let Some(v) = versions.into_iter().next().filter(|v| !v.is_empty()) {
        out.push(ok(
            "version",
            "",
            format!("all nodes run {v}; target {}", target.version),
        ));
    }
    out
}

/// The hub's layout and settings as the agent resolved them: settings that
/// would let the hub run on another appData (a release's template, with an
/// empty project) refuse the upgrade; store-and-forward files in the
/// runtime directory are allowed (the agent backs them up and carries them
/// across the switch) but said loudly.
fn settings_findings(
    facts: &NodeFacts,
    node: &str,
    out: &mut Vec<Finding>,
    ok: impl Fn(&'static str, &str, String) -> Finding,
    bad: impl Fn(&'static str, &str, String) -> Finding,
    warn: impl Fn(&'static str, &str, String) -> Finding,
) {
    let runtime = if facts.runtime_dir.is_empty() {
        "unresolved".to_string()
    } else {
        facts.runtime_dir.clone()
    };
    out.push(ok(
        "layout",
        node,
        format!("{} layout: {{runtime}} = {runtime}", facts.layout),
    ));
    if !facts.settings_problem.is_empty() {
        out.push(bad("settings", node, facts.settings_problem.clone()));
        return;
    }
    out.push(ok(
        "settings",
        node,
        format!(
            "{} binds the hub to appData {}",
            facts.settings_file, facts.app_data
        ),
    ));
    if facts.store_forward_in_runtime {
        out.push(warn(
            "store-forward",
            node,
            format!(
                "directories.storeForwardData is unset in {}: store-and-forward files live in the runtime directory {}; \
                 they are backed up and carried into the new runtime directory at the switch, but set the key to a \
                 directory inside {} to keep them out of runtimes/",
                facts.settings_file, facts.store_forward_dir, facts.app_data
            ),
        ));
    } else {
        out.push(ok(
            "store-forward",
            node,
            format!("store-and-forward files in {}", facts.store_forward_dir),
        ));
    }
}

/// `12.3 MiB` style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(secondaries: usize) -> Group {
        crate::testing::sample_group(secondaries)
    }

    fn healthy() -> Observed {
        let facts = |role: &str| NodeFacts {
            running: true,
            role: role.into(),
            active_runtime: "1.0".into(),
            staged: vec!["1.0".into()],
            certificate_sha256: "ab".repeat(32),
            free_state: 10 << 30,
            free_install: 10 << 30,
            install_path: "/opt/hb/runtimes".into(),
            appdata_bytes: 1 << 20,
            node: String::new(),
            frozen: false,
            layout: "vendor".into(),
            runtime_dir: "/opt/hb/runtimes/1.0/HighByte-Intelligence-Hub-1.0/runtime".into(),
            settings_file: "/opt/hb/appData/intelligencehub-settings.json".into(),
            settings_problem: String::new(),
            app_data: "/opt/hb/appData".into(),
            store_forward_dir: "/opt/hb/appData/sf".into(),
            store_forward_in_runtime: false,
        };
        Observed {
            nodes: vec![
                ObservedNode {
                    name: "a".into(),
                    role: Role::Primary,
                    status: Ok(facts("active")),
                },
                ObservedNode {
                    name: "s0".into(),
                    role: Role::Secondary,
                    status: Ok(facts("standby")),
                },
            ],
            database: Ok(true),
        }
    }

    fn target() -> Target {
        Target {
            version: "2.0".into(),
            archive_bytes: 1 << 20,
            allow_downgrade: false,
        }
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
        assert_eq!(steps[2], Step::StopPrimary { node: "a".into() });
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
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::StageRuntime { .. } | Step::Backup { .. }))
        );
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

    #[test]
    fn healthy_group_passes_preflight() {
        let findings = preflight(&healthy(), &target());
        assert!(findings.iter().all(|f| !f.blocking), "{findings:#?}");
    }

    #[test]
    fn preflight_blocks_each_problem() {
        type Mutate = fn(&mut Observed);
        let cases: Vec<(&str, Mutate)> = vec![
            ("database", |o| o.database = Err("refused".into())),
            ("database", |o| o.database = Ok(false)),
            ("node", |o| {
                if let Ok(f) = &mut o.nodes[0].status {
                    f.node = "s0".into();
                }
            }),
            ("agent", |o| {
                o.nodes[1].status = Err("connection refused".into())
            }),
            ("settings", |o| {
                if let Ok(f) = &mut o.nodes[1].status {
                    f.settings_problem =
                        "`directories.appData` is unset in /x: set it to \"/opt/hb/appData\""
                            .into();
                }
            }),
            ("role", |o| {
                if let Ok(f) = &mut o.nodes[1].status {
                    f.frozen = true;
                }
            }),
            ("role", |o| {
                if let Ok(f) = &mut o.nodes[0].status {
                    f.role = "standby".into();
                }
            }),
            ("role", |o| {
                if let Ok(f) = &mut o.nodes[1].status {
                    f.running = false;
                }
            }),
            ("certificate", |o| {
                if let Ok(f) = &mut o.nodes[0].status {
                    f.certificate_sha256.clear();
                }
            }),
            ("disk", |o| {
                if let Ok(f) = &mut o.nodes[1].status {
                    f.free_state = 10;
                }
            }),
            ("version", |o| {
                if let Ok(f) = &mut o.nodes[1].status {
                    f.active_runtime = "1.1".into();
                }
            }),
            ("version", |o| {
                for n in &mut o.nodes {
                    if let Ok(f) = &mut n.status {
                        f.active_runtime = "2.0".into();
                    }
                }
            }),
        ];
        for (check, mutate) in cases {
            let mut o = healthy();
            mutate(&mut o);
            let findings = preflight(&o, &target());
            assert!(
                findings.iter().any(|f| f.blocking && f.check == check),
                "{check}: {findings:#?}"
            );
        }
    }

    #[test]
    fn too_little_room_for_the_runtime_names_the_place() {
        let mut o = healthy();
        if let Ok(f) = &mut o.nodes[1].status {
            f.free_install = 10;
            f.install_path = "/var/lib/docker".into();
        }
        let findings = preflight(&o, &target());
        let disk = findings
            .iter()
            .find(|f| f.blocking && f.check == "disk")
            .unwrap_or_else(|| panic!("{findings:#?}"));
        assert!(
            disk.message.starts_with("/var/lib/docker has 10 B free"),
            "{disk:?}"
        );
    }

    #[test]
    fn store_forward_in_the_runtime_dir_is_a_warning_not_a_refusal() {
        let mut o = healthy();
        if let Ok(f) = &mut o.nodes[0].status {
            f.store_forward_in_runtime = true;
            f.store_forward_dir = f.runtime_dir.clone();
        }
        let findings = preflight(&o, &target());
        assert!(findings.iter().all(|f| !f.blocking), "{findings:#?}");
        let w: Vec<_> = findings.iter().filter(|f| f.warning).collect();
        assert_eq!(w.len(), 1, "{findings:#?}");
        assert_eq!((w[0].check, w[0].node.as_str()), ("store-forward", "a"));
        assert!(w[0].message.contains("directories.storeForwardData"));
        // The resolved paths are shown.
        assert!(
            findings.iter().any(|f| f.check == "layout"
                && f.message.contains("HighByte-Intelligence-Hub-1.0/runtime"))
        );
    }

    #[test]
    fn an_older_target_is_refused_unless_allowed_and_then_warned() {
        let mut older = target();
        older.version = "0.9".into();
        let findings = preflight(&healthy(), &older);
        let refused: Vec<_> = findings
            .iter()
            .filter(|f| f.blocking && f.check == "version")
            .collect();
        assert_eq!(refused.len(), 2, "one per node: {findings:#?}");
        assert!(refused[0].message.contains("0.9 is older than 1.0"));
        assert!(refused[0].message.contains("--allow-downgrade"));
        assert!(refused[0].message.contains("hubshift rollback --run"));
        older.allow_downgrade = true;
        let findings = preflight(&healthy(), &older);
        assert!(findings.iter().all(|f| !f.blocking), "{findings:#?}");
        assert_eq!(
            findings
                .iter()
                .filter(|f| f.warning && f.check == "version")
                .count(),
            2
        );
        // Numbered as the vendor numbers them: 1.10 is newer than 1.0 and 1.9.
        let mut newer = target();
        newer.version = "1.10".into();
        assert!(preflight(&healthy(), &newer).iter().all(|f| !f.blocking));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
