//! Behaviours 1–4 and 11: `create` and the checks `start` makes before it
//! joins the HA group.

mod common;

use common::*;
use hubshift_sim::pg::TestDatabase;
use std::os::unix::fs::PermissionsExt;

/// 1 + 11: create makes the schema, records version, certificate
/// fingerprint, preferred primary and project, writes hub-like appdata, and
/// refuses a second time.
#[tokio::test]
async fn create_makes_schema_and_hub_like_appdata_and_refuses_twice() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");
    let (status, log) = a.create(&db, "4.1.0").await;
    assert!(status.success(), "{log}");
    assert!(log.contains("created HA schema \"orchestration\""), "{log}");

    let store = std::fs::read(a.certificate_store()).unwrap();
    assert!(store.len() >= 1024);
    let mode = std::fs::metadata(a.certificate_store())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let project = std::fs::read_to_string(a.configuration()).unwrap();
    serde_json::from_str::<serde_json::Value>(&project).unwrap();

    let c = db.connect().await.unwrap();
    let row = c
        .query_one(
            "SELECT version, cert_fingerprint, preferred_primary, project FROM orchestration.cluster",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "4.1.0");
    assert_eq!(
        row.get::<_, String>(1),
        hubshift_common::digest::sha256_hex(&store)
    );
    assert_eq!(row.get::<_, String>(2), "hub-a");
    assert_eq!(row.get::<_, String>(3), project);
    let leader = c
        .query_one("SELECT node FROM orchestration.leader", &[])
        .await
        .unwrap();
    assert_eq!(leader.get::<_, Option<String>>(0), None);
    let nodes = c
        .query_one("SELECT count(*) FROM orchestration.nodes", &[])
        .await
        .unwrap();
    assert_eq!(nodes.get::<_, i64>(0), 1);
    c.query_one("SELECT count(*) FROM hubdata.ticks", &[])
        .await
        .unwrap();

    // An existing project and certificate store are kept.
    let before = std::fs::read(a.certificate_store()).unwrap();
    let (status, log) = a.create(&db, "4.1.0").await;
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("already exists") && log.contains("version 4.1.0"),
        "{log}"
    );
    assert_eq!(std::fs::read(a.certificate_store()).unwrap(), before);
}

/// 2: start refuses an unreachable database and a missing schema.
#[tokio::test]
async fn start_refuses_unreachable_database_and_missing_schema() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");

    let mut p = a.start(&db, "4.1.0");
    let status = p.wait_exit(WAIT).await.unwrap();
    let log = p.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("HA schema \"orchestration\" not found") && log.contains("hubsim create"),
        "{log}"
    );

    // A port nobody listens on; the URI (with its password) on the command line.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!(
        "jdbc:postgresql://127.0.0.1:{port}/hub?user=hb&password={}",
        db.password()
    );
    let log_path = dir.path().join("unreachable.log");
    let mut p = hubshift_sim::process::HubsimProcess::spawn_program(
        &hubsim(),
        &[
            "--version",
            "4.1.0",
            "start",
            "-n",
            "hub-a",
            "-j",
            &uri,
            "--start-delay",
            "0s",
        ],
        &log_path,
        &[("HIGHBYTE_SETTINGS_FILE", &a.settings.display().to_string())],
    )
    .unwrap();
    let status = p.wait_exit(WAIT).await.unwrap();
    let log = p.log();
    assert!(!status.success(), "{log}");
    assert!(log.contains("cannot reach database"), "{log}");
    assert_no_password(&db, &log);
}

/// 3: start refuses a schema of another version.
#[tokio::test]
async fn start_refuses_version_mismatch() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");
    assert!(a.create(&db, "4.1.0").await.0.success());
    let mut p = a.start(&db, "4.2.0");
    let status = p.wait_exit(WAIT).await.unwrap();
    let log = p.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("version mismatch") && log.contains("4.1.0") && log.contains("4.2.0"),
        "{log}"
    );
    assert!(!log.contains("HA role:"), "{log}");
}

/// 4: start refuses a certificate store that is not the recorded one, and
/// accepts the primary's copy.
#[tokio::test]
async fn start_refuses_foreign_certificate_store() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeDir::new(dir.path(), "hub-a");
    let b = NodeDir::new(dir.path(), "hub-b");
    assert!(a.create(&db, "4.1.0").await.0.success());

    std::fs::create_dir_all(&b.appdata).unwrap();
    std::fs::write(b.certificate_store(), b"another store").unwrap();
    let mut p = b.start(&db, "4.1.0");
    let status = p.wait_exit(WAIT).await.unwrap();
    let log = p.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("certificate store") && log.contains("does not match"),
        "{log}"
    );

    std::fs::remove_file(b.certificate_store()).unwrap();
    let mut p = b.start(&db, "4.1.0");
    let status = p.wait_exit(WAIT).await.unwrap();
    assert!(!status.success());
    assert!(p.log().contains("certificate store"), "{}", p.log());

    b.copy_certificate_from(&a);
    let mut p = b.start(&db, "4.1.0");
    p.wait_for_log_line("HA role:", WAIT).await.unwrap();
    // It copied the project over Postgres.
    assert_eq!(
        std::fs::read_to_string(b.configuration()).unwrap(),
        std::fs::read_to_string(a.configuration()).unwrap()
    );
}
