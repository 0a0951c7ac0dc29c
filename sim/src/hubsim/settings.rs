//! Where hubsim keeps its state, found the way the real hub finds it: the
//! settings file named by `HIGHBYTE_SETTINGS_FILE`, else
//! `appData/intelligencehub-settings.json` beside the runtime directory;
//! `directories.appData` (default: that appData beside the runtime) and
//! `directories.storeForwardData` (default: the runtime directory itself).
//! Relative paths resolve against the runtime directory. So a hub that is
//! not pointed at the right settings runs on the release's template appData
//! — in tests as on a real host.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// Environment variable naming the settings file.
pub const SETTINGS_ENV: &str = "HIGHBYTE_SETTINGS_FILE";
/// File name of the settings inside appData.
pub const SETTINGS_FILE: &str = "intelligencehub-settings.json";
/// Name of the appData folder beside the runtime directory.
pub const DEFAULT_APPDATA: &str = "appData";

/// Where this node keeps things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// The settings file read, if any.
    pub settings_file: Option<PathBuf>,
    /// appData: project, certificate store.
    pub app_data: PathBuf,
    /// Store-and-forward files.
    pub store_forward: PathBuf,
    /// `directories.storeForwardData` unset: store-and-forward files are in
    /// the runtime directory.
    pub store_forward_in_runtime: bool,
}

/// Finds the settings for a runtime in `runtime_dir`; `env` is the value of
/// `HIGHBYTE_SETTINGS_FILE`. Errors say which file or key is wrong.
pub fn locate(runtime_dir: &Path, env: Option<&str>) -> Result<Places, String> {
    let beside = runtime_dir
        .parent()
        .unwrap_or(runtime_dir)
        .join(DEFAULT_APPDATA);
    let (file, required) = match env.filter(|v| !v.trim().is_empty()) {
        Some(v) => (PathBuf::from(v), true),
        None => (beside.join(SETTINGS_FILE), false),
    };
    let json = match std::fs::read_to_string(&file) {
        Ok(text) => Some(
            serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("settings file {} is not JSON: {e}", file.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
        Err(e) => {
            return Err(format!(
                "cannot read settings file {} ({SETTINGS_ENV}): {e}",
                file.display()
            ));
        }
    };
    let key = |name: &str| -> Result<Option<String>, String> {
        match json
            .as_ref()
            .and_then(|j| j.get("directories"))
            .and_then(|d| d.get(name))
        {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!(
                "settings file {}: directories.{name} is not a string",
                file.display()
            )),
        }
    };
    let app_data = key("appData")?
        .map(|v| runtime_dir.join(v))
        .unwrap_or(beside);
    let (store_forward, in_runtime) = match key("storeForwardData")? {
        Some(v) => (runtime_dir.join(v), false),
        None => (runtime_dir.to_path_buf(), true),
    };
    Ok(Places {
        settings_file: json.is_some().then_some(file),
        app_data,
        store_forward,
        store_forward_in_runtime: in_runtime,
    })
}

/// [`locate`] with the process's environment.
pub fn locate_from_env(runtime_dir: &Path) -> Result<Places, String> {
    locate(runtime_dir, std::env::var(SETTINGS_ENV).ok().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_template_beside_the_runtime_and_the_runtime_dir() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("HighByte-Intelligence-Hub-4.3");
        let runtime = release.join("runtime");
        std::fs::create_dir_all(release.join("appData")).unwrap();
        std::fs::create_dir_all(&runtime).unwrap();
        // No settings at all.
        let p = locate(&runtime, None).unwrap();
        assert_eq!(p.app_data, release.join("appData"));
        assert_eq!(p.store_forward, runtime);
        assert!(p.store_forward_in_runtime && p.settings_file.is_none());
        // The template's settings, keys unset.
        std::fs::write(
            release.join("appData").join(SETTINGS_FILE),
            r#"{"directories": {}}"#,
        )
        .unwrap();
        let p = locate(&runtime, None).unwrap();
        assert_eq!(p.app_data, release.join("appData"));
        assert!(p.settings_file.is_some());
    }

    #[test]
    fn the_environment_points_elsewhere_and_keys_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("rt/runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        let settings = dir.path().join("settings.json");
        std::fs::write(
            &settings,
            r#"{"directories": {"appData": "/data/appData", "storeForwardData": "sf"}}"#,
        )
        .unwrap();
        let p = locate(&runtime, settings.to_str()).unwrap();
        assert_eq!(p.app_data, Path::new("/data/appData"));
        assert_eq!(p.store_forward, runtime.join("sf"));
        assert!(!p.store_forward_in_runtime);
        let missing = dir.path().join("none.json");
        let err = locate(&runtime, missing.to_str()).unwrap_err();
        assert!(err.contains(SETTINGS_ENV), "{err}");
        std::fs::write(&settings, r#"{"directories": {"appData": 1}}"#).unwrap();
        assert!(
            locate(&runtime, settings.to_str())
                .unwrap_err()
                .contains("directories.appData")
        );
    }
}
