//! The gRPC service, the agent's edge: each handler runs its operation in
//! a task of its own; the work lives in the modules named after the step
//! (appdata, certificate) and behind the driver's two seams (hub
//! lifecycle, runtime store). Wire messages are converted to and from the
//! drivers' domain types here and in `wire.rs`, nowhere else.

mod wire;

use crate::appdata;
use crate::certificate;
use crate::config::Config;
use crate::disk;
use crate::driver::{Drivers, HubDriver, RuntimeStore};
use crate::error::{AgentError, Result};
use crate::hubfiles::settings;
use crate::metrics::Counters;
use crate::precopy;
use hubshift_common::pb::hub_agent_server::HubAgent;
use hubshift_common::pb::*;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The gRPC face of the agent.
pub struct AgentService {
    ops: Arc<Operations>,
}

/// State shared by all handlers. Held in an `Arc` so that an accepted
/// operation runs in a task of its own, to its end, even when the caller
/// disconnects (tonic drops a handler's future when its client goes away:
/// a Start cancelled between `create` and `start`, or a Backup whose writer
/// outlives its lock, would leave the host in a state nobody asked for).
struct Operations {
    cfg: Arc<Config>,
    hub: Arc<dyn HubDriver>,
    runtimes: Arc<dyn RuntimeStore>,
    /// One backup write at a time: a retried Backup of the same id waits
    /// for the running one and then finds its file.
    backup_lock: tokio::sync::Mutex<()>,
    /// Slots for InstallRuntime uploads (`limits.max_concurrent_uploads`).
    uploads: Arc<tokio::sync::Semaphore>,
    /// What `/metrics` reports of the work done here.
    counters: Counters,
}

type Reply<T> = std::result::Result<Response<T>, Status>;

/// FetchBackup's answer: the backup file's chunks on the wire.
type BackupChunks =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = std::result::Result<Chunk, Status>> + Send>>;

/// Runs `work` in its own task and waits for it. Dropping the returned
/// future (the caller vanished) does not stop the work.
async fn detached<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    tokio::spawn(work).await?
}

impl AgentService {
    /// Wraps the configuration and the driver; counts into `counters`.
    pub fn new(cfg: Arc<Config>, drivers: Drivers, counters: Counters) -> Self {
        let uploads = cfg.limits.max_concurrent_uploads as usize;
        Self {
            ops: Arc::new(Operations {
                cfg,
                hub: drivers.hub,
                runtimes: drivers.runtimes,
                backup_lock: tokio::sync::Mutex::new(()),
                uploads: Arc::new(tokio::sync::Semaphore::new(uploads)),
                counters,
            }),
        }
    }
}

impl Operations {
    async fn hub_must_be_stopped(&self, what: &str) -> Result<()> {
        if self.hub.is_running().await {
            return Err(AgentError::FailedPrecondition(format!(
                "hub is running: stop it before {what}"
            )));
        }
        Ok(())
    }

