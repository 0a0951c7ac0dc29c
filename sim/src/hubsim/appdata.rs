//! The node's appData directory, laid out like a hub's: the project
//! (`intelligencehub-configuration.json`), the certificate store
//! (`intelligencehub-certificatestore.pkcs12`). Store-and-forward files live
//! where the settings say (`settings.rs`).

use rand::Rng;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The project file.
pub const CONFIGURATION_FILE: &str = "intelligencehub-configuration.json";
/// The certificate store, which decrypts the project's shared secrets.
pub const CERTIFICATE_STORE_FILE: &str = "intelligencehub-certificatestore.pkcs12";

/// Size of a generated certificate store.
const CERTIFICATE_STORE_SIZE: usize = 2048;

/// A node's appData directory.
#[derive(Debug, Clone)]
pub struct AppData {
    root: PathBuf,
}

impl AppData {
    /// Opens (creating if needed) the directory.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the project file.
    pub fn configuration_path(&self) -> PathBuf {
        self.root.join(CONFIGURATION_FILE)
    }

    /// Path of the certificate store.
    pub fn certificate_store_path(&self) -> PathBuf {
        self.root.join(CERTIFICATE_STORE_FILE)
    }

    /// Writes a fresh random certificate store (mode 0600) unless one
    /// exists; returns whether it generated one.
    pub fn ensure_certificate_store(&self) -> io::Result<bool> {
        let path = self.certificate_store_path();
        if path.exists() {
            return Ok(false);
        }
        let mut bytes = vec![0u8; CERTIFICATE_STORE_SIZE];
        rand::rng().fill(&mut bytes[..]);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        Ok(true)
    }

    /// SHA-256 (hex) of the certificate store.
    pub fn certificate_fingerprint(&self) -> io::Result<String> {
        Ok(hubshift_common::digest::sha256_file(&self.certificate_store_path())?.0)
    }

    /// Writes a default project for `node` unless one exists; returns
    /// whether it wrote one.
    pub fn ensure_project(&self, node: &str, version: &str) -> io::Result<bool> {
        if self.configuration_path().exists() {
            return Ok(false);
        }
        let project = default_project(node, version);
        self.write_project(&project)?;
        Ok(true)
    }

    /// The project file's text, checked to be JSON.
    pub fn read_project(&self) -> io::Result<String> {
        let text = fs::read_to_string(self.configuration_path())?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not valid JSON: {e}",
                    self.configuration_path().display()
                ),
            )
        })?;
        Ok(text)
    }

    /// Replaces the project file atomically (temp file, fsync, rename).
    pub fn write_project(&self, text: &str) -> io::Result<()> {
        let path = self.configuration_path();
        let tmp = self.root.join(format!(".{CONFIGURATION_FILE}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)
    }
}

/// A small but hub-like project: connections, conditions, pipelines.
pub fn default_project(node: &str, version: &str) -> String {
    let project = serde_json::json!({
        "version": version,
        "createdBy": node,
        "project": {
            "connections": [
                {"name": "plc-line-1", "type": "OPC-UA", "settings": {"endpoint": "opc.tcp://plc-line-1:4840", "securityPolicy": "Basic256Sha256"}},
                {"name": "historian", "type": "SQL", "settings": {"driver": "postgresql", "password": {"encrypted": "ENC(certificatestore:historian)"}}}
            ],
            "models": [{"name": "Machine", "attributes": ["temperature", "speed", "state"]}],
            "pipelines": [{"name": "line-1-to-historian", "trigger": {"type": "interval", "ms": 50}, "stages": ["read", "model", "write"]}]
        }
    });
    serde_json::to_string_pretty(&project).unwrap_or_else(|_| "{}".into()) + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_store_and_project_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = AppData::open(&dir.path().join("appData")).unwrap();
        assert!(a.ensure_certificate_store().unwrap());
        let fp = a.certificate_fingerprint().unwrap();
        assert!(!a.ensure_certificate_store().unwrap());
        assert_eq!(a.certificate_fingerprint().unwrap(), fp);
        let mode = fs::metadata(a.certificate_store_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(a.ensure_project("hub-a", "1.0.0").unwrap());
        assert!(!a.ensure_project("hub-b", "1.0.0").unwrap());
        assert!(a.read_project().unwrap().contains("hub-a"));
        fs::write(a.configuration_path(), "not json").unwrap();
        assert!(a.read_project().is_err());
    }
}
