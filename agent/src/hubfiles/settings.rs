//! The hub's settings file, `intelligencehub-settings.json`. The hub reads
//! it from the file `HIGHBYTE_SETTINGS_FILE` names, else from the appData
//! beside its runtime — in a vendor release that is the bundled template, so
//! after a runtime switch a hub left to its defaults would run on an empty
//! project. The agent therefore always points the hub at the settings file
//! in the configured appdata and, before any start, checks that it keeps
//! the hub's state (`directories.appData`) and its store-and-forward files
//! (`directories.storeForwardData`) where hubshift backs them up.

use super::layout;
use crate::config::Config;
use serde_json::Value;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

pub use super::names::{SETTINGS_ENV, SETTINGS_FILE, WRITESTORE_PREFIX};

/// Settings that would not bind the hub to the configured places. Each
/// message names the setting to change.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SettingsError {
    /// No settings file in appdata.
    #[error(
        "no settings file {file}: copy intelligencehub-settings.json from the release's appData/ \
         into the configured appdata and set `directories.appData` to \"{appdata}\" in it"
    )]
    Missing {
        /// The file.
        file: PathBuf,
        /// The configured appdata.
        appdata: PathBuf,
    },
    /// Unreadable or not JSON.
    #[error("settings file {file} cannot be used: {reason}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// `directories.appData` unset.
    #[error(
        "`directories.appData` is unset in {file}: the hub would use the appData beside its runtime \
         (a release's template, with an empty project); set it to \"{appdata}\""
    )]
    AppDataUnset {
        /// The file.
        file: PathBuf,
        /// The configured appdata.
        appdata: PathBuf,
    },
    /// `directories.appData` elsewhere.
    #[error(
        "`directories.appData` in {file} is \"{found}\" (resolves to {resolved}), not the configured appdata: \
         set it to \"{appdata}\" (or change paths.appdata)"
    )]
    AppDataElsewhere {
        /// The file.
        file: PathBuf,
        /// The value in the file.
        found: String,
        /// What it resolves to.
        resolved: PathBuf,
        /// The configured appdata.
        appdata: PathBuf,
    },
    /// `directories.storeForwardData` where no backup reaches.
    #[error(
        "`directories.storeForwardData` in {file} is \"{found}\" (resolves to {resolved}), which hubshift \
         neither backs up nor keeps: set it to a directory inside \"{appdata}\", or add its directory \
         to paths.extra_backup_dirs"
    )]
    StoreForwardElsewhere {
        /// The file.
        file: PathBuf,
        /// The value in the file.
        found: String,
        /// What it resolves to.
        resolved: PathBuf,
        /// The configured appdata.
        appdata: PathBuf,
    },
}

/// Where a settings file that passed the check keeps things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `directories.appData`, resolved (the configured appdata).
    pub app_data: PathBuf,
    /// Where store-and-forward files go.
    pub store_forward_dir: PathBuf,
    /// `directories.storeForwardData` is unset: they go to the runtime directory.
    pub store_forward_in_runtime: bool,
}

/// The settings file the agent points the hub at.
pub fn settings_file(cfg: &Config) -> PathBuf {
    cfg.paths.appdata.join(SETTINGS_FILE)
}

/// Reads and checks the settings against `cfg` for a hub running from
/// `runtime_dir` (relative settings paths resolve against it, the hub's
/// working directory).
pub fn check(cfg: &Config, runtime_dir: &Path) -> Result<Binding, SettingsError> {
    let file = settings_file(cfg);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SettingsError::Missing {
                file,
                appdata: cfg.paths.appdata.clone(),
            });
        }
        Err(e) => {
            return Err(SettingsError::Invalid {
                file,
                reason: e.to_string(),
            });
        }
    };
    check_text(
        &text,
        &file,
        runtime_dir,
        &cfg.paths.appdata,
        &cfg.paths.extra_backup_dirs,
    )
}

/// [`check`] with a runtime directory found from the active version (or the
/// `current` link's path when none resolves).
pub fn check_active(cfg: &Config) -> Result<Binding, SettingsError> {
    let runtime = layout::active_runtime_dir(cfg)
        .unwrap_or_else(|| cfg.paths.install_root.join(crate::places::CURRENT));
    check(cfg, &runtime)
}

/// The check on a file's text (pure, for tests).
pub fn check_text(
    text: &str,
    file: &Path,
    runtime_dir: &Path,
    appdata: &Path,
    extra_backup_dirs: &[PathBuf],
) -> Result<Binding, SettingsError> {
    let json: Value = serde_json::from_str(text).map_err(|e| SettingsError::Invalid {
        file: file.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })?;
    let directories = match json.get("directories") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) => Some(d),
        Some(_) => {
            return Err(SettingsError::Invalid {
                file: file.to_path_buf(),
                reason: "`directories` is not an object".into(),
            });
        }
    };
    let key = |name: &str| -> Result<Option<String>, SettingsError> {
        match directories.and_then(|d| d.get(name)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SettingsError::Invalid {
                file: file.to_path_buf(),
                reason: format!("`directories.{name}` is not a string"),
            }),
        }
    };
    let app_data = key("appData")?.ok_or_else(|| SettingsError::AppDataUnset {
        file: file.to_path_buf(),
        appdata: appdata.to_path_buf(),
    })?;
    let resolved = resolve(runtime_dir, &app_data);
    if !same_place(&resolved, appdata) {
        return Err(SettingsError::AppDataElsewhere {
            file: file.to_path_buf(),
            found: app_data,
            resolved,
            appdata: appdata.to_path_buf(),
        });
    }
    let (store_forward_dir, in_runtime) = match key("storeForwardData")? {
        None => (runtime_dir.to_path_buf(), true),
        Some(sf) => {
            let at = resolve(runtime_dir, &sf);
            let kept = std::iter::once(appdata)
                .chain(extra_backup_dirs.iter().map(PathBuf::as_path))
                .any(|base| inside(&at, base));
            if !kept {
                return Err(SettingsError::StoreForwardElsewhere {
                    file: file.to_path_buf(),
                    found: sf,
                    resolved: at,
                    appdata: appdata.to_path_buf(),
                });
            }
            (at, false)
        }
    };
    Ok(Binding {
        app_data: appdata.to_path_buf(),
        store_forward_dir,
        store_forward_in_runtime: in_runtime,
    })
}

