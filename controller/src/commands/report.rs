//! `hubshift report`: a run (or a fleet) drawn from the journal, as one
//! self-contained HTML page, the SVG picture alone, or the data as JSON.

use crate::exit::UsageError;
use crate::journal;
use crate::output::Output;
use crate::report::fleet::{FleetReport, Row};
use crate::report::model::MeasuredGap;
use crate::report::{self, Format};
use crate::run::{Site, open_run};
use anyhow::{Context, Result};
use std::path::Path;

/// Reads the gaps some other tool measured (a JSON array of
/// `{start_ms, end_ms, from, to}`).
fn read_gaps(path: &Path) -> Result<Vec<MeasuredGap>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read --measured-gaps {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "--measured-gaps {} is not a JSON array of {{start_ms, end_ms, from, to}}: {e}",
            path.display()
        ))
        .into()
    })
}

/// Writes the document to `output`, or to stdout.
fn emit(out: &Output, text: &str, output: Option<&Path>, format: Format, what: &str) -> Result<()> {
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(p) => {
            std::fs::write(p, text)
                .with_context(|| format!("writing the report to {}", p.display()))?;
            out.event(
                "report_written",
                serde_json::json!({ "path": p.display().to_string(), "format": format!("{format:?}").to_lowercase(), "of": what, "bytes": text.len() }),
                || format!("Report of {what} written to {}", p.display()),
            );
            Ok(())
        }
    }
}

/// `hubshift report --run ID` or `--fleet ID`.
pub async fn report(
    out: Output,
    inventory: &Path,
    run: Option<&str>,
    fleet: Option<&str>,
    output: Option<&Path>,
    format: Format,
    measured_gaps: Option<&Path>,
) -> Result<()> {
    let measured = measured_gaps
        .map(read_gaps)
        .transpose()?
        .unwrap_or_default();
    let site = Site::load(inventory)?;
    if let Some(id) = run {
        let open = open_run(&site, id).await?;
        let r = report::load(&open.client, open.record, measured).await?;
        return emit(
            &out,
            &report::render(&r, format),
            output,
            format,
            &format!("run {id}"),
        );
    }
    let Some(id) = fleet else {
        return Err(UsageError("say which: --run ID or --fleet ID".into()).into());
    };
    let mut spec = None;
    let mut rows: Vec<(String, Row)> = Vec::new();
    for (_, db) in site.distinct_databases() {
        let Ok(client) = db?.connect().await else {
            continue;
        };
        if !journal::exists(&client).await? {
            continue;
        }
        journal::ensure_schema(&client).await?;
        let Some(f) = journal::load_fleet(&client, id).await? else {
            continue;
        };
        let members: Vec<String> = f.spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(String::from))
            .collect();
        spec.get_or_insert(members.clone());
        for m in members {
            if rows.iter().any(|(g, r)| *g == m && r.run.is_some()) {
                continue;
            }
            if let Some(rec) = journal::fleet_run(&client, id, &m).await? {
                let r = report::load(&client, rec, vec![]).await?;
                rows.retain(|(g, _)| *g != m);
                rows.push((m.clone(), Row::new(&m, Some(&r))));
            }
        }
    }
    let Some(members) = spec else {
        return Err(UsageError(format!(
            "no fleet {id} in the journals (see `hubshift runs`)"
        ))
        .into());
    };
    let groups = members
        .iter()
        .map(|m| {
            rows.iter()
                .find(|(g, _)| g == m)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| Row::new(m, None))
        })
        .collect();
    let f = FleetReport {
        fleet: id.to_string(),
        groups,
    };
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&f).unwrap_or_default() + "\n",
        Format::Html => report::fleet::page(&f),
        Format::Svg => report::fleet::svg(&f) + "\n",
    };
    emit(&out, &text, output, format, &format!("fleet {id}"))
}
