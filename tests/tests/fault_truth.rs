//! What the operator is told under faults, end to end: real `hubshift`,
//! agents, hubsim and PostgreSQL. Each case injects one fault, proves it
//! landed (the step it aimed at was running, the process it hit was
//! alive), and checks that the outage is no longer than the hub needs,
//! that the message names the real cause, and that the command it names
//! next is accepted.

#[macro_use]
mod support;

use hubshift_common::pb::{self, HubRole, StartMode};
use hubshift_sim::measure;
use hubshift_sim::sandbox::{HubDriver, Sandbox, SandboxOptions};
use hubshift_sim::timing::SimTiming;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};
use support::*;

/// Slack on top of a documented bound, for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(4);

/// The margin the takeover wait adds to the hubs' own takeover time
/// (`TAKEOVER_MARGIN` in the controller).
const TAKEOVER_MARGIN: Duration = Duration::from_secs(2);

/// A sandbox group with its inventory, upgraded from 4.1.0.
struct Group {
    sandbox: Sandbox,
    inventory: PathBuf,
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
        let inventory = sandbox.root.join("inventory.toml");
        sandbox
            .write_inventory(&inventory, GROUP)
            .expect("inventory");
        Group { sandbox, inventory }
    }

    /// Replaces `from` by `to` in the inventory (a timeout, say).
    fn edit_inventory(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.inventory).expect("inventory");
        assert!(text.contains(from), "{from:?} not in the inventory");
        std::fs::write(&self.inventory, text.replace(from, to)).expect("inventory");
    }

    fn archive(&self, version: &str) -> String {
        self.sandbox
            .runtime_archive(version)
            .expect("runtime archive")
            .display()
            .to_string()
    }

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

    /// Waits until hub-a is active and hub-b standby.
    async fn settled(&self, case: &str) {
        self.sandbox
            .wait_role(0, HubRole::Active, Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("{case}: hub-a not active: {e}\n{}", self.hub_logs()));
        self.sandbox
            .wait_role(1, HubRole::Standby, Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("{case}: hub-b not standby: {e}\n{}", self.hub_logs()));
    }

    /// The identity of the orchestration schema's cluster table: a schema
    /// dropped and made again has another.
    async fn orchestration_oid(&self) -> u32 {
        let db = self.sandbox.db.connect().await.expect("database");
        db.query_one("SELECT 'orchestration.cluster'::regclass::oid", &[])
            .await
            .expect("the orchestration schema is there")
            .get(0)
    }

    async fn ticks_since(&self, since: SystemTime) -> Vec<measure::Tick> {
        let db = self.sandbox.db.connect().await.expect("database");
        measure::fetch_ticks(&db, since).await.expect("read ticks")
    }

    /// The largest data gap since `since`, after data flows again.
    async fn largest_gap(&self, since: SystemTime, case: &str) -> Duration {
        let ticks = self.ticks_since(since).await;
        let tick = SimTiming::fast().tick_interval;
        assert_eq!(
            measure::split_brain(&ticks, tick),
            None,
            "{case}: split brain"
        );
        measure::largest_gap(&ticks)
            .unwrap_or_else(|| panic!("{case}: too few ticks"))
            .0
    }
}

fn step_is(e: &Value, event: &str, name: &str) -> bool {
    e["event"] == event && e["name"] == name
}

fn run_id(seen: &[Value]) -> String {
    find(seen, "run_started").expect("run_started")["run"]
        .as_str()
        .expect("run id")
        .to_string()
}

