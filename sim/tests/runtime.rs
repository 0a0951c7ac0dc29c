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

    let runtime = dir.path().join("runtimes/7.0.1");
    std::fs::create_dir_all(&runtime).unwrap();
    unpack_tar_gz(
        std::fs::File::open(&archive).unwrap(),
        &runtime,
        UnpackLimits::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(runtime.join("VERSION"))
            .unwrap()
            .trim(),
        "7.0.1"
    );

    // As the agent runs it: launcher, JDBC URI in the environment.
    let appdata = dir.path().join("appData");
    let mut args: Vec<String> = vec![
        "create".into(),
        "-n".into(),
        "hub-a".into(),
        "-j".into(),
        "env:HUBSHIFT_JDBC_URI".into(),
        "--appdata".into(),
        appdata.display().to_string(),
    ];
    args.extend(SimTiming::fast().hubsim_args());
    let uri = db.jdbc_uri();
    let mut p = HubsimProcess::spawn_program(
        &runtime.join("bin/hubsim"),
        &args,
        &dir.path().join("create.log"),
        &[("HUBSHIFT_JDBC_URI", uri.as_str())],
    )
    .unwrap();
    assert!(p.wait_exit(WAIT).await.unwrap().success(), "{}", p.log());
    let c = db.connect().await.unwrap();
    let v: String = c
        .query_one("SELECT version FROM orchestration.cluster", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "7.0.1");
    assert_no_password(&db, &p.log());
}