/// `value` as the hub resolves it: absolute, or relative to its runtime
/// directory; `.` and `..` removed.
fn resolve(runtime_dir: &Path, value: &str) -> PathBuf {
    lexical(&runtime_dir.join(value))
}

/// `p` with `.` and `..` removed without looking at the disk.
pub(crate) fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The path with symlinks of its longest existing prefix resolved, so that
/// `/opt/hb -> /data/hb` compares equal.
fn real(p: &Path) -> PathBuf {
    let p = lexical(p);
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return p,
        }
    }
}

fn same_place(a: &Path, b: &Path) -> bool {
    real(a) == real(b)
}

fn inside(child: &Path, base: &Path) -> bool {
    real(child).starts_with(real(base))
}

/// Regular files in `dir` whose name starts with [`WRITESTORE_PREFIX`], by name.
pub fn writestore_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(WRITESTORE_PREFIX)
            && entry.file_type()?.is_file()
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<Binding, SettingsError> {
        check_text(
            text,
            Path::new("/opt/hb/appData/intelligencehub-settings.json"),
            Path::new("/opt/hb/runtimes/4.3.0/HighByte-Intelligence-Hub-4.3/runtime"),
            Path::new("/opt/hb/appData"),
            &[PathBuf::from("/data/sf")],
        )
    }

    #[test]
    fn absolute_app_data_binds_and_unset_store_forward_is_the_runtime_dir() {
        let b = run(r#"{"directories": {"appData": "/opt/hb/appData/"}, "web": {"port": 45245}}"#)
            .unwrap();
        assert!(b.store_forward_in_runtime);
        assert_eq!(
            b.store_forward_dir,
            Path::new("/opt/hb/runtimes/4.3.0/HighByte-Intelligence-Hub-4.3/runtime")
        );
        let b = run(
            r#"{"directories": {"appData": "/opt/hb/appData", "storeForwardData": "/opt/hb/appData/sf"}}"#,
        )
        .unwrap();
        assert!(!b.store_forward_in_runtime);
        assert_eq!(b.store_forward_dir, Path::new("/opt/hb/appData/sf"));
        let b = run(
            r#"{"directories": {"appData": "/opt/hb/appData", "storeForwardData": "/data/sf/x"}}"#,
        )
        .unwrap();
        assert_eq!(b.store_forward_dir, Path::new("/data/sf/x"));
    }

    #[test]
    fn relative_paths_resolve_against_the_runtime_dir() {
        // ../appData from the runtime is the release's template: refused.
        let err = run(r#"{"directories": {"appData": "../appData"}}"#).unwrap_err();
        assert!(
            matches!(&err, SettingsError::AppDataElsewhere { resolved, .. }
                if resolved.ends_with("HighByte-Intelligence-Hub-4.3/appData")),
            "{err}"
        );
        assert!(err.to_string().contains("`directories.appData`"));
        assert!(run(r#"{"directories": {"appData": "../../../../appData"}}"#).is_ok());
    }

    #[test]
    fn each_problem_names_the_setting_to_change() {
        for (text, setting) in [
            ("{}", "`directories.appData` is unset"),
            (
                r#"{"directories": {"appData": ""}}"#,
                "`directories.appData` is unset",
            ),
            (
                r#"{"directories": {"appData": "/elsewhere"}}"#,
                "set it to \"/opt/hb/appData\"",
            ),
            (
                r#"{"directories": {"appData": "/opt/hb/appData", "storeForwardData": "/var/sf"}}"#,
                "`directories.storeForwardData`",
            ),
            (
                r#"{"directories": {"appData": 7}}"#,
                "`directories.appData` is not a string",
            ),
            ("not json", "not JSON"),
        ] {
            let err = run(text).unwrap_err().to_string();
            assert!(err.contains(setting), "{text}: {err}");
        }
    }

    #[test]
    fn symlinked_appdata_is_the_same_place() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("data/appData");
        std::fs::create_dir_all(&real_dir).unwrap();
        std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("link")).unwrap();
        let text = format!(
            r#"{{"directories": {{"appData": "{}"}}}}"#,
            dir.path().join("link/appData").display()
        );
        let f = real_dir.join(SETTINGS_FILE);
        assert!(check_text(&text, &f, dir.path(), &real_dir, &[]).is_ok());
    }

    #[test]
    fn writestore_files_are_found_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "intelligencehub-writestore-a.db",
            "intelligencehub-writestore-a.db-wal",
            "intelligencehub-runtime.jar",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let names: Vec<_> = writestore_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "intelligencehub-writestore-a.db",
                "intelligencehub-writestore-a.db-wal"
            ]
        );
        assert!(
            writestore_files(&dir.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }
}
