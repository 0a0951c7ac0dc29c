//! Fault injection, end to end: real `hubshift`, agents, hubsim and
//! PostgreSQL. Each case injects one fault at one moment of an upgrade
//! (the controller killed at the start of or inside a step, an agent
//! killed, PostgreSQL restarted inside an outage window, a hub frozen or
//! dying) and then takes at most the operator action `docs/faults.md`
//! documents for it. Every case must end with one active and one standby
//! node on one version, no split brain, the planted hub data intact, and
//! no data gap beyond the documented bound — measured from hubsim's ticks.
//!
//! The cases are grouped into a few tests that run in parallel, each with
//! its own sandbox; inside a test, cases run one after the other on the
//! same group, each upgrading it to the next version. The controller
//! killed at the start of each step runs on both of the agents' drivers
//! (`CASE::process`, `CASE::docker`: hubsim containers of the local Docker
//! Engine, skipped without one unless `CI` is set); the other cases on the
//! process driver.

#[macro_use]
mod support;

use hubshift_common::pb::HubRole;
use hubshift_sim::measure;
use hubshift_sim::sandbox::{HubDriver, Sandbox, SandboxOptions};
use hubshift_sim::timing::SimTiming;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use support::*;

/// Takeover timeout the fault inventories give hubshift (seconds).
const TAKEOVER: u64 = 8;

/// A sandbox group, its inventory, the version it runs and its hub data.
struct Group {
    sandbox: Sandbox,
    inventory: PathBuf,
    version: String,
    planted: Vec<(PathBuf, Vec<u8>)>,
    /// Ticks are checked from here on.
    since: SystemTime,
    next_minor: u32,
}

