//! A group's health, pure: what one look at its agents and database found
//! in, the numbers `/metrics` exports and the conditions that hold out; and
//! between two looks, the transitions worth an event. Unit-tested without
//! agents or a database.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What one node's agent showed (or why it showed nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLook {
    /// HA node name (from the inventory).
    pub name: String,
    /// The agent's answer, or why there was none.
    pub seen: Result<NodeSeen, String>,
}

/// The parts of a Status the health needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSeen {
    /// The hub process runs.
    pub running: bool,
    /// "active", "standby" or "unknown".
    pub role: String,
    /// Alive but not scheduled: serves nothing, takes over nothing.
    pub frozen: bool,
    /// Active runtime version (empty: none).
    pub version: String,
    /// Certificate store SHA-256 (empty: none).
    pub certificate_sha256: String,
}

impl NodeSeen {
    /// Serving as the active node.
    pub fn is_active(&self) -> bool {
        self.running && !self.frozen && self.role == "active"
    }

    /// Ready to take over.
    pub fn is_standby(&self) -> bool {
        self.running && !self.frozen && self.role == "standby"
    }
}

/// What the group's database showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseLook {
    /// The hubs' orchestration schema exists.
    pub schema_present: bool,
    /// Seconds since the active hub's heartbeat, when the inventory says how
    /// to read it (`heartbeat_query`) and it answered.
    pub heartbeat_age_secs: Option<f64>,
    /// A controller holds the group's lock (an upgrade is running).
    pub lock_held: bool,
    /// The newest run in the journal.
    pub last_run: Option<LastRun>,
}

/// The newest journaled run of the group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRun {
    /// Run id.
    pub id: String,
    /// upgrade, rollback.
    pub kind: String,
    /// Where it stands (done, failed, interrupted, ...).
    pub state: String,
    /// Its last change, Unix seconds.
    pub updated_unix: Option<f64>,
    /// Its outage windows: number and seconds.
    pub windows: Vec<(u8, f64)>,
    /// It is not over: a resume, rollback or abandon is owed.
    pub unfinished: bool,
}

/// One look at a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLook {
    /// Inventory name.
    pub group: String,
    /// One entry per inventory node, in inventory order.
    pub nodes: Vec<NodeLook>,
    /// The database's answers, or why there were none.
    pub database: Result<DatabaseLook, String>,
    /// Blocking preflight findings that need no target: (check, message).
    pub blocking: Vec<(&'static str, String)>,
}

/// Why a group is not ready to upgrade, as a bounded label: a preflight
/// check's name, or one of these.
pub mod reason {
    /// The database did not answer.
    pub const DATABASE: &str = "database";
    /// An upgrade holds the group's lock.
    pub const LOCK_HELD: &str = "lock_held";
    /// The newest run is not over.
    pub const RUN_UNFINISHED: &str = "run_unfinished";
    /// An agent did not answer.
    pub const AGENT_UNREACHABLE: &str = "agent_unreachable";
}

/// The numbers of one group, as `/metrics` exports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupHealth {
    /// Nodes in the inventory.
    pub nodes: usize,
    /// Agents that answered.
    pub reachable: usize,
    /// Nodes serving as active.
    pub active: usize,
    /// Nodes ready to take over.
    pub standby: usize,
    /// Reachable nodes per active runtime version (none: "").
    pub versions: BTreeMap<String, usize>,
    /// Every reachable node has the same, present certificate store.
    pub certificates_equal: bool,
    /// Nothing stands in the way of `hubshift upgrade`.
    pub ready: bool,
    /// The first reason it is not (a bounded label), else `None`.
    pub not_ready_reason: Option<&'static str>,
}

/// What holds true of a group that a person should hear about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum Condition {
    /// No node serves: data is not flowing.
    NoActive,
    /// More than one node serves: split brain.
    TwoActives,
    /// Nodes run different runtime versions.
    VersionSkew,
    /// The certificate stores differ (or one is missing).
    CertificatesDiffer,
    /// A node's agent does not answer.
    NodeUnreachable {
        /// Which node.
        node: String,
    },
    /// The group's database does not answer.
    DatabaseUnreachable,
}

