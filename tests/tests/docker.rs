//! End to end, what only the docker driver has: a two-node group of hubsim
//! containers on the local Docker Engine, each started and stopped by a real
//! agent over mTLS, against a real PostgreSQL — appData in named volumes,
//! command overrides for older images, re-adoption of the container, image
//! archive refusals, an engine that stops answering. The upgrade cases both
//! drivers share are in `upgrade.rs` (`CASE::docker`) and `faults.rs`.
//! Without an engine these tests fail, unless `HUBSHIFT_SKIP_DOCKER=1`
//! skips them explicitly (one line on stderr).

mod support;

use hubshift_common::pb::{HubRole, HubState};
use hubshift_sim::measure;
use hubshift_sim::sandbox::{HubDriver, Sandbox, SandboxOptions};
use std::time::{Duration, SystemTime};
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";

/// A docker group at FROM, its inventory and the TO image archive.
async fn setup() -> (Sandbox, std::path::PathBuf, String) {
    setup_with(SandboxOptions::default()).await
}

async fn setup_with(opts: SandboxOptions) -> (Sandbox, std::path::PathBuf, String) {
    let sandbox = Sandbox::start(SandboxOptions {
        version: FROM.into(),
        driver: HubDriver::Docker,
        ..opts
    })
    .await
    .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let inventory = sandbox.root.join("inventory.toml");
    sandbox.write_inventory(&inventory, GROUP).unwrap();
    let archive = sandbox.runtime_archive(TO).unwrap().display().to_string();
    assert!(archive.ends_with(".tar"), "{archive}");
    (sandbox, inventory, archive)
}

/// Both nodes at `version`, primary active and secondary standby, the
/// schema at `version`, data flowing without split brain since `since`.
async fn assert_group_at(sandbox: &Sandbox, version: &str, since: SystemTime) {
    sandbox
        .wait_role(0, HubRole::Active, Duration::from_secs(60))
        .await
        .unwrap();
    sandbox
        .wait_role(1, HubRole::Standby, Duration::from_secs(60))
        .await
        .unwrap();
    for i in 0..2 {
        let s = sandbox.status(i).await.unwrap();
        assert_eq!(s.active_runtime, version, "node {i}: {s:?}");
        assert!(s.staged_runtimes.contains(&FROM.to_string()), "{s:?}");
        assert!(s.pid > 0, "{s:?}");
    }
    // The containers run the image of that version (the engine says so).
    for i in 0..2 {
        assert_driver_runs(sandbox, i, version).await;
    }
    let db = sandbox.db.connect().await.unwrap();
    assert_eq!(schema_version(&db).await.as_deref(), Some(version));
    let ticks = measure::fetch_ticks(&db, since).await.unwrap();
    assert!(ticks.len() > 20, "data flowed: {} ticks", ticks.len());
    assert_eq!(
        measure::split_brain(&ticks, sandbox.timing.tick_interval),
        None,
        "split brain"
    );
    assert!(
        ticks
            .iter()
            .any(|t| t.version == version && t.node == "hub-a"),
        "the primary produces data at {version}"
    );
}

/// appData in a named volume: the agents back up, restore and copy the
/// certificate store on the volume's mount point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_group_on_named_volumes_upgrades_keeping_appdata() {
    if !engine_or_skip("docker_group_on_named_volumes_upgrades_keeping_appdata") {
        return;
    }
    let (sandbox, inventory, archive) = setup_with(SandboxOptions {
        appdata_volume: true,
        ..Default::default()
    })
    .await;
    let primary = &sandbox.nodes[0];
    assert!(
        primary.appdata.starts_with("/var/lib/docker/volumes")
            || primary.appdata.ends_with("_data"),
        "{}",
        primary.appdata.display()
    );
    assert!(
        primary
            .appdata
            .join("intelligencehub-certificatestore.pkcs12")
            .is_file()
    );
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .Mounts}}{{.Type}} {{.Name}}{{end}}",
            &primary.container,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("volume {}-appdata", primary.container)
    );
    let planted = plant_hub_data(&sandbox);
    let kept: Vec<_> = planted
        .iter()
        .filter(|p| p.starts_with(&primary.appdata))
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    assert_eq!(kept.len(), 2);
    let since = SystemTime::now();
    let out = run(&inventory, &upgrade_args(&archive, TO));
    assert!(out.status.success(), "{}", text(&out));
    assert_group_at(&sandbox, TO, since).await;
    for (p, b) in &kept {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} kept", p.display());
    }
    let p = sandbox.status(0).await.unwrap();
    let s = sandbox.status(1).await.unwrap();
    assert_eq!(p.appdata, primary.appdata.display().to_string());
    assert!(!p.certificate_sha256.is_empty());
    assert_eq!(p.certificate_sha256, s.certificate_sha256);
}

