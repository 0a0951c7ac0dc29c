//! Fault injection, end to end: real `hubshift`, agents, hubsim and
//! PostgreSQL. Each case injects one fault at one moment of an upgrade
//! (the controller killed at the start of or inside a step, an agent
//! killed, PostgreSQL restarted inside an outage window, a hub frozen or
//! dying) and then takes at most the operator action `docs/faults.md`
//! documents for it. Every case must end with one active node and the
//! others standby on one version, no split brain, the planted hub data
//! intact, and no data gap beyond the documented bound ([`Bounds`]) —
//! measured from hubsim's ticks.
//!
//! Every injection proves it landed: the controller is held (SIGSTOP)
//! while the journal in the group's database is read, so the step it names
//! as running is the step the fault hits; the fault must reach a live
//! process (a signal's result, the process state it leaves); and a
//! controller killed inside a step must leave that step running in the
//! journal, with no `step_finished` written. A fault that came too late
//! fails the case.
//!
//! The cases are grouped into a few tests that run in parallel, each with
//! its own sandbox; inside a test, cases run one after the other on the
//! same group, each upgrading it to the next version. The controller
//! killed at the start of each step runs on both of the agents' drivers
//! (`CASE::process`, `CASE::docker`: hubsim containers of the local Docker
//! Engine; see `support::engine_or_skip`); the other cases on the process
//! driver.

#[macro_use]
mod support;

use hubshift_common::pb::HubRole;
use hubshift_sim::configs::InventoryTimeouts;
use hubshift_sim::measure;
use hubshift_sim::sandbox::{HubDriver, Sandbox, SandboxOptions};
use hubshift_sim::timing::SimTiming;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use support::*;

/// The `[timeouts]` the fault inventories give hubshift: shorter waits than
/// the sandbox's, so that a fallback or a failed wait comes within seconds.
fn fault_timeouts() -> InventoryTimeouts {
    InventoryTimeouts {
        takeover: 8,
        secondary_shutdown: 5,
        start: 20,
        ..InventoryTimeouts::sandbox(&SimTiming::fast())
    }
}

/// Slack on every outage bound: process start-up, gRPC round trips and
/// the test's own polls on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(3);

/// What the controller's takeover wait adds to the hubs' own takeover time
/// before it counts a frozen secondary out (docs/faults.md, step 5).
const TAKEOVER_MARGIN: Duration = Duration::from_secs(2);

/// hubshift's poll of the hubs (docs/faults.md: *p*).
const POLL: Duration = Duration::from_millis(100);

/// The first pause before `await_handback` starts again a primary that
/// ended while starting (docs/faults.md, step 11: "2–8 s apart").
const FIRST_RESTART_PAUSE: Duration = Duration::from_secs(2);

/// The test's own time to take an operator action while nobody serves:
/// running `hubshift abandon`, which may wait up to 3 s for the lock the
/// killed controller's session held.
const OPERATOR: Duration = Duration::from_secs(5);

/// Largest data gaps docs/faults.md allows ("Step by step"), from the
/// hub's own timings — *T* takeover timeout, *S* start, *D* stop, the
/// heartbeat — hubshift's poll *p*, the inventory's timeouts, and [`SLACK`].
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// A hand-over without fallback: window 1 (stop_primary: D + T +
    /// heartbeat) or window 2 (create_and_start, await_handback: S +
    /// heartbeat + p), whichever is longer.
    hand_over: Duration,
    /// await_takeover when no candidate can take over (every one exited,
    /// frozen, or not running): the primary's stop, then T as the
    /// inventory tells it (`timeouts.hub_takeover`, whole seconds) and the
    /// controller's margin until the fallback starts the old primary, then
    /// S. A controller that waited out `timeouts.takeover` instead would
    /// need `timeouts.takeover` + S and fail this bound.
    no_candidate_fallback: Duration,
    /// Steps 5–7: the serving secondary fails; the old primary is started
    /// again and active after T + S.
    serving_fallback: Duration,
    /// The end check: the upgraded primary down while the secondary is not
    /// yet serving — S + T.
    nobody_serving: Duration,
    /// await_handback: the upgraded primary died while it started and is
    /// started again after the first pause — window 2 + pause + S.
    restarted_while_starting: Duration,
    /// await_handback: the upgraded primary frozen while it starts serves
    /// no sooner than the run gives up on it (`timeouts.start` +
    /// `timeouts.secondary_shutdown`) and it thaws — then window 2.
    frozen_while_starting: Duration,
    /// The controller killed while nobody serves, then `abandon`: the stop,
    /// the operator's action, then the primary's start and takeover.
    abandoned: Duration,
}

