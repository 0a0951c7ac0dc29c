//! The controller's own database work: connecting, deriving the JDBC URI the
//! hubs use, looking at and dropping the hub's orchestration schema, and the
//! per-group advisory lock.

use crate::exit::UsageError;
use crate::inventory::{Group, Inventory};
use hubshift_common::redact::{Secret, redact};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A database problem, with the URL's password never shown.
#[derive(Debug, Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error("database URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    /// Connecting failed.
    #[error("cannot connect to the database at {target}: {reason}")]
    Connect {
        /// host:port/db, no credentials.
        target: String,
        /// Redacted reason.
        reason: String,
    },
    /// The TLS set-up for the database failed.
    #[error("database TLS: {0}")]
    Tls(String),
    /// The connection went away under a statement (server restart, network).
    #[error("database connection lost while {doing}: {reason}")]
    ConnectionLost {
        /// What was being done.
        doing: &'static str,
        /// Redacted reason.
        reason: String,
    },
    /// A statement failed.
    #[error("database error while {doing}: {reason}")]
    Query {
        /// What was being done.
        doing: &'static str,
        /// Redacted reason.
        reason: String,
    },
}

/// Wraps a tokio-postgres error for `doing`, redacted. A lost connection
/// (closed, or the server shutting down or refusing sessions: SQLSTATE
/// classes 08 and 57P) is told apart, so that it can be retried on a new one.
pub fn query_err(doing: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| {
        let reason = redact(&error_text(&e));
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        if e.is_closed() || code.starts_with("08") || code.starts_with("57P") {
            DbError::ConnectionLost { doing, reason }
        } else {
            DbError::Query { doing, reason }
        }
    }
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(cause) = src {
                s.push_str(": ");
                s.push_str(&cause.to_string());
                src = cause.source();
            }
            s
        }
    }
}

/// Parsed database settings: enough to connect and to derive the hubs' JDBC URI.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    hub_host: Option<String>,
    hub_port: Option<u16>,
    ca_file: Option<PathBuf>,
    /// Since when every connection attempt failed (shared by the clones a
    /// run hands its steps and its journal), so that the waits for a
    /// database that is away add up to one bounded wait, not one each.
    unreachable_since: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Database {
    /// Since when the database has not answered a connection attempt
    /// (none since the last that succeeded).
    pub fn unreachable_since(&self) -> Option<std::time::Instant> {
        self.unreachable_since.lock().map_or(None, |since| *since)
    }

    fn note_reachable(&self, reachable: bool) {
        if let Ok(mut since) = self.unreachable_since.lock() {
            match (reachable, *since) {
                (true, _) => *since = None,
                (false, None) => *since = Some(std::time::Instant::now()),
                (false, Some(_)) => {}
            }
        }
    }

    /// Parses a `postgres://` URL (or key=value string).
    pub fn new(
        url: &str,
        hub_host: Option<String>,
        hub_port: Option<u16>,
    ) -> Result<Self, DbError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::BadUrl(redact(&e.to_string())))?;
        if config.get_hosts().is_empty() {
            return Err(DbError::BadUrl("no host".into()));
        }
        Ok(Self {
            config,
            hub_host,
            hub_port,
            ca_file: None,
            unreachable_since: Default::default(),
        })
    }

    /// The database a group uses (its URL read from the environment
    /// variable or file), or a usage error naming the inventory and key.
    pub fn for_group(inv: &Inventory, group: &Group) -> Result<Self, UsageError> {
        let url = inv.database_url(group)?;
        let d = &group.database;
        let mut db = Self::new(&url, d.hub_host.clone(), d.hub_port).map_err(|e| {
            UsageError(format!(
                "{}: {}: {e}",
                inv.path.display(),
                group.database_key
            ))
        })?;
        db.ca_file = d.ca_file.clone();
        Ok(db)
    }

    /// TLS for PostgreSQL: used as the server and `sslmode` allow (the
    /// default `prefer` falls back to plain TCP when the server has no TLS;
    /// `require` insists). Server certificates are checked against
    /// `database.ca_file` or the system's roots.
    fn tls(&self) -> Result<MakeRustlsConnect, DbError> {
        let roots = match &self.ca_file {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_pem_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| DbError::Tls(format!("{}: {e}", path.display())))?;
                }
                std::sync::Arc::new(roots)
            }
            None => crate::system_roots::system_roots(),
        };
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// `host:port/db` for messages.
    pub fn target(&self) -> String {
        format!("{}:{}/{}", self.host(), self.port(), self.dbname())
    }

    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }

    fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }

    fn dbname(&self) -> String {
        self.config
            .get_dbname()
            .map(str::to_string)
            .or_else(|| self.config.get_user().map(str::to_string))
            .unwrap_or_else(|| "postgres".into())
    }

    /// The JDBC URI the hubs get: `jdbc:postgresql://host:port/db?user=U&password=P`.
    /// A secret: it holds the password.
    pub fn jdbc_uri(&self) -> Secret {
        let host = self.hub_host.clone().unwrap_or_else(|| self.host());
        let port = self.hub_port.unwrap_or_else(|| self.port());
        let mut uri = format!("jdbc:postgresql://{host}:{port}/{}", self.dbname());
        let mut sep = '?';
        if self.config.get_ssl_mode() == SslMode::Require {
            uri.push_str("?sslmode=require");
            sep = '&';
        }
        if let Some(user) = self.config.get_user() {
            uri.push_str(&format!("{sep}user={}", query_escape(user)));
            sep = '&';
        }
        if let Some(pw) = self.config.get_password() {
            uri.push_str(&format!(
                "{sep}password={}",
                query_escape(&String::from_utf8_lossy(pw))
            ));
        }
        Secret::new(uri)
    }

    /// Opens a connection; the connection task runs in the background.
    pub async fn connect(&self) -> Result<Client, DbError> {
        let client = self
            .config
            .connect(self.tls()?)
            .await
            .map_err(|e| DbError::Connect {
                target: self.target(),
                reason: redact(&error_text(&e)),
            });
        self.note_reachable(client.is_ok());
        let (client, connection) = client?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %redact(&e.to_string()), "database connection ended");
            }
        });
        Ok(client)
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, DbError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| DbError::Tls(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| DbError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(DbError::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether the hub's orchestration schema exists.
pub async fn schema_exists(client: &Client, schema: &str) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(query_err("looking for the orchestration schema"))?;
    Ok(row.get(0))
}

/// `DROP SCHEMA <schema> CASCADE` — the schema is only a copy of what the
/// verified backup holds. Idempotent.
pub async fn drop_schema(client: &Client, schema: &str) -> Result<(), DbError> {
    // The name was validated as a plain identifier by the inventory; quote it anyway.
    let sql = format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        schema.replace('"', "\"\"")
    );
    // The hubs still running write to the schema's tables while it is
    // dropped: the drop can be chosen as a deadlock's victim (40P01) or
    // time out on a lock (55P03). Both leave the schema as it was; the
    // drop is tried again.
    let mut attempt = 1;
    loop {
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < DROP_ATTEMPTS
                    && e.code().is_some_and(|c| {
                        *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || *c == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE
                    }) =>
            {
                tracing::warn!(attempt, error = %redact(&error_text(&e)), "the schema drop met the hubs' locks; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                    .await;
                attempt += 1;
            }
            Err(e) => return Err(query_err("dropping the orchestration schema")(e)),
        }
    }
}

