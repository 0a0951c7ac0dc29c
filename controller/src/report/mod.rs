//! `hubshift report`: a run drawn from its journal — made afterwards, from
//! any machine, also for a run interrupted and resumed by another
//! controller. `model` folds the journal's rows into the report (pure),
//! `axis` lays out time, `svg` draws it, `html` makes the page around it,
//! `fleet` puts one row per group of a fleet.

pub mod axis;
pub mod fleet;
pub mod html;
pub mod model;
pub mod svg;

use crate::db::DbError;
use crate::journal::{self, RunRecord};
use model::{Input, MeasuredGap, Report};
use tokio_postgres::Client;

/// What `hubshift report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One self-contained page: facts, picture, tables.
    Html,
    /// The picture alone.
    Svg,
    /// The report's data.
    Json,
}

/// Reads a run's steps and observations and makes its report.
pub async fn load(
    client: &Client,
    run: RunRecord,
    measured: Vec<MeasuredGap>,
) -> Result<Report, DbError> {
    let steps = journal::load_steps(client, &run.id).await?;
    let observations = journal::load_observations(client, &run.id).await?;
    Ok(model::build(&Input {
        run,
        steps,
        observations,
        measured,
    }))
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Html => html::page(report),
        Format::Svg => svg::render(report) + "\n",
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::model::tests::{node, obs, run_record, step};
    use super::*;
    use crate::journal::RunState;
    use crate::timeline::Kind;
    use serde_json::json;

    /// A three-node run (hub-a primary; hub-b, hub-c secondaries): the
    /// first takeover failed and fell back, a stop parked the run, another
    /// person resumed it and it finished.
    fn three_nodes_fallback_resume() -> Input {
        let t = 1_796_551_810_000;
        let mut o = vec![
            node(t, "hub-a", "active", "4.1.0"),
            node(t, "hub-b", "standby", "4.1.0"),
            node(t, "hub-c", "standby", "4.1.0"),
        ];
        for (i, n) in ["hub-a", "hub-b", "hub-c"].iter().enumerate() {
            o.push(step(t + 10, n, Kind::StepStarted, i, "stage_runtime"));
            o.push(step(t + 900, n, Kind::StepDone, i, "stage_runtime"));
        }
        o.push(step(
            t + 1_000,
            "hub-a",
            Kind::StepStarted,
            3,
            "stop_primary",
        ));
        o.push(node(t + 1_300, "hub-a", "stopped", "4.1.0"));
        o.push(step(t + 1_300, "hub-a", Kind::StepDone, 3, "stop_primary"));
        o.push(step(
            t + 1_300,
            "hub-b,hub-c",
            Kind::StepStarted,
            4,
            "await_takeover",
        ));
        o.push(node(t + 2_000, "hub-b", "frozen", "4.1.0"));
        o.push(node(t + 3_000, "hub-a", "active", "4.1.0"));
        o.push(obs(
            t + 3_000,
            "hub-a",
            Kind::Fallback,
            json!({ "lost_ms": t + 1_000, "active_ms": t + 3_000 }),
        ));
        o.push(obs(
            t + 3_050,
            "hub-b,hub-c",
            Kind::StepFailed,
            json!({ "idx": 4, "name": "await_takeover", "error": "hub-b frozen; fell back" }),
        ));
        // Resumed by another person an hour later; stopped on request once.
        let r = t + 3_600_000;
        o.push(node(r, "hub-b", "standby", "4.1.0"));
        o.push(step(r + 100, "hub-a", Kind::StepStarted, 3, "stop_primary"));
        o.push(node(r + 400, "hub-a", "stopped", "4.1.0"));
        o.push(step(r + 400, "hub-a", Kind::StepDone, 3, "stop_primary"));
        o.push(step(
            r + 400,
            "hub-b,hub-c",
            Kind::StepStarted,
            4,
            "await_takeover",
        ));
        o.push(node(r + 3_500, "hub-b", "active", "4.1.0"));
        o.push(step(
            r + 3_500,
            "hub-b,hub-c",
            Kind::StepDone,
            4,
            "await_takeover",
        ));
        o.push(step(r + 3_600, "hub-a", Kind::StepStarted, 5, "backup"));
        o.push(step(r + 4_600, "hub-a", Kind::StepDone, 5, "backup"));
        o.push(obs(
            r + 4_700,
            "",
            Kind::Parked,
            json!({ "state": "stopped", "before_step": 7, "name": "drop_schema" }),
        ));
        let q = r + 60_000;
        o.push(step(
            q + 100,
            "database",
            Kind::StepStarted,
            6,
            "drop_schema",
        ));
        o.push(step(q + 200, "database", Kind::StepDone, 6, "drop_schema"));
        o.push(step(
            q + 300,
            "hub-a",
            Kind::StepStarted,
            7,
            "create_and_start",
        ));
        o.push(node(q + 400, "hub-a", "starting", "4.2.0"));
        o.push(node(q + 500, "hub-b", "stopped", "4.1.0"));
        o.push(node(q + 500, "hub-c", "stopped", "4.1.0"));
        o.push(node(q + 2_300, "hub-a", "active", "4.2.0"));
        o.push(step(
            q + 2_300,
            "hub-a",
            Kind::StepDone,
            7,
            "create_and_start",
        ));
        o.push(node(q + 6_000, "hub-b", "standby", "4.2.0"));
        o.push(node(q + 6_500, "hub-c", "standby", "4.2.0"));
        let facts = json!({
            "version": "4.2.0", "from_version": "4.1.0",
            "primary_stopped_ms": r + 100, "takeover_ms": r + 3_500, "takeover_node": "hub-b",
            "secondaries_down_ms": q + 400, "primary_active_ms": q + 2_300,
            "backup_id": "run-hub-a-2", "backup_sha256": "9f86d08", "backup_bytes": 123_456,
            "earlier_windows": [
                { "window": 1, "start_ms": t + 1_000, "end_ms": t + 3_000, "duration_ms": 2_000 },
                { "window": 3, "start_ms": t + 1_000, "end_ms": t + 3_000, "duration_ms": 2_000 },
            ],
            "warnings": ["hub-b was frozen at the first takeover"],
        });
        let audit = json!([
            { "action": "upgrade", "user": "ana", "host": "ctl-1", "ci_job": null, "at_ms": t },
            { "action": "resume", "user": "bo", "host": "ctl-2", "ci_job": "GITHUB_RUN_ID=7", "at_ms": r },
            { "action": "stop", "user": "bo", "host": "ctl-2", "ci_job": null, "at_ms": r + 4_000 },
            { "action": "resume", "user": "bo", "host": "ctl-2", "ci_job": null, "at_ms": q },
        ]);
        Input {
            run: run_record(RunState::Done, facts, audit),
            steps: vec![],
            observations: o,
            measured: vec![],
        }
    }

    #[test]
    fn a_three_node_run_with_a_fallback_and_a_resume_reads_right() {
        let r = model::build(&three_nodes_fallback_resume());
        let lanes: Vec<&str> = r.lanes.iter().map(|l| l.node.as_str()).collect();
        assert_eq!(lanes, ["hub-a", "hub-b", "hub-c"]);
        let a: Vec<(&str, &str)> = r.lanes[0]
            .segments
            .iter()
            .map(|s| (s.state.as_str(), s.version.as_str()))
            .collect();
        assert_eq!(
            a,
            [
                ("active", "4.1.0"),
                ("stopped", "4.1.0"),
                ("active", "4.1.0"),
                ("stopped", "4.1.0"),
                ("starting", "4.2.0"),
                ("active", "4.2.0")
            ]
        );
        // The takeover twice: failed by the fallback, then done.
        let takeovers: Vec<&str> = r
            .steps
            .iter()
            .filter(|s| s.name == "await_takeover")
            .map(|s| s.outcome.as_str())
            .collect();
        assert_eq!(takeovers, ["failed", "done"]);
        assert_eq!(r.steps.len(), 3 + 2 * 2 + 3);
        let windows: Vec<(u8, u64)> = r
            .windows
            .iter()
            .map(|w| (w.window, w.duration_ms))
            .collect();
        assert_eq!(windows, [(1, 2_000), (3, 2_000), (1, 3_400), (2, 1_900)]);
        let kinds: Vec<&str> = r.markers.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["upgrade", "fallback", "resume", "stop", "stopped", "resume"]
        );
        let resume = &r.markers[2];
        assert_eq!(resume.who.as_deref(), Some("bo@ctl-2 (GITHUB_RUN_ID=7)"));
        assert_eq!(
            r.who,
            ["ana@ctl-1", "bo@ctl-2 (GITHUB_RUN_ID=7)", "bo@ctl-2"]
        );
        assert_eq!(r.next, None);
        // The page carries every lane, bar and window label; the hour
        // parked is squeezed and labelled.
        let page = html::page(&r);
        assert_eq!(page.matches("<g class=\"lane\"").count(), 3);
        assert_eq!(page.matches("<g class=\"step-bar\"").count(), r.steps.len());
        for label in [
            "window 1 · 2.00 s",
            "window 3 · 2.00 s",
            "window 1 · 3.40 s",
            "window 2 · 1.90 s",
        ] {
            assert!(page.contains(label), "{label}");
        }
        assert!(
            page.contains("class=\"idle\""),
            "the parked hour is squeezed"
        );
        assert!(page.contains("⋯ 59 min"), "and labelled");
        assert!(page.contains("resume by bo@ctl-2"));
        assert!(page.contains("123456 bytes") && page.contains("9f86d08"));
        assert!(!page.contains("<script"), "no script");
        assert!(
            !page.contains("http://") || page.matches("http://").count() == 1,
            "only the SVG namespace"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&r, Format::Json)).unwrap();
        assert_eq!(json["lanes"].as_array().unwrap().len(), 3);
        assert_eq!(json["windows"][3]["window"], 2);
    }

    #[test]
    fn a_run_journaled_before_the_timeline_still_has_its_windows() {
        let facts = json!({ "version": "4.2.0", "from_version": "4.1.0",
                            "primary_stopped_ms": 5_000, "takeover_ms": 8_000 });
        let audit = json!([{ "action": "upgrade", "user": "ana", "host": "h", "ci_job": null, "at_ms": 4_000 }]);
        let r = model::build(&Input {
            run: run_record(RunState::Done, facts, audit),
            steps: vec![],
            observations: vec![],
            measured: vec![],
        });
        assert!(r.lanes.is_empty() && r.steps.is_empty());
        let page = render(&r, Format::Html);
        assert!(page.contains("window 1 · 3.00 s"), "{page}");
        assert!(page.contains("upgrade by ana@h"));
    }

    #[test]
    fn a_thousand_observations_stay_under_300_kb() {
        let mut input = three_nodes_fallback_resume();
        let t = input.observations.last().unwrap().at_ms;
        let mut o = Vec::new();
        let states = ["active", "standby", "stopped", "starting", "unreachable"];
        for i in 0..1000u64 {
            let at = t + 1_000 + i * 700;
            match i % 4 {
                0 | 1 => o.push(node(
                    at,
                    ["hub-a", "hub-b", "hub-c"][(i % 3) as usize],
                    states[(i % 5) as usize],
                    "4.2.0",
                )),
                2 => o.push(step(
                    at,
                    "hub-a",
                    Kind::StepStarted,
                    (i % 19) as usize,
                    "await_standby",
                )),
                _ => o.push(step(
                    at,
                    "hub-a",
                    Kind::StepDone,
                    (i % 19) as usize,
                    "await_standby",
                )),
            }
        }
        input.observations.extend(o);
        assert!(input.observations.len() >= 1000);
        let r = model::build(&input);
        let page = render(&r, Format::Html);
        assert!(page.len() < 300 * 1024, "{} bytes", page.len());
        let svg = render(&r, Format::Svg);
        assert!(svg.starts_with("<svg") && svg.len() < page.len());
    }
}
