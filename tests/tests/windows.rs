//! End to end: maintenance windows on a fleet of two hubsim groups (each on
//! its own database of one real PostgreSQL server, real agents over mTLS).
//! The window clock is set by the test (`HUBSHIFT_WINDOW_CLOCK`, read only
//! for the window decision): on a Friday evening in Berlin the group with a
//! Saturday-night window is parked — journaled, shown by `runs` and
//! `status` — while the other is upgraded, and the fleet exits 4 naming the
//! window; `resume --fleet --wait-for-window` a few seconds before the
//! window opens waits for it and upgrades the group inside it.

mod support;

use hubshift_sim::fleet::{Fleet, FleetOptions};
use serde_json::Value;
use std::path::Path;
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";
const WINDOW: &str = "Sat 01:00-05:00 Europe/Berlin";
/// Saturday 2026-12-05 01:00 in Berlin (CET, +1).
const OPENS: &str = "2026-12-05T00:00:00Z";

fn at(inventory: &Path, clock: &str, args: &[&str]) -> std::process::Output {
    hubshift(inventory, args)
        .env("HUBSHIFT_WINDOW_CLOCK", clock)
        .output()
        .expect("hubshift runs")
}

fn member<'a>(events: &'a [Value], group: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "fleet_member" && e["group"] == group)
        .unwrap_or_else(|| panic!("no member {group}: {events:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_outside_its_window_parks_and_resumes_inside_it() {
    let fleet = Fleet::start(FleetOptions {
        groups: 2,
        version: FROM.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("fleet: {e}"));
    let inventory = fleet.root.join("inventory.toml");
    fleet.write_inventory(&inventory).unwrap();
    // The window belongs to the last group of the inventory (plant-2).
    let mut inv = std::fs::read_to_string(&inventory).unwrap();
    // People hear of the park: a webhook of this test.
    let webhook = support::webhook::hook(support::webhook::Mode::FailFirst(0));
    inv = inv.replacen(
        "[[groups]]",
        &format!(
            "[notify]\nwebhook = \"http://127.0.0.1:{}/hook\"\n\n[[groups]]",
            webhook.port
        ),
        1,
    );
    inv.push_str(&format!("\n[groups.window]\nallow = [\"{WINDOW}\"]\n"));
    std::fs::write(&inventory, inv).unwrap();
    let archive = fleet.runtime_archive(TO).unwrap().display().to_string();

    // Friday 23:00 in Berlin: plant-1 is upgraded, plant-2 parks.
    let friday = "2026-12-04T22:00:00Z";
    let out = at(
        &inventory,
        friday,
        &[
            "upgrade",
            "--all",
            "--parallel",
            "2",
            "--runtime",
            &archive,
            "--version",
            TO,
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let first = events(&out);
    let parked = find(&first, "group_parked").unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(parked["group"], "plant-2");
    assert_eq!(parked["opens"], OPENS);
    assert_eq!(parked["window"], WINDOW);
    let fleet_parked = find(&first, "fleet_parked").unwrap();
    assert_eq!(fleet_parked["next_window"], OPENS);
    let fleet_id = fleet_parked["fleet"].as_str().unwrap().to_string();
    let finished = find(&first, "fleet_finished").unwrap();
    let rows = finished["groups"].as_array().unwrap();
    let result = |g: &str| {
        rows.iter()
            .find(|r| r["group"] == g)
            .map(|r| r["result"].clone())
            .unwrap()
    };
    assert_eq!(result("plant-1"), "done");
    assert_eq!(result("plant-2"), "parked");
    let error = find(&first, "error").unwrap()["error"].as_str().unwrap();
    assert!(
        error.contains("2026-12-05 01:00 CET") && error.contains("resume --fleet"),
        "{error}"
    );
    let posted: Vec<Value> = webhook
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let names: Vec<&str> = posted.iter().filter_map(|b| b["event"].as_str()).collect();
    for name in [
        "fleet_started",
        "group_parked",
        "fleet_finished",
        "fleet_parked",
    ] {
        assert!(names.contains(&name), "{name} not posted: {names:?}");
    }
    let p2 = fleet.group("plant-2").unwrap();
    assert_eq!(
        p2.status(0).await.unwrap().active_runtime,
        FROM,
        "plant-2 untouched"
    );

    // The park is journaled: `runs --fleet` and `status` show it.
    let out = run(&inventory, &["runs", "--fleet", &fleet_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = events(&out);
    let m = member(&listed, "plant-2");
    assert_eq!(m["state"], "parked");
    assert_eq!(m["opens"], OPENS);
    assert_eq!(member(&listed, "plant-1")["state"], "done");
    let out = at(&inventory, friday, &["status", "-g", "plant-2"]);
    let status = events(&out);
    let w = find(&status, "group_window").unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(w["window_open"], false);
    assert_eq!(w["next_window"], OPENS);
    assert_eq!(w["parked"]["fleet"], fleet_id.as_str());

    // One group's upgrade outside its window: exit 4 at once, nothing
    // changed, the next window named.
    let out = at(
        &inventory,
        friday,
        &[
            "upgrade",
            "-g",
            "plant-2",
            "--runtime",
            &archive,
            "--version",
            TO,
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let single = events(&out);
    assert_eq!(find(&single, "group_parked").unwrap()["opens"], OPENS);
    assert!(find(&single, "run_started").is_none(), "{}", text(&out));
    assert_eq!(p2.status(0).await.unwrap().active_runtime, FROM);

    // Three seconds before the window opens: the resume waits for it, then
    // upgrades plant-2 inside it.
    let out = at(
        &inventory,
        "2026-12-04T23:59:57Z",
        &["resume", "--fleet", &fleet_id, "--wait-for-window"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let resumed = events(&out);
    let rows = find(&resumed, "fleet_finished").unwrap()["groups"].clone();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "done"),
        "{rows}"
    );
    let out = run(&inventory, &["runs", "--fleet", &fleet_id]);
    assert_eq!(member(&events(&out), "plant-2")["state"], "done");
    for g in ["plant-1", "plant-2"] {
        let group = fleet.group(g).unwrap();
        for i in 0..2 {
            assert_eq!(group.status(i).await.unwrap().active_runtime, TO, "{g}");
        }
    }

    // Staging may run at any time, the hand-over only inside the window: a
    // run parked before the primary's stop (inside the window) and resumed
    // after the window closed stays parked, staged but not switched.
    let next = fleet
        .runtime_archive("4.3.0")
        .unwrap()
        .display()
        .to_string();
    let saturday = "2026-12-05T01:00:00Z";
    let out = at(
        &inventory,
        saturday,
        &[
            "upgrade",
            "-g",
            "plant-2",
            "--runtime",
            &next,
            "--version",
            "4.3.0",
            "--yes",
            "--pause-before",
            "stop_primary",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let run_id = find(&events(&out), "run_paused").unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let out = at(
        &inventory,
        "2026-12-05T05:00:00Z",
        &["resume", "--run", &run_id],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let held = events(&out);
    let paused = find(&held, "run_paused").unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(paused["name"], "stop_primary");
    let error = find(&held, "error").unwrap()["error"].as_str().unwrap();
    assert!(
        error.contains("outside its maintenance window") && error.contains("2026-12-12 01:00 CET"),
        "{error}"
    );
    let s = p2.status(0).await.unwrap();
    assert_eq!(s.active_runtime, TO, "not switched");
    assert!(
        s.staged_runtimes.iter().any(|r| r == "4.3.0"),
        "staged: {s:?}"
    );
}
