//! Where things lie under the configured directories: the staged
//! runtimes and the `current` link under `install_root`, the backups under
//! the state directory. Every module that needs one of these places asks
//! here, so none has to reach into the module that writes them.

use crate::config::Config;
use std::fs;
use std::path::{Path, PathBuf};

/// Name of the link that selects the active runtime.
pub const CURRENT: &str = "current";

/// `<install_root>/runtimes`
pub fn runtimes_dir(install_root: &Path) -> PathBuf {
    install_root.join("runtimes")
}

/// Version the `current` link points at, if it points at a staged runtime.
pub fn active_version(install_root: &Path) -> Option<String> {
    let target = fs::read_link(install_root.join(CURRENT)).ok()?;
    let version = target.file_name()?.to_str()?.to_string();
    runtimes_dir(install_root)
        .join(&version)
        .is_dir()
        .then_some(version)
}

/// `runtimes/<active version>`, the value of `{runtime}`.
pub fn active_dir(install_root: &Path) -> Option<PathBuf> {
    active_version(install_root).map(|v| runtimes_dir(install_root).join(v))
}

/// `<state>/backups`
pub fn backups_dir(cfg: &Config) -> PathBuf {
    cfg.paths.state_dir.join("backups")
}
