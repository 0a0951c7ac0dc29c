//! A whole HA group on one machine: a throwaway PostgreSQL, a private CA,
//! one `hubshift-agent` per node configured for hubsim runtimes, and the
//! group started in HA at a first version — what an operator has before an
//! upgrade. Used by `hubshift-sandbox` (demo, up) and the end-to-end tests.
//! With [`HubDriver::Docker`] each hub is a container of the local Docker
//! Engine made from a hubsim image; everything the sandbox made in the
//! engine (containers, images) goes when it is dropped.

use crate::hubsim::owner::EXIT_WITH_PID_ENV;
use crate::lifetime::Watchdog;
use crate::pg::{PgError, TestDatabase};
use crate::timing::SimTiming;
use hubshift_common::pb::hub_agent_client::HubAgentClient;
use hubshift_common::pb::{self, HubRole, HubState, StartMode};
use hubshift_common::pki::{self, Authority, Usage};
use hubshift_common::tls::TlsFiles;
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
    /// An agent did not behave.
    #[error("{0}")]
    Agent(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
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
    /// The hub's output as the agent (or the engine) keeps it.
    pub fn hub_log(&self) -> String {
        if !self.container.is_empty() {
            return Command::new("docker")
                .args(["logs", &self.container])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                })
                .unwrap_or_default();
        }
        std::fs::read_to_string(self.state_dir.join("hub.log")).unwrap_or_default()
    }

    /// The agent's own log.
    pub fn agent_log_text(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
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

fn toml_str(p: &Path) -> String {
    toml_quote(&p.display().to_string())
}

fn toml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_quote(s)).collect();
    format!("[{}]", quoted.join(", "))
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
) -> String {
    let mut args = vec!["start".to_string()];
    args.extend(timing.hubsim_args());
    let start_mode = if command_override {
        let command = |mode: &str| {
            let mut argv: Vec<String> =
                [crate::image::HUBSIM, "container", "start", "--mode", mode]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            argv.extend(timing.hubsim_args());
            toml_list(&argv)
        };
        format!(
            "start_mode = \"command\"\ncreate_and_start_command = {}\nstart_command = {}",
            command("HA_INIT"),
            command("HA")
        )
    } else {
        "start_mode = \"env\"".to_string()
    };
    let hub = format!(
        r#"driver = "docker"
stop_timeout_secs = 10
create_timeout_secs = 60

[docker]
container = "{container}"
image_repository = "{repository}"
network = "{network}"
appdata_volume = "{volume}"
args = {args}
{start_mode}
created_pattern = "created HA schema"
"#,
        container = node.container,
        args = toml_list(&args),
        network = network,
        volume = volume,
        start_mode = start_mode,
    );
    agent_config_around(node, tls, "a hubsim container", &hub)
}

/// The agent configuration the sandbox writes for a node. Its hubs are told
/// to exit with this process, which they outlive otherwise (see
/// [`crate::lifetime`]).
pub fn agent_config(node: &SandboxNode, tls: (&Path, &Path, &Path), timing: &SimTiming) -> String {
    let hub = format!(
        r#"layout = "vendor"
create_command = {create}
start_command = {start}
working_dir = "{{runtime}}"
stop_timeout_secs = 10
create_timeout_secs = 60
# hubsim ends when the sandbox (process {owner}) does, however it ends.
env = {{ {owner_env} = "{owner}" }}
"#,
        create = toml_list(&sim_command("create", timing)),
        start = toml_list(&sim_command("start", timing)),
        owner_env = EXIT_WITH_PID_ENV,
        owner = std::process::id(),
    );
    agent_config_around(node, tls, "a hubsim node", &hub)
}

