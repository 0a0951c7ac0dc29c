//! The `process` driver: the hub as a host process group supervised by the
//! agent (`hub.rs`: start and what it is now; `create.rs`: HA create;
//! `stop.rs`; `record.rs`: `hub.json` for re-adoption; `procfs.rs`;
//! `hub_log.rs`), runtimes as directories under `install_root`
//! (`runtime.rs`, `unzip.rs`) with a `current` link (`activate.rs`). This file binds
//! them to the two seams.

mod activate;
mod create;
pub mod hub;
mod hub_log;
mod procfs;
mod record;
pub mod runtime;
mod stop;
mod unzip;

use super::{
    Activated, Drivers, HostFiles, HubDriver, HubView, Installed, RuntimeStore, StartArgs, Started,
    Stopped, Upload,
};
use crate::config::{Config, LimitsSection};
use crate::error::Result;
use crate::hubfiles::{layout, settings};
use crate::role::ProbeInput;
use hub::Hub;
use std::path::PathBuf;
use std::sync::Arc;

/// Opens both halves of the process driver.
pub fn open(cfg: Arc<Config>) -> Result<Drivers> {
    let hub = Hub::new(cfg.clone())?;
    Ok(Drivers {
        cfg: cfg.clone(),
        hub: Arc::new(ProcessHub { hub }),
        runtimes: Arc::new(RuntimeDirs {
            state_dir: cfg.paths.state_dir.clone(),
            install_root: cfg.paths.install_root.clone(),
            cfg: cfg.clone(),
        }),
    })
}

/// The hub as a supervised host process.
pub struct ProcessHub {
    hub: Arc<Hub>,
}

#[tonic::async_trait]
impl HubDriver for ProcessHub {
    async fn start(&self, args: StartArgs) -> Result<Started> {
        // ActivateRuntime carried the store-and-forward files already.
        self.hub.start(&args).await
    }

    async fn stop(&self, timeout: std::time::Duration) -> Result<Stopped> {
        self.hub.stop(timeout).await
    }

    async fn view(&self) -> Result<HubView> {
        Ok(self.hub.view().await)
    }

    async fn host_files(&self) -> Option<HostFiles> {
        let cfg = self.hub.config();
        tokio::task::spawn_blocking(move || HostFiles {
            runtime_dir: layout::active_runtime_dir(&cfg),
            settings_file: settings::settings_file(&cfg),
            settings: settings::check_active(&cfg),
        })
        .await
        .ok()
    }

    async fn probe_input(&self) -> ProbeInput {
        self.hub.probe_input()
    }

    async fn is_running(&self) -> bool {
        self.hub.is_running()
    }

    async fn lock_ops(&self, what: &'static str) -> Result<super::ops::OpsGuard<'_>> {
        self.hub.lock_ops(what).await
    }

    fn spawn_housekeeping(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.hub.spawn_log_cap(shutdown);
    }
}

/// `install_root/runtimes/<version>/` and the `current` link.
pub struct RuntimeDirs {
    state_dir: PathBuf,
    install_root: PathBuf,
    /// For the switch, which carries store-and-forward files along.
    cfg: Arc<Config>,
}

#[tonic::async_trait]
impl RuntimeStore for RuntimeDirs {
    async fn install(&self, upload: Upload, limits: LimitsSection) -> Result<Installed> {
        runtime::install(upload, &self.state_dir, &self.install_root, limits).await
    }

    async fn activate(&self, version: &str) -> Result<Activated> {
        let cfg = self.cfg.clone();
        let version = version.to_string();
        tokio::task::spawn_blocking(move || activate::switch(&cfg, &version)).await?
    }

    async fn active_version(&self) -> Option<String> {
        let root = self.install_root.clone();
        tokio::task::spawn_blocking(move || crate::places::active_version(&root))
            .await
            .ok()
            .flatten()
    }

    async fn staged_versions(&self) -> Vec<String> {
        let root = self.install_root.clone();
        tokio::task::spawn_blocking(move || runtime::staged_versions(&root))
            .await
            .unwrap_or_default()
    }

    async fn declared(&self, version: &str) -> Option<crate::declared::Declared> {
        let (state, root, version) = (
            self.state_dir.clone(),
            self.install_root.clone(),
            version.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            use crate::declared::{matches, read_record, read_tree};
            if let Some(recorded) = read_record(&state, &version) {
                return recorded;
            }
            // Staged by an older agent: read it now; a contradiction is
            // what the controller most needs to see.
            let found = read_tree(&crate::places::runtimes_dir(&root).join(&version));
            found
                .iter()
                .find(|d| !matches(&d.version, &version))
                .or_else(|| found.iter().max_by_key(|d| d.version.len()))
                .cloned()
        })
        .await
        .ok()
        .flatten()
    }

    fn room_dir(&self) -> PathBuf {
        self.install_root.clone()
    }
}
