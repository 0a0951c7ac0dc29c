//! The real hub's layout, on the real agent binary: a vendor release
//! (one folder with runtime/, configuration/ and a template appData/) runs
//! from its runtime/ folder on the settings in the configured appdata;
//! settings that would move the hub elsewhere are refused before it starts;
//! store-and-forward files kept in the runtime directory are backed up and
//! follow every runtime switch.

mod support;

use flate2::Compression;
use flate2::write::GzEncoder;
use hubshift_common::pb::*;
use std::path::{Path, PathBuf};
use support::*;
use tonic::Code;

const WRITESTORE: &str = "intelligencehub-writestore-historian.db";

/// A release shaped like the vendor's: `HighByte-Intelligence-Hub-<v>/`
/// with `runtime/bin/{hub,create}`, `configuration/` and a template
/// `appData/` (default settings, empty project).
fn vendor_archive(version: &str) -> Vec<u8> {
    let top = format!("HighByte-Intelligence-Hub-{version}");
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut add = |path: String, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(
        format!("{top}/runtime/bin/hub"),
        HUB_SCRIPT.replace("$VERSION", version).as_bytes(),
        0o755,
    );
    add(
        format!("{top}/runtime/bin/create"),
        CREATE_SCRIPT.as_bytes(),
        0o755,
    );
    add(format!("{top}/configuration/index.html"), b"<html/>", 0o644);
    add(
        format!("{top}/appData/intelligencehub-settings.json"),
        br#"{"directories": {}}"#,
        0o644,
    );
    add(
        format!("{top}/appData/intelligencehub-configuration.json"),
        br#"{"project": {}}"#,
        0o644,
    );
    b.into_inner().unwrap().finish().unwrap()
}

fn jdbc() -> String {
    "jdbc:postgresql://db.example:5432/hub?user=hb&password=pw".into()
}