impl Condition {
    /// The event name for the condition beginning.
    pub fn began(&self) -> &'static str {
        match self {
            Condition::NoActive => "group_lost_active",
            Condition::TwoActives => "group_two_actives",
            Condition::VersionSkew => "group_version_skew",
            Condition::CertificatesDiffer => "group_certificates_differ",
            Condition::NodeUnreachable { .. } => "node_unreachable",
            Condition::DatabaseUnreachable => "database_unreachable",
        }
    }

    /// The event name for the condition ending.
    pub fn ended(&self) -> &'static str {
        match self {
            Condition::NoActive => "group_active_again",
            Condition::TwoActives => "group_one_active_again",
            Condition::VersionSkew => "group_versions_equal_again",
            Condition::CertificatesDiffer => "group_certificates_equal_again",
            Condition::NodeUnreachable { .. } => "node_reachable_again",
            Condition::DatabaseUnreachable => "database_reachable_again",
        }
    }
}

/// Judges one look.
pub fn judge(look: &GroupLook) -> GroupHealth {
    let seen: Vec<&NodeSeen> = look
        .nodes
        .iter()
        .filter_map(|n| n.seen.as_ref().ok())
        .collect();
    let mut versions = BTreeMap::new();
    for s in &seen {
        *versions.entry(s.version.clone()).or_insert(0) += 1;
    }
    let first_cert = seen.first().map(|s| s.certificate_sha256.as_str());
    let certificates_equal = !seen.is_empty()
        && seen.iter().all(|s| {
            !s.certificate_sha256.is_empty() && Some(s.certificate_sha256.as_str()) == first_cert
        });
    let not_ready_reason = not_ready_reason(look);
    GroupHealth {
        nodes: look.nodes.len(),
        reachable: seen.len(),
        active: seen.iter().filter(|s| s.is_active()).count(),
        standby: seen.iter().filter(|s| s.is_standby()).count(),
        versions,
        certificates_equal,
        ready: not_ready_reason.is_none(),
        not_ready_reason,
    }
}

fn not_ready_reason(look: &GroupLook) -> Option<&'static str> {
    let db = match &look.database {
        Err(_) => return Some(reason::DATABASE),
        Ok(db) => db,
    };
    if db.lock_held {
        return Some(reason::LOCK_HELD);
    }
    if db.last_run.as_ref().is_some_and(|r| r.unfinished) {
        return Some(reason::RUN_UNFINISHED);
    }
    if look.nodes.iter().any(|n| n.seen.is_err()) {
        return Some(reason::AGENT_UNREACHABLE);
    }
    look.blocking.first().map(|(check, _)| *check)
}

/// The conditions that hold for a group, given its judgement.
pub fn conditions(look: &GroupLook, health: &GroupHealth) -> BTreeSet<Condition> {
    let mut out = BTreeSet::new();
    // Nothing can be said of the roles when no agent answered.
    if health.reachable > 0 {
        if health.active == 0 {
            out.insert(Condition::NoActive);
        }
        if health.active > 1 {
            out.insert(Condition::TwoActives);
        }
        if health.versions.len() > 1 {
            out.insert(Condition::VersionSkew);
        }
        if !health.certificates_equal {
            out.insert(Condition::CertificatesDiffer);
        }
    }
    for n in &look.nodes {
        if n.seen.is_err() {
            out.insert(Condition::NodeUnreachable {
                node: n.name.clone(),
            });
        }
    }
    if look.database.is_err() {
        out.insert(Condition::DatabaseUnreachable);
    }
    out
}

/// An event between two looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Event name (`group_lost_active`, `group_healthy`, ...).
    pub event: &'static str,
    /// The condition it is about; `None` for `group_healthy`.
    pub condition: Option<Condition>,
}

