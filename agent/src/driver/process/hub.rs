//! Hub process supervision: start (optionally after HA `create`), stop,
//! observe, and re-adopt after an agent restart. The hub runs in its own
//! process group with its output appended straight to `<state>/hub.log`, so
//! it survives the agent.

use crate::clock;
use crate::config::{Config, Vars, fill, fill_argv};
use crate::driver::ops::{OpsGuard, OpsLock, Stops, lock_wait};
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::hubfiles::layout;
use crate::hubfiles::settings;
use crate::places;
use crate::role::{HubOutput, Probe, ProbeInput, Role};
use hubshift_common::names::validate_name;
use hubshift_common::pb::{HubRole, HubState, StartMode};
use hubshift_common::redact::{Secret, redact_with};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `<state>/hub.json`: the process the agent supervises. Never holds the
/// JDBC URI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubRecord {
    /// Process id; also the process group id.
    pub pid: u32,
    /// Field 22 of /proc/<pid>/stat, to tell a re-used pid apart.
    pub start_time_ticks: u64,
    /// START or CREATE_AND_START.
    pub mode: String,
    /// HA node name.
    pub node: String,
    /// When it was started.
    pub started_at_unix_ms: i64,
    /// Size of hub.log when this process started: the role probe reads from here.
    pub log_offset: u64,
    /// Length of the file a `file` role probe follows when this process
    /// started (absent in records of older agents: the whole file counts).
    #[serde(default)]
    pub probe_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing has run since the agent started.
    Idle,
    /// The recorded process runs.
    Running,
    /// It ended by itself; code when known.
    Exited(Option<i32>),
    /// It was stopped through Stop.
    Stopped,
}

struct Inner {
    record: Option<HubRecord>,
    phase: Phase,
    creating: bool,
    /// Bumped at every start, so a stale waiter does not touch a newer run.
    generation: u64,
}

/// What Status reports about the hub.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Process state.
    pub state: HubState,
    /// Exit code when EXITED and known.
    pub exit_code: Option<i32>,
    /// Pid when running, else 0.
    pub pid: u32,
    /// Role from the probe.
    pub role: HubRole,
    /// The current/last process.
    pub record: Option<HubRecord>,
    /// The process is stopped (SIGSTOP) or traced.
    pub frozen: bool,
}

/// Supervises the one hub process of this host.
pub struct Hub {
    cfg: Arc<Config>,
    probe: Probe,
    inner: Arc<Mutex<Inner>>,
    /// Serialises Start, Stop, ActivateRuntime and Restore.
    ops: OpsLock,
    /// The stop in progress, which later Stops join.
    stops: Stops,
}

impl Hub {
    /// Loads hub.json and re-adopts a hub that still runs.
    pub fn new(cfg: Arc<Config>) -> Result<Arc<Hub>> {
        let probe = Probe::new(&cfg.role_probe)
            .map_err(|e| AgentError::Internal(format!("role probe pattern: {e}")))?;
        let hub = Arc::new(Hub {
            cfg,
            probe,
            inner: Arc::new(Mutex::new(Inner {
                record: None,
                phase: Phase::Idle,
                creating: false,
                generation: 0,
            })),
            ops: OpsLock::default(),
            stops: Stops::default(),
        });
        hub.readopt();
        Ok(hub)
    }

    fn state_dir(&self) -> &Path {
        &self.cfg.paths.state_dir
    }

    /// `<state>/hub.log`
    pub fn log_path(&self) -> PathBuf {
        self.state_dir().join("hub.log")
    }

    fn record_path(&self) -> PathBuf {
        self.state_dir().join("hub.json")
    }

