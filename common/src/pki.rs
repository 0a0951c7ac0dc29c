//! A small private PKI for mTLS between controller and agents: one CA, one
//! certificate per agent (server) and one for the controller (client).
//! Used by `hubshift certs init` and by the sandbox.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Certificate minting or writing failed.
#[derive(Debug, Error)]
pub enum PkiError {
    /// rcgen refused the parameters (e.g. an invalid DNS name).
    #[error("cannot mint certificate for {name:?}: {source}")]
    Mint {
        /// The subject being minted.
        name: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A file exists and overwriting was not asked for.
    #[error("{0} already exists (use --force to overwrite)")]
    Exists(PathBuf),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a certificate is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// An agent: TLS server.
    Server,
    /// The controller: TLS client.
    Client,
}

/// A certificate and its private key, PEM.
pub struct Minted {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM. Written with mode 0600, never logged.
    pub key_pem: String,
}

/// A CA able to issue agent and controller certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    minted: Minted,
}

fn mint_err(name: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Mint {
        name: name.to_string(),
        source,
    }
}

impl Authority {
    /// Creates a new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(mint_err(common_name))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key).map_err(mint_err(common_name))?;
        let minted = Minted {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Self {
            issuer: Issuer::new(params, key),
            minted,
        })
    }

    /// The CA certificate and key.
    pub fn ca(&self) -> &Minted {
        &self.minted
    }

    /// Issues a leaf certificate with `common_name` and the given DNS names
    /// or IP addresses as SANs (the common name is always a SAN too).
    pub fn issue(
        &self,
        common_name: &str,
        sans: &[String],
        usage: Usage,
    ) -> Result<Minted, PkiError> {
        let key = KeyPair::generate().map_err(mint_err(common_name))?;
        let mut all = vec![common_name.to_string()];
        all.extend(sans.iter().filter(|s| *s != common_name).cloned());
        let mut params = CertificateParams::new(all).map_err(mint_err(common_name))?;
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.not_after = rcgen::date_time_ymd(2031, 1, 1);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(mint_err(common_name))?;
        Ok(Minted {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "hubshift");
    dn
}

/// Whether `s` can be a SAN (a DNS name or an IP address).
pub fn valid_san(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Paths of a written certificate and key.
#[derive(Debug, Clone)]
pub struct WrittenPair {
    /// `<dir>/<name>.crt`
    pub cert: PathBuf,
    /// `<dir>/<name>.key`, mode 0600.
    pub key: PathBuf,
}

/// Paths `write_pair` would write for `name` in `dir`.
pub fn pair_paths(dir: &Path, name: &str) -> WrittenPair {
    WrittenPair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    }
}

/// Writes `<dir>/<name>.crt` (0644) and `<dir>/<name>.key` (0600); refuses
/// to overwrite existing files unless `force`.
pub fn write_pair(
    dir: &Path,
    name: &str,
    minted: &Minted,
    force: bool,
) -> Result<WrittenPair, PkiError> {
    let paths = pair_paths(dir, name);
    write_file(&paths.cert, minted.cert_pem.as_bytes(), 0o644, force)?;
    write_file(&paths.key, minted.key_pem.as_bytes(), 0o600, force)?;
    Ok(paths)
}

/// Writes one file with `mode`, refusing to overwrite unless `force`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
    if !force && path.exists() {
        return Err(PkiError::Exists(path.to_path_buf()));
    }
    let werr = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if force && path.exists() {
        std::fs::remove_file(path).map_err(werr)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(werr)?;
    file.write_all(bytes).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn issues_and_writes_with_private_keys_0600() {
        let ca = Authority::new("hubshift test CA").unwrap();
        let agent = ca
            .issue(
                "agent-a",
                &["127.0.0.1".into(), "hub-a.example".into()],
                Usage::Server,
            )
            .unwrap();
        assert!(agent.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let paths = write_pair(dir.path(), "agent-a", &agent, false).unwrap();
        let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            write_pair(dir.path(), "agent-a", &agent, false),
            Err(PkiError::Exists(_))
        ));
        write_pair(dir.path(), "agent-a", &agent, true).unwrap();
    }

    #[test]
    fn san_validation() {
        for ok in ["hub-a", "hub-a.example.com", "127.0.0.1", "::1"] {
            assert!(valid_san(ok), "{ok}");
        }
        for bad in ["", "a..b", "-x", "bad name", "x/y", "ä.example"] {
            assert!(!valid_san(bad), "{bad}");
        }
    }
}
