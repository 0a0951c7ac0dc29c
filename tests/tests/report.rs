//! `hubshift report`, end to end: a real three-node sandbox run with a
//! fallback and a resume by someone else is reported right (lanes, step
//! attempts, windows, the fallback, who resumed), and its page — with the
//! data gaps measured from the hubs' ticks as a second track — loads in
//! headless Chromium without a console message, with one lane per node, a
//! bar per step attempt and every window's label. The screenshot is kept
//! under `<target>/test-artifacts/` (the demo's report is loaded the same
//! way by `demo.rs`).

mod support;

use hubshift_common::pb::HubRole;
use hubshift_sim::measure;
use hubshift_sim::sandbox::{HubDriver, Sandbox, SandboxOptions};
use hubshift_sim::timing::SimTiming;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::browser;
use support::*;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_run_with_a_fallback_and_a_resume_is_reported_right() {
    let sandbox = Sandbox::start(SandboxOptions {
        nodes: 3,
        version: "4.1.0".into(),
        driver: HubDriver::Process,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let inventory = sandbox.root.join("inventory.toml");
    sandbox
        .write_inventory(&inventory, GROUP)
        .expect("inventory");
    let archive = sandbox
        .runtime_archive("4.2.0")
        .expect("archive")
        .display()
        .to_string();
    let since = SystemTime::now();

    // Both secondaries freeze after the primary's stop: nobody can take
    // over, and hubshift starts the old primary again (a fallback).
    let mut up = Running::spawn(&inventory, &upgrade_args(&archive, "4.2.0"));
    up.wait_for(Duration::from_secs(180), "stop_primary done", |e| {
        e["event"] == "step_finished" && e["name"] == "stop_primary"
    });
    freeze(&sandbox, 1);
    freeze(&sandbox, 2);
    let (code, seen) = up.finish(Duration::from_secs(240));
    for i in [1, 2] {
        let pgid = sandbox.nodes[i].hub_pid().expect("hub pid");
        // SAFETY: a plain signal to a hub process group the sandbox started.
        assert_eq!(unsafe { libc::kill(-pgid, libc::SIGCONT) }, 0);
    }
    assert_eq!(code, Some(1), "{seen:#?}");
    let id = find(&seen, "run_started").expect("run_started")["run"]
        .as_str()
        .unwrap()
        .to_string();
    for (i, role) in [
        (0, HubRole::Active),
        (1, HubRole::Standby),
        (2, HubRole::Standby),
    ] {
        sandbox
            .wait_role(i, role, Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("after the fallback, node {i}: {e}"));
    }

    // Another person resumes it, and it finishes.
    let out = hubshift(&inventory, &["resume", "--run", &id, "--runtime", &archive])
        .env("USER", "second-operator")
        .output()
        .expect("resume runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The data gaps the hubs' ticks show, for the second track.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let db = sandbox.db.connect().await.expect("database");
    let ticks = measure::fetch_ticks(&db, since).await.expect("ticks");
    let gaps: Vec<Value> = measure::no_active_windows(&ticks, 4 * SimTiming::fast().tick_interval)
        .iter()
        .map(|w| {
            json!({ "start_ms": unix_ms(w.start), "end_ms": unix_ms(w.end),
                    "from": w.from_node, "to": w.to_node })
        })
        .collect();
    assert!(
        gaps.len() >= 3,
        "fallback, takeover and hand-back gaps: {gaps:?}"
    );
    let gaps_file = sandbox.root.join("gaps.json");
    std::fs::write(&gaps_file, serde_json::to_vec(&gaps).unwrap()).unwrap();

    // The data: from any machine, afterwards.
    let json_file = sandbox.root.join("report.json");
    let out = run(
        &inventory,
        &[
            "report",
            "--run",
            &id,
            "--format",
            "json",
            "-o",
            json_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        find(&events(&out), "report_written").is_some(),
        "{}",
        text(&out)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json_file).unwrap()).expect("report JSON");
    assert_eq!(report["state"], "done");
    assert_eq!(
        (
            report["from_version"].as_str(),
            report["to_version"].as_str()
        ),
        (Some("4.1.0"), Some("4.2.0"))
    );
    assert_eq!(report["next"], Value::Null);
    let lanes: Vec<&str> = report["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["node"].as_str().unwrap())
        .collect();
    assert_eq!(lanes, ["hub-a", "hub-b", "hub-c"]);
    let states = |node: usize| -> Vec<String> {
        report["lanes"][node]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}@{}",
                    s["state"].as_str().unwrap(),
                    s["version"].as_str().unwrap()
                )
            })
            .collect()
    };
    let a = states(0);
    assert_eq!(a.first().map(String::as_str), Some("active@4.1.0"), "{a:?}");
    assert_eq!(a.last().map(String::as_str), Some("active@4.2.0"), "{a:?}");
    assert!(
        a.iter().filter(|s| *s == "active@4.1.0").count() >= 2,
        "hub-a active again after the fallback: {a:?}"
    );
    for node in [1, 2] {
        let s = states(node);
        assert!(s.iter().any(|x| x == "frozen@4.1.0"), "seen frozen: {s:?}");
        assert_eq!(s.last().map(String::as_str), Some("standby@4.2.0"), "{s:?}");
    }
    let steps = report["steps"].as_array().unwrap();
    let attempts = |name: &str| -> Vec<&str> {
        steps
            .iter()
            .filter(|s| s["name"] == name)
            .map(|s| s["outcome"].as_str().unwrap())
            .collect()
    };
    assert_eq!(attempts("await_takeover"), ["failed", "done"]);
    assert_eq!(attempts("stop_primary"), ["done", "done"]);
    // Every step of the plan ends done, in order, each bar inside the run.
    let last_done: std::collections::BTreeMap<u64, &Value> = steps
        .iter()
        .filter(|s| s["outcome"] == "done")
        .map(|s| (s["index"].as_u64().unwrap(), s))
        .collect();
    assert_eq!(last_done.len(), 20, "every step of a three-node plan");
    for s in steps {
        assert!(s["start_ms"].as_u64() <= s["end_ms"].as_u64(), "{s}");
        assert!(s["start_ms"].as_u64() >= report["start_ms"].as_u64(), "{s}");
    }
    let windows: Vec<u64> = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["window"].as_u64().unwrap())
        .collect();
    assert!(windows.contains(&3), "the fallback's window: {windows:?}");
    assert_eq!(
        windows.iter().filter(|w| **w == 2).count(),
        1,
        "{windows:?}"
    );
    let markers = report["markers"].as_array().unwrap();
    let kinds: Vec<&str> = markers
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    let fallback = kinds
        .iter()
        .position(|k| *k == "fallback")
        .expect("fallback marker");
    let resume = kinds
        .iter()
        .position(|k| *k == "resume")
        .expect("resume marker");
    assert!(fallback < resume, "{kinds:?}");
    assert!(
        markers[resume]["who"]
            .as_str()
            .unwrap()
            .starts_with("second-operator@"),
        "{}",
        markers[resume]
    );
    assert!(
        report["who"].as_array().unwrap().len() >= 2,
        "{}",
        report["who"]
    );
    let backup = &report["backup"];
    assert!(
        backup["bytes"].as_u64().unwrap() > 0 && backup["sha256"].as_str().unwrap().len() == 64
    );

    // The page, with the measured gaps beside, in a real browser.
    let page = sandbox.root.join("report.html");
    let out = run(
        &inventory,
        &[
            "report",
            "--run",
            &id,
            "-o",
            page.to_str().unwrap(),
            "--measured-gaps",
            gaps_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained"
    );
    let shown = browser::check_page(&page, "report-fallback-resume.png", &report);
    assert!(
        shown.dom.contains("class=\"measured\""),
        "the measured track"
    );
    assert!(shown.dom.contains("resume by second-operator@"));
    assert!(shown.dom.contains("fallback: hub-a started again"));

    // Bad input changes nothing and names what was wrong.
    let out = run(
        &inventory,
        &[
            "report",
            "--run",
            &id,
            "--measured-gaps",
            "/nonexistent/gaps.json",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/gaps.json"),
        "{}",
        text(&out)
    );
    let out = run(&inventory, &["report", "--run", "no-such-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
