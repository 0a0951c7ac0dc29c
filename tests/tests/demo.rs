//! The README's first command: `hubshift-sandbox demo` completes an upgrade
//! and prints the outage windows measured from the data ticks (also for a
//! group of three nodes, `--nodes 3`, and a fleet of groups, `--groups`),
//! and writes the run's report, which headless Chromium loads.

mod support;

use serde_json::json;
use std::process::{Command, Stdio};
use support::browser;

#[test]
fn demo_upgrades_the_sandbox_group_and_prints_measured_outages() {
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let keep = tempfile::tempdir().unwrap();
    let report = keep.path().join("report.html");
    let out = Command::new(bin)
        .args([
            "demo",
            "--takeover-timeout",
            "1500ms",
            "--start-delay",
            "700ms",
            "--report",
        ])
        .arg(&report)
        .stdin(Stdio::null())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "Preflight passed",
        "[15/15] await_standby on hub-b: done",
        "measured outage 1:",
        "measured outage 2:",
        "split brain: none",
        "now producing: hub-a@4.2.0",
    ] {
        assert!(
            stdout.contains(needle),
            "demo output lacks {needle:?}:\n{stdout}"
        );
    }
    assert!(report.is_file(), "the demo writes its report");
}

/// `hubshift-sandbox demo --nodes 3`: a primary and two secondaries; each
/// secondary is switched, gets the certificate store, starts and is seen
/// standby, and the group ends with one node producing at the new version.
#[test]
fn demo_with_three_nodes_upgrades_every_secondary() {
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let keep = tempfile::tempdir().unwrap();
    let page = keep.path().join("demo-report.html");
    let out = Command::new(bin)
        .args([
            "demo",
            "--nodes",
            "3",
            "--takeover-timeout",
            "1500ms",
            "--start-delay",
            "700ms",
            "--report",
        ])
        .arg(&page)
        .stdin(Stdio::null())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "3 agents and 3 hubsim nodes",
        "HA group up: hub-a active, hub-b, hub-c standby",
        "Preflight passed",
        "await_standby on hub-b: done",
        "[20/20] await_standby on hub-c: done",
        "measured outage 1:",
        "measured outage 2:",
        "split brain: none",
        "now producing: hub-a@4.2.0",
    ] {
        assert!(
            stdout.contains(needle),
            "demo output lacks {needle:?}:\n{stdout}"
        );
    }
    // Its report, with the measured gaps beside the reported windows, in
    // headless Chromium: the screenshot is the README's picture
    // (docs/report.png).
    assert!(
        stdout.contains(&format!(
            "Report (reported windows beside the measured gaps): {}",
            page.display()
        )),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&page).expect("report written");
    assert!(html.contains("class=\"measured\""), "the measured gaps");
    assert_eq!(
        html.matches("<rect class=\"gap\"").count(),
        2,
        "two data gaps"
    );
    let report = json!({
        "lanes": [{ "node": "hub-a" }, { "node": "hub-b" }, { "node": "hub-c" }],
        "steps": (0..20).map(|i| json!({ "index": i + 1 })).collect::<Vec<_>>(),
        "windows": browser::windows_of(&html),
    });
    assert_eq!(report["windows"].as_array().unwrap().len(), 2, "{html}");
    browser::check_page(&page, "report-demo.png", &report);
}

