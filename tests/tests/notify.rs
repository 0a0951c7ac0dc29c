//! End to end: the real `hubshift` announces its runs to a `[notify]`
//! webhook — a local HTTP server in this test that first answers 500 (the
//! controller retries), one that never answers and one that is down (the
//! upgrade neither waits for them nor fails) — with the header's value from
//! the environment and no secret in any payload.

mod support;

use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use support::webhook::{Mode, Received, hook};
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";
const TOKEN: &str = "hook-token-8d1f0c";

/// Points `[notify]` at `port`; `drain`: the seconds the controller waits
/// at its end for what is still queued.
fn set_webhook(inventory: &Path, port: u16, drain: u64) {
    let text = std::fs::read_to_string(inventory).unwrap();
    let text = match text.find("\n[notify]") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    std::fs::write(
        inventory,
        format!(
            "{text}\n[notify]\nwebhook = \"http://127.0.0.1:{port}/hooks/hubshift\"\nheaders_env = {{ X-Hook-Token = \"TEST_HOOK_TOKEN\" }}\ntimeout_secs = 2\nattempts = 4\ndrain_secs = {drain}\n"
        ),
    )
    .unwrap();
}

fn notified(got: &[Received]) -> Vec<Value> {
    got.iter()
        .map(|r| serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_are_announced_and_a_bad_webhook_never_holds_them_up() {
    let (sandbox, inventory) = group_at(FROM).await;
    let archive = sandbox.runtime_archive(TO).unwrap().display().to_string();
    let url = std::fs::read_to_string(sandbox.root.join("database-url")).unwrap();

    // A header whose variable is not set: refused before anything, named.
    let retrying = hook(Mode::FailFirst(2));
    set_webhook(&inventory, retrying.port, 60);
    let out = run(&inventory, &upgrade_args(&archive, TO));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("TEST_HOOK_TOKEN"), "{}", text(&out));

    // The webhook fails twice: the first notification is retried, and every
    // one arrives, in order, before the controller exits.
    let out = hubshift(&inventory, &upgrade_args(&archive, TO))
        .env("TEST_HOOK_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run_id = find(&events(&out), "run_started").unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let got = retrying.got.lock().unwrap().clone();
    let bodies = notified(&got);
    let names: Vec<&str> = bodies.iter().filter_map(|b| b["event"].as_str()).collect();
    assert_eq!(
        names,
        ["run_started", "run_started", "run_started", "run_finished"],
        "two 500s, then each notification once: {bodies:?}"
    );
    for (r, b) in got.iter().zip(&bodies) {
        assert!(
            r.headers.contains(&("x-hook-token".into(), TOKEN.into())),
            "{:?}",
            r.headers
        );
        assert!(
            !r.body.contains(TOKEN),
            "the token in a payload: {}",
            r.body
        );
        assert!(!r.body.contains(url.trim()), "the database URL: {}", r.body);
        assert_eq!(b["group"], GROUP);
        assert_eq!(b["run"], run_id.as_str());
        assert_eq!(b["source"], "hubshift");
    }
    assert_eq!(bodies[3]["to_version"], TO);
    assert!(!text(&out).contains(TOKEN), "the token in the output");

    // A webhook that never answers: the rollback is done all the same, and
    // the controller gives up on it (logging, not failing).
    let silent = hook(Mode::Silent);
    set_webhook(&inventory, silent.port, 2);
    let out = hubshift(&inventory, &["rollback", "--run", &run_id, "--yes"])
        .env("TEST_HOOK_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !silent.got.lock().unwrap().is_empty(),
        "the silent webhook was tried"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notification not delivered"),
        "{}",
        text(&out)
    );
    assert_driver_runs(&sandbox, 0, FROM).await;

    // A webhook that is down: the upgrade is done all the same.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = down.local_addr().unwrap().port();
    drop(down);
    set_webhook(&inventory, port, 2);
    let out = hubshift(&inventory, &upgrade_args(&archive, TO))
        .env("TEST_HOOK_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notification not delivered"),
        "{}",
        text(&out)
    );
    assert_driver_runs(&sandbox, 0, TO).await;
}
