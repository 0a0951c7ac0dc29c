//! The version a runtime declares itself, so that an archive is never
//! installed as another version than it is (`--runtime <4.1.0 archive>
//! --version 4.2.0`). A runtime may say it in several places: a `VERSION`
//! file in its runtime directory (hubsim's archives), the vendor release
//! folder's name (`HighByte-Intelligence-Hub-4.3`, major.minor only), the
//! `Implementation-Version` of `intelligencehub-runtime.jar`'s manifest, or
//! an image's version label. Every declaration found must agree with the
//! version asked for; a runtime that declares nothing is accepted and
//! recorded as unchecked, so Status can tell the controller.

use crate::error::{AgentError, Result};
pub use hubshift_common::declared::{IMAGE_LABELS, RELEASE_PREFIX, RUNTIME_JAR, matches};
use hubshift_common::declared::{clean, manifest_version};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One declaration: the version and where it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    /// The version as the runtime says it.
    pub version: String,
    /// Where: a path inside the runtime, or an image label.
    pub by: String,
}

/// Refuses declarations that contradict `requested` (INVALID_ARGUMENT
/// naming both); returns the most specific one that agrees, if any.
pub fn check(requested: &str, found: &[Declared]) -> Result<Option<Declared>> {
    if let Some(bad) = found.iter().find(|d| !matches(&d.version, requested)) {
        return Err(AgentError::InvalidArgument(format!(
            "the runtime declares version {} ({}), not {requested}: refusing to install it as \
             {requested}; upload the archive of {requested}, or this one as version {}",
            bad.version, bad.by, bad.version
        )));
    }
    Ok(found.iter().max_by_key(|d| d.version.len()).cloned())
}

/// Every declaration in an unpacked runtime tree (`runtimes/<version>/`
/// or its staging directory), whichever the layout: the release folder's
/// name, and `VERSION` and the runtime jar in the tree's top, its
/// `runtime/`, each top-level folder and that folder's `runtime/`.
pub fn read_tree(root: &Path) -> Vec<Declared> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::new(), PathBuf::from("runtime")];
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(v) = hubshift_common::declared::from_release_folder(&name) {
            found.push(Declared {
                version: v,
                by: format!("release folder {name}"),
            });
        }
        dirs.push(PathBuf::from(&name));
        dirs.push(PathBuf::from(&name).join("runtime"));
    }
    for rel in dirs {
        let version_file = rel.join("VERSION");
        if let Some(v) =
            small_file(&root.join(&version_file)).and_then(|t| t.lines().next().and_then(clean))
        {
            found.push(Declared {
                version: v,
                by: version_file.display().to_string(),
            });
        }
        let jar = rel.join(RUNTIME_JAR);
        if let Some(v) = jar_version(&root.join(&jar)) {
            found.push(Declared {
                version: v,
                by: format!("{} META-INF/MANIFEST.MF", jar.display()),
            });
        }
    }
    found
}

/// A regular file's text, when it is small (a declaration, not data).
fn small_file(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 4096 {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// `Implementation-Version` of a jar's manifest (a jar is a zip).
fn jar_version(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let mut jar = match zip::ZipArchive::new(std::io::BufReader::new(file)) {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!(jar = %path.display(), error = %e, "cannot read the runtime jar's manifest");
            return None;
        }
    };
    let mut manifest = String::new();
    jar.by_name("META-INF/MANIFEST.MF")
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut manifest)
        .ok()?;
    manifest_version(&manifest)
}

/// The version an image declares by one of [`IMAGE_LABELS`].
pub fn from_labels<'a>(labels: impl Fn(&str) -> Option<&'a str>) -> Option<Declared> {
    IMAGE_LABELS.iter().find_map(|key| {
        labels(key).and_then(clean).map(|version| Declared {
            version,
            by: format!("image label {key}"),
        })
    })
}

/// `<state>/runtime-archives/<version>.declared`: what the runtime
/// declared when it was installed (JSON; `{}` when nothing).
fn record(state_dir: &Path, version: &str) -> PathBuf {
    state_dir
        .join("runtime-archives")
        .join(format!("{version}.declared"))
}

/// Records what an installed runtime declares (None: nothing).
pub fn write_record(state_dir: &Path, version: &str, declared: Option<&Declared>) -> Result<()> {
    let path = record(state_dir, version);
    if let Some(dir) = path.parent() {
        crate::fsutil::ensure_dir(dir, 0o700)?;
    }
    let json = serde_json::to_vec(&declared.cloned().unwrap_or_default())
        .map_err(|e| AgentError::Internal(format!("declared version record: {e}")))?;
    crate::fsutil::write_atomic(&path, &json, 0o600)
}

/// What was recorded at install: Some(None) when it declared nothing, None
/// when there is no record (installed by an older agent).
pub fn read_record(state_dir: &Path, version: &str) -> Option<Option<Declared>> {
    let text = std::fs::read(record(state_dir, version)).ok()?;
    let d: Declared = serde_json::from_slice(&text).ok()?;
    Some((!d.version.is_empty()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contradiction_is_refused_naming_both() {
        let found = [
            Declared {
                version: "4.2".into(),
                by: "release folder HighByte-Intelligence-Hub-4.2".into(),
            },
            Declared {
                version: "4.1.0".into(),
                by: "runtime/VERSION".into(),
            },
        ];
        let err = check("4.2.0", &found).unwrap_err();
        assert!(matches!(err, AgentError::InvalidArgument(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("4.1.0") && text.contains("4.2.0"), "{text}");
        assert_eq!(check("4.2.0", &found[..1]).unwrap().unwrap().version, "4.2");
        assert_eq!(check("4.2.0", &[]).unwrap(), None);
    }

    #[test]
    fn image_labels() {
        let d = from_labels(|k| (k == "hubsim.version").then_some("4.2.0")).unwrap();
        assert_eq!(d.version, "4.2.0");
        assert!(from_labels(|_| None).is_none());
    }
}
