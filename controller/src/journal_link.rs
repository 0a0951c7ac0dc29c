//! The run's link to its journal. The connection also holds the group's
//! advisory lock, so when PostgreSQL restarts mid-run (or the connection
//! drops) the link reconnects with bounded retries, takes the lock again,
//! and repeats the statement — a step that succeeded is not turned into a
//! failed run by a database restart, and a run never goes on without its
//! lock.

use crate::db::{Database, DbError, try_lock_group};
use crate::journal::{self, Prepared, RunState};
use crate::timeline::Observation;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// A journal connection that holds the group lock and survives restarts.
pub struct JournalLink {
    db: Database,
    group: String,
    client: Client,
    /// The statements prepared on `client`.
    prepared: Prepared,
    /// How long the run waits for its database to come back
    /// (`timeouts.database`).
    patience: Duration,
    /// Set when the database did not come back within `patience`:
    /// every later statement fails at once with it, so that a run whose
    /// database is gone waits once, not once per statement it still has
    /// to journal.
    gone: Option<String>,
    /// How often the connection was made again: a step tells from it that
    /// the database went away while it ran.
    reconnects: u64,
}

/// Runs `$call` (an expression using the client `$c`), reconnecting once
/// when the connection was lost.
macro_rules! retrying {
    ($self:ident, $what:expr, |$c:ident| $call:expr) => {{
        let mut reconnected = false;
        if let Some(reason) = &$self.gone {
            return Err(DbError::ConnectionLost {
                doing: $what,
                reason: reason.clone(),
            });
        }
        loop {
            let $c = &$self.client;
            match $call.await {
                Err(e)
                    if !reconnected
                        && ($self.client.is_closed()
                            || matches!(e, DbError::ConnectionLost { .. })) =>
                {
                    reconnected = true;
                    $self.reconnect($what, e).await?;
                }
                r => break r,
            }
        }
    }};
}

impl JournalLink {
    /// Why the journal's database is given up on, once it is.
    pub fn gone(&self) -> Option<&str> {
        self.gone.as_deref()
    }

    /// Wraps a connection that already holds the group's lock.
    pub fn new(db: Database, group: &str, client: Client, patience: Duration) -> Self {
        Self {
            patience,
            db,
            group: group.to_string(),
            client,
            prepared: Prepared::default(),
            gone: None,
            reconnects: 0,
        }
    }

    /// How often the connection was lost and made again so far.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    async fn reconnect(&mut self, what: &'static str, first: DbError) -> Result<(), DbError> {
        tracing::warn!(error = %first, "journal connection lost while {what}; reconnecting");
        let start = Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            match self.db.connect().await {
                Ok(client) => {
                    if try_lock_group(&client, &self.group).await? {
                        tracing::warn!("journal reconnected; group lock taken again");
                        self.client = client;
                        self.prepared = Prepared::default();
                        self.reconnects += 1;
                        return Ok(());
                    }
                    return Err(DbError::Query {
                        doing: what,
                        reason: format!(
                            "the database connection was lost and another controller took the lock of group {} meanwhile",
                            self.group
                        ),
                    });
                }
                // Counted from the first failed attempt of anyone in this
                // run (a step may have waited already): one bounded wait.
                Err(e)
                    if Instant::now()
                        >= self.db.unreachable_since().unwrap_or(start) + self.patience =>
                {
                    let reason = format!(
                        "the database {} did not come back within {}s ({e}); the run is left as journaled before the loss",
                        self.db.target(),
                        self.patience.as_secs()
                    );
                    self.gone = Some(reason.clone());
                    return Err(DbError::ConnectionLost {
                        doing: what,
                        reason,
                    });
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(4));
                }
            }
        }
    }

    /// See [`journal::step_begun`].
    pub async fn step_begun(
        &mut self,
        run: &str,
        idx: usize,
        observations: &[Observation],
    ) -> Result<(), DbError> {
        retrying!(self, "journaling a step start", |c| journal::step_begun(
            c,
            &self.prepared,
            run,
            idx,
            observations
        ))
    }

    /// See [`journal::step_ended`].
    pub async fn step_ended(
        &mut self,
        run: &str,
        idx: usize,
        detail: &Value,
        facts: &Value,
        observations: &[Observation],
    ) -> Result<bool, DbError> {
        retrying!(self, "journaling a step end", |c| journal::step_ended(
            c,
            &self.prepared,
            run,
            idx,
            detail,
            facts,
            observations
        ))
    }

    /// See [`journal::step_failed`].
    pub async fn step_failed(&mut self, run: &str, idx: usize, error: &str) -> Result<(), DbError> {
        retrying!(self, "journaling a step failure", |c| journal::step_failed(
            c,
            &self.prepared,
            run,
            idx,
            error
        ))
    }

    /// See [`journal::reset_steps`].
    pub async fn reset_steps(&mut self, run: &str, from: usize) -> Result<(), DbError> {
        retrying!(self, "journaling a fallback", |c| journal::reset_steps(
            c, run, from
        ))
    }

    /// See [`crate::db::schema_exists`]: asked on this connection, which
    /// survives a database restart as the journal does, instead of a login
    /// of its own.
    pub async fn schema_exists(&mut self, schema: &str) -> Result<bool, DbError> {
        retrying!(self, "looking for the orchestration schema", |c| {
            crate::db::schema_exists(c, schema)
        })
    }

    /// See [`crate::db::drop_schema`], on this connection.
    pub async fn drop_schema(&mut self, schema: &str) -> Result<(), DbError> {
        retrying!(self, "dropping the orchestration schema", |c| {
            crate::db::drop_schema(c, schema)
        })
    }

    /// See [`journal::add_facts`].
    pub async fn add_facts(&mut self, run: &str, facts: &Value) -> Result<(), DbError> {
        retrying!(self, "journaling run facts", |c| journal::add_facts(
            c,
            &self.prepared,
            run,
            facts
        ))
    }

    /// See [`journal::finish_run`].
    pub async fn finish_run(&mut self, run: &str, state: RunState) -> Result<(), DbError> {
        retrying!(self, "journaling the run end", |c| journal::finish_run(
            c,
            &self.prepared,
            run,
            state
        ))
    }

    /// See [`journal::take_stop_request`].
    pub async fn take_stop_request(&mut self, run: &str) -> Result<bool, DbError> {
        retrying!(self, "reading a stop request", |c| {
            journal::take_stop_request(c, &self.prepared, run)
        })
    }

    /// See [`journal::add_observations`].
    pub async fn add_observations(
        &mut self,
        run: &str,
        observations: &[Observation],
    ) -> Result<(), DbError> {
        retrying!(self, "journaling what the run observed", |c| {
            journal::add_observations(c, &self.prepared, run, observations)
        })
    }

    /// See [`journal::mark_rolled_back`].
    pub async fn mark_rolled_back(&mut self, run: &str) -> Result<(), DbError> {
        retrying!(self, "journaling the rollback", |c| {
            journal::mark_rolled_back(c, run)
        })
    }
}
