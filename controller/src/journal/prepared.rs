//! Statements prepared once per connection. A run journals a hundred or so
//! statements; asked as text, each costs the server a parse and plan and
//! the controller a round trip of its own before it runs, which a loaded
//! server (a fleet's) makes slow. Prepared once, each later use is one
//! round trip.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, Statement};

/// The statements prepared on one connection, by their text. A new
/// connection needs a new cache: statements belong to their session.
#[derive(Default)]
pub struct Prepared(Mutex<HashMap<&'static str, Statement>>);

impl Prepared {
    /// `sql` prepared on `client`, the first use preparing it.
    async fn statement(&self, client: &Client, sql: &'static str) -> Result<Statement, Error> {
        if let Some(s) = self.cached(sql) {
            return Ok(s);
        }
        let statement = client.prepare(sql).await?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs `sql` (prepared once) with `params`; the rows it changed.
    pub async fn execute(
        &self,
        client: &Client,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let statement = self.statement(client, sql).await?;
        client.execute(&statement, params).await
    }

    /// Runs `sql` (prepared once) with `params`; its one row.
    pub async fn query_one(
        &self,
        client: &Client,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let statement = self.statement(client, sql).await?;
        client.query_one(&statement, params).await
    }

    fn cached(&self, sql: &'static str) -> Option<Statement> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }
}
