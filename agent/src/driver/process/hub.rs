//! Hub process supervision: start (optionally after HA `create`), stop,
//! observe, and re-adopt after an agent restart. The hub runs in its own
//! process group with its output appended straight to `<state>/hub.log`, so
//! it survives the agent.

use super::hub_log::cut_log;
use super::procfs::{proc_start_ticks, process_alive, process_frozen};
use super::record::HubRecord;
use crate::clock;
use crate::config::{Config, Vars, fill, fill_argv};
use crate::driver::ops::{OpsGuard, OpsLock, Stops, lock_wait};
use crate::driver::{HubState, HubView, StartArgs, StartMode, Started, Stopped};
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::hubfiles::layout;
use crate::hubfiles::settings;
use crate::places;
use crate::role::{HubOutput, Probe, ProbeInput, Role};
use hubshift_common::redact::Secret;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Nothing has run since the agent started.
    Idle,
    /// The recorded process runs.
    Running,
    /// It ended by itself; code when known.
    Exited(Option<i32>),
    /// It was stopped through Stop.
    Stopped,
}

pub(super) struct Inner {
    pub(super) record: Option<HubRecord>,
    pub(super) phase: Phase,
    pub(super) creating: bool,
    /// Bumped at every start, so a stale waiter does not touch a newer run.
    pub(super) generation: u64,
}

/// Supervises the one hub process of this host.
pub struct Hub {
    pub(super) cfg: Arc<Config>,
    probe: Probe,
    pub(super) inner: Arc<Mutex<Inner>>,
    /// Serialises Start, Stop, ActivateRuntime and Restore.
    pub(super) ops: OpsLock,
    /// The stop in progress, which later Stops join.
    pub(super) stops: Stops<Stopped>,
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

    pub(super) fn state_dir(&self) -> &Path {
        &self.cfg.paths.state_dir
    }

    /// The configuration this hub runs by.
    pub fn config(&self) -> Arc<Config> {
        self.cfg.clone()
    }

    /// `<state>/hub.log`
    pub fn log_path(&self) -> PathBuf {
        self.state_dir().join("hub.log")
    }

    pub(super) fn record_path(&self) -> PathBuf {
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

    pub(super) fn write_record(&self, rec: &HubRecord) -> Result<()> {
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

    /// State, pid, role and the current/last start, as Status reports them.
    pub async fn view(&self) -> HubView {
        let (phase, creating, record) = {
            let inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (inner.phase, inner.creating, inner.record.clone())
        };
        let mut view = HubView::default();
        if let Some(r) = &record {
            view.mode = r.mode.clone();
            view.node = r.node.clone();
            view.started_at_unix_ms = r.started_at_unix_ms;
        }
        match phase {
            _ if creating => view.state = HubState::Starting,
            Phase::Idle | Phase::Stopped => view.state = HubState::Stopped,
            Phase::Exited(code) => {
                view.state = HubState::Exited;
                view.exit_code = code;
            }
            Phase::Running => {
                let Some(rec) = record else {
                    // A running phase always carries its record; report the
                    // process as starting rather than guess a role.
                    view.state = HubState::Starting;
                    return view;
                };
                let role = self.probe.probe(&self.probe_input_for(Some(&rec))).await;
                view.pid = rec.pid;
                view.frozen = process_frozen(rec.pid);
                (view.state, view.role) = match role {
                    Role::Unknown => (HubState::Starting, Role::Unknown),
                    Role::Active => (HubState::Running, Role::Active),
                    Role::Standby => (HubState::Running, Role::Standby),
                };
            }
        }
        view
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
        let runtime = if self.probe.uses_runtime() {
            layout::active_runtime_dir(&self.cfg)
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
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

    /// Start: optionally run `create` to completion, then spawn the hub.
    /// The arguments were checked by [`StartArgs::check`].
    pub async fn start(self: &Arc<Self>, args: &StartArgs) -> Result<Started> {
        let (mode, node, jdbc) = (args.mode, args.node.as_str(), &args.jdbc);
        let mode_name = mode.name();
        let _ops = self.lock_ops("Start").await?;
        {
            let inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let (Some(r), Phase::Running) = (&inner.record, inner.phase) {
                if process_alive(r.pid, r.start_time_ticks) {
                    return Ok(Started {
                        pid: r.pid,
                        already_running: true,
                        ..Started::default()
                    });
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
            let result = self.run_create(vars, &workdir, node, jdbc).await;
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
            jdbc,
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
        Ok(Started {
            pid,
            ..Started::default()
        })
    }

    pub(super) fn command(
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
}
