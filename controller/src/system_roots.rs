//! The system's trusted root certificates, read once per process: reading
//! and parsing the whole system store took a few milliseconds of CPU, and a
//! fleet opened a database connection per group at once.

use std::sync::{Arc, OnceLock};

/// The system's roots (those that parse), shared by every TLS client that
/// has no CA file of its own.
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}
