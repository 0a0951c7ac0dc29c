//! Who may call: the client certificate's CN or a DNS SAN must be on
//! `tls.allowed_clients`. The TLS layer has already checked that it chains
//! to the configured client CA.

use std::sync::Arc;
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Checks every request against the allow-list.
#[derive(Clone)]
pub struct Authorizer {
    /// None: insecure mode, no client certificates at all.
    allowed: Option<Arc<Vec<String>>>,
}

impl Authorizer {
    /// mTLS mode with an allow-list.
    pub fn new(allowed: Vec<String>) -> Self {
        Self {
            allowed: Some(Arc::new(allowed)),
        }
    }

    /// `--insecure-listen`: no identities to check.
    pub fn insecure() -> Self {
        Self { allowed: None }
    }

    /// Tonic interceptor body.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(allowed) = &self.allowed else {
            return Ok(req);
        };
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::permission_denied("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::permission_denied("no client certificate"))?;
        let names = identities(leaf.as_ref());
        if names.iter().any(|n| allowed.iter().any(|a| a == n)) {
            Ok(req)
        } else {
            tracing::warn!(identities = ?names, "refused caller not on tls.allowed_clients");
            Err(Status::permission_denied("client identity is not allowed"))
        }
    }
}

/// CN(s) and DNS SANs of a DER certificate.
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(d) = name {
                out.push(d.to_string());
            }
        }
    }
    out
}
