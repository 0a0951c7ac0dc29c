//! The journal: every run and every step with its state, in schema
//! `hubshift` of the same database (never the hub's orchestration schema),
//! so that an interrupted run can be resumed from any machine. No secret is
//! ever written here.

use crate::db::{DbError, query_err};
use crate::plan::Step;
use serde_json::Value;
use tokio_postgres::Client;

mod fleets;
mod prepared;
mod progress;
mod schema;
pub use fleets::*;
pub use prepared::Prepared;
pub use progress::*;
pub use schema::{ensure_schema, exists};

/// Defines a journal state: a closed set of names that are stored as text
/// in the journal and shown as the same text in `--json` output, so that
/// code compares variants and a typo is a compile error, not a run that
/// never matches.
macro_rules! journal_state {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text the journal stores and output shows.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownState {
                        kind: stringify!($name),
                        text: other.to_string(),
                    }),
                }
            }
        }
    };
}

/// A journal holds a state this version does not know (a newer controller
/// wrote it, or someone edited the table by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the journal holds {kind} {text:?}, which this version of hubshift does not know")]
pub struct UnknownState {
    /// `RunState` or `StepState`.
    pub kind: &'static str,
    /// What the journal holds.
    pub text: String,
}

journal_state! {
    /// Where a run stands, as `hubshift.runs.state` records it.
    RunState {
        /// A controller works on it (or did, and was cut off: see `Interrupted`).
        Running => "running",
        /// Journaled `running`, but no controller holds the group's lock: its
        /// controller was killed or lost the database. Only ever read, never
        /// written.
        Interrupted => "interrupted",
        /// Every step done and the group verified.
        Done => "done",
        /// A step failed; `resume` goes on from it.
        Failed => "failed",
        /// Parked before a step, as `--pause-before` asked.
        Paused => "paused",
        /// Parked at a safe point, as `hubshift stop` or Ctrl-C asked.
        Stopped => "stopped",
        /// Given up by `hubshift abandon`.
        Abandoned => "abandoned",
        /// Reversed by a finished rollback.
        RolledBack => "rolled_back",
    }
}

impl RunState {
    /// A run in one of these states is over: nothing resumes it.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Done | RunState::RolledBack | RunState::Abandoned
        )
    }
}

journal_state! {
    /// Where a step stands, as `hubshift.steps.state` records it.
    StepState {
        /// Not begun (or put back by a fallback).
        Pending => "pending",
        /// Begun; after a crash it is run again (every step is idempotent).
        Running => "running",
        /// Finished, with what it observed.
        Done => "done",
        /// Failed, with why.
        Failed => "failed",
    }
}

/// Reads a state column.
fn state_column<T: std::str::FromStr<Err = UnknownState>>(
    row: &tokio_postgres::Row,
    idx: usize,
) -> Result<T, DbError> {
    let text: String = row.get(idx);
    text.parse().map_err(|e: UnknownState| DbError::Query {
        doing: "reading the journal",
        reason: e.to_string(),
    })
}

/// One journaled run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// HA group.
    pub group: String,
    /// `upgrade`.
    pub kind: String,
    /// Where it stands.
    pub state: RunState,
    /// Versions, runtime digest, backup id and digest, outage windows.
    pub facts: Value,
    /// When it was created (UTC text).
    pub created_at: String,
    /// Who started and resumed it: user, host, CI job, when.
    pub audit: Value,
    /// Last change (UTC text).
    pub updated_at: String,
}

/// One journaled step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRecord {
    /// Position in the plan.
    pub idx: i32,
    /// The step itself.
    pub step: Step,
    /// Where it stands.
    pub state: StepState,
    /// How often it was started.
    pub attempts: i32,
    /// What it observed.
    pub detail: Value,
    /// Why it failed, redacted.
    pub error: Option<String>,
}

/// Records a new run and its pending steps in one transaction.
pub async fn create_run(
    client: &mut Client,
    group: &str,
    kind: &str,
    facts: &Value,
    steps: &[Step],
) -> Result<String, DbError> {
    let tx = client
        .transaction()
        .await
        .map_err(query_err("starting the journal transaction"))?;
    let row = tx
        .query_one(
            "INSERT INTO hubshift.runs (id, grp, kind, state, facts)
             VALUES (to_char(now() AT TIME ZONE 'utc', 'YYYYMMDD\"T\"HH24MISS') || '-' ||
                     substr(md5(random()::text || clock_timestamp()::text), 1, 6),
                     $1, $2, 'running', $3)
             RETURNING id",
            &[&group, &kind, facts],
        )
        .await
        .map_err(query_err("recording the run"))?;
    let id: String = row.get(0);
    // Every step in one statement: one round trip, not one per step.
    let specs = Value::Array(
        steps
            .iter()
            .map(|step| serde_json::to_value(step).unwrap_or(Value::Null))
            .collect(),
    );
    tx.execute(
        "INSERT INTO hubshift.steps (run_id, idx, spec)
         SELECT $1, (n - 1)::integer, spec
         FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(spec, n)",
        &[&id, &specs],
    )
    .await
    .map_err(query_err("recording the steps"))?;
    tx.commit()
        .await
        .map_err(query_err("committing the run record"))?;
    Ok(id)
}

