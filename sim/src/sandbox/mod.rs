//! A whole HA group on one machine: a throwaway PostgreSQL, a private CA,
//! one `hubshift-agent` per node configured for hubsim runtimes, and the
//! group started in HA at a first version — what an operator has before an
//! upgrade. Used by `hubshift-sandbox` (demo, up) and the end-to-end tests.
//! With [`HubDriver::Docker`] each hub is a container of the local Docker
//! Engine made from a hubsim image; everything the sandbox made in the
//! engine (containers, images) goes when it is dropped.

mod agent_config;
mod certs;
mod error;
mod node;

pub use agent_config::{
    agent_config, agent_config_around, docker_agent_config, hub_settings, preinstall_runtime,
    write_settings, write_toml,
};
pub use certs::{CONTROLLER_NAME, SandboxPki, SharedParts};
pub use error::{HubDriver, SandboxError, SandboxOptions};
pub use node::{CertPaths, SandboxNode, tail};

use error::io;
pub(crate) use error::root_dir;
use node::spawn_agent;

use crate::configs::{
    Inventory, InventoryBackups, InventoryDatabase, InventoryGroup, InventoryNode,
    InventoryTimeouts, NodeRole,
};
use crate::lifetime::Watchdog;
use crate::pg::TestDatabase;
use crate::timing::SimTiming;
use hubshift_common::pb::hub_agent_client::HubAgentClient;
use hubshift_common::pb::{self, HubRole, HubState, StartMode};
use hubshift_common::pki::{self};
use hubshift_common::tls::TlsFiles;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

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
        let (tmp, root, watchdog) = root_dir(opts.dir.as_deref(), "hubshift-sandbox-", None)?;
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
                metrics_addr: String::new(),
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
            if let Some(m) = config.metrics.as_mut()
                && !node.metrics_addr.is_empty()
            {
                m.listen = node.metrics_addr.clone();
            }
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
            heartbeat_query: Some(crate::hubsim::schema::HEARTBEAT_AGE_QUERY.into()),
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
                pre_copy: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configs::{self, AgentConfig};
    use crate::hubsim::owner::EXIT_WITH_PID_ENV;

    fn node(dir: &Path) -> SandboxNode {
        SandboxNode {
            name: "hub-b".into(),
            config: dir.join("agent.toml"),
            state_dir: dir.join("state"),
            install_root: dir.join("install"),
            appdata: dir.join("app \"data\""),
            agent_log: dir.join("agent.log"),
            addr: "127.0.0.1:7000".into(),
            metrics_addr: String::new(),
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
