//! The version a runtime declares itself — read by the agent when it
//! stages a runtime, and by the controller from the archive before any
//! change — so that an archive is never installed as another version than
//! it is. A runtime may say it in a `VERSION` file (hubsim's runtimes), the
//! vendor release folder's name (`HighByte-Intelligence-Hub-4.3`,
//! major.minor only), the `Implementation-Version` of
//! `intelligencehub-runtime.jar`'s manifest, or an image's version label.

use std::io::Read;

/// The vendor release folder's name before its version.
pub const RELEASE_PREFIX: &str = "HighByte-Intelligence-Hub-";
/// The runtime jar whose manifest may carry the version.
pub const RUNTIME_JAR: &str = "intelligencehub-runtime.jar";
/// Image labels that carry a version, most specific first.
pub const IMAGE_LABELS: &[&str] = &["org.opencontainers.image.version", "hubsim.version"];

/// Whether `declared` and `requested` name one version: the same, or one a
/// prefix of the other up to a separator (a release folder says `4.3` for
/// `4.3.0`; a build may say `4.3.1-b17` for `4.3.1`). Only a contradiction
/// (`4.1.0` for `4.2.0`) is one.
pub fn matches(declared: &str, requested: &str) -> bool {
    let extends = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.starts_with(['.', '-', '+', '_']))
    };
    declared == requested || extends(requested, declared) || extends(declared, requested)
}

/// A version string as found in a file or a name: one short printable token.
pub fn clean(text: &str) -> Option<String> {
    let v = text.trim();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
    ok.then(|| v.to_string())
}

/// The version a vendor release folder's name declares.
pub fn from_release_folder(name: &str) -> Option<String> {
    name.strip_prefix(RELEASE_PREFIX).and_then(clean)
}

/// The `Implementation-Version` attribute of a manifest's main section.
pub fn manifest_version(manifest: &str) -> Option<String> {
    manifest
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix("Implementation-Version:"))
        .and_then(clean)
}

/// What a runtime archive (tar.gz) says of itself, read as the agent reads
/// an unpacked runtime: release folder names at its top, and `VERSION`
/// files in its top, its `runtime/`, each top-level folder and that
/// folder's `runtime/`. Each is (version, where). `jar` tells whether it
/// holds the runtime jar, whose manifest only the agent reads.
pub fn in_tar_gz(reader: impl Read) -> std::io::Result<InArchive> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut out = InArchive::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        if let Some(first) = parts.first()
            && let Some(v) = from_release_folder(first)
            && !out
                .found
                .iter()
                .any(|(_, by)| by == &format!("release folder {first}"))
        {
            out.found.push((v, format!("release folder {first}")));
        }
        let Some(name) = parts.last() else { continue };
        let depth = parts.len();
        // The top, `runtime/`, each top-level folder, and its `runtime/`.
        let near_top = depth <= 2 || (depth == 3 && parts[1] == "runtime");
        if name == RUNTIME_JAR && near_top {
            out.jar = true;
        }
        if name == "VERSION" && near_top && entry.header().entry_type().is_file() {
            if entry.size() > 4096 {
                continue;
            }
            let mut text = String::new();
            if entry.read_to_string(&mut text).is_ok()
                && let Some(v) = text.lines().next().and_then(clean)
            {
                out.found.push((v, parts.join("/")));
            }
        }
    }
    Ok(out)
}

/// What [`in_tar_gz`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InArchive {
    /// Each declaration: (version, where).
    pub found: Vec<(String, String)>,
    /// The runtime jar is there (its manifest may declare a version).
    pub jar: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_folder_names_major_minor() {
        assert!(matches("4.3", "4.3.0"));
        assert!(matches("4.3.0", "4.3.0"));
        assert!(matches("4.3.0", "4.3.0-hotfix1"));
        assert!(matches("4.3.1-b17", "4.3.1"));
        assert!(!matches("4.3", "4.31.0"));
        assert!(!matches("4.1.0", "4.2.0"));
        assert!(!matches("4.2", "4.20"));
    }

    #[test]
    fn manifests_are_read_from_the_main_section() {
        let m = "Manifest-Version: 1.0\r\nImplementation-Version: 4.3.1\r\n\r\nName: x\r\nImplementation-Version: 9\r\n";
        assert_eq!(manifest_version(m).as_deref(), Some("4.3.1"));
        assert_eq!(manifest_version("Manifest-Version: 1.0\n"), None);
    }

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gzip")
    }

    #[test]
    fn an_archive_declares_by_its_release_folder_and_version_files() {
        let bytes = tar_gz(&[
            ("HighByte-Intelligence-Hub-4.2/runtime/VERSION", b"4.2.0\n"),
            ("HighByte-Intelligence-Hub-4.2/runtime/lib/x.jar", b"x"),
            (
                "HighByte-Intelligence-Hub-4.2/appData/deep/VERSION",
                b"9.9\n",
            ),
        ]);
        let found = in_tar_gz(bytes.as_slice()).expect("read");
        assert_eq!(
            found.found,
            vec![
                (
                    "4.2".to_string(),
                    "release folder HighByte-Intelligence-Hub-4.2".to_string()
                ),
                (
                    "4.2.0".to_string(),
                    "HighByte-Intelligence-Hub-4.2/runtime/VERSION".to_string()
                ),
            ]
        );
        assert!(!found.jar);
        let plain = in_tar_gz(tar_gz(&[("runtime/lib/a.jar", b"a")]).as_slice()).expect("read");
        assert!(plain.found.is_empty());
    }
}
