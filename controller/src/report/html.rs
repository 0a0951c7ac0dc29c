//! The page: the run's facts (versions, backup, who, warnings, the next
//! action), the timeline picture and its numbers as tables — one HTML file
//! with inline CSS and SVG, no script and no font from the network, so it
//! opens offline and can be mailed.

use super::model::Report;
use super::svg::{dur, esc, render};
use std::fmt::Write;

const CSS: &str = "body{font:14px sans-serif;margin:16px;color:#222}h1{font-size:20px}\
h2{font-size:16px;margin-top:22px}table{border-collapse:collapse}\
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f5f5f5}\
.state-done{color:#2e7d32}.state-failed{color:#c62828}.warn{color:#e65100}\
.next{background:#fff3e0;padding:6px 10px;border-left:4px solid #ff8f00}\
code{background:#f5f5f5;padding:1px 4px}.pic{overflow-x:auto}";

/// Unix ms as UTC text.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>hubshift run {}</title><style>{CSS}</style></head><body>",
        esc(&r.run)
    );
    let _ = write!(
        h,
        "<h1>Run {} — group {}</h1><table><tr><th>kind</th><td>{}</td></tr><tr><th>state</th><td class=\"state-{}\">{}</td></tr><tr><th>version</th><td>{} → {}</td></tr><tr><th>from</th><td>{}</td></tr><tr><th>to</th><td>{} ({})</td></tr><tr><th>by</th><td>{}</td></tr>",
        esc(&r.run),
        esc(&r.group),
        esc(&r.kind),
        r.state,
        r.state,
        esc(&r.from_version),
        esc(&r.to_version),
        utc(r.start_ms),
        utc(r.end_ms),
        dur(r.end_ms - r.start_ms),
        esc(&r.who.join(", "))
    );
    if let Some(b) = &r.backup {
        let _ = write!(
            h,
            "<tr><th>backup</th><td>{} · {} · sha256 <code>{}</code>{}</td></tr>",
            esc(&b.id),
            b.bytes
                .map_or("size unknown".to_string(), |n| format!("{n} bytes")),
            esc(b.sha256.as_deref().unwrap_or("?")),
            b.path
                .as_deref()
                .map(|p| format!(" · {}", esc(p)))
                .unwrap_or_default()
        );
    }
    if let Some((passed, detail)) = &r.check {
        let _ = write!(
            h,
            "<tr><th>check</th><td class=\"state-{}\">{}: {}</td></tr>",
            if *passed { "done" } else { "failed" },
            if *passed { "passed" } else { "FAILED" },
            esc(detail)
        );
    }
    h.push_str("</table>");
    if let Some(next) = &r.next {
        let _ = write!(
            h,
            "<p class=\"next\">Not finished. Next: <code>{}</code></p>",
            esc(next)
        );
    }
    for w in &r.warnings {
        let _ = write!(h, "<p class=\"warn\">warning: {}</p>", esc(w));
    }
    let _ = write!(h, "<h2>Timeline</h2><div class=\"pic\">{}</div>", render(r));
    h.push_str("<h2>Outage windows</h2><table><tr><th>window</th><th>length</th><th>from</th><th>to</th><th>what</th></tr>");
    for w in &r.windows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            w.window,
            dur(w.duration_ms),
            utc(w.start_ms),
            utc(w.end_ms),
            esc(&w.label)
        );
    }
    h.push_str("</table>");
    if !r.measured.is_empty() {
        h.push_str("<h2>Measured data gaps</h2><table><tr><th>length</th><th>from</th><th>to</th><th>nodes</th></tr>");
        for g in &r.measured {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} → {}</td></tr>",
                dur(g.end_ms - g.start_ms),
                utc(g.start_ms),
                utc(g.end_ms),
                esc(&g.from),
                esc(&g.to)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Steps</h2><table><tr><th>#</th><th>step</th><th>node</th><th>outcome</th><th>started (UTC)</th><th>took</th></tr>");
    for s in &r.steps {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            s.index,
            esc(&s.name),
            esc(&s.node),
            esc(&s.outcome),
            s.error
                .as_deref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default(),
            utc(s.start_ms).get(11..).unwrap_or_default(),
            dur(s.end_ms - s.start_ms)
        );
    }
    h.push_str("</table><h2>Events</h2><table><tr><th>when</th><th>what</th></tr>");
    for m in &r.markers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            utc(m.at_ms),
            esc(&m.label)
        );
    }
    h.push_str("</table><p><small>Times are the database server's clock (UTC), as the journal records them.</small></p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_reads_as_calendar_time() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(utc(1_796_551_810_123), "2026-12-06 10:10:10.123Z");
    }
}
