//! The README's first command: `hubshift-sandbox demo` completes an upgrade
//! and prints the outage windows measured from the data ticks.

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
