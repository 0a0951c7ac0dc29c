//! Behaviours 5–10: election, takeover, handover to the preferred primary,
//! data ticks and store and forward, surviving a dropped schema or a
//! database outage, shutting down on a new schema version, SIGTERM.

mod common;

use common::*;
use hubshift_sim::measure::{no_active_windows, split_brain};
use hubshift_sim::pg::TestDatabase;
use hubshift_sim::process::HubsimProcess;
use hubshift_sim::timing::SimTiming;
use std::time::{Duration, SystemTime};

fn tick_interval() -> Duration {
    SimTiming::fast().tick_interval
}

/// Lines cached in the node's store-and-forward files. A file or directory
/// that is not there holds none (a flushed cache is removed); any other
/// read error panics, so that "none cached" is never a failed read.
fn sf_lines(node: &NodeDir) -> usize {
    let dir = node.appdata.join("storeforward");
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return 0,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    entries
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        .filter(|e| e.path().extension().is_some_and(|x| x == "sf"))
        .map(|e| match std::fs::read_to_string(e.path()) {
            Ok(text) => text.lines().count(),
            Err(err) if gone(&err) => 0,
            Err(err) => panic!("{}: {err}", e.path().display()),
        })
        .sum()
}

/// 5 + 10: one active node at a time; the standby copies the project, takes
/// over after a crash once the heartbeat is older than the takeover
/// timeout; the restarted preferred primary gets leadership back by a
/// handover; ticks never interleave; role lines are exact.
#[tokio::test]
async fn one_active_takeover_and_handover_to_preferred_primary() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");
    let b = NodeDir::new(dir.path(), "hub-b");
    let t0 = SystemTime::now();
    assert!(a.create(&db, "4.1.0").await.0.success());
    b.copy_certificate_from(&a);

    let mut pa = a.start(&db, "4.1.0");
    pa.wait_for_log_line("HA role: active", WAIT).await.unwrap();
    let mut pb = b.start(&db, "4.1.0");
    pb.wait_for_log_line("HA role: standby", WAIT)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(b.configuration()).unwrap(),
        std::fs::read_to_string(a.configuration()).unwrap(),
        "the standby copies the project over Postgres"
    );
    wait_for_ticks(&db, "hub-a", t0, 10).await;

    // Crash of the active node: the standby takes over after the timeout.
    let b_mark = pb.log().len();
    pa.kill().unwrap();
    let crashed = SystemTime::now();
    pb.wait_for_log_line_from(b_mark, "HA role: active", WAIT)
        .await
        .unwrap();
    wait_for_ticks(&db, "hub-b", crashed, 10).await;

    // The preferred primary comes back and gets leadership by a handover.
    let b_mark = pb.log().len();
    let mut pa2 = a.start(&db, "4.1.0");
    pa2.wait_for_log_line("asked active node hub-b to hand over", WAIT)
        .await
        .unwrap();
    pa2.wait_for_log_line("HA role: active", WAIT)
        .await
        .unwrap();
    pb.wait_for_log_line_from(b_mark, "HA role: standby", WAIT)
        .await
        .unwrap();
    pb.wait_for_log_line_from(b_mark, "handed leadership over to hub-a", WAIT)
        .await
        .unwrap();
    let handed = SystemTime::now();
    wait_for_ticks(&db, "hub-a", handed, 10).await;

    let ticks = ticks_since(&db, t0).await;
    assert_eq!(split_brain(&ticks, tick_interval()), None);
    // Outages: the crash (about the takeover timeout) and the handover (short).
    let windows = no_active_windows(&ticks, Duration::from_millis(120));
    let crash = windows
        .iter()
        .find(|w| w.from_node == "hub-a" && w.to_node == "hub-b")
        .unwrap();
    assert!(crash.length >= Duration::from_millis(1400), "{windows:?}");
    let handover = windows
        .iter()
        .find(|w| w.from_node == "hub-b" && w.to_node == "hub-a")
        .unwrap();
    assert!(
        handover.length < Duration::from_secs(1),
        "handover outage too long: {windows:?}"
    );
    // Exactly one active node at the end, in the database too.
    let c = db.connect().await.unwrap();
    let leader: Option<String> = c
        .query_one("SELECT node FROM orchestration.leader", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leader.as_deref(), Some("hub-a"));

    for log in [pa.log(), pb.log(), pa2.log()] {
        assert_no_password(&db, &log);
    }
    assert_exact_line(&pa.log(), "HA role: active");
    assert_exact_line(&pb.log(), "HA role: standby");
    assert_exact_line(&pb.log(), "HA role: active");
}

