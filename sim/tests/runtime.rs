//! Runtime archives: `hubsim runtime` writes one; unpacked, its launcher
//! really runs hubsim as that version.

mod common;

use common::*;
use hubshift_common::archive::{UnpackLimits, unpack_tar_gz};
use hubshift_sim::pg::TestDatabase;
use hubshift_sim::process::HubsimProcess;
use hubshift_sim::timing::SimTiming;

#[tokio::test]
async fn runtime_archive_launcher_runs_hubsim_as_its_version() {
    let db = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir
        .path()
        .join(hubshift_sim::runtime::archive_name("7.0.1"));
    let out = std::process::Command::new(hubsim())
        .args(["runtime", "--version", "7.0.1", "--out"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (sha, _) = hubshift_common::digest::sha256_file(&archive).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&sha));

    let version_dir = dir.path().join("runtimes/7.0.1");
    std::fs::create_dir_all(&version_dir).unwrap();
    unpack_tar_gz(
        std::fs::File::open(&archive).unwrap(),
        &version_dir,
        UnpackLimits::default(),
    )
    .unwrap();
    let release = version_dir.join(hubshift_sim::runtime::release_folder("7.0.1"));
    let runtime = release.join("runtime");
    assert_eq!(
        std::fs::read_to_string(runtime.join("VERSION"))
            .unwrap()
            .trim(),
        "7.0.1"
    );

    // As the agent runs it: launcher, JDBC URI in the environment.
    let mut args: Vec<String> = vec![
        "create".into(),
        "-n".into(),
        "hub-a".into(),
        "-j".into(),
        "env:HUBSHIFT_JDBC_URI".into(),
    ];
    args.extend(SimTiming::fast().hubsim_args());
    let uri = db.jdbc_uri();
    let c = db.connect().await.unwrap();
    let project = || async {
        let row = c
            .query_one("SELECT version, project FROM orchestration.cluster", &[])
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, String>(1))
    };

    // Not pointed at any settings, it runs like the hub would: on the
    // release's template appData, with its empty project.
    let mut p = HubsimProcess::spawn_program(
        &runtime.join("bin/hubsim"),
        &args,
        &dir.path().join("create-template.log"),
        &[("HUBSHIFT_JDBC_URI", uri.as_str())],
    )
    .unwrap();
    assert!(p.wait_exit(WAIT).await.unwrap().success(), "{}", p.log());
    let (v, template) = project().await;
    assert_eq!(v, "7.0.1");
    assert!(template.contains("\"project\": {}"), "{template}");
    assert!(
        release
            .join("appData/intelligencehub-certificatestore.pkcs12")
            .is_file()
    );
    c.batch_execute("DROP SCHEMA orchestration CASCADE")
        .await
        .unwrap();

    // Pointed at settings that name another appData, it runs there.
    let node = NodeDir::new(dir.path(), "hub-a");
    let mut p = HubsimProcess::spawn_program(
        &runtime.join("bin/hubsim"),
        &args,
        &dir.path().join("create.log"),
        &[
            ("HUBSHIFT_JDBC_URI", uri.as_str()),
            (
                "HIGHBYTE_SETTINGS_FILE",
                &node.settings.display().to_string(),
            ),
        ],
    )
    .unwrap();
    assert!(p.wait_exit(WAIT).await.unwrap().success(), "{}", p.log());
    let (_, configured) = project().await;
    assert_eq!(
        configured,
        std::fs::read_to_string(node.configuration()).unwrap()
    );
    assert!(configured.contains("plc-line-1"), "{configured}");
    assert_no_password(&db, &p.log());
}