/// Merges `facts` into the run's facts.
pub async fn add_facts(
    client: &Client,
    prepared: &Prepared,
    run: &str,
    facts: &Value,
) -> Result<(), DbError> {
    prepared
        .execute(
            client,
            "UPDATE hubshift.runs SET facts = facts || $2, updated_at = now() WHERE id = $1",
            &[&run, facts],
        )
        .await
        .map_err(query_err("journaling run facts"))?;
    Ok(())
}

pub(super) async fn touch(client: &Client, run: &str, state: RunState) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE hubshift.runs SET state = $2, updated_at = now() WHERE id = $1",
            &[&run, &state.as_str()],
        )
        .await
        .map_err(query_err("journaling the run state"))?;
    Ok(())
}

/// Records who acted on a run (`entry`: action, user, host, CI job, time).
pub async fn add_audit(client: &Client, run: &str, entry: &Value) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE hubshift.runs SET audit = audit || jsonb_build_array($2::jsonb) WHERE id = $1",
            &[&run, entry],
        )
        .await
        .map_err(query_err("journaling who acted on the run"))?;
    Ok(())
}

/// Asks a running run to stop at its next safe point; `false` when the run
/// is not running.
pub async fn request_stop(client: &Client, run: &str) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE hubshift.runs SET stop_requested = true, updated_at = now()
             WHERE id = $1 AND state = $2",
            &[&run, &RunState::Running.as_str()],
        )
        .await
        .map_err(query_err("asking the run to stop"))?;
    Ok(n == 1)
}

/// Takes a pending stop request (clearing it); `true` when there was one.
pub async fn take_stop_request(
    client: &Client,
    prepared: &Prepared,
    run: &str,
) -> Result<bool, DbError> {
    let n = prepared
        .execute(
            client,
            "UPDATE hubshift.runs SET stop_requested = false
             WHERE id = $1 AND stop_requested",
            &[&run],
        )
        .await
        .map_err(query_err("reading a stop request"))?;
    Ok(n == 1)
}

/// Marks an upgrade run as reversed by a finished rollback.
pub async fn mark_rolled_back(client: &Client, run: &str) -> Result<(), DbError> {
    touch(client, run, RunState::RolledBack).await
}

/// Marks an unfinished run as given up.
pub async fn mark_abandoned(client: &Client, run: &str) -> Result<(), DbError> {
    touch(client, run, RunState::Abandoned).await
}

/// Marks the run finished (`done`), failed or parked.
pub async fn finish_run(
    client: &Client,
    prepared: &Prepared,
    run: &str,
    state: RunState,
) -> Result<(), DbError> {
    prepared
        .execute(
            client,
            "UPDATE hubshift.runs SET state = $2, updated_at = now(),
                    finished_at = CASE WHEN $3 THEN now() ELSE finished_at END
             WHERE id = $1",
            &[&run, &state.as_str(), &(state == RunState::Done)],
        )
        .await
        .map_err(query_err("journaling the run end"))?;
    Ok(())
}

/// A run journaled as `running` whose group lock nobody holds was cut off
/// (its controller was killed or lost its database): it reads as
/// `interrupted`, never as running. (The literals are
/// [`RunState::Running`] and [`RunState::Interrupted`]; a test holds them
/// together.)
const RUN_COLUMNS: &str = "id, grp, kind,
    CASE WHEN state = 'running' AND NOT EXISTS (
        SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1
          AND ((l.classid::bigint << 32) | l.objid::bigint)
              = hashtextextended('hubshift:group:' || grp, 0))
    THEN 'interrupted' ELSE state END,
    facts,
    to_char(created_at AT TIME ZONE 'utc', 'YYYY-MM-DD HH24:MI:SS\"Z\"'),
    to_char(updated_at AT TIME ZONE 'utc', 'YYYY-MM-DD HH24:MI:SS\"Z\"'),
    audit";

fn run_from_row(row: &tokio_postgres::Row) -> Result<RunRecord, DbError> {
    Ok(RunRecord {
        id: row.get(0),
        group: row.get(1),
        kind: row.get(2),
        state: state_column(row, 3)?,
        facts: row.get(4),
        created_at: row.get(5),
        updated_at: row.get(6),
        audit: row.get(7),
    })
}

