//! Where `{runtime}` lies inside `runtimes/<version>/`. A vendor release
//! unpacks to one folder (`HighByte-Intelligence-Hub-4.3/`) holding
//! `runtime/` (the jar and `lib/`), `configuration/` and a template
//! `appData/`; the command templates must reach the jar, never that
//! template appData.

use crate::config::{Config, Layout};
use crate::error::{AgentError, Result};
use crate::places;
use std::path::{Path, PathBuf};

/// Name of the folder holding the jar in a vendor release.
pub const VENDOR_RUNTIME: &str = "runtime";

/// The directory `{runtime}` stands for, given a staged version directory.
/// Vendor layout: `<version dir>/runtime`, or `<version dir>/<the one
/// top-level folder holding runtime/>/runtime`. Errors say what is missing.
pub fn runtime_dir(layout: Layout, version_dir: &Path) -> Result<PathBuf> {
    match layout {
        Layout::Plain => Ok(version_dir.to_path_buf()),
        Layout::Vendor => {
            let direct = version_dir.join(VENDOR_RUNTIME);
            if direct.is_dir() {
                return Ok(direct);
            }
            // The release folder is the one holding runtime/; other
            // folders (data an operator or the hub left there) do not count.
            let releases: Vec<PathBuf> = std::fs::read_dir(version_dir)
                .map_err(AgentError::io("cannot list", version_dir))?
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join(VENDOR_RUNTIME))
                .filter(|r| r.is_dir())
                .collect();
            match releases.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(AgentError::FailedPrecondition(format!(
                    "{} is not a vendor release: expected a folder holding runtime/ \
                     (hub.layout = \"vendor\"); set hub.layout = \"plain\" if the archive root holds the jar",
                    version_dir.display()
                ))),
                _ => Err(AgentError::FailedPrecondition(format!(
                    "{} holds {} folders with a runtime/ inside: cannot tell which release is {{runtime}}",
                    version_dir.display(),
                    releases.len()
                ))),
            }
        }
    }
}

/// `{runtime}` of a staged version.
pub fn version_runtime_dir(cfg: &Config, version: &str) -> Result<PathBuf> {
    let dir = places::runtimes_dir(&cfg.paths.install_root).join(version);
    runtime_dir(cfg.hub.layout, &dir)
}

/// `{runtime}` of the active version, if one is active and resolves.
pub fn active_runtime_dir(cfg: &Config) -> Option<PathBuf> {
    let dir = places::active_dir(&cfg.paths.install_root)?;
    runtime_dir(cfg.hub.layout, &dir).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_layout_finds_the_runtime_folder_inside_the_release_folder() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("4.3.0");
        let release = v.join("HighByte-Intelligence-Hub-4.3");
        for d in ["runtime/lib", "configuration", "appData"] {
            std::fs::create_dir_all(release.join(d)).unwrap();
        }
        assert_eq!(runtime_dir(Layout::Plain, &v).unwrap(), v);
        assert_eq!(
            runtime_dir(Layout::Vendor, &v).unwrap(),
            release.join("runtime")
        );
        // Unwrapped release: runtime/ at the top.
        let flat = dir.path().join("4.4.0");
        std::fs::create_dir_all(flat.join("runtime")).unwrap();
        assert_eq!(
            runtime_dir(Layout::Vendor, &flat).unwrap(),
            flat.join("runtime")
        );
        // Other folders beside the release do not count; two releases do.
        std::fs::create_dir_all(v.join("storeforward")).unwrap();
        assert_eq!(
            runtime_dir(Layout::Vendor, &v).unwrap(),
            release.join("runtime")
        );
        std::fs::create_dir_all(v.join("other/runtime")).unwrap();
        assert!(runtime_dir(Layout::Vendor, &v).is_err());
        // A plain archive under the vendor layout is named as such.
        let plain = dir.path().join("1.0");
        std::fs::create_dir_all(plain.join("lib")).unwrap();
        std::fs::create_dir_all(plain.join("bin")).unwrap();
        let err = runtime_dir(Layout::Vendor, &plain).unwrap_err().to_string();
        assert!(err.contains("hub.layout"), "{err}");
    }
}