    fn readopt(self: &Arc<Self>) {
        let path = self.record_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let record: HubRecord = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable hub record");
                return;
            }
        };
        let alive = process_alive(record.pid, record.start_time_ticks);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.generation += 1;
        let generation = inner.generation;
        inner.record = Some(record.clone());
        if alive {
            tracing::info!(pid = record.pid, node = %record.node, "re-adopted running hub");
            inner.phase = Phase::Running;
            drop(inner);
            self.watch_adopted(record, generation);
        } else {
            tracing::info!(
                pid = record.pid,
                "hub recorded in hub.json is no longer running"
            );
            inner.phase = Phase::Exited(None);
        }
    }

    /// Polls /proc for an adopted process (not our child: no exit code).
    fn watch_adopted(self: &Arc<Self>, record: HubRecord, generation: u64) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !process_alive(record.pid, record.start_time_ticks) {
                    let mut inner = inner
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if inner.generation == generation && inner.phase == Phase::Running {
                        tracing::info!(pid = record.pid, "adopted hub ended (exit code unknown)");
                        inner.phase = Phase::Exited(None);
                    }
                    return;
                }
                if inner
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .generation
                    != generation
                {
                    return;
                }
            }
        });
    }

    /// Keeps hub.log under its cap: beyond `log_max_bytes` only the last
    /// half is kept (copied to the front, then truncated in place, so the
    /// hub's O_APPEND descriptor keeps working).
    pub fn spawn_log_cap(self: &Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => return,
                }
                let this2 = this.clone();
                let res = tokio::task::spawn_blocking(move || this2.cap_log_once()).await;
                if let Ok(Err(e)) = res {
                    tracing::warn!(error = %e, "cannot cap hub.log");
                }
            }
        });
    }

    /// One pass of the log cap; returns the bytes cut.
    pub fn cap_log_once(&self) -> Result<u64> {
        let path = self.log_path();
        let max = self.cfg.hub.log_max_bytes;
        let cut = cut_log(&path, max)?;
        if cut > 0 {
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(rec) = inner.record.as_mut() {
                rec.log_offset = rec.log_offset.saturating_sub(cut);
                let rec = rec.clone();
                let running = inner.phase == Phase::Running;
                drop(inner);
                if running {
                    self.write_record(&rec)?;
                }
            }
        }
        Ok(cut)
    }

    fn write_record(&self, rec: &HubRecord) -> Result<()> {
        let json = serde_json::to_vec(rec)
            .map_err(|e| AgentError::Internal(format!("hub record: {e}")))?;
        fsutil::write_atomic(&self.record_path(), &json, 0o600)
    }

    /// Takes the operations lock for `what`, waiting at most as long as a
    /// Start or a Stop with the configured timeouts may hold it.
    pub async fn lock_ops(&self, what: &'static str) -> Result<OpsGuard<'_>> {
        self.ops.acquire(what, lock_wait(&self.cfg)).await
    }

    /// Whether a hub process runs now (or `create` is running).
    pub fn is_running(&self) -> bool {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.creating
            || (inner.phase == Phase::Running
                && inner
                    .record
                    .as_ref()
                    .is_some_and(|r| process_alive(r.pid, r.start_time_ticks)))
    }

    /// State, pid, role and the current/last process.
    pub async fn snapshot(&self) -> Snapshot {
        let (phase, creating, record) = {
            let inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (inner.phase, inner.creating, inner.record.clone())
        };
        let mut snap = Snapshot {
            state: HubState::Stopped,
            exit_code: None,
            pid: 0,
            role: HubRole::Unknown,
            record: record.clone(),
            frozen: false,
        };
        match phase {
            _ if creating => snap.state = HubState::Starting,
            Phase::Idle | Phase::Stopped => snap.state = HubState::Stopped,
            Phase::Exited(code) => {
                snap.state = HubState::Exited;
                snap.exit_code = code;
            }
            Phase::Running => {
                let Some(rec) = record else {
                    // A running phase always carries its record; report the
                    // process as starting rather than guess a role.
                    snap.state = HubState::Starting;
                    return snap;
                };
                let role = self.probe.probe(&self.probe_input_for(Some(&rec))).await;
                snap.pid = rec.pid;
                snap.frozen = process_frozen(rec.pid);
                (snap.state, snap.role) = match role {
                    Role::Unknown => (HubState::Starting, HubRole::Unknown),
                    Role::Active => (HubState::Running, HubRole::Active),
                    Role::Standby => (HubState::Running, HubRole::Standby),
                };
            }
        }
        snap
    }

    /// What the role probe reads for the current/last start (the whole log
    /// when nothing was started).
    pub fn probe_input(&self) -> ProbeInput {
        let record = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record
            .clone();
        self.probe_input_for(record.as_ref())
    }

    fn probe_input_for(&self, rec: Option<&HubRecord>) -> ProbeInput {
        let runtime = layout::active_runtime_dir(&self.cfg)
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        ProbeInput {
            output: HubOutput::File {
                path: self.log_path(),
                offset: rec.map_or(0, |r| r.log_offset),
            },
            file_offset: rec.map_or(0, |r| r.probe_offset),
            runtime,
            appdata: self.cfg.paths.appdata.display().to_string(),
        }
    }

    /// Stop: stop command or SIGTERM to the group, wait, then SIGKILL.
    /// `timeout` is the caller's (checked against the maximum); a Stop that
    /// arrives while another runs joins it and kills at its own deadline if
    /// that comes first. Returns (was_running, killed).
    pub async fn stop(&self, timeout: Duration) -> Result<(bool, bool)> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.stops
            .run(deadline, KILL_GRACE + Duration::from_secs(5), |kill_at| {
                self.stop_leading(timeout, kill_at)
            })
            .await
    }

    async fn stop_leading(
        &self,
        timeout: Duration,
        mut kill_at: tokio::sync::watch::Receiver<tokio::time::Instant>,
    ) -> Result<(bool, bool)> {
        let _ops = self.ops.acquire_until("Stop", &mut kill_at).await?;
        let (record, generation) = {
            let inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match (&inner.record, inner.phase) {
                (Some(r), Phase::Running) => (r.clone(), inner.generation),
                _ => return Ok((false, false)),
            }
        };
        let pgid = record.pid as i32;
        let alive = || {
            process_alive(record.pid, record.start_time_ticks)
                || (record.pid > 1 && group_exists(pgid))
        };
        if !alive() {
            self.finish_stop(generation);
            return Ok((false, false));
        }
        tracing::info!(
            pid = record.pid,
            timeout_secs = timeout.as_secs(),
            "stopping hub"
        );
        // The stop command runs beside the wait, so that a kill brought
        // forward by a later Stop is not held up by it; it is killed with
        // the hub, or left to end (within its timeout) when the hub stopped.
        let stop_command = if self.cfg.hub.stop_command.is_empty() {
            signal_group(pgid, libc::SIGTERM);
            None
        } else {
            Some(self.spawn_stop_command(timeout))
        };
        while alive() && tokio::time::Instant::now() < *kill_at.borrow() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut killed = false;
        if alive() {
            tracing::warn!(
                pid = record.pid,
                "hub did not stop in time; killing its process group"
            );
            signal_group(pgid, libc::SIGKILL);
            killed = true;
            let kill_deadline = Instant::now() + KILL_GRACE;
            while alive() && Instant::now() < kill_deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if alive() {
                return Err(AgentError::Internal(format!(
                    "hub process group {pgid} survived SIGKILL"
                )));
            }
        } else if let Some(command) = stop_command {
            command.detach();
        }
        self.finish_stop(generation);
        tracing::info!(pid = record.pid, killed, "hub stopped");
        Ok((true, killed))
    }

    fn finish_stop(&self, generation: u64) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.generation == generation {
            inner.phase = Phase::Stopped;
        }
        let _ = std::fs::remove_file(self.record_path());
    }

    /// Runs the configured stop command in a task of its own, bounded by
    /// `timeout`; the task kills the command when aborted or dropped.
    fn spawn_stop_command(&self, timeout: Duration) -> AbortOnDrop {
        let runtime = layout::active_runtime_dir(&self.cfg)
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let appdata = self.cfg.paths.appdata.display().to_string();
        let argv = fill_argv(
            &self.cfg.hub.stop_command,
            Vars {
                runtime: &runtime,
                node: "",
                jdbc: "",
                appdata: &appdata,
            },
        );
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).kill_on_drop(true);
        if let Ok(log) = fsutil::open_append(&self.log_path()) {
            if let Ok(log2) = log.try_clone() {
                cmd.stdout(log).stderr(log2);
            }
        }
        AbortOnDrop(Some(tokio::spawn(async move {
            match tokio::time::timeout(timeout, cmd.status()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::warn!(%status, "stop command failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "stop command could not run"),
                Err(_) => tracing::warn!("stop command timed out"),
            }
        })))
    }

    /// Start: validate, optionally run `create` to completion, spawn the hub.
    /// Returns (pid, already_running).
    pub async fn start(
        self: &Arc<Self>,
        mode: StartMode,
        node: &str,
        jdbc: Secret,
    ) -> Result<(u32, bool)> {
        validate_name("node name", node)?;
        if jdbc.expose().trim().is_empty() {
            return Err(AgentError::InvalidArgument(
                "jdbc_uri must not be empty".into(),
            ));
        }
        // It becomes an argument and an environment value: a NUL cannot be
        // passed, and saying so later would blame the program.
        if jdbc.expose().contains('\0') {
            return Err(AgentError::InvalidArgument(
                "jdbc_uri must not contain a NUL byte".into(),
            ));
        }
        let mode_name = match mode {
            StartMode::Start => "START",
            StartMode::CreateAndStart => "CREATE_AND_START",
            StartMode::Unspecified => {
                return Err(AgentError::InvalidArgument(
                    "mode must be START or CREATE_AND_START".into(),
                ));
            }
        };
        let _ops = self.lock_ops("Start").await?;
        {
            let inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let (Some(r), Phase::Running) = (&inner.record, inner.phase) {
                if process_alive(r.pid, r.start_time_ticks) {
                    return Ok((r.pid, true));
                }
            }
        }
        let version_dir = places::active_dir(&self.cfg.paths.install_root).ok_or_else(|| {
            AgentError::FailedPrecondition(
                "no active runtime: install and activate one first".into(),
            )
        })?;
        let runtime_dir = layout::runtime_dir(self.cfg.hub.layout, &version_dir)?;
        // The hub is pointed at the settings in the configured appdata; they
        // must keep it there, or it would run on another project.
        let binding = settings::check(&self.cfg, &runtime_dir).map_err(|e| {
            AgentError::FailedPrecondition(format!("refusing to start the hub: {e}"))
        })?;
        if binding.store_forward_in_runtime {
            tracing::warn!(
                dir = %runtime_dir.display(),
                "directories.storeForwardData is unset: store-and-forward files live in the runtime directory \
                 (backed up and carried across runtime switches; set the key to keep them in appdata)"
            );
        }
        let runtime = runtime_dir.display().to_string();
        let appdata = self.cfg.paths.appdata.display().to_string();
        let vars = Vars {
            runtime: &runtime,
            node,
            jdbc: jdbc.expose(),
            appdata: &appdata,
        };
        let workdir = PathBuf::from(fill(&self.cfg.hub.working_dir, vars));
        if !workdir.is_dir() {
            return Err(AgentError::FailedPrecondition(format!(
                "working directory {} does not exist",
                workdir.display()
            )));
        }
        fsutil::ensure_dir(self.state_dir(), 0o700)?;

        if mode == StartMode::CreateAndStart {
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .creating = true;
            let result = self.run_create(vars, &workdir, node, &jdbc).await;
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .creating = false;
            result?;
        }

        let log_path = self.log_path();
        let log = fsutil::open_append(&log_path)?;
        let started_at = clock::now_unix_ms();
        let mut marker = &log;
        writeln!(
            marker,
            "--- hubshift-agent: {mode_name} node {node} at {started_at} ---"
        )
        .map_err(AgentError::io("cannot write", &log_path))?;
        let log_offset = log
            .metadata()
            .map_err(AgentError::io("cannot stat", &log_path))?
            .len();
        let probe_offset = self.probe.mark(&runtime, &appdata);
        let mut cmd = self.command(
            &self.cfg.hub.start_command,
            vars,
            &workdir,
            node,
            &jdbc,
            &log,
        )?;
        let child = cmd.spawn().map_err(|e| {
            AgentError::FailedPrecondition(format!(
                "cannot start the hub ({}): {e}",
                self.cfg.hub.start_command[0]
            ))
        })?;
        let pid = child
            .id()
            .ok_or_else(|| AgentError::Internal("hub exited before its pid was read".into()))?;
        let start_time_ticks = proc_start_ticks(pid).unwrap_or(0);
        let record = HubRecord {
            pid,
            start_time_ticks,
            mode: mode_name.into(),
            node: node.into(),
            started_at_unix_ms: started_at,
            log_offset,
            probe_offset,
        };
        let generation = {
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.generation += 1;
            inner.record = Some(record.clone());
            inner.phase = Phase::Running;
            inner.generation
        };
        self.write_record(&record)?;
        tracing::info!(pid, node = %node, mode = mode_name, "hub started");
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut child = child;
            let code = match child.wait().await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    status.code().or_else(|| status.signal().map(|s| 128 + s))
                }
                Err(_) => None,
            };
            let mut inner = inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if inner.generation == generation && inner.phase == Phase::Running {
                tracing::info!(pid, code = ?code, "hub exited");
                inner.phase = Phase::Exited(code);
            }
        });
        Ok((pid, false))
    }

    fn command(
        &self,
        template: &[String],
        vars: Vars<'_>,
        workdir: &Path,
        node: &str,
        jdbc: &Secret,
        log: &std::fs::File,
    ) -> Result<tokio::process::Command> {
        let argv = fill_argv(template, vars);
        let out = log
            .try_clone()
            .map_err(AgentError::io("cannot duplicate", &self.log_path()))?;
        let err = log
            .try_clone()
            .map_err(AgentError::io("cannot duplicate", &self.log_path()))?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("HUBSHIFT_JDBC_URI", jdbc.expose())
            .env("HUBSHIFT_NODE", node)
            .env(settings::SETTINGS_ENV, settings::settings_file(&self.cfg))
            .envs(&self.cfg.hub.env)
            .process_group(0)
            .kill_on_drop(false);
        Ok(cmd)
    }

    /// HA `create`, run to completion on this host. Unlike the hub, create
    /// ends before the agent does, so its output passes through the agent
    /// and is masked (the JDBC URI) on its way into hub.log.
    async fn run_create(
        &self,
        vars: Vars<'_>,
        workdir: &Path,
        node: &str,
        jdbc: &Secret,
    ) -> Result<()> {
        let log_path = self.log_path();
        let log = fsutil::open_append(&log_path)?;
        let mut marker = &log;
        writeln!(
            marker,
            "--- hubshift-agent: create node {node} at {} ---",
            clock::now_unix_ms()
        )
        .map_err(AgentError::io("cannot write", &log_path))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command(
            &self.cfg.hub.create_command,
            vars,
            workdir,
            node,
            jdbc,
            &log,
        )?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            AgentError::FailedPrecondition(format!(
                "cannot run create ({}): {e}",
                self.cfg.hub.create_command[0]
            ))
        })?;
        let log = Arc::new(log);
        let copiers = [
            child
                .stdout
                .take()
                .map(|o| copy_masked(o, log.clone(), jdbc.clone())),
            child
                .stderr
                .take()
                .map(|o| copy_masked(o, log.clone(), jdbc.clone())),
        ];
        tracing::info!(node = %node, "running HA create");
        let limit = Duration::from_secs(self.cfg.hub.create_timeout_secs);
        let waited = tokio::time::timeout(limit, child.wait()).await;
        if waited.is_err() {
            if let Some(pid) = child.id() {
                signal_group(pid as i32, libc::SIGKILL);
            }
            let _ = child.wait().await;
        }
        for copier in copiers.into_iter().flatten() {
            // Output of grandchildren that outlive create must not hold us up.
            let _ = tokio::time::timeout(Duration::from_secs(5), copier).await;
        }
        let status = match waited {
            Ok(status) => status.map_err(AgentError::io("cannot wait for create in", workdir))?,
            Err(_) => {
                let tail = log_tail(&log_path, offset, jdbc);
                return Err(AgentError::FailedPrecondition(format!(
                    "create did not finish within {}s; output: {tail}",
                    limit.as_secs()
                )));
            }
        };
        if !status.success() {
            let tail = log_tail(&log_path, offset, jdbc);
            return Err(AgentError::FailedPrecondition(format!(
                "create failed ({status}); output: {tail}"
            )));
        }
        tracing::info!(node = %node, "HA create finished");
        Ok(())
    }
}