impl Bounds {
    fn new(t: &SimTiming, inv: &InventoryTimeouts) -> Bounds {
        let (tt, s, d, hb, p) = (
            t.takeover_timeout,
            t.start_delay,
            t.stop_delay,
            t.heartbeat_interval,
            POLL,
        );
        let window1 = d + tt + hb;
        let window2 = s + hb + p;
        Bounds {
            hand_over: window1.max(window2) + SLACK,
            no_candidate_fallback: d
                + Duration::from_secs(inv.hub_takeover)
                + TAKEOVER_MARGIN
                + s
                + hb
                + p
                + SLACK,
            serving_fallback: tt + s + hb + p + SLACK,
            nobody_serving: s + tt + hb + p + SLACK,
            restarted_while_starting: window2 + FIRST_RESTART_PAUSE + s + SLACK,
            frozen_while_starting: Duration::from_secs(inv.start + inv.secondary_shutdown)
                + window2
                + SLACK,
            abandoned: d + OPERATOR + s + tt + hb + p + SLACK,
        }
    }
}

/// A sandbox group, its inventory, the version it runs and its hub data.
struct Group {
    sandbox: Sandbox,
    inventory: PathBuf,
    bounds: Bounds,
    version: String,
    planted: Vec<(PathBuf, Vec<u8>)>,
    /// Ticks are checked from here on.
    since: SystemTime,
    next_minor: u32,
}

impl Group {
    async fn start(driver: HubDriver) -> Group {
        Group::start_with(driver, 2).await
    }

