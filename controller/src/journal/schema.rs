//! The journal's tables: made whole in one go where there is no journal,
//! brought up to this version where an older hubshift left one, and left
//! alone where the journal is current.

use crate::db::{DbError, query_err};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// A new journal, every table with every column of [`JOURNAL_VERSION`].
/// `CREATE SCHEMA` without `IF NOT EXISTS`: a schema already there (an
/// older journal, or one another controller made a moment ago) fails it,
/// and [`upgrade_ddl`] takes over. Creating the tables whole instead of
/// creating and then altering them saves about a
/// sixth of the server's work, and a fleet makes a hundred journals at
/// once.
///
/// A run's steps and observations carry its id without a foreign key: they
/// are written only after the run's row, and the key's check would lock
/// that row for every step and observation written and make a new journal
/// a third costlier to create.
pub(super) const CREATE: &str = r#"
CREATE SCHEMA hubshift;
CREATE TABLE hubshift.runs (
    id             text PRIMARY KEY,
    grp            text NOT NULL,
    kind           text NOT NULL,
    state          text NOT NULL,
    facts          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    stop_requested boolean NOT NULL DEFAULT false,
    audit          jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE TABLE hubshift.steps (
    run_id      text NOT NULL,
    idx         integer NOT NULL,
    spec        jsonb NOT NULL,
    state       text NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    started_at  timestamptz,
    finished_at timestamptz,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    error       text,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE hubshift.fleets (
    id             text PRIMARY KEY,
    spec           jsonb NOT NULL,
    stop_requested boolean NOT NULL DEFAULT false,
    audit          jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    parked         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE TABLE hubshift.observations (
    run_id  text NOT NULL,
    seq     bigserial,
    at_ms   bigint NOT NULL,
    node    text NOT NULL DEFAULT '',
    kind    text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE hubshift.journal_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
);
"#;

/// The columns added to the tables after the first journals, which an
/// older journal's tables lack.
const ADDED_COLUMNS: &str = "
ALTER TABLE hubshift.runs ADD COLUMN IF NOT EXISTS stop_requested boolean NOT NULL DEFAULT false;
ALTER TABLE hubshift.runs ADD COLUMN IF NOT EXISTS audit jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE hubshift.fleets ADD COLUMN IF NOT EXISTS parked jsonb NOT NULL DEFAULT '{}'::jsonb;
";

/// Brings any earlier journal to [`JOURNAL_VERSION`]: [`CREATE`] made
/// tolerant of what is already there (a missing table is made whole), then
/// the columns an older table lacks. It leaves the same tables and columns
/// as [`CREATE`] (`journal_version.rs` compares the two).
pub(super) fn upgrade_ddl() -> String {
    let tolerant = CREATE
        .replace("CREATE SCHEMA ", "CREATE SCHEMA IF NOT EXISTS ")
        .replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ");
    format!("{tolerant}{ADDED_COLUMNS}")
}

/// The version of the journal's tables: bumped with every change to them
/// (a unit test holds the DDL's digests to it), so that a journal already
/// at it is not altered again.
const JOURNAL_VERSION: i32 = 2;

/// Creates or upgrades the journal schema if needed. A journal already at
/// [`JOURNAL_VERSION`] costs one read: no DDL, whose `ALTER TABLE` would
/// lock the journal's tables against every other controller and watcher
/// at each run, and whose catalog work a hundred groups' runs starting at
/// once would all repeat.
pub async fn ensure_schema(client: &Client) -> Result<(), DbError> {
    match recorded_version(client).await? {
        Some(v) if v >= JOURNAL_VERSION => return Ok(()),
        // No journal, or one from before versions were recorded: a new
        // one first, which a schema already there refuses at once.
        None => match client.batch_execute(&in_ddl_lock(CREATE)).await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_SCHEMA) => {
                // An older journal, or one a controller as current as this
                // one made meanwhile.
                if recorded_version(client).await? >= Some(JOURNAL_VERSION) {
                    return Ok(());
                }
            }
            Err(e) => return Err(query_err("creating the journal schema")(e)),
        },
        Some(_) => {}
    }
    client
        .batch_execute(&in_ddl_lock(&upgrade_ddl()))
        .await
        .map_err(query_err("upgrading the journal schema"))
}

/// `ddl` and the version it leaves, in one implicit transaction (so the
/// version is recorded only with the DDL) after the lock that serialises
/// two controllers making or upgrading the journal at once.
fn in_ddl_lock(ddl: &str) -> String {
    format!(
        "SELECT pg_advisory_xact_lock(hashtextextended('hubshift:journal-ddl', 0)); {ddl}
         INSERT INTO hubshift.journal_version (id, version) VALUES (1, {JOURNAL_VERSION})
         ON CONFLICT (id) DO UPDATE SET version = GREATEST(hubshift.journal_version.version, EXCLUDED.version);"
    )
}

/// The journal's recorded DDL version; `None` for no journal, or one made
/// before versions were recorded (PostgreSQL names a missing schema and a
/// missing table alike here).
async fn recorded_version(client: &Client) -> Result<Option<i32>, DbError> {
    match client
        .query_one("SELECT max(version) FROM hubshift.journal_version", &[])
        .await
    {
        Ok(row) => Ok(row.get(0)),
        Err(e)
            if e.code().is_some_and(|c| {
                *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME
            }) =>
        {
            Ok(None)
        }
        Err(e) => Err(query_err("reading the journal's version")(e)),
    }
}

/// Whether the journal schema exists (read-only commands do not create it).
pub async fn exists(client: &Client) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT to_regclass('hubshift.steps') IS NOT NULL", &[])
        .await
        .map_err(query_err("looking for the journal"))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_to_the_ddl_bumps_the_journal_version() {
        // A journal at JOURNAL_VERSION is not altered again: a DDL change
        // without a new version would never reach existing journals.
        let digest = |ddl: &str| hubshift_common::digest::sha256_hex(ddl.as_bytes());
        assert_eq!(
            (JOURNAL_VERSION, digest(CREATE), digest(ADDED_COLUMNS)),
            (
                2,
                "09f15bca42733f185e6799111dc6429ef454ed1f7ed544f6fc88efacb509d2c6".to_string(),
                "39fe22efcd50d19429eff808fcd1a7a98a3a4f7a75363b19cd7626e7e5cf7f06".to_string(),
            ),
            "the journal DDL changed: bump JOURNAL_VERSION and record the new digests here"
        );
    }
}
