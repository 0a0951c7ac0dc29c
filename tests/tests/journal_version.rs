//! End to end: the journal records the version of its DDL. A journal of
//! an older hubshift (no version, a column missing) gets this version's
//! columns once; a journal already at this version is read without any DDL,
//! so a command does not wait for — or lock out — a session using the
//! journal's tables.

mod support;

use hubshift_sim::sandbox::SandboxOptions;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_old_journal_is_upgraded_once_and_a_current_one_is_not_altered() {
    let (sandbox, inventory) = group_with(SandboxOptions::default()).await;
    let db = sandbox.db.connect().await.unwrap();

    // A journal as an older hubshift left it: no version, no `parked`.
    db.batch_execute(
        "CREATE SCHEMA hubshift;
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
             created_at timestamptz NOT NULL DEFAULT now());",
    )
    .await
    .unwrap();
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
