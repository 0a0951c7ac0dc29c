//! What the sandbox could not set up, and the options it is built with.

use crate::lifetime::Watchdog;
use crate::pg::PgError;
use crate::timing::SimTiming;
use hubshift_common::pki::{self};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Something the sandbox could not set up.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// PostgreSQL could not be started or reached.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A binary is missing.
    #[error(transparent)]
    Bin(#[from] crate::bins::BinError),
    /// A runtime archive could not be written.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A hubsim image could not be built.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// Certificates could not be minted.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// File system trouble.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TOML file could not be written or read back.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the toml crate said.
        message: String,
    },
    /// An agent did not behave.
    #[error("{0}")]
    Agent(String),
}

/// Wraps an I/O error with what was being done.
pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// The directory everything of a sandbox or fleet lives in: `dir`, or a
/// temp dir (prefixed `prefix`, made in `parent` when given) removed on
/// drop and, should this process be killed, by a watchdog.
pub(crate) fn root_dir(
    dir: Option<&Path>,
    prefix: &str,
    parent: Option<&Path>,
) -> Result<(Option<tempfile::TempDir>, PathBuf, Option<Watchdog>), SandboxError> {
    let (tmp, root) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
            (
                None,
                std::path::absolute(d).map_err(io(format!("resolving {}", d.display())))?,
            )
        }
        None => {
            let mut builder = tempfile::Builder::new();
            builder.prefix(prefix);
            let t = match parent {
                Some(p) => builder.tempdir_in(p),
                None => builder.tempdir(),
            }
            .map_err(io("creating a temp dir"))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let watchdog = match &tmp {
        Some(t) => Some(Watchdog::remove_dir(t.path()).map_err(io("starting a watchdog"))?),
        None => None,
    };
    Ok((tmp, root, watchdog))
}

/// How to build the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Number of nodes; the first is the primary.
    pub nodes: usize,
    /// Runtime version the group runs at the start.
    pub version: String,
    /// hubsim timings.
    pub timing: SimTiming,
    /// Where to keep everything; a temp dir (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// How the agents run the hubs.
    pub driver: HubDriver,
    /// Driver docker: appData in a named volume per node (the agents then
    /// work on its mount point) instead of a bind-mounted directory.
    pub appdata_volume: bool,
    /// Driver docker: start the hubs as an older image must be (a command
    /// override with `--mode HA_INIT|HA`) instead of through `START_MODE`.
    pub command_override: bool,
    /// Nodes are named `<node_prefix>-a`, `<node_prefix>-b`, …
    pub node_prefix: String,
}

/// The agents' hub driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HubDriver {
    /// hubsim as host processes, runtimes as tar.gz archives.
    #[default]
    Process,
    /// hubsim containers of the local Docker Engine on a private network
    /// of their own (the sandbox's PostgreSQL also listens on its gateway),
    /// runtimes as `docker save` archives of hubsim images.
    Docker,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            nodes: 2,
            version: "4.1.0".into(),
            timing: SimTiming::fast(),
            dir: None,
            driver: HubDriver::Process,
            appdata_volume: false,
            command_override: false,
            node_prefix: "hub".into(),
        }
    }
}
