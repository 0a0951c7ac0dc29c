//! The sandbox's private CA and the parts groups of one fleet share.

use super::error::SandboxError;
use super::error::io;
use super::node::CertPaths;
use crate::pg::TestDatabase;
use hubshift_common::pki::{self, Authority, Usage};
use std::path::{Path, PathBuf};

/// Name the controller's certificate carries (the agents' allow-list entry).
pub const CONTROLLER_NAME: &str = "hubshift-controller";

/// The CA and the controller's certificate: one per sandbox, or one for a
/// whole fleet (the inventory names one CA and one controller certificate).
pub struct SandboxPki {
    authority: Authority,
    /// Its files.
    pub certs: CertPaths,
}

impl SandboxPki {
    /// A new CA and controller certificate, written into `dir`.
    pub fn create(dir: &Path) -> Result<SandboxPki, SandboxError> {
        std::fs::create_dir_all(dir).map_err(io("creating certs dir"))?;
        let authority = Authority::new("hubshift sandbox CA")?;
        let ca = pki::write_pair(dir, "ca", authority.ca(), true)?;
        let ctl = authority.issue(CONTROLLER_NAME, &[], Usage::Client)?;
        let ctl = pki::write_pair(dir, CONTROLLER_NAME, &ctl, true)?;
        Ok(SandboxPki {
            authority,
            certs: CertPaths {
                ca: ca.cert,
                controller_cert: ctl.cert,
                controller_key: ctl.key,
            },
        })
    }

    /// Issues agent `name`'s server certificate (for `localhost` and
    /// 127.0.0.1) into `dir`.
    pub fn issue_agent(&self, dir: &Path, name: &str) -> Result<pki::WrittenPair, SandboxError> {
        std::fs::create_dir_all(dir).map_err(io("creating certs dir"))?;
        let minted = self.authority.issue(
            name,
            &["localhost".into(), "127.0.0.1".into()],
            Usage::Server,
        )?;
        Ok(pki::write_pair(dir, name, &minted, true)?)
    }
}

/// What a group gets from elsewhere instead of making it itself, so that
/// several groups live side by side (see [`crate::fleet`]): a database on a
/// server they share, one PKI, one directory of runtime archives.
pub struct SharedParts {
    /// The group's own database (made with
    /// [`TestDatabase::create_database`]); the server outlives the group
    /// while another handle lives.
    pub database: TestDatabase,
    /// The CA that signs the group's agents.
    pub pki: std::sync::Arc<SandboxPki>,
    /// Where runtime archives are written and found.
    pub archives: PathBuf,
}
