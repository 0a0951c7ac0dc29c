//! The agent's TOML configuration (see docs/agent-config.md) and its
//! validation. Every error names the key and the file.

use hubshift_common::tls::TlsFiles;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the key).
    #[error("config file {file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// toml's message (line, column, key).
        message: String,
    },
    /// One key holds a value that cannot be used.
    #[error("config file {file}: key `{key}`: {reason}")]
    Key {
        /// The file.
        file: PathBuf,
        /// Dotted key, e.g. `tls.cert`.
        key: String,
        /// Why.
        reason: String,
    },
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerStartMode {
    /// The image reads `START_MODE` (the vendor image from 4.5.0):
    /// `HA_INIT` for CREATE_AND_START, `start_mode_start` for START.
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
    #[serde(default = "default_docker_start_mode")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// Last matching line of hub.log since the current start.
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
    #[serde(default = "default_probe_kind")]
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
            kind: default_probe_kind(),
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

fn default_listen() -> String {
    "0.0.0.0:7443".into()
}
fn default_certificate_store() -> String {
    "intelligencehub-certificatestore.pkcs12".into()
}
fn default_working_dir() -> String {
    "{runtime}".into()
}
fn default_stop_timeout() -> u64 {
    60
}
fn default_create_timeout() -> u64 {
    300
}
fn default_log_max() -> u64 {
    10 * 1024 * 1024
}
fn default_probe_kind() -> ProbeKind {
    ProbeKind::Log
}
fn default_active_pattern() -> String {
    "HA role: active".into()
}
fn default_standby_pattern() -> String {
    "HA role: standby".into()
}
fn default_docker_socket() -> String {
    "/var/run/docker.sock".into()
}
fn default_appdata_target() -> String {
    "/usr/local/highbyte/appData".into()
}
fn default_runtime_target() -> String {
    "/usr/local/highbyte/runtime".into()
}
fn default_docker_args() -> Vec<String> {
    vec!["start".into()]
}
fn default_docker_start_mode() -> DockerStartMode {
    DockerStartMode::Env
}
fn default_start_mode_start() -> String {
    "HA".into()
}
fn default_log_tail_lines() -> u32 {
    5000
}
fn default_probe_path() -> String {
    "{appdata}/intelligencehub-events.log".into()
}
fn default_probe_timeout() -> u64 {
    5
}
fn default_max_archive_bytes() -> u64 {
    4 * 1024 * 1024 * 1024
}
fn default_max_entries() -> u64 {
    200_000
}
fn default_max_concurrent_uploads() -> u32 {
    4
}
fn default_upload_idle_timeout() -> u64 {
    60
}
fn default_max_connections() -> u32 {
    256
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_keepalive_interval() -> u64 {
    30
}
fn default_keepalive_timeout() -> u64 {
    20
}

/// Placeholders a command template may hold.
pub const PLACEHOLDERS: &[&str] = &["runtime", "node", "jdbc", "appdata"];

/// Values for a template.
#[derive(Clone, Copy)]
pub struct Vars<'a> {
    /// Resolved runtime directory.
    pub runtime: &'a str,
    /// HA node name.
    pub node: &'a str,
    /// JDBC URI (secret).
    pub jdbc: &'a str,
    /// appdata directory.
    pub appdata: &'a str,
}

/// One piece of a parsed template.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a template into text and `{placeholder}` pieces; `{{` and `}}`
/// are literal braces. Errors name the bad placeholder.
fn parse_template(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{{") {
            pieces.push(Piece::Text("{"));
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            pieces.push(Piece::Text("}"));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
            let name = &r[..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}} in {t:?} (known: {{runtime}}, {{node}}, {{jdbc}}, {{appdata}})"
                ));
            }
            pieces.push(Piece::Var(name));
            rest = &r[end + 1..];
        } else if rest.starts_with('}') {
            return Err(format!(
                "unmatched '}}' in {t:?} (write '}}}}' for a literal brace)"
            ));
        } else {
            let end = rest.find(['{', '}']).unwrap_or(rest.len());
            pieces.push(Piece::Text(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(pieces)
}

/// Checks one template string.
pub fn check_template(t: &str) -> Result<(), String> {
    parse_template(t).map(|_| ())
}

/// Fills one template string (already validated at load time).
pub fn fill(t: &str, vars: Vars<'_>) -> String {
    let Ok(pieces) = parse_template(t) else {
        return t.to_string();
    };
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(s) => out.push_str(s),
            Piece::Var("runtime") => out.push_str(vars.runtime),
            Piece::Var("node") => out.push_str(vars.node),
            Piece::Var("jdbc") => out.push_str(vars.jdbc),
            Piece::Var("appdata") => out.push_str(vars.appdata),
            Piece::Var(_) => {}
        }
    }
    out
}

