//! ActivateRuntime for the process driver: the store-and-forward files
//! follow the hub into the new runtime directory, then the `current` link
//! is switched atomically.

use crate::config::Config;
use crate::driver::Activated;
use crate::error::{AgentError, Result};
use crate::hubfiles::carry::{carry, carry_back};
use crate::hubfiles::layout;
use crate::places::{CURRENT, active_version, runtimes_dir};
use crate::{fsutil, places, scratch};
use hubshift_common::names::validate_name;
use std::fs;
use std::path::Path;

/// ActivateRuntime: checks that `version` is staged and its layout
/// resolves, carries the store-and-forward files of the active runtime
/// directory into its runtime directory, then switches `current` (moving
/// them back if the switch fails).
/// The caller makes sure the hub does not run.
pub fn switch(cfg: &Config, version: &str) -> Result<Activated> {
    validate_name("runtime version", version)?;
    let version_dir = places::runtimes_dir(&cfg.paths.install_root).join(version);
    if !version_dir.is_dir() {
        return Err(AgentError::NotFound(format!(
            "runtime {version} is not staged"
        )));
    }
    let new_dir = layout::runtime_dir(cfg.hub.layout, &version_dir)?;
    let old_dir = layout::active_runtime_dir(cfg);
    let carried = match &old_dir {
        Some(old) => carry(old, &new_dir)?,
        None => Vec::new(),
    };
    match switch_link(&cfg.paths.install_root, version) {
        Ok(previous) => Ok(Activated {
            previous,
            active: version.to_string(),
            carried_store_forward: carried,
        }),
        Err(e) => {
            if let Some(old) = &old_dir {
                carry_back(old, &new_dir, &carried);
            }
            Err(e)
        }
    }
}

/// Switches `current` to `runtimes/<version>` atomically (a relative
/// symlink created beside it, renamed over it). Returns the version active
/// before (empty if none). The caller makes sure the hub does not run.
fn switch_link(install_root: &Path, version: &str) -> Result<String> {
    validate_name("runtime version", version)?;
    let dir = runtimes_dir(install_root).join(version);
    if !dir.is_dir() {
        return Err(AgentError::NotFound(format!(
            "runtime {version} is not staged"
        )));
    }
    let current = install_root.join(CURRENT);
    if let Ok(meta) = fs::symlink_metadata(&current) {
        if !meta.file_type().is_symlink() {
            return Err(AgentError::FailedPrecondition(format!(
                "{} exists and is not a symlink; move it away first",
                current.display()
            )));
        }
    }
    let previous = active_version(install_root).unwrap_or_default();
    let tmp = scratch::name_in(install_root, "current");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("runtimes").join(version), &tmp)
        .map_err(AgentError::io("cannot create link", &tmp))?;
    if let Err(e) = fs::rename(&tmp, &current) {
        let _ = fs::remove_file(&tmp);
        return Err(AgentError::io("cannot switch", &current)(e));
    }
    fsutil::sync_dir(install_root);
    tracing::info!(previous = %previous, active = %version, "runtime activated");
    Ok(previous)
}
