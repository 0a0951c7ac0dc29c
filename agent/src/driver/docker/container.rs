//! The hub's container: recreated from the template at every start (so a
//! new image version and a new mode take effect), stopped with the engine's
//! stop and kept until the next start (its output stays readable), found
//! again by name and label after an agent restart.

use super::spec::{
    LABEL_MODE, LABEL_NODE, LABEL_PROBE_OFFSET, LABEL_STARTED_AT, Launch, label, managed, pid,
};
use super::stop::KILL_GRACE;
use super::{ImageStore, LABEL_MANAGED, engine_error, is_not_found, store_forward};
use crate::config::{Config, DockerSection};
use crate::driver::ops::{OpsGuard, OpsLock, Stops, lock_wait};
use crate::driver::{
    HostFiles, HubDriver, HubState, HubView, StartArgs, StartMode, Started, Stopped,
};
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::role::{HubOutput, Probe, ProbeInput, Role};
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder,
};
use hubshift_common::redact::{Secret, redact_with};
use regex::Regex;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_stream::StreamExt;

/// Suffix of the previous container's name while a start replaces it.
const PREVIOUS_SUFFIX: &str = "-hubshift-previous";

/// The hub as a container.
pub struct DockerHub {
    pub(super) cfg: Arc<Config>,
    pub(super) d: DockerSection,
    pub(super) engine: Docker,
    pub(super) images: Arc<ImageStore>,
    pub(super) probe: Probe,
    pub(super) created: Option<Regex>,
    /// Serialises Start, Stop, ActivateRuntime and Restore.
    pub(super) ops: OpsLock,
    /// The stop in progress, which later Stops join.
    pub(super) stops: Stops<Stopped>,
    /// CREATE_AND_START waits for `created_pattern`.
    pub(super) creating: AtomicBool,
}

impl DockerHub {
    /// The driver for `d`'s container.
    pub fn new(
        cfg: Arc<Config>,
        d: DockerSection,
        engine: Docker,
        images: Arc<ImageStore>,
    ) -> Result<DockerHub> {
        let probe = Probe::new(&cfg.role_probe)
            .map_err(|e| AgentError::Internal(format!("role probe pattern: {e}")))?;
        let created = if d.created_pattern.is_empty() {
            None
        } else {
            Some(
                Regex::new(&d.created_pattern)
                    .map_err(|e| AgentError::Internal(format!("created_pattern: {e}")))?,
            )
        };
        Ok(DockerHub {
            cfg,
            d,
            engine,
            images,
            probe,
            created,
            ops: OpsLock::default(),
            stops: Stops::default(),
            creating: AtomicBool::new(false),
        })
    }

    /// `<state>/docker-stopped`: id of the container Stop stopped, so that
    /// Status tells a stop apart from an exit.
    pub(super) fn stopped_marker(&self) -> PathBuf {
        self.cfg.paths.state_dir.join("docker-stopped")
    }

    /// Logs what an agent restart finds.
    pub async fn readopt(&self) {
        match self.inspect().await {
            Ok(Some(c)) if managed(&c) => {
                let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                tracing::info!(container = %self.d.container, running, "re-adopted the hub container");
            }
            Ok(Some(_)) => tracing::warn!(
                container = %self.d.container,
                "a container of that name exists without the label {LABEL_MANAGED}: the agent will not touch it"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot inspect the hub container"),
        }
    }

    /// The container, if it exists.
    pub(super) async fn inspect(&self) -> Result<Option<ContainerInspectResponse>> {
        match self.engine.inspect_container(&self.d.container, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_error("cannot inspect the hub container")(e)),
        }
    }

