//! End to end: `hubshift status` and `plan` warn when the group's
//! PostgreSQL server cannot hold the connections open on it (the hubs'
//! among them) plus what an upgrade needs — the "too many clients" that
//! otherwise strikes in the middle of a fleet's hand-overs.

mod support;

use hubshift_sim::fleet::fleet_connections;
use hubshift_sim::pg::TestDatabase;
use hubshift_sim::sandbox::SandboxOptions;
use support::*;

async fn room(client: &tokio_postgres::Client) -> (i32, i32, i32) {
    let r = client
        .query_one(
            "SELECT current_setting('max_connections')::int,
                    current_setting('superuser_reserved_connections')::int,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_near_its_connection_limit_is_warned_about() {
    let (sandbox, inventory) = group_with(SandboxOptions::default()).await;
    let archive = sandbox
        .runtime_archive("4.2.0")
        .unwrap()
        .display()
        .to_string();

    let out = run(&inventory, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        find(&events(&out), "database_room").is_none(),
        "{}",
        text(&out)
    );

    // Fill the server until fewer than an upgrade's connections are free.
    let first = sandbox.db.connect().await.unwrap();
    let (max, reserved, in_use) = room(&first).await;
    let mut held = vec![first];
    for _ in 0..(max - reserved - in_use - 3) {
        held.push(sandbox.db.connect().await.unwrap());
    }
    let out = run(&inventory, &["status"]);
    let listed = events(&out);
    let w = find(&listed, "database_room").unwrap_or_else(|| panic!("{}", text(&out)));
    assert_eq!(w["max_connections"], max);
    assert!(
        w["warning"]
            .as_str()
            .unwrap()
            .contains("raise max_connections"),
        "{w}"
    );
    let out = run(
        &inventory,
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
    assert!(
        find(&events(&out), "database_room").is_some(),
        "{}",
        text(&out)
    );
    drop(held);
}

/// The sandbox's server for a fleet of a hundred groups starts, and admits
/// what the fleet holds (the default limit refused clients at about fifty).
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_server_is_sized_for_a_hundred_groups() {
    let want = fleet_connections(100);
    assert!(want >= 100 * 2 * 2 + 100 * 3, "{want}");
    let db = TestDatabase::create_for_clients(want).await.unwrap();
    let client = db.connect().await.unwrap();
    let (max, _, _) = room(&client).await;
    if std::env::var("HUBSHIFT_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("an existing server (HUBSHIFT_TEST_DATABASE_URL): its limit is its own ({max})");
        return;
    }
    assert_eq!(u32::try_from(max).unwrap(), want);
}
