//! `hubshift runs`: the journals of every group's database, for people
//! and pipelines: fleets, runs, one run's steps, one fleet's groups.

use crate::exit::{Refused, UsageError};
use crate::journal::{self, FleetRecord, RunRecord, RunState};
use crate::output::Output;
use crate::run::{Site, open_run};
use anyhow::Result;
use std::path::Path;

/// Every reachable journal's fleets and runs (newest first); the
/// databases that could not be read are reported, not fatal.
async fn read_journals(
    out: &Output,
    site: &Site,
    group: Option<&str>,
    limit: i64,
) -> Result<(Vec<FleetRecord>, Vec<RunRecord>, Vec<String>)> {
    let mut fleets: Vec<FleetRecord> = Vec::new();
    let mut runs = Vec::new();
    let mut unreadable = Vec::new();
    for (g, db) in site.distinct_databases() {
        let db = db?;
        let client = match db.connect().await {
            Ok(c) => c,
            Err(e) => {
                out.event(
                    "journal_unreachable",
                    serde_json::json!({ "group": g.name, "error": e.to_string() }),
                    || {
                        format!(
                            "warning: the journal of group {} cannot be read: {e}",
                            g.name
                        )
                    },
                );
                unreadable.push(format!("group {}: {e}", g.name));
                continue;
            }
        };
        if !journal::exists(&client).await? {
            continue;
        }
        // Journals written by an older hubshift get this version's columns.
        journal::ensure_schema(&client).await?;
        for f in journal::list_fleets(&client, limit).await? {
            if !fleets.iter().any(|x| x.id == f.id) {
                fleets.push(f);
            }
        }
        for r in journal::list_runs(&client, group, limit).await? {
            if !runs.iter().any(|x: &RunRecord| x.id == r.id) {
                runs.push(r);
            }
        }
    }
    fleets.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    runs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    runs.truncate(usize::try_from(limit).unwrap_or(0));
    fleets.truncate(usize::try_from(limit).unwrap_or(0));
    if unreadable.len() == site.distinct_databases().len() {
        return Err(Refused(format!(
            "no journal could be read: {}",
            unreadable.join("; ")
        ))
        .into());
    }
    Ok((fleets, runs, unreadable))
}

/// Lists fleets and runs, or one run's steps, or one fleet's groups.
pub async fn runs(
    out: Output,
    inventory: &Path,
    group: Option<&str>,
    run: Option<&str>,
    fleet: Option<&str>,
    limit: i64,
) -> Result<()> {
    if let Some(id) = run {
        let open = open_run(&Site::load(inventory)?, id).await?;
        let client = open.client;
        let record = open.record;
        out.record("run", &record, || {
            format!(
                "run {} group {} {} state {} created {}\nby: {}\nfacts: {}",
                record.id,
                record.group,
                record.kind,
                record.state,
                record.created_at,
                audit_line(&record.audit),
                record.facts
            )
        });
        for s in journal::load_steps(&client, id).await? {
            out.record("run_step", &s, || {
                format!(
                    "  {:>2}. {:<8} {:<18} {:<14} {}{}",
                    s.idx + 1,
                    s.state,
                    s.step.name(),
                    s.step.node(),
                    s.detail,
                    s.error
                        .as_deref()
                        .map(|e| format!(" error: {e}"))
                        .unwrap_or_default()
                )
            });
        }
        return Ok(());
    }
    let site = Site::load(inventory)?;
    if let Some(g) = group {
        site.group(g)?;
    }
    let wide = if fleet.is_some() {
        limit.max(1000)
    } else {
        limit
    };
    let (fleets, list, unreadable) = read_journals(&out, &site, group, wide).await?;
    if let Some(id) = fleet {
        let f = fleets
            .iter()
            .find(|f| f.id == id)
            .ok_or_else(|| UsageError(format!("no fleet {id} among the newest {limit} in the journals (see `hubshift runs`, or raise --limit)")))?;
        out.record("fleet", f, || {
            format!(
                "fleet {} created {} -> {}\nby: {}\npolicy: {}",
                f.id,
                f.created_at,
                f.spec["version"].as_str().unwrap_or("?"),
                audit_line(&f.audit),
                f.spec["policy"]
            )
        });
        let members: Vec<String> = f.spec["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for m in members {
            let r = list
                .iter()
                .find(|r| r.group == m && r.facts["fleet"].as_str() == Some(id));
            match r {
                Some(r) => out.record("fleet_member", r, || {
                    format!(
                        "  {:<16} {:<12} run {}  updated {}",
                        m, r.state, r.id, r.updated_at
                    )
                }),
                None if f.parked.get(&m).is_some() => {
                    let p = &f.parked[&m];
                    let (opens, window) = (
                        p["opens"].as_str().unwrap_or("?"),
                        p["window"].as_str().unwrap_or("?"),
                    );
                    out.event(
                        "fleet_member",
                        serde_json::json!({ "group": m, "state": "parked", "opens": opens, "window": window }),
                        || format!("  {m:<16} parked       waits for its window {window}, which opens {opens}"),
                    )
                }
                None => out.event(
                    "fleet_member",
                    serde_json::json!({ "group": m, "state": "not_begun" }),
                    || format!("  {m:<16} not begun"),
                ),
            }
        }
        return unread(&unreadable);
    }
    if list.is_empty() && fleets.is_empty() {
        out.human("No runs yet.");
    }
    for f in &fleets {
        let members = f.spec["groups"].as_array().map_or(0, Vec::len);
        let done = list
            .iter()
            .filter(|r| {
                r.facts["fleet"].as_str() == Some(f.id.as_str()) && r.state == RunState::Done
            })
            .count();
        out.record("fleet", f, || {
            format!(
                "fleet {}  {} group(s) -> {}  {done} done{}  created {}  (hubshift runs --fleet {})",
                f.id,
                members,
                f.spec["version"].as_str().unwrap_or("?"),
                match f.parked.as_object().map_or(0, |p| p.len()) {
                    0 => String::new(),
                    n => format!(", {n} parked for a window"),
                },
                f.created_at,
                f.id
            )
        });
    }
    for r in list {
        let to = r
            .facts
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let from = r
            .facts
            .get("from_version")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let fleet = r.facts["fleet"]
            .as_str()
            .map(|f| format!("  fleet {f}"))
            .unwrap_or_default();
        out.record("run", &r, || {
            format!(
                "{}  {:<12} {:<8} {:<8} {from} -> {to}  created {}  updated {}{fleet}",
                r.id, r.group, r.kind, r.state, r.created_at, r.updated_at
            )
        });
    }
    unread(&unreadable)
}

/// "upgrade by alice@ci-runner-3 (GITHUB_RUN_ID=42), resume by bob@laptop".
fn audit_line(audit: &serde_json::Value) -> String {
    audit
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let mut s = format!(
                        "{} by {}@{}",
                        e["action"].as_str().unwrap_or("?"),
                        e["user"].as_str().unwrap_or("?"),
                        e["host"].as_str().unwrap_or("?")
                    );
                    if let Some(job) = e["ci_job"].as_str() {
                        s.push_str(&format!(" ({job})"));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Exit 1 when some databases' journals could not be read: the listing
/// above is incomplete.
fn unread(unreadable: &[String]) -> Result<()> {
    if unreadable.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} journal(s) could not be read, the listing is incomplete: {}",
        unreadable.len(),
        unreadable.join("; ")
    )
}