    /// The container's output since its start (it is recreated at every
    /// start), its last `log_tail_lines` lines.
    async fn output(&self) -> Vec<u8> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&self.d.log_tail_lines.to_string())
            .build();
        let mut stream = self.engine.logs(&self.d.container, Some(options));
        let mut out = Vec::new();
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                out.extend_from_slice(&chunk.into_bytes());
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        out
    }

    fn input(&self, output: Vec<u8>, c: Option<&ContainerInspectResponse>) -> ProbeInput {
        ProbeInput {
            output: HubOutput::Bytes(output),
            file_offset: c
                .and_then(|c| label(c, LABEL_PROBE_OFFSET))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            runtime: String::new(),
            appdata: self.cfg.paths.appdata.display().to_string(),
        }
    }

    /// Whether the container runs now.
    pub(super) async fn running(&self) -> Result<bool> {
        Ok(self
            .inspect()
            .await?
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false))
    }

    /// Waits until the container's output says HA create is done; fails
    /// with its (masked) last output when it ends first or takes too long.
    /// The output is followed as the engine receives it, not polled: the
    /// answer marks the moment the old nodes may stop serving (the new
    /// schema is there), so it must come as soon as the line does.
    async fn await_created(&self, pattern: &Regex, jdbc: &Secret) -> Result<()> {
        let limit = Duration::from_secs(self.cfg.hub.create_timeout_secs);
        let deadline = tokio::time::Instant::now() + limit;
        let tail = |output: &[u8]| {
            let text = String::from_utf8_lossy(output);
            let start = text.len().saturating_sub(2048);
            let start = (start..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            redact_with(text[start..].trim(), &[jdbc.expose()])
        };
        loop {
            // From the container's start each time: a stream the engine (or
            // the client's request timeout) cut short is read again whole.
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .follow(true)
                .build();
            let mut stream = self.engine.logs(&self.d.container, Some(options));
            let followed = tokio::time::timeout_at(deadline, async {
                // The line being written: complete lines are matched and dropped.
                let mut line: Vec<u8> = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let Ok(chunk) = chunk else {
                        return false;
                    };
                    line.extend_from_slice(&chunk.into_bytes());
                    let text = String::from_utf8_lossy(&line);
                    if text.lines().any(|l| pattern.is_match(l)) {
                        return true;
                    }
                    if let Some(end) = line.iter().rposition(|b| *b == b'\n') {
                        line.drain(..=end);
                    }
                }
                false
            })
            .await;
            match followed {
                Ok(true) => return Ok(()),
                Err(_) => {
                    return Err(AgentError::FailedPrecondition(format!(
                        "HA create did not finish within {}s (docker.created_pattern not seen); output: {}",
                        limit.as_secs(),
                        tail(&self.output().await)
                    )));
                }
                // The stream ended: the container stopped, or the stream broke.
                Ok(false) => {}
            }
            let running = self
                .inspect()
                .await?
                .and_then(|c| c.state)
                .and_then(|s| s.running)
                .unwrap_or(false);
            if !running {
                // It may have printed the line just before it ended.
                let output = self.output().await;
                if String::from_utf8_lossy(&output)
                    .lines()
                    .any(|l| pattern.is_match(l))
                {
                    return Ok(());
                }
                return Err(AgentError::FailedPrecondition(format!(
                    "the hub container ended during HA create; output: {}",
                    tail(&output)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start_locked(&self, mode: StartMode, node: &str, jdbc: &Secret) -> Result<Started> {
        let name = &self.d.container;
        if let Some(c) = self.inspect().await? {
            if !managed(&c) {
                return Err(AgentError::FailedPrecondition(format!(
                    "container {name} exists and is not managed by hubshift (no label {LABEL_MANAGED}); remove or rename it"
                )));
            }
            if c.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
                return Ok(Started {
                    pid: pid(&c),
                    already_running: true,
                    ..Started::default()
                });
            }
        }
        let version = self.images.active_version_checked().await?;
        let image = self.images.image_ref(&version);
        fsutil::ensure_dir(&self.cfg.paths.state_dir, 0o700)?;
        let appdata = self.cfg.paths.appdata.display().to_string();
        let probe_offset = self.probe.mark("", &appdata);
        let body = self.body(Launch {
            image: &image,
            version: &version,
            mode,
            node,
            jdbc,
            probe_offset,
        })?;
        // Where the hub keeps store-and-forward files that die with its
        // container (none when they are on the appData mount).
        let sf_dir = {
            let (cfg, d) = (self.cfg.clone(), self.d.clone());
            tokio::task::spawn_blocking(move || store_forward::container_dir(&cfg, &d)).await??
        };
        // The container of the previous start (kept for its output and its
        // store-and-forward files) steps aside under another name until the
        // new one holds those files.
        let previous = self.set_previous_aside().await?;
        // Engine messages never carry the environment, but mask anyway.
        let masked = |e: AgentError| mask(e, jdbc);
        self.engine
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                body,
            )
            .await
            .map_err(engine_error("cannot create the hub container"))
            .map_err(masked)?;
        let carried = match (&previous, &sf_dir) {
            (Some(from), Some(dir)) => {
                store_forward::copy(&self.engine, from, name, dir, &self.cfg.paths.state_dir)
                    .await?
            }
            _ => Vec::new(),
        };
        if let Some(from) = &previous {
            self.remove(from).await?;
        }
        let _ = std::fs::remove_file(self.stopped_marker());
        self.engine
            .start_container(name, None)
            .await
            .map_err(engine_error("cannot start the hub container"))
            .map_err(masked)?;
        tracing::info!(container = %name, image = %image, node = %node, mode = mode.name(), carried = carried.len(), "hub container started");
        if mode == StartMode::CreateAndStart {
            if let Some(pattern) = &self.created {
                self.creating.store(true, Ordering::SeqCst);
                let created = self.await_created(pattern, jdbc).await;
                self.creating.store(false, Ordering::SeqCst);
                created?;
                tracing::info!(container = %name, node = %node, "HA create finished");
            }
        }
        let pid = self.inspect().await?.map_or(0, |c| pid(&c));
        Ok(Started {
            pid,
            already_running: false,
            carried_store_forward: carried,
        })
    }

    /// Name of the previous container while a start replaces it.
    fn previous_name(&self) -> String {
        format!("{}{PREVIOUS_SUFFIX}", self.d.container)
    }

    /// Makes way for a new container: renames the stopped previous one to
    /// [`Self::previous_name`] and returns that name. When an earlier start
    /// was interrupted, the renamed container is still there, and any
    /// container under the hub's name is one that start created and never
    /// started: it goes, the renamed one stays the source. None when there
    /// was no previous container.
    async fn set_previous_aside(&self) -> Result<Option<String>> {
        let name = &self.d.container;
        let previous = self.previous_name();
        match self.inspect_named(&previous).await? {
            Some(c) if !managed(&c) => {
                return Err(AgentError::FailedPrecondition(format!(
                    "container {previous} exists and is not managed by hubshift (no label {LABEL_MANAGED}); remove or rename it"
                )));
            }
            Some(_) => {
                tracing::warn!(
                    container = %previous,
                    "an earlier start was interrupted: its previous hub container is still the source of the store-and-forward files"
                );
                self.remove(name).await?;
                return Ok(Some(previous));
            }
            None => {}
        }
        if self.inspect().await?.is_none() {
            return Ok(None);
        }
        self.engine
            .rename_container(
                name,
                RenameContainerOptionsBuilder::default()
                    .name(&previous)
                    .build(),
            )
            .await
            .map_err(engine_error("cannot rename the previous hub container"))?;
        Ok(Some(previous))
    }

    /// Removes a container (gone already is fine).
    async fn remove(&self, name: &str) -> Result<()> {
        match self
            .engine
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error("cannot remove the previous hub container")(e)),
        }
    }

    async fn inspect_named(&self, name: &str) -> Result<Option<ContainerInspectResponse>> {
        match self.engine.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_error("cannot inspect the hub container")(e)),
        }
    }
}