/// Images older than 4.5.0 know no START_MODE: the agent replaces the
/// entrypoint with the configured create+start or start command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_group_of_older_images_upgrades_through_command_overrides() {
    if !engine_or_skip("docker_group_of_older_images_upgrades_through_command_overrides") {
        return;
    }
    let (sandbox, inventory, archive) = setup_with(SandboxOptions {
        command_override: true,
        ..Default::default()
    })
    .await;
    let since = SystemTime::now();
    let out = run(&inventory, &upgrade_args(&archive, TO));
    assert!(out.status.success(), "{}", text(&out));
    assert_group_at(&sandbox, TO, since).await;
    for (n, mode) in sandbox.nodes.iter().zip(["HA_INIT", "HA"]) {
        let out = std::process::Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{json .Config.Entrypoint}} {{json .Config.Env}}",
                &n.container,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let seen = String::from_utf8_lossy(&out.stdout);
        assert!(seen.contains(&format!("\"--mode\",\"{mode}\"")), "{seen}");
        assert!(!seen.contains("START_MODE"), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_restart_readopts_probe_pause_exit_and_stop_keeps_the_container() {
    if !engine_or_skip(
        "docker_agent_restart_readopts_probe_pause_exit_and_stop_keeps_the_container",
    ) {
        return;
    }
    let (mut sandbox, _inventory, _archive) = setup().await;
    let before = sandbox.status(1).await.unwrap();
    assert_eq!(before.state(), HubState::Running);
    sandbox.restart_agent(1).await.unwrap();
    let after = sandbox.status(1).await.unwrap();
    assert_eq!(after.state(), HubState::Running, "{after:?}");
    assert_eq!(after.role(), HubRole::Standby);
    assert_eq!(after.pid, before.pid, "the same container process");
    assert_eq!(after.node, "hub-b");
    assert_eq!(after.start_mode, "START");

    // `hubshift-agent probe` shows what the role probe reads: the
    // container's output since its start.
    let out = std::process::Command::new(bin("hubshift-agent"))
        .args(["probe", "--config"])
        .arg(&sandbox.nodes[1].config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(printed.contains("role:     STANDBY"), "{printed}");
    assert!(printed.contains("hub output since its start"), "{printed}");

    // A paused container is reported frozen.
    let docker = |verb: &str| {
        let st = std::process::Command::new("docker")
            .args([verb, &sandbox.nodes[1].container])
            .output()
            .unwrap();
        assert!(st.status.success(), "docker {verb}");
    };
    docker("pause");
    let paused = sandbox.status(1).await.unwrap();
    docker("unpause");
    assert!(paused.frozen, "{paused:?}");

    // Ended by itself (killed behind the agent's back): EXITED with its
    // code; a new Start makes a new container that joins as standby.
    docker("kill");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exited = loop {
        let s = sandbox.status(1).await.unwrap();
        if s.state() == HubState::Exited || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(exited.state(), HubState::Exited, "{exited:?}");
    assert_eq!(exited.exit_code, Some(137), "{exited:?}");
    let mut c = sandbox.client(1).await.unwrap();
    let started = c
        .start(hubshift_common::pb::StartRequest {
            mode: hubshift_common::pb::StartMode::Start as i32,
            node: "hub-b".into(),
            jdbc_uri: sandbox.hub_jdbc_uri(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!started.already_running && started.pid > 0, "{started:?}");
    sandbox
        .wait_role(1, HubRole::Standby, Duration::from_secs(60))
        .await
        .unwrap();

    // Stop: STOPPED (not EXITED), the container is kept with its output.
    let stopped = c
        .stop(hubshift_common::pb::StopRequest {
            timeout_seconds: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.was_running && !stopped.killed, "{stopped:?}");
    let s = sandbox.status(1).await.unwrap();
    assert_eq!(s.state(), HubState::Stopped, "{s:?}");
    assert!(sandbox.nodes[1].hub_log().contains("HA role: standby"));
    // Stop again: nothing to do.
    let again = c
        .stop(hubshift_common::pb::StopRequest { timeout_seconds: 5 })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.was_running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_refuses_archives_that_are_not_one_image_and_teardown_leaves_nothing() {
    if !engine_or_skip(
        "docker_agent_refuses_archives_that_are_not_one_image_and_teardown_leaves_nothing",
    ) {
        return;
    }
    let (sandbox, _inventory, _archive) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let hex = "ab".repeat(32);
    let two = format!(r#"[{{"Config":"{hex}.json"}},{{"Config":"{hex}.json"}}]"#);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(two.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", two.as_bytes())
        .unwrap();
    let path = dir.path().join("two.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    let err = sandbox
        .install_runtime(0, &path, "9.9.9", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one"), "{err}");
    let s = sandbox.status(0).await.unwrap();
    assert!(!s.staged_runtimes.contains(&"9.9.9".to_string()), "{s:?}");
    assert!(
        std::fs::read_dir(sandbox.nodes[0].state_dir.join("staging"))
            .unwrap()
            .next()
            .is_none(),
        "nothing left in staging"
    );

    // The hubs sit on the sandbox's own network; dropping the sandbox
    // removes every container, image and network it made.
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let container = sandbox.nodes[0].container.clone();
    let network = sandbox.network.clone();
    let repository = sandbox.image_repository.clone();
    assert!(!network.is_empty());
    assert_eq!(
        docker(&[
            "inspect",
            "--format",
            "{{.HostConfig.NetworkMode}}",
            &container
        ]),
        network
    );
    assert!(!docker(&["images", "--quiet", &repository]).is_empty());
    drop(sandbox);
    assert_eq!(
        docker(&[
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("name={container}")
        ]),
        ""
    );
    assert_eq!(docker(&["images", "--quiet", &repository]), "");
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "--quiet",
            "--filter",
            &format!("name={network}")
        ]),
        ""
    );
}

/// The upload rules of the process driver hold for image archives: size,
/// checksum, limit, format and stall are refused with nothing left behind;
/// another image under a staged version is AlreadyExists, the same archive
/// again is already_installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_image_uploads_follow_the_upload_rules() {
    use hubshift_common::digest::sha256_hex;
    use hubshift_common::pb::{
        ArchiveFormat, InstallRuntimeRequest, RuntimeHeader, install_runtime_request::Item,
    };
    if !engine_or_skip("docker_image_uploads_follow_the_upload_rules") {
        return;
    }
    let (mut sandbox, _inventory, archive) = setup().await;
    // Short stall limit, so the stalled upload ends quickly.
    let cfg = std::fs::read_to_string(&sandbox.nodes[1].config).unwrap();
    std::fs::write(
        &sandbox.nodes[1].config,
        format!("{cfg}\n[limits]\nupload_idle_timeout_secs = 2\n"),
    )
    .unwrap();
    sandbox.restart_agent(1).await.unwrap();

    // A loaded image takes room in the engine's data root: Status reports
    // that directory's free space where the controller's preflight looks
    // for room to install a runtime.
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{.DockerRootDir}}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let data_root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let s = sandbox.status(1).await.unwrap();
    let room = s
        .free_space
        .iter()
        .find(|d| d.name == "install_root")
        .unwrap_or_else(|| panic!("no install_root space: {s:?}"));
    assert_eq!(room.path, data_root, "{s:?}");
    assert!(room.free_bytes > 0, "{s:?}");

    let image = std::fs::read(&archive).unwrap();
    let sha = sha256_hex(&image);
    let header =
        |version: &str, sha: &str, size: u64, format: ArchiveFormat| InstallRuntimeRequest {
            item: Some(Item::Header(RuntimeHeader {
                version: version.into(),
                sha256: sha.into(),
                size_bytes: size,
                format: format as i32,
                activate: false,
            })),
        };
    let chunks = |bytes: &[u8]| -> Vec<InstallRuntimeRequest> {
        bytes
            .chunks(256 * 1024)
            .map(|c| InstallRuntimeRequest {
                item: Some(Item::Chunk(c.to_vec())),
            })
            .collect()
    };
    let mut c = sandbox.client(1).await.unwrap();
    let n = image.len() as u64;
    let half = &image[..image.len() / 2];
    let cases: Vec<(&str, Vec<InstallRuntimeRequest>, tonic::Code, &str)> = vec![
        (
            "short",
            [
                vec![header("5.0.0", &sha, n, ArchiveFormat::DockerImage)],
                chunks(half),
            ]
            .concat(),
            tonic::Code::InvalidArgument,
            "size mismatch",
        ),
        (
            "long",
            [
                vec![header("5.0.0", &sha, n / 2, ArchiveFormat::DockerImage)],
                chunks(&image),
            ]
            .concat(),
            tonic::Code::InvalidArgument,
            "more bytes",
        ),
        (
            "checksum",
            [
                vec![header(
                    "5.0.0",
                    &"0".repeat(64),
                    n,
                    ArchiveFormat::DockerImage,
                )],
                chunks(&image),
            ]
            .concat(),
            tonic::Code::InvalidArgument,
            "checksum mismatch",
        ),
        (
            "limit",
            vec![header("5.0.0", &sha, 1 << 40, ArchiveFormat::DockerImage)],
            tonic::Code::InvalidArgument,
            "exceeds the limit",
        ),
        (
            "format",
            [
                vec![header("5.0.0", &sha, n, ArchiveFormat::TarGz)],
                chunks(&image),
            ]
            .concat(),
            tonic::Code::InvalidArgument,
            "docker save",
        ),
        (
            "bad version",
            [
                vec![header("../x", &sha, n, ArchiveFormat::DockerImage)],
                chunks(&image),
            ]
            .concat(),
            tonic::Code::InvalidArgument,
            "version",
        ),
        (
            "another image under a staged version",
            [
                vec![header(FROM, &sha, n, ArchiveFormat::DockerImage)],
                chunks(&image),
            ]
            .concat(),
            tonic::Code::AlreadyExists,
            "different archive",
        ),
    ];
    for (what, msgs, code, needle) in cases {
        let err = c
            .install_runtime(tokio_stream::iter(msgs))
            .await
            .expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(needle), "{what}: {err:?}");
    }

    // A sender that goes quiet after half the archive.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(header(TO, &sha, n, ArchiveFormat::DockerImage))
        .await
        .unwrap();
    // A few chunks only: the channel must not fill before the call reads it.
    for m in chunks(half).into_iter().take(4) {
        tx.send(m).await.unwrap();
    }
    let err = c
        .install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("stalled");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    drop(tx);

    let s = sandbox.status(1).await.unwrap();
    assert!(!s.staged_runtimes.contains(&TO.to_string()), "{s:?}");
    let staging = sandbox.nodes[1].state_dir.join("staging");
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "staging is empty"
    );

    // The real thing, twice: loaded, then already installed.
    for already in [false, true] {
        let msgs = [
            vec![header(TO, &sha, n, ArchiveFormat::DockerImage)],
            chunks(&image),
        ]
        .concat();
        let r = c
            .install_runtime(tokio_stream::iter(msgs))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.already_installed, already, "{r:?}");
    }
    let s = sandbox.status(1).await.unwrap();
    assert!(s.staged_runtimes.contains(&TO.to_string()), "{s:?}");
    assert_eq!(s.active_runtime, FROM, "installing does not activate");
}

/// Forwards a unix socket to the engine's until aborted.
fn engine_proxy(path: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut engine) =
                    tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut engine).await;
                }
            });
        }
    })
}

