//! End to end: the journal records the version of its DDL. A new journal
//! is made whole; a journal of an older hubshift (no version, a column
//! missing) gets this version's columns once, the same columns a new one
//! has; a journal already at this version is read without any DDL, so a
//! command does not wait for — or lock out — a session using the journal's
//! tables.

mod support;

use hubshift_common::pb::HubRole;
use hubshift_sim::sandbox::SandboxOptions;
use std::time::Duration;
use support::*;
use tokio_postgres::Client;

/// The version the test's upgrade would go to (the sandbox starts at 4.1.0).
const TO: &str = "4.2.0";

/// A journal as an older hubshift left it: no version, no `parked`, no
/// `observations`, and the columns of later versions missing.
const OLD_JOURNAL: &str = "CREATE SCHEMA hubshift;
         CREATE TABLE hubshift.runs (id text PRIMARY KEY, grp text NOT NULL, kind text NOT NULL,
             state text NOT NULL, facts jsonb NOT NULL DEFAULT '{}'::jsonb,
             created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
             finished_at timestamptz);
         CREATE TABLE hubshift.steps (run_id text NOT NULL REFERENCES hubshift.runs(id),
             idx integer NOT NULL, spec jsonb NOT NULL, state text NOT NULL DEFAULT 'pending',
             attempts integer NOT NULL DEFAULT 0, started_at timestamptz, finished_at timestamptz,
             detail jsonb NOT NULL DEFAULT '{}'::jsonb, error text, PRIMARY KEY (run_id, idx));
         CREATE TABLE hubshift.fleets (id text PRIMARY KEY, spec jsonb NOT NULL,
             stop_requested boolean NOT NULL DEFAULT false, audit jsonb NOT NULL DEFAULT '[]'::jsonb,
             created_at timestamptz NOT NULL DEFAULT now());";