/// `--help` of `demo` and `up` explains `--nodes`; a group of one node, or
/// `--nodes` with a fleet, is refused before anything starts.
#[test]
fn nodes_is_explained_and_checked() {
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    for cmd in ["demo", "up"] {
        let out = Command::new(&bin).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--nodes <NODES>") && help.contains("N-1 secondaries"),
            "{cmd} --help:\n{help}"
        );
    }
    let out = Command::new(&bin)
        .args(["demo", "--nodes", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nodes"), "{err}");
    let out = Command::new(&bin)
        .args(["demo", "--groups", "2", "--nodes", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nodes is for one group"), "{err}");
}

/// `--tick-interval` is explained (its two defaults) and a value the
/// timings cannot hold is refused before anything is built, naming why.
#[test]
fn tick_interval_is_explained_and_checked() {
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&bin)
        .args(["bench", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--tick-interval <TICK_INTERVAL>")
            && help.contains("50ms for one group; 250ms for a fleet"),
        "bench --help:\n{help}"
    );
    for (tick, why) in [
        ("0s", "tick intervals must be greater than zero"),
        ("3s", "takeover timeout 3000ms must be at least"),
    ] {
        let out = Command::new(&bin)
            .args(["bench", "--groups", "2", "--tick-interval", tick])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "--tick-interval {tick}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "--tick-interval {tick}: {err}");
        assert!(
            !stdout.contains("Starting one throwaway PostgreSQL"),
            "--tick-interval {tick} built a fleet first: {stdout}"
        );
    }
}

/// `hubshift-sandbox demo --groups 2`: a fleet upgraded by
/// `hubshift upgrade --all` with a canary; every group done, and each
/// group's outages and split-brain check measured in its own database.
#[test]
fn fleet_demo_upgrades_every_group_and_measures_each_in_its_own_database() {
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin)
        .args([
            "demo",
            "--groups",
            "2",
            "--takeover-timeout",
            "1500ms",
            "--start-delay",
            "700ms",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("upgrade --all --canary plant-1 --soak 3s --parallel 2"),
        "{stdout}"
    );
    let table = stdout
        .split_once("\nFleet ")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no closing table:\n{stdout}"));
    for group in ["plant-1", "plant-2"] {
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{group} ")))
            .unwrap_or_else(|| panic!("no row for {group}:\n{table}"));
        assert!(row.contains(" done "), "{row}");
        let measured = stdout
            .split_once(&format!("  {group} (database plant_"))
            .map(|(_, rest)| rest.split("\n  plant-").next().unwrap_or(rest))
            .unwrap_or_else(|| panic!("no measurement for {group}:\n{stdout}"));
        for needle in [
            "measured outage 1:",
            "measured outage 2:",
            "split brain: none",
            &format!("now producing: {group}-a@4.2.0"),
        ] {
            assert!(
                measured.contains(needle),
                "{group}'s measurement lacks {needle:?}:\n{measured}"
            );
        }
    }
}

/// `hubshift-sandbox demo --driver docker`: the same upgrade with the hubs
/// in containers; afterwards nothing it made is left in the engine.
#[test]
fn docker_demo_upgrades_containers_and_leaves_nothing_behind() {
    if !support::engine_or_skip("docker_demo_upgrades_containers_and_leaves_nothing_behind") {
        return;
    }
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let keep = tempfile::tempdir().unwrap();
    let child = Command::new(bin)
        .args([
            "demo",
            "--driver",
            "docker",
            "--takeover-timeout",
            "1500ms",
            "--start-delay",
            "700ms",
            "--report",
        ])
        .arg(keep.path().join("report.html"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo runs");
    let prefix = format!("hubshift-sandbox-{}-", child.id());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "(Docker containers)",
        "[15/15] await_standby on hub-b: done",
        "measured outage 2:",
        "split brain: none",
        "now producing: hub-a@4.2.0",
    ] {
        assert!(
            stdout.contains(needle),
            "demo output lacks {needle:?}:\n{stdout}"
        );
    }
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        // An engine that did not answer says nothing, which is not "nothing left".
        assert!(out.status.success(), "docker {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let filter = format!("name={prefix}");
    assert_eq!(docker(&["ps", "--all", "--quiet", "--filter", &filter]), "");
    assert_eq!(
        docker(&["network", "ls", "--quiet", "--filter", &filter]),
        ""
    );
    assert!(
        !docker(&["images", "--format", "{{.Repository}}"]).contains(&prefix),
        "images left"
    );
}
