//! A whole HA group on one machine: a throwaway PostgreSQL, a private CA,
//! one `hubshift-agent` per node configured for hubsim runtimes, and the
//! group started in HA at a first version — what an operator has before an
//! upgrade. Used by `hubshift-sandbox` (demo, up) and the end-to-end tests.

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
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            nodes: 2,
            version: "4.1.0".into(),
            timing: SimTiming::fast(),
            dir: None,
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
    agent: Option<Child>,
}

impl SandboxNode {
    /// The hub's output as the agent keeps it.
    pub fn hub_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("hub.log")).unwrap_or_default()
    }

    /// The agent's own log.
    pub fn agent_log_text(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    /// pid of the hub the agent supervises, from its state file.
    pub fn hub_pid(&self) -> Option<i32> {
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

/// The agent configuration the sandbox writes for a node. Its hubs are told
/// to exit with this process, which they outlive otherwise (see
/// [`crate::lifetime`]).
pub fn agent_config(node: &SandboxNode, tls: (&Path, &Path, &Path), timing: &SimTiming) -> String {
    format!(
        r#"# hubshift-agent configuration for a hubsim node ({name}), written by the sandbox.
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
layout = "vendor"
create_command = {create}
start_command = {start}
working_dir = "{{runtime}}"
stop_timeout_secs = 10
create_timeout_secs = 60
# hubsim ends when the sandbox (process {owner}) does, however it ends.
env = {{ {owner_env} = "{owner}" }}

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
        create = toml_list(&sim_command("create", timing)),
        start = toml_list(&sim_command("start", timing)),
        owner_env = EXIT_WITH_PID_ENV,
        owner = std::process::id(),
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
        let db = TestDatabase::create().await?;
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
        let archive = Self::write_archive(&root, &opts.version)?;
        let agent_bin = crate::bins::binary("hubshift-agent")?;
        let mut nodes = Vec::new();
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
            let config = agent_config(&node, (&pair.cert, &pair.key, &ca_paths.cert), &opts.timing);
            std::fs::write(&node.config, config).map_err(io("writing agent config"))?;
            preinstall_runtime(&node.install_root, &archive, &opts.version)?;
            write_settings(&node.appdata, &hub_settings(&node.appdata))?;
            spawn_agent(&agent_bin, &mut node).await?;
            nodes.push(node);
        }
        let sandbox = Sandbox {
            root,
            db,
            certs,
            nodes,
            timing: opts.timing,
            version: opts.version.clone(),
            _tmp: tmp,
            _watchdog: watchdog,
        };
        sandbox.start_ha().await?;
        Ok(sandbox)
    }

    fn write_archive(root: &Path, version: &str) -> Result<PathBuf, SandboxError> {
        let hubsim = crate::bins::binary("hubsim")?;
        let path = root
            .join("archives")
            .join(crate::runtime::archive_name(version));
        if !path.exists() {
            crate::runtime::write_runtime_archive(version, &path, &hubsim)?;
        }
        Ok(path)
    }

    /// A hubsim runtime archive for `version` (written once, in `<root>/archives`).
    pub fn runtime_archive(&self, version: &str) -> Result<PathBuf, SandboxError> {
        Self::write_archive(&self.root, version)
    }

    async fn start_ha(&self) -> Result<(), SandboxError> {
        let jdbc = self.db.jdbc_uri();
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
url_file = {url_file}

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
