//! The controller speaks TLS to PostgreSQL: with `sslmode=require` and the
//! database server's CA in `database.ca_file` it connects; against the wrong
//! CA it refuses; and `require` against a server without TLS fails rather
//! than falling back to plain TCP.

use hubshift_common::pki::{Authority, Usage};
use hubshift_sim::pg::TestDatabase;
use std::path::Path;
use std::process::{Command, Output};

fn inventory(dir: &Path, url: &str, ca_file: Option<&Path>) -> std::path::PathBuf {
    // The controller's own mTLS files are not used by `runs`, but must be named.
    let url_file = dir.join("database-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let ca_line = ca_file
        .map(|p| format!("ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let path = dir.join(format!("inventory-{}.toml", ca_file.is_some()));
    std::fs::write(
        &path,
        format!(
            r#"[database]
url_file = "{}"
{ca_line}
[tls]
ca = "ca.crt"
cert = "controller.crt"
key = "controller.key"

[[groups]]
name = "plant"
nodes = [
  {{ name = "hub-a", agent = "127.0.0.1:1", role = "primary" }},
  {{ name = "hub-b", agent = "127.0.0.1:2", role = "secondary" }},
]
"#,
            url_file.display()
        ),
    )
    .unwrap();
    path
}

fn runs(inventory: &Path) -> Output {
    Command::new(hubshift_sim::bins::binary("hubshift").unwrap())
        .args(["runs", "-i"])
        .arg(inventory)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn controller_uses_tls_to_postgres_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let url = format!("{}?sslmode=require", db.url());

    // Without TLS on the server, `require` fails instead of falling back.
    let plain = inventory(dir.path(), &url, None);
    let out = runs(&plain);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(db.password()),
        "password leaked: {}",
        text(&out)
    );

    let ca = Authority::new("database CA").unwrap();
    let server = ca
        .issue("127.0.0.1", &["localhost".into()], Usage::Server)
        .unwrap();
    db.enable_tls(&server.cert_pem, &server.key_pem)
        .await
        .unwrap();
    let ca_file = dir.path().join("db-ca.crt");
    std::fs::write(&ca_file, &ca.ca().cert_pem).unwrap();

    // The server's CA is named: TLS connects.
    let with_ca = inventory(dir.path(), &url, Some(&ca_file));
    let out = runs(&with_ca);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("No runs yet"), "{}", text(&out));

    // Another CA: the server's certificate is not trusted.
    let other = Authority::new("someone else").unwrap();
    let other_file = dir.path().join("other-ca.crt");
    std::fs::write(&other_file, &other.ca().cert_pem).unwrap();
    let wrong = inventory(dir.path(), &url, Some(&other_file));
    let out = runs(&wrong);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
}
