//! End to end: the real `hubshift` upgrades fleets of three hubsim groups,
//! each group on its own database of one real PostgreSQL server, through
//! real agents over mTLS — a canary that fails, a failure budget, a pause,
//! a stop from another process, a resume, and two controllers whose group
//! lists overlap.

mod support;

use hubshift_common::pb::HubRole;
use hubshift_sim::fleet::{Fleet, FleetOptions};
use hubshift_sim::measure;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";

struct Setup {
    fleet: Fleet,
    inventory: PathBuf,
    archive: String,
    since: SystemTime,
}

async fn setup(groups: usize) -> Setup {
    let fleet = Fleet::start(FleetOptions {
        groups,
        version: FROM.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("fleet: {e}"));
    let inventory = fleet.root.join("inventory.toml");
    fleet.write_inventory(&inventory).unwrap();
    let archive = fleet.runtime_archive(TO).unwrap().display().to_string();
    Setup {
        fleet,
        inventory,
        archive,
        since: SystemTime::now(),
    }
}

/// Adds a check every group runs after its upgrade: it fails for a group
/// while a file named like it exists in `marks`.
fn add_check(inventory: &Path, marks: &Path) {
    let mut text = std::fs::read_to_string(inventory).unwrap();
    text.push_str(&format!(
        "\n[checks]\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e \\\"$MARKS/$HUBSHIFT_GROUP\\\" || {{ echo $HUBSHIFT_GROUP serves no fresh data; exit 3; }}\"]\ntimeout_secs = 10\ninterval_secs = 1\nenv = {{ MARKS = \"{}\" }}\n",
        marks.display()
    ));
    std::fs::write(inventory, text).unwrap();
}

fn fleet_args<'a>(archive: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["upgrade", "--runtime", archive, "--version", TO, "--yes"];
    v.extend_from_slice(extra);
    v
}

/// The closing table's row of `group`.
fn row<'a>(finished: &'a Value, group: &str) -> &'a Value {
    finished["groups"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["group"] == group))
        .unwrap_or_else(|| panic!("no row for {group}: {finished}"))
}

/// Every node of the group runs `version`, one active and one standby.
async fn assert_group_at(fleet: &Fleet, group: &str, version: &str) {
    let g = fleet.group(group).unwrap_or_else(|| panic!("no {group}"));
    g.wait_role(0, HubRole::Active, Duration::from_secs(60))
        .await
        .unwrap();
    g.wait_role(1, HubRole::Standby, Duration::from_secs(60))
        .await
        .unwrap();
    for i in 0..2 {
        let s = g.status(i).await.unwrap();
        assert_eq!(s.active_runtime, version, "{group} node {i}: {s:?}");
    }
    let db = g.db.connect().await.unwrap();
    assert_eq!(
        schema_version(&db).await.as_deref(),
        Some(version),
        "{group}"
    );
}

/// Data flowed in the group since `since`, never from two nodes at once,
/// and only from its own nodes (each group has its own database).
async fn assert_no_split_brain(fleet: &Fleet, group: &str, since: SystemTime) {
    let g = fleet.group(group).unwrap();
    let db = g.db.connect().await.unwrap();
    let ticks = measure::fetch_ticks(&db, since).await.unwrap();
    assert!(ticks.len() > 20, "{group}: {} ticks", ticks.len());
    assert_eq!(
        measure::split_brain(&ticks, fleet.timing.tick_interval),
        None,
        "{group}: split brain"
    );
    assert!(
        ticks.iter().all(|t| t.node.starts_with(group)),
        "{group}: ticks from other groups' nodes"
    );
}