/// The journaled state of `step` (its kind) of run `id`, and the run's
/// audit entries, from `hubshift runs --run`.
fn journaled(inventory: &std::path::Path, id: &str, step: &str) -> (String, Vec<Value>) {
    let out = run(inventory, &["runs", "--run", id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&out);
    let state = ev
        .iter()
        .find(|e| e["event"] == "run_step" && e["step"]["kind"] == step)
        .and_then(|e| e["state"].as_str())
        .unwrap_or_else(|| panic!("no step {step} in {ev:#?}"))
        .to_string();
    let audit = find(&ev, "run")
        .and_then(|r| r["audit"].as_array())
        .cloned()
        .unwrap_or_else(|| panic!("no audit in {ev:#?}"));
    (state, audit)
}

/// Bytes of the regular files under `dir` (links not followed).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

fn thaw(sandbox: &Sandbox, i: usize) {
    let node = &sandbox.nodes[i];
    match sandbox.driver {
        HubDriver::Process => {
            let pgid = node.hub_pid().expect("hub pid");
            // SAFETY: a plain signal to a hub process group the sandbox started.
            let rc = unsafe { libc::kill(-pgid, libc::SIGCONT) };
            assert_eq!(rc, 0, "SIGCONT to the hub of {}", node.name);
        }
        HubDriver::Docker => {
            let out = Command::new("docker")
                .args(["unpause", &node.container])
                .output()
                .expect("docker runs");
            assert!(out.status.success(), "docker unpause: {}", text(&out));
        }
    }
}

/// The only secondary freezes right after the primary's stop: hubshift
/// starts the primary again once the hubs' own takeover time (plus a
/// margin) has passed, not after `timeouts.takeover` — the outage is
/// about T + S, on both drivers.
async fn a_frozen_secondary_costs_the_hubs_takeover_time_not_the_timeout(driver: HubDriver) {
    let g = Group::start(driver).await;
    // hubshift's own wait is long: a fallback that waited it out would
    // show as a gap of more than a minute.
    g.edit_inventory("takeover = 60", "takeover = 90");
    let since = SystemTime::now();
    let archive = g.archive("4.2.0");
    let mut up = Running::spawn(&g.inventory, &upgrade_args(&archive, "4.2.0"));
    up.wait_for(Duration::from_secs(180), "stop_primary done", |e| {
        step_is(e, "step_finished", "stop_primary")
    });
    freeze(&g.sandbox, 1);
    let frozen_status = g.sandbox.status(1).await.expect("status of hub-b");
    let (code, seen) = up.finish(Duration::from_secs(240));
    thaw(&g.sandbox, 1);
    // The fault landed: hub-b was frozen while nobody was active.
    assert!(
        frozen_status.frozen,
        "hub-b was not frozen: {frozen_status:?}"
    );
    assert_eq!(code, Some(1), "{seen:#?}\n{}", g.hub_logs());
    let failed = seen
        .iter()
        .find(|e| step_is(e, "step_failed", "await_takeover"))
        .unwrap_or_else(|| panic!("await_takeover did not fail: {seen:#?}"));
    let error = failed["error"].as_str().expect("error");
    assert!(error.contains("hub-b standby, frozen"), "{error}");
    assert!(error.contains("timeouts.hub_takeover"), "{error}");
    assert!(error.contains("was started again and is active"), "{error}");
    g.settled("after the fallback").await;
    // T + margin, then the primary's start, and its stop before that.
    let t = SimTiming::fast();
    let bound = t.stop_delay
        + t.takeover_timeout.max(Duration::from_secs(2))
        + TAKEOVER_MARGIN
        + t.start_delay
        + SLACK;
    let gap = g.largest_gap(since, "frozen secondary").await;
    assert!(gap <= bound, "data gap {gap:?} beyond T + S ({bound:?})");
    // The next command the run names is accepted and finishes the upgrade.
    let id = run_id(&seen);
    assert!(
        error.contains(&format!("hubshift resume --run {id}")),
        "{error}"
    );
    let out = run(
        &g.inventory,
        &["resume", "--run", &id, "--runtime", &archive],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

on_both_drivers!(a_frozen_secondary_costs_the_hubs_takeover_time_not_the_timeout);

/// The agent of hub-b dies in the middle of the runtime upload: the run
/// says so, naming the node and the broken connection — not that the
/// archive changed, which it did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_during_the_upload_is_named_not_the_archive() {
    let mut g = Group::start(HubDriver::Process).await;
    let big = g.sandbox.root.join("big-runtime-4.2.0.tar.gz");
    archives::ballasted_archive(&g.sandbox, "4.2.0", 256, &big);
    let archive = big.display().to_string();
    let mut up = Running::spawn(&g.inventory, &upgrade_args(&archive, "4.2.0"));
    up.wait_for(Duration::from_secs(180), "stage_runtime on hub-b", |e| {
        step_is(e, "step_started", "stage_runtime") && e["node"] == "hub-b"
    });
    // Wait until the agent has written a good part of the stream to its
    // disk (the archive or its unpacked files), then kill it: the upload is
    // under way, not done.
    let node = &g.sandbox.nodes[1];
    let written = || dir_bytes(&node.install_root) + dir_bytes(&node.state_dir);
    let start = written();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while written() < start + (16 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent of hub-b never wrote 16 MiB of the upload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        written() < start + (200 << 20),
        "the upload was nearly done before the kill"
    );
    g.sandbox
        .kill_agent(1)
        .expect("the agent of hub-b was running");
    let (code, seen) = up.finish(Duration::from_secs(240));
    assert_eq!(code, Some(1), "{seen:#?}");
    let failed = seen
        .iter()
        .find(|e| step_is(e, "step_failed", "stage_runtime") && e["node"] == "hub-b")
        .unwrap_or_else(|| panic!("the upload to hub-b did not fail: {seen:#?}"));
    let error = failed["error"].as_str().expect("error");
    assert!(
        error.contains("the connection to the agent of hub-b broke after"),
        "{error}"
    );
    assert!(!error.contains("changed"), "{error}");
    // Nothing was stopped: staging comes before any outage.
    assert!(
        !seen
            .iter()
            .any(|e| step_is(e, "step_started", "stop_primary")),
        "{seen:#?}"
    );
    g.sandbox.restart_agent(1).await.expect("agent back");
    let id = run_id(&seen);
    let out = run(
        &g.inventory,
        &["resume", "--run", &id, "--runtime", &archive],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A target older than what runs is refused by plan and upgrade, naming
/// `--allow-downgrade` and `rollback`; with the flag it is planned with a
/// warning. Versions compare as the vendor numbers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_is_refused_unless_allowed() {
    let g = Group::start(HubDriver::Process).await;
    let old = g.archive("4.0.0");
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "-g",
            GROUP,
            "--runtime",
            old.as_str(),
            "--version",
            "4.0.0",
        ];
        args.extend_from_slice(extra);
        run(&g.inventory, &args)
    };
    let out = plan(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let ev = events(&out);
    let refused = ev
        .iter()
        .find(|e| e["event"] == "preflight" && e["check"] == "version" && e["blocking"] == true)
        .unwrap_or_else(|| panic!("no version refusal: {}", text(&out)));
    let message = refused["message"].as_str().expect("message");
    assert!(message.contains("4.0.0 is older than 4.1.0"), "{message}");
    assert!(message.contains("--allow-downgrade"), "{message}");
    assert!(message.contains("hubshift rollback --run"), "{message}");
    let untouched = Untouched::capture(&g.sandbox);
    let out = run(&g.inventory, &upgrade_args(&old, "4.0.0"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        find(&events(&out), "run_started").is_none(),
        "{}",
        text(&out)
    );
    untouched.assert_same(&g.sandbox, "a refused downgrade");
    let out = plan(&["--allow-downgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        events(&out).iter().any(|e| e["event"] == "preflight"
            && e["warning"] == true
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("downgrade as asked")),
        "{}",
        text(&out)
    );
    // 4.10.0 is newer than 4.1.0, not older.
    let newer = g.archive("4.10.0");
    let out = run(
        &g.inventory,
        &[
            "plan",
            "-g",
            GROUP,
            "--runtime",
            &newer,
            "--version",
            "4.10.0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The backup is damaged on the primary's host after the upgrade: the
/// rollback refuses before anything stops, naming the backup, its file and
/// the intact copy; put back from the copy, the same command rolls back.
/// Around it, each refusal names a command that is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_refuses_the_rollback_before_anything_stops() {
    let g = Group::start(HubDriver::Process).await;
    let archive = g.archive("4.2.0");
    let out = run(&g.inventory, &upgrade_args(&archive, "4.2.0"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&out);
    let up = run_id(&ev);
    let finished = find(&ev, "run_finished").expect("run_finished");
    let backup = PathBuf::from(finished["backup_path"].as_str().expect("backup path"));
    let copy = PathBuf::from(finished["backup_copy"].as_str().expect("backup copy"));
    let id = finished["backup_id"]
        .as_str()
        .expect("backup id")
        .to_string();
    g.settled("after the upgrade").await;

    // The pair's base damaged: refused, naming it and both copies; the way
    // it names works.
    let base_id = finished["pre_copy"]["base_id"]
        .as_str()
        .expect("a pre-copy base");
    let base = backup.with_file_name(format!("{base_id}.tar.gz"));
    let base_copy = copy.with_file_name(format!("{base_id}.tar.gz"));
    let bytes = std::fs::read(&base).expect("base");
    std::fs::write(&base, &bytes[..bytes.len() / 2]).expect("truncate the base");
    let out = run(&g.inventory, &["rollback", "--run", &up, "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let all = text(&out);
    for part in [
        format!("the base {base_id}"),
        format!("{} is intact", copy.display()),
        format!("its base's {}", base_copy.display()),
        format!("and {} on", base.display()),
    ] {
        assert!(all.contains(&part), "{part:?} not said:\n{all}");
    }
    assert!(find(&events(&out), "run_started").is_none(), "{all}");
    std::fs::copy(&base_copy, &base).expect("put the base's copy back");

    // Damage it: cut it in half.
    let bytes = std::fs::read(&backup).expect("backup");
    std::fs::write(&backup, &bytes[..bytes.len() / 2]).expect("truncate");
    let untouched = Untouched::capture(&g.sandbox);
    let out = run(&g.inventory, &["rollback", "--run", &up, "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let all = text(&out);
    for part in [
        format!("backup {id}"),
        backup.display().to_string(),
        format!("{} is intact", copy.display()),
        format!("`hubshift rollback --run {up}`"),
        "nothing was changed".to_string(),
    ] {
        assert!(all.contains(&part), "{part:?} not said:\n{all}");
    }
    assert!(find(&events(&out), "run_started").is_none(), "{all}");
    untouched.assert_same(&g.sandbox, "a rollback refused for a damaged backup");

    // The way it names works.
    std::fs::copy(&copy, &backup).expect("put the copy back");
    let out = run(&g.inventory, &["rollback", "--run", &up, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rb = run_id(&events(&out));
    g.settled("after the rollback").await;
    let s = g.sandbox.status(0).await.expect("status");
    assert_eq!(s.active_runtime, "4.1.0");

    // The refusals around a finished rollback name accepted commands.
    for (args, next) in [
        (
            vec!["rollback", "--run", rb.as_str(), "--yes"],
            "hubshift upgrade -g plant",
        ),
        (
            vec!["rollback", "--run", up.as_str(), "--yes"],
            "hubshift upgrade -g plant",
        ),
        (
            vec!["abandon", "--run", up.as_str()],
            "hubshift upgrade -g plant",
        ),
        (
            vec!["resume", "--run", up.as_str()],
            "hubshift upgrade -g plant",
        ),
    ] {
        let out = run(&g.inventory, &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(next), "{args:?}: {}", text(&out));
    }
    // …and that command is accepted: plan (upgrade's dry run) passes.
    let out = run(
        &g.inventory,
        &[
            "plan",
            "-g",
            GROUP,
            "--runtime",
            &archive,
            "--version",
            "4.2.0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The serving secondary's host is lost (its hub and its agent killed)
/// while the backup is verified: unreachable is not serving, so hubshift
/// gives the group its old primary back before the schema drop, and the
/// data gap lies inside a window the run reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_serving_host_falls_back_before_the_drop_inside_a_reported_window() {
    let mut g = Group::start(HubDriver::Process).await;
    let since = SystemTime::now();
    let schema_before = g.orchestration_oid().await;
    let archive = g.archive("4.2.0");
    let mut up = Running::spawn(&g.inventory, &upgrade_args(&archive, "4.2.0"));
    let started = up.wait_for(Duration::from_secs(180), "verify_backup started", |e| {
        step_is(e, "step_started", "verify_backup")
    });
    let id = started["run"].as_str().expect("run").to_string();
    let hub_b = g.sandbox.nodes[1].hub_pid().expect("hub-b pid");
    // SAFETY: a plain signal to a hub process group the sandbox started.
    let rc = unsafe { libc::kill(-hub_b, libc::SIGKILL) };
    assert_eq!(rc, 0, "hub-b was alive");
    g.sandbox
        .kill_agent(1)
        .expect("the agent of hub-b was running");
    let (code, seen) = up.finish(Duration::from_secs(240));
    assert_eq!(code, Some(1), "{seen:#?}\n{}", g.hub_logs());
    // The loss is seen by the backup's check or by the drop's own check
    // before its statement, as the kill falls: either way the schema is
    // the one the group had.
    assert_eq!(
        g.orchestration_oid().await,
        schema_before,
        "the schema was dropped while nobody was seen serving: {seen:#?}"
    );
    let failed = find(&seen, "step_failed").expect("a step failed");
    let error = failed["error"].as_str().expect("error");
    assert!(
        error.contains("hub-b, which took over, cannot be seen serving"),
        "{error}"
    );
    assert!(
        error.contains("hub-a was started again and is active"),
        "{error}"
    );
    g.sandbox
        .wait_role(0, HubRole::Active, Duration::from_secs(60))
        .await
        .expect("hub-a active again");

    // Bring the host back, then resume to the end.
    g.sandbox.restart_agent(1).await.expect("agent of hub-b");
    let mut c = g.sandbox.client(1).await.expect("client");
    c.start(pb::StartRequest {
        mode: StartMode::Start as i32,
        node: "hub-b".into(),
        jdbc_uri: g.sandbox.hub_jdbc_uri(),
    })
    .await
    .expect("start hub-b");
    g.sandbox
        .wait_role(1, HubRole::Standby, Duration::from_secs(60))
        .await
        .expect("hub-b standby");
    let out = run(
        &g.inventory,
        &["resume", "--run", &id, "--runtime", &archive],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let finished = find(&events(&out), "run_finished")
        .expect("run_finished")
        .clone();
    let windows: Vec<(u64, u64)> = finished["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| {
            (
                w["start_ms"].as_u64().unwrap(),
                w["end_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        finished["windows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["window"] == 3),
        "the fallback's outage is reported: {finished}"
    );
    // Every data gap lies inside a reported window (give or take a poll
    // and a tick on each side).
    let t = SimTiming::fast();
    let ticks = g.ticks_since(since).await;
    let edge = Duration::from_millis(100) + 2 * t.tick_interval;
    let gaps = measure::no_active_windows(&ticks, 4 * t.tick_interval);
    assert!(!gaps.is_empty(), "the fault made no gap at all");
    for gap in gaps {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .expect("after the epoch")
                .as_millis() as u64
        };
        let (a, b) = (ms(gap.start), ms(gap.end));
        let edge = edge.as_millis() as u64;
        assert!(
            windows
                .iter()
                .any(|(s, e)| s.saturating_sub(edge) <= a && b <= e + edge),
            "data gap {a}..{b} ({} ms) lies in no reported window {windows:?}",
            b - a
        );
    }
}

/// A run started here and resumed by a controller whose clock is three
/// minutes behind: every journaled time comes from the database server's
/// clock, so the single-node time and the windows are true and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_resumed_by_a_controller_with_a_skewed_clock_reports_true_times() {
    let g = Group::start(HubDriver::Process).await;
    let archive = g.archive("4.2.0");
    let mut up = Running::spawn(&g.inventory, &upgrade_args(&archive, "4.2.0"));
    let started = up.wait_for(Duration::from_secs(180), "backup started", |e| {
        step_is(e, "step_started", "backup")
    });
    let id = started["run"].as_str().expect("run").to_string();
    // SAFETY: a plain signal to the controller this test started.
    let rc = unsafe { libc::kill(up.child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "the controller was alive");
    let _ = up.child.wait();
    let (stopped, _) = journaled(&g.inventory, &id, "stop_primary");
    assert_eq!(stopped, "done", "killed after the primary's stop");
    let (backup, _) = journaled(&g.inventory, &id, "backup");
    assert_ne!(backup, "done", "killed before the backup was done");
    // The other machine: this one's clock, three minutes behind.
    let out = Command::new("faketime")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args(["-f", "-180s"])
        .arg(bin("hubshift"))
        .args([
            "--json",
            "resume",
            "--run",
            &id,
            "--runtime",
            &archive,
            "-i",
        ])
        .arg(&g.inventory)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("faketime runs (apt-get install faketime)");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let finished = find(&events(&out), "run_finished")
        .expect("run_finished")
        .clone();
    assert_eq!(
        finished["impossible_spans"].as_array().map(Vec::len),
        Some(0),
        "{finished}"
    );
    let single = finished["single_node_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no single-node time: {finished}"));
    let windows = finished["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 2, "{finished}");
    let w = |i: usize, k: &str| windows[i][k].as_u64().expect("ms");
    assert!(w(0, "end_ms") >= w(0, "start_ms"), "{finished}");
    assert!(
        w(1, "start_ms") >= w(0, "end_ms"),
        "windows in order: {finished}"
    );
    // The single-node time spans both windows: never 0, never 3 minutes off.
    assert!(
        single >= w(1, "end_ms") - w(0, "start_ms"),
        "single-node time {single} ms shorter than the windows: {finished}"
    );
    assert!(single < 170_000, "single-node time {single} ms: {finished}");
    // Who acted, in the order they did.
    let (_, audit) = journaled(&g.inventory, &id, "backup");
    let at: Vec<u64> = audit
        .iter()
        .map(|a| a["at_ms"].as_u64().expect("at_ms"))
        .collect();
    assert_eq!(at.len(), 2, "{audit:#?}");
    assert!(at[0] <= at[1], "audit out of order: {audit:#?}");
}

/// PostgreSQL goes away for good during the backup: the controller waits
/// for it once (`timeouts.database`), then exits 1 naming the database and
/// leaves the run for `resume`, which finishes it once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_comes_back_costs_one_bounded_wait() {
    let mut g = Group::start(HubDriver::Process).await;
    // The sandbox inventory leaves `database` at its default; set it short.
    g.edit_inventory("[timeouts]\n", "[timeouts]\ndatabase = 8\n");
    let archive = g.archive("4.2.0");
    let stderr_file = g.sandbox.root.join("controller.stderr");
    let mut child = hubshift(&g.inventory, &upgrade_args(&archive, "4.2.0"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("hubshift starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let v: Value = serde_json::from_str(&line).expect("JSON");
            let _ = tx.send(v);
        }
    });
    let mut seen = Vec::new();
    let id = loop {
        let e = rx
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("no backup step: {seen:#?}"));
        seen.push(e.clone());
        if step_is(&e, "step_started", "backup") {
            break e["run"].as_str().expect("run").to_string();
        }
    };
    g.sandbox.db.suspend().await.expect("stop PostgreSQL");
    let status = child.wait().expect("hubshift ends");
    reader.join().expect("reader");
    seen.extend(rx.try_iter());
    assert_eq!(status.code(), Some(1), "{seen:#?}");
    let target = format!(
        "{}:{}/{}",
        g.sandbox.db.host(),
        g.sandbox.db.port(),
        g.sandbox.db.dbname()
    );
    let failure = find(&seen, "run_failed").unwrap_or_else(|| panic!("{seen:#?}"));
    let error = failure["error"].as_str().expect("error");
    assert!(
        error.contains(&format!(
            "the database {target} did not come back within 8s"
        )),
        "{error}"
    );
    let stderr = std::fs::read_to_string(&stderr_file).expect("stderr");
    assert!(!stderr.contains(g.sandbox.db.password()), "{stderr}");
    // One wait: once the database was given up, the statements still to
    // journal (the failure, the run's end) failed at once.
    let waits = stderr.matches("journal connection lost while").count();
    assert_eq!(waits, 1, "the controller waited {waits} times:\n{stderr}");
    g.sandbox.db.resume().await.expect("start PostgreSQL");
    let out = run(
        &g.inventory,
        &["resume", "--run", &id, "--runtime", &archive],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The sandbox's archive of `version` rewritten to `out` with nothing that
/// declares a version: the release folder renamed, `VERSION` left out.
fn undeclared_archive(sandbox: &Sandbox, version: &str, out: &std::path::Path) {
    use std::io::Read;
    let plain = sandbox.runtime_archive(version).expect("runtime archive");
    let file = std::fs::File::open(&plain).expect("open runtime archive");
    let mut entries = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(out).expect("create archive"),
        flate2::Compression::fast(),
    ));
    let folder = hubshift_sim::runtime::release_folder(version);
    for entry in entries.entries().expect("archive entries") {
        let mut entry = entry.expect("archive entry");
        let path = entry.path().expect("entry path").display().to_string();
        if path.ends_with("/VERSION") {
            continue;
        }
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        let renamed = path.replacen(&folder, &format!("release-{version}"), 1);
        builder
            .append_data(&mut header, renamed, data.as_slice())
            .expect("copy entry");
    }
    builder
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip");
}

/// An archive that declares another version than `--version` is refused
/// before anything changes, naming both; one that declares nothing is
/// planned with a warning that nothing can check it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mislabelled_archive_is_refused_in_plan_and_an_undeclared_one_warned() {
    let g = Group::start(HubDriver::Process).await;
    let old = g.archive("4.1.0");
    let plan = |archive: &str| {
        run(
            &g.inventory,
            &[
                "plan",
                "-g",
                GROUP,
                "--runtime",
                archive,
                "--version",
                "4.2.0",
            ],
        )
    };
    let out = plan(&old);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let ev = events(&out);
    let refused = ev
        .iter()
        .find(|e| e["event"] == "preflight" && e["check"] == "runtime" && e["blocking"] == true)
        .unwrap_or_else(|| panic!("no runtime refusal: {}", text(&out)));
    let message = refused["message"].as_str().expect("message");
    assert!(
        message.contains("declares version 4.1.0") && message.contains("not 4.2.0"),
        "{message}"
    );
    let untouched = Untouched::capture(&g.sandbox);
    let out = run(&g.inventory, &upgrade_args(&old, "4.2.0"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    untouched.assert_same(&g.sandbox, "a mislabelled archive refused");

    let bare = g.sandbox.root.join("undeclared-4.2.0.tar.gz");
    undeclared_archive(&g.sandbox, "4.2.0", &bare);
    let out = plan(&bare.display().to_string());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        events(&out).iter().any(|e| e["event"] == "preflight"
            && e["check"] == "runtime"
            && e["warning"] == true
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("declares no version"))),
        "{}",
        text(&out)
    );
    // The published archive declares 4.2.0 and plans without a warning.
    let out = plan(&g.archive("4.2.0"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        events(&out)
            .iter()
            .any(|e| e["check"] == "runtime" && e["blocking"] == false && e["warning"] == false),
        "{}",
        text(&out)
    );
}
