//! The two seams between the gRPC service and the host: how the hub runs
//! ([`HubDriver`]: start, stop, observe, re-adopt) and where its runtimes
//! live ([`RuntimeStore`]: install, activate, list). The service only talks
//! to these, in domain types, so a hub in a container and a hub as a host
//! process are upgraded by the same controller steps. `registry.rs` opens
//! the configured driver; `process/` and `docker/` are the two drivers.

pub mod docker;
mod hub_driver;
pub mod ops;
pub mod process;
pub mod registry;
mod runtime_store;
pub mod upload;

pub use hub_driver::{
    HostFiles, HubDriver, HubState, HubView, StartArgs, StartMode, Started, Stopped,
};
pub use runtime_store::{
    Activated, ArchiveFormat, Chunks, Installed, RuntimeHeader, RuntimeStore, Upload,
};

use crate::config::Config;
use std::sync::Arc;

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