/// How long a killed process group is given to disappear.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// A task aborted when this is dropped, unless detached.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Lets the task run to its own end.
    fn detach(mut self) {
        self.0.take();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Copies lines of `from` into the log, masking the secret and passwords.
fn copy_masked<R>(from: R, log: Arc<std::fs::File>, jdbc: Secret) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = redact_with(&String::from_utf8_lossy(&line), &[jdbc.expose()]);
            let _ = (&*log).write_all(text.as_bytes());
        }
    })
}

/// Last 2 KiB of hub.log after `offset`, with the secret masked.
fn log_tail(path: &Path, offset: u64, jdbc: &Secret) -> String {
    const TAIL: u64 = 2048;
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = offset.max(len.saturating_sub(TAIL));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    redact_with(text.trim(), &[jdbc.expose()])
}

/// Cuts `path` back to its last half when longer than `max`. Returns the
/// number of bytes removed from the front.
pub fn cut_log(path: &Path, max: u64) -> Result<u64> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AgentError::io("cannot open", path)(e)),
    };
    let len = file
        .metadata()
        .map_err(AgentError::io("cannot stat", path))?
        .len();
    if len <= max {
        return Ok(0);
    }
    let keep = max / 2;
    let cut = len - keep;
    let mut buf = vec![0u8; 256 * 1024];
    let mut read_pos = cut;
    let mut write_pos = 0u64;
    file.seek(SeekFrom::Start(read_pos))
        .map_err(AgentError::io("cannot seek", path))?;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(AgentError::io("cannot read", path))?;
        if n == 0 {
            break;
        }
        file.write_all_at(&buf[..n], write_pos)
            .map_err(AgentError::io("cannot write", path))?;
        read_pos += n as u64;
        write_pos += n as u64;
        file.seek(SeekFrom::Start(read_pos))
            .map_err(AgentError::io("cannot seek", path))?;
    }
    file.set_len(write_pos)
        .map_err(AgentError::io("cannot truncate", path))?;
    Ok(read_pos - write_pos)
}

