//! What an agent says of its hub, in the controller's own terms: the
//! steps, preflight and the `status` command read this, never the wire's
//! generated types (`agents.rs` converts at the edge).

/// The hub process, as its agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubProcess {
    /// Running.
    Running,
    /// HA `create` runs, or the process has just been started.
    Starting,
    /// Not running (stopped, or never started).
    Stopped,
    /// Ended by itself.
    Exited,
}

/// The hub's HA role, as the agent's role probe reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubRole {
    /// Serving.
    Active,
    /// Watching the heartbeat.
    Standby,
    /// Not known (yet).
    Unknown,
}

/// A runtime staged on a host, and the version it declares itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagedRuntime {
    /// The version it is staged under.
    pub version: String,
    /// What it declares (empty: nothing, so it was not checked).
    pub declared_version: String,
    /// Where it declares it.
    pub declared_by: String,
}

/// Free space of a place the agent writes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirSpace {
    /// `state` or `install_root`.
    pub name: String,
    /// The directory.
    pub path: String,
    /// Bytes free there.
    pub free_bytes: u64,
}

/// How the hub is bound to its appData, as the agent resolved it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubSettings {
    /// The settings file the hub is started with.
    pub file: String,
    /// Why it would not bind the configured appData (empty: it does).
    pub problem: String,
    /// The appData directory it names.
    pub app_data: String,
    /// Where store-and-forward files go.
    pub store_forward_dir: String,
    /// Those files live in the runtime directory.
    pub store_forward_in_runtime: bool,
}

/// One Status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubStatus {
    /// The HA node the agent serves.
    pub node: String,
    /// The hub process.
    pub process: HubProcess,
    /// Its exit code, when it ended.
    pub exit_code: Option<i32>,
    /// Its pid (0: none).
    pub pid: u32,
    /// Its role.
    pub role: HubRole,
    /// The process is stopped by a signal (SIGSTOP, a paused container).
    pub frozen: bool,
    /// The version `current` points at (empty: none).
    pub active_runtime: String,
    /// Versions staged.
    pub staged_runtimes: Vec<String>,
    /// Staged runtimes with what they declare.
    pub staged: Vec<StagedRuntime>,
    /// SHA-256 of the certificate store (empty: none).
    pub certificate_sha256: String,
    /// Free space where the agent writes.
    pub free_space: Vec<DirSpace>,
    /// The agent's version.
    pub agent_version: String,
    /// How the hub was last started (START, CREATE_AND_START).
    pub start_mode: String,
    /// Size of appdata, when asked for.
    pub appdata_bytes: u64,
    /// The resolved runtime directory.
    pub runtime_dir: String,
    /// `plain` or `vendor`.
    pub layout: String,
    /// The settings binding.
    pub settings: HubSettings,
}

/// Whether a hub process runs.
pub fn is_running(s: &HubStatus) -> bool {
    matches!(s.process, HubProcess::Running | HubProcess::Starting)
}

/// "active", "standby" or "unknown"; "stopped" for a hub that does not run.
pub fn role_name(s: &HubStatus) -> &'static str {
    if !is_running(s) {
        return "stopped";
    }
    match s.role {
        HubRole::Active => "active",
        HubRole::Standby => "standby",
        HubRole::Unknown => "unknown",
    }
}

/// "running", "starting", "stopped" or "exited (code N)".
pub fn state_name(s: &HubStatus) -> String {
    match s.process {
        HubProcess::Running => "running".into(),
        HubProcess::Starting => "starting".into(),
        HubProcess::Stopped => "stopped".into(),
        HubProcess::Exited => match s.exit_code {
            Some(c) => format!("exited (code {c})"),
            None => "exited".into(),
        },
    }
}

/// How a hub is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// HA `start`: joins the group on the existing schema.
    Start,
    /// HA `create` (the schema, with this node as preferred primary) then
    /// `start`.
    CreateAndStart,
}

/// What a runtime archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFormat {
    /// A tar.gz release.
    TarGz,
    /// A zip release.
    Zip,
    /// A `docker save` archive (driver docker).
    DockerImage,
}

/// What a runtime upload says of itself before its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeUpload {
    /// The version it is staged as.
    pub version: String,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its format.
    pub format: RuntimeFormat,
}

/// What an upload installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The version.
    pub version: String,
    /// Its SHA-256 as the agent received it.
    pub sha256: String,
    /// The same archive was there already.
    pub already_installed: bool,
}

/// What a Stop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The hub ran when asked.
    pub was_running: bool,
    /// It had to be killed.
    pub killed: bool,
}

/// What a Start did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The hub's pid.
    pub pid: u32,
    /// It ran already: nothing was started.
    pub already_running: bool,
    /// Store-and-forward files carried into a new container.
    pub carried_store_forward: Vec<String>,
}

/// A backup on the primary's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupMade {
    /// Its id.
    pub id: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Its file on the host.
    pub path: String,
    /// It existed before this call (a repeat).
    pub existed: bool,
    /// Set when it is a delta: the base it applies to (the pair is the
    /// backup of record).
    pub base: Option<BaseRef>,
    /// A base was asked for, and this is a full backup: why.
    pub full_because: String,
    /// Milliseconds the agent spent writing it.
    pub write_ms: u64,
}

/// The base a delta applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    /// Its id.
    pub id: String,
    /// Its SHA-256, as the delta names it.
    pub sha256: String,
    /// Its size.
    pub size_bytes: u64,
}

/// A backup read back on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRead {
    /// Its SHA-256 as read now.
    pub sha256: String,
    /// Its size.
    pub size_bytes: u64,
    /// Entries it lists, read from start to end.
    pub entries: u64,
    /// Set when it is a delta: its base, checked against what it names.
    pub base: Option<BaseRef>,
}

/// What a runtime switch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    /// The version `current` pointed at before.
    pub previous: String,
    /// The version it points at now.
    pub active: String,
    /// Store-and-forward files moved into the new runtime directory.
    pub carried_store_forward: Vec<String>,
}

/// The certificate store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateStore {
    /// Its bytes.
    pub content: Vec<u8>,
    /// Their SHA-256.
    pub sha256: String,
}