/// An engine that stops answering is not a stopped hub: Status and Start
/// fail with UNAVAILABLE (the controller then treats the node as
/// unreachable, never as free to take over); a frozen (paused) hub is
/// killed by Stop, not thawed to be stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_gone_is_unavailable_and_a_paused_hub_is_killed_by_stop() {
    if !engine_or_skip("docker_engine_gone_is_unavailable_and_a_paused_hub_is_killed_by_stop") {
        return;
    }
    let (mut sandbox, _inventory, _archive) = setup().await;
    let socket = sandbox.root.join("engine.sock");
    let proxy = engine_proxy(socket.clone());
    let cfg = std::fs::read_to_string(&sandbox.nodes[1].config).unwrap();
    std::fs::write(
        &sandbox.nodes[1].config,
        cfg.replace(
            "[docker]\n",
            &format!("[docker]\nsocket = \"{}\"\n", socket.display()),
        ),
    )
    .unwrap();
    sandbox.restart_agent(1).await.unwrap();
    assert_eq!(sandbox.status(1).await.unwrap().role(), HubRole::Standby);

    proxy.abort();
    let _ = proxy.await;
    let mut c = sandbox.client(1).await.unwrap();
    let err = c
        .status(hubshift_common::pb::StatusRequest::default())
        .await
        .expect_err("status without an engine");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let err = c
        .start(hubshift_common::pb::StartRequest {
            mode: hubshift_common::pb::StartMode::Start as i32,
            node: "hub-b".into(),
            jdbc_uri: sandbox.hub_jdbc_uri(),
        })
        .await
        .expect_err("start without an engine");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(!err.message().contains("password"), "{err:?}");

    let _proxy = engine_proxy(socket.clone());
    assert_eq!(sandbox.status(1).await.unwrap().role(), HubRole::Standby);

    let container = sandbox.nodes[1].container.clone();
    let paused = std::process::Command::new("docker")
        .args(["pause", &container])
        .status()
        .unwrap();
    assert!(paused.success());
    assert!(sandbox.status(1).await.unwrap().frozen);
    let stopped = c
        .stop(hubshift_common::pb::StopRequest { timeout_seconds: 2 })
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.was_running && stopped.killed, "{stopped:?}");
    let s = sandbox.status(1).await.unwrap();
    assert_eq!(s.state(), HubState::Stopped, "{s:?}");
    assert!(!s.frozen);
    // Killed while frozen: it never ran again, so it never saw the SIGTERM
    // a stop sends (hubsim logs that it got one).
    let log = sandbox.nodes[1].read_hub_log().expect("the hub log");
    assert!(
        !log.contains("received SIGTERM"),
        "the paused hub ran again:\n{log}"
    );
}

