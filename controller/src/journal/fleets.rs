//! The fleets table: one record per fleet in every member's database, its
//! stop request and the groups parked for their maintenance window.

use super::{RUN_COLUMNS, RunRecord, run_from_row};
use crate::db::{DbError, query_err};
use serde_json::Value;
use tokio_postgres::Client;

/// A fleet as one member group's database records it (every member's
/// database holds the same record, so any reachable one can resume it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetRecord {
    /// Fleet id.
    pub id: String,
    /// Groups, version, archive, policy.
    pub spec: Value,
    /// `hubshift stop --fleet` asked it to start no more groups.
    pub stop_requested: bool,
    /// Who started and resumed it.
    pub audit: Value,
    /// When it was created (UTC text).
    pub created_at: String,
    /// Groups waiting for their maintenance window: group → `opens`,
    /// `window`.
    pub parked: Value,
}

const FLEET_COLUMNS: &str = "id, spec, stop_requested, audit,
    to_char(created_at AT TIME ZONE 'utc', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), parked";

fn fleet_from_row(row: &tokio_postgres::Row) -> FleetRecord {
    FleetRecord {
        id: row.get(0),
        spec: row.get(1),
        stop_requested: row.get(2),
        audit: row.get(3),
        created_at: row.get(4),
        parked: row.get(5),
    }
}

/// Journals `group` of `fleet` as waiting for its window (`Some`), or no
/// longer (`None`).
pub async fn set_fleet_parked(
    client: &Client,
    fleet: &str,
    group: &str,
    parked: Option<&Value>,
) -> Result<(), DbError> {
    let sql = match parked {
        Some(_) => {
            "UPDATE hubshift.fleets SET parked = parked || jsonb_build_object($2::text, $3::jsonb) WHERE id = $1"
        }
        None => {
            "UPDATE hubshift.fleets SET parked = parked - $2::text WHERE id = $1 AND $3::jsonb IS NULL"
        }
    };
    client
        .execute(sql, &[&fleet, &group, &parked])
        .await
        .map_err(query_err("journaling a group parked for its window"))?;
    Ok(())
}

/// A new fleet id, from the database's clock.
pub async fn new_fleet_id(client: &Client) -> Result<String, DbError> {
    let row = client
        .query_one(
            "SELECT 'F' || to_char(now() AT TIME ZONE 'utc', 'YYYYMMDD\"T\"HH24MISS') || '-' ||
                    substr(md5(random()::text || clock_timestamp()::text), 1, 6)",
            &[],
        )
        .await
        .map_err(query_err("making a fleet id"))?;
    Ok(row.get(0))
}

/// Records a fleet (idempotent: a database shared by several members holds
/// it once).
pub async fn create_fleet(
    client: &Client,
    id: &str,
    spec: &Value,
    audit: &Value,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO hubshift.fleets (id, spec, audit) VALUES ($1, $2, jsonb_build_array($3::jsonb))
             ON CONFLICT (id) DO NOTHING",
            &[&id, spec, audit],
        )
        .await
        .map_err(query_err("recording the fleet"))?;
    Ok(())
}

/// A fleet by id.
pub async fn load_fleet(client: &Client, id: &str) -> Result<Option<FleetRecord>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {FLEET_COLUMNS} FROM hubshift.fleets WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(query_err("reading the fleet"))?;
    Ok(row.as_ref().map(fleet_from_row))
}

/// Fleets, newest first.
pub async fn list_fleets(client: &Client, limit: i64) -> Result<Vec<FleetRecord>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {FLEET_COLUMNS} FROM hubshift.fleets ORDER BY created_at DESC LIMIT $1"
            ),
            &[&limit],
        )
        .await
        .map_err(query_err("listing fleets"))?;
    Ok(rows.iter().map(fleet_from_row).collect())
}

/// Sets or clears a fleet's stop request and adds an audit entry.
pub async fn set_fleet_stop(
    client: &Client,
    id: &str,
    stop: bool,
    audit: &Value,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE hubshift.fleets SET stop_requested = $2, audit = audit || jsonb_build_array($3::jsonb)
             WHERE id = $1",
            &[&id, &stop, audit],
        )
        .await
        .map_err(query_err("journaling the fleet's stop request"))?;
    Ok(())
}

/// Whether `hubshift stop --fleet` asked the fleet to start no more groups.
pub async fn fleet_stop_requested(client: &Client, id: &str) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "SELECT stop_requested FROM hubshift.fleets WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(query_err("reading the fleet's stop request"))?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// The newest run of `group` in `fleet`, if the fleet began it.
pub async fn fleet_run(
    client: &Client,
    fleet: &str,
    group: &str,
) -> Result<Option<RunRecord>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {RUN_COLUMNS} FROM hubshift.runs
                 WHERE grp = $2 AND facts->>'fleet' = $1 AND kind = 'upgrade'
                 ORDER BY created_at DESC LIMIT 1"
            ),
            &[&fleet, &group],
        )
        .await
        .map_err(query_err("reading the fleet's runs"))?;
    row.as_ref().map(run_from_row).transpose()
}
