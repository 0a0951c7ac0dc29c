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

/// Where the database URL comes from: never inline, so that inventories can
/// be committed to a repository.
#[derive(Debug, Clone, Deserialize)]
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
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        Self {
            stop: 60,
            takeover: 120,
            start: 300,
            secondary_shutdown: 30,
            standby_join: 300,
            rpc: 30,
            backup: 3600,
        }
    }
}

/// Optional copies of backups on the controller's side.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsSection {
    /// Directory the primary's backup is also fetched into and verified.
    pub copy_to: Option<PathBuf>,
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

/// One HA group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Name used on the command line and in the journal.
    pub name: String,
    /// Its nodes: exactly one primary, at least one secondary.
    pub nodes: Vec<Node>,
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
    database: DatabaseSection,
    tls: TlsSection,
    #[serde(default)]
    timeouts: TimeoutsSection,
    #[serde(default)]
    backups: BackupsSection,
    groups: Vec<Group>,
}

/// A validated inventory with paths resolved against its directory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The file it was read from.
    pub path: PathBuf,
    /// Database settings.
    pub database: DatabaseSection,
    /// Controller TLS files.
    pub tls: TlsSection,
    /// Timeouts.
    pub timeouts: TimeoutsSection,
    /// Controller-side backup copies.
    pub backups: BackupsSection,
    /// HA groups.
    pub groups: Vec<Group>,
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
        let mut inv = Inventory {
            path: path.to_path_buf(),
            tls: TlsSection {
                ca: resolve(&raw.tls.ca),
                cert: resolve(&raw.tls.cert),
                key: resolve(&raw.tls.key),
            },
            database: raw.database,
            timeouts: raw.timeouts,
            backups: raw.backups,
            groups: raw.groups,
        };
        inv.database.url_file = inv.database.url_file.as_deref().map(resolve);
        inv.database.ca_file = inv.database.ca_file.as_deref().map(resolve);
        inv.backups.copy_to = inv.backups.copy_to.as_deref().map(resolve);
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

    fn validate(&self) -> Result<(), InventoryError> {
        match (&self.database.url_env, &self.database.url_file) {
            (None, None) => {
                return Err(self.invalid(
                    "database",
                    "set url_env (an environment variable) or url_file (a file) holding the PostgreSQL URL",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(self.invalid("database", "set only one of url_env and url_file"));
            }
            _ => {}
        }
        if !valid_identifier(&self.database.schema) {
            return Err(self.invalid(
                "database.schema",
                "must be a plain SQL identifier (letters, digits, _; not starting with a digit)",
            ));
        }
        if self.database.schema == crate::journal::JOURNAL_SCHEMA {
            return Err(self.invalid(
                "database.schema",
                "`hubshift` is the journal's schema, not the hub's",
            ));
        }
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
        ] {
            if v == 0 || v > 86_400 {
                return Err(self.invalid(key, "must be between 1 and 86400 seconds"));
            }
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

    /// Reads the database URL from where the inventory says it is.
    pub fn database_url(&self) -> Result<String, InventoryError> {
        if let Some(var) = &self.database.url_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                _ => Err(self.invalid(
                    "database.url_env",
                    format!("environment variable {var} is not set or empty"),
                )),
            };
        }
        let file = self
            .database
            .url_file
            .as_ref()
            .ok_or_else(|| self.invalid("database", "set url_env or url_file"))?;
        let text = std::fs::read_to_string(file).map_err(|e| {
            self.invalid(
                "database.url_file",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let line = text.lines().next().unwrap_or("").trim().to_string();
        if line.is_empty() {
            return Err(self.invalid("database.url_file", format!("{} is empty", file.display())));
        }
        Ok(line)
    }

    /// Per-call timeout for agent RPCs.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.rpc)
    }
}

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
        assert_eq!(inv.database.schema, "orchestration");
        let g = inv.group("plant-a").unwrap();
        assert_eq!(g.primary().name, "hub-a");
        assert_eq!(g.primary().server_name(), "hub-a.example");
        assert_eq!(g.secondaries()[0].server_name(), "hub-b.example");
        assert_eq!(inv.timeouts.takeover, 120);
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
}
