//! mTLS set-up for both ends: the agent requires a client certificate from
//! the configured CA; the controller presents its own and checks the agent's.

use std::path::{Path, PathBuf};
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// Which file ("certificate", "private key", "CA certificate").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{what} file {path} holds no PEM {expected} block")]
    NotPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
}

/// The three PEM files each side needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Own certificate (chain), PEM.
    pub cert: PathBuf,
    /// Own private key, PEM.
    pub key: PathBuf,
    /// CA that signed the peer's certificate, PEM.
    pub ca: PathBuf,
}

fn read_pem(
    what: &'static str,
    path: &Path,
    expected: &'static str,
    markers: &[&str],
) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !markers.iter().any(|m| text.contains(m)) {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
            expected,
        });
    }
    Ok(bytes)
}

impl TlsFiles {
    fn identity(&self) -> Result<Identity, TlsError> {
        let cert = read_pem(
            "certificate",
            &self.cert,
            "CERTIFICATE",
            &["-----BEGIN CERTIFICATE-----"],
        )?;
        let key = read_pem(
            "private key",
            &self.key,
            "PRIVATE KEY",
            &[
                "-----BEGIN PRIVATE KEY-----",
                "-----BEGIN EC PRIVATE KEY-----",
                "-----BEGIN RSA PRIVATE KEY-----",
            ],
        )?;
        Ok(Identity::from_pem(cert, key))
    }

    fn ca(&self) -> Result<Certificate, TlsError> {
        let ca = read_pem(
            "CA certificate",
            &self.ca,
            "CERTIFICATE",
            &["-----BEGIN CERTIFICATE-----"],
        )?;
        Ok(Certificate::from_pem(ca))
    }

    /// Server side: own identity, and client certificates required from `ca`.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(self.ca()?)
            .client_auth_optional(false))
    }

    /// Client side: own identity, the agent's CA, and the name the agent's
    /// certificate must carry.
    pub fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(self.ca()?)
            .identity(self.identity()?)
            .domain_name(server_name))
    }
}
