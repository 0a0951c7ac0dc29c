//! One lazily (re)connecting PostgreSQL connection. A node keeps running
//! while the database is away, so every use may reconnect, and every call
//! is bounded by a timeout. The node's HA loop and its data ticks share the
//! connection ([`Db::share`]), as the hub's pool would: one login per hub,
//! their statements pipelined on it. The statements a node repeats several times a
//! second are prepared once per connection, as a JDBC pool does: one round
//! trip each instead of two, and no parse and plan on a busy server.

use super::jdbc::JdbcTarget;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Client, NoTls, Statement};

/// The live connection, if any, shared by every handle of one node.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

/// Longest wait for a connection while running: a node that loses its
/// database notices within it, and keeps flowing data meanwhile.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the first connection at start-up or `create`: the JDBC
/// driver's own default (`connectTimeout` 10 s), so a server busy forking
/// backends for many hubs starting at once is waited for; a refused
/// connection still fails at once.
pub const STARTUP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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

/// One connection and the statements prepared on it. Derefs to the client
/// for one-off statements.
pub struct Session {
    client: Client,
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

impl Session {
    fn new(client: Client) -> Self {
        Self {
            client,
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// `sql` prepared on this connection, the first use preparing it. The
    /// server re-plans it by itself when the schema is dropped and made
    /// again.
    pub async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.cached(sql) {
            return Ok(s);
        }
        let statement = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, statement.clone());
        Ok(statement)
    }

    fn cached(&self, sql: &'static str) -> Option<Statement> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }
}

impl std::ops::Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A connection that reconnects on demand.
pub struct Db {
    config: tokio_postgres::Config,
    slot: Slot,
    connect_timeout: Duration,
}

impl Db {
    /// No connection yet; connections wait at most [`CONNECT_TIMEOUT`].
    pub fn new(target: &JdbcTarget) -> Self {
        Self::with_connect_timeout(target, CONNECT_TIMEOUT)
    }

    /// No connection yet; connections wait at most `connect_timeout`.
    pub fn with_connect_timeout(target: &JdbcTarget, connect_timeout: Duration) -> Self {
        Self {
            config: target.pg_config(connect_timeout),
            slot: Slot::default(),
            connect_timeout,
        }
    }

    /// Another handle on the same connection, whose own (re)connections
    /// wait at most `connect_timeout`. Whichever handle finds the
    /// connection gone makes the next one, for both.
    pub fn share(&self, connect_timeout: Duration) -> Self {
        let mut config = self.config.clone();
        config.connect_timeout(connect_timeout);
        Self {
            config,
            slot: self.slot.clone(),
            connect_timeout,
        }
    }

    /// Later connections wait at most `connect_timeout`; a live one is kept.
    pub fn set_connect_timeout(&mut self, connect_timeout: Duration) {
        self.config.connect_timeout(connect_timeout);
        self.connect_timeout = connect_timeout;
    }

    /// The live client, connecting first if needed.
    pub async fn client(&mut self) -> Result<Arc<Session>, DbFailure> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *slot = None;
        let connect = self.config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(DbFailure {
                    code: None,
                    message: format!("connection timed out after {:?}", self.connect_timeout),
                });
            }
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let client = Arc::new(Session::new(client));
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `f` on the client with [`STATEMENT_TIMEOUT`]; a timeout drops
    /// the connection so the next use starts afresh.
    pub async fn run<T, F, Fut>(&mut self, f: F) -> Result<T, DbFailure>
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(STATEMENT_TIMEOUT, f(client.clone())).await {
            Ok(r) => r.map_err(DbFailure::from),
            Err(_) => {
                // Drop the connection that did not answer, unless another
                // handle has already replaced it.
                let mut slot = self.slot.lock().await;
                if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                    *slot = None;
                }
                Err(DbFailure {
                    code: None,
                    message: format!("database did not answer within {STATEMENT_TIMEOUT:?}"),
                })
            }
        }
    }
}
