//! A whole HA group on one machine: a throwaway PostgreSQL, a private CA,
//! one `hubshift-agent` per node configured for hubsim runtimes, and the
//! group started in HA at a first version — what an operator has before an
//! upgrade. Used by `hubshift-sandbox` (demo, up) and the end-to-end tests.
//! With [`HubDriver::Docker`] each hub is a container of the local Docker
//! Engine made from a hubsim image; everything the sandbox made in the
//! engine (containers, images) goes when it is dropped.

use crate::configs::{
    self, AgentConfig, AgentDocker, AgentHub, AgentPaths, AgentTls, DockerStartMode, DriverKind,
    Inventory, InventoryBackups, InventoryDatabase, InventoryGroup, InventoryNode,
    InventoryTimeouts, InventoryTls, Layout, NodeRole, RoleProbe,
};
use crate::hubsim::owner::EXIT_WITH_PID_ENV;
use crate::lifetime::Watchdog;
use crate::pg::{PgError, TestDatabase};
use crate::timing::SimTiming;
use hubshift_common::pb::hub_agent_client::HubAgentClient;
use hubshift_common::pb::{self, HubRole, HubState, StartMode};
use hubshift_common::pki::{self, Authority, Usage};
use hubshift_common::tls::TlsFiles;
use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

/// Name the controller's certificate carries (the agents' allow-list entry).
pub const CONTROLLER_NAME: &str = "hubshift-controller";

/// Something the sandbox could not set up.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// PostgreSQL could not be started or reached.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A binary is missing.
    #[error(transparent)]
    Bin(#[from] crate::bins::BinError),
    /// A runtime archive could not be written.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A hubsim image could not be built.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// Certificates could not be minted.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// File system trouble.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TOML file could not be written or read back.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the toml crate said.
        message: String,
    },
    /// An agent did not behave.
    #[error("{0}")]
    Agent(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// The directory everything of a sandbox or fleet lives in: `dir`, or a
/// temp dir (prefixed `prefix`) removed on drop and, should this process be
/// killed, by a watchdog.
pub(crate) fn root_dir(
    dir: Option<&Path>,
    prefix: &str,
) -> Result<(Option<tempfile::TempDir>, PathBuf, Option<Watchdog>), SandboxError> {
    let (tmp, root) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
            (
                None,
                std::path::absolute(d).map_err(io(format!("resolving {}", d.display())))?,
            )
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map_err(io("creating a temp dir"))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let watchdog = match &tmp {
        Some(t) => Some(Watchdog::remove_dir(t.path()).map_err(io("starting a watchdog"))?),
        None => None,
    };
    Ok((tmp, root, watchdog))
}

/// How to build the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Number of nodes; the first is the primary.
    pub nodes: usize,
    /// Runtime version the group runs at the start.
    pub version: String,
    /// hubsim timings.
    pub timing: SimTiming,
    /// Where to keep everything; a temp dir (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// How the agents run the hubs.
    pub driver: HubDriver,
    /// Driver docker: appData in a named volume per node (the agents then
    /// work on its mount point) instead of a bind-mounted directory.
    pub appdata_volume: bool,
    /// Driver docker: start the hubs as an older image must be (a command
    /// override with `--mode HA_INIT|HA`) instead of through `START_MODE`.
    pub command_override: bool,
    /// Nodes are named `<node_prefix>-a`, `<node_prefix>-b`, …
    pub node_prefix: String,
}

/// The agents' hub driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HubDriver {
    /// hubsim as host processes, runtimes as tar.gz archives.
    #[default]
    Process,
    /// hubsim containers of the local Docker Engine on a private network
    /// of their own (the sandbox's PostgreSQL also listens on its gateway),
    /// runtimes as `docker save` archives of hubsim images.
    Docker,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            nodes: 2,
            version: "4.1.0".into(),
            timing: SimTiming::fast(),
            dir: None,
            driver: HubDriver::Process,
            appdata_volume: false,
            command_override: false,
            node_prefix: "hub".into(),
        }
    }
}

/// The files of the sandbox's PKI.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// CA certificate.
    pub ca: PathBuf,
    /// Controller certificate.
    pub controller_cert: PathBuf,
    /// Controller key.
    pub controller_key: PathBuf,
}

impl CertPaths {
    /// The inventory's `[tls]`: the controller's certificate and the CA.
    pub fn inventory_tls(&self) -> InventoryTls {
        InventoryTls {
            ca: self.ca.clone(),
            cert: self.controller_cert.clone(),
            key: self.controller_key.clone(),
        }
    }
}

