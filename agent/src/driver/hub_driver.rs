//! The hub lifecycle seam ([`HubDriver`]) and the domain types it speaks:
//! what a Start asks for, checked once for every driver ([`StartArgs`]),
//! and what a start, a stop and a look at the hub answer. The gRPC edge
//! (`service/`) converts them from and to the wire.

use super::ops;
use crate::error::{AgentError, Result};
use crate::hubfiles::settings::{Binding, SettingsError};
use crate::role::{ProbeInput, Role};
use hubshift_common::redact::Secret;
use std::path::PathBuf;

/// Whether HA `create` runs before the hub starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Start the hub as it is.
    Start,
    /// Run HA `create` to completion, then start.
    CreateAndStart,
}

impl StartMode {
    /// The name recorded with a start and reported by Status.
    pub fn name(self) -> &'static str {
        match self {
            StartMode::Start => "START",
            StartMode::CreateAndStart => "CREATE_AND_START",
        }
    }
}

/// A Start's arguments once checked; drivers receive nothing else.
#[derive(Debug, Clone)]
pub struct StartArgs {
    /// START or CREATE_AND_START.
    pub mode: StartMode,
    /// HA node name (a safe name).
    pub node: String,
    /// JDBC URI: not empty, no NUL byte; never logged.
    pub jdbc: Secret,
}

impl StartArgs {
    /// Checks Start's arguments the same way for every driver, in the
    /// order the caller reads them: node, JDBC URI, mode (`None`: a mode
    /// the wire did not name).
    pub fn check(mode: Option<StartMode>, node: String, jdbc: Secret) -> Result<StartArgs> {
        hubshift_common::names::validate_name("node name", &node)?;
        if jdbc.expose().trim().is_empty() {
            return Err(AgentError::InvalidArgument(
                "jdbc_uri must not be empty".into(),
            ));
        }
        // It becomes an argument or an environment value: a NUL cannot be
        // passed, and saying so later would blame the program.
        if jdbc.expose().contains('\0') {
            return Err(AgentError::InvalidArgument(
                "jdbc_uri must not contain a NUL byte".into(),
            ));
        }
        let mode = mode.ok_or_else(|| {
            AgentError::InvalidArgument("mode must be START or CREATE_AND_START".into())
        })?;
        Ok(StartArgs { mode, node, jdbc })
    }
}

/// What a Start did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Started {
    /// Host pid of the hub, or 0 when the driver cannot tell.
    pub pid: u32,
    /// The hub was running already; nothing was started.
    pub already_running: bool,
    /// Store-and-forward files carried into the hub's new home at this
    /// start (the docker driver's new container).
    pub carried_store_forward: Vec<String>,
}

/// What a Stop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// The hub ran when the Stop came.
    pub was_running: bool,
    /// It had to be killed.
    pub killed: bool,
}

/// The hub's process state, whatever runs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HubState {
    /// Not running, and nothing ended since the agent started.
    #[default]
    Stopped,
    /// Running, its role not known yet (or `create` runs).
    Starting,
    /// Running with a known role.
    Running,
    /// Ended by itself.
    Exited,
}

/// What Status reports about the hub, whatever runs it.
#[derive(Debug, Clone, Default)]
pub struct HubView {
    /// STOPPED, STARTING, RUNNING or EXITED.
    pub state: HubState,
    /// Exit code when EXITED and known.
    pub exit_code: Option<i32>,
    /// Host pid of the hub while it runs, else 0.
    pub pid: u32,
    /// Role from the probe.
    pub role: Role,
    /// START or CREATE_AND_START of the current/last start; empty if none.
    pub mode: String,
    /// HA node name of the current/last start.
    pub node: String,
    /// When the current/last start happened.
    pub started_at_unix_ms: i64,
    /// The hub is stopped by a signal (SIGSTOP) or traced.
    pub frozen: bool,
}

/// Where the active runtime lies on the host and how the hub's settings
/// bind it, for a driver whose runtime is a host directory.
#[derive(Debug, Clone)]
pub struct HostFiles {
    /// `{runtime}` of the active version, if one is active and resolves.
    pub runtime_dir: Option<PathBuf>,
    /// The settings file the hub is pointed at.
    pub settings_file: PathBuf,
    /// What it binds, or why it would not bind the hub to the configured places.
    pub settings: std::result::Result<Binding, SettingsError>,
}

/// The hub's lifecycle on this host. Operations that need the hub to stay
/// as it is (Start, Stop, ActivateRuntime, Restore) hold [`HubDriver::lock_ops`].
#[tonic::async_trait]
pub trait HubDriver: Send + Sync + 'static {
    /// Starts the hub with the active runtime; CREATE_AND_START runs HA
    /// `create` to completion first. The arguments were checked by
    /// [`StartArgs::check`]; a driver's own checks go here, before anything runs.
    async fn start(&self, args: StartArgs) -> Result<Started>;
    /// Graceful stop, then kill after `timeout` (the caller's, checked by
    /// [`ops::stop_timeout`]); a Stop arriving meanwhile joins this one and
    /// kills at its own deadline if that is earlier ([`ops::Stops`]).
    /// Idempotent.
    async fn stop(&self, timeout: std::time::Duration) -> Result<Stopped>;
    /// State, exit code and role now; an error when they cannot be known
    /// (an engine that does not answer must not look like a stopped hub).
    async fn view(&self) -> Result<HubView>;
    /// The hub's runtime directory and settings binding on the host, for
    /// Status; `None` when the runtime is not a host directory (a container
    /// carries its runtime inside).
    async fn host_files(&self) -> Option<HostFiles>;
    /// What the role probe reads now (for `hubshift-agent probe`).
    async fn probe_input(&self) -> ProbeInput;
    /// Whether the hub (or its `create`) runs now.
    async fn is_running(&self) -> bool;
    /// The operations lock for `what`, waited for at most
    /// [`ops::lock_wait`]; ABORTED naming the holder after that.
    async fn lock_ops(&self, what: &'static str) -> Result<ops::OpsGuard<'_>>;
    /// Background upkeep (log caps, watchers) until `shutdown` flips.
    fn spawn_housekeeping(&self, shutdown: tokio::sync::watch::Receiver<bool>);
}
