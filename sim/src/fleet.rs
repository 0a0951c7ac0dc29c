//! A fleet: many HA groups on one machine, `plant-1` … `plant-N`, each a
//! two-node [`Sandbox`] on a database of its own (`plant_1` …) of one
//! shared throwaway PostgreSQL server, all signed by one CA, with one
//! inventory for the controller in which every group carries its own
//! `[groups.database]`. What a fleet upgrade (`hubshift upgrade --all`)
//! runs against in the demo, the benchmark and the tests.
//!
//! The groups start concurrently, [`GROUPS_STARTING_AT_ONCE`] at a time: a
//! hundred groups starting together would have four hundred processes and
//! their database connections compete for a small machine's cores at once
//! (not what the fleet measures). Teardown is the sandbox's: dropping the
//! fleet (or the future that builds it, on a signal) stops every agent and
//! hub, then the server, then removes the temporary directory; a process
//! killed outright leaves the same to the parent-death signals, the hubs'
//! owner watch and the watchdogs (see [`crate::lifetime`]).

use crate::lifetime::Watchdog;
use crate::pg::{PgError, TestDatabase};
use crate::sandbox::{
    self, CertPaths, HubDriver, Sandbox, SandboxError, SandboxOptions, SandboxPki, SharedParts,
};
use crate::timing::SimTiming;
use futures_util::StreamExt;
use hubshift_common::tls::TlsFiles;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Something the fleet could not set up.
#[derive(Debug, Error)]
pub enum FleetError {
    /// The options cannot make a fleet.
    #[error("{0}")]
    Options(String),
    /// One group could not be built.
    #[error("group {group}: {source}")]
    Group {
        /// The group's name.
        group: String,
        /// What went wrong.
        #[source]
        source: SandboxError,
    },
    /// A part shared by every group (directory, CA, archives, inventory).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The PostgreSQL server or a group's database.
    #[error(transparent)]
    Pg(#[from] PgError),
}

/// How to build the fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Number of groups, named `plant-1` … `plant-N`.
    pub groups: usize,
    /// Runtime version every group runs at the start.
    pub version: String,
    /// hubsim timings.
    pub timing: SimTiming,
    /// How the agents run the hubs (only [`HubDriver::Process`] for now:
    /// containers would need the shared server on each group's network).
    pub driver: HubDriver,
    /// Where to keep everything; when `None`, a temp dir (removed on drop),
    /// in memory (`/dev/shm`) when the machine has it with room.
    pub dir: Option<PathBuf>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            groups: 2,
            version: "4.1.0".into(),
            timing: SimTiming::fast(),
            driver: HubDriver::Process,
            dir: None,
        }
    }
}

/// Name of group `i` (1-based) of a fleet.
pub fn group_name(i: usize) -> String {
    format!("plant-{i}")
}

/// Name of group `i`'s database on a private server (an external one adds
/// a suffix: see [`TestDatabase::create_database`]).
pub fn database_name(i: usize) -> String {
    format!("plant_{i}")
}

/// One group of the fleet: a [`Sandbox`] (dereferences to it: `status`,
/// `wait_role`, `client`, `db`, `nodes` …) whose nodes are named
/// `<group>-a` and `<group>-b`.
pub struct FleetGroup {
    /// Group name in the inventory (`plant-1` …).
    pub name: String,
    /// The group.
    pub sandbox: Sandbox,
}

