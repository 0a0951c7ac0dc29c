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
}

impl RunFacts {
    /// How long the group ran on one node: from the primary's stop until
    /// the last secondary was standby again.
    pub fn single_node_ms(&self) -> Option<u64> {
        match (self.primary_stopped_ms, self.standby_again_ms) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        }
    }
}

/// An outage window the run caused, as observed through the agents.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Window {
    /// 1: primary stop → takeover; 2: old secondary down → upgraded primary active.
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
                out.push(Window {
                    window,
                    start_ms,
                    end_ms,
                    duration_ms: end_ms.saturating_sub(start_ms),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
