//! `hubshift report --fleet ID`: one row per group of a fleet — its run,
//! result, versions and outage windows — over one shared time axis.

use super::axis::Axis;
use super::model::{Report, WindowMark};
use super::svg::{dur, esc};
use serde::Serialize;
use std::fmt::Write;

/// One group of a fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// HA group.
    pub group: String,
    /// Its run, if the fleet began one.
    pub run: Option<String>,
    /// The run's state (done, failed, …; `done (check failed)` when the
    /// group's check failed after it), or `not started`.
    pub result: String,
    /// Version before.
    pub from_version: String,
    /// Version after.
    pub to_version: String,
    /// Unix ms of its run's first record.
    pub start_ms: u64,
    /// Unix ms of its last.
    pub end_ms: u64,
    /// Its outage windows.
    pub windows: Vec<WindowMark>,
}

/// A fleet's report.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// Fleet id.
    pub fleet: String,
    /// One per member group, in the fleet's order.
    pub groups: Vec<Row>,
}

impl Row {
    /// A group's row from its run's report, or a group whose run never began.
    pub fn new(group: &str, report: Option<&Report>) -> Row {
        match report {
            Some(r) => Row {
                group: group.to_string(),
                run: Some(r.run.clone()),
                result: match &r.check {
                    Some((false, _)) => format!("{} (check failed)", r.state),
                    _ => r.state.to_string(),
                },
                from_version: r.from_version.clone(),
                to_version: r.to_version.clone(),
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                windows: r.windows.clone(),
            },
            None => Row {
                group: group.to_string(),
                run: None,
                result: "not started".into(),
                from_version: String::new(),
                to_version: String::new(),
                start_ms: 0,
                end_ms: 0,
                windows: vec![],
            },
        }
    }
}

/// The fleet's picture: a row per group, its run and windows shaded.
pub fn svg(f: &FleetReport) -> String {
    let started: Vec<&Row> = f.groups.iter().filter(|r| r.run.is_some()).collect();
    let start = started.iter().map(|r| r.start_ms).min().unwrap_or(0);
    let end = started.iter().map(|r| r.end_ms).max().unwrap_or(start);
    let events: Vec<u64> = started
        .iter()
        .flat_map(|r| {
            let mut t = vec![r.start_ms, r.end_ms];
            t.extend(r.windows.iter().flat_map(|w| [w.start_ms, w.end_ms]));
            t
        })
        .collect();
    let axis = Axis::new(start, end, &events, 170.0, 1000.0);
    let height = 40.0 + f.groups.len() as f64 * 30.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="1200" height="{height:.0}" font-family="sans-serif"><style>text{{font:12px sans-serif}}.run{{fill:#b0bec5}}.win{{fill:#d32f2f;fill-opacity:.7}}.small{{font-size:10px}}</style>"#
    );
    for (i, r) in f.groups.iter().enumerate() {
        let y = 30.0 + i as f64 * 30.0;
        let _ = write!(
            svg,
            r#"<g class="lane" data-group="{0}"><text x="8" y="{1:.0}">{0}</text>"#,
            esc(&r.group),
            y + 14.0
        );
        if r.run.is_some() {
            let (x0, x1) = (axis.x(r.start_ms), axis.x(r.end_ms));
            let _ = write!(
                svg,
                r#"<rect class="run" x="{x0:.1}" y="{y:.0}" width="{:.1}" height="20"/>"#,
                (x1 - x0).max(1.0)
            );
            for w in &r.windows {
                let (a, b) = (axis.x(w.start_ms), axis.x(w.end_ms));
                let _ = write!(
                    svg,
                    r#"<rect class="win" x="{a:.1}" y="{y:.0}" width="{:.1}" height="20"><title>window {} · {}</title></rect>"#,
                    (b - a).max(1.0),
                    w.window,
                    dur(w.duration_ms)
                );
            }
            let _ = write!(
                svg,
                r#"<text class="small" x="{:.1}" y="{:.0}">{}</text>"#,
                (x1 + 4.0).min(1120.0),
                y + 14.0,
                esc(&r.result)
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

/// The fleet's page: the picture and a table.
pub fn page(f: &FleetReport) -> String {
    let svg = svg(f);
    let mut h = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>hubshift fleet {0}</title><style>body{{font:14px sans-serif;margin:16px}}td,th{{border:1px solid #ddd;padding:3px 8px}}table{{border-collapse:collapse}}</style></head><body><h1>Fleet {0}</h1>{svg}<table><tr><th>group</th><th>run</th><th>result</th><th>version</th><th>windows</th></tr>",
        esc(&f.fleet)
    );
    for r in &f.groups {
        let windows: Vec<String> = r
            .windows
            .iter()
            .map(|w| format!("{}: {}", w.window, dur(w.duration_ms)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td></tr>",
            esc(&r.group),
            esc(r.run.as_deref().unwrap_or("")),
            esc(&r.result),
            esc(&r.from_version),
            esc(&r.to_version),
            esc(&windows.join(", "))
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_group_with_its_windows() {
        let w = WindowMark {
            window: 1,
            start_ms: 2_000,
            end_ms: 5_000,
            duration_ms: 3_000,
            label: String::new(),
        };
        let f = FleetReport {
            fleet: "F1".into(),
            groups: vec![
                Row {
                    group: "plant-1".into(),
                    run: Some("r1".into()),
                    result: "done".into(),
                    from_version: "4.1.0".into(),
                    to_version: "4.2.0".into(),
                    start_ms: 1_000,
                    end_ms: 9_000,
                    windows: vec![w],
                },
                Row::new("plant-2", None),
            ],
        };
        let p = page(&f);
        assert_eq!(p.matches("<g class=\"lane\"").count(), 2);
        assert!(p.contains("1: 3.00 s"));
        assert!(p.contains("not started"));
    }
}
