//! The hub's certificate store (`<appdata>/<certificate_store>`): without
//! the primary's copy a secondary cannot decrypt shared secrets.

use crate::config::Config;
use crate::error::{AgentError, Result};
use crate::fsutil;
use std::fs;
use std::path::PathBuf;

/// The certificate store file inside appdata.
pub fn path(cfg: &Config) -> PathBuf {
    cfg.paths.appdata.join(&cfg.paths.certificate_store)
}

/// (content, sha256) of the certificate store.
pub fn get(cfg: &Config) -> Result<(Vec<u8>, String)> {
    let path = path(cfg);
    match fs::read(&path) {
        Ok(bytes) => {
            let sha = hubshift_common::digest::sha256_hex(&bytes);
            Ok((bytes, sha))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AgentError::NotFound(format!(
            "no certificate store {}",
            cfg.paths.certificate_store
        ))),
        Err(e) => Err(AgentError::io("cannot read", &path)(e)),
    }
}

/// Writes the certificate store atomically with mode 0600 after checking
/// its digest.
pub fn put(cfg: &Config, content: &[u8], expected: &str) -> Result<String> {
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
    fsutil::write_atomic(&path(cfg), content, 0o600)?;
    tracing::info!(sha256 = %sha, "certificate store written");
    Ok(sha)
}