async fn start(c: &mut Client, mode: StartMode) -> Result<StartResponse, tonic::Status> {
    c.start(StartRequest {
        mode: mode as i32,
        node: "hub-a".into(),
        jdbc_uri: jdbc(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn status(c: &mut Client) -> StatusResponse {
    c.status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn install_vendor(c: &mut Client, version: &str, activate: bool) {
    let bytes = vendor_archive(version);
    let sha = sha256_hex(&bytes);
    install(c, version, bytes, &sha, ArchiveFormat::TarGz, activate)
        .await
        .unwrap();
}

/// An agent configured with `hub.layout = "vendor"`.
fn vendor_agent() -> Agent {
    let mut agent = Agent::start();
    agent.kill();
    let text = agent
        .config_text()
        .replace("[hub]\n", "[hub]\nlayout = \"vendor\"\n");
    std::fs::write(agent.config_path(), text).unwrap();
    agent.spawn();
    agent
}

fn release_dir(agent: &Agent, version: &str) -> PathBuf {
    agent
        .install_root()
        .join("runtimes")
        .join(version)
        .join(format!("HighByte-Intelligence-Hub-{version}"))
}

fn backup_names(path: &Path) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_release_runs_from_its_runtime_folder_on_the_configured_settings() {
    let agent = vendor_agent();
    let mut c = agent.controller().await;
    install_vendor(&mut c, "2.0", true).await;
    let release = release_dir(&agent, "2.0");

    let s = status(&mut c).await;
    assert_eq!(s.layout, "vendor");
    assert_eq!(
        s.runtime_dir,
        release.join("runtime").display().to_string(),
        "{{runtime}} is the release's runtime/ folder"
    );
    let settings = s.settings.clone().unwrap();
    assert_eq!(settings.problem, "", "{settings:?}");
    assert_eq!(settings.app_data, agent.appdata().display().to_string());
    assert!(settings.store_forward_in_runtime);
    assert_eq!(settings.store_forward_dir, s.runtime_dir);

    start(&mut c, StartMode::CreateAndStart).await.unwrap();
    let log_path = agent.state().join("hub.log");
    let expected = format!(
        "settings={}",
        agent
            .appdata()
            .join("intelligencehub-settings.json")
            .display()
    );
    wait_for("the hub to print its settings file", || {
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|l| l.contains(&expected))
    });
    assert!(
        agent.appdata().join("created-marker").is_file(),
        "create ran on the configured appdata"
    );
    c.stop(StopRequest { timeout_seconds: 0 }).await.unwrap();

    // The hub cached data in its runtime directory: backed up, then carried
    // by the switch and carried back by the switch back.
    let sf_data = b"pending rows".to_vec();
    std::fs::write(release.join("runtime").join(WRITESTORE), &sf_data).unwrap();
    let b = c
        .backup(BackupRequest {
            id: "b1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names = backup_names(Path::new(&b.path));
    assert!(
        names.contains(&format!("runtime-store-forward/{WRITESTORE}")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("intelligencehub-runtime")
                || n.starts_with("runtime-store-forward/bin")),
        "only store-and-forward files of the runtime dir: {names:?}"
    );

    install_vendor(&mut c, "3.0", false).await;
    let next = release_dir(&agent, "3.0");
    let r = c
        .activate_runtime(ActivateRuntimeRequest {
            version: "3.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.carried_store_forward, [WRITESTORE]);
    assert_eq!(
        std::fs::read(next.join("runtime").join(WRITESTORE)).unwrap(),
        sf_data
    );
    assert!(!release.join("runtime").join(WRITESTORE).exists());
    let r = c
        .activate_runtime(ActivateRuntimeRequest {
            version: "2.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.carried_store_forward, [WRITESTORE]);
    assert_eq!(
        std::fs::read(release.join("runtime").join(WRITESTORE)).unwrap(),
        sf_data
    );
    // The bundled template appData is neither used nor deleted.
    for dir in [&release, &next] {
        assert_eq!(
            std::fs::read_to_string(dir.join("appData/intelligencehub-settings.json")).unwrap(),
            r#"{"directories": {}}"#
        );
        assert!(!dir.join("appData/created-marker").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_move_the_hub_elsewhere_are_refused_before_it_starts() {
    let agent = vendor_agent();
    let mut c = agent.controller().await;
    install_vendor(&mut c, "2.0", true).await;
    let appdata = agent.appdata().display().to_string();
    let cases = [
        (
            r#"{"directories": {}}"#.to_string(),
            "`directories.appData`",
        ),
        (
            r#"{"directories": {"appData": "../appData"}}"#.to_string(),
            "`directories.appData`",
        ),
        (
            format!(
                r#"{{"directories": {{"appData": "{appdata}", "storeForwardData": "/var/tmp/sf"}}}}"#
            ),
            "`directories.storeForwardData`",
        ),
    ];
    for (json, setting) in cases {
        agent.write_settings(&json);
        let e = start(&mut c, StartMode::CreateAndStart).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{json}: {e:?}");
        assert!(e.message().contains(setting), "{json}: {}", e.message());
        let s = status(&mut c).await;
        assert!(
            s.settings.unwrap().problem.contains(setting),
            "Status says so too"
        );
        assert_eq!(s.state, HubState::Stopped as i32);
    }
    std::fs::remove_file(agent.appdata().join("intelligencehub-settings.json")).unwrap();
    let e = start(&mut c, StartMode::Start).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("no settings file"), "{}", e.message());
    assert!(agent.hub_pids().is_empty(), "nothing was started");
    assert!(!agent.appdata().join("created-marker").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_archive_under_the_vendor_layout_is_not_activated() {
    let agent = vendor_agent();
    let mut c = agent.controller().await;
    let bytes = runtime_archive("1.0");
    let sha = sha256_hex(&bytes);
    let e = install(&mut c, "1.0", bytes, &sha, ArchiveFormat::TarGz, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("hub.layout"), "{}", e.message());
    assert_eq!(status(&mut c).await.active_runtime, "");
}