/// A CREATE_AND_START whose create fails (here: a wrong password) answers
/// with the container's output, and neither that answer nor the agent's log
/// carries the JDBC URI's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_failed_create_reports_the_output_without_the_password() {
    if !engine_or_skip("docker_failed_create_reports_the_output_without_the_password") {
        return;
    }
    let (sandbox, _inventory, _archive) = setup().await;
    let mut c = sandbox.client(1).await.unwrap();
    c.stop(hubshift_common::pb::StopRequest {
        timeout_seconds: 20,
    })
    .await
    .unwrap();
    let secret = "Wr0ngButSecret-7f3a";
    let good = sandbox.hub_jdbc_uri();
    let (head, _) = good.split_once("password=").unwrap();
    let bad = format!("{head}password={secret}");
    let err = c
        .start(hubshift_common::pb::StartRequest {
            mode: hubshift_common::pb::StartMode::CreateAndStart as i32,
            node: "hub-b".into(),
            jdbc_uri: bad,
        })
        .await
        .expect_err("create with a wrong password fails");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("ended during HA create"), "{err:?}");
    assert!(err.message().contains("output:"), "{err:?}");
    assert!(!err.message().contains(secret), "{err:?}");
    let s = sandbox.status(1).await.unwrap();
    assert_eq!(s.state(), HubState::Exited, "{s:?}");
    assert!(
        !sandbox.nodes[1]
            .read_agent_log()
            .expect("the agent log")
            .contains(secret),
        "agent log holds the password"
    );
}

