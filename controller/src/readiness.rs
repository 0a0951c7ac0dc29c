//! Preflight as pure functions: what the agents and the database showed
//! (`Observed`), judged for a run's kind — findings that refuse it
//! (blocking), warn, or say what was checked.

use crate::inventory::Role;
use serde::Serialize;

/// What the agents and the database showed before planning.
#[derive(Debug, Clone)]
pub struct Observed {
    /// One entry per inventory node, in inventory order.
    pub nodes: Vec<ObservedNode>,
    /// Database reachable and the orchestration schema present; `Err` holds why not.
    pub database: Result<bool, String>,
}

impl Observed {
    /// Every node answered, running `version` already: nothing to upgrade.
    pub fn all_run(&self, version: &str) -> bool {
        self.nodes
            .iter()
            .all(|n| n.status.as_ref().is_ok_and(|f| f.active_runtime == version))
    }
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

/// A finding that only says what was checked.
fn ok(check: &'static str, node: &str, message: String) -> Finding {
    Finding {
        blocking: false,
        warning: false,
        check,
        node: node.to_string(),
        message,
    }
}

/// A finding that refuses the run.
fn bad(check: &'static str, node: &str, message: String) -> Finding {
    Finding {
        blocking: true,
        ..ok(check, node, message)
    }
}

/// A finding an operator must read, that does not refuse.
fn warn(check: &'static str, node: &str, message: String) -> Finding {
    Finding {
        warning: true,
        ..ok(check, node, message)
    }
}

/// The database: reachable with its orchestration schema, `missing` when
/// the schema is not there (each kind of run judges that itself), refused
/// when unreachable.
fn database_finding(database: &Result<bool, String>, missing: Finding) -> Finding {
    match database {
        Ok(true) => ok(
            "database",
            "",
            "reachable, orchestration schema present".into(),
        ),
        Ok(false) => missing,
        Err(e) => bad("database", "", format!("unreachable: {e}")),
    }
}

/// The agent at a node's address answers for another HA node: a wrong
/// inventory, refused by every kind of run.
fn other_node(facts: &NodeFacts, name: &str) -> Option<Finding> {
    (!facts.node.is_empty() && facts.node != name).then(|| {
        bad(
            "node",
            name,
            format!(
                "the agent at this address runs HA node {:?}, not {:?}: check the inventory's agent addresses",
                facts.node, name
            ),
        )
    })
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
    /// What the runtime archive says of its own version (a tar.gz read on
    /// this machine; None when not read, e.g. a zip or an image).
    pub declared: Option<hubshift_common::declared::InArchive>,
}

/// Room a staging upload needs on a host: the archive, and its unpacked
/// tree (assumed at most four times the archive).
pub fn staging_room(archive_bytes: u64) -> (u64, u64) {
    (archive_bytes, archive_bytes.saturating_mul(4))
}

/// All preflight checks over the observed state.
pub fn preflight(observed: &Observed, target: &Target) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(database_finding(
        &observed.database,
        bad(
            "database",
            "",
            "the orchestration schema is missing: the group is not running in HA".into(),
        ),
    ));
    if let Some(f) = declared_finding(target) {
        out.push(f);
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
        out.extend(other_node(facts, &n.name));
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
        settings_findings(facts, &n.name, &mut out);
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

/// What the archive declares against the target version: a contradiction
/// refuses (the runtime would be installed as a version it is not), no
/// declaration at all warns (nothing can check it).
fn declared_finding(target: &Target) -> Option<Finding> {
    let d = target.declared.as_ref()?;
    let finding = |blocking: bool, warning: bool, message: String| Finding {
        blocking,
        warning,
        ..ok("runtime", "", message)
    };
    use hubshift_common::declared::matches;
    if let Some((v, by)) = d.found.iter().find(|(v, _)| !matches(v, &target.version)) {
        return Some(finding(
            true,
            false,
            format!(
                "the runtime archive declares version {v} ({by}), not {}: use the archive of {}, or --version {v}",
                target.version, target.version
            ),
        ));
    }
    Some(match d.found.first() {
        Some((v, by)) => finding(false, false, format!("the archive declares {v} ({by})")),
        None if d.jar => finding(
            false,
            false,
            "the runtime jar's manifest is checked against the version when it is staged".into(),
        ),
        None => finding(
            false,
            true,
            format!(
                "the runtime archive declares no version (no VERSION file, release folder or runtime jar): nothing can check that it is {}",
                target.version
            ),
        ),
    })
}

/// The rollback's preflight. The group may be half way through the upgrade
/// it reverses (a node stopped, the old secondary shut down on the new
/// schema), so roles and a missing schema only warn; but every agent must
/// answer, no hub may be frozen, the settings must bind each hub to its
/// appData, and `back_to` must still be staged on every node.
pub fn rollback_preflight(observed: &Observed, back_to: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(database_finding(
        &observed.database,
        warn(
            "database",
            "",
            "the orchestration schema is missing: the rollback's HA create makes it again".into(),
        ),
    ));
    for n in &observed.nodes {
        let facts = match &n.status {
            Ok(f) => f,
            Err(e) => {
                out.push(bad("agent", &n.name, format!("agent unreachable: {e}")));
                continue;
            }
        };
        out.extend(other_node(facts, &n.name));
        if facts.running && facts.frozen {
            out.push(bad(
                "role",
                &n.name,
                "hub process is frozen (stopped by a signal): it serves nothing and cannot take over".into(),
            ));
        } else if !facts.running {
            out.push(warn(
                "role",
                &n.name,
                "hub is not running: the rollback starts it on the version it goes back to".into(),
            ));
        } else if !matches!(facts.role.as_str(), "active" | "standby") {
            out.push(warn("role", &n.name, format!("hub is {}", facts.role)));
        } else {
            out.push(ok("role", &n.name, format!("{} and serving", facts.role)));
        }
        settings_findings(facts, &n.name, &mut out);
        if facts.staged.iter().any(|v| v == back_to) {
            out.push(ok(
                "version",
                &n.name,
                format!("runs {}, {back_to} staged", facts.active_runtime),
            ));
        } else {
            out.push(bad(
                "version",
                &n.name,
                format!("runtime {back_to} is no longer staged"),
            ));
        }
    }
    out
}

/// The hub's layout and settings as the agent resolved them: settings that
/// would let the hub run on another appData (a release's template, with an
/// empty project) refuse the upgrade; store-and-forward files in the
/// runtime directory are allowed (the agent backs them up and carries them
/// across the switch) but said loudly.
fn settings_findings(facts: &NodeFacts, node: &str, out: &mut Vec<Finding>) {
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
            declared: None,
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

    #[test]
    fn a_rollback_of_a_half_done_upgrade_warns_but_a_frozen_hub_or_a_missing_runtime_refuses() {
        let mut o = healthy();
        o.database = Ok(false);
        if let Ok(f) = &mut o.nodes[1].status {
            f.running = false;
            f.role = "unknown".into();
        }
        let findings = rollback_preflight(&o, "1.0");
        assert!(findings.iter().all(|f| !f.blocking), "{findings:#?}");
        assert_eq!(
            findings.iter().filter(|f| f.warning).count(),
            2,
            "{findings:#?}"
        );
        let mut frozen = healthy();
        if let Ok(f) = &mut frozen.nodes[0].status {
            f.frozen = true;
        }
        assert!(
            rollback_preflight(&frozen, "1.0")
                .iter()
                .any(|f| f.blocking && f.check == "role" && f.message.contains("frozen"))
        );
        let gone = rollback_preflight(&healthy(), "0.9");
        assert_eq!(
            gone.iter()
                .filter(|f| f.blocking && f.message == "runtime 0.9 is no longer staged")
                .count(),
            2
        );
    }
}