/// One run by id.
pub async fn load_run(client: &Client, id: &str) -> Result<Option<RunRecord>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {RUN_COLUMNS} FROM hubshift.runs WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(query_err("reading the run"))?;
    row.as_ref().map(run_from_row).transpose()
}

/// The steps of a run, in order.
pub async fn load_steps(client: &Client, id: &str) -> Result<Vec<StepRecord>, DbError> {
    let rows = client
        .query(
            "SELECT idx, spec, state, attempts, detail, error FROM hubshift.steps
             WHERE run_id = $1 ORDER BY idx",
            &[&id],
        )
        .await
        .map_err(query_err("reading the steps"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let spec: Value = row.get(1);
        let step: Step = serde_json::from_value(spec).map_err(|e| DbError::Query {
            doing: "reading the steps",
            reason: format!("journal holds a step this version cannot read: {e}"),
        })?;
        out.push(StepRecord {
            idx: row.get(0),
            step,
            state: state_column(&row, 2)?,
            attempts: row.get(3),
            detail: row.get(4),
            error: row.get(5),
        });
    }
    Ok(out)
}

/// When a run last changed, in Unix seconds on the database's clock.
pub async fn run_updated_unix(client: &Client, id: &str) -> Result<Option<f64>, DbError> {
    let row = client
        .query_opt(
            "SELECT extract(epoch FROM updated_at)::float8 FROM hubshift.runs WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(query_err("reading when a run changed"))?;
    Ok(row.map(|r| r.get(0)))
}

/// Runs, newest first, optionally of one group.
pub async fn list_runs(
    client: &Client,
    group: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRecord>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {RUN_COLUMNS} FROM hubshift.runs
                 WHERE $1::text IS NULL OR grp = $1 ORDER BY created_at DESC LIMIT $2"
            ),
            &[&group, &limit],
        )
        .await
        .map_err(query_err("listing runs"))?;
    rows.iter().map(run_from_row).collect()
}

/// The newest unfinished run of a group: the one a held lock belongs to, or
/// the one to resume.
pub async fn unfinished_run(client: &Client, group: &str) -> Result<Option<RunRecord>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {RUN_COLUMNS} FROM hubshift.runs
                 WHERE grp = $1 AND state <> ALL($2)
                 ORDER BY created_at DESC LIMIT 1"
            ),
            &[&group, &finished_states()],
        )
        .await
        .map_err(query_err("looking for unfinished runs"))?;
    row.as_ref().map(run_from_row).transpose()
}

/// The states of runs that are over, as the journal stores them.
fn finished_states() -> Vec<&'static str> {
    RunState::ALL
        .iter()
        .filter(|s| s.is_finished())
        .map(|s| s.as_str())
        .collect()
}

/// How long the group's newest finished upgrade took, start to end: a
/// better guess of its next hand-over than the timeouts.
pub async fn last_upgrade_ms(client: &Client, group: &str) -> Result<Option<i64>, DbError> {
    let row = client
        .query_opt(
            "SELECT (extract(epoch FROM finished_at - created_at) * 1000)::bigint
             FROM hubshift.runs WHERE grp = $1 AND kind = 'upgrade' AND state = 'done'
               AND finished_at IS NOT NULL
             ORDER BY created_at DESC LIMIT 1",
            &[&group],
        )
        .await
        .map_err(query_err("reading the group's previous run"))?;
    Ok(row.and_then(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_read_back_what_they_write() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
    }

    #[test]
    fn the_journal_texts_stay_as_they_were() {
        // Journals written by earlier versions hold these texts, and CI
        // scripts read them from `--json`: they must not change.
        let runs: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            runs,
            [
                "running",
                "interrupted",
                "done",
                "failed",
                "paused",
                "stopped",
                "abandoned",
                "rolled_back"
            ]
        );
        let steps: Vec<&str> = StepState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(steps, ["pending", "running", "done", "failed"]);
        assert_eq!(finished_states(), ["done", "abandoned", "rolled_back"]);
        assert!(RUN_COLUMNS.contains(&format!("state = '{}'", RunState::Running)));
        assert!(RUN_COLUMNS.contains(&format!("THEN '{}'", RunState::Interrupted)));
        for ddl in [schema::CREATE.to_string(), schema::upgrade_ddl()] {
            assert!(ddl.contains(&format!("DEFAULT '{}'", StepState::Pending)));
        }
    }

    #[test]
    fn an_unknown_state_is_an_error_naming_it() {
        let e = "half_done".parse::<RunState>().unwrap_err();
        assert_eq!(e.kind, "RunState");
        assert!(e.to_string().contains("\"half_done\""), "{e}");
        assert!("DONE".parse::<StepState>().is_err());
    }
}
