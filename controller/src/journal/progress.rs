//! A run's progress as it executes: each step's start, end, failure and
//! reset, and what the run observed (its timeline). These are the
//! statements a run repeats; they are prepared once per connection
//! ([`Prepared`]) and a step's start and end are one statement each.

use super::{Prepared, RunState, StepState, touch};
use crate::db::{DbError, query_err};
use crate::timeline::{Kind, Observation};
use serde_json::Value;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// The run's observations, the JSON array of parameter `$array` unpacked
/// in order: the part of a statement that adds them.
macro_rules! insert_observations {
    ($array:literal) => {
        concat!(
            "INSERT INTO hubshift.observations (run_id, at_ms, node, kind, details)
             SELECT $1, (o->>'at_ms')::bigint, o->>'node', o->>'kind', o->'details'
             FROM jsonb_array_elements(",
            $array,
            "::jsonb) WITH ORDINALITY AS t(o, n) ORDER BY n"
        )
    };
}

/// A step's start, with what the run observed since the last write, in
/// one statement: the step and its run marked running, the observations
/// added.
pub async fn step_begun(
    client: &Client,
    prepared: &Prepared,
    run: &str,
    idx: usize,
    observations: &[Observation],
) -> Result<(), DbError> {
    let sql = concat!(
        "WITH step AS (
             UPDATE hubshift.steps SET state = $3, attempts = attempts + 1,
                    started_at = now(), finished_at = NULL, error = NULL
             WHERE run_id = $1 AND idx = $2),
         seen AS (",
        insert_observations!("$5"),
        ")
         UPDATE hubshift.runs SET state = $4, updated_at = now() WHERE id = $1"
    );
    let params: [&(dyn ToSql + Sync); 5] = [
        &run,
        &(idx as i32),
        &StepState::Running.as_str(),
        &RunState::Running.as_str(),
        &observation_rows(observations),
    ];
    prepared
        .execute(client, sql, &params)
        .await
        .map_err(query_err("journaling a step start"))?;
    Ok(())
}

/// A step's end in one statement, all or nothing: the run's facts, the
/// step done with what it observed, and the run's observations since the
/// last write. (Facts and the step's end apart, a controller killed between
/// them could leave a step done without the facts it found.) Returns
/// whether a stop is asked for (`hubshift stop`), read under the run row's
/// lock the statement holds: the executor's check before the next step,
/// without a round trip of its own. The request stays until the run parks
/// on it ([`super::take_stop_request`]).
pub async fn step_ended(
    client: &Client,
    prepared: &Prepared,
    run: &str,
    idx: usize,
    detail: &Value,
    facts: &Value,
    observations: &[Observation],
) -> Result<bool, DbError> {
    let sql = concat!(
        "WITH step AS (
             UPDATE hubshift.steps SET state = $4, finished_at = now(), detail = $3
             WHERE run_id = $1 AND idx = $2),
         seen AS (",
        insert_observations!("$6"),
        ")
         UPDATE hubshift.runs SET facts = facts || $5, updated_at = now() WHERE id = $1
         RETURNING stop_requested"
    );
    let params: [&(dyn ToSql + Sync); 6] = [
        &run,
        &(idx as i32),
        detail,
        &StepState::Done.as_str(),
        facts,
        &observation_rows(observations),
    ];
    let row = prepared
        .query_one(client, sql, &params)
        .await
        .map_err(query_err("journaling a step end"))?;
    Ok(row.get(0))
}

/// Marks a step failed; the error text must already be redacted.
pub async fn step_failed(
    client: &Client,
    prepared: &Prepared,
    run: &str,
    idx: usize,
    error: &str,
) -> Result<(), DbError> {
    prepared
        .execute(
            client,
            "UPDATE hubshift.steps SET state = $4, finished_at = now(), error = $3
             WHERE run_id = $1 AND idx = $2",
            &[&run, &(idx as i32), &error, &StepState::Failed.as_str()],
        )
        .await
        .map_err(query_err("journaling a step failure"))?;
    touch(client, run, RunState::Failed).await
}

/// Puts steps `from..` back to pending: after a fallback undid them (the
/// primary was started again), a resume must do them again.
pub async fn reset_steps(client: &Client, run: &str, from: usize) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE hubshift.steps SET state = $3, finished_at = NULL
             WHERE run_id = $1 AND idx >= $2",
            &[&run, &(from as i32), &StepState::Pending.as_str()],
        )
        .await
        .map_err(query_err("journaling a fallback"))?;
    Ok(())
}

/// Appends a run's observations, in their order, in one statement.
pub async fn add_observations(
    client: &Client,
    prepared: &Prepared,
    run: &str,
    observations: &[Observation],
) -> Result<(), DbError> {
    if observations.is_empty() {
        return Ok(());
    }
    prepared
        .execute(
            client,
            insert_observations!("$2"),
            &[&run, &observation_rows(observations)],
        )
        .await
        .map_err(query_err("journaling what the run observed"))?;
    Ok(())
}

/// Observations as the JSON array the journal's statements unpack.
fn observation_rows(observations: &[Observation]) -> Value {
    Value::Array(
        observations
            .iter()
            .map(|o| {
                serde_json::json!({
                    "at_ms": o.at_ms, "node": o.node, "kind": o.kind.as_str(), "details": o.details,
                })
            })
            .collect(),
    )
}

/// A run's observations in the order they were made (kinds this version
/// does not know are left out).
pub async fn load_observations(client: &Client, run: &str) -> Result<Vec<Observation>, DbError> {
    let rows = client
        .query(
            "SELECT at_ms, node, kind, details FROM hubshift.observations
             WHERE run_id = $1 ORDER BY at_ms, seq",
            &[&run],
        )
        .await
        .map_err(query_err("reading what the run observed"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let kind: String = r.get(2);
            let at_ms: i64 = r.get(0);
            Some(Observation {
                at_ms: u64::try_from(at_ms).ok()?,
                node: r.get(1),
                kind: Kind::parse(&kind)?,
                details: r.get(3),
            })
        })
        .collect())
}