/// 6: ticks into hubdata.ticks; failed inserts go to store and forward in
/// appdata and are replayed with their original produced_at.
#[tokio::test]
async fn ticks_flow_and_failed_inserts_are_stored_and_forwarded() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");
    let t0 = SystemTime::now();
    assert!(a.create(&db, "4.1.0").await.0.success());
    let mut pa = a.start(&db, "4.1.0");
    pa.wait_for_log_line("HA role: active", WAIT).await.unwrap();
    let ticks = wait_for_ticks(&db, "hub-a", t0, 5).await;
    assert!(ticks.iter().all(|t| t.version == "4.1.0"));

    let c = db.connect().await.unwrap();
    // The HA loop and the ticks share the node's one connection (create's
    // own has ended by now, or soon will).
    poll("hub-a on one connection", WAIT, || async {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'hubsim' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    })
    .await;
    let held = SystemTime::now();
    c.batch_execute("ALTER TABLE hubdata.ticks ADD CONSTRAINT hold_data CHECK (false) NOT VALID")
        .await
        .unwrap();
    pa.wait_for_log_line("writing ticks to store-and-forward", WAIT)
        .await
        .unwrap();
    poll("20 ticks in store and forward", WAIT, || async {
        (sf_lines(&a) >= 20).then_some(())
    })
    .await;
    let released = SystemTime::now();
    c.batch_execute("ALTER TABLE hubdata.ticks DROP CONSTRAINT hold_data")
        .await
        .unwrap();
    pa.wait_for_log_line("replayed", WAIT).await.unwrap();
    poll("store and forward drained", WAIT, || async {
        (sf_lines(&a) == 0).then_some(())
    })
    .await;

    let rows = c
        .query(
            "SELECT count(*) FROM hubdata.ticks
             WHERE produced_at > $1 AND produced_at < $2 AND inserted_at > $2",
            &[&held, &released],
        )
        .await
        .unwrap();
    let replayed: i64 = rows[0].get(0);
    assert!(
        replayed >= 20,
        "only {replayed} replayed ticks kept their produced_at"
    );
    wait_for_ticks(&db, "hub-a", released, 5).await;
    // The table's UNIQUE (node, seq, produced_at) hides exact duplicates; a
    // replay that re-stamped a tick would show as one seq stored twice.
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT seq) FROM hubdata.ticks WHERE node = 'hub-a'",
            &[],
        )
        .await
        .unwrap();
    let (rows_n, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(rows_n, distinct, "a tick of hub-a was stored twice");
    assert!(a.appdata.join("storeforward").is_dir());
    assert_no_password(&db, &pa.log());
}

/// hub-a created and started at 4.1.0 in `root`: active, five ticks in.
async fn active_and_ticking(db: &TestDatabase, root: &std::path::Path) -> (NodeDir, HubsimProcess) {
    let a = NodeDir::new(root, "hub-a");
    let t0 = SystemTime::now();
    assert!(a.create(db, "4.1.0").await.0.success());
    let mut pa = a.start(db, "4.1.0");
    pa.wait_for_log_line("HA role: active", WAIT).await.unwrap();
    wait_for_ticks(db, "hub-a", t0, 5).await;
    (a, pa)
}

/// 6b: a running node whose data table was dropped makes it again (the
/// one path where a started hub creates `hubdata`) and its data flows on,
/// the ticks of the gap replayed from store and forward.
#[tokio::test]
async fn a_dropped_data_table_is_made_again_and_the_gap_replayed() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, mut pa) = active_and_ticking(&db, dir.path()).await;

    let c = db.connect().await.unwrap();
    c.batch_execute("DROP SCHEMA hubdata CASCADE")
        .await
        .unwrap();
    let dropped = SystemTime::now();
    pa.wait_for_log_line("writing ticks to store-and-forward", WAIT)
        .await
        .unwrap();
    pa.wait_for_log_line("data flows to the database again", WAIT)
        .await
        .unwrap();
    let made: bool = c
        .query_one(
            "SELECT to_regclass('hubdata.ticks_produced_at') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(made, "hubdata.ticks and its index were not made again");
    wait_for_ticks(&db, "hub-a", dropped, 5).await;
    poll("store and forward drained", WAIT, || async {
        (sf_lines(&a) == 0).then_some(())
    })
    .await;
    assert_no_password(&db, &pa.log());
}

