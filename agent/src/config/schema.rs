//! The configuration file's schema: one struct per TOML section.

use super::defaults::*;
use hubshift_common::tls::TlsFiles;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve gRPC on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// mTLS files; absent only with `--insecure-listen`.
    pub tls: Option<TlsSection>,
    /// Directories the agent manages.
    pub paths: PathsSection,
    /// How the hub is started and stopped.
    pub hub: HubSection,
    /// How the hub's HA role is found.
    #[serde(default)]
    pub role_probe: RoleProbeSection,
    /// Caps on received archives, uploads and connections.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The container template (driver = "docker").
    pub docker: Option<DockerSection>,
    /// The Prometheus endpoint; off unless configured.
    pub metrics: Option<MetricsSection>,
}

/// `[metrics]`: `/metrics` and `/healthz` over plain HTTP on an address of
/// their own (never the gRPC port), for a Prometheus server to scrape.
/// Nothing served there can change the host, and no secret is in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address to serve on, e.g. "127.0.0.1:9464" (or the host's address
    /// on a monitoring network).
    pub listen: String,
    /// Scrapers connected at once; more are closed as they arrive.
    #[serde(default = "default_metrics_max_connections")]
    pub max_connections: u32,
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// This agent's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA that signs controller certificates.
    pub client_ca: PathBuf,
    /// Controller identities allowed to call: certificate CN or DNS SAN.
    pub allowed_clients: Vec<String>,
}

impl TlsSection {
    /// The files as hubshift-common wants them.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.client_ca.clone(),
        }
    }
}

/// `[paths]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsSection {
    /// backups/, staging/, hub.log, hub.json.
    pub state_dir: PathBuf,
    /// runtimes/<version>/ and the `current` link.
    pub install_root: PathBuf,
    /// The hub's appdata directory.
    pub appdata: PathBuf,
    /// Further directories archived by Backup.
    #[serde(default)]
    pub extra_backup_dirs: Vec<PathBuf>,
    /// File name of the certificate store inside appdata.
    #[serde(default = "default_certificate_store")]
    pub certificate_store: String,
}

/// How a runtime archive is laid out under `runtimes/<version>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The archive root is the runtime directory (jar and lib/ at its top).
    #[default]
    Plain,
    /// The vendor's release: one top-level folder holding `runtime/`,
    /// `configuration/` and a template `appData/`; `{runtime}` is its
    /// `runtime/` folder and the bundled `appData/` is never used.
    Vendor,
}

impl Layout {
    /// "plain" or "vendor", as in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Plain => "plain",
            Layout::Vendor => "vendor",
        }
    }
}

/// How the hub runs on this host (`[hub] driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// A host process group started from the command templates; runtimes
    /// are directories under `install_root`.
    #[default]
    Process,
    /// A container of the Docker Engine (or Podman's compatible socket)
    /// recreated from `[docker]` at each start; runtimes are images.
    Docker,
}

/// How a container is told to run HA create then start, or start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerStartMode {
    /// The image reads `START_MODE` (the vendor image from 4.5.0):
    /// `HA_INIT` for CREATE_AND_START, `start_mode_start` for START.
    #[default]
    Env,
    /// Older images: the container command is replaced by
    /// `create_and_start_command` or `start_command`.
    Command,
}

/// `[docker]`: the hub container's template (driver = "docker").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSection {
    /// The engine's socket.
    #[serde(default = "default_docker_socket")]
    pub socket: String,
    /// Name of the hub's container.
    pub container: String,
    /// Images are tagged `<image_repository>:<version>`.
    pub image_repository: String,
    /// appData inside the container.
    #[serde(default = "default_appdata_target")]
    pub appdata_target: String,
    /// The hub's runtime directory inside the image: with
    /// `directories.storeForwardData` unset (or relative) the hub keeps its
    /// store-and-forward files there, in the container's writable layer,
    /// and Start copies them from the previous container into the new one.
    #[serde(default = "default_runtime_target")]
    pub runtime_target: String,
    /// Named volume for appData; empty: `paths.appdata` is bind-mounted.
    #[serde(default)]
    pub appdata_volume: String,
    /// Published ports, `[ip:]host:container[/proto]` or `container[/proto]`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Network to attach to; empty: the engine's default bridge.
    #[serde(default)]
    pub network: String,
    /// Container environment; values may use `{node}` and `{jdbc}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container arguments (the vendor image: `["start"]`).
    #[serde(default = "default_docker_args")]
    pub args: Vec<String>,
    /// env or command.
    #[serde(default)]
    pub start_mode: DockerStartMode,
    /// `START_MODE` for START when start_mode = "env".
    #[serde(default = "default_start_mode_start")]
    pub start_mode_start: String,
    /// Container command for CREATE_AND_START when start_mode = "command";
    /// may use `{node}` (the JDBC URI is in `HUBSHIFT_JDBC_URI`).
    #[serde(default)]
    pub create_and_start_command: Vec<String>,
    /// Container command for START when start_mode = "command".
    #[serde(default)]
    pub start_command: Vec<String>,
    /// CREATE_AND_START returns once the container's output matches this
    /// (HA create done), or fails when the container ends first; empty:
    /// it returns when the container started.
    #[serde(default)]
    pub created_pattern: String,
    /// The role probe of kind "log" reads at most this many last lines of
    /// the container's output.
    #[serde(default = "default_log_tail_lines")]
    pub log_tail_lines: u32,
}

