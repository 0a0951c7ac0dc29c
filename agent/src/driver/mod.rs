//! The two seams between the gRPC service and the host: how the hub runs
//! ([`HubDriver`]: start, stop, observe, re-adopt) and where its runtimes
//! live ([`RuntimeStore`]: install, activate, list). The service only talks
//! to these, so a hub in a container and a hub as a host process are
//! upgraded by the same controller steps.

pub mod docker;
pub mod ops;
pub mod process;
pub mod upload;

use crate::config::{Config, DriverKind, LimitsSection};
use crate::error::{AgentError, Result};
use crate::role::ProbeInput;
use hubshift_common::pb::{HubRole, HubState, InstallRuntimeRequest, RuntimeHeader, StartMode};
use hubshift_common::redact::Secret;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;

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
    pub role: HubRole,
    /// START or CREATE_AND_START of the current/last start; empty if none.
    pub mode: String,
    /// HA node name of the current/last start.
    pub node: String,
    /// When the current/last start happened.
    pub started_at_unix_ms: i64,
    /// The hub is stopped by a signal (SIGSTOP) or traced.
    pub frozen: bool,
}

/// The hub's lifecycle on this host. Operations that need the hub to stay
/// as it is (Start, Stop, ActivateRuntime, Restore) hold [`HubDriver::lock_ops`].
#[tonic::async_trait]
pub trait HubDriver: Send + Sync + 'static {
    /// Starts the hub with the active runtime; CREATE_AND_START runs HA
    /// `create` to completion first. Returns (pid or 0, already_running,
    /// the store-and-forward files carried into the hub's new home at this
    /// start: the docker driver's new container).
    /// A check that holds for every driver (say, that the settings in
    /// appData point where the configuration says) is one call in
    /// `service.rs` `do_start` before this one; a driver's own checks go
    /// here, before anything runs.
    async fn start(
        &self,
        mode: StartMode,
        node: &str,
        jdbc: Secret,
    ) -> Result<(u32, bool, Vec<String>)>;
    /// Graceful stop, then kill after `timeout` (the caller's, checked by
    /// [`ops::stop_timeout`]); a Stop arriving meanwhile joins this one and
    /// kills at its own deadline if that is earlier ([`ops::Stops`]).
    /// Idempotent. Returns (was_running, killed).
    async fn stop(&self, timeout: std::time::Duration) -> Result<(bool, bool)>;
    /// State, exit code and role now; an error when they cannot be known
    /// (an engine that does not answer must not look like a stopped hub).
    async fn view(&self) -> Result<HubView>;
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

/// A client-streamed InstallRuntime upload: header first, then chunks.
pub type Upload =
    Pin<Box<dyn Stream<Item = std::result::Result<InstallRuntimeRequest, tonic::Status>> + Send>>;

/// Outcome of an upload.
#[derive(Debug)]
pub struct Installed {
    /// The header, validated.
    pub header: RuntimeHeader,
    /// True when this very archive was installed before.
    pub already_installed: bool,
}

/// Where runtime versions are staged and which one the next start uses.
#[tonic::async_trait]
pub trait RuntimeStore: Send + Sync + 'static {
    /// Receives, verifies (size, SHA-256) and stages an upload; leaves
    /// nothing behind on failure. Never activates.
    async fn install(&self, upload: Upload, limits: LimitsSection) -> Result<Installed>;
    /// Switches the version the hub runs at its next start. The caller
    /// holds the ops lock and made sure the hub is stopped. Returns
    /// (previous, active).
    async fn activate(&self, version: &str) -> Result<(String, String, Vec<String>)>;
    /// The version the next start uses, if any.
    async fn active_version(&self) -> Option<String>;
    /// Every staged version, sorted.
    async fn staged_versions(&self) -> Vec<String>;
    /// What a staged version declares itself (recorded at install); None
    /// when it declares nothing or nobody knows.
    async fn declared(&self, version: &str) -> Option<crate::declared::Declared>;
    /// The directory on whose file system a staged runtime takes room:
    /// Status reports its free space as `install_root`, which the
    /// controller's preflight holds against the runtime's unpacked size.
    fn room_dir(&self) -> PathBuf;
}

/// The configured driver's two halves.
#[derive(Clone)]
pub struct Drivers {
    /// The configuration as the driver resolved it (the docker driver puts
    /// a named volume's mount point into `paths.appdata`).
    pub cfg: Arc<Config>,
    /// Hub lifecycle.
    pub hub: Arc<dyn HubDriver>,
    /// Runtime store.
    pub runtimes: Arc<dyn RuntimeStore>,
}

/// Opens the driver `[hub] driver` names; re-adopts a hub that still runs.
pub async fn open(cfg: Arc<Config>) -> Result<Drivers> {
    match cfg.hub.driver {
        DriverKind::Process => process::open(cfg),
        DriverKind::Docker => docker::open(cfg).await,
    }
}

/// Checks Start's arguments the same way for every driver; returns the
/// mode's name as recorded.
pub fn check_start(mode: StartMode, node: &str, jdbc: &Secret) -> Result<&'static str> {
    hubshift_common::names::validate_name("node name", node)?;
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
    match mode {
        StartMode::Start => Ok("START"),
        StartMode::CreateAndStart => Ok("CREATE_AND_START"),
        StartMode::Unspecified => Err(AgentError::InvalidArgument(
            "mode must be START or CREATE_AND_START".into(),
        )),
    }
}