/// How often the schema drop is tried when it meets the hubs' locks.
const DROP_ATTEMPTS: u32 = 8;

/// Key of the advisory lock for a group.
fn lock_key(group: &str) -> String {
    format!("hubshift:group:{group}")
}

/// Tries to take the group's advisory lock on this session; `false` if
/// another session holds it.
pub async fn try_lock_group(client: &Client, group: &str) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
            &[&lock_key(group)],
        )
        .await
        .map_err(query_err("taking the group lock"))?;
    Ok(row.get(0))
}

/// Whether some session holds the group's advisory lock (an upgrade is
/// running), asked without taking it.
pub async fn group_lock_held(client: &Client, group: &str) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
                 AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0))",
            &[&lock_key(group)],
        )
        .await
        .map_err(query_err("looking at the group lock"))?;
    Ok(row.get(0))
}

/// The hubs' heartbeat age in seconds, by the inventory's
/// `heartbeat_query` (the hub's schema is its own, so hubshift does not
/// guess it): its first column of its first row; `None` for no row or NULL.
pub async fn heartbeat_age(client: &Client, query: &str) -> Result<Option<f64>, DbError> {
    let rows = client
        .query(query, &[])
        .await
        .map_err(query_err("running heartbeat_query"))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    row.try_get::<_, Option<f64>>(0).map_err(query_err(
        "reading heartbeat_query's answer (want one float8 column)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_uri_is_derived_and_escaped() {
        let db = Database::new("postgres://hb:p%40ss&w@db.example:6432/hubs", None, None).unwrap();
        assert_eq!(
            db.jdbc_uri().expose(),
            "jdbc:postgresql://db.example:6432/hubs?user=hb&password=p%40ss%26w"
        );
        let db = Database::new(
            "postgres://hb:pw@127.0.0.1/hubs",
            Some("10.1.2.3".into()),
            Some(5433),
        )
        .unwrap();
        assert_eq!(
            db.jdbc_uri().expose(),
            "jdbc:postgresql://10.1.2.3:5433/hubs?user=hb&password=pw"
        );
        assert_eq!(db.target(), "127.0.0.1:5432/hubs");
        assert_eq!(format!("{:?}", db.jdbc_uri()), "***");
        let db = Database::new("postgres://hb:pw@db/hubs?sslmode=require", None, None).unwrap();
        assert_eq!(
            db.jdbc_uri().expose(),
            "jdbc:postgresql://db:5432/hubs?sslmode=require&user=hb&password=pw"
        );
    }

    #[test]
    fn bad_url_does_not_echo_the_password() {
        let err = Database::new("postgres://hb:hunter2@db:notaport/x", None, None)
            .err()
            .expect("a URL with a bad port is refused")
            .to_string();
        assert!(!err.is_empty());
        assert!(!err.contains("hunter2"), "{err}");
    }
}