/// Fills an argv template.
pub fn fill_argv(argv: &[String], vars: Vars<'_>) -> Vec<String> {
    argv.iter().map(|a| fill(a, vars)).collect()
}

/// Whether the template uses `{name}`.
pub fn uses(argv: &[String], name: &str) -> bool {
    argv.iter().any(|a| {
        parse_template(a)
            .map(|p| p.iter().any(|p| matches!(p, Piece::Var(n) if *n == name)))
            .unwrap_or(false)
    })
}

impl Config {
    /// Reads and validates `file`. `need_tls`: refuse a missing `[tls]`.
    pub fn load(file: &Path, need_tls: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(file, need_tls)?;
        Ok(config)
    }

    /// Usable but unwise settings, each naming its key.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, argv) in [
            ("hub.create_command", &self.hub.create_command),
            ("hub.start_command", &self.hub.start_command),
        ] {
            if uses(argv, "jdbc") {
                out.push(format!(
                    "key `{key}`: {{jdbc}} puts the JDBC URI and its password on the hub's command line, \
                     readable in /proc by every local user (unless ProtectProc= or hidepid hides it); \
                     pass `-j env:HUBSHIFT_JDBC_URI` instead, the agent sets that variable"
                ));
            }
        }
        out
    }

    fn validate(&self, file: &Path, need_tls: bool) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Key {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        self.listen.parse::<SocketAddr>().map_err(|e| {
            bad(
                "listen",
                format!("{:?} is not an address:port ({e})", self.listen),
            )
        })?;

        match &self.tls {
            None if need_tls => {
                return Err(bad(
                    "tls",
                    "missing: mTLS is required (use --insecure-listen only for local development)"
                        .into(),
                ));
            }
            None => {}
            Some(tls) => {
                for (key, path) in [
                    ("tls.cert", &tls.cert),
                    ("tls.key", &tls.key),
                    ("tls.client_ca", &tls.client_ca),
                ] {
                    let meta = std::fs::metadata(path)
                        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
                    if !meta.is_file() {
                        return Err(bad(key, format!("{} is not a file", path.display())));
                    }
                    let text = std::fs::read(path)
                        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
                    if !String::from_utf8_lossy(&text).contains("-----BEGIN ") {
                        return Err(bad(key, format!("{} holds no PEM block", path.display())));
                    }
                }
                if tls.allowed_clients.is_empty() {
                    return Err(bad(
                        "tls.allowed_clients",
                        "empty: no controller could call this agent".into(),
                    ));
                }
                if let Some(c) = tls.allowed_clients.iter().find(|c| c.trim().is_empty()) {
                    return Err(bad("tls.allowed_clients", format!("blank entry {c:?}")));
                }
            }
        }

        let p = &self.paths;
        for (key, path) in [
            ("paths.state_dir", &p.state_dir),
            ("paths.install_root", &p.install_root),
            ("paths.appdata", &p.appdata),
        ] {
            check_dir_path(path).map_err(|r| bad(key, r))?;
        }
        for (i, path) in p.extra_backup_dirs.iter().enumerate() {
            let key = format!("paths.extra_backup_dirs[{i}]");
            if !path.is_absolute() {
                return Err(bad(
                    &key,
                    format!("{} is not an absolute path", path.display()),
                ));
            }
            if !path.is_dir() {
                return Err(bad(&key, format!("{} is not a directory", path.display())));
            }
        }
        hubshift_common::names::validate_name("file name", &p.certificate_store)
            .map_err(|e| bad("paths.certificate_store", e.to_string()))?;

        let h = &self.hub;
        match (h.driver, &self.docker) {
            (DriverKind::Process, Some(_)) => {
                return Err(bad(
                    "docker",
                    "only used with [hub] driver = \"docker\"".into(),
                ));
            }
            (DriverKind::Process, None) => {
                for (key, argv) in [
                    ("hub.create_command", &h.create_command),
                    ("hub.start_command", &h.start_command),
                ] {
                    if argv.is_empty() || argv[0].trim().is_empty() {
                        return Err(bad(key, "must name a program".into()));
                    }
                }
            }
            (DriverKind::Docker, None) => {
                return Err(bad(
                    "docker",
                    "missing: [hub] driver = \"docker\" needs the container template".into(),
                ));
            }
            (DriverKind::Docker, Some(d)) => {
                for (key, argv) in [
                    ("hub.create_command", &h.create_command),
                    ("hub.start_command", &h.start_command),
                    ("hub.stop_command", &h.stop_command),
                ] {
                    if !argv.is_empty() {
                        return Err(bad(
                            key,
                            "not used with driver \"docker\" (see [docker])".into(),
                        ));
                    }
                }
                if !h.env.is_empty() {
                    return Err(bad(
                        "hub.env",
                        "not used with driver \"docker\" (use docker.env)".into(),
                    ));
                }
                d.validate(&bad)?;
            }
        }
        for (key, argv) in [
            ("hub.create_command", &h.create_command),
            ("hub.start_command", &h.start_command),
            ("hub.stop_command", &h.stop_command),
            ("role_probe.command", &self.role_probe.command),
        ] {
            for a in argv.iter() {
                check_template(a).map_err(|r| bad(key, r))?;
            }
        }
        check_template(&h.working_dir).map_err(|r| bad("hub.working_dir", r))?;
        let probe_path = std::slice::from_ref(&self.role_probe.path);
        check_template(&self.role_probe.path).map_err(|r| bad("role_probe.path", r))?;
        if uses(probe_path, "jdbc") || uses(probe_path, "node") {
            return Err(bad(
                "role_probe.path",
                "may only use {runtime} and {appdata}".into(),
            ));
        }
        let filled = fill(
            &self.role_probe.path,
            Vars {
                runtime: "/r",
                node: "",
                jdbc: "",
                appdata: "/a",
            },
        );
        if !Path::new(&filled).is_absolute() {
            return Err(bad(
                "role_probe.path",
                "must be absolute or start with {appdata} or {runtime}".into(),
            ));
        }
        if self.role_probe.json_field.as_deref() == Some("") {
            return Err(bad(
                "role_probe.json_field",
                "empty: leave it out to match whole lines".into(),
            ));
        }
        for (key, argv) in [
            ("hub.stop_command", &h.stop_command),
            ("role_probe.command", &self.role_probe.command),
        ] {
            if uses(argv, "jdbc") || uses(argv, "node") {
                return Err(bad(
                    key,
                    "may only use {runtime} and {appdata} (node and JDBC URI are not kept)".into(),
                ));
            }
        }
        if uses(std::slice::from_ref(&h.working_dir), "jdbc") {
            return Err(bad("hub.working_dir", "must not use {jdbc}".into()));
        }
        for k in h.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(bad("hub.env", format!("invalid variable name {k:?}")));
            }
            if k == "HUBSHIFT_JDBC_URI"
                || k == "HUBSHIFT_NODE"
                || k == crate::settings::SETTINGS_ENV
            {
                return Err(bad("hub.env", format!("{k} is set by the agent")));
            }
        }
        if h.log_max_bytes < 4096 {
            return Err(bad("hub.log_max_bytes", "must be at least 4096".into()));
        }
        if h.stop_timeout_secs == 0 {
            return Err(bad("hub.stop_timeout_secs", "must be at least 1".into()));
        }
        // The same bound as a Stop request's own timeout.
        let max_stop = u64::from(crate::driver::ops::MAX_STOP_TIMEOUT_SECS);
        if h.stop_timeout_secs > max_stop {
            return Err(bad(
                "hub.stop_timeout_secs",
                format!("must be at most {max_stop}"),
            ));
        }
        if h.create_timeout_secs == 0 {
            return Err(bad("hub.create_timeout_secs", "must be at least 1".into()));
        }

        let r = &self.role_probe;
        Regex::new(&r.active_pattern).map_err(|e| {
            bad(
                "role_probe.active_pattern",
                format!("does not compile: {e}"),
            )
        })?;
        Regex::new(&r.standby_pattern).map_err(|e| {
            bad(
                "role_probe.standby_pattern",
                format!("does not compile: {e}"),
            )
        })?;
        if r.kind == ProbeKind::Command && r.command.is_empty() {
            return Err(bad(
                "role_probe.command",
                "must name a program when kind = \"command\"".into(),
            ));
        }
        if r.timeout_secs == 0 {
            return Err(bad("role_probe.timeout_secs", "must be at least 1".into()));
        }
        if self.limits.max_archive_bytes == 0 {
            return Err(bad("limits.max_archive_bytes", "must be positive".into()));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_archive_entries", l.max_archive_entries),
            (
                "limits.max_concurrent_uploads",
                l.max_concurrent_uploads.into(),
            ),
            (
                "limits.upload_idle_timeout_secs",
                l.upload_idle_timeout_secs,
            ),
            ("limits.max_connections", l.max_connections.into()),
            (
                "limits.tls_handshake_timeout_secs",
                l.tls_handshake_timeout_secs,
            ),
            ("limits.keepalive_interval_secs", l.keepalive_interval_secs),
            ("limits.keepalive_timeout_secs", l.keepalive_timeout_secs),
        ] {
            if value == 0 {
                return Err(bad(key, "must be positive".into()));
            }
        }
        if l.max_connections < 2 {
            return Err(bad(
                "limits.max_connections",
                "must be at least 2 (one controller and room for a newcomer)".into(),
            ));
        }
        Ok(())
    }
}