fn mask(e: AgentError, jdbc: &Secret) -> AgentError {
    let m = |s: &str| redact_with(s, &[jdbc.expose()]);
    match e {
        AgentError::InvalidArgument(s) => AgentError::InvalidArgument(m(&s)),
        AgentError::NotFound(s) => AgentError::NotFound(m(&s)),
        AgentError::FailedPrecondition(s) => AgentError::FailedPrecondition(m(&s)),
        AgentError::Unavailable(s) => AgentError::Unavailable(m(&s)),
        other => other,
    }
}

#[tonic::async_trait]
impl HubDriver for DockerHub {
    async fn start(&self, args: StartArgs) -> Result<Started> {
        let _ops = self.ops.acquire("Start", lock_wait(&self.cfg)).await?;
        self.start_locked(args.mode, &args.node, &args.jdbc).await
    }

    async fn stop(&self, timeout: Duration) -> Result<Stopped> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.stops
            .run(deadline, KILL_GRACE + Duration::from_secs(5), |kill_at| {
                self.stop_leading(timeout, kill_at)
            })
            .await
    }

    async fn view(&self) -> Result<HubView> {
        let mut view = HubView {
            state: HubState::Stopped,
            ..HubView::default()
        };
        let c = match self.inspect().await? {
            Some(c) if managed(&c) => c,
            _ => return Ok(view),
        };
        view.mode = label(&c, LABEL_MODE).unwrap_or_default().to_string();
        view.node = label(&c, LABEL_NODE).unwrap_or_default().to_string();
        view.started_at_unix_ms = label(&c, LABEL_STARTED_AT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let state = c.state.clone().unwrap_or_default();
        if self.creating.load(Ordering::SeqCst) {
            view.state = HubState::Starting;
            return Ok(view);
        }
        if state.running.unwrap_or(false) {
            view.pid = pid(&c);
            view.frozen = state.paused.unwrap_or(false);
            let role = self
                .probe
                .probe(&self.input(self.output().await, Some(&c)))
                .await;
            (view.state, view.role) = match role {
                Role::Unknown => (HubState::Starting, Role::Unknown),
                Role::Active => (HubState::Running, Role::Active),
                Role::Standby => (HubState::Running, Role::Standby),
            };
            return Ok(view);
        }
        let stopped = std::fs::read_to_string(self.stopped_marker()).unwrap_or_default();
        if c.id.as_deref() == Some(stopped.trim())
            || state.status == Some(ContainerStateStatusEnum::CREATED)
        {
            view.state = HubState::Stopped;
        } else {
            view.state = HubState::Exited;
            view.exit_code = state.exit_code.and_then(|c| i32::try_from(c).ok());
        }
        Ok(view)
    }

    async fn host_files(&self) -> Option<HostFiles> {
        // The runtime and its settings live inside the container's image.
        None
    }

    async fn probe_input(&self) -> ProbeInput {
        let c = self.inspect().await.ok().flatten();
        self.input(self.output().await, c.as_ref())
    }

    async fn is_running(&self) -> bool {
        if self.creating.load(Ordering::SeqCst) {
            return true;
        }
        match self.inspect().await {
            Ok(Some(c)) => c.state.and_then(|s| s.running).unwrap_or(false),
            Ok(None) => false,
            // Unknown is not "stopped": refuse what needs a stopped hub.
            Err(_) => true,
        }
    }

    async fn lock_ops(&self, what: &'static str) -> Result<OpsGuard<'_>> {
        self.ops.acquire(what, lock_wait(&self.cfg)).await
    }

    fn spawn_housekeeping(&self, _shutdown: tokio::sync::watch::Receiver<bool>) {
        // The engine keeps (and rotates, per its log driver) the output.
    }
}
