//! What a fleet was asked to do, recorded in every member's database so
//! that it can be resumed or stopped from any machine that reaches one.

use super::databases::each;
use crate::exit::{Refused, UsageError};
use crate::inventory::Group;
use crate::journal::{self, RunRecord};
use crate::run::Site;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_postgres::Client;

/// How a fleet goes about its groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetPolicy {
    /// Groups upgraded at once.
    pub parallel: u16,
    /// Upgraded first and alone, then watched for `soak_ms`.
    pub canary: Option<String>,
    /// How long the canary must stay healthy.
    pub soak_ms: u64,
    /// Failed groups tolerated before no new group starts.
    pub max_failed: u32,
    /// Groups that fail preflight are skipped instead of refusing the fleet.
    pub skip_unready: bool,
    /// A group outside its maintenance window is waited for in the process
    /// (otherwise it is parked, and the fleet exits 4 once the others end).
    #[serde(default)]
    pub wait_for_window: bool,
}

/// What a fleet was asked to do, as every member's journal records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSpec {
    /// Member groups, in the order they are taken.
    pub groups: Vec<String>,
    /// Target version.
    pub version: String,
    /// Runtime archive digest.
    pub runtime_sha256: String,
    /// Its size.
    pub runtime_bytes: u64,
    /// Where it was read from.
    pub runtime_file: String,
    /// `--pause-before` steps for every group.
    pub pause_before: Vec<String>,
    /// `--allow-downgrade` for every group.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// The policy.
    pub policy: FleetPolicy,
}

/// Writes the fleet record into every member's database, on the
/// connection `open` holds for a group's (its journal current) where there
/// is one.
pub(super) async fn record_fleet(
    site: &Site,
    members: &[Group],
    open: &HashMap<String, &Client>,
    fleet: &str,
    spec: &FleetSpec,
    action: &str,
) -> Result<()> {
    let spec_json = serde_json::to_value(spec)?;
    let audit = crate::audit::entry(action);
    let (spec_json, audit) = (&spec_json, &audit);
    let written = each(site.distinct_databases_among(members), |(g, db)| async move {
        if let Some(client) = open.get(&g.name) {
            journal::create_fleet(client, fleet, spec_json, audit).await?;
            return Ok(());
        }
        match db?.connect().await {
            Ok(client) => {
                journal::ensure_schema(&client).await?;
                journal::create_fleet(&client, fleet, spec_json, audit).await?;
            }
            // Preflight reached it; a member skipped as unready may not be.
            Err(e) => {
                tracing::warn!(group = %g.name, error = %e, "fleet not recorded in this group's database")
            }
        }
        Ok::<(), anyhow::Error>(())
    })
    .await;
    written.into_iter().collect()
}

/// Finds a fleet's record in the inventory's databases (the first group's
/// that holds it).
pub(super) async fn find_fleet(site: &Site, fleet: &str) -> Result<journal::FleetRecord> {
    let looked = each(site.distinct_databases(), |(g, db)| async move {
        let client = match db?.connect().await {
            Ok(client) => client,
            Err(e) => return Ok(Err(format!("group {}: {e}", g.name))),
        };
        if !journal::exists(&client).await? {
            return Ok(Ok(None));
        }
        journal::ensure_schema(&client).await?;
        Ok::<_, anyhow::Error>(Ok(journal::load_fleet(&client, fleet).await?))
    })
    .await;
    let mut unreachable = Vec::new();
    for found in looked {
        match found? {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => unreachable.push(e),
        }
    }
    if !unreachable.is_empty() {
        return Err(Refused(format!(
            "fleet {fleet} is in no reachable journal, and some databases could not be reached: {}",
            unreachable.join("; ")
        ))
        .into());
    }
    Err(UsageError(format!(
        "no fleet {fleet} in the journals (see `hubshift runs`)"
    ))
    .into())
}

/// The member groups of a fleet and each one's newest run in it.
pub(super) async fn member_runs(
    site: &Site,
    spec: &FleetSpec,
    fleet: &str,
) -> Result<Vec<(Group, std::result::Result<Option<RunRecord>, String>)>> {
    let mut members = Vec::new();
    for name in &spec.groups {
        let g = site
            .inventory
            .group(name)
            .map_err(|e| UsageError(format!("fleet {fleet} has group {name}, but: {e}")))?
            .clone();
        let db = site.database(&g)?;
        members.push((g, db));
    }
    Ok(each(members, |(g, db)| async move {
        let run = match db.connect().await {
            Ok(client) => match journal::exists(&client).await {
                Ok(true) => journal::fleet_run(&client, fleet, &g.name)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(false) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        (g, run)
    })
    .await)
}

pub(super) fn read_spec(record: &journal::FleetRecord) -> Result<FleetSpec> {
    serde_json::from_value(record.spec.clone())
        .context("the journal's fleet record cannot be read by this version")
}
