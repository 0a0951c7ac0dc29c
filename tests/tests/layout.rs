//! End to end, the real hub's layout: runtime archives in the vendor's
//! shape carry their own template appData (an empty project); the agents
//! bind the hubs to the configured appdata through the settings file, so an
//! upgrade ends on the original project and certificate store; ticks cached
//! in the runtime directory before the upgrade (`directories.storeForwardData`
//! unset) are replayed after it; settings that point elsewhere refuse the
//! upgrade before anything changes.

mod support;

use hubshift_common::pb::HubRole;
use hubshift_sim::hubsim::schema::TickRow;
use hubshift_sim::sandbox::Sandbox;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";
/// Cached ticks carry seqs no running node reaches in a test.
const CACHED_SEQ: i64 = 900_000;
const CACHED: i64 = 40;

async fn sandbox() -> (Sandbox, PathBuf, String) {
    let (sandbox, inventory) = group_at(FROM).await;
    let archive = sandbox.runtime_archive(TO).unwrap().display().to_string();
    (sandbox, inventory, archive)
}

/// `runtimes/<version>/HighByte-Intelligence-Hub-<version>` of node `i`.
fn release(sandbox: &Sandbox, i: usize, version: &str) -> PathBuf {
    sandbox.nodes[i]
        .install_root
        .join("runtimes")
        .join(version)
        .join(hubshift_sim::runtime::release_folder(version))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn cluster_project(db: &tokio_postgres::Client) -> String {
    db.query_one("SELECT project FROM orchestration.cluster", &[])
        .await
        .unwrap()
        .get(0)
}

const PROJECT: &str = "intelligencehub-configuration.json";
const STORE: &str = "intelligencehub-certificatestore.pkcs12";
const WRITESTORE: &str = "intelligencehub-writestore-ticks.sf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_a_release_with_its_own_template_appdata_keeps_the_project_and_replays_cached_ticks()
 {
    let (sandbox, inventory, archive) = sandbox().await;
    let db = sandbox.db.connect().await.unwrap();
    let primary = &sandbox.nodes[0];
    let project = read(&primary.appdata.join(PROJECT));
    let store = read(&primary.appdata.join(STORE));
    assert_eq!(cluster_project(&db).await.as_bytes(), project.as_slice());

    // The primary cached ticks in its runtime directory (storeForwardData
    // unset) that the running process does not know about: only a hub
    // started later, in whichever runtime directory holds them, sends them.
    let runtime_dir = release(&sandbox, 0, FROM).join("runtime");
    let base_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
        - 3_600_000_000;
    let lines: String = (0..CACHED)
        .map(|i| {
            serde_json::to_string(&TickRow {
                node: primary.name.clone(),
                seq: CACHED_SEQ + i,
                version: FROM.into(),
                produced_at_us: base_us + i * 50_000,
            })
            .unwrap()
                + "\n"
        })
        .collect();
    std::fs::write(runtime_dir.join(WRITESTORE), &lines).unwrap();

    // plan warns loudly about it and shows the resolved paths.
    let out = run(
        &inventory,
        &["plan", "-g", GROUP, "--runtime", &archive, "--version", TO],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    let warned = ev.iter().any(|e| {
        e["event"] == "preflight"
            && e["check"] == "store-forward"
            && e["warning"] == true
            && e["node"] == "hub-a"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("directories.storeForwardData")
    });
    assert!(warned, "{}", text(&out));
    let layout = ev
        .iter()
        .find(|e| e["event"] == "preflight" && e["check"] == "layout" && e["node"] == "hub-a")
        .unwrap_or_else(|| panic!("no layout finding: {}", text(&out)));
    assert!(
        layout["message"]
            .as_str()
            .unwrap()
            .contains(&runtime_dir.display().to_string()),
        "{layout}"
    );

    let out = run(
        &inventory,
        &[
            "upgrade",
            "-g",
            GROUP,
            "--runtime",
            &archive,
            "--version",
            TO,
            "--yes",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    let done = find(&ev, "run_finished").unwrap_or_else(|| panic!("{}", text(&out)));

    // The backup of record holds the cached ticks: a full backup, or with
    // pre-copy the base (beside it) and the delta of what changed after it.
    let backup = std::path::Path::new(done["backup_path"].as_str().unwrap());
    let mut archives = vec![backup.to_path_buf()];
    if let Some(base) = done["pre_copy"]["base_id"].as_str()
        && done["pre_copy"]["delta"] == true
    {
        archives.push(backup.with_file_name(format!("{base}.tar.gz")));
    }
    let mut listing = String::new();
    for archive in &archives {
        let out = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(archive)
            .output()
            .unwrap();
        assert!(out.status.success(), "tar -tzf {}", archive.display());
        listing += &String::from_utf8_lossy(&out.stdout);
    }
    assert!(
        listing
            .lines()
            .any(|l| l == format!("runtime-store-forward/{WRITESTORE}")),
        "{listing}"
    );

    // The group runs TO on the original project and certificate store.
    for (i, role) in [(0, HubRole::Active), (1, HubRole::Standby)] {
        sandbox
            .wait_role(i, role, Duration::from_secs(60))
            .await
            .unwrap();
        let s = sandbox.status(i).await.unwrap();
        assert_eq!(s.active_runtime, TO);
        assert_eq!(
            s.runtime_dir,
            release(&sandbox, i, TO)
                .join("runtime")
                .display()
                .to_string()
        );
        let node = &sandbox.nodes[i];
        assert_eq!(read(&node.appdata.join(STORE)), store, "{}", node.name);
        assert_eq!(read(&node.appdata.join(PROJECT)), project, "{}", node.name);
        // The release's template appData was never used, nor deleted.
        let template = release(&sandbox, i, TO).join("appData");
        assert!(
            String::from_utf8_lossy(&read(&template.join(PROJECT))).contains("\"project\": {}")
        );
        assert!(!template.join(STORE).exists(), "{}", node.name);
    }
    assert_eq!(cluster_project(&db).await.as_bytes(), project.as_slice());

    // Every cached tick reaches the database, once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = loop {
        let row = db
            .query_one(
                "SELECT count(*), count(DISTINCT seq) FROM hubdata.ticks WHERE node = $1 AND seq >= $2 AND seq < $3",
                &[&primary.name, &CACHED_SEQ, &(CACHED_SEQ + CACHED)],
            )
            .await
            .unwrap();
        let (n, distinct): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(n, distinct, "a cached tick was stored twice");
        if n == CACHED || Instant::now() >= deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        count,
        CACHED,
        "cached ticks replayed after the upgrade; hub log:\n{}",
        hubshift_sim::sandbox::tail(&primary.hub_log(), 30)
    );
    assert!(!runtime_dir.join(WRITESTORE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_point_elsewhere_are_refused_before_anything_changes() {
    let (sandbox, inventory, archive) = sandbox().await;
    let db = sandbox.db.connect().await.unwrap();
    // The secondary's settings now name another appData (the hub keeps
    // running: it read them at its start).
    let elsewhere = sandbox.root.join("elsewhere/appData");
    hubshift_sim::sandbox::write_settings(
        &sandbox.nodes[1].appdata,
        &hubshift_sim::sandbox::hub_settings(&elsewhere),
    )
    .unwrap();
    let untouched = Untouched::capture(&sandbox);

    for args in [
        vec!["plan", "-g", GROUP, "--runtime", &archive, "--version", TO],
        vec![
            "upgrade",
            "-g",
            GROUP,
            "--runtime",
            &archive,
            "--version",
            TO,
            "--yes",
        ],
    ] {
        let out = run(&inventory, &args);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let finding = events(&out)
            .into_iter()
            .find(|e| {
                e["event"] == "preflight" && e["check"] == "settings" && e["blocking"] == true
            })
            .unwrap_or_else(|| panic!("no settings finding: {}", text(&out)));
        assert_eq!(finding["node"], "hub-b");
        let message = finding["message"].as_str().unwrap();
        assert!(
            message.contains("`directories.appData`")
                && message.contains(&sandbox.nodes[1].appdata.display().to_string()),
            "{message}"
        );
    }
    untouched.assert_same(&sandbox, "settings elsewhere");
    assert_eq!(schema_version(&db).await.as_deref(), Some(FROM));
    assert!(!elsewhere.exists());
    assert_eq!(sandbox.status(0).await.unwrap().role(), HubRole::Active);
}