/// An agent configuration for `node`: listen address, TLS, paths, the
/// given `[hub]` body (with any sections that follow it), and the log
/// role probe hubsim's output calls for.
fn agent_config_around(
    node: &SandboxNode,
    tls: (&Path, &Path, &Path),
    what: &str,
    hub: &str,
) -> String {
    format!(
        r#"# hubshift-agent configuration for {what} ({name}), written by the sandbox.
listen = "127.0.0.1:0"

[tls]
cert = {cert}
key = {key}
client_ca = {ca}
allowed_clients = ["{controller}"]

[paths]
state_dir = {state}
install_root = {install}
appdata = {appdata}

[hub]
{hub}
[role_probe]
kind = "log"
active_pattern = "HA role: active"
standby_pattern = "HA role: standby"
"#,
        name = node.name,
        cert = toml_str(tls.0),
        key = toml_str(tls.1),
        ca = toml_str(tls.2),
        controller = CONTROLLER_NAME,
        state = toml_str(&node.state_dir),
        install = toml_str(&node.install_root),
        appdata = toml_str(&node.appdata),
    )
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

impl Sandbox {
    /// Builds and starts the whole group; returns when the primary is active
    /// and every secondary is standby.
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if opts.nodes < 2 {
            return Err(SandboxError::Agent(
                "an HA group needs at least two nodes".into(),
            ));
        }
        let (tmp, root) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                (
                    None,
                    std::path::absolute(d).map_err(io("resolving the sandbox dir"))?,
                )
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("hubshift-sandbox-")
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
        // Unique per sandbox: several may share one engine.
        let tag = format!(
            "hubshift-sandbox-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut network = NetworkGuard(String::new());
        let mut hub_db_host = String::new();
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
        let certs_dir = root.join("certs");
        std::fs::create_dir_all(&certs_dir).map_err(io("creating certs dir"))?;
        let ca = Authority::new("hubshift sandbox CA")?;
        let ca_paths = pki::write_pair(&certs_dir, "ca", ca.ca(), true)?;
        let ctl = ca.issue(CONTROLLER_NAME, &[], Usage::Client)?;
        let ctl_paths = pki::write_pair(&certs_dir, CONTROLLER_NAME, &ctl, true)?;
        let certs = CertPaths {
            ca: ca_paths.cert.clone(),
            controller_cert: ctl_paths.cert,
            controller_key: ctl_paths.key,
        };
        let image_repository = match opts.driver {
            HubDriver::Docker => format!("{tag}/hub"),
            HubDriver::Process => String::new(),
        };
        let archive = Self::write_archive(&root, &opts.version, opts.driver)?;
        let agent_bin = crate::bins::binary("hubshift-agent")?;
        let mut nodes = Vec::new();
        let mut volumes = Vec::new();
        for i in 0..opts.nodes {
            let name = format!("hub-{}", (b'a' + i as u8) as char);
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
            let minted = ca.issue(
                &name,
                &["localhost".into(), "127.0.0.1".into()],
                Usage::Server,
            )?;
            let pair = pki::write_pair(&certs_dir, &name, &minted, true)?;
            let tls = (&*pair.cert, &*pair.key, &*ca_paths.cert);
            let config = match opts.driver {
                HubDriver::Process => agent_config(&node, tls, &opts.timing),
                HubDriver::Docker => {
                    let volume = if opts.appdata_volume {
                        let v = format!("{}-appdata", node.container);
                        volumes.push(v.clone());
                        v
                    } else {
                        String::new()
                    };
                    docker_agent_config(
                        &node,
                        tls,
                        &opts.timing,
                        &image_repository,
                        &tag,
                        &volume,
                        opts.command_override,
                    )
                }
            };
            std::fs::write(&node.config, config).map_err(io("writing agent config"))?;
            if opts.driver == HubDriver::Process {
                preinstall_runtime(&node.install_root, &archive, &opts.version)?;
                write_settings(&node.appdata, &hub_settings(&node.appdata))?;
            }
            spawn_agent(&agent_bin, &mut node).await?;
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

    fn write_archive(
        root: &Path,
        version: &str,
        driver: HubDriver,
    ) -> Result<PathBuf, SandboxError> {
        let hubsim = crate::bins::binary("hubsim")?;
        let archives = root.join("archives");
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
                    std::fs::create_dir_all(&archives).map_err(io("creating archives dir"))?;
                    crate::image::write_image_archive(version, &hubsim, &path)?;
                }
                Ok(path)
            }
        }
    }

    /// A runtime archive for `version` as the agents take it: a hubsim
    /// runtime tar.gz, or a `docker save` archive of a hubsim image
    /// (written once, in `<root>/archives`).
    pub fn runtime_archive(&self, version: &str) -> Result<PathBuf, SandboxError> {
        Self::write_archive(&self.root, version, self.driver)
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

    /// Writes an inventory for the controller at `path`, with the database
    /// URL in a 0600 file beside it.
    pub fn write_inventory(&self, path: &Path, group: &str) -> Result<(), SandboxError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating inventory dir"))?;
        let url_file = dir.join("database-url");
        pki::write_file(
            &url_file,
            format!("{}\n", self.db.url()).as_bytes(),
            0o600,
            true,
        )?;
        let mut nodes = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            nodes.push_str(&format!(
                "  {{ name = \"{}\", agent = \"{}\", role = \"{}\", tls_name = \"localhost\" }},\n",
                n.name,
                n.addr,
                if i == 0 { "primary" } else { "secondary" }
            ));
        }
        let text = format!(
            r#"# hubshift inventory for the sandbox group, written by hubshift-sandbox.
[database]
url_file = {url_file}{hub_host}

[tls]
ca = {ca}
cert = {cert}
key = {key}

[timeouts]
stop = 10
takeover = 60
start = 60
secondary_shutdown = 10
standby_join = 60
rpc = 15
backup = 300

[backups]
copy_to = {copies}

[[groups]]
name = "{group}"
nodes = [
{nodes}]
"#,
            url_file = toml_str(&url_file),
            hub_host = if self.hub_db_host.is_empty() {
                String::new()
            } else {
                format!("\nhub_host = {}", toml_quote(&self.hub_db_host))
            },
            ca = toml_str(&self.certs.ca),
            cert = toml_str(&self.certs.controller_cert),
            key = toml_str(&self.certs.controller_key),
            copies = toml_str(&self.root.join("backup-copies")),
        );
        std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
    }

    /// SIGKILLs node `i`'s agent (the hub keeps running).
    pub fn kill_agent(&mut self, i: usize) {
        self.nodes[i].kill_agent();
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
            // Keep the port across agent restarts, as a real host does: the
            // inventory names it.
            if let Ok(cfg) = std::fs::read_to_string(&node.config) {
                let pinned = cfg.replace(
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"{}\"", node.addr),
                );
                std::fs::write(&node.config, pinned).map_err(io("pinning the agent's port"))?;
            }
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