    /// A group of `nodes` nodes (a primary and `nodes - 1` secondaries).
    async fn start_with(driver: HubDriver, nodes: usize) -> Group {
        let sandbox = Sandbox::start(SandboxOptions {
            nodes,
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
        let timeouts = fault_timeouts();
        sandbox
            .write_inventory_with(&inventory, GROUP, timeouts.clone())
            .unwrap();
        Group {
            bounds: Bounds::new(&sandbox.timing, &timeouts),
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

    /// The end of every hub's log, for failure messages.
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

    /// Step `index` of `run` in the group's journal.
    async fn journal(&self, run_id: &str, index: u64) -> JournalStep {
        let db = self.sandbox.db.connect().await.expect("journal database");
        journal_step(&db, run_id, index).await
    }

    /// The journal's view of step `index` while the controller is held,
    /// once it is settled: a statement the controller sent just before it
    /// stopped may land a while later on a busy server, and nothing else
    /// can move it. Read until two reads 100 ms apart agree.
    async fn journal_held(&self, run_id: &str, index: u64) -> JournalStep {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.journal(run_id, index).await;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.journal(run_id, index).await;
            if now == last {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the journal kept moving while the controller was held: {last:?}, then {now:?}"
            );
            last = now;
        }
    }

    /// Holds the controller inside the step its `step_started` event
    /// announced (the journal marks it running just after the event):
    /// returns with the controller stopped and the step running. Panics
    /// when the step was over before the fault could land in it.
    async fn hold_inside(&self, up: &mut Running, run_id: &str, started: &Value) -> JournalStep {
        let index = started["index"].as_u64().expect("step index");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            hold(up);
            let s = self.journal_held(run_id, index).await;
            assert_eq!(s.name, started["name"].as_str().unwrap(), "{started}");
            match s.state.as_str() {
                "running" => return s,
                "pending" if Instant::now() < deadline => {
                    release(up);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                _ => panic!(
                    "{} was {} before the fault: it did not land inside it; seen: {:#?}",
                    s.name,
                    s.state,
                    up.drain()
                ),
            }
        }
    }

    /// Holds the controller and asserts that step `index` is not done yet
    /// (pending or running): a fault injected now lands before its end.
    async fn hold_before_end(&self, up: &mut Running, run_id: &str, index: u64, name: &str) {
        hold(up);
        let s = self.journal_held(run_id, index).await;
        assert_eq!(s.name, name);
        assert!(
            matches!(s.state.as_str(), "pending" | "running"),
            "{name} was {} before the fault: it did not land before its end; seen: {:#?}",
            s.state,
            up.drain()
        );
    }

    /// Node 0 active (the preferred primary, once settled) and every other
    /// node standby, all running `version`; data flows; no split brain; no
    /// gap beyond `bound`; the planted hub data intact on the primary.
    async fn assert_healthy(&mut self, version: &str, bound: Duration, case: &str) {
        let s = &self.sandbox;
        for i in 0..s.nodes.len() {
            let role = if i == 0 {
                HubRole::Active
            } else {
                HubRole::Standby
            };
            s.wait_role(i, role, Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{case}: {} not {role:?}: {e}", s.nodes[i].name));
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
        assert_eq!(
            measure::split_brain(&ticks, s.timing.tick_interval),
            None,
            "{case}: split brain"
        );
        let (gap, a, b) = measure::largest_gap(&ticks).expect("a gap");
        assert!(
            gap <= bound,
            "{case}: data gap {gap:?} ({} -> {}) beyond the bound {bound:?} ({:?})",
            a.node,
            b.node,
            self.bounds
        );
        for (p, bytes) in &self.planted {
            let now = std::fs::read(p).unwrap_or_else(|e| panic!("{case}: {}: {e}", p.display()));
            assert_eq!(&now, bytes, "{case}: {} changed", p.display());
        }
        let leftovers = partial_backups(&self.sandbox, 0);
        assert!(
            leftovers.is_empty(),
            "{case}: partial backups left: {leftovers:?}"
        );
        self.version = version.to_string();
        self.since = SystemTime::now();
    }
}

/// Names of the partial backup files in node `i`'s backups directory
/// (which the agent makes at its first backup: none before).
fn partial_backups(s: &Sandbox, i: usize) -> Vec<String> {
    let dir = s.nodes[i].state_dir.join("backups");
    match std::fs::read_dir(&dir) {
        Ok(d) => d
            .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // Every temporary of the agent is `.hubshift-tmp-<kind>-…`.
            .filter(|n| n.starts_with(".hubshift-tmp-"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// Where inside a step the controller is killed: a moment seen on the
/// hubs and agents, not a guess of how long the step takes.
#[derive(Debug, Clone, Copy)]
enum Inside {
    /// As soon as the journal marks the step running.
    Start,
    /// A runtime archive is being unpacked in node 0's staging directory
    /// (`runtimes/.staging-*`).
    Uploading,
    /// Node 0's hub got its SIGTERM and has not ended.
    Stopping,
    /// Node 0's hub has ended (the takeover is awaited).
    PrimaryDown,
    /// Node 0's agent is writing a partial backup file.
    BackingUp,
    /// Node `.0`'s hub is starting or running, not yet in role `.1`.
    Joining(usize, HubRole),
}

/// What [`Inside`] compares against, taken before the run.
struct Baseline {
    sigterms: usize,
    hub_a: i32,
}

impl Inside {
    fn baseline(self, g: &Group) -> Baseline {
        Baseline {
            sigterms: sigterms(g),
            hub_a: g.sandbox.nodes[0].hub_pid().unwrap_or(0),
        }
    }

    /// Whether the moment has come.
    async fn now(self, g: &Group, base: &Baseline) -> bool {
        let s = &g.sandbox;
        match self {
            Inside::Start => true,
            Inside::Uploading => {
                let dir = s.nodes[0].install_root.join("runtimes");
                std::fs::read_dir(&dir)
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
                    .any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(".hubshift-tmp-staging-")
                    })
            }
            Inside::Stopping => {
                sigterms(g) > base.sigterms && matches!(proc_state(base.hub_a), Some(c) if c != 'Z')
            }
            Inside::PrimaryDown => matches!(proc_state(base.hub_a), None | Some('Z' | 'X')),
            Inside::BackingUp => !partial_backups(s, 0).is_empty(),
            Inside::Joining(i, role) => match s.status(i).await {
                Ok(st) => {
                    matches!(
                        st.state(),
                        hubshift_common::pb::HubState::Starting
                            | hubshift_common::pb::HubState::Running
                    ) && st.role() != role
                }
                Err(_) => false,
            },
        }
    }
}

/// SIGTERMs node 0's hubs have logged so far.
fn sigterms(g: &Group) -> usize {
    g.sandbox.nodes[0]
        .read_hub_log()
        .expect("the hub log")
        .matches("received SIGTERM")
        .count()
}

/// Freezes (SIGSTOP) or kills (SIGKILL) node `i`'s hub process group and
/// proves it hit a live hub: the signal reached it, and its leader is then
/// stopped, or gone. Returns the hub's pid.
fn hit_hub(g: &Group, i: usize, sig: i32) -> i32 {
    let pid = g.hub_pid(i);
    let what = format!("the hub of {}", g.sandbox.nodes[i].name);
    let state = proc_state(pid);
    assert!(
        matches!(state, Some(c) if c != 'Z' && c != 'X'),
        "{what} ({pid}) is not a live process: {state:?}"
    );
    signal(-pid, sig, &what);
    match sig {
        libc::SIGSTOP => wait_proc(pid, &what, |s| s == Some('T')),
        libc::SIGKILL => wait_proc(pid, &what, |s| matches!(s, None | Some('Z' | 'X'))),
        _ => {}
    }
    pid
}

/// Thaws a hub frozen by [`hit_hub`].
fn thaw_hub(pid: i32) {
    signal(-pid, libc::SIGCONT, "a frozen hub");
}

fn is_step(e: &Value, event: &str, name: &str) -> bool {
    e["event"] == event && e["name"] == name
}

/// The step `name` of node `node` (`None`: any node); a copy of the
/// certificate is the step of the node it goes to.
fn is_step_of(e: &Value, event: &str, name: &str, node: Option<&str>) -> bool {
    is_step(e, event, name)
        && node.is_none_or(|n| {
            let on = e["node"].as_str().unwrap_or_default();
            on == n || on.ends_with(&format!("->{n}"))
        })
}

/// Kills the controller inside step `name` (of `node`, when a step is run
/// per secondary): held at its start, let run until the moment `at`, held
/// again and killed only while the journal still has it running. Proves
/// the kill landed — no `step_finished` written, the step still running in
/// the journal at the same attempt — then resumes: every step is safe to
/// interrupt and to do again.
async fn kill_controller_then_resume(g: &mut Group, name: &str, node: Option<&str>, at: Inside) {
    let case = format!("controller killed in {name} ({node:?}) at {at:?}");
    let (version, mut archive) = g.next_target();
    if matches!(at, Inside::Uploading) {
        // The sandbox's runtime (a few hundred bytes) is staged in a blink:
        // whether the moment is seen would be luck, not the test.
        let big = g.sandbox.root.join(format!("ballasted-{version}.tar.gz"));
        archives::ballasted_archive(&g.sandbox, &version, 64, &big);
        archive = big.display().to_string();
    }
    let base = at.baseline(g);
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    let started = up.wait_for(Duration::from_secs(180), name, |e| {
        is_step_of(e, "step_started", name, node)
    });
    let index = started["index"].as_u64().unwrap();
    let mut inside = g.hold_inside(&mut up, &run_id, &started).await;
    if !matches!(at, Inside::Start) {
        // Looked for with the controller held, so that the step cannot
        // end between the look and the kill; let go a moment between looks.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !at.now(g, &base).await {
            let ended = up.drain().iter().any(|e| {
                (e["event"] == "step_finished" || e["event"] == "step_failed")
                    && e["index"].as_u64() == Some(index)
            });
            assert!(!ended, "{case}: the step ended before the moment came");
            assert!(Instant::now() < deadline, "{case}: the moment never came");
            release(&up);
            tokio::time::sleep(Duration::from_millis(1)).await;
            hold(&up);
        }
        let now = g.journal_held(&run_id, index).await;
        assert_eq!(
            now, inside,
            "{case}: the step moved on; the kill would not land"
        );
        inside = now;
    }
    signal(up.child.id() as i32, libc::SIGKILL, "the controller");
    let (code, seen) = up.finish(Duration::from_secs(60));
    assert_eq!(code, None, "{case}: killed by a signal");
    assert!(
        !seen.iter().any(
            |e| (e["event"] == "step_finished" || e["event"] == "step_failed")
                && e["index"].as_u64() == Some(index)
        ),
        "{case}: the step ended before the kill: {seen:#?}"
    );
    let after = g.journal(&run_id, index).await;
    assert_eq!(after, inside, "{case}: the journal after the kill");
    // The journal says nobody holds the run any more (once the database
    // has seen the controller's connection close).
    let mut state = None;
    for _ in 0..100 {
        let out = run(&g.inventory, &["runs", "--run", &run_id]);
        assert!(out.status.success(), "{case}: {}", text(&out));
        let ev = events(&out);
        state = find(&ev, "run").and_then(|r| r["state"].as_str().map(str::to_string));
        if state.as_deref() == Some("interrupted") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state.as_deref(), Some("interrupted"), "{case}: run state");
    let out = g.resume(&run_id, &archive);
    assert_eq!(out.status.code(), Some(0), "{case}: {}", text(&out));
    let bound = g.bounds.hand_over;
    g.assert_healthy(&version, bound, &case).await;
}

on_both_drivers!(
    controller_killed_at_the_start_of_each_early_step,
    controller_killed_at_the_start_of_each_late_step,
);

async fn controller_killed_at_the_start_of_each_early_step(driver: HubDriver) {
    let mut g = Group::start(driver).await;
    for name in [
        "stage_runtime",
        "base_backup",
        "stop_primary",
        "await_takeover",
        "backup",
        "verify_backup",
        "drop_schema",
        "activate_runtime",
    ] {
        kill_controller_then_resume(&mut g, name, None, Inside::Start).await;
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
        kill_controller_then_resume(&mut g, name, None, Inside::Start).await;
    }
}

/// Three-node groups: the controller killed at the start of each step of
/// the second and of the third node (steps 11–14 run per secondary); each
/// time `resume` ends with one active and two standby nodes on one
/// version, no split brain, the planted data intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_at_the_second_nodes_steps_of_a_three_node_group() {
    controller_killed_at_a_secondarys_steps("hub-b").await;
}

/// As above, for the third node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_at_the_third_nodes_steps_of_a_three_node_group() {
    controller_killed_at_a_secondarys_steps("hub-c").await;
}

async fn controller_killed_at_a_secondarys_steps(node: &str) {
    let mut g = Group::start_with(HubDriver::Process, 3).await;
    assert_eq!(g.sandbox.nodes[2].name, "hub-c");
    for name in [
        "activate_secondary_runtime",
        "copy_certificate",
        "start_secondary",
        "await_standby",
    ] {
        kill_controller_then_resume(&mut g, name, Some(node), Inside::Start).await;
    }
}

/// The controller killed inside the steps that last: during the upload,
/// while the primary stops, while the takeover is awaited, while the
/// backup is written, while the upgraded primary starts, while the new
/// secondary joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_inside_the_long_steps() {
    let mut g = Group::start(HubDriver::Process).await;
    // Store-and-forward data of some size, so that the backup lasts long
    // enough for its temporary file to be seen (incompressible: written
    // as it is read).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let ballast: Vec<u8> = (0..64 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let sf = g.sandbox.nodes[0].appdata.join("storeforward");
    std::fs::create_dir_all(&sf).expect("storeforward dir");
    std::fs::write(sf.join("ballast.bin"), &ballast).expect("write ballast");
    // A store-and-forward file written all the time (as a hub's queue is
    // while it runs): the pre-copy base reads it while it changes, and the
    // delta after the stop carries it, so both backups last long enough
    // to be seen.
    let hot = sf.join("hot-queue.bin");
    std::fs::write(&hot, &ballast[..48 << 20]).expect("write hot queue");
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        std::thread::spawn(move || {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&hot).unwrap();
            let mut i = 0u64;
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                f.seek(SeekFrom::Start((i * 65_537) % (48 << 20))).unwrap();
                f.write_all(&i.to_le_bytes()).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for (name, at) in [
        ("stage_runtime", Inside::Uploading),
        ("base_backup", Inside::BackingUp),
        ("stop_primary", Inside::Stopping),
        ("await_takeover", Inside::PrimaryDown),
        ("backup", Inside::BackingUp),
        ("create_and_start", Inside::Joining(0, HubRole::Active)),
        ("await_handback", Inside::Joining(0, HubRole::Active)),
        ("await_standby", Inside::Joining(1, HubRole::Standby)),
    ] {
        kill_controller_then_resume(&mut g, name, None, at).await;
    }
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("the writer ran to its end");
}

/// A secondary frozen before the primary stops: the stop is refused and
/// nothing changes. Frozen right after the stop: no takeover comes, and
/// hubshift starts the old primary again, then fails saying so; `resume`
/// finishes the run. A controller killed while nobody serves: `abandon`
/// starts the primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_that_cannot_take_over_never_leaves_the_group_down() {
    let mut g = Group::start(HubDriver::Process).await;
    let from = g.version.clone();

    // Frozen before the run: preflight refuses, nothing starts.
    let hub_b = hit_hub(&g, 1, libc::SIGSTOP);
    let (version, archive) = g.next_target();
    let (code, seen) = g
        .spawn_upgrade(&version, &archive)
        .finish(Duration::from_secs(180));
    assert_eq!(code, Some(3), "{seen:#?}");
    assert!(
        seen.iter().any(|e| e["event"] == "preflight"
            && e["blocking"] == true
            && e["message"].as_str().expect("a message").contains("frozen")),
        "{seen:#?}"
    );
    assert!(find(&seen, "run_started").is_none(), "{seen:#?}");

    // Frozen after preflight, before stop_primary began: refused there,
    // nothing stopped.
    thaw_hub(hub_b);
    let (up, run_id) = g.start_upgrade(&version, &archive);
    let stop = {
        let db = g.sandbox.db.connect().await.unwrap();
        journal_index(&db, &run_id, "stop_primary").await
    };
    hold(&up);
    let s = g.journal_held(&run_id, stop).await;
    assert_eq!(s.state, "pending", "stop_primary began before the freeze");
    let hub_b = hit_hub(&g, 1, libc::SIGSTOP);
    release(&up);
    let (code, seen) = up.finish(Duration::from_secs(180));
    thaw_hub(hub_b);
    assert_eq!(code, Some(1), "{seen:#?}");
    let failed = seen
        .iter()
        .find(|e| is_step(e, "step_failed", "stop_primary"))
        .expect("stop_primary refused");
    assert!(
        failed["error"].as_str().unwrap().contains("frozen"),
        "{failed}"
    );
    let out = run(&g.inventory, &["abandon", "--run", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bound = g.bounds.hand_over;
    g.assert_healthy(&from, bound, "frozen before the stop")
        .await;

    // Frozen after the primary stopped, before any takeover: the fallback.
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    let stopped = up.wait_for(Duration::from_secs(180), "stop_primary done", |e| {
        is_step(e, "step_finished", "stop_primary")
    });
    let takeover = stopped["index"].as_u64().unwrap() + 1;
    g.hold_before_end(&mut up, &run_id, takeover, "await_takeover")
        .await;
    let hub_b = hit_hub(&g, 1, libc::SIGSTOP);
    release(&up);
    let (code, seen) = up.finish(Duration::from_secs(180));
    thaw_hub(hub_b);
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
    // The fallback is announced (to a `[notify]` webhook too).
    let fell_back = seen
        .iter()
        .find(|e| e["event"] == "run_fell_back")
        .expect("run_fell_back");
    assert_eq!(fell_back["step"], "await_takeover", "{fell_back}");
    // Bound of the controller that falls back as soon as no candidate can
    // take over (see Bounds::no_candidate_fallback).
    let bound = g.bounds.no_candidate_fallback;
    g.assert_healthy(&from, bound, "no takeover after the stop")
        .await;
    // Resume starts again at the primary's stop, with the secondary live.
    let out = g.resume(&run_id, &archive);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bound = g.bounds.hand_over;
    g.assert_healthy(&version, bound, "resume after the fallback")
        .await;

    // The controller dies while nobody serves (primary stopped, secondary
    // frozen): `abandon` starts the primary again.
    let from = g.version.clone();
    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    let stopped = up.wait_for(Duration::from_secs(180), "stop_primary done", |e| {
        is_step(e, "step_finished", "stop_primary")
    });
    let takeover = stopped["index"].as_u64().unwrap() + 1;
    g.hold_before_end(&mut up, &run_id, takeover, "await_takeover")
        .await;
    let hub_b = hit_hub(&g, 1, libc::SIGSTOP);
    signal(up.child.id() as i32, libc::SIGKILL, "the controller");
    let (code, _) = up.finish(Duration::from_secs(60));
    assert_eq!(code, None, "killed by a signal");
    let s = g.journal(&run_id, takeover).await;
    assert_ne!(s.state, "done", "await_takeover ended before the kill");
    let out = run(&g.inventory, &["abandon", "--run", &run_id]);
    thaw_hub(hub_b);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&out);
    let abandoned = find(&ev, "run_abandoned").expect("run_abandoned");
    assert_eq!(abandoned["restarted"][0], "hub-a", "{abandoned}");
    // The gap includes the time the test took to run `abandon`.
    let bound = g.bounds.abandoned;
    g.assert_healthy(&from, bound, "abandon restarts the primary")
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
    let started = up.wait_for(Duration::from_secs(180), "backup started", |e| {
        is_step(e, "step_started", "backup")
    });
    let index = started["index"].as_u64().unwrap();
    let inside = g.hold_inside(&mut up, &run_id, &started).await;
    let hub_b = hit_hub(&g, 1, libc::SIGSTOP);
    assert_eq!(g.journal(&run_id, index).await, inside, "backup moved on");
    release(&up);
    let (code, seen) = up.finish(Duration::from_secs(240));
    thaw_hub(hub_b);
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
    let bound = g.bounds.serving_fallback;
    g.assert_healthy(&from, bound, "secondary frozen while serving")
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
    let bound = g.bounds.hand_over;
    g.assert_healthy(&version, bound, "resume after the fallback")
        .await;
}

/// A hub killed after its own step: the upgraded primary while the
/// secondary is being switched (nobody serves until the secondary starts
/// and takes over), and the new secondary — the process start_secondary
/// made — while it joins. The step that waits for a node, and the final
/// check of the group, start it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_killed_after_their_own_step_are_started_again() {
    let mut g = Group::start(HubDriver::Process).await;
    for (name, node) in [("activate_secondary_runtime", 0), ("await_standby", 1)] {
        let case = format!("hub of node {node} killed at {name}");
        let before = g.hub_pid(node);
        let (version, archive) = g.next_target();
        let (mut up, run_id) = g.start_upgrade(&version, &archive);
        let started = up.wait_for(Duration::from_secs(180), name, |e| {
            is_step(e, "step_started", name)
        });
        let index = started["index"].as_u64().unwrap();
        let inside = g.hold_inside(&mut up, &run_id, &started).await;
        let pid = hit_hub(&g, node, libc::SIGKILL);
        if node == 1 {
            assert_ne!(pid, before, "{case}: not the hub start_secondary made");
        }
        assert_eq!(g.journal(&run_id, index).await, inside, "{case}: moved on");
        release(&up);
        g.finish_or_resume(up, &run_id, &archive, &case);
        let bound = if node == 0 {
            g.bounds.nobody_serving
        } else {
            g.bounds.hand_over
        };
        g.assert_healthy(&version, bound, &case).await;
    }
}

/// PostgreSQL restarted inside each outage window, during the backup,
/// during the schema's drop and during the upgraded primary's create and
/// start: the journal reconnects and takes the group lock again (the drop,
/// asked on the journal's connection, is asked again on the new one; a
/// create that found no database is asked again); the run finishes by
/// itself. The step was running across the restart: it began before it
/// (the controller held while the journal said so, and while the server
/// stopped) and finished after it (the journal's own clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_in_each_window() {
    let mut g = Group::start(HubDriver::Process).await;
    for name in [
        "await_takeover",
        "backup",
        "drop_schema",
        "create_and_start",
        "await_handback",
    ] {
        let case = format!("PostgreSQL restarted during {name}");
        let (version, archive) = g.next_target();
        let (mut up, run_id) = g.start_upgrade(&version, &archive);
        let started = up.wait_for(Duration::from_secs(180), name, |e| {
            is_step(e, "step_started", name)
        });
        let index = started["index"].as_u64().unwrap();
        g.hold_inside(&mut up, &run_id, &started).await;
        // Down before the controller goes on: the restart lands inside the
        // step however fast the step is. (In create_and_start the hub's
        // create may be running already: it finds no database, and the
        // step waits for it and asks again.)
        let down_at = SystemTime::now();
        let began = Instant::now();
        g.sandbox.db.stop_for_restart().await.unwrap();
        release(&up);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        g.sandbox.db.resume().await.unwrap();
        // The database's whole absence, stop to ready, adds to the window.
        let away = began.elapsed();
        let (code, seen) = up.finish(Duration::from_secs(240));
        // The journal reconnected and took the lock again: the run went on
        // by itself.
        assert_eq!(code, Some(0), "{case}: {seen:#?}\n{}", g.hub_logs());
        let finished = find(&seen, "run_finished").expect("run_finished");
        assert_eq!(finished["run"], run_id.as_str());
        outlived_the_outage(&mut g, &run_id, index, down_at, away, &version, &case).await;
    }
}

/// PostgreSQL away while the upgraded primary's `create` runs: the create
/// finds no database and gives up (as the hub's does); the step waits for
/// the database and asks the agent again, and the run finishes by itself.
/// The fault lands in the create: the server stops once the agent has
/// started it and comes back only after the create's refusal is in the
/// hub's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_while_the_primary_is_created() {
    let mut g = Group::start(HubDriver::Process).await;
    let case = "PostgreSQL away during the primary's create";
    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    let marker = "--- hubshift-agent: create node";
    let creates_before = g.sandbox.nodes[0].hub_log().matches(marker).count();
    up.wait_for(Duration::from_secs(180), "create_and_start", |e| {
        is_step(e, "step_started", "create_and_start")
    });
    let primary_log_shows = |what: &str, seen: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if seen(&g.sandbox.nodes[0].hub_log()) {
                return;
            }
            assert!(Instant::now() < deadline, "{case}: {what} not seen in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    primary_log_shows("the primary's create", &|log| {
        log.matches(marker).count() > creates_before
    });
    let down_at = SystemTime::now();
    let began = Instant::now();
    g.sandbox.db.stop_for_restart().await.unwrap();
    primary_log_shows("the create's refusal", &|log| {
        let since = log.rfind(marker).map_or("", |i| &log[i..]);
        since.contains("cannot reach database")
    });
    g.sandbox.db.resume().await.unwrap();
    let away = began.elapsed();
    let (code, seen) = up.finish(Duration::from_secs(240));
    assert_eq!(code, Some(0), "{case}: {seen:#?}\n{}", g.hub_logs());
    let index = seen
        .iter()
        .find(|e| is_step(e, "step_finished", "create_and_start"))
        .and_then(|e| e["index"].as_u64())
        .expect("create_and_start finished");
    outlived_the_outage(&mut g, &run_id, index, down_at, away, &version, case).await;
}