/// One node: its agent and its directories.
pub struct SandboxNode {
    /// HA node name.
    pub name: String,
    /// Agent configuration file.
    pub config: PathBuf,
    /// Agent state dir (backups, hub.log, hub.json).
    pub state_dir: PathBuf,
    /// Hub install root (runtimes/, current).
    pub install_root: PathBuf,
    /// Hub appdata.
    pub appdata: PathBuf,
    /// Agent's own log.
    pub agent_log: PathBuf,
    /// Address the agent listens on.
    pub addr: String,
    /// The hub's container (driver docker), else empty.
    pub container: String,
    agent: Option<Child>,
}

impl SandboxNode {
    /// The hub's output as the agent (or the engine) keeps it, for
    /// messages: what could not be read is said in its place.
    pub fn hub_log(&self) -> String {
        self.read_hub_log()
            .unwrap_or_else(|e| format!("(the hub log cannot be read: {e})"))
    }

    /// The hub's output as the agent (or the engine) keeps it; an error
    /// when it cannot be read, so that a check that something is absent
    /// from it cannot pass on a failed read.
    pub fn read_hub_log(&self) -> Result<String, SandboxError> {
        if !self.container.is_empty() {
            let o = Command::new("docker")
                .args(["logs", &self.container])
                .output()
                .map_err(io("running docker logs"))?;
            if !o.status.success() {
                return Err(SandboxError::Agent(format!(
                    "docker logs {}: {}",
                    self.container,
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            return Ok(String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr));
        }
        let path = self.state_dir.join("hub.log");
        std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))
    }

    /// The agent's own log, for messages (see [`SandboxNode::read_agent_log`]).
    pub fn agent_log_text(&self) -> String {
        self.read_agent_log()
            .unwrap_or_else(|e| format!("(the agent log cannot be read: {e})"))
    }

    /// The agent's own log; an error when it cannot be read.
    pub fn read_agent_log(&self) -> Result<String, SandboxError> {
        std::fs::read_to_string(&self.agent_log)
            .map_err(io(format!("reading {}", self.agent_log.display())))
    }

    /// pid of the hub the agent supervises, from its state file (or the
    /// engine: the container's main process, while it runs).
    pub fn hub_pid(&self) -> Option<i32> {
        if !self.container.is_empty() {
            let out = Command::new("docker")
                .args(["inspect", "--format", "{{.State.Pid}}", &self.container])
                .output()
                .ok()?;
            let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            return (pid > 0).then_some(pid);
        }
        let text = std::fs::read_to_string(self.state_dir.join("hub.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("pid")?.as_i64().map(|p| p as i32)
    }

    /// pid of the node's agent, while the sandbox runs it.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// SIGKILLs the agent and reaps it.
    fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_hub(&self) {
        if !self.container.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "--force", &self.container])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            return;
        }
        if let Some(pid) = self.hub_pid().filter(|p| *p > 1) {
            // SAFETY: signalling a process group we started; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for SandboxNode {
    /// Also covers a sandbox dropped half-built (a signal during start).
    fn drop(&mut self) {
        self.kill_agent();
        self.kill_hub();
    }
}

/// A running HA group.
pub struct Sandbox {
    /// Root directory of everything.
    pub root: PathBuf,
    /// The database.
    pub db: TestDatabase,
    /// PKI files.
    pub certs: CertPaths,
    /// Nodes; `nodes[0]` is the primary.
    pub nodes: Vec<SandboxNode>,
    /// hubsim timings.
    pub timing: SimTiming,
    /// Version the group was started at.
    pub version: String,
    /// How the agents run the hubs.
    pub driver: HubDriver,
    /// Image repository of the agents (driver docker), else empty.
    pub image_repository: String,
    /// The hubs' private network (driver docker), else empty.
    pub network: String,
    /// Address the hubs reach PostgreSQL on (driver docker), else empty.
    pub hub_db_host: String,
    /// Named appData volumes the agents created (removed at teardown).
    pub volumes: Vec<String>,
    archives: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    // After `_tmp`: in an orderly teardown the directory is already gone.
    _watchdog: Option<Watchdog>,
}

fn sim_command(verb: &str, timing: &SimTiming) -> Vec<String> {
    let mut v: Vec<String> = [
        "{runtime}/bin/hubsim",
        verb,
        "-n",
        "{node}",
        "-j",
        "env:HUBSHIFT_JDBC_URI",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(timing.hubsim_args());
    v
}

/// The agent configuration the sandbox writes for a node whose hub is a
/// container of image repository `repository`.
pub fn docker_agent_config(
    node: &SandboxNode,
    tls: (&Path, &Path, &Path),
    timing: &SimTiming,
    repository: &str,
    network: &str,
    volume: &str,
    command_override: bool,
) -> AgentConfig {
    let mut args = vec!["start".to_string()];
    args.extend(timing.hubsim_args());
    let command = |mode: &str| {
        let mut argv: Vec<String> = [crate::image::HUBSIM, "container", "start", "--mode", mode]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(timing.hubsim_args());
        argv
    };
    let (start_mode, create_and_start_command, start_command) = if command_override {
        (DockerStartMode::Command, command("HA_INIT"), command("HA"))
    } else {
        (DockerStartMode::Env, Vec::new(), Vec::new())
    };
    let hub = AgentHub {
        layout: None,
        driver: Some(DriverKind::Docker),
        create_command: Vec::new(),
        start_command: Vec::new(),
        working_dir: None,
        stop_timeout_secs: 10,
        create_timeout_secs: 60,
        env: BTreeMap::new(),
    };
    let docker = AgentDocker {
        container: node.container.clone(),
        image_repository: repository.into(),
        network: network.into(),
        appdata_volume: volume.into(),
        args,
        start_mode,
        create_and_start_command,
        start_command,
        created_pattern: "created HA schema".into(),
    };
    agent_config_around(node, tls, hub, Some(docker))
}

/// The agent configuration the sandbox writes for a node. Its hubs are told
/// to exit with this process, which they outlive otherwise (see
/// [`crate::lifetime`]).
pub fn agent_config(
    node: &SandboxNode,
    tls: (&Path, &Path, &Path),
    timing: &SimTiming,
) -> AgentConfig {
    let hub = AgentHub {
        layout: Some(Layout::Vendor),
        driver: None,
        create_command: sim_command("create", timing),
        start_command: sim_command("start", timing),
        working_dir: Some("{runtime}".into()),
        stop_timeout_secs: 10,
        create_timeout_secs: 60,
        // hubsim ends when the sandbox (this process) does, however it ends.
        env: BTreeMap::from([(
            EXIT_WITH_PID_ENV.to_string(),
            std::process::id().to_string(),
        )]),
    };
    agent_config_around(node, tls, hub, None)
}

/// An agent configuration for `node`: listen address, TLS, paths, the
/// given `[hub]` (and `[docker]`), and the log role probe hubsim's output
/// calls for.
pub fn agent_config_around(
    node: &SandboxNode,
    tls: (&Path, &Path, &Path),
    hub: AgentHub,
    docker: Option<AgentDocker>,
) -> AgentConfig {
    AgentConfig {
        listen: "127.0.0.1:0".into(),
        tls: AgentTls {
            cert: tls.0.to_path_buf(),
            key: tls.1.to_path_buf(),
            client_ca: tls.2.to_path_buf(),
            allowed_clients: vec![CONTROLLER_NAME.into()],
        },
        paths: AgentPaths {
            state_dir: node.state_dir.clone(),
            install_root: node.install_root.clone(),
            appdata: node.appdata.clone(),
        },
        hub,
        docker,
        role_probe: RoleProbe::hubsim_log(),
    }
}

/// Writes `value` as TOML to `path`, after a comment line.
pub fn write_toml<T: serde::Serialize>(
    path: &Path,
    comment: &str,
    value: &T,
) -> Result<(), SandboxError> {
    let text = configs::to_toml(comment, value).map_err(|e| SandboxError::Toml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// The hub settings the sandbox gives each node: appData bound to the
/// agent's configured appdata, `directories.storeForwardData` unset (so
/// store-and-forward files live in the runtime directory, the case a
/// runtime switch must carry).
pub fn hub_settings(appdata: &Path) -> String {
    serde_json::json!({ "directories": { "appData": appdata } }).to_string() + "\n"
}

/// Writes `<appdata>/intelligencehub-settings.json`, where the agent points
/// the hub (HIGHBYTE_SETTINGS_FILE).
pub fn write_settings(appdata: &Path, json: &str) -> Result<(), SandboxError> {
    let file = appdata.join("intelligencehub-settings.json");
    std::fs::write(&file, json).map_err(io(format!("writing {}", file.display())))
}

/// Unpacks a runtime archive as an operator's existing installation:
/// `runtimes/<version>/` and `current` pointing at it.
pub fn preinstall_runtime(
    install_root: &Path,
    archive: &Path,
    version: &str,
) -> Result<(), SandboxError> {
    let dest = install_root.join("runtimes").join(version);
    std::fs::create_dir_all(&dest).map_err(io(format!("creating {}", dest.display())))?;
    let file =
        std::fs::File::open(archive).map_err(io(format!("opening {}", archive.display())))?;
    hubshift_common::archive::unpack_tar_gz(file, &dest, Default::default())
        .map_err(|e| SandboxError::Agent(format!("unpacking {}: {e}", archive.display())))?;
    let link = install_root.join("current");
    let _ = std::fs::remove_file(&link);
    symlink(Path::new("runtimes").join(version), &link).map_err(io("linking current"))?;
    Ok(())
}

/// The CA and the controller's certificate: one per sandbox, or one for a
/// whole fleet (the inventory names one CA and one controller certificate).
pub struct SandboxPki {
    authority: Authority,
    /// Its files.
    pub certs: CertPaths,
}

impl SandboxPki {
    /// A new CA and controller certificate, written into `dir`.
    pub fn create(dir: &Path) -> Result<SandboxPki, SandboxError> {
        std::fs::create_dir_all(dir).map_err(io("creating certs dir"))?;
        let authority = Authority::new("hubshift sandbox CA")?;
        let ca = pki::write_pair(dir, "ca", authority.ca(), true)?;
        let ctl = authority.issue(CONTROLLER_NAME, &[], Usage::Client)?;
        let ctl = pki::write_pair(dir, CONTROLLER_NAME, &ctl, true)?;
        Ok(SandboxPki {
            authority,
            certs: CertPaths {
                ca: ca.cert,
                controller_cert: ctl.cert,
                controller_key: ctl.key,
            },
        })
    }

    /// Issues agent `name`'s server certificate (for `localhost` and
    /// 127.0.0.1) into `dir`.
    pub fn issue_agent(&self, dir: &Path, name: &str) -> Result<pki::WrittenPair, SandboxError> {
        std::fs::create_dir_all(dir).map_err(io("creating certs dir"))?;
        let minted = self.authority.issue(
            name,
            &["localhost".into(), "127.0.0.1".into()],
            Usage::Server,
        )?;
        Ok(pki::write_pair(dir, name, &minted, true)?)
    }
}

/// What a group gets from elsewhere instead of making it itself, so that
/// several groups live side by side (see [`crate::fleet`]): a database on a
/// server they share, one PKI, one directory of runtime archives.
pub struct SharedParts {
    /// The group's own database (made with
    /// [`TestDatabase::create_database`]); the server outlives the group
    /// while another handle lives.
    pub database: TestDatabase,
    /// The CA that signs the group's agents.
    pub pki: std::sync::Arc<SandboxPki>,
    /// Where runtime archives are written and found.
    pub archives: PathBuf,
}

impl Sandbox {
    /// Builds and starts the whole group; returns when the primary is active
    /// and every secondary is standby.
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        Self::build(opts, None).await
    }

    /// Like [`Sandbox::start`], on the given database, PKI and archives
    /// (hubs as host processes only: containers would need the shared
    /// server to listen on each group's network).
    pub async fn start_shared(
        opts: SandboxOptions,
        shared: SharedParts,
    ) -> Result<Sandbox, SandboxError> {
        if opts.driver != HubDriver::Process {
            return Err(SandboxError::Agent(
                "a group on a shared database runs its hubs as host processes (driver process)"
                    .into(),
            ));
        }
        Self::build(opts, Some(shared)).await
    }

    async fn build(
        opts: SandboxOptions,
        shared: Option<SharedParts>,
    ) -> Result<Sandbox, SandboxError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if opts.nodes < 2 {
            return Err(SandboxError::Agent(
                "an HA group needs at least two nodes".into(),
            ));
        }
        if opts.nodes > 26 {
            return Err(SandboxError::Agent(
                "a sandbox group has at most 26 nodes (hub-a to hub-z)".into(),
            ));
        }
        let (tmp, root, watchdog) = root_dir(opts.dir.as_deref(), "hubshift-sandbox-")?;
        // Unique per sandbox: several may share one engine.
        let tag = format!(
            "hubshift-sandbox-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut network = NetworkGuard(String::new());
        let mut hub_db_host = String::new();
        let certs_dir = root.join("certs");
        let (db, pki, archives) = match shared {
            Some(shared) => (shared.database, shared.pki, shared.archives),
            None => {
                let db = if opts.driver == HubDriver::Docker {
                    crate::image::engine_available()
                        .map_err(|e| SandboxError::Agent(format!("no Docker Engine: {e}")))?;
                    let (gateway, subnet) = crate::image::create_network(&tag)?;
                    network.0 = tag.clone();
                    hub_db_host = gateway.clone();
                    TestDatabase::create_reachable_from(Some((gateway, subnet))).await?
                } else {
                    TestDatabase::create().await?
                };
                let pki = std::sync::Arc::new(SandboxPki::create(&certs_dir)?);
                (db, pki, root.join("archives"))
            }
        };
        let certs = pki.certs.clone();
        let image_repository = match opts.driver {
            HubDriver::Docker => format!("{tag}/hub"),
            HubDriver::Process => String::new(),
        };
        let archive = Self::archive_in(&archives, &opts.version, opts.driver)?;
        let agent_bin = crate::bins::binary("hubshift-agent")?;
        let mut nodes = Vec::new();
        let mut volumes = Vec::new();
        for i in 0..opts.nodes {
            let name = format!("{}-{}", opts.node_prefix, (b'a' + i as u8) as char);
            let dir = root.join("nodes").join(&name);
            let mut node = SandboxNode {
                config: dir.join("agent.toml"),
                state_dir: dir.join("state"),
                install_root: dir.join("install"),
                appdata: dir.join("appdata"),
                agent_log: dir.join("agent.log"),
                addr: String::new(),
                container: match opts.driver {
                    HubDriver::Docker => format!("{tag}-{name}"),
                    HubDriver::Process => String::new(),
                },
                agent: None,
                name: name.clone(),
            };
            for d in [&node.state_dir, &node.install_root, &node.appdata] {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
            }
            std::fs::set_permissions(&node.state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("chmod state dir"))?;
            let pair = pki.issue_agent(&certs_dir, &name)?;
            let tls = (&*pair.cert, &*pair.key, &*certs.ca);
            let (mut config, what) = match opts.driver {
                HubDriver::Process => (agent_config(&node, tls, &opts.timing), "a hubsim node"),
                HubDriver::Docker => {
                    let volume = if opts.appdata_volume {
                        let v = format!("{}-appdata", node.container);
                        volumes.push(v.clone());
                        v
                    } else {
                        String::new()
                    };
                    let config = docker_agent_config(
                        &node,
                        tls,
                        &opts.timing,
                        &image_repository,
                        &tag,
                        &volume,
                        opts.command_override,
                    );
                    (config, "a hubsim container")
                }
            };
            let comment = format!(
                "hubshift-agent configuration for {what} ({name}), written by the sandbox."
            );
            write_toml(&node.config, &comment, &config)?;
            if opts.driver == HubDriver::Process {
                preinstall_runtime(&node.install_root, &archive, &opts.version)?;
                write_settings(&node.appdata, &hub_settings(&node.appdata))?;
            }
            spawn_agent(&agent_bin, &mut node).await?;
            // Keep the port across agent restarts, as a real host does: the
            // inventory names it.
            config.listen = node.addr.clone();
            write_toml(&node.config, &comment, &config)?;
            nodes.push(node);
        }
        let mut sandbox = Sandbox {
            root,
            db,
            certs,
            nodes,
            timing: opts.timing,
            version: opts.version.clone(),
            driver: opts.driver,
            image_repository,
            network: std::mem::take(&mut network.0),
            hub_db_host,
            volumes,
            archives,
            _tmp: tmp,
            _watchdog: watchdog,
        };
        if opts.driver == HubDriver::Docker {
            // The operator's starting point: the first image loaded and active.
            for i in 0..sandbox.nodes.len() {
                sandbox
                    .install_runtime(i, &archive, &opts.version, true)
                    .await?;
            }
            if opts.appdata_volume {
                // The agent works on the volume's mount point; so do we.
                for i in 0..sandbox.nodes.len() {
                    let appdata = sandbox.status(i).await?.appdata;
                    sandbox.nodes[i].appdata = PathBuf::from(appdata);
                }
            }
        }
        sandbox.start_ha().await?;
        Ok(sandbox)
    }

    /// The runtime archive for `version` in directory `archives`, written
    /// there first if it is not yet (through a temporary file renamed into
    /// place, so groups sharing the directory never see half an archive).
    pub fn archive_in(
        archives: &Path,
        version: &str,
        driver: HubDriver,
    ) -> Result<PathBuf, SandboxError> {
        let hubsim = crate::bins::binary("hubsim")?;
        match driver {
            HubDriver::Process => {
                let path = archives.join(crate::runtime::archive_name(version));
                if !path.exists() {
                    crate::runtime::write_runtime_archive(version, &path, &hubsim)?;
                }
                Ok(path)
            }
            HubDriver::Docker => {
                let path = archives.join(format!("hubsim-image-{version}.tar"));
                if !path.exists() {
                    std::fs::create_dir_all(archives).map_err(io("creating archives dir"))?;
                    crate::image::write_image_archive(version, &hubsim, &path)?;
                }
                Ok(path)
            }
        }
    }

    /// A runtime archive for `version` as the agents take it: a hubsim
    /// runtime tar.gz, or a `docker save` archive of a hubsim image
    /// (written once, in `<root>/archives` or the archives it shares).
    pub fn runtime_archive(&self, version: &str) -> Result<PathBuf, SandboxError> {
        Self::archive_in(&self.archives, version, self.driver)
    }

    /// Uploads `archive` to node `i`'s agent with InstallRuntime.
    pub async fn install_runtime(
        &self,
        i: usize,
        archive: &Path,
        version: &str,
        activate: bool,
    ) -> Result<(), SandboxError> {
        use hubshift_common::digest::StreamDigest;
        let bytes = std::fs::read(archive).map_err(io(format!("reading {}", archive.display())))?;
        let mut digest = StreamDigest::new();
        digest.update(&bytes);
        let format = match self.driver {
            HubDriver::Process => pb::ArchiveFormat::TarGz,
            HubDriver::Docker => pb::ArchiveFormat::DockerImage,
        };
        let mut msgs = vec![pb::InstallRuntimeRequest {
            item: Some(pb::install_runtime_request::Item::Header(
                pb::RuntimeHeader {
                    version: version.into(),
                    sha256: digest.finish(),
                    size_bytes: bytes.len() as u64,
                    format: format as i32,
                    activate,
                },
            )),
        }];
        msgs.extend(bytes.chunks(256 * 1024).map(|c| pb::InstallRuntimeRequest {
            item: Some(pb::install_runtime_request::Item::Chunk(c.to_vec())),
        }));
        let mut c = self.client(i).await?;
        c.install_runtime(tokio_stream::iter(msgs))
            .await
            .map_err(|s| {
                SandboxError::Agent(format!(
                    "installing {version} on {}: {}",
                    self.nodes[i].name,
                    s.message()
                ))
            })?;
        Ok(())
    }

    /// The JDBC URI as the hubs reach the database.
    pub fn hub_jdbc_uri(&self) -> String {
        if self.hub_db_host.is_empty() {
            self.db.jdbc_uri()
        } else {
            self.db.jdbc_uri_via(&self.hub_db_host)
        }
    }

    async fn start_ha(&self) -> Result<(), SandboxError> {
        let jdbc = self.hub_jdbc_uri();
        let primary = &self.nodes[0];
        let mut p = self.client(0).await?;
        p.start(pb::StartRequest {
            mode: StartMode::CreateAndStart as i32,
            node: primary.name.clone(),
            jdbc_uri: jdbc.clone(),
        })
        .await
        .map_err(|s| SandboxError::Agent(format!("starting {}: {}", primary.name, s.message())))?;
        self.wait_role(0, HubRole::Active, Duration::from_secs(60))
            .await?;
        let cert = p
            .get_certificate(pb::GetCertificateRequest {})
            .await
            .map_err(|s| {
                SandboxError::Agent(format!("certificate of {}: {}", primary.name, s.message()))
            })?
            .into_inner();
        for i in 1..self.nodes.len() {
            let mut c = self.client(i).await?;
            c.put_certificate(cert.clone()).await.map_err(|s| {
                SandboxError::Agent(format!(
                    "certificate to {}: {}",
                    self.nodes[i].name,
                    s.message()
                ))
            })?;
            c.start(pb::StartRequest {
                mode: StartMode::Start as i32,
                node: self.nodes[i].name.clone(),
                jdbc_uri: jdbc.clone(),
            })
            .await
            .map_err(|s| {
                SandboxError::Agent(format!("starting {}: {}", self.nodes[i].name, s.message()))
            })?;
        }
        for i in 1..self.nodes.len() {
            self.wait_role(i, HubRole::Standby, Duration::from_secs(60))
                .await?;
        }
        Ok(())
    }

    /// TLS files the controller uses.
    pub fn controller_tls(&self) -> TlsFiles {
        TlsFiles {
            cert: self.certs.controller_cert.clone(),
            key: self.certs.controller_key.clone(),
            ca: self.certs.ca.clone(),
        }
    }

    /// An mTLS client for node `i`'s agent.
    pub async fn client(&self, i: usize) -> Result<HubAgentClient<Channel>, SandboxError> {
        let node = &self.nodes[i];
        let tls = self
            .controller_tls()
            .client_config("localhost")
            .map_err(|e| SandboxError::Agent(e.to_string()))?;
        let channel = Endpoint::from_shared(format!("https://{}", node.addr))
            .map_err(|e| SandboxError::Agent(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| SandboxError::Agent(e.to_string()))?
            .connect()
            .await
            .map_err(|e| {
                SandboxError::Agent(format!("connecting to the agent of {}: {e}", node.name))
            })?;
        Ok(HubAgentClient::new(channel))
    }

    /// Node `i`'s agent Status.
    pub async fn status(&self, i: usize) -> Result<pb::StatusResponse, SandboxError> {
        let mut c = self.client(i).await?;
        Ok(c.status(pb::StatusRequest::default())
            .await
            .map_err(|s| {
                SandboxError::Agent(format!("status of {}: {}", self.nodes[i].name, s.message()))
            })?
            .into_inner())
    }

    /// Waits until node `i` runs with `role`.
    pub async fn wait_role(
        &self,
        i: usize,
        role: HubRole,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(i).await?;
            if matches!(s.state(), HubState::Running) && s.role() == role {
                return Ok(());
            }
            if matches!(s.state(), HubState::Exited) || Instant::now() >= deadline {
                return Err(SandboxError::Agent(format!(
                    "{} did not become {role:?} (state {:?}, role {:?}); hub log:\n{}",
                    self.nodes[i].name,
                    s.state(),
                    s.role(),
                    tail(&self.nodes[i].hub_log(), 30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes the database URL into `path`, mode 0600, for an inventory's
    /// `url_file`.
    pub fn write_database_url(&self, path: &Path) -> Result<(), SandboxError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        pki::write_file(path, format!("{}\n", self.db.url()).as_bytes(), 0o600, true)?;
        Ok(())
    }

    /// A `[database]` table for this group's database, its URL in `url_file`.
    pub fn inventory_database(&self, url_file: &Path) -> InventoryDatabase {
        InventoryDatabase {
            url_file: url_file.to_path_buf(),
            hub_host: (!self.hub_db_host.is_empty()).then(|| self.hub_db_host.clone()),
        }
    }

    /// This group as a `[[groups]]` entry named `group`, with its own
    /// database table when `database` is given.
    pub fn inventory_group(
        &self,
        group: &str,
        database: Option<InventoryDatabase>,
    ) -> InventoryGroup {
        InventoryGroup {
            name: group.into(),
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| InventoryNode {
                    name: n.name.clone(),
                    agent: n.addr.clone(),
                    role: if i == 0 {
                        NodeRole::Primary
                    } else {
                        NodeRole::Secondary
                    },
                    tls_name: "localhost".into(),
                })
                .collect(),
            database,
        }
    }

    /// Writes an inventory for the controller at `path`, with the database
    /// URL in a 0600 file beside it.
    pub fn write_inventory(&self, path: &Path, group: &str) -> Result<(), SandboxError> {
        self.write_inventory_with(path, group, InventoryTimeouts::sandbox(&self.timing))
    }

    /// [`Sandbox::write_inventory`] with the given `[timeouts]`: tests that
    /// derive outage bounds from them pass the same values they bound by.
    pub fn write_inventory_with(
        &self,
        path: &Path,
        group: &str,
        timeouts: InventoryTimeouts,
    ) -> Result<(), SandboxError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating inventory dir"))?;
        let url_file = dir.join("database-url");
        self.write_database_url(&url_file)?;
        let inventory = Inventory {
            database: Some(self.inventory_database(&url_file)),
            tls: self.certs.inventory_tls(),
            timeouts,
            backups: InventoryBackups {
                copy_to: self.root.join("backup-copies"),
            },
            groups: vec![self.inventory_group(group, None)],
        };
        write_toml(
            path,
            "hubshift inventory for the sandbox group, written by hubshift-sandbox.",
            &inventory,
        )
    }

    /// SIGKILLs node `i`'s agent (the hub keeps running). Fails when no
    /// live agent process was there to kill, so that a test's fault is
    /// known to have landed.
    pub fn kill_agent(&mut self, i: usize) -> Result<(), SandboxError> {
        let node = &mut self.nodes[i];
        let mut child = node.agent.take().ok_or_else(|| {
            SandboxError::Agent(format!("{}: no agent process to kill", node.name))
        })?;
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SandboxError::Agent(format!(
                "{}: the agent had already ended ({status})",
                node.name
            )));
        }
        child
            .kill()
            .map_err(|e| SandboxError::Agent(format!("{}: killing the agent: {e}", node.name)))?;
        let _ = child.wait();
        Ok(())
    }

    /// Starts node `i`'s agent again.
    pub async fn restart_agent(&mut self, i: usize) -> Result<(), SandboxError> {
        self.nodes[i].kill_agent();
        let bin = crate::bins::binary("hubshift-agent")?;
        spawn_agent(&bin, &mut self.nodes[i]).await
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill_agent();
            n.kill_hub();
        }
        if !self.image_repository.is_empty() {
            // Every image the agents loaded and tagged, with all its tags.
            let listed = Command::new("docker")
                .args(["images", "--quiet", "--no-trunc", &self.image_repository])
                .output();
            if let Ok(out) = listed {
                let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect();
                ids.sort();
                ids.dedup();
                for id in ids {
                    crate::image::remove(&id);
                }
            }
        }
        if !self.network.is_empty() {
            crate::image::remove_network(&self.network);
        }
        for v in &self.volumes {
            crate::image::remove_volume(v);
        }
    }
}

/// Removes the network when the sandbox is not built after all.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            crate::image::remove_network(&self.0);
        }
    }
}

/// Last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn spawn_agent(bin: &Path, node: &mut SandboxNode) -> Result<(), SandboxError> {
    let addr_file = node.state_dir.join("agent.addr");
    let _ = std::fs::remove_file(&addr_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.agent_log)
        .map_err(io("opening agent log"))?;
    let err_log = log.try_clone().map_err(io("opening agent log"))?;
    let mut command = Command::new(bin);
    // A sandbox killed outright takes its agents with it.
    crate::lifetime::set_die_with_parent(&mut command, libc::SIGKILL);
    let child = command
        .arg("run")
        .arg("--config")
        .arg(&node.config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(io(format!("starting {}", bin.display())))?;
    // Owned by the node at once: should this future be dropped while it
    // waits (a signal), the node's drop still stops the agent.
    let child = node.agent.insert(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file)
            && !text.trim().is_empty()
        {
            node.addr = text.trim().to_string();
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SandboxError::Agent(format!(
                "agent of {} exited ({status}) before listening:\n{}",
                node.name,
                tail(&node.agent_log_text(), 20)
            )));
        }
        if Instant::now() >= deadline {
            node.kill_agent();
            return Err(SandboxError::Agent(format!(
                "agent of {} did not start listening within 30s",
                node.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dir: &Path) -> SandboxNode {
        SandboxNode {
            name: "hub-b".into(),
            config: dir.join("agent.toml"),
            state_dir: dir.join("state"),
            install_root: dir.join("install"),
            appdata: dir.join("app \"data\""),
            agent_log: dir.join("agent.log"),
            addr: "127.0.0.1:7000".into(),
            container: "sb-hub-b".into(),
            agent: None,
        }
    }

    fn written(config: &AgentConfig) -> (String, toml::Table) {
        let text = configs::to_toml("test", config).unwrap();
        let table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (text, table)
    }

    const TLS: (&str, &str, &str) = ("/c/hub-b.crt", "/c/hub-b.key", "/c/ca.crt");

    fn tls() -> (&'static Path, &'static Path, &'static Path) {
        (Path::new(TLS.0), Path::new(TLS.1), Path::new(TLS.2))
    }

    #[test]
    fn a_process_agent_config_names_the_hubsim_commands_paths_and_owner() {
        let dir = Path::new("/sb/nodes/hub-b");
        let (text, t) = written(&agent_config(&node(dir), tls(), &SimTiming::fast()));
        assert!(text.starts_with("# test\n"), "{text}");
        assert_eq!(t["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(t["tls"]["cert"].as_str(), Some(TLS.0));
        assert_eq!(t["tls"]["client_ca"].as_str(), Some(TLS.2));
        assert_eq!(
            t["tls"]["allowed_clients"].as_array().unwrap()[0].as_str(),
            Some(CONTROLLER_NAME)
        );
        // Quotes in a path survive the trip.
        assert_eq!(
            t["paths"]["appdata"].as_str(),
            Some("/sb/nodes/hub-b/app \"data\"")
        );
        let hub = t["hub"].as_table().unwrap();
        assert_eq!(hub["layout"].as_str(), Some("vendor"));
        assert!(!hub.contains_key("driver"));
        assert_eq!(hub["working_dir"].as_str(), Some("{runtime}"));
        let create: Vec<&str> = hub["create_command"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(create[..3], ["{runtime}/bin/hubsim", "create", "-n"]);
        assert!(create.contains(&"env:HUBSHIFT_JDBC_URI"));
        assert_eq!(
            hub["env"][EXIT_WITH_PID_ENV].as_str(),
            Some(std::process::id().to_string().as_str())
        );
        assert_eq!(t["role_probe"]["kind"].as_str(), Some("log"));
        assert!(!t.contains_key("docker"));
    }

    #[test]
    fn a_docker_agent_config_has_a_docker_table_tests_can_extend() {
        let dir = Path::new("/sb/nodes/hub-b");
        let timing = SimTiming::fast();
        let env = docker_agent_config(&node(dir), tls(), &timing, "sb/hub", "sb-net", "", false);
        let (text, t) = written(&env);
        // The end-to-end tests insert keys right after this header line.
        assert!(text.contains("\n[docker]\n"), "{text}");
        assert_eq!(t["hub"]["driver"].as_str(), Some("docker"));
        let docker = t["docker"].as_table().unwrap();
        assert_eq!(docker["container"].as_str(), Some("sb-hub-b"));
        assert_eq!(docker["image_repository"].as_str(), Some("sb/hub"));
        assert_eq!(docker["network"].as_str(), Some("sb-net"));
        assert_eq!(docker["start_mode"].as_str(), Some("env"));
        assert!(!docker.contains_key("start_command"));
        assert_eq!(
            docker["args"].as_array().unwrap()[0].as_str(),
            Some("start")
        );

        let old = docker_agent_config(&node(dir), tls(), &timing, "sb/hub", "sb-net", "v", true);
        let (_, t) = written(&old);
        let docker = t["docker"].as_table().unwrap();
        assert_eq!(docker["start_mode"].as_str(), Some("command"));
        assert_eq!(docker["appdata_volume"].as_str(), Some("v"));
        let mode = |key: &str| -> Vec<String> {
            docker[key]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(
            mode("create_and_start_command")[..5],
            [
                crate::image::HUBSIM,
                "container",
                "start",
                "--mode",
                "HA_INIT"
            ]
        );
        assert_eq!(mode("start_command")[4], "HA");
    }
}