impl Group {
    async fn start(driver: HubDriver) -> Group {
        let sandbox = Sandbox::start(SandboxOptions {
            version: "4.1.0".into(),
            driver,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("sandbox: {e}"));
        let planted = plant_hub_data(&sandbox)
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        let inventory = sandbox.root.join("inventory.toml");
        sandbox.write_inventory(&inventory, GROUP).unwrap();
        // Shorter waits than production defaults, so a fallback is seen
        // within seconds.
        let text = std::fs::read_to_string(&inventory)
            .unwrap()
            .replace("takeover = 60", &format!("takeover = {TAKEOVER}"))
            .replace("secondary_shutdown = 10", "secondary_shutdown = 5")
            .replace("start = 60", "start = 20");
        std::fs::write(&inventory, text).unwrap();
        Group {
            sandbox,
            inventory,
            version: "4.1.0".into(),
            planted,
            since: SystemTime::now(),
            next_minor: 2,
        }
    }

    /// The next version and its runtime archive.
    fn next_target(&mut self) -> (String, String) {
        let v = format!("4.{}.0", self.next_minor);
        self.next_minor += 1;
        let archive = self.sandbox.runtime_archive(&v).unwrap();
        (v, archive.display().to_string())
    }

    fn spawn_upgrade(&self, version: &str, archive: &str) -> Running {
        Running::spawn(&self.inventory, &upgrade_args(archive, version))
    }

    /// Starts an upgrade in the background; returns it and its run id.
    fn start_upgrade(&self, version: &str, archive: &str) -> (Running, String) {
        let mut up = self.spawn_upgrade(version, archive);
        let started = up.wait_for(Duration::from_secs(120), "run_started", |e| {
            e["event"] == "run_started"
        });
        let run_id = started["run"].as_str().unwrap().to_string();
        (up, run_id)
    }

    /// Waits for an upgrade; when it failed (exit 1, nothing worse), the
    /// documented action: `resume`, which must finish it.
    fn finish_or_resume(&self, up: Running, run_id: &str, archive: &str, case: &str) {
        let (code, seen) = up.finish(Duration::from_secs(240));
        if code != Some(0) {
            assert_eq!(code, Some(1), "{case}: {seen:#?}\n{}", self.hub_logs());
            let out = self.resume(run_id, archive);
            assert_eq!(out.status.code(), Some(0), "{case}: {}", text(&out));
        }
    }

    fn resume(&self, run_id: &str, archive: &str) -> std::process::Output {
        run(
            &self.inventory,
            &["resume", "--run", run_id, "--runtime", archive],
        )
    }

    /// The end of both hubs' logs, for failure messages.
    fn hub_logs(&self) -> String {
        self.sandbox
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} hub log:\n{}\n",
                    n.name,
                    hubshift_sim::sandbox::tail(&n.hub_log(), 40)
                )
            })
            .collect()
    }

    fn hub_pid(&self, i: usize) -> i32 {
        self.sandbox.nodes[i].hub_pid().expect("hub pid")
    }

    /// One active (hub-a, the preferred primary, once settled) and one
    /// standby, both running `version`; data flows; no split brain; no gap
    /// beyond `bound`; the planted hub data intact on the primary.
    async fn assert_healthy(&mut self, version: &str, bound: Duration, case: &str) {
        let s = &self.sandbox;
        s.wait_role(0, HubRole::Active, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{case}: hub-a not active: {e}"));
        s.wait_role(1, HubRole::Standby, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{case}: hub-b not standby: {e}"));
        for i in 0..2 {
            let st = s.status(i).await.unwrap();
            assert_eq!(st.active_runtime, version, "{case}: node {i} runtime");
        }
        let db = s.db.connect().await.unwrap();
        assert_eq!(
            schema_version(&db).await.as_deref(),
            Some(version),
            "{case}: schema version"
        );
        // Data flows now: fresh ticks after the check began.
        let now = SystemTime::now();
        let mut fresh = false;
        for _ in 0..200 {
            let t = measure::fetch_ticks(&db, now).await.expect("read ticks");
            if t.len() >= 5 {
                fresh = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(fresh, "{case}: no data flowing at the end");
        let ticks = measure::fetch_ticks(&db, self.since)
            .await
            .expect("read ticks");
        assert!(ticks.len() >= 5, "{case}: too few ticks to judge");
        let tick = SimTiming::fast().tick_interval;
        assert_eq!(
            measure::split_brain(&ticks, tick),
            None,
            "{case}: split brain"
        );
        let (gap, a, b) = measure::largest_gap(&ticks).expect("a gap");
        assert!(
            gap <= bound,
            "{case}: data gap {gap:?} ({} -> {}) beyond the bound {bound:?}",
            a.node,
            b.node
        );
        let appdata = &s.nodes[0].appdata;
        for (p, bytes) in &self.planted {
            let now = std::fs::read(p).unwrap_or_else(|e| panic!("{case}: {}: {e}", p.display()));
            assert_eq!(&now, bytes, "{case}: {} changed", p.display());
        }
        assert!(appdata.is_dir());
        let leftovers: Vec<_> = std::fs::read_dir(s.nodes[0].state_dir.join("backups"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
            .collect();
        assert!(leftovers.is_empty(), "{case}: partial backups left");
        self.version = version.to_string();
        self.since = SystemTime::now();
    }
}

/// Outage bound of an upgrade whose faults need no fallback: a window is
/// the takeover timeout of the hubs plus a hub's stop and start, and the
/// polls around them; a loaded test machine gets generous slack.
fn normal_bound() -> Duration {
    let t = SimTiming::fast();
    t.takeover_timeout + t.start_delay + t.stop_delay + Duration::from_secs(4)
}

/// Outage bound of the takeover fallback: hubshift's takeover timeout plus
/// the primary's start.
fn fallback_bound() -> Duration {
    Duration::from_secs(TAKEOVER) + normal_bound()
}

fn sigkill(pid: u32) {
    // SAFETY: a plain signal to a process this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: a plain signal to a hub process group the sandbox started.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

fn is_step(e: &Value, event: &str, name: &str) -> bool {
    e["event"] == event && e["name"] == name
}

/// Kills the controller when step `name` starts (after `delay`), then
/// resumes: every step is safe to interrupt and to do again.
async fn kill_controller_then_resume(g: &mut Group, name: &str, delay: Duration) {
    let case = format!("controller killed {delay:?} into {name}");
    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    up.wait_for(Duration::from_secs(180), name, |e| {
        is_step(e, "step_started", name)
    });
    std::thread::sleep(delay);
    sigkill(up.child.id());
    let _ = up.child.wait();
    // The journal says nobody holds the run any more (once the database
    // has seen the controller's connection close).
    let mut state = None;
    for _ in 0..50 {
        let out = run(&g.inventory, &["runs", "--run", &run_id]);
        let ev = events(&out);
        state = find(&ev, "run").and_then(|r| r["state"].as_str().map(str::to_string));
        if matches!(state.as_deref(), Some("interrupted" | "done")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(state.as_deref(), Some("interrupted" | "done")),
        "{case}: run state {state:?}"
    );
    let out = g.resume(&run_id, &archive);
    assert_eq!(out.status.code(), Some(0), "{case}: {}", text(&out));
    g.assert_healthy(&version, normal_bound(), &case).await;
}

on_both_drivers!(
    controller_killed_at_the_start_of_each_early_step,
    controller_killed_at_the_start_of_each_late_step,
);

async fn controller_killed_at_the_start_of_each_early_step(driver: HubDriver) {
    let mut g = Group::start(driver).await;
    for name in [
        "stage_runtime",
        "stop_primary",
        "await_takeover",
        "backup",
        "verify_backup",
        "drop_schema",
        "activate_runtime",
    ] {
        kill_controller_then_resume(&mut g, name, Duration::ZERO).await;
    }
}

async fn controller_killed_at_the_start_of_each_late_step(driver: HubDriver) {
    let mut g = Group::start(driver).await;
    for name in [
        "create_and_start",
        "await_handback",
        "activate_secondary_runtime",
        "copy_certificate",
        "start_secondary",
        "await_standby",
    ] {
        kill_controller_then_resume(&mut g, name, Duration::ZERO).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_inside_the_long_steps() {
    let mut g = Group::start(HubDriver::Process).await;
    for (name, ms) in [
        ("stage_runtime", 150),
        ("stop_primary", 100),
        ("await_takeover", 500),
        ("backup", 100),
        ("create_and_start", 200),
        ("await_handback", 300),
        ("await_standby", 300),
    ] {
        kill_controller_then_resume(&mut g, name, Duration::from_millis(ms)).await;
    }
}

/// A secondary frozen before the primary stops: the stop is refused and
/// nothing changes. Frozen right after the stop: no takeover comes, and
/// hubshift starts the old primary again within its takeover timeout, then
/// fails saying so; `abandon` ends that run, `resume` of another finishes
/// it. A controller killed while nobody serves: `abandon` starts the
/// primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_that_cannot_take_over_never_leaves_the_group_down() {
    let mut g = Group::start(HubDriver::Process).await;
    let from = g.version.clone();

    // Frozen before the run: preflight refuses, nothing starts.
    let hub_b = g.hub_pid(1);
    signal_group(hub_b, libc::SIGSTOP);
    let (version, archive) = g.next_target();
    let (code, seen) = g
        .spawn_upgrade(&version, &archive)
        .finish(Duration::from_secs(180));
    assert_eq!(code, Some(3), "{seen:#?}");
    assert!(
        seen.iter().any(|e| e["event"] == "preflight"
            && e["blocking"] == true
            && e["message"].as_str().unwrap_or("").contains("frozen")),
        "{seen:#?}"
    );
    assert!(find(&seen, "run_started").is_none(), "{seen:#?}");

    // Frozen after preflight, before the stop: refused at stop_primary,
    // nothing stopped.
    signal_group(hub_b, libc::SIGCONT);
    let mut up = g.spawn_upgrade(&version, &archive);
    up.wait_for(Duration::from_secs(120), "run_started", |e| {
        e["event"] == "run_started"
    });
    signal_group(hub_b, libc::SIGSTOP);
    let (code, seen) = up.finish(Duration::from_secs(180));
    signal_group(hub_b, libc::SIGCONT);
    assert_eq!(code, Some(1), "{seen:#?}");
    let failed = seen
        .iter()
        .find(|e| is_step(e, "step_failed", "stop_primary"))
        .expect("stop_primary refused");
    assert!(
        failed["error"].as_str().unwrap().contains("frozen"),
        "{failed}"
    );
    let run_id = find(&seen, "run_started").unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run(&g.inventory, &["abandon", "--run", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    g.assert_healthy(&from, normal_bound(), "frozen before the stop")
        .await;

    // Frozen just after the primary stopped: the fallback.
    let mut up = g.spawn_upgrade(&version, &archive);
    up.wait_for(Duration::from_secs(180), "stop_primary done", |e| {
        is_step(e, "step_finished", "stop_primary")
    });
    let hub_b = g.hub_pid(1);
    signal_group(hub_b, libc::SIGSTOP);
    let (code, seen) = up.finish(Duration::from_secs(180));
    signal_group(hub_b, libc::SIGCONT);
    assert_eq!(code, Some(1), "{seen:#?}");
    let failed = seen
        .iter()
        .find(|e| is_step(e, "step_failed", "await_takeover"))
        .expect("await_takeover failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("was started again and is active"),
        "{failed}"
    );
    let run_id = find(&seen, "run_started").unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    g.assert_healthy(&from, fallback_bound(), "no takeover after the stop")
        .await;
    // Resume starts again at the primary's stop, with the secondary live.
    let out = g.resume(&run_id, &archive);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    g.assert_healthy(&version, normal_bound(), "resume after the fallback")
        .await;

    // The controller dies while nobody serves (primary stopped, secondary
    // frozen): `abandon` starts the primary again.
    let from = g.version.clone();
    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    up.wait_for(Duration::from_secs(180), "stop_primary done", |e| {
        is_step(e, "step_finished", "stop_primary")
    });
    let hub_b = g.hub_pid(1);
    signal_group(hub_b, libc::SIGSTOP);
    sigkill(up.child.id());
    let _ = up.child.wait();
    let out = run(&g.inventory, &["abandon", "--run", &run_id]);
    signal_group(hub_b, libc::SIGCONT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&out);
    let abandoned = find(&ev, "run_abandoned").expect("run_abandoned");
    assert_eq!(abandoned["restarted"][0], "hub-a", "{abandoned}");
    // The gap here includes the time the test took to run `abandon`.
    g.assert_healthy(&from, fallback_bound(), "abandon restarts the primary")
        .await;
}

/// The secondary that took over freezes while the primary is backed up:
/// before anything irreversible hubshift gives the group its old primary
/// back; after the thaw `resume` takes a fresh backup and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_frozen_while_it_serves_gets_the_primary_back() {
    let mut g = Group::start(HubDriver::Process).await;
    let from = g.version.clone();
    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    up.wait_for(Duration::from_secs(180), "backup started", |e| {
        is_step(e, "step_started", "backup")
    });
    let hub_b = g.hub_pid(1);
    signal_group(hub_b, libc::SIGSTOP);
    let (code, seen) = up.finish(Duration::from_secs(240));
    signal_group(hub_b, libc::SIGCONT);
    assert_eq!(code, Some(1), "{seen:#?}");
    let failed = find(&seen, "step_failed").expect("a step failed");
    assert!(
        matches!(
            failed["name"].as_str(),
            Some("backup" | "verify_backup" | "drop_schema")
        ),
        "{failed}"
    );
    assert!(
        failed["error"].as_str().unwrap().contains("frozen"),
        "{failed}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| is_step(e, "step_started", "drop_schema"))
            || failed["name"] == "drop_schema",
        "nothing irreversible ran: {seen:#?}"
    );
    g.assert_healthy(&from, fallback_bound(), "secondary frozen while serving")
        .await;
    let out = g.resume(&run_id, &archive);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&out);
    let backup = ev
        .iter()
        .find(|e| is_step(e, "step_finished", "backup"))
        .expect("backup taken again");
    assert!(
        backup["detail"]["id"].as_str().unwrap().ends_with("-r1"),
        "{backup}"
    );
    g.assert_healthy(&version, normal_bound(), "resume after the fallback")
        .await;
}

/// A hub killed after its own step: the upgraded primary while the
/// secondary is being switched (nobody serves until the secondary starts
/// and takes over), and the new secondary while it joins. The step that
/// waits for a node, and the final check of the group, start it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_killed_after_their_own_step_are_started_again() {
    let mut g = Group::start(HubDriver::Process).await;
    for (name, node) in [("activate_secondary_runtime", 0), ("await_standby", 1)] {
        let case = format!("hub of node {node} killed at {name}");
        let (version, archive) = g.next_target();
        let (mut up, run_id) = g.start_upgrade(&version, &archive);
        up.wait_for(Duration::from_secs(180), name, |e| {
            is_step(e, "step_started", name)
        });
        if node == 1 {
            // Wait for the hub the step is about: the one start_secondary made.
            std::thread::sleep(Duration::from_millis(300));
        }
        signal_group(g.hub_pid(node), libc::SIGKILL);
        g.finish_or_resume(up, &run_id, &archive, &case);
        g.assert_healthy(&version, fallback_bound(), &case).await;
    }
}

/// PostgreSQL restarted inside each outage window and during the backup:
/// the journal reconnects and takes the group lock again; the run finishes
/// (or, where a step's own database work failed, `resume` finishes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_in_each_window() {
    let mut g = Group::start(HubDriver::Process).await;
    for name in ["await_takeover", "backup", "await_handback"] {
        let case = format!("PostgreSQL restarted during {name}");
        let (version, archive) = g.next_target();
        let (mut up, run_id) = g.start_upgrade(&version, &archive);
        up.wait_for(Duration::from_secs(180), name, |e| {
            is_step(e, "step_started", name)
        });
        g.sandbox
            .db
            .restart(Duration::from_millis(1500))
            .await
            .unwrap();
        let (code, seen) = up.finish(Duration::from_secs(240));
        // The journal reconnected and took the lock again: the run went on
        // by itself (these steps do no database work of their own).
        assert_eq!(code, Some(0), "{case}: {seen:#?}\n{}", g.hub_logs());
        let finished = find(&seen, "run_finished").expect("run_finished");
        assert_eq!(finished["run"], run_id.as_str());
        // The database was away for a while on top of the usual window.
        g.assert_healthy(&version, normal_bound() + Duration::from_secs(4), &case)
            .await;
    }
}

/// An agent killed and restarted inside a step; the hub it supervises keeps
/// running and is re-adopted; a backup cut short leaves no partial file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_killed_inside_steps() {
    let mut g = Group::start(HubDriver::Process).await;
    for (name, node) in [("backup", 0), ("await_takeover", 1), ("start_secondary", 1)] {
        let case = format!("agent of node {node} killed during {name}");
        let (version, archive) = g.next_target();
        let (mut up, run_id) = g.start_upgrade(&version, &archive);
        up.wait_for(Duration::from_secs(180), name, |e| {
            is_step(e, "step_started", name)
        });
        g.sandbox.kill_agent(node);
        tokio::time::sleep(Duration::from_millis(500)).await;
        g.sandbox.restart_agent(node).await.unwrap();
        g.finish_or_resume(up, &run_id, &archive, &case);
        g.assert_healthy(&version, normal_bound(), &case).await;
    }
}

/// The upgraded primary dies while it starts: the run fails naming it, and
/// `resume` starts it again and finishes. A primary frozen while it starts
/// never becomes active: the run fails, and after it thaws `resume`
/// finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_dies_or_hangs_while_it_starts() {
    let mut g = Group::start(HubDriver::Process).await;

    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    up.wait_for(Duration::from_secs(180), "create_and_start done", |e| {
        is_step(e, "step_finished", "create_and_start")
    });
    signal_group(g.hub_pid(0), libc::SIGKILL);
    g.finish_or_resume(up, &run_id, &archive, "");
    // The gap includes the test's own reaction time before `resume`.
    g.assert_healthy(&version, fallback_bound(), "primary killed while starting")
        .await;

    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    up.wait_for(Duration::from_secs(180), "create_and_start done", |e| {
        is_step(e, "step_finished", "create_and_start")
    });
    let hub_a = g.hub_pid(0);
    signal_group(hub_a, libc::SIGSTOP);
    let (code, seen) = up.finish(Duration::from_secs(240));
    signal_group(hub_a, libc::SIGCONT);
    assert_eq!(
        code,
        Some(1),
        "a frozen primary cannot finish the run: {seen:#?}"
    );
    let out = g.resume(&run_id, &archive);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The outage lasted as long as the primary was frozen (the start and
    // secondary_shutdown timeouts): the bound is the one documented for it.
    g.assert_healthy(
        &version,
        Duration::from_secs(180),
        "primary frozen while starting",
    )
    .await;
}
