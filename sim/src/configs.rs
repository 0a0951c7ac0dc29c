//! The TOML files the sandbox writes, as typed structs serialised by the
//! `toml` crate: an agent's configuration (either driver) and the
//! controller's inventory (one group on a default database, or a fleet of
//! groups each with a `[groups.database]` of its own). They mirror the
//! parts of `hubshift-agent`'s and `hubshift`'s schemas the sandbox uses;
//! everything left out takes the reader's default.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An agent configuration file.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    /// `host:port` to listen on (`127.0.0.1:0`: any free port, written to
    /// `<state_dir>/agent.addr`).
    pub listen: String,
    /// mTLS.
    pub tls: AgentTls,
    /// Where the hub's files live.
    pub paths: AgentPaths,
    /// How the hub is run.
    pub hub: AgentHub,
    /// `[docker]`, for the docker driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<AgentDocker>,
    /// How the hub's HA role is read.
    pub role_probe: RoleProbe,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<AgentMetrics>,
}

/// `[metrics]` of an agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentMetrics {
    /// `host:port` (`127.0.0.1:0`: any free port, written to
    /// `<state_dir>/metrics.addr`).
    pub listen: String,
}

/// `[tls]` of an agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentTls {
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
    /// CA of the clients' certificates.
    pub client_ca: PathBuf,
    /// Client certificate names allowed in.
    pub allowed_clients: Vec<String>,
}

/// `[paths]` of an agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentPaths {
    /// The agent's own state (backups, hub.log, hub.json).
    pub state_dir: PathBuf,
    /// `runtimes/` and `current`.
    pub install_root: PathBuf,
    /// The hub's appData.
    pub appdata: PathBuf,
}

/// Where `{runtime}` is found in an unpacked release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The vendor's release layout (the runtime in its release folder).
    Vendor,
}

/// The agent's hub driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// Host processes.
    Process,
    /// Containers of the local Docker Engine.
    Docker,
}

/// `[hub]` of an agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentHub {
    /// Release layout (process driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Driver; the agent's default (process) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverKind>,
    /// HA `create` command template.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub create_command: Vec<String>,
    /// HA `start` command template.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub start_command: Vec<String>,
    /// Working directory template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Graceful stop before a kill.
    pub stop_timeout_secs: u64,
    /// How long `create` may take.
    pub create_timeout_secs: u64,
    /// Extra environment of the hub.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// How a docker hub is told its start mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerStartMode {
    /// Through the `START_MODE` environment variable.
    Env,
    /// Through a command override per mode.
    Command,
}

/// `[docker]` of an agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentDocker {
    /// Container name.
    pub container: String,
    /// Repository the runtime images are tagged in.
    pub image_repository: String,
    /// Network the container joins.
    pub network: String,
    /// Named appData volume (empty: a bind mount of `paths.appdata`).
    pub appdata_volume: String,
    /// Arguments after the image's entrypoint.
    pub args: Vec<String>,
    /// How the start mode reaches the hub.
    pub start_mode: DockerStartMode,
    /// Command for CREATE_AND_START (`start_mode = "command"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub create_and_start_command: Vec<String>,
    /// Command for START (`start_mode = "command"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub start_command: Vec<String>,
    /// Output line that says the HA schema was created.
    pub created_pattern: String,
}

/// How the role probe reads the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// From the hub's output.
    Log,
}

/// `[role_probe]` of an agent.
#[derive(Debug, Clone, Serialize)]
pub struct RoleProbe {
    /// Where the role is read.
    pub kind: ProbeKind,
    /// Pattern of an active hub.
    pub active_pattern: String,
    /// Pattern of a standby hub.
    pub standby_pattern: String,
}

impl RoleProbe {
    /// hubsim's role lines.
    pub fn hubsim_log() -> Self {
        Self {
            kind: ProbeKind::Log,
            active_pattern: "HA role: active".into(),
            standby_pattern: "HA role: standby".into(),
        }
    }
}

/// The controller's inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The default database; a fleet gives each group its own instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<InventoryDatabase>,
    /// The controller's TLS files.
    pub tls: InventoryTls,
    /// Timeouts, in seconds.
    pub timeouts: InventoryTimeouts,
    /// Controller-side backup copies.
    pub backups: InventoryBackups,
    /// HA groups.
    pub groups: Vec<InventoryGroup>,
}

/// A `[database]` (or `[groups.database]`) table.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryDatabase {
    /// File holding the PostgreSQL URL.
    pub url_file: PathBuf,
    /// Host the hubs reach the database on, when it is not the controller's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_host: Option<String>,
    /// How `hubshift watch` reads the hubs' heartbeat age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_query: Option<String>,
}

/// `[tls]` of the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryTls {
    /// CA of the agents' certificates.
    pub ca: PathBuf,
    /// Controller certificate.
    pub cert: PathBuf,
    /// Controller key.
    pub key: PathBuf,
}

/// `[timeouts]` of the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryTimeouts {
    /// Graceful stop of a hub.
    pub stop: u64,
    /// A standby taking over.
    pub takeover: u64,
    /// The hubs' own takeover time (hubsim's `--takeover-timeout`, whole
    /// seconds rounded up).
    pub hub_takeover: u64,
    /// A started hub becoming active.
    pub start: u64,
    /// The old secondary shutting itself down.
    pub secondary_shutdown: u64,
    /// A started secondary becoming standby.
    pub standby_join: u64,
    /// One agent call.
    pub rpc: u64,
    /// Writing or verifying a backup.
    pub backup: u64,
}

impl InventoryTimeouts {
    /// The sandbox's: generous for hubsim's timings, short enough that a
    /// stuck test ends.
    pub fn sandbox(timing: &crate::timing::SimTiming) -> Self {
        Self {
            stop: 10,
            takeover: 60,
            hub_takeover: timing.takeover_timeout.as_millis().div_ceil(1000) as u64,
            start: 60,
            secondary_shutdown: 10,
            standby_join: 60,
            rpc: 15,
            backup: 300,
        }
    }
}

/// `[backups]` of the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryBackups {
    /// Where the controller keeps its copies.
    pub copy_to: PathBuf,
    /// `false`: no pre-copy base (the benchmark's comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_copy: Option<bool>,
}

/// One `[[groups]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryGroup {
    /// Group name.
    pub name: String,
    /// Its nodes, the primary first.
    pub nodes: Vec<InventoryNode>,
    /// Its own database, replacing the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<InventoryDatabase>,
}

/// A node's role before an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Runs `create`.
    Primary,
    /// Standby.
    Secondary,
}

/// One node of a group.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryNode {
    /// HA node name.
    pub name: String,
    /// Agent address.
    pub agent: String,
    /// Role before the upgrade.
    pub role: NodeRole,
    /// Name in the agent's certificate.
    pub tls_name: String,
}

/// TOML text of `value` after a `# comment` line.
pub fn to_toml<T: Serialize>(comment: &str, value: &T) -> Result<String, toml::ser::Error> {
    Ok(format!("# {comment}\n{}", toml::to_string(value)?))
}