impl std::ops::Deref for FleetGroup {
    type Target = Sandbox;

    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl std::ops::DerefMut for FleetGroup {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

/// Running groups on one PostgreSQL server.
pub struct Fleet {
    // First: dropped first, so every agent and hub is gone before the
    // server stops and the directory goes.
    groups: Vec<FleetGroup>,
    server: TestDatabase,
    /// Root directory of everything (`certs/`, `archives/`, `groups/<name>/`).
    pub root: PathBuf,
    /// The CA and controller certificate every group's agents trust.
    pub certs: CertPaths,
    /// hubsim timings.
    pub timing: SimTiming,
    /// Version the groups were started at.
    pub version: String,
    driver: HubDriver,
    archives: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    // After `_tmp`: in an orderly teardown the directory is already gone.
    _watchdog: Option<Watchdog>,
}

/// How many groups are being started at one time.
pub const GROUPS_STARTING_AT_ONCE: usize = 16;

/// Room a fleet's files in memory must leave (a hundred groups' appdata,
/// runtimes and backups take tens of megabytes); without it the fleet
/// lives in the temporary directory.
pub const FLEET_ROOT_ROOM: u64 = 1 << 30;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FleetError {
    let what = what.into();
    move |source| FleetError::Sandbox(SandboxError::Io { what, source })
}

impl Fleet {
    /// Starts the server, then every group concurrently; returns when every
    /// group has its primary active and its secondary standby. On an error
    /// the groups already up are torn down.
    pub async fn start(opts: FleetOptions) -> Result<Fleet, FleetError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if opts.groups == 0 {
            return Err(FleetError::Options(
                "a fleet needs at least one group".into(),
            ));
        }
        if opts.driver != HubDriver::Process {
            return Err(FleetError::Options(
                "a fleet runs its hubs as host processes (driver process)".into(),
            ));
        }
        opts.timing
            .validate()
            .map_err(|e| FleetError::Options(format!("timing: {e}")))?;
        let (tmp, root, watchdog) = crate::sandbox::root_dir(
            opts.dir.as_deref(),
            "hubshift-fleet-",
            crate::memory_dir::memory_dir(FLEET_ROOT_ROOM),
        )?;
        // Sized for the fleet: each group's two hubs hold connections while
        // they run, the controller one or two per group it works on, the
        // harness its measurements; the default limit is "too many clients"
        // at about fifty groups.
        let server = TestDatabase::create_for_clients(fleet_connections(opts.groups)).await?;
        let pki = Arc::new(SandboxPki::create(&root.join("certs"))?);
        let archives = root.join("archives");
        // Written once before the groups start, not raced by them.
        Sandbox::archive_in(&archives, &opts.version, opts.driver)?;

        let mut starting = Vec::with_capacity(opts.groups);
        for i in 1..=opts.groups {
            let name = group_name(i);
            let database = server.create_database(&database_name(i)).await?;
            let sandbox_opts = SandboxOptions {
                nodes: 2,
                version: opts.version.clone(),
                timing: opts.timing,
                dir: Some(root.join("groups").join(&name)),
                driver: opts.driver,
                node_prefix: name.clone(),
                ..Default::default()
            };
            let shared = SharedParts {
                database,
                pki: Arc::clone(&pki),
                archives: archives.clone(),
            };
            starting.push(async move {
                let started = Sandbox::start_shared(sandbox_opts, shared).await;
                (i, name, started)
            });
        }
        let mut starting =
            futures_util::stream::iter(starting).buffer_unordered(GROUPS_STARTING_AT_ONCE);
        // One task runs them all: should this future be dropped (a signal),
        // every group being built is dropped, and torn down, with it.
        let mut groups = Vec::with_capacity(opts.groups);
        while let Some((i, name, started)) = starting.next().await {
            match started {
                Ok(sandbox) => groups.push((i, FleetGroup { name, sandbox })),
                Err(source) => {
                    // The others stop here: their futures are dropped (agents
                    // and hubs stopped) before the groups already up.
                    drop(starting);
                    drop(groups);
                    return Err(FleetError::Group {
                        group: name,
                        source,
                    });
                }
            }
        }
        groups.sort_by_key(|(i, _)| *i);
        Ok(Fleet {
            groups: groups.into_iter().map(|(_, g)| g).collect(),
            server,
            root,
            certs: pki.certs.clone(),
            timing: opts.timing,
            version: opts.version,
            driver: opts.driver,
            archives,
            _tmp: tmp,
            _watchdog: watchdog,
        })
    }

    /// The groups, `plant-1` first.
    pub fn groups(&self) -> &[FleetGroup] {
        &self.groups
    }

    /// The groups, to restart an agent and the like.
    pub fn groups_mut(&mut self) -> &mut [FleetGroup] {
        &mut self.groups
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&FleetGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The server's own database (`hubshift`), which no group uses; every
    /// group's database lives on the same server.
    pub fn server(&self) -> &TestDatabase {
        &self.server
    }

    /// TLS files the controller uses for every group.
    pub fn controller_tls(&self) -> TlsFiles {
        TlsFiles {
            cert: self.certs.controller_cert.clone(),
            key: self.certs.controller_key.clone(),
            ca: self.certs.ca.clone(),
        }
    }

    /// A runtime archive for `version`, shared by every group (written
    /// once, in `<root>/archives`).
    pub fn runtime_archive(&self, version: &str) -> Result<PathBuf, FleetError> {
        Ok(Sandbox::archive_in(&self.archives, version, self.driver)?)
    }

    /// Writes one inventory for every group at `path`: no default
    /// database; each group's `[groups.database]` names a 0600 file
    /// `<dir of path>/<group>/database-url` holding its database's URL.
    pub fn write_inventory(&self, path: &Path) -> Result<(), FleetError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating inventory dir"))?;
        let mut groups = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let url_file = dir.join(&g.name).join("database-url");
            g.write_database_url(&url_file)?;
            groups.push(g.inventory_group(&g.name, Some(g.inventory_database(&url_file))));
        }
        let inventory = crate::configs::Inventory {
            database: None,
            tls: self.certs.inventory_tls(),
            timeouts: crate::configs::InventoryTimeouts::sandbox(&self.timing),
            backups: crate::configs::InventoryBackups {
                copy_to: self.root.join("backup-copies"),
                pre_copy: None,
            },
            groups,
        };
        Ok(sandbox::write_toml(
            path,
            &format!(
                "hubshift inventory for a fleet of {} groups, each on its own database, written by hubshift-sandbox.",
                self.groups.len()
            ),
            &inventory,
        )?)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Every group's agents and hubs first, in order, then the server
        // (its last handle), the directory and its watchdog.
        self.groups.clear();
    }
}

/// Connections a fleet of `groups` two-node groups may hold on its one
/// server at once: per group two hubs (a few each, across a hand-over's
/// restarts), the controller's journal link and work, the harness.
pub fn fleet_connections(groups: usize) -> u32 {
    u32::try_from(groups)
        .unwrap_or(u32::MAX / 16)
        .saturating_mul(12)
        + 40
}
