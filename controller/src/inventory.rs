//! The inventory: which database, which HA groups, which nodes and agents,
//! which timeouts. Read once, validated whole, so that a bad inventory is
//! refused before anything is touched.

use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Why an inventory cannot be used. Always names the file and the key.
#[derive(Debug, Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("cannot read inventory {path}: {source}")]
    Read {
        /// Inventory file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema.
    #[error("inventory {path}: {message}")]
    Parse {
        /// Inventory file.
        path: PathBuf,
        /// What toml/serde said, with the key.
        message: String,
    },
    /// A value is present but wrong.
    #[error("inventory {path}: key `{key}`: {message}")]
    Invalid {
        /// Inventory file.
        path: PathBuf,
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The schema hubshift keeps its journal in: reserved, never the hub's.
pub const JOURNAL_SCHEMA: &str = "hubshift";

/// Where the database URL comes from: never inline, so that inventories can
/// be committed to a repository.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// Environment variable holding the PostgreSQL URL.
    pub url_env: Option<String>,
    /// File holding the PostgreSQL URL (first line).
    pub url_file: Option<PathBuf>,
    /// Name of the hub's orchestration schema.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Host name the hubs use to reach the database, when it differs from
    /// the controller's (e.g. a private address).
    pub hub_host: Option<String>,
    /// Port the hubs use, when it differs.
    pub hub_port: Option<u16>,
    /// CA certificate (PEM) that signed the database server's certificate,
    /// for TLS to PostgreSQL with a private CA; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// SQL answering the age in seconds (one float8) of the active hub's
    /// heartbeat, for `hubshift watch`. The hub's orchestration tables are
    /// its own, so there is no default; it runs in a read-only session.
    pub heartbeat_query: Option<String>,
}

fn default_schema() -> String {
    "orchestration".into()
}

/// The controller's TLS files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA that signed the agents' certificates.
    pub ca: PathBuf,
    /// Controller certificate.
    pub cert: PathBuf,
    /// Controller private key.
    pub key: PathBuf,
}

/// Every wait has a timeout, in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    /// Graceful stop of a hub before it is killed.
    pub stop: u64,
    /// A standby taking over after the primary stopped.
    pub takeover: u64,
    /// The hubs' own takeover time (the heartbeat age after which a standby
    /// takes over, as the hubs are configured). A secondary that is frozen
    /// or not running this long after the primary's stop, plus a margin,
    /// cannot take over: hubshift falls back then instead of waiting out
    /// `takeover`.
    pub hub_takeover: u64,
    /// A started hub becoming active.
    pub start: u64,
    /// The old secondary shutting itself down after the new schema appears.
    pub secondary_shutdown: u64,
    /// A started secondary becoming standby.
    pub standby_join: u64,
    /// One unary agent call.
    pub rpc: u64,
    /// Writing or verifying a backup.
    pub backup: u64,
    /// The group's database away (restarting, cut off): a run waits this
    /// long for it in all, then exits 1 naming it, the run left for
    /// `hubshift resume`.
    pub database: u64,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        Self {
            stop: 60,
            takeover: 120,
            hub_takeover: 30,
            start: 300,
            secondary_shutdown: 30,
            standby_join: 300,
            rpc: 30,
            backup: 3600,
            database: 120,
        }
    }
}

/// Optional copies of backups on the controller's side.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsSection {
    /// Directory the primary's backup is also fetched into and verified.
    pub copy_to: Option<PathBuf>,
    /// Pre-copy (default on): a base backup while the primary runs, so the
    /// backup after its stop only archives what changed. `false`: a full
    /// backup after the stop.
    pub pre_copy: Option<bool>,
}

/// A node's role in the HA group before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs `create`; the preferred primary.
    Primary,
    /// Standby.
    Secondary,
}

/// One hub host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// HA node id (`-n`).
    pub name: String,
    /// Agent address `host:port`.
    pub agent: String,
    /// Role before the upgrade.
    pub role: Role,
    /// Name the agent's certificate carries; default: the host of `agent`.
    pub tls_name: Option<String>,
}

impl Node {
    /// The name the agent's certificate must carry.
    pub fn server_name(&self) -> String {
        self.tls_name
            .clone()
            .unwrap_or_else(|| host_of(&self.agent).to_string())
    }
}

fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// A command that tells whether an upgraded group really serves (say, a
/// script reading a fresh value from the hub's MQTT broker): run after each
/// group's upgrade and repeatedly while a canary soaks; non-zero fails it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksSection {
    /// Program and arguments (no shell). It also gets HUBSHIFT_GROUP,
    /// HUBSHIFT_VERSION, HUBSHIFT_NODES and HUBSHIFT_ACTIVE_NODE.
    pub command: Vec<String>,
    /// Seconds one check may take before it counts as failed.
    #[serde(default = "default_check_timeout")]
    pub timeout_secs: u64,
    /// Seconds between checks while a canary soaks.
    #[serde(default = "default_check_interval")]
    pub interval_secs: u64,
    /// Extra environment for the command.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

fn default_check_timeout() -> u64 {
    60
}

fn default_check_interval() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    nodes: Vec<Node>,
    database: Option<DatabaseSection>,
    checks: Option<ChecksSection>,
    window: Option<WindowsSection>,
}

/// Maintenance windows (`[windows]`, or per group `[groups.window]`): a
/// group's hand-over begins only inside one, and only when it fits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsSection {
    /// `"Sat 01:00-05:00 Europe/Berlin"`, several allowed.
    pub allow: Vec<String>,
}

/// One HA group, with the database and checks that apply to it (its own,
/// or the inventory's defaults).
#[derive(Debug, Clone)]
pub struct Group {
    /// Name used on the command line and in the journal.
    pub name: String,
    /// Its nodes: exactly one primary, at least one secondary.
    pub nodes: Vec<Node>,
    /// Its PostgreSQL: the hubs' orchestration schema, and hubshift's
    /// journal and lock for this group.
    pub database: DatabaseSection,
    /// Where `database` was set, for error messages (`database` or
    /// `groups[2].database`).
    pub database_key: String,
    /// Its post-upgrade check, if any.
    pub checks: Option<ChecksSection>,
    /// Its maintenance windows (its own, or the inventory's); none: any time.
    pub windows: Vec<crate::window::Window>,
}

impl Group {
    /// The primary node.
    pub fn primary(&self) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.role == Role::Primary)
            .unwrap_or(&self.nodes[0])
    }

    /// The secondary nodes.
    pub fn secondaries(&self) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Secondary)
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    database: Option<DatabaseSection>,
    tls: TlsSection,
    #[serde(default)]
    timeouts: TimeoutsSection,
    #[serde(default)]
    backups: BackupsSection,
    checks: Option<ChecksSection>,
    windows: Option<WindowsSection>,
    #[serde(default)]
    trust: crate::trust::TrustSection,
    notify: Option<crate::notify::NotifySection>,
    #[serde(default)]
    groups: Vec<RawGroup>,
}

/// A validated inventory with paths resolved against its directory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The file it was read from.
    pub path: PathBuf,
    /// Controller TLS files.
    pub tls: TlsSection,
    /// Timeouts.
    pub timeouts: TimeoutsSection,
    /// Controller-side backup copies.
    pub backups: BackupsSection,
    /// HA groups.
    pub groups: Vec<Group>,
    /// The keys a runtime archive may be signed by (`[trust]`).
    pub trust: crate::trust::Trust,
    /// Where runs and fleets are announced (`[notify]`).
    pub notify: Option<crate::notify::NotifySection>,
}

