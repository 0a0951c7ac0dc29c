//! The hub's certificate store (`<appdata>/<certificate_store>`): without
//! the primary's copy a secondary cannot decrypt shared secrets.

use crate::clock;
use crate::config::Config;
use crate::error::{AgentError, Result};
use crate::fsutil;
use std::fs;
use std::path::{Path, PathBuf};

/// The certificate store file inside appdata.
pub fn path(cfg: &Config) -> PathBuf {
    cfg.paths.appdata.join(&cfg.paths.certificate_store)
}

/// The certificate store as read, with its digest.
#[derive(Debug, Clone)]
pub struct Store {
    /// The file's bytes.
    pub content: Vec<u8>,
    /// SHA-256 (hex) of the bytes.
    pub sha256: String,
}

/// Reads the certificate store.
pub fn get(cfg: &Config) -> Result<Store> {
    let path = path(cfg);
    match fs::read(&path) {
        Ok(content) => {
            let sha256 = hubshift_common::digest::sha256_hex(&content);
            Ok(Store { content, sha256 })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AgentError::NotFound(format!(
            "no certificate store {}",
            cfg.paths.certificate_store
        ))),
        Err(e) => Err(AgentError::io("cannot read", &path)(e)),
    }
}

/// Writes the certificate store atomically with mode 0600 after checking
/// its digest. A store it replaces is kept beside it as
/// `<name>.previous-<UTC timestamp>`: without its own store the hub can no
/// longer decrypt the secrets it made with it.
pub fn put(cfg: &Config, content: &[u8], expected: &str) -> Result<String> {
    if content.is_empty() {
        return Err(AgentError::InvalidArgument(
            "certificate store content is empty".into(),
        ));
    }
    let sha = hubshift_common::digest::sha256_hex(content);
    if !sha.eq_ignore_ascii_case(expected) {
        return Err(AgentError::InvalidArgument(format!(
            "checksum mismatch: content has {sha}, expected {expected}"
        )));
    }
    if !cfg.paths.appdata.is_dir() {
        return Err(AgentError::FailedPrecondition(format!(
            "appdata {} does not exist",
            cfg.paths.appdata.display()
        )));
    }
    let store = path(cfg);
    let kept = keep_previous(&store, content)?;
    fsutil::write_atomic(&store, content, 0o600)?;
    tracing::info!(sha256 = %sha, previous = ?kept, "certificate store written");
    Ok(sha)
}

/// Hard-links an existing store that differs from `content` to a fresh
/// `<store>.previous-<timestamp>[-n]` name; the atomic write then replaces
/// only the original name.
fn keep_previous(store: &Path, content: &[u8]) -> Result<Option<PathBuf>> {
    match fs::read(store) {
        Ok(old) if old == content => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io("cannot read", store)(e)),
    }
    let stamp = clock::timestamp();
    let name = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..100 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let aside = store.with_file_name(format!("{name}.previous-{stamp}{suffix}"));
        match fs::hard_link(store, &aside) {
            Ok(()) => return Ok(Some(aside)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(AgentError::io("cannot keep the previous store as", &aside)(
                    e,
                ));
            }
        }
    }
    Err(AgentError::Internal(format!(
        "no free name to keep the previous {name}"
    )))
}
