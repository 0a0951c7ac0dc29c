//! The picture: one lane per node (its state and version over time), the
//! measured data gaps when given, the steps as bars, the outage windows
//! shaded across everything and labelled with their lengths, markers for
//! starts, resumes, stops and fallbacks — one SVG with its own style, no
//! script and no font from anywhere.

use super::axis::Axis;
use super::model::Report;
use std::fmt::Write;

const WIDTH: f64 = 1200.0;
const X0: f64 = 170.0;
const PLOT: f64 = WIDTH - X0 - 20.0;
const LANE_H: f64 = 26.0;
const STEP_H: f64 = 15.0;

const STYLE: &str = "text{font:12px sans-serif;fill:#222}.small{font-size:10px;fill:#555}\
.head{font-weight:bold}.seg{stroke:#fff;stroke-width:.5}\
.s-active{fill:#2e7d32}.s-standby{fill:#64b5f6}.s-starting{fill:#ffb74d}\
.s-stopped{fill:#bdbdbd}.s-exited{fill:#9e9e9e}.s-frozen{fill:#7e57c2}.s-unreachable{fill:#e57373}\
.s-unknown{fill:#e0e0e0}.seg-text{font-size:10px;fill:#fff;pointer-events:none}\
.o-done{fill:#546e7a}.o-failed{fill:#c62828}.o-unfinished{fill:#ff8f00}\
.win{fill:#d32f2f;fill-opacity:.13;stroke:#d32f2f;stroke-opacity:.5}\
.window-label{font-size:11px;fill:#b71c1c;font-weight:bold}\
.gap{fill:#000;fill-opacity:.75}.gap-label{font-size:10px;fill:#000}\
.idle{fill:#f5f5f5;stroke:#9e9e9e;stroke-dasharray:3 3}.idle-label{font-size:10px;fill:#616161}\
.mark{stroke:#37474f;stroke-dasharray:4 3}.grid{stroke:#eee}";

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A length as a person reads it: 850 ms, 3.25 s, 4 min 12 s, 2 h 5 min.
pub fn dur(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.2} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// Every time something changes, for the axis to keep linear around.
fn events(r: &Report) -> Vec<u64> {
    let mut t: Vec<u64> = Vec::new();
    for l in &r.lanes {
        t.extend(l.segments.iter().map(|s| s.start_ms));
    }
    t.extend(r.steps.iter().flat_map(|s| [s.start_ms, s.end_ms]));
    t.extend(r.windows.iter().flat_map(|w| [w.start_ms, w.end_ms]));
    t.extend(r.markers.iter().map(|m| m.at_ms));
    t.extend(r.measured.iter().flat_map(|g| [g.start_ms, g.end_ms]));
    t
}