/// The step at `index` was done after PostgreSQL went away at `down_at`
/// (the fault landed inside it), and the group is healthy within the
/// hand-over bound plus the time the database was `away`.
async fn outlived_the_outage(
    g: &mut Group,
    run_id: &str,
    index: u64,
    down_at: SystemTime,
    away: Duration,
    version: &str,
    case: &str,
) {
    let s = g.journal(run_id, index).await;
    assert_eq!(s.state, "done", "{case}");
    assert!(
        s.finished_at.expect("finished_at") > down_at,
        "{case}: the step had finished before PostgreSQL went away: {s:?}"
    );
    let bound = g.bounds.hand_over + away;
    g.assert_healthy(version, bound, case).await;
}

/// An agent killed and restarted inside a step; the hub it supervises keeps
/// running and is re-adopted; a backup cut short leaves no partial file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_killed_inside_steps() {
    let mut g = Group::start(HubDriver::Process).await;
    for (name, node) in [
        ("base_backup", 0),
        ("backup", 0),
        ("await_takeover", 1),
        ("start_secondary", 1),
    ] {
        let case = format!("agent of node {node} killed during {name}");
        let (version, archive) = g.next_target();
        let (mut up, run_id) = g.start_upgrade(&version, &archive);
        let started = up.wait_for(Duration::from_secs(180), name, |e| {
            is_step(e, "step_started", name)
        });
        let index = started["index"].as_u64().unwrap();
        let inside = g.hold_inside(&mut up, &run_id, &started).await;
        g.sandbox
            .kill_agent(node)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(g.journal(&run_id, index).await, inside, "{case}: moved on");
        release(&up);
        // The agent stays away for a while, as a crashed service does
        // before systemd starts it again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        g.sandbox.restart_agent(node).await.unwrap();
        g.finish_or_resume(up, &run_id, &archive, &case);
        let bound = g.bounds.hand_over;
        g.assert_healthy(&version, bound, &case).await;
    }
}

