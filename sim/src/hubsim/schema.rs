//! The SQL of the HA group: schema `orchestration` (cluster, leader, nodes)
//! and the data table `hubdata.ticks`, which lives outside `orchestration`
//! so it survives `DROP SCHEMA orchestration CASCADE`.
//!
//! Tables:
//! - `orchestration.cluster` (one row, id = 1): `version`, `cert_fingerprint`
//!   (SHA-256 hex of the creating node's certificate store),
//!   `preferred_primary` (the node that ran `create`), `project` (the
//!   project JSON text), `created_at`.
//! - `orchestration.leader` (one row, id = 1): `node` (active node or NULL),
//!   `heartbeat_at`, `term` (incremented at every change of leader),
//!   `handover_to` (node that asked for leadership), `handover_requested_at`.
//! - `orchestration.nodes`: `node`, `version`, `role`, `started_at`, `last_seen` (written when the role changes, otherwise every 5 s).
//! - `hubdata.ticks`: `id`, `node`, `seq`, `version`, `produced_at`,
//!   `inserted_at`; unique on (`node`, `seq`, `produced_at`) so a replayed
//!   tick is never stored twice.

use super::db::Session;
use std::time::{Duration, SystemTime};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

/// Name of the HA schema.
pub const SCHEMA: &str = "orchestration";

/// How a watcher reads the age of the active node's heartbeat, in seconds
/// (the inventory's `heartbeat_query` for hubsim groups); no row while no
/// node leads.
pub const HEARTBEAT_AGE_QUERY: &str = "SELECT extract(epoch FROM clock_timestamp() - heartbeat_at)::float8 FROM orchestration.leader WHERE id = 1 AND node IS NOT NULL";

const CREATE_ORCHESTRATION: &str = "
CREATE SCHEMA orchestration;
CREATE TABLE orchestration.cluster (
    id integer PRIMARY KEY CHECK (id = 1),
    version text NOT NULL,
    cert_fingerprint text NOT NULL,
    preferred_primary text NOT NULL,
    project text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE orchestration.leader (
    id integer PRIMARY KEY CHECK (id = 1),
    node text,
    heartbeat_at timestamptz,
    term bigint NOT NULL DEFAULT 0,
    handover_to text,
    handover_requested_at timestamptz
);
CREATE TABLE orchestration.nodes (
    node text PRIMARY KEY,
    version text NOT NULL,
    role text NOT NULL,
    started_at timestamptz,
    last_seen timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO orchestration.leader (id) VALUES (1);
";

const CREATE_HUBDATA: &str = "
CREATE SCHEMA IF NOT EXISTS hubdata;
CREATE TABLE IF NOT EXISTS hubdata.ticks (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    seq bigint NOT NULL,
    version text NOT NULL,
    produced_at timestamptz NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (node, seq, produced_at)
);
CREATE INDEX IF NOT EXISTS ticks_produced_at ON hubdata.ticks (produced_at);
";

/// Serialises DDL of concurrent hubsim processes.
const DDL_LOCK: i64 = 0x6875_6273_696d; // "hubsim"

/// What `create` records.
#[derive(Debug, Clone)]
pub struct NewCluster<'a> {
    /// Version of the creating runtime.
    pub version: &'a str,
    /// Certificate store fingerprint.
    pub cert_fingerprint: &'a str,
    /// The creating node.
    pub preferred_primary: &'a str,
    /// Project JSON text.
    pub project: &'a str,
}

/// Why `create` did not create.
#[derive(Debug)]
pub enum CreateError {
    /// The schema is there already (with this version, if readable).
    Exists(Option<String>),
    /// Database error.
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for CreateError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// Creates schema `orchestration` and its rows in one transaction. Each
/// statement is sent with its parameters' types, so each is one round trip
/// (no separate prepare): a server busy with many hubs starting at once
/// answers each round trip late.
pub async fn create_orchestration(
    client: &mut Client,
    new: &NewCluster<'_>,
) -> Result<(), CreateError> {
    let tx = client.transaction().await?;
    let exists = tx
        .query_typed(
            "SELECT pg_advisory_xact_lock($1), EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $2)",
            &[(&DDL_LOCK, Type::INT8), (&SCHEMA, Type::TEXT)],
        )
        .await?
        .first()
        .is_some_and(|r| r.get::<_, bool>(1));
    if exists {
        drop(tx);
        let version = client
            .query_opt(
                "SELECT version FROM orchestration.cluster WHERE id = 1",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get::<_, String>(0));
        return Err(CreateError::Exists(version));
    }
    if let Err(e) = tx.batch_execute(CREATE_ORCHESTRATION).await {
        if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_SCHEMA) {
            return Err(CreateError::Exists(None));
        }
        return Err(e.into());
    }
    tx.execute_typed(
        "WITH cluster AS (
           INSERT INTO orchestration.cluster (id, version, cert_fingerprint, preferred_primary, project)
           VALUES (1, $1, $2, $3, $4))
         INSERT INTO orchestration.nodes (node, version, role) VALUES ($3, $1, 'created')",
        &[
            (&new.version, Type::TEXT),
            (&new.cert_fingerprint, Type::TEXT),
            (&new.preferred_primary, Type::TEXT),
            (&new.project, Type::TEXT),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Creates schema `hubdata` and its table unless present. On the usual
/// start (they exist) this is one plain read: no DDL, no lock on the table
/// the other node writes to, and no procedural block (a `DO` block loads
/// and compiles PL/pgSQL in every new backend, which made each of a
/// hundred hubs starting at once several milliseconds of server time).
/// Creation is serialised against other hubsim processes and sent as one
/// implicit transaction, so a failure leaves none open on a connection the
/// node's ticks share.
pub async fn ensure_hubdata(client: &Client) -> Result<(), tokio_postgres::Error> {
    let present = client
        .query_typed(
            "SELECT to_regclass('hubdata.ticks_produced_at') IS NOT NULL",
            &[],
        )
        .await?
        .first()
        .is_some_and(|r| r.get::<_, bool>(0));
    if present {
        return Ok(());
    }
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({DDL_LOCK}); {CREATE_HUBDATA}"
        ))
        .await
}

/// The cluster row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    /// Schema version.
    pub version: String,
    /// Certificate store fingerprint.
    pub cert_fingerprint: String,
    /// Preferred primary.
    pub preferred_primary: String,
    /// Project JSON.
    pub project: String,
}