impl Inventory {
    /// Reads and validates an inventory file.
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates inventory text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InventoryError> {
        let raw: RawInventory = toml::from_str(text).map_err(|e| InventoryError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let resolve_db = |mut d: DatabaseSection| {
            d.url_file = d.url_file.as_deref().map(resolve);
            d.ca_file = d.ca_file.as_deref().map(resolve);
            d
        };
        let mut inv = Inventory {
            path: path.to_path_buf(),
            tls: TlsSection {
                ca: resolve(&raw.tls.ca),
                cert: resolve(&raw.tls.cert),
                key: resolve(&raw.tls.key),
            },
            timeouts: raw.timeouts,
            backups: raw.backups,
            groups: Vec::new(),
            trust: crate::trust::Trust::default(),
            notify: raw.notify,
        };
        if let Some(n) = &inv.notify
            && let Err((key, message)) = n.check()
        {
            return Err(inv.invalid(format!("notify.{key}"), message));
        }
        inv.trust = crate::trust::Trust::from_section(&raw.trust)
            .map_err(|e| inv.invalid("trust", e.to_string()))?;
        inv.backups.copy_to = inv.backups.copy_to.as_deref().map(resolve);
        let default_db = raw.database.map(resolve_db);
        if let Some(d) = &default_db {
            inv.validate_database(d, "database")?;
        }
        if let Some(c) = &raw.checks {
            inv.validate_checks(c, "checks")?;
        }
        let default_windows = match &raw.windows {
            Some(w) => inv.parse_windows(w, "windows")?,
            None => Vec::new(),
        };
        for (gi, g) in raw.groups.into_iter().enumerate() {
            let (database, database_key) = match (g.database, &default_db) {
                (Some(own), _) => {
                    let key = format!("groups[{gi}].database");
                    let own = resolve_db(own);
                    inv.validate_database(&own, &key)?;
                    (own, key)
                }
                (None, Some(d)) => (d.clone(), "database".to_string()),
                (None, None) => {
                    return Err(inv.invalid(
                        format!("groups[{gi}].database"),
                        format!(
                            "group {:?} names no database and there is no top-level [database] to fall back on",
                            g.name
                        ),
                    ));
                }
            };
            if let Some(c) = &g.checks {
                inv.validate_checks(c, &format!("groups[{gi}].checks"))?;
            }
            let windows = match &g.window {
                Some(w) => inv.parse_windows(w, &format!("groups[{gi}].window"))?,
                None => default_windows.clone(),
            };
            inv.groups.push(Group {
                windows,
                name: g.name,
                nodes: g.nodes,
                database,
                database_key,
                checks: g.checks.or_else(|| raw.checks.clone()),
            });
        }
        inv.validate()?;
        Ok(inv)
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> InventoryError {
        InventoryError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn validate_database(&self, d: &DatabaseSection, key: &str) -> Result<(), InventoryError> {
        match (&d.url_env, &d.url_file) {
            (None, None) => {
                return Err(self.invalid(
                    key,
                    "set url_env (an environment variable) or url_file (a file) holding the PostgreSQL URL",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(self.invalid(key, "set only one of url_env and url_file"));
            }
            _ => {}
        }
        if !valid_identifier(&d.schema) {
            return Err(self.invalid(
                format!("{key}.schema"),
                "must be a plain SQL identifier (letters, digits, _; not starting with a digit)",
            ));
        }
        if d.schema == JOURNAL_SCHEMA {
            return Err(self.invalid(
                format!("{key}.schema"),
                "`hubshift` is the journal's schema, not the hub's",
            ));
        }
        Ok(())
    }

    fn parse_windows(
        &self,
        w: &WindowsSection,
        key: &str,
    ) -> Result<Vec<crate::window::Window>, InventoryError> {
        if w.allow.is_empty() {
            return Err(self.invalid(
                format!("{key}.allow"),
                "name at least one window, e.g. \"Sat 01:00-05:00 Europe/Berlin\"",
            ));
        }
        w.allow
            .iter()
            .enumerate()
            .map(|(i, t)| {
                crate::window::Window::parse(t)
                    .map_err(|e| self.invalid(format!("{key}.allow[{i}]"), e))
            })
            .collect()
    }

    /// How long a hand-over may take at most, from the timeouts: the stop,
    /// the takeover, the backup, the start, the old secondary's shutdown
    /// and the standby's join. A window must hold this before a hand-over
    /// begins in it (unless a previous run of the group says better).
    pub fn handover_estimate(&self) -> Duration {
        let t = &self.timeouts;
        Duration::from_secs(
            t.stop + t.takeover + t.backup + t.start + t.secondary_shutdown + t.standby_join,
        )
    }

    fn validate_checks(&self, c: &ChecksSection, key: &str) -> Result<(), InventoryError> {
        if c.command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(self.invalid(
                format!("{key}.command"),
                "must name a program: [\"/path/to/check\", \"arg\", ...]",
            ));
        }
        for (k, v) in [
            ("timeout_secs", c.timeout_secs),
            ("interval_secs", c.interval_secs),
        ] {
            if v == 0 || v > 86_400 {
                return Err(
                    self.invalid(format!("{key}.{k}"), "must be between 1 and 86400 seconds")
                );
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), InventoryError> {
        for (key, v) in [
            ("timeouts.stop", self.timeouts.stop),
            ("timeouts.takeover", self.timeouts.takeover),
            ("timeouts.start", self.timeouts.start),
            (
                "timeouts.secondary_shutdown",
                self.timeouts.secondary_shutdown,
            ),
            ("timeouts.standby_join", self.timeouts.standby_join),
            ("timeouts.rpc", self.timeouts.rpc),
            ("timeouts.backup", self.timeouts.backup),
            ("timeouts.hub_takeover", self.timeouts.hub_takeover),
            ("timeouts.database", self.timeouts.database),
        ] {
            if v == 0 || v > 86_400 {
                return Err(self.invalid(key, "must be between 1 and 86400 seconds"));
            }
        }
        // The agents refuse a longer Stop (INVALID_ARGUMENT): say so here,
        // before a run stops anything.
        if self.timeouts.stop > MAX_STOP_SECS {
            return Err(self.invalid(
                "timeouts.stop",
                format!("must be at most {MAX_STOP_SECS} seconds (the agents' limit for a Stop)"),
            ));
        }
        if self.groups.is_empty() {
            return Err(self.invalid("groups", "at least one [[groups]] entry is needed"));
        }
        let mut group_names = HashSet::new();
        for (gi, g) in self.groups.iter().enumerate() {
            let gkey = format!("groups[{gi}]");
            if hubshift_common::names::validate_name("group name", &g.name).is_err() {
                return Err(self.invalid(
                    format!("{gkey}.name"),
                    format!(
                        "{:?} is not a valid name (letters, digits, . _ - +)",
                        g.name
                    ),
                ));
            }
            if !group_names.insert(&g.name) {
                return Err(self.invalid(
                    format!("{gkey}.name"),
                    format!("duplicate group {:?}", g.name),
                ));
            }
            let primaries = g.nodes.iter().filter(|n| n.role == Role::Primary).count();
            if primaries != 1 {
                return Err(self.invalid(
                    format!("{gkey}.nodes"),
                    format!("group {:?} needs exactly one node with role = \"primary\" (has {primaries})", g.name),
                ));
            }
            if g.nodes.len() < 2 {
                return Err(self.invalid(
                    format!("{gkey}.nodes"),
                    format!("group {:?} needs at least one secondary", g.name),
                ));
            }
            let mut node_names = HashSet::new();
            let mut agents = HashSet::new();
            for (ni, n) in g.nodes.iter().enumerate() {
                let nkey = format!("{gkey}.nodes[{ni}]");
                if hubshift_common::names::validate_name("node name", &n.name).is_err() {
                    return Err(self.invalid(
                        format!("{nkey}.name"),
                        format!("{:?} is not a valid HA node name", n.name),
                    ));
                }
                if !node_names.insert(&n.name) {
                    return Err(self.invalid(
                        format!("{nkey}.name"),
                        format!("duplicate node {:?}", n.name),
                    ));
                }
                if !valid_agent_address(&n.agent) {
                    return Err(self.invalid(
                        format!("{nkey}.agent"),
                        format!("{:?} is not host:port", n.agent),
                    ));
                }
                if !agents.insert(&n.agent) {
                    return Err(self.invalid(
                        format!("{nkey}.agent"),
                        format!("agent {:?} is listed twice", n.agent),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A group by name, or an error listing the known ones.
    pub fn group(&self, name: &str) -> Result<&Group, InventoryError> {
        self.groups.iter().find(|g| g.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
            self.invalid(
                "groups",
                format!("no group named {name:?} (known: {})", known.join(", ")),
            )
        })
    }

    /// Reads a group's database URL from where the inventory says it is.
    pub fn database_url(&self, group: &Group) -> Result<String, InventoryError> {
        let key = &group.database_key;
        if let Some(var) = &group.database.url_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                _ => Err(self.invalid(
                    format!("{key}.url_env"),
                    format!("environment variable {var} is not set or empty"),
                )),
            };
        }
        let file = group
            .database
            .url_file
            .as_ref()
            .ok_or_else(|| self.invalid(key.as_str(), "set url_env or url_file"))?;
        let text = std::fs::read_to_string(file).map_err(|e| {
            self.invalid(
                format!("{key}.url_file"),
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let line = text.lines().next().unwrap_or("").trim().to_string();
        if line.is_empty() {
            return Err(self.invalid(
                format!("{key}.url_file"),
                format!("{} is empty", file.display()),
            ));
        }
        Ok(line)
    }

    /// Per-call timeout for agent RPCs.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.rpc)
    }
}

impl From<InventoryError> for crate::exit::UsageError {
    fn from(e: InventoryError) -> Self {
        crate::exit::UsageError(e.to_string())
    }
}

/// The longest Stop an agent accepts.
const MAX_STOP_SECS: u64 = 3600;

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn valid_agent_address(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[database]
url_env = "HUBSHIFT_DATABASE_URL"

[tls]
ca = "certs/ca.crt"
cert = "certs/controller.crt"
key = "certs/controller.key"

[[groups]]
name = "plant-a"
nodes = [
  { name = "hub-a", agent = "hub-a.example:7443", role = "primary" },
  { name = "hub-b", agent = "10.0.0.2:7443", role = "secondary", tls_name = "hub-b.example" },
]
"#;

    fn parse(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(Path::new("/etc/hubshift/inventory.toml"), text)
    }

    #[test]
    fn good_inventory_resolves_paths_and_defaults() {
        let inv = parse(GOOD).unwrap();
        assert_eq!(inv.tls.ca, Path::new("/etc/hubshift/certs/ca.crt"));
        let g = inv.group("plant-a").unwrap();
        assert_eq!(g.database.schema, "orchestration");
        assert_eq!(g.database_key, "database");
        assert!(g.checks.is_none());
        assert_eq!(g.primary().name, "hub-a");
        assert_eq!(g.primary().server_name(), "hub-a.example");
        assert_eq!(g.secondaries()[0].server_name(), "hub-b.example");
        assert_eq!(inv.timeouts.takeover, 120);
    }

    #[test]
    fn windows_notify_and_trust_are_read_and_their_errors_named() {
        // A default window, replaced for one group by its own.
        let text = GOOD.replace(
            "[[groups]]",
            "[windows]\nallow = [\"Sat 01:00-05:00 Europe/Berlin\"]\n\n[notify]\nwebhook = \"https://hooks.example/h\"\nheaders_env = { Authorization = \"HOOK\" }\n\n[[groups]]",
        );
        let inv = parse(&text).unwrap();
        assert_eq!(inv.groups[0].windows.len(), 1);
        assert_eq!(inv.notify.as_ref().unwrap().attempts, 5);
        let own = format!(
            "{text}\n[groups.window]\nallow = [\"daily 03:00-04:00 UTC\", \"Sun 01:00-02:00 UTC\"]\n"
        );
        assert_eq!(parse(&own).unwrap().groups[0].windows.len(), 2);
        for (bad, key) in [
            (
                format!(
                    "{GOOD}\n[groups.window]\nallow = [\"Sat 01:00-05:00 Atlantis/Nowhere\"]\n"
                ),
                "groups[0].window.allow[0]",
            ),
            (
                format!("{GOOD}\n[groups.window]\nallow = []\n"),
                "groups[0].window.allow",
            ),
            (
                GOOD.replace(
                    "[[groups]]",
                    "[notify]\nwebhook = \"http://hooks.example/h\"\n\n[[groups]]",
                ),
                "notify.webhook",
            ),
            (
                GOOD.replace(
                    "[[groups]]",
                    "[trust]\nrequire_signature = true\n\n[[groups]]",
                ),
                "trust",
            ),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("url_env = \"HUBSHIFT_DATABASE_URL\"", ""),
                "database",
            ),
            (
                GOOD.replace("role = \"primary\"", "role = \"secondary\""),
                "groups[0].nodes",
            ),
            (
                GOOD.replace("hub-a.example:7443", "hub-a.example"),
                "groups[0].nodes[0].agent",
            ),
            (
                GOOD.replace("name = \"hub-b\"", "name = \"hub-a\""),
                "groups[0].nodes[1].name",
            ),
            (GOOD.replace("[tls]", "[tls]\nbogus = 1"), "bogus"),
            (
                GOOD.replace("[database]", "[database]\nschema = \"a;drop\""),
                "database.schema",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
            assert!(err.contains("inventory.toml"), "{err} should name the file");
        }
        let err = parse(GOOD).unwrap().group("nope").unwrap_err().to_string();
        assert!(err.contains("plant-a"), "{err}");
    }

    const FLEET: &str = r#"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"

[checks]
command = ["/usr/local/bin/read-fresh-value", "--max-age", "5s"]

[[groups]]
name = "plant-1"
nodes = [
  { name = "a", agent = "10.1.0.1:7443", role = "primary" },
  { name = "b", agent = "10.1.0.2:7443", role = "secondary" },
]
[groups.database]
url_file = "plant-1.url"
schema = "ha"

[[groups]]
name = "plant-2"
nodes = [
  { name = "a", agent = "10.2.0.1:7443", role = "primary" },
  { name = "b", agent = "10.2.0.2:7443", role = "secondary" },
]
[groups.database]
url_env = "PLANT2_DB"
[groups.checks]
command = ["/bin/true"]
timeout_secs = 5
"#;

    #[test]
    fn each_group_may_name_its_own_database_and_check() {
        let inv = parse(FLEET).unwrap();
        let p1 = inv.group("plant-1").unwrap();
        assert_eq!(
            p1.database.url_file.as_deref(),
            Some(Path::new("/etc/hubshift/plant-1.url"))
        );
        assert_eq!(p1.database.schema, "ha");
        assert_eq!(p1.database_key, "groups[0].database");
        assert_eq!(
            p1.checks.as_ref().map(|c| c.command[0].as_str()),
            Some("/usr/local/bin/read-fresh-value")
        );
        let p2 = inv.group("plant-2").unwrap();
        assert_eq!(p2.database.url_env.as_deref(), Some("PLANT2_DB"));
        assert_eq!(p2.database.schema, "orchestration");
        let c2 = p2.checks.as_ref().unwrap();
        assert_eq!((c2.command[0].as_str(), c2.timeout_secs), ("/bin/true", 5));
        // A group's own database replaces the default as a whole.
        let with_default = format!("[database]\nurl_env = \"DEFAULT_DB\"\n{FLEET}");
        let inv = parse(&with_default).unwrap();
        assert_eq!(
            inv.group("plant-2").unwrap().database.url_env.as_deref(),
            Some("PLANT2_DB")
        );
        let err = inv
            .database_url(inv.group("plant-2").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("groups[1].database.url_env"), "{err}");
    }

    #[test]
    fn a_group_without_any_database_or_with_a_bad_check_is_refused_by_key() {
        let no_db = FLEET.replace("[groups.database]\nurl_env = \"PLANT2_DB\"\n", "");
        let err = parse(&no_db).unwrap_err().to_string();
        assert!(err.contains("groups[1].database"), "{err}");
        assert!(err.contains("plant-2"), "{err}");
        let bad_check = FLEET.replace("command = [\"/bin/true\"]", "command = []");
        let err = parse(&bad_check).unwrap_err().to_string();
        assert!(err.contains("groups[1].checks.command"), "{err}");
        let bad_schema = FLEET.replace("schema = \"ha\"", "schema = \"hubshift\"");
        let err = parse(&bad_schema).unwrap_err().to_string();
        assert!(err.contains("groups[0].database.schema"), "{err}");
    }

    #[test]
    fn the_packaged_example_parses_with_and_without_its_commented_groups() {
        let text = include_str!("../../packaging/inventory.example.toml");
        let inv = parse(text).unwrap();
        assert_eq!(inv.groups.len(), 1);
        // Uncommenting the second group, its database and its check.
        let mut open = String::new();
        let mut in_tail = false;
        for line in text.lines() {
            if line.starts_with("# A plant with its own PostgreSQL") {
                in_tail = true;
                continue;
            }
            open.push_str(if in_tail {
                line.strip_prefix("# ").unwrap_or(line)
            } else {
                line
            });
            open.push('\n');
        }
        let inv = parse(&open).unwrap();
        let b = inv.group("plant-b").unwrap();
        assert_eq!(b.database.url_env.as_deref(), Some("PLANT_B_DATABASE_URL"));
        assert_eq!(b.database_key, "groups[1].database");
        assert!(b.checks.is_some());
        assert_eq!(inv.group("plant-a").unwrap().database_key, "database");
    }

    #[test]
    fn the_new_timeouts_are_bounded_and_a_stop_longer_than_the_agents_allow_is_refused() {
        for (line, key) in [
            ("hub_takeover = 0", "timeouts.hub_takeover"),
            ("database = 0", "timeouts.database"),
            ("database = 100000", "timeouts.database"),
            ("stop = 3601", "timeouts.stop"),
        ] {
            let text = format!("{GOOD}\n[timeouts]\n{line}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
        let ok = format!("{GOOD}\n[timeouts]\nhub_takeover = 3\ndatabase = 30\nstop = 3600\n");
        let inv = parse(&ok).unwrap();
        assert_eq!((inv.timeouts.hub_takeover, inv.timeouts.database), (3, 30));
    }
}
