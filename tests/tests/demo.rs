//! The README's first command: `hubshift-sandbox demo` completes an upgrade
//! and prints the outage windows measured from the data ticks.

mod support;

use std::process::{Command, Stdio};

#[test]
fn demo_upgrades_the_sandbox_group_and_prints_measured_outages() {
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin)
        .args([
            "demo",
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
    for needle in [
        "Preflight passed",
        "[14/14] await_standby on hub-b: done",
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
}

/// `hubshift-sandbox demo --driver docker`: the same upgrade with the hubs
/// in containers; afterwards nothing it made is left in the engine.
#[test]
fn docker_demo_upgrades_containers_and_leaves_nothing_behind() {
    if !support::engine_or_skip("docker_demo_upgrades_containers_and_leaves_nothing_behind") {
        return;
    }
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(bin)
        .args([
            "demo",
            "--driver",
            "docker",
            "--takeover-timeout",
            "1500ms",
            "--start-delay",
            "700ms",
        ])
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
        "[14/14] await_standby on hub-b: done",
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