/// Start time (clock ticks since boot) of `pid`, field 22 of /proc/<pid>/stat.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    let (_, ticks) = proc_stat(pid)?;
    Some(ticks)
}

/// (state char, start ticks) of `pid`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse
    // after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((state, ticks))
}

/// Whether `pid` runs (not a zombie) and started at `ticks` (0: unknown).
pub fn process_alive(pid: u32, ticks: u64) -> bool {
    match proc_stat(pid) {
        Some((state, t)) => state != 'Z' && state != 'X' && (ticks == 0 || t == ticks),
        None => false,
    }
}

/// Whether `pid` is stopped by a signal or traced (state T or t).
pub fn process_frozen(pid: u32) -> bool {
    matches!(proc_stat(pid), Some(('T' | 't', _)))
}

fn group_exists(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: plain syscall on a process group we started (pgid == hub pid).
    unsafe {
        libc::kill(-pgid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_stat_parses() {
        let me = std::process::id();
        let ticks = proc_start_ticks(me).unwrap();
        assert!(process_alive(me, ticks));
        assert!(!process_alive(me, ticks + 1));
        assert!(!process_alive(u32::MAX - 1, 0));
    }

    #[test]
    fn log_cut_keeps_the_last_half() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.log");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(cut_log(&p, 20_000).unwrap(), 0);
        let cut = cut_log(&p, 8_000).unwrap();
        assert_eq!(cut, 6_000);
        assert_eq!(std::fs::read(&p).unwrap(), &data[6_000..]);
    }
}
