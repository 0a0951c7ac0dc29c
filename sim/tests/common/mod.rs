//! Helpers shared by the hubsim integration tests: real PostgreSQL, real
//! hubsim processes, waits that poll a condition with a generous timeout.
#![allow(dead_code)]

use hubshift_sim::measure::{self, Tick};
use hubshift_sim::pg::TestDatabase;
use hubshift_sim::process::HubsimProcess;
use hubshift_sim::timing::SimTiming;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

/// Generous timeout for every wait.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn hubsim() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hubsim"))
}

/// One node: its appdata and log files in the test's temp dir.
pub struct NodeDir {
    pub name: String,
    pub appdata: PathBuf,
    /// Its settings file (HIGHBYTE_SETTINGS_FILE): appData and
    /// store-and-forward under `appdata`.
    pub settings: PathBuf,
    pub logs: PathBuf,
}

impl NodeDir {
    pub fn new(root: &Path, name: &str) -> NodeDir {
        let logs = root.join(format!("{name}-logs"));
        std::fs::create_dir_all(&logs).unwrap();
        let appdata = root.join(name).join("appData");
        let settings = root.join(name).join("intelligencehub-settings.json");
        std::fs::create_dir_all(root.join(name)).unwrap();
        std::fs::write(
            &settings,
            serde_json::json!({"directories": {
                "appData": appdata,
                "storeForwardData": appdata.join("storeforward"),
            }})
            .to_string(),
        )
        .unwrap();
        NodeDir {
            name: name.into(),
            appdata,
            settings,
            logs,
        }
    }

    fn args(&self, cmd: &str, version: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--version".into(),
            version.into(),
            cmd.into(),
            "-n".into(),
            self.name.clone(),
            "-j".into(),
            "env:HUBSHIFT_JDBC_URI".into(),
        ];
        a.extend(SimTiming::fast().hubsim_args());
        a
    }

    fn next_log(&self, cmd: &str) -> PathBuf {
        for i in 0.. {
            let p = self.logs.join(format!("{cmd}-{i}.log"));
            if !p.exists() {
                return p;
            }
        }
        unreachable!()
    }

    /// Runs `hubsim create` to completion; returns status and output.
    pub async fn create(&self, db: &TestDatabase, version: &str) -> (ExitStatus, String) {
        let mut p = self.spawn(db, "create", version);
        let status = p.wait_exit(WAIT).await.unwrap();
        let log = p.log();
        assert_no_password(db, &log);
        (status, log)
    }

    pub fn spawn(&self, db: &TestDatabase, cmd: &str, version: &str) -> HubsimProcess {
        let uri = db.jdbc_uri();
        HubsimProcess::spawn_program(
            &hubsim(),
            &self.args(cmd, version),
            &self.next_log(cmd),
            &[
                ("HUBSHIFT_JDBC_URI", uri.as_str()),
                (
                    "HIGHBYTE_SETTINGS_FILE",
                    &self.settings.display().to_string(),
                ),
            ],
        )
        .unwrap()
    }

    /// Starts `hubsim start` (not waiting).
    pub fn start(&self, db: &TestDatabase, version: &str) -> HubsimProcess {
        self.spawn(db, "start", version)
    }

    pub fn certificate_store(&self) -> PathBuf {
        self.appdata.join("intelligencehub-certificatestore.pkcs12")
    }

    pub fn configuration(&self) -> PathBuf {
        self.appdata.join("intelligencehub-configuration.json")
    }

    /// Copies the certificate store from `other` (procedure step 5).
    pub fn copy_certificate_from(&self, other: &NodeDir) {
        std::fs::create_dir_all(&self.appdata).unwrap();
        std::fs::copy(other.certificate_store(), self.certificate_store()).unwrap();
    }
}

pub fn assert_no_password(db: &TestDatabase, text: &str) {
    assert!(
        !text.contains(db.password()),
        "the database password leaked into:\n{text}"
    );
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn ticks_since(db: &TestDatabase, since: SystemTime) -> Vec<Tick> {
    let c = db.connect().await.expect("connect to read ticks");
    // A failed query must fail the test: an empty list would make every
    // split-brain check pass on no data.
    measure::fetch_ticks(&c, since)
        .await
        .expect("read ticks from hubdata.ticks")
}

/// Waits until `node` has produced at least `n` ticks after `since`.
pub async fn wait_for_ticks(
    db: &TestDatabase,
    node: &str,
    since: SystemTime,
    n: usize,
) -> Vec<Tick> {
    poll(&format!("{n} ticks of {node}"), WAIT, || async {
        let ticks = ticks_since(db, since).await;
        (ticks.iter().filter(|t| t.node == node).count() >= n).then_some(ticks)
    })
    .await
}

/// Asserts the log holds `line` as a whole line.
pub fn assert_exact_line(log: &str, line: &str) {
    assert!(
        log.lines().any(|l| l == line),
        "no exact line {line:?} in:\n{log}"
    );
}