    async fn do_status(&self, req: StatusRequest) -> Result<StatusResponse> {
        let view = self.hub.view().await?;
        let active = self.runtimes.active_version().await.unwrap_or_default();
        if req.brief {
            return Ok(StatusResponse {
                state: wire::hub_state(view.state) as i32,
                exit_code: view.exit_code,
                pid: view.pid,
                role: wire::hub_role(view.role) as i32,
                active_runtime: active,
                appdata: self.cfg.paths.appdata.display().to_string(),
                agent_version: hubshift_common::VERSION.into(),
                start_mode: view.mode,
                started_at_unix_ms: view.started_at_unix_ms,
                node: view.node,
                frozen: view.frozen,
                layout: self.cfg.hub.layout.name().into(),
                ..Default::default()
            });
        }
        let staged = self.runtimes.staged_versions().await;
        let mut staged_declared = Vec::with_capacity(staged.len());
        for version in &staged {
            let d = self.runtimes.declared(version).await.unwrap_or_default();
            staged_declared.push(StagedRuntime {
                version: version.clone(),
                declared_version: d.version,
                declared_by: d.by,
            });
        }
        let cfg = self.cfg.clone();
        // Where staged runtimes take room: the install root, or the engine's
        // data root for images.
        let room = self.runtimes.room_dir();
        let (cert_sha, space, appdata_bytes) = tokio::task::spawn_blocking(move || {
            let p = &cfg.paths;
            let cert_sha = certificate::get(&cfg).map(|s| s.sha256).unwrap_or_default();
            let space = [
                ("state", &p.state_dir),
                ("install_root", &room),
                ("appdata", &p.appdata),
            ]
            .into_iter()
            .map(|(name, path)| DirSpace {
                name: name.into(),
                path: path.display().to_string(),
                free_bytes: disk::free_bytes(path),
            })
            .collect::<Vec<_>>();
            let appdata_bytes = if req.measure_appdata {
                appdata::backup_sources(&cfg)
                    .iter()
                    .map(|s| match &s.only_prefix {
                        None => disk::tree_bytes(&s.path),
                        Some(_) => settings::writestore_files(&s.path)
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|f| std::fs::metadata(f).ok())
                            .map(|m| m.len())
                            .sum(),
                    })
                    .sum()
            } else {
                0
            };
            (cert_sha, space, appdata_bytes)
        })
        .await?;
        // The driver answers for its runtime directory and settings binding
        // (a container carries its runtime inside: none).
        let host_files = self.hub.host_files().await;
        Ok(StatusResponse {
            state: wire::hub_state(view.state) as i32,
            exit_code: view.exit_code,
            pid: view.pid,
            role: wire::hub_role(view.role) as i32,
            active_runtime: active,
            staged_runtimes: staged,
            appdata: self.cfg.paths.appdata.display().to_string(),
            certificate_sha256: cert_sha,
            free_space: space,
            agent_version: hubshift_common::VERSION.into(),
            start_mode: view.mode,
            started_at_unix_ms: view.started_at_unix_ms,
            node: view.node,
            appdata_bytes,
            frozen: view.frozen,
            settings: host_files.as_ref().map(wire::hub_settings),
            runtime_dir: host_files
                .and_then(|f| f.runtime_dir)
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            layout: self.cfg.hub.layout.name().into(),
            staged: staged_declared,
        })
    }

    async fn do_stop(&self, req: StopRequest) -> Result<StopResponse> {
        let timeout =
            crate::driver::ops::stop_timeout(req.timeout_seconds, self.cfg.hub.stop_timeout_secs)?;
        let stopped = self.hub.stop(timeout).await?;
        Ok(StopResponse {
            was_running: stopped.was_running,
            killed: stopped.killed,
        })
    }

    async fn do_start(&self, req: StartRequest) -> Result<StartResponse> {
        let args = wire::start_args(req)?;
        let started = self.hub.start(args).await?;
        if !started.already_running {
            self.counters.hub_starts.inc();
        }
        Ok(StartResponse {
            pid: started.pid,
            already_running: started.already_running,
            carried_store_forward: started.carried_store_forward,
        })
    }

    async fn do_backup(&self, req: BackupRequest) -> Result<BackupResponse> {
        let _one = self.backup_lock.lock().await;
        let cfg = self.cfg.clone();
        let made = tokio::task::spawn_blocking(move || {
            if req.base_id.is_empty() {
                let t = std::time::Instant::now();
                appdata::backup(&cfg, &req.id).map(|info| precopy::Made::full(info, t))
            } else {
                precopy::backup_with_base(&cfg, &req.id, &req.base_id)
            }
        })
        .await??;
        if !made.info.existed {
            self.counters
                .backup_written(made.info.size, made.write_ms as f64 / 1000.0);
        }
        Ok(wire::backup_made(made))
    }

    async fn do_backup_base(&self, req: BackupRequest) -> Result<BackupResponse> {
        let _one = self.backup_lock.lock().await;
        let cfg = self.cfg.clone();
        let t = std::time::Instant::now();
        let info =
            tokio::task::spawn_blocking(move || precopy::take_base_gently(cfg, req.id)).await??;
        Ok(wire::backup_made(precopy::Made::full(info, t)))
    }

    async fn do_verify_backup(&self, req: VerifyBackupRequest) -> Result<VerifyBackupResponse> {
        let cfg = self.cfg.clone();
        let (verified, base) =
            tokio::task::spawn_blocking(move || precopy::verify(&cfg, &req.id, &req.sha256))
                .await??;
        let base = base.unwrap_or(precopy::pair::BaseChecked {
            id: String::new(),
            sha256: String::new(),
            size: 0,
        });
        Ok(VerifyBackupResponse {
            sha256: verified.sha256,
            size_bytes: verified.size_bytes,
            entries: verified.entries,
            base_id: base.id,
            base_sha256: base.sha256,
            base_size_bytes: base.size,
        })
    }

    async fn do_fetch_backup(&self, req: FetchBackupRequest) -> Result<BackupChunks> {
        let file = appdata::open(&self.cfg, &req.id)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || appdata::stream_file(file, tx));
        Ok(Box::pin(ReceiverStream::new(rx).map(wire::backup_chunk)))
    }

    async fn do_restore(&self, req: RestoreRequest) -> Result<RestoreResponse> {
        let _ops = self.hub.lock_ops("Restore").await?;
        self.hub_must_be_stopped("restoring appdata").await?;
        let cfg = self.cfg.clone();
        let set_aside_path =
            tokio::task::spawn_blocking(move || precopy::restore(&cfg, &req.id, &req.sha256))
                .await??;
        Ok(RestoreResponse { set_aside_path })
    }

    async fn do_install_runtime(
        &self,
        stream: Streaming<InstallRuntimeRequest>,
    ) -> Result<InstallRuntimeResponse> {
        let result = self.install_runtime(stream).await;
        if let Err(e) = &result {
            self.counters.upload_refused(e.code_and_message().0);
        }
        result
    }

    async fn install_runtime(
        &self,
        stream: Streaming<InstallRuntimeRequest>,
    ) -> Result<InstallRuntimeResponse> {
        // Refused at once rather than queued: an upload holds a thread and
        // a staging directory for as long as its sender takes.
        let _slot = self.uploads.clone().try_acquire_owned().map_err(|_| {
            AgentError::ResourceExhausted(format!(
                "{} runtime uploads are already running (limits.max_concurrent_uploads); retry later",
                self.cfg.limits.max_concurrent_uploads
            ))
        })?;
        let upload = wire::upload(stream).await?;
        let installed = self.runtimes.install(upload, self.cfg.limits).await?;
        if !installed.already_installed {
            self.counters
                .upload_bytes
                .inc_by(installed.header.size_bytes);
        }
        let h = installed.header;
        let mut activated = false;
        if h.activate {
            self.do_activate_runtime(ActivateRuntimeRequest {
                version: h.version.clone(),
            })
            .await
            .map_err(|e| match e {
                AgentError::FailedPrecondition(why) => AgentError::FailedPrecondition(format!(
                    "runtime {} was installed but not activated ({why}); ActivateRuntime switches to it later",
                    h.version
                )),
                other => other,
            })?;
            activated = true;
        }
        Ok(InstallRuntimeResponse {
            version: h.version,
            sha256: h.sha256,
            activated,
            already_installed: installed.already_installed,
        })
    }

    async fn do_activate_runtime(
        &self,
        req: ActivateRuntimeRequest,
    ) -> Result<ActivateRuntimeResponse> {
        let _ops = self.hub.lock_ops("ActivateRuntime").await?;
        self.hub_must_be_stopped("switching the runtime").await?;
        let activated = self.runtimes.activate(&req.version).await?;
        Ok(ActivateRuntimeResponse {
            previous: activated.previous,
            active: activated.active,
            carried_store_forward: activated.carried_store_forward,
        })
    }

    async fn do_get_certificate(&self) -> Result<Certificate> {
        let cfg = self.cfg.clone();
        let store = tokio::task::spawn_blocking(move || certificate::get(&cfg)).await??;
        Ok(Certificate {
            content: store.content,
            sha256: store.sha256,
        })
    }

    async fn do_put_certificate(&self, req: Certificate) -> Result<PutCertificateResponse> {
        let cfg = self.cfg.clone();
        let sha256 =
            tokio::task::spawn_blocking(move || certificate::put(&cfg, &req.content, &req.sha256))
                .await??;
        Ok(PutCertificateResponse { sha256 })
    }
}