/// Draws the report.
pub fn render(r: &Report) -> String {
    let start = r
        .measured
        .iter()
        .map(|g| g.start_ms)
        .fold(r.start_ms, u64::min);
    let end = r.measured.iter().map(|g| g.end_ms).fold(r.end_ms, u64::max);
    let axis = Axis::new(start, end, &events(r), X0, PLOT);
    // Rows: the steps by plan position.
    let mut rows: Vec<(usize, String, String)> = Vec::new();
    for s in &r.steps {
        if !rows.iter().any(|x| x.0 == s.index) {
            rows.push((s.index, s.name.clone(), s.node.clone()));
        }
    }
    rows.sort_by_key(|x| x.0);
    let lanes_y = 80.0;
    let measured_rows = if r.measured.is_empty() { 0.0 } else { 1.0 };
    let steps_y = lanes_y + (r.lanes.len() as f64 + measured_rows) * (LANE_H + 6.0) + 22.0;
    let plot_bottom = steps_y + rows.len() as f64 * STEP_H + 4.0;
    let marks_y = plot_bottom + 16.0;
    let height = marks_y + r.markers.len() as f64 * 14.0 + 10.0;

    let mut s = String::with_capacity(4096 + 200 * (r.steps.len() + r.lanes.len() * 8));
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif"><style>{STYLE}</style>"#
    );
    let _ = write!(
        s,
        r#"<text class="head" x="8" y="18">{} · group {} · {} → {} · {}</text>"#,
        esc(&r.run),
        esc(&r.group),
        esc(&r.from_version),
        esc(&r.to_version),
        r.state
    );
    // Axis: ticks in the linear stretches, labels for the squeezed ones.
    let (_, ticks) = axis.ticks(start, 12);
    for (t, x) in &ticks {
        let _ = write!(
            s,
            r#"<line class="grid" x1="{x:.1}" y1="44" x2="{x:.1}" y2="{plot_bottom:.0}"/><text class="small" x="{x:.1}" y="40" text-anchor="middle">+{}</text>"#,
            dur(t - start)
        );
    }
    for p in axis.pieces.iter().filter(|p| p.compressed) {
        let _ = write!(
            s,
            r#"<g class="idle"><rect class="idle" x="{:.1}" y="44" width="{:.1}" height="{:.0}"/><text class="idle-label" x="{:.1}" y="56" text-anchor="middle">⋯ {} ⋯</text></g>"#,
            p.x0,
            p.x1 - p.x0,
            plot_bottom - 44.0,
            (p.x0 + p.x1) / 2.0,
            esc(&dur(p.end_ms - p.start_ms))
        );
    }
    // Lanes.
    let mut y = lanes_y;
    for lane in &r.lanes {
        let _ = write!(
            s,
            r#"<g class="lane" data-node="{0}"><text class="head" x="8" y="{1:.0}">{0}</text>"#,
            esc(&lane.node),
            y + 17.0
        );
        let mut last_version = "";
        for seg in &lane.segments {
            let (x0, x1) = (axis.x(seg.start_ms), axis.x(seg.end_ms));
            let w = (x1 - x0).max(0.5);
            let _ = write!(
                s,
                r#"<rect class="seg s-{}" x="{x0:.1}" y="{y:.0}" width="{w:.1}" height="{LANE_H}"><title>{} {} {} +{}</title></rect>"#,
                esc(&seg.state),
                esc(&lane.node),
                esc(&seg.state),
                esc(&seg.version),
                dur(seg.start_ms - start)
            );
            let label = if seg.version != last_version {
                format!("{} {}", seg.state, seg.version)
            } else {
                seg.state.clone()
            };
            if w > 7.0 * label.len() as f64 {
                let _ = write!(
                    s,
                    r#"<text class="seg-text" x="{:.1}" y="{:.0}">{}</text>"#,
                    x0 + 3.0,
                    y + 17.0,
                    esc(&label)
                );
            }
            last_version = &seg.version;
        }
        s.push_str("</g>");
        y += LANE_H + 6.0;
    }
    if !r.measured.is_empty() {
        let _ = write!(
            s,
            r#"<g class="measured"><text class="head" x="8" y="{:.0}">data gaps</text><text class="small" x="8" y="{:.0}">(measured)</text>"#,
            y + 12.0,
            y + 24.0
        );
        for g in &r.measured {
            let (x0, x1) = (axis.x(g.start_ms), axis.x(g.end_ms));
            let _ = write!(
                s,
                r#"<rect class="gap" x="{x0:.1}" y="{:.0}" width="{:.1}" height="{:.0}"><title>no data {} ({} → {})</title></rect><text class="gap-label" x="{x0:.1}" y="{:.0}">gap {}</text>"#,
                y + 4.0,
                (x1 - x0).max(1.0),
                LANE_H - 14.0,
                dur(g.end_ms - g.start_ms),
                esc(&g.from),
                esc(&g.to),
                y + LANE_H + 2.0,
                dur(g.end_ms - g.start_ms)
            );
        }
        s.push_str("</g>");
    }
    // Steps.
    let _ = write!(
        s,
        r#"<text class="head" x="8" y="{:.0}">steps</text>"#,
        steps_y - 6.0
    );
    for bar in &r.steps {
        let row = rows.iter().position(|x| x.0 == bar.index).unwrap_or(0) as f64;
        let by = steps_y + row * STEP_H;
        let (x0, x1) = (axis.x(bar.start_ms), axis.x(bar.end_ms));
        // A label that would run off the right edge goes left of its bar.
        let flip = x1 + 6.0 * (bar.name.len() as f64 + 14.0) > WIDTH;
        let _ = write!(
            s,
            r#"<g class="step-bar" data-step="{name}"><rect class="o-{o}" x="{x0:.1}" y="{by:.0}" width="{w:.1}" height="{h:.0}"><title>{i}. {name} on {node}: {o} in {d}</title></rect><text class="small" x="{tx:.1}" y="{ty:.0}" text-anchor="{anchor}">{i}. {name} {d}</text></g>"#,
            name = esc(&bar.name),
            o = esc(&bar.outcome),
            w = (x1 - x0).max(2.0),
            h = STEP_H - 3.0,
            i = bar.index,
            node = esc(&bar.node),
            d = dur(bar.end_ms - bar.start_ms),
            tx = if flip { x0 - 3.0 } else { x1 + 3.0 },
            anchor = if flip { "end" } else { "start" },
            ty = by + 10.0,
        );
    }
    for (row, (i, name, node)) in rows.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text class="small" x="8" y="{:.0}">{i}. {} · {}</text>"#,
            steps_y + row as f64 * STEP_H + 10.0,
            esc(name),
            esc(&shorten(node, 12))
        );
    }
    // Windows, over everything.
    for (k, w) in r.windows.iter().enumerate() {
        let (x0, x1) = (axis.x(w.start_ms), axis.x(w.end_ms));
        let _ = write!(
            s,
            r#"<g class="window" data-window="{n}"><rect class="win" x="{x0:.1}" y="60" width="{ww:.1}" height="{hh:.0}"><title>window {n}: {d} ({label})</title></rect><text class="window-label" x="{x0:.1}" y="{ly:.0}">window {n} · {d}</text></g>"#,
            n = w.window,
            ww = (x1 - x0).max(1.0),
            hh = plot_bottom - 60.0,
            d = dur(w.duration_ms),
            label = esc(&w.label),
            ly = if k % 2 == 0 { 58.0 } else { 72.0 },
        );
    }
    // Markers.
    for (i, m) in r.markers.iter().enumerate() {
        let x = axis.x(m.at_ms);
        let ly = marks_y + i as f64 * 14.0;
        let _ = write!(
            s,
            r#"<g class="marker" data-kind="{k}"><line class="mark" x1="{x:.1}" y1="44" x2="{x:.1}" y2="{ly:.0}"/><text class="small" x="{tx:.1}" y="{ly:.0}">▲ {l} (+{d})</text></g>"#,
            k = esc(&m.kind),
            tx = (x + 2.0).min(WIDTH - 320.0),
            l = esc(&m.label),
            d = dur(m.at_ms.saturating_sub(start)),
        );
    }
    s.push_str("</svg>");
    s
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_read_as_a_person_says_them() {
        assert_eq!(dur(850), "850 ms");
        assert_eq!(dur(3_251), "3.25 s");
        assert_eq!(dur(252_000), "4 min 12 s");
        assert_eq!(dur(7_500_000), "2 h 5 min");
        assert_eq!(esc("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }
}
