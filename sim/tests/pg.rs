//! The throwaway PostgreSQL and binary lookup.

use hubshift_sim::pg::TestDatabase;

#[tokio::test]
async fn test_database_is_reachable_by_url_and_jdbc_and_gone_after_drop() {
    let db = TestDatabase::create().await.unwrap();
    let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, db.dbname());
    assert!(db.url().starts_with(&format!(
        "postgres://{}:{}@127.0.0.1:{}/",
        db.user(),
        db.password(),
        db.port()
    )));
    let jdbc = hubshift_sim::hubsim::jdbc::JdbcTarget::parse(&db.jdbc_uri()).unwrap();
    assert_eq!(
        (jdbc.host.as_str(), jdbc.port, jdbc.dbname.as_str()),
        (db.host(), db.port(), db.dbname())
    );
    assert_eq!(jdbc.password.expose(), db.password());
    // Password authentication is enforced.
    let wrong = format!(
        "postgres://{}:wrong@127.0.0.1:{}/{}",
        db.user(),
        db.port(),
        db.dbname()
    );
    assert!(
        tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err()
    );
    drop(client);

    let port = db.port();
    drop(db);
    let again = format!("postgres://x:y@127.0.0.1:{port}/postgres");
    if std::env::var(hubshift_sim::pg::DATABASE_URL_ENV).is_err() {
        assert!(
            tokio_postgres::connect(&again, tokio_postgres::NoTls)
                .await
                .is_err(),
            "the private cluster is stopped on drop"
        );
    }
}

#[test]
fn finds_the_hubsim_binary_from_a_test_executable() {
    let found = hubshift_sim::bins::binary("hubsim").unwrap();
    assert_eq!(
        std::fs::canonicalize(found).unwrap(),
        std::fs::canonicalize(env!("CARGO_BIN_EXE_hubsim")).unwrap()
    );
    let e = hubshift_sim::bins::binary("no-such-hubshift-binary")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cargo build -p"), "{e}");
}

/// One server, several databases: each apart from the others, the server up
/// while any handle lives (whichever was made first), stopped with the last.
#[tokio::test]
async fn databases_made_on_one_server_are_apart_and_keep_the_server_up() {
    let first = TestDatabase::create().await.unwrap();
    let one = first.create_database("plant_1").await.unwrap();
    let two = first.create_database("plant_2").await.unwrap();
    assert!(one.same_server(&first) && two.same_server(&one));
    assert_eq!((one.host(), one.port()), (first.host(), first.port()));
    assert_ne!(one.dbname(), two.dbname());
    assert!(one.dbname().starts_with("plant_1") && two.dbname().starts_with("plant_2"));
    // Refused before the server sees it: not a plain identifier.
    assert!(first.create_database("plant-1; DROP").await.is_err());

    let c1 = one.connect().await.unwrap();
    let c2 = two.connect().await.unwrap();
    let name: String = c1
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, one.dbname());
    c1.batch_execute("CREATE TABLE only_in_one (x int); INSERT INTO only_in_one VALUES (1)")
        .await
        .unwrap();
    let seen: i64 = c2
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_in_one'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0, "a table of plant_1 is not in plant_2");
    drop((c1, c2));

    // The handle that made the server goes first; the others keep it.
    let private = first.server_dir();
    drop(first);
    let c2 = two.connect().await.unwrap();
    let one_row: i32 = c2.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one_row, 1);
    drop(c2);
    let port = two.port();
    drop(one);
    drop(two);
    if let Some(dir) = private {
        assert!(!dir.exists(), "{} left behind", dir.display());
        let again = format!("postgres://x:y@127.0.0.1:{port}/postgres");
        assert!(
            tokio_postgres::connect(&again, tokio_postgres::NoTls)
                .await
                .is_err(),
            "the private cluster is stopped with its last handle"
        );
    }
}