const READ_CLUSTER_SQL: &str = "SELECT version, cert_fingerprint, preferred_primary, project FROM orchestration.cluster WHERE id = 1";

/// Reads the cluster row; `Ok(None)` when the table is empty.
pub async fn read_cluster(client: &Session) -> Result<Option<ClusterRow>, tokio_postgres::Error> {
    let row = client
        .query_opt(&client.statement(READ_CLUSTER_SQL).await?, &[])
        .await?;
    Ok(row.map(|r| ClusterRow {
        version: r.get(0),
        cert_fingerprint: r.get(1),
        preferred_primary: r.get(2),
        project: r.get(3),
    }))
}

/// What one poll of the HA state sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaState {
    /// Schema version.
    pub version: String,
    /// Preferred primary.
    pub preferred_primary: String,
    /// Project JSON.
    pub project: String,
    /// Current leader.
    pub leader: Option<String>,
    /// Whether the leader's heartbeat is older than the takeover timeout (or absent).
    pub stale: bool,
    /// Node that asked for leadership.
    pub handover_to: Option<String>,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const READ_STATE_SQL: &str = "SELECT c.version, c.preferred_primary, c.project, l.node, l.handover_to,
                    (l.heartbeat_at IS NULL OR l.heartbeat_at < clock_timestamp() - $1::float8 * interval '1 millisecond')
             FROM orchestration.cluster c, orchestration.leader l WHERE c.id = 1 AND l.id = 1";

/// Reads cluster and leader in one statement.
pub async fn read_state(
    client: &Session,
    takeover: Duration,
) -> Result<Option<HaState>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &client.statement(READ_STATE_SQL).await?,
            &[&millis(takeover)],
        )
        .await?;
    Ok(row.map(|r| HaState {
        version: r.get(0),
        preferred_primary: r.get(1),
        project: r.get(2),
        leader: r.get(3),
        handover_to: r.get(4),
        stale: r.get(5),
    }))
}

const CLAIM_SQL: &str = "UPDATE orchestration.leader l
             SET term = CASE WHEN l.node IS NOT DISTINCT FROM $1 THEN l.term ELSE l.term + 1 END,
                 node = $1, heartbeat_at = clock_timestamp(),
                 handover_to = CASE WHEN l.handover_to = $1 THEN NULL ELSE l.handover_to END
             FROM orchestration.cluster c
             WHERE l.id = 1 AND c.id = 1 AND c.version = $2
               AND (l.node IS NULL OR l.node = $1
                    OR l.heartbeat_at IS NULL
                    OR l.heartbeat_at < clock_timestamp() - $3::float8 * interval '1 millisecond')
             RETURNING l.term";

