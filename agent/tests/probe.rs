//! `hubshift-agent probe`: what an operator sees while tuning the role
//! probe against a hub's event log.

use std::path::Path;
use std::process::Command;

fn config(dir: &Path, probe: &str) -> std::path::PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[paths]\nstate_dir = \"{0}/state\"\ninstall_root = \"{0}/opt\"\nappdata = \"{0}/appData\"\n\
         [hub]\ncreate_command = [\"/bin/true\"]\nstart_command = [\"/bin/true\"]\n[role_probe]\n{probe}",
        dir.display()
    );
    let file = dir.join("agent.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn probe(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hubshift-agent"))
        .args(["probe", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn probe_prints_the_role_and_the_lines_that_matched_and_did_not() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("opt")).unwrap();
    std::fs::create_dir_all(dir.path().join("appData")).unwrap();
    let events = dir.path().join("appData/intelligencehub-events.log");
    let cfg = config(
        dir.path(),
        "kind = \"file\"\npath = \"{appdata}/intelligencehub-events.log\"\njson_field = \"message\"\n\
         active_pattern = \"became the active node\"\nstandby_pattern = \"is a standby node\"\n",
    );

    // No event log yet: unknown, exit 1, and it says why.
    let (code, text) = probe(&cfg);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("UNKNOWN") && text.contains("cannot open"),
        "{text}"
    );

    std::fs::write(
        &events,
        concat!(
            "{\"time\":\"t1\",\"level\":\"INFO\",\"source\":\"HA\",\"message\":\"node hub-a is a standby node\"}\n",
            "{\"time\":\"t2\",\"level\":\"INFO\",\"source\":\"Runtime\",\"message\":\"project loaded\"}\n",
            "{\"time\":\"t3\",\"level\":\"INFO\",\"source\":\"HA\",\"message\":\"node hub-a became the active node\"}\n",
            "{\"time\":\"t4\",\"level\":\"WARN\",\"source\":\"became the active node\",\"message\":\"slow\"}\n",
        ),
    )
    .unwrap();
    let (code, text) = probe(&cfg);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("role:     ACTIVE"), "{text}");
    let matched = text.split("did not match").next().unwrap();
    assert!(
        matched.contains("STANDBY") && matched.contains("t1"),
        "{text}"
    );
    assert!(
        matched.contains("ACTIVE") && matched.contains("t3"),
        "{text}"
    );
    let unmatched = text.split("did not match").nth(1).unwrap();
    assert!(
        unmatched.contains("t2") && unmatched.contains("t4"),
        "{text}"
    );
    assert!(!unmatched.contains("t3"), "{text}");

    // A pattern that fits nothing: the operator sees every line unmatched.
    let cfg = config(
        dir.path(),
        "kind = \"file\"\njson_field = \"message\"\nactive_pattern = \"^ACTIVE$\"\nstandby_pattern = \"^STANDBY$\"\n",
    );
    let (code, text) = probe(&cfg);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("(none)") && text.contains("t3"), "{text}");
}

#[test]
fn probe_refuses_a_bad_configuration_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("opt")).unwrap();
    let cfg = config(
        dir.path(),
        "kind = \"file\"\npath = \"relative/events.log\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hubshift-agent"))
        .args(["probe", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("role_probe.path"));
}
