//! `hubshift runs`: the journal, for people and pipelines.

use crate::exit::UsageError;
use crate::inventory::Inventory;
use crate::journal;
use crate::output::Output;
use anyhow::Result;

/// Lists runs, or one run's steps.
pub async fn runs(
    out: Output,
    inventory: &Inventory,
    group: Option<&str>,
    run: Option<&str>,
    limit: i64,
) -> Result<()> {
    let db = crate::db::Database::from_inventory(inventory)?;
    let client = db.connect().await?;
    if !journal::exists(&client).await? {
        out.human("No runs yet.");
        return Ok(());
    }
    // Journals written by an older hubshift get this version's columns.
    journal::ensure_schema(&client).await?;
    if let Some(id) = run {
        let record = journal::load_run(&client, id)
            .await?
            .ok_or_else(|| UsageError(format!("no run {id} in the journal")))?;
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
    let list = journal::list_runs(&client, group, limit).await?;
    if list.is_empty() {
        out.human("No runs yet.");
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
        out.record("run", &r, || {
            format!(
                "{}  {:<12} {:<8} {:<8} {from} -> {to}  created {}  updated {}",
                r.id, r.group, r.kind, r.state, r.created_at, r.updated_at
            )
        });
    }
    Ok(())
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
