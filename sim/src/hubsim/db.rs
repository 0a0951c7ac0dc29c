//! One lazily (re)connecting PostgreSQL connection. A node keeps running
//! while the database is away, so every use may reconnect, and every call
//! is bounded by a timeout.

use super::jdbc::JdbcTarget;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Longest wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one statement (or a small group of them).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A database failure, already rendered without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbFailure {
    /// SQLSTATE when the server answered.
    pub code: Option<String>,
    /// Message.
    pub message: String,
}

impl DbFailure {
    /// Whether the server said the schema or table does not exist.
    pub fn is_missing_schema(&self) -> bool {
        matches!(self.code.as_deref(), Some("3F000") | Some("42P01"))
    }
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<tokio_postgres::Error> for DbFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    m.push_str(": ");
                    m.push_str(&s.to_string());
                    src = s.source();
                }
                m
            }
        };
        Self {
            code: e.code().map(|c| c.code().to_string()),
            message: super::log::scrub(&message),
        }
    }
}

/// A connection that reconnects on demand.
pub struct Db {
    config: tokio_postgres::Config,
    client: Option<Arc<Client>>,
}

impl Db {
    /// No connection yet.
    pub fn new(target: &JdbcTarget) -> Self {
        Self {
            config: target.pg_config(CONNECT_TIMEOUT),
            client: None,
        }
    }

    /// The live client, connecting first if needed.
    pub async fn client(&mut self) -> Result<Arc<Client>, DbFailure> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let connect = self.config.connect(NoTls);
            let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(DbFailure {
                        code: None,
                        message: format!("connection timed out after {CONNECT_TIMEOUT:?}"),
                    });
                }
            };
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let client = Arc::new(client);
            self.client = Some(client.clone());
            return Ok(client);
        }
        match &self.client {
            Some(c) => Ok(c.clone()),
            None => Err(DbFailure {
                code: None,
                message: "not connected".into(),
            }),
        }
    }

    /// Runs `f` on the client with [`STATEMENT_TIMEOUT`]; a timeout drops
    /// the connection so the next use starts afresh.
    pub async fn run<T, F, Fut>(&mut self, f: F) -> Result<T, DbFailure>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(STATEMENT_TIMEOUT, f(client)).await {
            Ok(r) => r.map_err(DbFailure::from),
            Err(_) => {
                self.client = None;
                Err(DbFailure {
                    code: None,
                    message: format!("database did not answer within {STATEMENT_TIMEOUT:?}"),
                })
            }
        }
    }
}