/// The longest Stop timeout accepted, in seconds (one hour). A larger one
/// is refused with INVALID_ARGUMENT: a Stop whose caller went away would
/// otherwise hold the hub for as long as it says.
pub const MAX_STOP_TIMEOUT_SECS: u32 = 3600;

/// `[hub]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// Where `{runtime}` lies inside `runtimes/<version>/`.
    #[serde(default)]
    pub layout: Layout,
    /// Which driver runs the hub.
    #[serde(default)]
    pub driver: DriverKind,
    /// argv template of HA `create` (driver "process").
    #[serde(default)]
    pub create_command: Vec<String>,
    /// argv template of HA `start` (driver "process").
    #[serde(default)]
    pub start_command: Vec<String>,
    /// Working directory template.
    #[serde(default = "default_working_dir")]
    pub working_dir: String,
    /// argv template of a graceful stop; empty: SIGTERM to the process group.
    #[serde(default)]
    pub stop_command: Vec<String>,
    /// Grace period before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: u64,
    /// Longest time `create` may run.
    #[serde(default = "default_create_timeout")]
    pub create_timeout_secs: u64,
    /// hub.log is cut back to its last half beyond this.
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
    /// Extra environment for the hub.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Kind of role probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// Last matching line of hub.log since the current start.
    #[default]
    Log,
    /// Run a command and match its stdout.
    Command,
    /// Lines appended to a file (the hub's event log) since the current start.
    File,
}

/// `[role_probe]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleProbeSection {
    /// log or command.
    #[serde(default)]
    pub kind: ProbeKind,
    /// Regex of a line that says "active".
    #[serde(default = "default_active_pattern")]
    pub active_pattern: String,
    /// Regex of a line that says "standby".
    #[serde(default = "default_standby_pattern")]
    pub standby_pattern: String,
    /// argv template for kind = "command".
    #[serde(default)]
    pub command: Vec<String>,
    /// Path template of the file kind = "file" follows.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Match this top-level field of each JSON line instead of the line;
    /// a line without it, or not JSON, matches nothing.
    #[serde(default)]
    pub json_field: Option<String>,
    /// Longest time the probe command may run.
    #[serde(default = "default_probe_timeout")]
    pub timeout_secs: u64,
}

impl Default for RoleProbeSection {
    fn default() -> Self {
        Self {
            kind: ProbeKind::default(),
            active_pattern: default_active_pattern(),
            standby_pattern: default_standby_pattern(),
            command: Vec::new(),
            path: default_probe_path(),
            json_field: None,
            timeout_secs: default_probe_timeout(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest runtime archive accepted, and largest unpacked total.
    #[serde(default = "default_max_archive_bytes")]
    pub max_archive_bytes: u64,
    /// Largest number of entries in an archive.
    #[serde(default = "default_max_entries")]
    pub max_archive_entries: u64,
    /// InstallRuntime uploads received at once; more are RESOURCE_EXHAUSTED
    /// (each holds a thread and a staging directory while it lasts).
    #[serde(default = "default_max_concurrent_uploads")]
    pub max_concurrent_uploads: u32,
    /// An upload that sends nothing for this long is dropped with its
    /// staging directory (a vanished controller).
    #[serde(default = "default_upload_idle_timeout")]
    pub upload_idle_timeout_secs: u64,
    /// Open connections, handshaking or established; at the cap the oldest
    /// connection still in its TLS handshake is dropped for a new one.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Longest TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
    /// Idle time before HTTP/2 pings and TCP keepalive probes start.
    #[serde(default = "default_keepalive_interval")]
    pub keepalive_interval_secs: u64,
    /// A peer that does not answer a ping within this is disconnected.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_archive_bytes: default_max_archive_bytes(),
            max_archive_entries: default_max_entries(),
            max_concurrent_uploads: default_max_concurrent_uploads(),
            upload_idle_timeout_secs: default_upload_idle_timeout(),
            max_connections: default_max_connections(),
            tls_handshake_timeout_secs: default_handshake_timeout(),
            keepalive_interval_secs: default_keepalive_interval(),
            keepalive_timeout_secs: default_keepalive_timeout(),
        }
    }
}