impl DockerSection {
    fn validate(&self, bad: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        if !self.socket.starts_with('/') && !self.socket.starts_with("unix:///") {
            return Err(bad(
                "docker.socket",
                format!("{:?} is not a unix socket path", self.socket),
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 128
                && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        if !name_ok(&self.container) {
            return Err(bad(
                "docker.container",
                format!(
                    "{:?} is not a container name ([A-Za-z0-9][A-Za-z0-9_.-]*)",
                    self.container
                ),
            ));
        }
        if !self.appdata_volume.is_empty() && !name_ok(&self.appdata_volume) {
            return Err(bad(
                "docker.appdata_volume",
                format!("{:?} is not a volume name", self.appdata_volume),
            ));
        }
        let repo_ok = !self.image_repository.is_empty()
            && self.image_repository.len() <= 200
            && self
                .image_repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-/".contains(&b))
            && !self.image_repository.starts_with(['.', '-', '/', '_']);
        if !repo_ok {
            return Err(bad(
                "docker.image_repository",
                format!(
                    "{:?} is not an image repository (lowercase letters, digits, '._-/'; no tag)",
                    self.image_repository
                ),
            ));
        }
        if !self.appdata_target.starts_with('/') {
            return Err(bad(
                "docker.appdata_target",
                format!("{:?} is not an absolute path", self.appdata_target),
            ));
        }
        if !self.runtime_target.starts_with('/') || self.runtime_target.contains('\0') {
            return Err(bad(
                "docker.runtime_target",
                format!("{:?} is not an absolute path", self.runtime_target),
            ));
        }
        for p in &self.ports {
            parse_port(p).map_err(|r| bad("docker.ports", r))?;
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(bad("docker.env", format!("invalid variable name {k:?}")));
            }
            if ["HUBSHIFT_JDBC_URI", "HUBSHIFT_NODE", "START_MODE"].contains(&k.as_str()) {
                return Err(bad("docker.env", format!("{k} is set by the agent")));
            }
            check_template(v).map_err(|r| bad("docker.env", r))?;
            let one = std::slice::from_ref(v);
            if uses(one, "runtime") || uses(one, "appdata") {
                return Err(bad(
                    "docker.env",
                    format!("{k}: only {{node}} and {{jdbc}} are known in a container"),
                ));
            }
        }
        for (key, argv) in [
            (
                "docker.create_and_start_command",
                &self.create_and_start_command,
            ),
            ("docker.start_command", &self.start_command),
            ("docker.args", &self.args),
        ] {
            for a in argv {
                check_template(a).map_err(|r| bad(key, r))?;
            }
            if uses(argv, "jdbc") || uses(argv, "runtime") || uses(argv, "appdata") {
                return Err(bad(
                    key,
                    "may only use {node} (the JDBC URI is in the environment variable HUBSHIFT_JDBC_URI)"
                        .into(),
                ));
            }
        }
        if self.start_mode == DockerStartMode::Command {
            for (key, argv) in [
                (
                    "docker.create_and_start_command",
                    &self.create_and_start_command,
                ),
                ("docker.start_command", &self.start_command),
            ] {
                if argv.is_empty() {
                    return Err(bad(
                        key,
                        "must name a program when start_mode = \"command\"".into(),
                    ));
                }
            }
        }
        if self.start_mode_start.is_empty() || self.start_mode_start.contains('\0') {
            return Err(bad("docker.start_mode_start", "must not be empty".into()));
        }
        if !self.created_pattern.is_empty() {
            Regex::new(&self.created_pattern)
                .map_err(|e| bad("docker.created_pattern", format!("does not compile: {e}")))?;
        }
        if self.log_tail_lines == 0 {
            return Err(bad("docker.log_tail_lines", "must be positive".into()));
        }
        Ok(())
    }
}

/// A published port: (host ip, host port, container port with protocol).
/// `8885`, `8885/udp`, `18885:8885`, `127.0.0.1:18885:8885/tcp`.
pub fn parse_port(spec: &str) -> Result<(String, String, String), String> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) if p == "tcp" || p == "udp" => (a, p),
        Some(_) => return Err(format!("{spec:?}: protocol must be tcp or udp")),
        None => (spec, "tcp"),
    };
    let parts: Vec<&str> = addr.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(format!("{spec:?} is not [ip:]host:container[/proto]")),
    };
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|n| n > 0);
    if !port_ok(container) || (!host.is_empty() && !port_ok(host)) {
        return Err(format!("{spec:?}: ports are numbers from 1 to 65535"));
    }
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{spec:?}: {ip:?} is not an IP address"));
    }
    Ok((
        ip.to_string(),
        host.to_string(),
        format!("{container}/{proto}"),
    ))
}

