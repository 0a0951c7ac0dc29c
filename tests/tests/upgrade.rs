//! End to end: the real `hubshift` upgrades a two-node hubsim group running
//! on real agents over mTLS against a real PostgreSQL, on both of the
//! agents' drivers: hubsim host processes with tar.gz runtimes (`process`),
//! and hubsim containers of the local Docker Engine with `docker save`
//! image archives (`docker`). Each case is written once as a function of the
//! driver; `on_both_drivers!` makes a `CASE::process` and a `CASE::docker`
//! test of it, with the same assertions (plus, where the drivers differ,
//! each one's own on top). Without an engine the docker tests fail, unless
//! `HUBSHIFT_SKIP_DOCKER=1` skips them explicitly (one line on stderr).

#[macro_use]
mod support;

use hubshift_common::pb::HubRole;
use hubshift_sim::measure;
use hubshift_sim::sandbox::{HubDriver, Sandbox, SandboxOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";

/// A running group at FROM with hub data planted, its inventory and the TO archive.
struct Setup {
    sandbox: Sandbox,
    planted: Vec<(std::path::PathBuf, Vec<u8>)>,
    inventory: std::path::PathBuf,
    archive: String,
}

async fn setup(driver: HubDriver) -> Setup {
    setup_with(driver, SandboxOptions::default().timing).await
}

async fn setup_with(driver: HubDriver, timing: hubshift_sim::timing::SimTiming) -> Setup {
    let sandbox = Sandbox::start(SandboxOptions {
        version: FROM.into(),
        timing,
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
    let archive = sandbox.runtime_archive(TO).unwrap().display().to_string();
    // The archive the driver takes (the controller picks the format by name).
    let image = archive.ends_with(".tar");
    assert_eq!(image, driver == HubDriver::Docker, "{archive}");
    Setup {
        sandbox,
        planted,
        inventory,
        archive,
    }
}

/// Runs `hubshift upgrade --yes` to TO with `archive` to completion.
fn upgrade(inventory: &Path, archive: &str) -> std::process::Output {
    run(inventory, &upgrade_args(archive, TO))
}

/// Starts `hubshift upgrade` in the background; returns it and its run id.
fn start_upgrade(inventory: &Path, archive: &str) -> (Running, String) {
    let mut running = Running::spawn(inventory, &upgrade_args(archive, TO));
    let started = running.wait_for(Duration::from_secs(60), "run_started", |e| {
        e["event"] == "run_started"
    });
    let run_id = started["run"].as_str().unwrap().to_string();
    (running, run_id)
}

/// Everything an upgraded group must show.
/// Applies a base and its delta into `dir` by hand: GNU tar, the deletion
/// list through `xargs rm`, GNU tar again (docs/backups.md).
fn apply_pair(base: &Path, delta: &Path, dir: &Path) {
    let tar = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("tar").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    tar(&[
        "-xzf".as_ref(),
        base.as_os_str(),
        "-C".as_ref(),
        dir.as_os_str(),
    ]);
    let deleted = tar(&[
        "-xzOf".as_ref(),
        delta.as_os_str(),
        "hubshift-delta.deleted".as_ref(),
    ]);
    for rel in deleted.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let at = dir.join(String::from_utf8_lossy(rel).as_ref());
        let _ = std::fs::remove_dir_all(&at).or_else(|_| std::fs::remove_file(&at));
    }
    tar(&[
        "-xzf".as_ref(),
        delta.as_os_str(),
        "-C".as_ref(),
        dir.as_os_str(),
        "--exclude=hubshift-delta.*".as_ref(),
    ]);
}

async fn assert_upgraded(
    sandbox: &Sandbox,
    inventory: &Path,
    run_id: &str,
    planted: &[(std::path::PathBuf, Vec<u8>)],
    since: SystemTime,
) {
    let (p, s) = (
        sandbox.status(0).await.unwrap(),
        sandbox.status(1).await.unwrap(),
    );
    assert_eq!(p.active_runtime, TO, "primary runtime");
    assert_eq!(s.active_runtime, TO, "secondary runtime");
    sandbox
        .wait_role(0, HubRole::Active, Duration::from_secs(30))
        .await
        .unwrap();
    sandbox
        .wait_role(1, HubRole::Standby, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!p.certificate_sha256.is_empty());
    assert_eq!(
        p.certificate_sha256, s.certificate_sha256,
        "certificate store copied"
    );
    assert!(
        s.staged_runtimes.contains(&FROM.to_string()),
        "old runtime kept on the secondary"
    );

    let db = sandbox.db.connect().await.unwrap();
    assert_eq!(
        schema_version(&db).await.as_deref(),
        Some(TO),
        "schema carries the new version"
    );

    // The journal: every step done.
    let out = run(inventory, &["runs", "--run", run_id]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    let run = find(&ev, "run").expect("run record");
    assert_eq!(run["state"], "done", "{run}");
    let steps: Vec<_> = ev.iter().filter(|e| e["event"] == "run_step").collect();
    assert_eq!(steps.len(), 15, "{steps:#?}");
    assert!(steps.iter().all(|s| s["state"] == "done"), "{steps:#?}");

    // The backup: exists on the primary's host, digest matches, GNU tar lists it,
    // and it holds the hub data byte for byte.
    let facts = &run["facts"];
    let path = facts["backup_path"].as_str().expect("backup path");
    let sha = facts["backup_sha256"].as_str().expect("backup sha");
    let (actual, _) = hubshift_common::digest::sha256_file(Path::new(path)).unwrap();
    assert_eq!(actual, sha);
    let copy = facts["backup_copy"].as_str().expect("controller-side copy");
    assert_eq!(
        hubshift_common::digest::sha256_file(Path::new(copy))
            .unwrap()
            .0,
        sha
    );
    // Pre-copy: the backup of record is a delta against the base taken
    // before the stop; the pair, applied with GNU tar as docs/backups.md
    // says, is the appdata of the stopped primary.
    let pre = &facts["pre_copy"];
    assert_eq!(pre["delta"], true, "a delta against the base: {pre}");
    let base_id = pre["base_id"].as_str().unwrap();
    let base = Path::new(path).with_file_name(format!("{base_id}.tar.gz"));
    assert_eq!(
        hubshift_common::digest::sha256_file(&base).unwrap().0,
        pre["base_sha256"].as_str().unwrap()
    );
    let base_copy = Path::new(copy).with_file_name(format!("{base_id}.tar.gz"));
    assert_eq!(
        hubshift_common::digest::sha256_file(&base_copy).unwrap().0,
        pre["base_sha256"].as_str().unwrap(),
        "the base copied beside the delta"
    );
    assert!(
        pre["delta_bytes"].as_u64().unwrap() < pre["base_bytes"].as_u64().unwrap(),
        "{pre}"
    );
    let unpacked = tempfile::tempdir().unwrap();
    apply_pair(&base, Path::new(path), unpacked.path());
    for needle in [
        "appdata/intelligencehub-configuration.json",
        "appdata/intelligencehub-certificatestore.pkcs12",
        "appdata/history/hub-history.sqlite",
        "appdata/storeforward/segment-000017.bin",
    ] {
        assert!(
            unpacked.path().join(needle).is_file(),
            "{needle} not in the backup"
        );
    }
    for (file, bytes) in planted {
        assert_eq!(
            &std::fs::read(file).unwrap(),
            bytes,
            "{} changed",
            file.display()
        );
        if let Ok(rel) = file.strip_prefix(&sandbox.nodes[0].appdata) {
            assert_eq!(
                &std::fs::read(unpacked.path().join("appdata").join(rel)).unwrap(),
                bytes,
                "backup copy of {}",
                rel.display()
            );
        }
    }

    // Data flow: never two nodes at once; outages bounded by the hub's own times.
    let ticks = measure::fetch_ticks(&db, since).await.unwrap();
    assert!(ticks.len() > 20, "data flowed: {} ticks", ticks.len());
    assert_eq!(
        measure::split_brain(&ticks, sandbox.timing.tick_interval),
        None,
        "split brain"
    );
    let (gap, from, to) = measure::largest_gap(&ticks).expect("a gap");
    let bound =
        sandbox.timing.takeover_timeout + sandbox.timing.start_delay + Duration::from_secs(3);
    assert!(
        gap < bound,
        "largest gap {gap:?} ({} -> {}) exceeds {bound:?}",
        from.node,
        to.node
    );
    assert!(
        ticks.iter().any(|t| t.version == TO && t.node == "hub-a"),
        "upgraded primary produces data"
    );
    for i in 0..2 {
        assert_driver_runs(sandbox, i, TO).await;
    }
}

on_both_drivers!(
    plan_changes_nothing_upgrade_completes_second_upgrade_refused_then_rollback,
    controller_killed_after_schema_drop_then_resume_completes,
    failed_step_exits_1_naming_the_next_action_and_resume_finishes_after_the_fix,
    an_old_secondary_that_does_not_shut_down_is_stopped_by_hubshift,
    an_old_secondary_that_keeps_producing_is_stopped_before_two_nodes_produce,
    pause_before_a_step_and_stop_from_another_process_then_resume,
);

async fn plan_changes_nothing_upgrade_completes_second_upgrade_refused_then_rollback(
    driver: HubDriver,
) {
    let Setup {
        sandbox,
        planted,
        inventory,
        archive,
    } = setup(driver).await;
    let db = sandbox.db.connect().await.unwrap();

    // plan: preflight passes, steps listed, nothing changes.
    let untouched = Untouched::capture(&sandbox);
    let out = run(
        &inventory,
        &["plan", "-g", GROUP, "--runtime", &archive, "--version", TO],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    assert!(
        ev.iter()
            .filter(|e| e["event"] == "preflight")
            .all(|e| e["blocking"] == false),
        "{ev:#?}"
    );
    assert_eq!(ev.iter().filter(|e| e["event"] == "plan_step").count(), 15);
    untouched.assert_same(&sandbox, "plan");
    assert_eq!(schema_version(&db).await.as_deref(), Some(FROM));
    let journal = db
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'hubshift'", &[])
        .await
        .unwrap();
    assert!(journal.is_none(), "plan wrote no journal");
    assert_eq!(sandbox.status(0).await.unwrap().role(), HubRole::Active);

    // An inventory whose node names and agent addresses do not belong
    // together is refused before anything is touched.
    let swapped = sandbox.root.join("swapped.toml");
    let good = std::fs::read_to_string(&inventory).unwrap();
    let (a, b) = (&sandbox.nodes[0].addr, &sandbox.nodes[1].addr);
    std::fs::write(
        &swapped,
        good.replace(a.as_str(), "@A@")
            .replace(b.as_str(), a)
            .replace("@A@", b),
    )
    .unwrap();
    let out = run(
        &swapped,
        &["plan", "-g", GROUP, "--runtime", &archive, "--version", TO],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let mismatch = events(&out)
        .into_iter()
        .find(|e| e["event"] == "preflight" && e["check"] == "node" && e["node"] == "hub-a")
        .unwrap_or_else(|| panic!("no node finding: {}", text(&out)));
    assert!(
        mismatch["message"]
            .as_str()
            .unwrap()
            .contains("runs HA node \"hub-b\", not \"hub-a\""),
        "{mismatch}"
    );

    // status: both nodes, their roles and runtimes, as the agents report them.
    let out = run(&inventory, &["status", "-g", GROUP]);
    assert!(out.status.success(), "{}", text(&out));
    let nodes: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "node_status")
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:#?}");
    assert_eq!(
        (nodes[0]["node"].as_str(), nodes[0]["role"].as_str()),
        (Some("hub-a"), Some("active"))
    );
    assert_eq!(
        (nodes[1]["node"].as_str(), nodes[1]["role"].as_str()),
        (Some("hub-b"), Some("standby"))
    );
    assert!(
        nodes
            .iter()
            .all(|n| n["active_runtime"] == FROM && n["reachable"] == true)
    );

    // Without a terminal to confirm on, `upgrade` needs --yes; nothing happens.
    let out = run(
        &inventory,
        &[
            "upgrade",
            "-g",
            GROUP,
            "--runtime",
            &archive,
            "--version",
            TO,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    untouched.assert_same_processes(&sandbox, "refused");
    assert_eq!(schema_version(&db).await.as_deref(), Some(FROM));

    // A runtime archive the agents refuse: the run fails at staging (exit 1),
    // blocks new upgrades until abandoned, and changed nothing.
    let bad = sandbox.root.join(match driver {
        HubDriver::Process => "corrupt-runtime.tar.gz",
        HubDriver::Docker => "corrupt-image.tar",
    });
    std::fs::write(&bad, b"this is neither a gzip stream nor a tar").unwrap();
    let bad = bad.display().to_string();
    let out = upgrade(&inventory, &bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = events(&out);
    let bad_run = find(&ev, "run_started").unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ev.iter()
            .any(|e| e["event"] == "step_failed" && e["name"] == "stage_runtime"),
        "{ev:#?}"
    );
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "step_started" && e["name"] == "stop_primary"),
        "{ev:#?}"
    );
    let out = upgrade(&inventory, &archive);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("hubshift resume --run {bad_run}")),
        "{}",
        text(&out)
    );
    let out = run(&inventory, &["abandon", "--run", &bad_run]);
    assert!(out.status.success(), "{}", text(&out));
    untouched.assert_same_processes(&sandbox, "refused");
    assert!(
        sandbox.status(0).await.unwrap().staged_runtimes == vec![FROM.to_string()],
        "nothing staged"
    );

    // upgrade, and meanwhile a second upgrade of the same group: refused with exit 3.
    let since = SystemTime::now();
    let (first, run_id) = start_upgrade(&inventory, &archive);
    let second = upgrade(&inventory, &archive);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("is locked by run {run_id}")),
        "refusal names the run holding the lock: {}",
        text(&second)
    );
    let (code, seen) = first.finish(Duration::from_secs(240));
    assert_eq!(code, Some(0), "{seen:#?}");
    let finished = find(&seen, "run_finished").expect("run_finished");
    let windows = finished["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{finished}");
    assert!(
        seen.iter()
            .filter(|e| e["event"] == "outage_window")
            .count()
            == 2
    );
    assert_eq!(finished["backup_sha256"].as_str().map(str::len), Some(64));
    assert!(finished["single_node_ms"].as_u64().is_some(), "{finished}");
    // Pre-copy: base and delta sizes and the delta's time, reported.
    let pre = &finished["pre_copy"];
    assert!(
        pre["delta"] == true
            && pre["base_bytes"].as_u64().is_some_and(|b| b > 0)
            && pre["delta_bytes"].as_u64().is_some()
            && pre["delta_ms"].as_u64().is_some(),
        "{finished}"
    );
    // Reported windows are conservative: never shorter than the data gap
    // the hubs' ticks show, give or take one 100 ms poll.
    let db = sandbox.db.connect().await.unwrap();
    let ticks = measure::fetch_ticks(&db, since).await.expect("read ticks");
    let measured = measure::no_active_windows(&ticks, 4 * sandbox.timing.tick_interval);
    assert_eq!(measured.len(), 2, "two data gaps: {measured:?}");
    for (w, m) in windows.iter().zip(&measured) {
        let reported = Duration::from_millis(w["duration_ms"].as_u64().unwrap());
        assert!(
            reported + Duration::from_millis(100) >= m.length,
            "window {} reported {reported:?}, data gap {:?}",
            w["window"],
            m.length
        );
    }
    let log = sandbox
        .nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(&n.agent_log)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", n.agent_log.display()))
        })
        .collect::<String>();
    // The check below means something only on the logs the agents wrote.
    assert!(
        log.contains(hub_start_record(driver)),
        "agent logs hold no start record: {log}"
    );
    assert!(
        !log.contains(sandbox.db.password()),
        "database password in an agent log"
    );
    assert!(
        !seen
            .iter()
            .any(|e| e.to_string().contains(sandbox.db.password())),
        "password in JSON events"
    );

    assert_upgraded(&sandbox, &inventory, &run_id, &planted, since).await;

    // Rollback: back to 4.1.0 with the run's backup restored on the primary,
    // data flowing on the secondary meanwhile, never two nodes at once.
    let appdata_before_rollback = snapshot(&sandbox.nodes[0].appdata);
    let since = SystemTime::now();
    let out = run(&inventory, &["rollback", "--run", &run_id, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(sandbox.db.password()),
        "database password in the output of a run"
    );
    let ev = events(&out);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "step_finished" && e["name"] == "restore_backup"),
        "{ev:#?}"
    );
    for i in 0..2 {
        assert_eq!(
            sandbox.status(i).await.unwrap().active_runtime,
            FROM,
            "node {i} back on {FROM}"
        );
    }
    sandbox
        .wait_role(0, HubRole::Active, Duration::from_secs(30))
        .await
        .unwrap();
    sandbox
        .wait_role(1, HubRole::Standby, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(schema_version(&db).await.as_deref(), Some(FROM));
    for (file, bytes) in &planted {
        assert_eq!(
            &std::fs::read(file).unwrap(),
            bytes,
            "{} after rollback",
            file.display()
        );
    }
    // The replaced appdata was kept aside, not deleted.
    let parent = sandbox.nodes[0].appdata.parent().unwrap();
    let aside: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("appdata.replaced-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one set-aside appdata tree");
    let kept = snapshot(&aside[0].path());
    assert_eq!(
        kept.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        appdata_before_rollback
            .iter()
            .map(|(p, _)| p)
            .collect::<Vec<_>>(),
        "the set-aside tree is the appdata the rollback replaced"
    );
    let ticks = measure::fetch_ticks(&db, since).await.unwrap();
    assert_eq!(
        measure::split_brain(&ticks, sandbox.timing.tick_interval),
        None,
        "split brain during rollback"
    );
    assert!(
        ticks.iter().any(|t| t.version == FROM && t.node == "hub-a"),
        "hub-a produces at {FROM} again"
    );
    for i in 0..2 {
        assert_driver_runs(&sandbox, i, FROM).await;
    }
    let out = run(&inventory, &["runs"]);
    let ev = events(&out);
    let original = ev
        .iter()
        .find(|e| e["event"] == "run" && e["id"] == run_id.as_str())
        .expect("original run listed");
    assert_eq!(original["state"], "rolled_back");
    let out = run(&inventory, &["rollback", "--run", &run_id, "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a second rollback is refused: {}",
        text(&out)
    );
}

async fn controller_killed_after_schema_drop_then_resume_completes(driver: HubDriver) {
    let Setup {
        sandbox,
        planted,
        inventory,
        archive,
    } = setup(driver).await;
    let since = SystemTime::now();

    let (mut first, run_id) = start_upgrade(&inventory, &archive);
    first.wait_for(Duration::from_secs(120), "drop_schema finished", |e| {
        e["event"] == "step_finished" && e["name"] == "drop_schema"
    });
    first.child.kill().unwrap(); // SIGKILL: no clean-up of any kind
    let _ = first.child.wait();

    let db = sandbox.db.connect().await.unwrap();
    let state: String = db
        .query_one("SELECT state FROM hubshift.runs WHERE id = $1", &[&run_id])
        .await
        .unwrap()
        .get(0);
    assert_ne!(state, "done");
    // `runs` lists the interrupted run.
    let out = run(&inventory, &["runs"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&run_id));
    // Its report, made while it is cut off, says so and names what is next.
    let report = report_json(&inventory, &run_id);
    assert_eq!(report["state"], "interrupted", "{report:#}");
    assert_eq!(
        report["next"],
        format!("hubshift resume --run {run_id}").as_str(),
        "{report:#}"
    );
    assert_eq!(attempts(&report, "drop_schema"), ["done"], "{report:#}");

    // Past the schema drop the run cannot be abandoned, only finished or reversed.
    let out = run(&inventory, &["abandon", "--run", &run_id]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("drop_schema"), "{}", text(&out));

    let out = run(&inventory, &["resume", "--run", &run_id]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    assert!(find(&ev, "run_resumed").is_some(), "{ev:#?}");
    assert!(find(&ev, "run_finished").is_some(), "{ev:#?}");
    // Already-done steps were not run again.
    assert!(
        !ev.iter().any(|e| e["event"] == "step_started"
            && (e["name"] == "drop_schema" || e["name"] == "backup")),
        "{ev:#?}"
    );

    assert_upgraded(&sandbox, &inventory, &run_id, &planted, since).await;
    // The report, from the resuming controller's journal: one axis for
    // both controllers, the drop done once, every step done in the end.
    let report = report_json(&inventory, &run_id);
    assert_eq!(report["state"], "done", "{report:#}");
    assert_eq!(attempts(&report, "drop_schema"), ["done"], "{report:#}");
    let kinds: Vec<&str> = report["markers"]
        .as_array()
        .expect("markers")
        .iter()
        .map(|m| m["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["upgrade", "resume"], "{report:#}");
    for name in ["create_and_start", "await_handback", "await_standby"] {
        assert_eq!(
            attempts(&report, name).last(),
            Some(&"done"),
            "{name}: {report:#}"
        );
    }
    // Resuming a finished run changes nothing and says so.
    let out = run(&inventory, &["resume", "--run", &run_id]);
    assert!(out.status.success(), "{}", text(&out));
}

/// `hubshift report --run ID --format json`.
fn report_json(inventory: &std::path::Path, run_id: &str) -> serde_json::Value {
    let out = run(inventory, &["report", "--run", run_id, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// The outcomes of each attempt of step `name`, in order.
fn attempts<'a>(report: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["name"] == name)
        .map(|s| s["outcome"].as_str().expect("outcome"))
        .collect()
}

async fn failed_step_exits_1_naming_the_next_action_and_resume_finishes_after_the_fix(
    driver: HubDriver,
) {
    let Setup {
        mut sandbox,
        planted,
        inventory,
        archive,
    } = setup(driver).await;
    // Short takeover wait, so the failure comes quickly.
    let text_inv = std::fs::read_to_string(&inventory).unwrap();
    std::fs::write(
        &inventory,
        text_inv.replace("takeover = 60", "takeover = 4"),
    )
    .unwrap();
    let since = SystemTime::now();

    let (mut first, run_id) = start_upgrade(&inventory, &archive);
    first.wait_for(Duration::from_secs(60), "stop_primary finished", |e| {
        e["event"] == "step_finished" && e["name"] == "stop_primary"
    });
    // The secondary's agent dies right after the primary stopped: its hub
    // keeps running (and takes over), but the controller cannot see it. After
    // the takeover timeout hubshift starts the primary again (nothing
    // irreversible happened) and fails the run, saying so.
    sandbox.kill_agent(1).expect("a live agent killed");
    let (code, seen) = first.finish(Duration::from_secs(120));
    assert_eq!(code, Some(1), "{seen:#?}");
    let failed = find(&seen, "step_failed").expect("step_failed");
    assert_eq!(failed["name"], "await_takeover", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("hub-a was started again and is active"),
        "{failed}"
    );
    let next = find(&seen, "run_failed").expect("run_failed");
    assert_eq!(next["next"], format!("hubshift resume --run {run_id}"));
    // Nothing destructive happened: the schema is still the old one, and
    // the primary serves again.
    let db = sandbox.db.connect().await.unwrap();
    assert_eq!(schema_version(&db).await.as_deref(), Some(FROM));
    sandbox
        .wait_role(0, HubRole::Active, Duration::from_secs(30))
        .await
        .unwrap();

    // The fix: the agent comes back (and re-adopts its running hub).
    sandbox.restart_agent(1).await.unwrap();
    let out = run(&inventory, &["resume", "--run", &run_id]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "step_started" && e["name"] == "stage_runtime"),
        "done steps are not repeated: {ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e["event"] == "step_started" && e["name"] == "stop_primary"),
        "the hand-over the fallback undid starts again at the stop: {ev:#?}"
    );
    assert_upgraded(&sandbox, &inventory, &run_id, &planted, since).await;
}

async fn an_old_secondary_that_does_not_shut_down_is_stopped_by_hubshift(driver: HubDriver) {
    let Setup {
        sandbox,
        planted,
        inventory,
        archive,
    } = setup(driver).await;
    // hubshift would stop an old secondary that is still running after
    // secondary_shutdown; longer than this test waits for the run, so only
    // the upgraded primary becoming active can be why hub-b is stopped.
    let text = std::fs::read_to_string(&inventory).unwrap();
    assert!(text.contains("secondary_shutdown = 10\n"), "{text}");
    std::fs::write(
        &inventory,
        text.replace("secondary_shutdown = 10\n", "secondary_shutdown = 600\n"),
    )
    .unwrap();
    let since = SystemTime::now();
    let (mut first, run_id) = start_upgrade(&inventory, &archive);
    first.wait_for(Duration::from_secs(120), "drop_schema finished", |e| {
        e["event"] == "step_finished" && e["name"] == "drop_schema"
    });
    // hub-b, now the active node, freezes: it will not notice the new schema
    // and shut itself down, and its agent still sees it running and active.
    freeze(&sandbox, 1);
    let (code, seen) = first.finish(Duration::from_secs(240));
    assert_eq!(code, Some(0), "{seen:#?}");
    let finished = find(&seen, "run_finished").expect("run_finished");
    let warnings = finished["warnings"].to_string();
    assert!(
        warnings.contains("hub-b") && warnings.contains("stopped by hubshift"),
        "{finished}"
    );
    // It was stopped once hub-a was active (the run ended well before
    // secondary_shutdown): its stop was asked no sooner than that. How fast
    // the hand-back is belongs to `cargo bench -p hubshift-tests`.
    let db = sandbox.db.connect().await.unwrap();
    let facts: serde_json::Value = db
        .query_one("SELECT facts FROM hubshift.runs WHERE id = $1", &[&run_id])
        .await
        .unwrap()
        .get(0);
    let active = facts["primary_active_ms"].as_u64().expect("primary active");
    let down = facts["secondaries_down_ms"]
        .as_u64()
        .expect("secondary down");
    assert!(
        down >= active,
        "hub-b stopped before hub-a was active: {facts}"
    );
    assert_upgraded(&sandbox, &inventory, &run_id, &planted, since).await;
}

/// An old secondary that never sees the new schema — it reaches the
/// database with other credentials, which the new schema does not grant —
/// keeps its role and keeps producing data. hubshift must stop it: the
/// split-brain check over the data ticks fails if both nodes produce at once.
async fn an_old_secondary_that_keeps_producing_is_stopped_before_two_nodes_produce(
    driver: HubDriver,
) {
    // A hub that takes 3 s to start, like a JVM: hubshift's grace for an old
    // secondary to shut itself down (1 s here) ends before the upgraded
    // primary can claim the active role.
    let Setup {
        sandbox,
        planted,
        inventory,
        archive,
    } = setup_with(
        driver,
        hubshift_sim::timing::SimTiming {
            start_delay: Duration::from_secs(3),
            ..hubshift_sim::timing::SimTiming::fast()
        },
    )
    .await;
    // hub-b runs as its own role with rights on the current schemas only.
    let db = sandbox.db.connect().await.unwrap();
    db.batch_execute(support::HUB_B_OWN_ROLE).await.unwrap();
    // The database as the hubs reach it (a container: on its network's gateway).
    let host = if sandbox.hub_db_host.is_empty() {
        sandbox.db.host()
    } else {
        &sandbox.hub_db_host
    };
    let jdbc_b = format!(
        "jdbc:postgresql://{host}:{}/{}?user=hub_b&password=hub-b-secret",
        sandbox.db.port(),
        sandbox.db.dbname()
    );
    let mut b = sandbox.client(1).await.unwrap();
    b.stop(hubshift_common::pb::StopRequest {
        timeout_seconds: 10,
    })
    .await
    .unwrap();
    b.start(hubshift_common::pb::StartRequest {
        mode: hubshift_common::pb::StartMode::Start as i32,
        node: "hub-b".into(),
        jdbc_uri: jdbc_b,
    })
    .await
    .unwrap();
    sandbox
        .wait_role(1, HubRole::Standby, Duration::from_secs(60))
        .await
        .unwrap();
    // hubshift waits for it to shut itself down no longer than this.
    let text_inv = std::fs::read_to_string(&inventory).unwrap();
    std::fs::write(
        &inventory,
        text_inv.replace("secondary_shutdown = 10", "secondary_shutdown = 1"),
    )
    .unwrap();
    let since = SystemTime::now();

    let (running, run_id) = start_upgrade(&inventory, &archive);
    // hub-b's output is read while the run goes on: a container's output
    // goes with the container, which the secondary's start replaces.
    const KEPT_ON: &str = "staying active and producing data";
    let done = std::sync::atomic::AtomicBool::new(false);
    let (code, seen, log) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            loop {
                let log = sandbox.nodes[1].hub_log();
                if log.contains(KEPT_ON) || done.load(std::sync::atomic::Ordering::SeqCst) {
                    return log;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let (code, seen) = running.finish(Duration::from_secs(240));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (code, seen, watcher.join().expect("log watcher"))
    });
    assert_eq!(code, Some(0), "{seen:#?}");
    let finished = find(&seen, "run_finished").expect("run_finished");
    assert!(
        finished["warnings"].to_string().contains("hub-b"),
        "{finished}"
    );
    // It really kept producing after the new schema appeared.
    assert!(
        log.contains(KEPT_ON),
        "hub-b did not run on without the schema:\n{log}"
    );
    let ticks = measure::fetch_ticks(&db, since).await.expect("read ticks");
    assert_eq!(
        measure::split_brain(
            &ticks,
            hubshift_sim::timing::SimTiming::fast().tick_interval
        ),
        None,
        "two nodes produced at once"
    );
    assert_upgraded(&sandbox, &inventory, &run_id, &planted, since).await;
}

/// `--pause-before` parks a run at an approval gate (exit 4, journaled
/// `paused`, the secondary serving); `hubshift stop` from another process
/// parks a resumed run at its next safe point (exit 4, `stopped`); `resume`
/// finishes; the journal names who acted each time.
async fn pause_before_a_step_and_stop_from_another_process_then_resume(driver: HubDriver) {
    let Setup {
        sandbox,
        planted,
        inventory,
        archive,
    } = setup(driver).await;
    let since = SystemTime::now();
    let upgrade_args = |pause: &'static str| {
        vec![
            "upgrade",
            "-g",
            GROUP,
            "--runtime",
            archive.as_str(),
            "--version",
            TO,
            "--yes",
            "--pause-before",
            pause,
        ]
    };
    // Not at a point inside a hand-over.
    let out = run(&inventory, &upgrade_args("await_takeover"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not a step a run can be parked before"),
        "{}",
        text(&out)
    );

    let out = run(&inventory, &upgrade_args("drop_schema"));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let ev = events(&out);
    let paused = find(&ev, "run_paused").expect("run_paused");
    assert_eq!(paused["name"], "drop_schema");
    let run_id = paused["run"].as_str().unwrap().to_string();
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "step_started" && e["name"] == "drop_schema"),
        "{ev:#?}"
    );
    let db = sandbox.db.connect().await.unwrap();
    assert_eq!(schema_version(&db).await.as_deref(), Some(FROM));
    sandbox
        .wait_role(1, HubRole::Active, Duration::from_secs(30))
        .await
        .unwrap();
    let out = run(&inventory, &["runs", "--run", &run_id]);
    let rec = find(&events(&out), "run").cloned().expect("run record");
    assert_eq!(rec["state"], "paused", "{rec}");

    // Resumed, then stopped from another process at the next safe point.
    let mut resumed = Running::spawn(&inventory, &["resume", "--run", &run_id]);
    resumed.wait_for(Duration::from_secs(120), "drop_schema started", |e| {
        e["event"] == "step_started" && e["name"] == "drop_schema"
    });
    let out = run(&inventory, &["stop", "--run", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, seen) = resumed.finish(Duration::from_secs(240));
    assert_eq!(code, Some(4), "{seen:#?}");
    let stopped = find(&seen, "run_stopped").expect("run_stopped");
    // Never inside a hand-over: not right after the stop or create+start.
    assert!(
        !matches!(
            stopped["name"].as_str(),
            Some("await_takeover" | "await_handback")
        ),
        "{stopped}"
    );
    assert!(
        sandbox.status(0).await.unwrap().role() == HubRole::Active
            || sandbox.status(1).await.unwrap().role() == HubRole::Active,
        "a node serves while the run is stopped"
    );
    let out = run(&inventory, &["runs", "--run", &run_id]);
    let rec = find(&events(&out), "run").cloned().expect("run record");
    assert_eq!(rec["state"], "stopped", "{rec}");

    let out = run(&inventory, &["resume", "--run", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&inventory, &["runs", "--run", &run_id]);
    let rec = find(&events(&out), "run").cloned().expect("run record");
    let actions: Vec<&str> = rec["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|a| a["action"].as_str().expect("an audit action"))
        .collect();
    assert_eq!(actions, ["upgrade", "resume", "stop", "resume"], "{rec}");
    assert!(
        rec["audit"][0]["host"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    // Its report tells the same story on one time axis: the pause and the
    // stop taking effect between the people's actions, each step done.
    let report = report_json(&inventory, &run_id);
    let kinds: Vec<&str> = report["markers"]
        .as_array()
        .expect("markers")
        .iter()
        .map(|m| m["kind"].as_str().expect("a marker kind"))
        .collect();
    assert_eq!(
        kinds,
        ["upgrade", "paused", "resume", "stop", "stopped", "resume"],
        "{report:#}"
    );
    let steps = report["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["outcome"] == "done"), "{report:#}");
    assert_eq!(report["windows"].as_array().map(Vec::len), Some(2));
    // Stop refuses what is not a running run, and changes nothing.
    let out = run(&inventory, &["stop", "--run", &run_id]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));
    let out = run(&inventory, &["stop", "--run", "20260101T000000-nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no run 20260101T000000-nosuch"),
        "{}",
        text(&out)
    );
    assert_upgraded(&sandbox, &inventory, &run_id, &planted, since).await;
}