/// 7: a running active node keeps producing data when the schema is
/// dropped and when the database goes away (store and forward), and
/// replays once it is back.
#[tokio::test]
async fn keeps_producing_when_schema_dropped_and_database_away() {
    let mut db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, mut pa) = active_and_ticking(&db, dir.path()).await;

    {
        let c = db.connect().await.unwrap();
        c.batch_execute("DROP SCHEMA orchestration CASCADE")
            .await
            .unwrap();
    }
    let dropped = SystemTime::now();
    pa.wait_for_log_line("HA database error", WAIT)
        .await
        .unwrap();
    wait_for_ticks(&db, "hub-a", dropped, 20).await;
    assert!(pa.try_status().is_none(), "still running");

    db.suspend().await.unwrap();
    let down = SystemTime::now();
    poll("15 ticks in store and forward", WAIT, || async {
        (sf_lines(&a) >= 15).then_some(())
    })
    .await;
    assert!(
        pa.try_status().is_none(),
        "still running while the database is away"
    );
    db.resume().await.unwrap();
    let up = SystemTime::now();
    poll("store and forward drained", WAIT, || async {
        (sf_lines(&a) == 0).then_some(())
    })
    .await;
    wait_for_ticks(&db, "hub-a", up, 5).await;
    let ticks = ticks_since(&db, down).await;
    let during = ticks
        .iter()
        .filter(|t| t.produced_at > down && t.produced_at < up)
        .count();
    assert!(
        during >= 15,
        "only {during} ticks from the outage reached the database; log:\n{}",
        pa.log()
    );
    assert!(pa.try_status().is_none(), "still running");
    assert!(!pa.log().contains("HA role: standby"), "{}", pa.log());
    assert_no_password(&db, &pa.log());
}

/// 8 (and the upgrade procedure): primary stopped, the standby takes over,
/// the schema is dropped and the standby keeps flowing; the new version's
/// create + start on the primary makes the old standby shut down (exit 0,
/// "version mismatch ... shutting down"); never two active nodes.
#[tokio::test]
async fn running_node_shuts_down_when_schema_recreated_with_new_version() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");
    let b = NodeDir::new(dir.path(), "hub-b");
    let t0 = SystemTime::now();
    assert!(a.create(&db, "4.1.0").await.0.success());
    b.copy_certificate_from(&a);
    let mut pa = a.start(&db, "4.1.0");
    pa.wait_for_log_line("HA role: active", WAIT).await.unwrap();
    let mut pb = b.start(&db, "4.1.0");
    pb.wait_for_log_line("HA role: standby", WAIT)
        .await
        .unwrap();

    // Step 1: stop the primary; the secondary takes over.
    pa.sigterm().unwrap();
    assert!(pa.wait_exit(WAIT).await.unwrap().success());
    pb.wait_for_log_line("HA role: active", WAIT).await.unwrap();
    // Step 2: drop the schema; the secondary keeps flowing data.
    let c = db.connect().await.unwrap();
    c.batch_execute("DROP SCHEMA orchestration CASCADE")
        .await
        .unwrap();
    let dropped = SystemTime::now();
    pb.wait_for_log_line("HA database error", WAIT)
        .await
        .unwrap();
    wait_for_ticks(&db, "hub-b", dropped, 20).await;
    // Step 4: create + start of the new version on the primary.
    let (status, log) = a.create(&db, "4.2.0").await;
    assert!(status.success(), "{log}");
    let mut pa2 = a.start(&db, "4.2.0");
    let line = pb
        .wait_for_log_line("version mismatch", WAIT)
        .await
        .unwrap();
    assert!(
        line.contains("shutting down") && line.contains("4.2.0"),
        "{line}"
    );
    let status = pb.wait_exit(WAIT).await.unwrap();
    assert!(status.success(), "the old node exits 0: {status}");
    pa2.wait_for_log_line("HA role: active", WAIT)
        .await
        .unwrap();
    let started = SystemTime::now();
    let ticks = wait_for_ticks(&db, "hub-a", started, 10).await;
    assert!(
        ticks
            .iter()
            .filter(|t| t.node == "hub-a")
            .all(|t| t.version == "4.2.0")
    );

    let all = ticks_since(&db, t0).await;
    assert_eq!(split_brain(&all, tick_interval()), None);
    assert!(
        all.iter()
            .filter(|t| t.version == "4.2.0")
            .all(|t| t.node == "hub-a")
    );
    for log in [pa.log(), pb.log(), pa2.log()] {
        assert_no_password(&db, &log);
    }
}

