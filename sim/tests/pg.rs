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