/// The atomic election: `me` becomes (or stays) leader when the schema has
/// `version` and the leader is `me`, nobody, or silent for longer than
/// `takeover`. Returns the term when `me` is leader afterwards.
pub async fn claim(
    client: &Session,
    me: &str,
    version: &str,
    takeover: Duration,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &client.statement(CLAIM_SQL).await?,
            &[&me, &version, &millis(takeover)],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

const HEARTBEAT_SQL: &str =
    "UPDATE orchestration.leader l SET node = $1, heartbeat_at = clock_timestamp()
             FROM orchestration.cluster c
             WHERE l.id = 1 AND c.id = 1 AND c.version = $2 AND (l.node = $1 OR l.node IS NULL)";

/// The active node's heartbeat: only while `me` is still leader (or the
/// leader row is fresh and empty) and the schema has `version`. Returns
/// whether `me` is leader afterwards.
pub async fn heartbeat(
    client: &Session,
    me: &str,
    version: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(&client.statement(HEARTBEAT_SQL).await?, &[&me, &version])
        .await?;
    Ok(n == 1)
}

const STEADY_HEARTBEAT_SQL: &str =
    "UPDATE orchestration.leader l SET node = $1, heartbeat_at = clock_timestamp()
             FROM orchestration.cluster c
             WHERE l.id = 1 AND c.id = 1 AND c.version = $2 AND (l.node = $1 OR l.node IS NULL)
               AND l.handover_to IS NULL";

/// The active node's beat while nothing changed, in one statement: `me` is
/// leader, the schema has `version`, and no node asked for leadership.
/// `false` means something did change (or the cluster row is gone), which
/// the node then reads the state to learn; the usual beat is one round
/// trip instead of two.
pub async fn steady_heartbeat(
    client: &Session,
    me: &str,
    version: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            &client.statement(STEADY_HEARTBEAT_SQL).await?,
            &[&me, &version],
        )
        .await?;
    Ok(n == 1)
}

const REQUEST_HANDOVER_SQL: &str =
    "UPDATE orchestration.leader SET handover_to = $1, handover_requested_at = clock_timestamp()
             WHERE id = 1 AND node = $2 AND handover_to IS DISTINCT FROM $1";

/// The preferred primary asks the active node `other` to hand over.
pub async fn request_handover(
    client: &Session,
    me: &str,
    other: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            &client.statement(REQUEST_HANDOVER_SQL).await?,
            &[&me, &other],
        )
        .await?;
    Ok(n == 1)
}

const HAND_OVER_SQL: &str = "UPDATE orchestration.leader
             SET node = $2, heartbeat_at = clock_timestamp(), term = term + 1, handover_to = NULL
             WHERE id = 1 AND node = $1 AND handover_to = $2";

/// The active node `me`, having stopped producing data, passes leadership
/// to `to`, who starts with a fresh heartbeat.
pub async fn hand_over(
    client: &Session,
    me: &str,
    to: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(&client.statement(HAND_OVER_SQL).await?, &[&me, &to])
        .await?;
    Ok(n == 1)
}

const UPSERT_NODE_SQL: &str =
    "INSERT INTO orchestration.nodes (node, version, role, started_at, last_seen)
             VALUES ($1, $2, $3, $4, clock_timestamp())
             ON CONFLICT (node) DO UPDATE SET version = EXCLUDED.version, role = EXCLUDED.role,
                 started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen";

/// Records this node in `orchestration.nodes`.
pub async fn upsert_node(
    client: &Session,
    me: &str,
    version: &str,
    role: &str,
    started_at: SystemTime,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &client.statement(UPSERT_NODE_SQL).await?,
            &[&me, &version, &role, &started_at],
        )
        .await
        .map(|_| ())
}

/// One data tick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TickRow {
    /// Producing node.
    pub node: String,
    /// Tick slot number (tick intervals since the node process started).
    pub seq: i64,
    /// Runtime version of the producer.
    pub version: String,
    /// Microseconds since the Unix epoch when it was produced.
    pub produced_at_us: i64,
}

impl TickRow {
    /// `produced_at` as a time.
    pub fn produced_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.produced_at_us.max(0) as u64)
    }
}

const INSERT_TICKS_SQL: &str = "INSERT INTO hubdata.ticks (node, seq, version, produced_at)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::timestamptz[])
             ON CONFLICT DO NOTHING";

/// Inserts ticks (one statement), ignoring ones already stored.
pub async fn insert_ticks(
    client: &Session,
    ticks: &[TickRow],
) -> Result<u64, tokio_postgres::Error> {
    let nodes: Vec<&str> = ticks.iter().map(|t| t.node.as_str()).collect();
    let seqs: Vec<i64> = ticks.iter().map(|t| t.seq).collect();
    let versions: Vec<&str> = ticks.iter().map(|t| t.version.as_str()).collect();
    let times: Vec<SystemTime> = ticks.iter().map(TickRow::produced_at).collect();
    client
        .execute(
            &client.statement(INSERT_TICKS_SQL).await?,
            &[&nodes, &seqs, &versions, &times],
        )
        .await
}
