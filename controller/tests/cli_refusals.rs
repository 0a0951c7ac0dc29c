//! The `hubshift` binary refuses bad input with the documented exit codes and
//! a message naming the cause, and changes nothing. No database or agent is
//! needed for these: every case fails before either would be touched, or
//! points at a port where nothing listens.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn hubshift(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubshift"));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("hubshift runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port on loopback where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_inventory(dir: &Path, body: &str) -> String {
    let path = dir.join("inventory.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn inventory(port_a: u16, port_b: u16) -> String {
    format!(
        r#"
[database]
url_env = "TEST_HUBSHIFT_DB"

[tls]
ca = "certs/ca.crt"
cert = "certs/hubshift-controller.crt"
key = "certs/hubshift-controller.key"

[timeouts]
rpc = 3

[[groups]]
name = "plant"
nodes = [
  {{ name = "hub-a", agent = "127.0.0.1:{port_a}", role = "primary", tls_name = "hub-a" }},
  {{ name = "hub-b", agent = "127.0.0.1:{port_b}", role = "secondary", tls_name = "hub-b" }},
]
"#
    )
}

fn certs(dir: &Path) {
    let out = hubshift(
        &[
            "certs",
            "init",
            "--dir",
            &dir.join("certs").display().to_string(),
            "--agent",
            "hub-a=127.0.0.1",
            "--agent",
            "hub-b=127.0.0.1",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn help_documents_exit_codes_and_commands() {
    let out = hubshift(&["--help"], &[]);
    assert!(out.status.success());
    let t = text(&out);
    for word in [
        "plan",
        "upgrade",
        "resume",
        "runs",
        "status",
        "certs",
        "3 refused",
    ] {
        assert!(t.contains(word), "--help lacks {word}: {t}");
    }
    let out = hubshift(&["upgrade"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn bad_inventories_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let good = inventory(closed_port(), closed_port());
    let cases = [
        (
            good.replace("url_env = \"TEST_HUBSHIFT_DB\"", ""),
            "database",
        ),
        (
            good.replace("role = \"primary\"", "role = \"secondary\""),
            "groups[0].nodes",
        ),
        (good.replace("[timeouts]", "[timeouts]\nstpo = 3"), "stpo"),
        (
            good.replace("name = \"hub-b\"", "name = \"hub a\""),
            "groups[0].nodes[1].name",
        ),
    ];
    let runtime = dir.path().join("rt.tar.gz");
    std::fs::write(&runtime, b"not really").unwrap();
    for (body, key) in cases {
        let inv = write_inventory(dir.path(), &body);
        let out = hubshift(
            &[
                "plan",
                "-i",
                &inv,
                "-g",
                "plant",
                "--runtime",
                &runtime.display().to_string(),
                "--version",
                "2.0",
            ],
            &[("TEST_HUBSHIFT_DB", "postgres://u:pw@127.0.0.1:1/db")],
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{key}: {t}");
        assert!(
            t.contains(key) && t.contains("inventory.toml"),
            "{key}: {t}"
        );
    }
    // Unknown group, unset database variable, bad version, missing archive.
    let inv = write_inventory(dir.path(), &good);
    let rt = runtime.display().to_string();
    let env = [("TEST_HUBSHIFT_DB", "postgres://u:pw@127.0.0.1:1/db")];
    for (args, expect, env) in [
        (
            vec![
                "plan",
                "-i",
                &inv,
                "-g",
                "nope",
                "--runtime",
                &rt,
                "--version",
                "2.0",
            ],
            "no group named \"nope\"",
            &env[..],
        ),
        (
            vec![
                "plan",
                "-i",
                &inv,
                "-g",
                "plant",
                "--runtime",
                &rt,
                "--version",
                "2.0",
            ],
            "TEST_HUBSHIFT_DB",
            &[][..],
        ),
        (
            vec![
                "plan",
                "-i",
                &inv,
                "-g",
                "plant",
                "--runtime",
                &rt,
                "--version",
                "../2",
            ],
            "--version",
            &env[..],
        ),
        (
            vec![
                "plan",
                "-i",
                &inv,
                "-g",
                "plant",
                "--runtime",
                "/nonexistent.tar.gz",
                "--version",
                "2.0",
            ],
            "/nonexistent.tar.gz",
            &env[..],
        ),
    ] {
        let out = hubshift(&args, env);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{expect}: {t}");
        assert!(t.contains(expect), "{expect}: {t}");
    }
}

#[test]
fn unreachable_agents_and_database_are_refused_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let inv = write_inventory(dir.path(), &inventory(closed_port(), closed_port()));
    let runtime = dir.path().join("rt.tar.gz");
    std::fs::write(&runtime, b"archive bytes").unwrap();
    let db_port = closed_port();
    let url = format!("postgres://hub:s3cret-pw@127.0.0.1:{db_port}/hubs");
    for cmd in ["plan", "upgrade"] {
        let out = hubshift(
            &[
                cmd,
                "-i",
                &inv,
                "-g",
                "plant",
                "--runtime",
                &runtime.display().to_string(),
                "--version",
                "2.0",
                "--yes",
            ][..if cmd == "plan" { 9 } else { 10 }],
            &[("TEST_HUBSHIFT_DB", &url)],
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(3), "{cmd}: {t}");
        // `upgrade` takes the group's lock in the database before anything
        // else, so an unreachable database is all it gets to report.
        if cmd == "plan" {
            assert!(
                t.contains("hub-a") && t.contains("unreachable"),
                "{cmd}: {t}"
            );
        }
        assert!(t.contains("database"), "{cmd}: {t}");
        assert!(!t.contains("s3cret-pw"), "password leaked: {t}");
    }
    // JSON mode: every stdout line is a JSON object.
    let out = hubshift(
        &[
            "--json",
            "plan",
            "-i",
            &inv,
            "-g",
            "plant",
            "--runtime",
            &runtime.display().to_string(),
            "--version",
            "2.0",
        ],
        &[("TEST_HUBSHIFT_DB", &url)],
    );
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().count() > 3, "{stdout}");
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("event").is_some(), "{line}");
    }
}

#[test]
fn certs_init_writes_private_keys_0600_and_refuses_overwrite_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("c");
    let d = certs_dir.display().to_string();
    let out = hubshift(
        &[
            "certs",
            "init",
            "--dir",
            &d,
            "--agent",
            "hub-a=hub-a.example,10.0.0.5",
            "--agent",
            "hub-b",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    for name in ["ca", "hub-a", "hub-b", "hubshift-controller"] {
        let key = certs_dir.join(format!("{name}.key"));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}.key");
        assert!(
            std::fs::read_to_string(certs_dir.join(format!("{name}.crt")))
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
    }
    let before = std::fs::read(certs_dir.join("hub-a.key")).unwrap();
    let out = hubshift(&["certs", "init", "--dir", &d, "--agent", "hub-a"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(
        std::fs::read(certs_dir.join("hub-a.key")).unwrap(),
        before,
        "nothing overwritten"
    );

    let fresh = dir.path().join("fresh");
    for bad in ["hub a", "../x", "hub-a=not a name", "ca"] {
        let out = hubshift(
            &[
                "certs",
                "init",
                "--dir",
                &fresh.display().to_string(),
                "--agent",
                bad,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(
            !fresh.exists() || std::fs::read_dir(&fresh).unwrap().next().is_none(),
            "{bad}: files written"
        );
    }
    let out = hubshift(
        &["certs", "init", "--dir", &d, "--agent", "hub-a", "--force"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(
        std::fs::read(certs_dir.join("hub-a.key")).unwrap(),
        before,
        "--force overwrote"
    );
}

/// `--sha256` pins the published digest: a different archive is refused
/// before anything is contacted, naming both digests.
#[test]
fn an_archive_that_is_not_the_published_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let inv = write_inventory(dir.path(), &inventory(closed_port(), closed_port()));
    let runtime = dir.path().join("rt.tar.gz");
    std::fs::write(&runtime, b"archive bytes").unwrap();
    let rt = runtime.display().to_string();
    let url = format!("postgres://hub:s3cret-pw@127.0.0.1:{}/hubs", closed_port());
    let published = "0".repeat(64);
    for cmd in ["plan", "upgrade"] {
        for (digest, expect) in [
            (published.as_str(), "not the published"),
            ("not-hex", "is not a SHA-256"),
        ] {
            let out = hubshift(
                &[
                    cmd,
                    "-i",
                    &inv,
                    "-g",
                    "plant",
                    "--runtime",
                    &rt,
                    "--version",
                    "2.0",
                    "--sha256",
                    digest,
                    "--yes",
                ][..if cmd == "plan" { 11 } else { 12 }],
                &[("TEST_HUBSHIFT_DB", &url)],
            );
            let t = text(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} {digest}: {t}");
            assert!(t.contains(expect), "{cmd} {digest}: {t}");
        }
    }
    // The right digest passes this check (and then meets the closed ports).
    let (actual, _) = hubshift_common::digest::sha256_file(&runtime).unwrap();
    let out = hubshift(
        &[
            "plan",
            "-i",
            &inv,
            "-g",
            "plant",
            "--runtime",
            &rt,
            "--version",
            "2.0",
            "--sha256",
            &actual,
        ],
        &[("TEST_HUBSHIFT_DB", &url)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn bad_fleet_requests_exit_2_naming_the_flag_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let archive = dir.path().join("runtime.tar.gz");
    std::fs::write(&archive, b"x").unwrap();
    let archive = archive.display().to_string();
    // Two groups, each with its own (unreachable) database: any attempt to
    // reach one would be exit 3, not 2.
    let mut body = inventory(closed_port(), closed_port())
        .replace("[database]\nurl_env = \"TEST_HUBSHIFT_DB\"\n", "");
    body.push_str(&format!(
        "[groups.database]\nurl_env = \"TEST_HUBSHIFT_DB\"\n\n[[groups]]\nname = \"plant-2\"\nnodes = [\n  {{ name = \"hub-a\", agent = \"127.0.0.1:{}\", role = \"primary\", tls_name = \"hub-a\" }},\n  {{ name = \"hub-b\", agent = \"127.0.0.1:{}\", role = \"secondary\", tls_name = \"hub-b\" }},\n]\n[groups.database]\nurl_env = \"TEST_HUBSHIFT_DB2\"\n",
        closed_port(),
        closed_port()
    ));
    let inv = write_inventory(dir.path(), &body);
    let env = [
        ("TEST_HUBSHIFT_DB", "postgres://u:secret-one@127.0.0.1:1/db"),
        (
            "TEST_HUBSHIFT_DB2",
            "postgres://u:secret-two@127.0.0.1:1/db",
        ),
    ];
    let base = |extra: &[&str]| -> Output {
        let mut args = vec![
            "upgrade",
            "-i",
            &inv,
            "--runtime",
            &archive,
            "--version",
            "4.2.0",
            "--yes",
        ];
        args.extend_from_slice(extra);
        hubshift(&args, &env)
    };
    let cases: [(&[&str], &str); 6] = [
        (
            &["-g", "plant", "-g", "plant-2", "--canary", "plant-9"],
            "--canary plant-9",
        ),
        (&["-g", "plant", "-g", "plant"], "-g plant is given twice"),
        (&["-g", "plant", "-g", "nope"], "no group named \"nope\""),
        (&["--all", "--soak", "ten minutes"], "not a duration"),
        (&["--all", "--parallel", "0"], "--parallel"),
        (&["--all", "-g", "plant"], "--all"),
    ];
    for (extra, says) in cases {
        let out = base(extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(
            text(&out).contains(says),
            "{extra:?} should say {says}: {}",
            text(&out)
        );
        assert!(!text(&out).contains("secret-"), "{}", text(&out));
    }
    // A group with no database of its own and no default: named by key.
    let no_db = body.replace("[groups.database]\nurl_env = \"TEST_HUBSHIFT_DB2\"\n", "");
    let inv2 = dir.path().join("no-db.toml");
    std::fs::write(&inv2, no_db).unwrap();
    let out = hubshift(&["status", "-i", &inv2.display().to_string()], &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("groups[1].database"), "{}", text(&out));
    // Reachable inventory, unreachable databases: the fleet's preflight
    // refuses (exit 3), naming each group, and nothing starts.
    let out = base(&["--all"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("2 group(s) not ready: plant, plant-2"), "{t}");
    assert!(!t.contains("secret-"), "{t}");
}

/// A drill clock that does not parse is refused before anything else is
/// read, naming the variable: it is never silently replaced by the real
/// clock (which could open a real maintenance window).
#[test]
fn a_window_clock_that_does_not_parse_is_refused() {
    let out = hubshift(
        &["status", "-i", "/nonexistent/inventory.toml"],
        &[("HUBSHIFT_WINDOW_CLOCK", "next saturday")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("HUBSHIFT_WINDOW_CLOCK \"next saturday\" is not an RFC 3339 time"),
        "{}",
        text(&out)
    );
}

/// `hubshift watch` refuses an address it cannot serve on, naming the flag.
#[test]
fn watch_refuses_a_bad_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_inventory(dir.path(), &inventory(closed_port(), closed_port()));
    for (listen, code, says) in [
        (
            "localhost",
            2,
            "--listen \"localhost\" is not an address:port",
        ),
        ("8.8.8.8:9465", 1, "cannot listen on --listen 8.8.8.8:9465"),
    ] {
        let out = hubshift(&["watch", "-i", &inv, "--listen", listen], &[]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
    }
    let out = hubshift(&["watch", "-i", &inv, "--interval", "10ms"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("outside 200ms..1h"), "{}", text(&out));
}