/// The upgraded primary dies while it starts: hubshift starts it again
/// (or, when the run failed, `resume` does) and finishes. A primary
/// frozen while it starts never becomes active: the run fails, and after
/// it thaws `resume` finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_dies_or_hangs_while_it_starts() {
    let mut g = Group::start(HubDriver::Process).await;

    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    let created = up.wait_for(Duration::from_secs(180), "create_and_start done", |e| {
        is_step(e, "step_finished", "create_and_start")
    });
    let handback = created["index"].as_u64().unwrap() + 1;
    g.hold_before_end(&mut up, &run_id, handback, "await_handback")
        .await;
    hit_hub(&g, 0, libc::SIGKILL);
    release(&up);
    let case = "primary killed while starting";
    g.finish_or_resume(up, &run_id, &archive, case);
    let bound = g.bounds.restarted_while_starting;
    g.assert_healthy(&version, bound, case).await;

    let (version, archive) = g.next_target();
    let (mut up, run_id) = g.start_upgrade(&version, &archive);
    let created = up.wait_for(Duration::from_secs(180), "create_and_start done", |e| {
        is_step(e, "step_finished", "create_and_start")
    });
    let handback = created["index"].as_u64().unwrap() + 1;
    g.hold_before_end(&mut up, &run_id, handback, "await_handback")
        .await;
    let hub_a = hit_hub(&g, 0, libc::SIGSTOP);
    release(&up);
    let (code, seen) = up.finish(Duration::from_secs(240));
    thaw_hub(hub_a);
    assert_eq!(
        code,
        Some(1),
        "a frozen primary cannot finish the run: {seen:#?}"
    );
    let failed = find(&seen, "step_failed").expect("a step failed");
    assert_eq!(failed["name"], "await_handback", "{failed}");
    let out = g.resume(&run_id, &archive);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The outage lasted as long as the run waited for the frozen primary.
    let bound = g.bounds.frozen_while_starting;
    g.assert_healthy(&version, bound, "primary frozen while starting")
        .await;
}