#[tokio::test(flavor = "multi_thread")]
async fn an_old_journal_is_upgraded_once_and_a_current_one_is_not_altered() {
    let (sandbox, inventory) = group_with(SandboxOptions::default()).await;
    let db = sandbox.db.connect().await.unwrap();

    db.batch_execute(OLD_JOURNAL).await.unwrap();
    let out = run(&inventory, &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let upgraded = db
        .query_one(
            "SELECT (SELECT max(version) FROM hubshift.journal_version),
                    EXISTS (SELECT 1 FROM information_schema.columns
                            WHERE table_schema = 'hubshift' AND table_name = 'fleets' AND column_name = 'parked'),
                    to_regclass('hubshift.observations') IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let (version, parked, observations): (Option<i32>, bool, bool) =
        (upgraded.get(0), upgraded.get(1), upgraded.get(2));
    assert!(version.is_some_and(|v| v >= 1), "{version:?}");
    assert!(
        parked && observations,
        "the old journal lacks this version's parts"
    );

    // A session reading the runs table in an open transaction: an
    // `ALTER TABLE` would wait for it (and stop every later reader).
    let mut reader = sandbox.db.connect().await.unwrap();
    let tx = reader.transaction().await.unwrap();
    tx.query("SELECT count(*) FROM hubshift.runs", &[])
        .await
        .unwrap();
    let inv = inventory.clone();
    let listed = tokio::task::spawn_blocking(move || run(&inv, &["runs"]));
    let out = tokio::time::timeout(Duration::from_secs(60), listed)
        .await
        .expect("`hubshift runs` waited on the journal's tables: DDL ran on a current journal")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    tx.rollback().await.unwrap();
}

/// The lock a controller takes to make or upgrade the journal, held here
/// for the session.
const DDL_LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('hubshift:journal-ddl', 0))";

/// How many sessions wait for an advisory lock.
async fn waiting_for_ddl_lock(db: &Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Every column of the journal's tables, with its type, nullability and
/// default.
async fn journal_columns(db: &Client) -> Vec<String> {
    db.query(
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
                || ' ' || coalesce(column_default, '-')
         FROM information_schema.columns WHERE table_schema = 'hubshift' ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Columns that `ALTER TABLE … ADD COLUMN` gave a stored default for the
/// rows already there: the trace of a table made and then altered.
async fn added_columns(db: &Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = 'hubshift'::regnamespace AND a.atthasmissing",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_journal_is_made_whole_with_the_columns_an_upgraded_one_has() {
    let (sandbox, inventory) = group_with(SandboxOptions::default()).await;
    let db = sandbox.db.connect().await.unwrap();

    // An upgrade makes the journal when it locks the group, before it asks
    // for the confirmation nobody gives here. Three at once, held at the
    // lock that serialises making the journal until all three wait there:
    // the two that find the schema made a moment ago go on with it.
    let archive = sandbox.runtime_archive(TO).unwrap().display().to_string();
    let mut args = upgrade_args(&archive, TO);
    args.retain(|a| *a != "--yes");
    db.execute(DDL_LOCK, &[]).await.unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            hubshift(&inventory, &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while waiting_for_ddl_lock(&db).await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the three upgrades never all waited to make the journal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.execute(
        &DDL_LOCK.replace("pg_advisory_lock", "pg_advisory_unlock"),
        &[],
    )
    .await
    .unwrap();
    for child in children {
        let out = child.wait_with_output().unwrap();
        // Refused for want of a confirmation, or the group locked by one
        // of the others: never a journal error.
        assert!(
            (out.status.code() == Some(2) && text(&out).contains("pass --yes"))
                || out.status.code() == Some(3),
            "{}",
            text(&out)
        );
    }
    let made = journal_columns(&db).await;
    assert!(
        made.iter().any(|c| c.starts_with("fleets.parked "))
            && made.iter().any(|c| c.starts_with("observations.seq ")),
        "{made:#?}"
    );
    assert_eq!(
        added_columns(&db).await,
        0,
        "a new journal's tables were altered after they were made"
    );

    db.batch_execute("DROP SCHEMA hubshift CASCADE")
        .await
        .unwrap();
    db.batch_execute(OLD_JOURNAL).await.unwrap();
    let out = run(&inventory, &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        added_columns(&db).await > 0,
        "the old journal was not upgraded in place"
    );
    assert_eq!(journal_columns(&db).await, made);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_while_making_the_journal_leaves_none_half_made() {
    let (sandbox, inventory) = group_with(SandboxOptions::default()).await;
    let db = sandbox.db.connect().await.unwrap();
    let archive = sandbox.runtime_archive(TO).unwrap().display().to_string();
    let mut args = upgrade_args(&archive, TO);
    args.retain(|a| *a != "--yes");

    // The controller is killed inside the journal's DDL transaction: it
    // waits there at the DDL lock this session holds.
    db.execute(DDL_LOCK, &[]).await.unwrap();
    let mut child = hubshift(&inventory, &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while waiting_for_ddl_lock(&db).await < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upgrade never reached the journal's DDL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    db.execute(
        &DDL_LOCK.replace("pg_advisory_lock", "pg_advisory_unlock"),
        &[],
    )
    .await
    .unwrap();
    // The server ends the killed controller's session and its transaction.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while waiting_for_ddl_lock(&db).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed controller's session still waits"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let schema: bool = db
        .query_one("SELECT to_regnamespace('hubshift') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!schema, "a killed controller left part of a journal");

    // The hubs never noticed, and the next command makes the journal whole.
    sandbox
        .wait_role(0, HubRole::Active, Duration::from_secs(60))
        .await
        .expect("hub-a active");
    sandbox
        .wait_role(1, HubRole::Standby, Duration::from_secs(60))
        .await
        .expect("hub-b standby");
    let out = run(&inventory, &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("pass --yes"), "{}", text(&out));
    assert!(
        journal_columns(&db)
            .await
            .iter()
            .any(|c| c.starts_with("fleets.parked "))
    );
    assert_eq!(added_columns(&db).await, 0);
}
