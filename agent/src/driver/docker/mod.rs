//! The `docker` driver: the hub is a container of the Docker Engine (or
//! Podman's compatible socket), recreated from `[docker]` at each start
//! with the active version's image; runtimes are images loaded from
//! `docker save` archives and tagged `<image_repository>:<version>`.
//! Everything goes through the engine's API on its local socket.

mod container;
mod images;
mod spec;
mod stop;
mod store_forward;

pub use container::DockerHub;
pub use images::ImageStore;

use super::Drivers;
use crate::config::{Config, DockerSection};
use crate::error::{AgentError, Result};
use bollard::Docker;
use std::sync::Arc;

/// Label on every container the agent made; re-adoption looks for it.
pub const LABEL_MANAGED: &str = "hubshift.managed";

/// Opens both halves: connects to the engine, resolves a named appData
/// volume to its mount point (created when missing), re-adopts the container.
pub async fn open(cfg: Arc<Config>) -> Result<Drivers> {
    let d = cfg
        .docker
        .clone()
        .ok_or_else(|| AgentError::Internal("driver docker without [docker]".into()))?;
    let engine = connect(&d).await?;
    let cfg = if d.appdata_volume.is_empty() {
        cfg
    } else {
        let mountpoint = volume_mountpoint(&engine, &d.appdata_volume).await?;
        let mut resolved = (*cfg).clone();
        if resolved.paths.appdata != mountpoint {
            tracing::info!(
                volume = %d.appdata_volume,
                appdata = %mountpoint.display(),
                "appData is the named volume's mount point"
            );
        }
        resolved.paths.appdata = mountpoint;
        Arc::new(resolved)
    };
    let data_root = images::data_root(&engine, &cfg.paths.install_root).await;
    let images = Arc::new(ImageStore::new(
        cfg.clone(),
        d.clone(),
        engine.clone(),
        data_root,
    ));
    let hub = DockerHub::new(cfg.clone(), d, engine, images.clone())?;
    hub.readopt().await;
    Ok(Drivers {
        cfg,
        hub: Arc::new(hub),
        runtimes: images,
    })
}

/// Connects to the socket and settles on the engine's API version (an
/// engine older than the client's default, such as 20.10, answers 1.41).
async fn connect(d: &DockerSection) -> Result<Docker> {
    let unreachable = |e: bollard::errors::Error| {
        AgentError::Unavailable(format!("Docker Engine at {}: {e}", d.socket))
    };
    let engine = Docker::connect_with_unix(&d.socket, 120, bollard::API_DEFAULT_VERSION)
        .map_err(unreachable)?;
    let engine = engine.negotiate_version().await.map_err(unreachable)?;
    engine.ping().await.map_err(unreachable)?;
    Ok(engine)
}

async fn volume_mountpoint(engine: &Docker, name: &str) -> Result<std::path::PathBuf> {
    let volume = match engine.inspect_volume(name).await {
        Ok(v) => v,
        Err(e) if is_not_found(&e) => {
            tracing::info!(volume = name, "creating the appData volume");
            engine
                .create_volume(bollard::models::VolumeCreateRequest {
                    name: Some(name.to_string()),
                    ..Default::default()
                })
                .await
                .map_err(engine_error("cannot create volume"))?
        }
        Err(e) => return Err(engine_error("cannot inspect volume")(e)),
    };
    if volume.mountpoint.is_empty() {
        return Err(AgentError::FailedPrecondition(format!(
            "volume {name} has no mount point on this host (a remote volume driver?): Backup and Restore need one"
        )));
    }
    Ok(volume.mountpoint.into())
}

/// Whether the engine answered 404.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Maps an engine error: a refusal (4xx) is the request's fault, anything
/// else means the engine is not usable now.
pub fn engine_error(what: &'static str) -> impl Fn(bollard::errors::Error) -> AgentError {
    move |e| match &e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => AgentError::NotFound(format!("{what}: {message}")),
            409 => AgentError::FailedPrecondition(format!("{what}: {message}")),
            400..=499 => AgentError::InvalidArgument(format!("{what}: {message}")),
            _ => AgentError::Unavailable(format!("{what}: Docker Engine: {message}")),
        },
        _ => AgentError::Unavailable(format!("{what}: Docker Engine: {e}")),
    }
}