/// A managed directory: absolute; it exists as a directory, or its parent
/// does (the agent creates it).
fn check_dir_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    if path.exists() {
        if !path.is_dir() {
            return Err(format!("{} is not a directory", path.display()));
        }
        return Ok(());
    }
    match path.parent() {
        Some(parent) if parent.is_dir() => Ok(()),
        _ => Err(format!(
            "{} does not exist and neither does its parent directory",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            runtime: "/r",
            node: "n1",
            jdbc: "jdbc:x",
            appdata: "/a",
        }
    }

    #[test]
    fn templates_fill_and_refuse_unknown_placeholders() {
        assert_eq!(fill("{runtime}/lib/*:{{x}}", vars()), "/r/lib/*:{x}");
        assert_eq!(fill("-n{node}-j{jdbc}{appdata}", vars()), "-nn1-jjdbc:x/a");
        assert!(check_template("{runtme}").unwrap_err().contains("{runtme}"));
        assert!(check_template("{runtime").is_err());
        assert!(check_template("x}").is_err());
    }

    fn write(dir: &Path, body: &str) -> PathBuf {
        let f = dir.join("agent.toml");
        std::fs::write(&f, body).unwrap();
        f
    }

    fn minimal(dir: &Path) -> String {
        format!(
            "listen = \"127.0.0.1:0\"\n[paths]\nstate_dir = \"{0}/state\"\ninstall_root = \"{0}/opt\"\nappdata = \"{0}/opt/appData\"\n[hub]\ncreate_command = [\"{{runtime}}/bin/hub\", \"create\"]\nstart_command = [\"{{runtime}}/bin/hub\", \"start\", \"-n\", \"{{node}}\"]\n",
            dir.display()
        )
    }

    #[test]
    fn minimal_config_loads_without_tls_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let f = write(dir.path(), &minimal(dir.path()));
        let c = Config::load(&f, false).unwrap();
        assert_eq!(c.hub.stop_timeout_secs, 60);
        assert_eq!(c.role_probe.kind, ProbeKind::Log);
        let long = write(
            dir.path(),
            &minimal(dir.path()).replace("[hub]\n", "[hub]\nstop_timeout_secs = 3601\n"),
        );
        let err = Config::load(&long, false).unwrap_err().to_string();
        assert!(
            err.contains("hub.stop_timeout_secs") && err.contains("3600"),
            "{err}"
        );
        let err = Config::load(&f, true).unwrap_err().to_string();
        assert!(err.contains("`tls`") && err.contains("agent.toml"), "{err}");
    }

    #[test]
    fn packaged_examples_parse_and_their_templates_and_patterns_are_valid() {
        for text in [
            include_str!("../../packaging/agent.example.toml"),
            include_str!("../../packaging/agent.sim.example.toml"),
            include_str!("../../packaging/agent.docker.example.toml"),
        ] {
            let c: Config = toml::from_str(text).unwrap();
            let h = &c.hub;
            for t in h
                .create_command
                .iter()
                .chain(&h.start_command)
                .chain([&h.working_dir])
            {
                check_template(t).unwrap();
            }
            Regex::new(&c.role_probe.active_pattern).unwrap();
            Regex::new(&c.role_probe.standby_pattern).unwrap();
            assert!(c.tls.is_some());
            assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        }
    }

    #[test]
    fn jdbc_on_a_command_line_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let base = minimal(dir.path());
        let f = write(dir.path(), &base);
        assert!(Config::load(&f, false).unwrap().warnings().is_empty());
        let f = write(
            dir.path(),
            &base.replace("\"{node}\"]", "\"{node}\", \"-j\", \"{jdbc}\"]"),
        );
        let w = Config::load(&f, false).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("hub.start_command") && w[0].contains("env:HUBSHIFT_JDBC_URI"));
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let base = minimal(dir.path());
        let cases = [
            (base.replace("\"start\"", "\"{nod}\""), "hub.start_command"),
            (
                format!("{base}[role_probe]\nactive_pattern = \"(\"\n"),
                "role_probe.active_pattern",
            ),
            (format!("{base}bogus = 1\n"), "bogus"),
            (base.replace("opt/appData", "nope/appData"), "paths.appdata"),
            (
                format!(
                    "{base}[tls]\ncert = \"/nonexistent.crt\"\nkey = \"/k\"\nclient_ca = \"/c\"\nallowed_clients = [\"x\"]\n"
                ),
                "tls.cert",
            ),
            (
                base.replace("start_command", "strat_command"),
                "strat_command",
            ),
            (
                format!("{base}[limits]\nmax_concurrent_uploads = 0\n"),
                "limits.max_concurrent_uploads",
            ),
            (
                format!("{base}[limits]\nmax_connections = 1\n"),
                "limits.max_connections",
            ),
            (
                format!("{base}[limits]\ntls_handshake_timeout_secs = 0\n"),
                "limits.tls_handshake_timeout_secs",
            ),
            (
                format!("{base}[limits]\nmax_conections = 9\n"),
                "max_conections",
            ),
        ];
        for (body, key) in cases {
            let f = write(dir.path(), &body);
            let err = Config::load(&f, false).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.contains("agent.toml"), "{err}");
        }
    }

    fn docker_base(dir: &Path) -> String {
        format!(
            "listen = \"127.0.0.1:0\"\n[paths]\nstate_dir = \"{0}/state\"\ninstall_root = \"{0}/opt\"\nappdata = \"{0}/opt/appData\"\n[hub]\ndriver = \"docker\"\n[docker]\ncontainer = \"hub\"\nimage_repository = \"highbyte\"\n",
            dir.display()
        )
    }

    #[test]
    fn docker_driver_keys_are_checked_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let base = docker_base(dir.path());
        let f = write(dir.path(), &base);
        let c = Config::load(&f, false).unwrap();
        assert_eq!(c.hub.driver, DriverKind::Docker);
        let d = c.docker.unwrap();
        assert_eq!(d.appdata_target, "/usr/local/highbyte/appData");
        assert_eq!(d.runtime_target, "/usr/local/highbyte/runtime");
        assert_eq!(d.args, ["start"]);
        assert_eq!(d.start_mode, DockerStartMode::Env);

        let process = minimal(dir.path());
        let cases = [
            (base.replace("driver = \"docker\"\n", ""), "docker"),
            (base.replace("[docker]", "[dockr]"), "dockr"),
            (
                format!("{process}[docker]\ncontainer = \"x\"\nimage_repository = \"y\"\n"),
                "`docker`",
            ),
            (
                base.replace(
                    "[docker]\ncontainer = \"hub\"\nimage_repository = \"highbyte\"\n",
                    "",
                ),
                "`docker`",
            ),
            (base.replace("\"hub\"", "\"../hub\""), "docker.container"),
            (
                base.replace("\"highbyte\"", "\"HighByte:4.5\""),
                "docker.image_repository",
            ),
            (
                format!("{base}runtime_target = \"runtime\"\n"),
                "docker.runtime_target",
            ),
            (format!("{base}ports = [\"99999:1\"]\n"), "docker.ports"),
            (format!("{base}ports = [\"1:2/sctp\"]\n"), "docker.ports"),
            (
                format!("{base}env = {{ START_MODE = \"x\" }}\n"),
                "docker.env",
            ),
            (
                format!("{base}env = {{ A = \"{{appdata}}\" }}\n"),
                "docker.env",
            ),
            (
                format!("{base}args = [\"start\", \"{{jdbc}}\"]\n"),
                "docker.args",
            ),
            (
                format!("{base}start_mode = \"command\"\n"),
                "docker.create_and_start_command",
            ),
            (
                format!("{base}created_pattern = \"(\"\n"),
                "docker.created_pattern",
            ),
            (
                format!("{base}socket = \"tcp://1.2.3.4:2375\"\n"),
                "docker.socket",
            ),
            (
                base.replace("[hub]\n", "[hub]\nstart_command = [\"x\"]\n"),
                "hub.start_command",
            ),
            (
                base.replace("[hub]\n", "[hub]\nenv = { A = \"b\" }\n"),
                "hub.env",
            ),
        ];
        for (body, key) in cases {
            let f = write(dir.path(), &body);
            let err = Config::load(&f, false).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn ports_parse_like_docker_run_p() {
        assert_eq!(
            parse_port("8885").unwrap(),
            (String::new(), String::new(), "8885/tcp".into())
        );
        assert_eq!(
            parse_port("127.0.0.1:18885:8885/udp").unwrap(),
            ("127.0.0.1".into(), "18885".into(), "8885/udp".into())
        );
        assert!(parse_port("a:b").is_err());
        assert!(parse_port("1:2:3:4").is_err());
        assert!(parse_port("nothere:1:2").is_err());
    }
}
