//! The drivers this agent knows, by the name `[hub] driver` gives them.
//! A new driver is one more arm here (and one more `DriverKind`).

use super::{Drivers, docker, process};
use crate::config::{Config, DriverKind};
use crate::error::Result;
use std::sync::Arc;

/// Opens the driver `[hub] driver` names; re-adopts a hub that still runs.
pub async fn open(cfg: Arc<Config>) -> Result<Drivers> {
    match cfg.hub.driver {
        DriverKind::Process => process::open(cfg),
        DriverKind::Docker => docker::open(cfg).await,
    }
}