/// Store-and-forward files in the hub's runtime directory inside the image
/// (`directories.storeForwardData` unset): the container's writable layer,
/// which a recreate from the next image would drop. The upgrade's start
/// copies them from the previous container into the new one: an opaque
/// store the hubsim does not read arrives byte for byte, and cached ticks
/// are replayed into the database, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_upgrade_carries_store_forward_files_of_the_runtime_dir_into_the_new_container() {
    if !engine_or_skip(
        "docker_upgrade_carries_store_forward_files_of_the_runtime_dir_into_the_new_container",
    ) {
        return;
    }
    const RUNTIME: &str = hubshift_sim::image::RUNTIME;
    const TICKS: &str = "intelligencehub-writestore-ticks.sf";
    const OPAQUE: &str = "intelligencehub-writestore-opcua.db";
    const CACHED_SEQ: i64 = 900_000;
    const CACHED: i64 = 40;
    let (sandbox, inventory, archive) = setup().await;
    let primary = &sandbox.nodes[0];
    // The settings in appData bind appData and leave storeForwardData unset.
    std::fs::write(
        primary.appdata.join("intelligencehub-settings.json"),
        format!(
            "{{\"directories\": {{\"appData\": \"{}\"}}}}\n",
            hubshift_sim::image::APPDATA
        ),
    )
    .unwrap();
    // Ticks cached in the running container's runtime directory, which the
    // running hubsim does not know about (only a later start replays
    // them), and a store of another connection it never reads.
    let base_us = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
        - 3_600_000_000;
    let lines: String = (0..CACHED)
        .map(|i| {
            serde_json::to_string(&hubshift_sim::hubsim::schema::TickRow {
                node: primary.name.clone(),
                seq: CACHED_SEQ + i,
                version: FROM.into(),
                produced_at_us: base_us + i * 50_000,
            })
            .unwrap()
                + "\n"
        })
        .collect();
    let opaque: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let plant = sandbox.root.join("plant");
    std::fs::create_dir_all(&plant).unwrap();
    std::fs::write(plant.join(TICKS), &lines).unwrap();
    std::fs::write(plant.join(OPAQUE), &opaque).unwrap();
    for f in [TICKS, OPAQUE] {
        let out = std::process::Command::new("docker")
            .arg("cp")
            .arg(plant.join(f))
            .arg(format!("{}:{RUNTIME}/{f}", primary.container))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }

    let since = SystemTime::now();
    let upgrade = run(&inventory, &upgrade_args(&archive, TO));
    assert!(upgrade.status.success(), "{}", text(&upgrade));
    assert_group_at(&sandbox, TO, since).await;
    // The new container holds the opaque store, byte for byte.
    let back = sandbox.root.join("back");
    std::fs::create_dir_all(&back).unwrap();
    let out = std::process::Command::new("docker")
        .arg("cp")
        .arg(format!("{}:{RUNTIME}/{OPAQUE}", primary.container))
        .arg(back.join(OPAQUE))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(back.join(OPAQUE)).unwrap(), opaque);
    // The controller's start step says what the new container received.
    let ev = events(&upgrade);
    let said = ev.iter().any(|e| {
        e["detail"]["carried_store_forward"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == OPAQUE) && a.iter().any(|n| n == TICKS))
    });
    assert!(said, "{}", text(&upgrade));

    // No container is left aside.
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        !names.lines().any(|n| n.ends_with("-hubshift-previous")),
        "{names}"
    );

    // Every cached tick reaches the database, once.
    let db = sandbox.db.connect().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
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
        if n == CACHED || std::time::Instant::now() >= deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(count, CACHED, "cached ticks replayed after the upgrade");
}