#[tonic::async_trait]
impl HubAgent for AgentService {
    type FetchBackupStream = BackupChunks;

    async fn status(&self, req: Request<StatusRequest>) -> Reply<StatusResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_status(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn stop(&self, req: Request<StopRequest>) -> Reply<StopResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_stop(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn start(&self, req: Request<StartRequest>) -> Reply<StartResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_start(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn backup(&self, req: Request<BackupRequest>) -> Reply<BackupResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_backup(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn backup_base(&self, req: Request<BackupRequest>) -> Reply<BackupResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_backup_base(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn verify_backup(
        &self,
        req: Request<VerifyBackupRequest>,
    ) -> Reply<VerifyBackupResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_verify_backup(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn fetch_backup(
        &self,
        req: Request<FetchBackupRequest>,
    ) -> Reply<Self::FetchBackupStream> {
        self.ops
            .do_fetch_backup(req.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn restore(&self, req: Request<RestoreRequest>) -> Reply<RestoreResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_restore(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn install_runtime(
        &self,
        req: Request<Streaming<InstallRuntimeRequest>>,
    ) -> Reply<InstallRuntimeResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_install_runtime(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn activate_runtime(
        &self,
        req: Request<ActivateRuntimeRequest>,
    ) -> Reply<ActivateRuntimeResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_activate_runtime(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_certificate(&self, _req: Request<GetCertificateRequest>) -> Reply<Certificate> {
        let ops = self.ops.clone();
        detached(async move { ops.do_get_certificate().await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn put_certificate(&self, req: Request<Certificate>) -> Reply<PutCertificateResponse> {
        let ops = self.ops.clone();
        detached(async move { ops.do_put_certificate(req.into_inner()).await })
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