/// The transitions from `before` (`None`: the first look) to `now`: each
/// condition that began or ended, and `group_healthy` when the last one
/// ended (or, at the first look, when none holds).
pub fn transitions(
    before: Option<&BTreeSet<Condition>>,
    now: &BTreeSet<Condition>,
) -> Vec<Transition> {
    let empty = BTreeSet::new();
    let was = before.unwrap_or(&empty);
    let mut out = Vec::new();
    for c in was.difference(now) {
        out.push(Transition {
            event: c.ended(),
            condition: Some(c.clone()),
        });
    }
    for c in now.difference(was) {
        out.push(Transition {
            event: c.began(),
            condition: Some(c.clone()),
        });
    }
    let healthy_now = now.is_empty();
    let healthy_before = before.is_some_and(|b| b.is_empty());
    if healthy_now && !healthy_before {
        out.push(Transition {
            event: "group_healthy",
            condition: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str, version: &str, cert: &str) -> NodeLook {
        NodeLook {
            name: name.into(),
            seen: Ok(NodeSeen {
                running: true,
                role: role.into(),
                frozen: false,
                version: version.into(),
                certificate_sha256: cert.into(),
            }),
        }
    }

    fn look(nodes: Vec<NodeLook>) -> GroupLook {
        GroupLook {
            group: "plant".into(),
            nodes,
            database: Ok(DatabaseLook {
                schema_present: true,
                ..Default::default()
            }),
            blocking: vec![],
        }
    }

    #[test]
    fn a_healthy_pair_is_one_active_one_standby_ready() {
        let l = look(vec![
            node("a", "active", "4.2.0", "c1"),
            node("b", "standby", "4.2.0", "c1"),
        ]);
        let h = judge(&l);
        assert_eq!((h.active, h.standby, h.reachable, h.nodes), (1, 1, 2, 2));
        assert!(h.certificates_equal && h.ready && h.not_ready_reason.is_none());
        assert_eq!(h.versions, BTreeMap::from([("4.2.0".to_string(), 2)]));
        assert!(conditions(&l, &h).is_empty());
    }

    #[test]
    fn a_frozen_active_does_not_count_and_two_actives_do() {
        let mut l = look(vec![
            node("a", "active", "4.2.0", "c1"),
            node("b", "standby", "4.2.0", "c1"),
        ]);
        if let Ok(s) = &mut l.nodes[0].seen {
            s.frozen = true;
        }
        let h = judge(&l);
        assert_eq!((h.active, h.standby), (0, 1));
        assert!(conditions(&l, &h).contains(&Condition::NoActive));
        let l = look(vec![
            node("a", "active", "4.2.0", "c1"),
            node("b", "active", "4.2.0", "c1"),
        ]);
        let h = judge(&l);
        assert_eq!(h.active, 2);
        assert!(conditions(&l, &h).contains(&Condition::TwoActives));
    }

    #[test]
    fn skew_certificates_and_unreachable_nodes_are_conditions() {
        let mut l = look(vec![
            node("a", "active", "4.3.0", "c1"),
            node("b", "standby", "4.2.0", "c2"),
            node("c", "standby", "4.2.0", "c1"),
        ]);
        l.nodes[2].seen = Err("connection refused".into());
        let h = judge(&l);
        assert_eq!(h.versions.len(), 2);
        assert!(!h.certificates_equal);
        assert_eq!(h.not_ready_reason, Some(reason::AGENT_UNREACHABLE));
        let c = conditions(&l, &h);
        assert!(c.contains(&Condition::VersionSkew));
        assert!(c.contains(&Condition::CertificatesDiffer));
        assert!(c.contains(&Condition::NodeUnreachable { node: "c".into() }));
    }

    #[test]
    fn not_ready_names_the_first_reason() {
        let mut l = look(vec![
            node("a", "active", "4.2.0", "c1"),
            node("b", "standby", "4.2.0", "c1"),
        ]);
        l.blocking = vec![("roles", "x".into())];
        assert_eq!(judge(&l).not_ready_reason, Some("roles"));
        if let Ok(db) = &mut l.database {
            db.lock_held = true;
        }
        assert_eq!(judge(&l).not_ready_reason, Some(reason::LOCK_HELD));
        l.database = Err("refused".into());
        let h = judge(&l);
        assert_eq!(h.not_ready_reason, Some(reason::DATABASE));
        assert!(conditions(&l, &h).contains(&Condition::DatabaseUnreachable));
    }

    #[test]
    fn transitions_say_what_began_and_ended_and_when_health_returns() {
        let healthy = BTreeSet::new();
        let first = transitions(None, &healthy);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].event, "group_healthy");
        assert!(transitions(Some(&healthy), &healthy).is_empty());
        let lost = BTreeSet::from([Condition::NoActive]);
        let t = transitions(Some(&healthy), &lost);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].event, "group_lost_active");
        assert!(transitions(Some(&lost), &lost).is_empty());
        let back = transitions(Some(&lost), &healthy);
        let names: Vec<_> = back.iter().map(|t| t.event).collect();
        assert_eq!(names, ["group_active_again", "group_healthy"]);
        let two = BTreeSet::from([
            Condition::TwoActives,
            Condition::NodeUnreachable { node: "b".into() },
        ]);
        let t = transitions(Some(&lost), &two);
        let names: BTreeSet<_> = t.iter().map(|t| t.event).collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "group_active_again",
                "group_two_actives",
                "node_unreachable"
            ])
        );
    }
}