/// Events between `fleet_started` and `fleet_finished` carry the fleet, and
/// every group's events carry the group.
fn assert_events_marked(ev: &[Value], fleet: &str) {
    let start = ev
        .iter()
        .position(|e| e["event"] == "fleet_started")
        .expect("fleet_started");
    for e in &ev[start..] {
        if e["event"] == "error" {
            continue;
        }
        assert_eq!(e["fleet"], fleet, "{e}");
        if e["event"].as_str().is_some_and(|n| n.starts_with("step_")) {
            assert!(e["group"].as_str().is_some(), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_stops_the_fleet_and_a_failure_within_budget_does_not() {
    let s = setup(3).await;
    let marks = s.fleet.root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    add_check(&s.inventory, &marks);

    // Ready lines for every group.
    let out = run(&s.inventory, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let ready: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "group_readiness")
        .collect();
    assert_eq!(ready.len(), 3, "{ready:#?}");
    assert!(ready.iter().all(|r| r["ready"] == true), "{ready:#?}");

    // Canary plant-1 upgrades, then its check fails: nothing else starts.
    std::fs::write(marks.join("plant-1"), b"").unwrap();
    let out = run(
        &s.inventory,
        &fleet_args(
            &s.archive,
            &[
                "--all",
                "--canary",
                "plant-1",
                "--soak",
                "2s",
                "--parallel",
                "2",
            ],
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = events(&out);
    let started = find(&ev, "fleet_started").expect("fleet_started");
    let fleet_id = started["fleet"].as_str().unwrap().to_string();
    assert_events_marked(&ev, &fleet_id);
    let finished = find(&ev, "fleet_finished").expect("fleet_finished");
    let canary = row(finished, "plant-1");
    assert_eq!(canary["result"], "failed", "{finished}");
    let canary_run = canary["run"].as_str().unwrap().to_string();
    assert!(
        canary["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("hubshift rollback --run {canary_run}")),
        "{canary}"
    );
    assert!(
        canary["reason"]
            .as_str()
            .unwrap()
            .contains("serves no fresh data"),
        "the check's output is shown: {canary}"
    );
    for g in ["plant-2", "plant-3"] {
        assert_eq!(row(finished, g)["result"], "not_started", "{finished}");
        assert!(
            !ev.iter()
                .any(|e| e["group"] == g && e["event"] == "step_started"),
            "{g} was touched"
        );
        assert_group_at(&s.fleet, g, FROM).await;
    }
    assert_group_at(&s.fleet, "plant-1", TO).await;

    // A failure budget of one: plant-2's check fails, plant-3 still goes.
    std::fs::remove_file(marks.join("plant-1")).unwrap();
    std::fs::write(marks.join("plant-2"), b"").unwrap();
    let out = run(
        &s.inventory,
        &fleet_args(
            &s.archive,
            &["-g", "plant-2", "-g", "plant-3", "--max-failed", "1"],
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = events(&out);
    let finished = find(&ev, "fleet_finished").expect("fleet_finished");
    assert_eq!(row(finished, "plant-2")["result"], "failed", "{finished}");
    let done = row(finished, "plant-3");
    assert_eq!(done["result"], "done", "{finished}");
    let windows = done["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{done}");
    assert!(done["backup_id"].as_str().is_some(), "{done}");
    assert!(done["duration_ms"].as_u64().unwrap() > 0, "{done}");
    // plant-2 starts at once on its preflight's lock and agents: looked at
    // once. plant-3 waits behind --parallel 1, lets its lock go meanwhile,
    // and is looked at again when it starts.
    let looked = |g: &str, node: &str| {
        ev.iter()
            .filter(|e| {
                e["event"] == "preflight"
                    && e["group"] == g
                    && e["check"] == "agent"
                    && e["node"] == node
            })
            .count()
    };
    assert_eq!(looked("plant-2", "plant-2-a"), 1, "{ev:#?}");
    assert_eq!(looked("plant-3", "plant-3-a"), 2, "{ev:#?}");
    let second_fleet = find(&ev, "fleet_started").unwrap()["fleet"]
        .as_str()
        .unwrap()
        .to_string();
    for g in ["plant-1", "plant-2", "plant-3"] {
        assert_group_at(&s.fleet, g, TO).await;
        assert_no_split_brain(&s.fleet, g, s.since).await;
    }

    // The journals, read across the three databases, list both fleets.
    let out = run(&s.inventory, &["runs"]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    let fleets: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "fleet")
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(
        fleets.contains(&fleet_id.as_str()) && fleets.contains(&second_fleet.as_str()),
        "{fleets:?}"
    );
    let runs: Vec<&Value> = ev.iter().filter(|e| e["event"] == "run").collect();
    assert_eq!(runs.len(), 3, "one run per group upgraded: {runs:#?}");
    let out = run(&s.inventory, &["runs", "--fleet", &second_fleet]);
    assert!(out.status.success(), "{}", text(&out));
    let members: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "fleet_member")
        .collect();
    assert_eq!(members.len(), 2, "{members:#?}");

    // `hubshift report --fleet`: one row per group with its result and windows.
    let out = run(
        &s.inventory,
        &["report", "--fleet", &second_fleet, "--format", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("fleet report JSON");
    let rows: Vec<(&str, &str, usize)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
                r["windows"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(rows[1], ("plant-3", "done", 2), "{report:#}");
    assert_eq!(
        (rows[0].0, rows[0].1),
        ("plant-2", "done (check failed)"),
        "{report:#}"
    );
    let out = run(&s.inventory, &["report", "--fleet", &second_fleet]);
    assert!(out.status.success(), "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert_eq!(page.matches("<g class=\"lane\"").count(), 2, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_then_stopped_fleet_resumes_to_the_end() {
    let s = setup(3).await;
    // Every group in flight parks before the schema drop; plant-3 waits.
    let out = run(
        &s.inventory,
        &fleet_args(
            &s.archive,
            &["--all", "--parallel", "2", "--pause-before", "drop_schema"],
        ),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let ev = events(&out);
    let fleet_id = find(&ev, "fleet_started").unwrap()["fleet"]
        .as_str()
        .unwrap()
        .to_string();
    let finished = find(&ev, "fleet_finished").expect("fleet_finished");
    for g in ["plant-1", "plant-2"] {
        assert_eq!(row(finished, g)["result"], "paused", "{finished}");
        // Parked while its secondary serves, the schema untouched.
        let grp = s.fleet.group(g).unwrap();
        grp.wait_role(1, HubRole::Active, Duration::from_secs(30))
            .await
            .unwrap();
        let db = grp.db.connect().await.unwrap();
        assert_eq!(schema_version(&db).await.as_deref(), Some(FROM), "{g}");
    }
    assert_eq!(row(finished, "plant-3")["result"], "not_started");
    assert_group_at(&s.fleet, "plant-3", FROM).await;

    // Resumed, then stopped from another process: no group begins after
    // the stop is recorded, and the fleet parks (exit 4).
    let mut resumed = Running::spawn(&s.inventory, &["resume", "--fleet", &fleet_id]);
    resumed.wait_for(Duration::from_secs(120), "a resumed step", |e| {
        e["event"] == "step_started" && e["name"] == "drop_schema"
    });
    // Asked from a machine whose clock is three minutes behind: the stop is
    // still stamped on the database server's clock.
    let before_stop = unix_ms();
    let out = Command::new("faketime")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args(["-f", "-180s"])
        .arg(bin("hubshift"))
        .args(["--json", "stop", "--fleet", &fleet_id, "-i"])
        .arg(&s.inventory)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("faketime runs (apt-get install faketime)");
    let after_stop = unix_ms();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        find(&events(&out), "stop_requested").is_some(),
        "{}",
        text(&out)
    );
    let db = s
        .fleet
        .group("plant-1")
        .unwrap()
        .db
        .connect()
        .await
        .unwrap();
    let audit: String = db
        .query_one(
            "SELECT audit::text FROM hubshift.fleets WHERE id = $1",
            &[&fleet_id],
        )
        .await
        .unwrap()
        .get(0);
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let stamped = audit
        .as_array()
        .and_then(|a| a.iter().rev().find(|e| e["action"] == "stop"))
        .and_then(|e| e["at_ms"].as_u64())
        .unwrap_or_else(|| panic!("no stop in the fleet's audit: {audit}"));
    assert!(
        stamped + 1_000 >= before_stop && stamped <= after_stop + 1_000,
        "the stop was stamped {stamped}, not within {before_stop}..{after_stop}: {audit}"
    );
    let stop_ts = stamped;
    let (code, seen) = resumed.finish(Duration::from_secs(300));
    assert_eq!(code, Some(4), "{seen:#?}");
    let finished = find(&seen, "fleet_finished").expect("fleet_finished");
    let p3 = row(finished, "plant-3")["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ["not_started", "stopped", "paused"].contains(&p3.as_str()),
        "plant-3 did not run to its end after the stop: {finished}"
    );
    for e in seen.iter().filter(|e| e["event"] == "run_started") {
        assert!(
            e["ts_ms"].as_u64().unwrap() < stop_ts,
            "a group began after the stop was recorded: {e}"
        );
    }

    // Resumed until done: each resume either parks again (a group begun
    // later parks at its own gate, once) or finishes every group.
    let mut last = None;
    for attempt in 0..4 {
        let out = run(&s.inventory, &["resume", "--fleet", &fleet_id]);
        let ev = events(&out);
        for p in ev.iter().filter(|e| e["event"] == "run_paused") {
            assert_eq!(p["name"], "drop_schema", "{p}");
        }
        match out.status.code() {
            Some(0) => {
                last = Some(ev);
                break;
            }
            Some(4) if attempt < 3 => continue,
            other => panic!("resume {attempt} exited {other:?}: {}", text(&out)),
        }
    }
    let ev = last.expect("the fleet finished within four resumes");
    let finished = find(&ev, "fleet_finished").expect("fleet_finished");
    for g in ["plant-1", "plant-2", "plant-3"] {
        assert_eq!(row(finished, g)["result"], "done", "{finished}");
        assert_group_at(&s.fleet, g, TO).await;
        assert_no_split_brain(&s.fleet, g, s.since).await;
    }
    let out = run(&s.inventory, &["runs", "--fleet", &fleet_id]);
    let members: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "fleet_member")
        .collect();
    assert_eq!(members.len(), 3, "{members:#?}");
    assert!(members.iter().all(|m| m["state"] == "done"), "{members:#?}");
}

/// Two controllers whose lists overlap on plant-2, provably at once: the
/// second starts while the first one's run of plant-2 is running (that
/// controller held with SIGSTOP inside a step the journal marks running)
/// and leaves plant-2 as taken because the group lock is held by that run
/// — not because plant-2 already runs the target. Each group is upgraded
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_with_overlapping_lists_upgrade_each_group_once() {
    let s = setup(3).await;
    let mut x = Running::spawn(
        &s.inventory,
        &fleet_args(&s.archive, &["-g", "plant-2", "-g", "plant-1"]),
    );
    let started = x.wait_for(Duration::from_secs(120), "plant-2's run", |e| {
        e["event"] == "run_started" && e["group"] == "plant-2"
    });
    let x_run = started["run"].as_str().unwrap().to_string();
    // The wait for the takeover lasts the hub's own takeover time; holding
    // its controller there delays no data (the secondary takes over alone).
    let step = x.wait_for(Duration::from_secs(120), "plant-2's await_takeover", |e| {
        e["event"] == "step_started" && e["group"] == "plant-2" && e["name"] == "await_takeover"
    });
    let index = step["index"].as_u64().unwrap();
    let plant2 = s.fleet.group("plant-2").unwrap();
    let db = plant2.db.connect().await.unwrap();
    // Held where the journal has the step running (it is marked just after
    // its event is written).
    let held = loop {
        hold(&x);
        let j = journal_step(&db, &x_run, index).await;
        match j.state.as_str() {
            "running" => break j,
            "pending" => {
                release(&x);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            other => panic!("plant-2's step {index} was {other} before the second controller"),
        }
    };
    let mut y = Running::spawn(
        &s.inventory,
        &fleet_args(&s.archive, &["-g", "plant-3", "-g", "plant-2"]),
    );
    let taken = y.wait_for(Duration::from_secs(120), "plant-2 taken", |e| {
        e["event"] == "group_taken" && e["group"] == "plant-2"
    });
    assert_eq!(
        journal_step(&db, &x_run, index).await,
        held,
        "plant-2's run moved while its controller was held"
    );
    let reason = taken["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with(&format!("locked by run {x_run} ")),
        "taken because of the lock of the first controller's run: {taken}"
    );
    release(&x);
    let (xc, xe) = x.finish(Duration::from_secs(400));
    let (yc, ye) = y.finish(Duration::from_secs(400));
    assert_eq!(xc, Some(0), "{xe:#?}");
    assert_eq!(yc, Some(0), "{ye:#?}");
    let result = |ev: &[Value], g: &str| -> String {
        let f = find(ev, "fleet_finished").unwrap_or_else(|| panic!("{ev:#?}"));
        row(f, g)["result"].as_str().unwrap().to_string()
    };
    assert_eq!(result(&xe, "plant-1"), "done");
    assert_eq!(result(&xe, "plant-2"), "done");
    assert_eq!(result(&ye, "plant-3"), "done");
    assert_eq!(result(&ye, "plant-2"), "taken");
    assert!(
        !ye.iter()
            .any(|e| e["event"] == "run_started" && e["group"] == "plant-2"),
        "the second controller began no run of plant-2: {ye:#?}"
    );
    for g in ["plant-1", "plant-2", "plant-3"] {
        assert_group_at(&s.fleet, g, TO).await;
        assert_no_split_brain(&s.fleet, g, s.since).await;
        let out = run(&s.inventory, &["runs", "-g", g]);
        assert!(out.status.success(), "{}", text(&out));
        let runs: Vec<Value> = events(&out)
            .into_iter()
            .filter(|e| e["event"] == "run" && e["group"] == g)
            .collect();
        assert_eq!(runs.len(), 1, "{g} was upgraded once: {runs:#?}");
        assert_eq!(runs[0]["state"], "done", "{runs:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_output_of_parallel_groups_is_prefixed_and_never_interleaved() {
    let s = setup(2).await;
    let out = std::process::Command::new(bin("hubshift"))
        .args(fleet_args(&s.archive, &["--all", "--parallel", "2"]))
        .arg("-i")
        .arg(&s.inventory)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let table = lines
        .iter()
        .position(|l| l.starts_with("Fleet F") && l.contains("done"))
        .unwrap_or_else(|| panic!("no closing line: {stdout}"));
    let started = lines
        .iter()
        .position(|l| l.starts_with("Fleet F") && l.contains("group(s) ->"))
        .unwrap_or_else(|| panic!("no fleet start line: {stdout}"));
    let mut per_group = [0usize; 2];
    for l in &lines[started + 1..table] {
        if l.is_empty() {
            continue;
        }
        let i = if l.starts_with("[plant-1] ") {
            0
        } else if l.starts_with("[plant-2] ") {
            1
        } else {
            panic!("a line without its group: {l:?}\n{stdout}")
        };
        per_group[i] += 1;
        // One event per line: never two step tags or two group tags.
        assert_eq!(l.matches("[plant-").count(), 1, "{l:?}");
        assert!(l.matches("/15]").count() <= 1, "{l:?}");
    }
    // Both groups ran all 15 steps, announced and finished.
    assert!(
        per_group.iter().all(|n| *n >= 30),
        "{per_group:?}\n{stdout}"
    );
    for g in ["plant-1", "plant-2"] {
        assert!(
            lines[table..]
                .iter()
                .any(|l| l.trim_start().starts_with(g) && l.contains(" done ")),
            "no table row for {g}: {stdout}"
        );
        assert_group_at(&s.fleet, g, TO).await;
        assert_no_split_brain(&s.fleet, g, s.since).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_failing_while_the_canary_soaks_stops_the_fleet() {
    let s = setup(2).await;
    // The check passes once (right after the canary's upgrade), then fails:
    // the first check of the soak must catch it.
    let calls = s.fleet.root.join("check-calls");
    let mut text_inv = std::fs::read_to_string(&s.inventory).unwrap();
    text_inv.push_str(&format!(
        "\n[checks]\ncommand = [\"/bin/sh\", \"-c\", \"echo x >> \\\"$CALLS\\\"; test $(wc -l < \\\"$CALLS\\\") -lt 2 || {{ echo stale data on $HUBSHIFT_ACTIVE_NODE; exit 1; }}\"]\ntimeout_secs = 10\ninterval_secs = 1\nenv = {{ CALLS = \"{}\" }}\n",
        calls.display()
    ));
    std::fs::write(&s.inventory, text_inv).unwrap();
    let out = run(
        &s.inventory,
        &fleet_args(
            &s.archive,
            &["--all", "--canary", "plant-1", "--soak", "30s"],
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = events(&out);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "check_passed" && e["group"] == "plant-1"),
        "{ev:#?}"
    );
    assert!(find(&ev, "soak_started").is_some(), "{ev:#?}");
    assert!(find(&ev, "soak_finished").is_none(), "{ev:#?}");
    let finished = find(&ev, "fleet_finished").expect("fleet_finished");
    let canary = row(finished, "plant-1");
    assert_eq!(canary["result"], "failed", "{finished}");
    let reason = canary["reason"].as_str().unwrap();
    assert!(reason.contains("while the canary soaked"), "{reason}");
    assert!(reason.contains("stale data on plant-1-a"), "{reason}");
    assert!(reason.contains("hubshift rollback --run"), "{reason}");
    assert_eq!(row(finished, "plant-2")["result"], "not_started");
    assert_group_at(&s.fleet, "plant-2", FROM).await;
    assert_group_at(&s.fleet, "plant-1", TO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unready_group_refuses_the_fleet_unless_skipped() {
    let mut s = setup(2).await;
    // plant-2's secondary agent is gone: plant-2 is not ready.
    s.fleet.groups_mut()[1]
        .kill_agent(1)
        .expect("a live agent killed");
    let out = run(&s.inventory, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = events(&out);
    let ready = |g: &str| {
        ev.iter()
            .find(|e| e["event"] == "group_readiness" && e["group"] == g)
            .unwrap_or_else(|| panic!("no readiness line for {g}: {ev:#?}"))
            .clone()
    };
    assert_eq!(ready("plant-1")["ready"], true);
    assert_eq!(ready("plant-2")["ready"], false);
    assert!(
        ready("plant-2")["problems"]
            .to_string()
            .contains("plant-2-b"),
        "{}",
        ready("plant-2")
    );

    let out = run(&s.inventory, &fleet_args(&s.archive, &["--all"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("1 group(s) not ready: plant-2"),
        "{}",
        text(&out)
    );
    let ev = events(&out);
    assert!(find(&ev, "fleet_started").is_none(), "{ev:#?}");
    assert_group_at(&s.fleet, "plant-1", FROM).await;

    let out = run(
        &s.inventory,
        &fleet_args(&s.archive, &["--all", "--skip-unready"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&out);
    let finished = find(&ev, "fleet_finished").expect("fleet_finished");
    assert_eq!(row(finished, "plant-1")["result"], "done", "{finished}");
    let skipped = row(finished, "plant-2");
    assert_eq!(skipped["result"], "skipped", "{finished}");
    assert!(
        skipped["reason"].as_str().unwrap().contains("plant-2-b"),
        "{skipped}"
    );
    assert_group_at(&s.fleet, "plant-1", TO).await;
    let p2 = s.fleet.group("plant-2").unwrap();
    assert_eq!(p2.status(0).await.unwrap().active_runtime, FROM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_controller_killed_mid_run_is_resumed_to_the_end() {
    let s = setup(3).await;
    // Unknown fleets are refused naming them, and change nothing.
    for cmd in ["resume", "stop"] {
        let out = run(&s.inventory, &[cmd, "--fleet", "F19700101T000000-000000"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out));
        assert!(
            text(&out).contains("no fleet F19700101T000000-000000"),
            "{cmd}: {}",
            text(&out)
        );
    }
    let mut fleet = Running::spawn(
        &s.inventory,
        &fleet_args(&s.archive, &["--all", "--parallel", "2"]),
    );
    let started = fleet.wait_for(Duration::from_secs(60), "fleet_started", |e| {
        e["event"] == "fleet_started"
    });
    let fleet_id = started["fleet"].as_str().unwrap().to_string();
    // Killed while both groups in flight are inside their hand-over.
    fleet.wait_for(Duration::from_secs(120), "a schema drop", |e| {
        e["event"] == "step_started" && e["name"] == "drop_schema"
    });
    let pid = fleet.child.id() as i32;
    // SAFETY: kill(2) on the controller this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (code, _) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, None, "killed by a signal");

    let out = run(&s.inventory, &["resume", "--fleet", &fleet_id]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    let finished = find(&ev, "fleet_finished").expect("fleet_finished");
    for g in ["plant-1", "plant-2", "plant-3"] {
        assert_eq!(row(finished, g)["result"], "done", "{finished}");
        assert_group_at(&s.fleet, g, TO).await;
        assert_no_split_brain(&s.fleet, g, s.since).await;
    }
    // The groups cut off were resumed, not begun again: one run each.
    for g in ["plant-1", "plant-2", "plant-3"] {
        let out = run(&s.inventory, &["runs", "-g", g]);
        let runs: Vec<Value> = events(&out)
            .into_iter()
            .filter(|e| e["event"] == "run" && e["group"] == g)
            .collect();
        assert_eq!(runs.len(), 1, "{g}: {runs:#?}");
    }
}

/// This machine's real Unix milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
