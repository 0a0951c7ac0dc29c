//! `<state>/hub.json`: what the agent needs to find its hub again after a
//! restart (which process, since when, where its output begins).

use serde::{Deserialize, Serialize};

/// `<state>/hub.json`: the process the agent supervises. Never holds the
/// JDBC URI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubRecord {
    /// Process id; also the process group id.
    pub pid: u32,
    /// Field 22 of /proc/<pid>/stat, to tell a re-used pid apart.
    pub start_time_ticks: u64,
    /// START or CREATE_AND_START.
    pub mode: String,
    /// HA node name.
    pub node: String,
    /// When it was started.
    pub started_at_unix_ms: i64,
    /// Size of hub.log when this process started: the role probe reads from here.
    pub log_offset: u64,
    /// Length of the file a `file` role probe follows when this process
    /// started (absent in records of older agents: the whole file counts).
    #[serde(default)]
    pub probe_offset: u64,
}