/// 9: SIGTERM ends a node cleanly, its heartbeats stopping with the signal;
/// the standby takes over only once the heartbeat is older than the
/// timeout. (How soon a node exits is measured by `cargo bench -p
/// hubshift-tests --bench timings`.)
#[tokio::test]
async fn sigterm_ends_the_heartbeat_and_standby_takes_over_only_after_timeout() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");
    let b = NodeDir::new(dir.path(), "hub-b");
    let t0 = SystemTime::now();
    assert!(a.create(&db, "4.1.0").await.0.success());
    b.copy_certificate_from(&a);
    let mut pa = a.start(&db, "4.1.0");
    pa.wait_for_log_line("HA role: active", WAIT).await.unwrap();
    let mut pb = b.start(&db, "4.1.0");
    pb.wait_for_log_line("HA role: standby", WAIT)
        .await
        .unwrap();
    wait_for_ticks(&db, "hub-a", t0, 10).await;

    let c = db.connect().await.unwrap();
    pa.sigterm().unwrap();
    pa.wait_for_log_line("received SIGTERM", WAIT)
        .await
        .unwrap();
    // Heartbeats end with the signal, not with the process: one read a
    // heartbeat and a half after the signal, one after the exit, must agree.
    tokio::time::sleep(SimTiming::fast().heartbeat_interval * 3 / 2).await;
    let hb_stopping: SystemTime = c
        .query_one("SELECT heartbeat_at FROM orchestration.leader", &[])
        .await
        .unwrap()
        .get(0);
    // How soon it exits is a goal of `cargo bench -p hubshift-tests`; here
    // it must exit, cleanly.
    let status = pa.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{status}");
    let row = c
        .query_one("SELECT node, heartbeat_at FROM orchestration.leader", &[])
        .await
        .unwrap();
    let (node, last_hb): (Option<String>, SystemTime) = (row.get(0), row.get(1));
    assert_eq!(
        node.as_deref(),
        Some("hub-a"),
        "no release on SIGTERM: like a crash"
    );
    assert_eq!(last_hb, hb_stopping, "a heartbeat was sent after SIGTERM");

    let line = pb
        .wait_for_log_line("acquired leadership", WAIT)
        .await
        .unwrap();
    assert!(line.contains("heartbeat of hub-a older than"), "{line}");
    pb.wait_for_log_line("HA role: active", WAIT).await.unwrap();
    let row = c
        .query_one("SELECT node, heartbeat_at FROM orchestration.leader", &[])
        .await
        .unwrap();
    let (node, hb): (Option<String>, SystemTime) = (row.get(0), row.get(1));
    assert_eq!(node.as_deref(), Some("hub-b"));
    let waited = hb.duration_since(last_hb).unwrap();
    assert!(
        waited >= SimTiming::fast().takeover_timeout,
        "took over after {waited:?}"
    );

    let ticks = wait_for_ticks(&db, "hub-b", t0, 5).await;
    assert_eq!(split_brain(&ticks, tick_interval()), None);
    let last_a = ticks
        .iter()
        .filter(|t| t.node == "hub-a")
        .map(|t| t.produced_at)
        .max()
        .unwrap();
    let first_b = ticks
        .iter()
        .filter(|t| t.node == "hub-b")
        .map(|t| t.produced_at)
        .min()
        .unwrap();
    assert!(first_b.duration_since(last_a).unwrap() >= Duration::from_millis(1400));

    // A standby exits cleanly on SIGTERM too.
    pb.sigterm().unwrap();
    assert!(
        pb.wait_exit(Duration::from_secs(30))
            .await
            .unwrap()
            .success()
    );
}
