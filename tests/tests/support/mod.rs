//! Helpers shared by the end-to-end tests: running the real `hubshift`
//! binary against a sandbox group and reading its JSON events.

#![allow(dead_code)]

pub mod archives;
pub mod browser;
pub mod http;
pub mod webhook;

use hubshift_sim::sandbox::{HubDriver, Sandbox, SandboxOptions};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// SQL giving hub-b a database role of its own (password `hub-b-secret`)
/// with rights on today's schemas only: a new orchestration schema is
/// invisible to it, so a hub-b on this role never sees it replaced.
pub const HUB_B_OWN_ROLE: &str = "CREATE ROLE hub_b LOGIN PASSWORD 'hub-b-secret';
     GRANT USAGE, CREATE ON SCHEMA hubdata TO hub_b;
     GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA hubdata TO hub_b;
     GRANT USAGE ON ALL SEQUENCES IN SCHEMA hubdata TO hub_b;
     GRANT USAGE ON SCHEMA orchestration TO hub_b;
     GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA orchestration TO hub_b;";

/// Group name the tests use.
pub const GROUP: &str = "plant";

/// A sandbox group started with `opts`, its inventory written for
/// [`GROUP`]: where the single-group tests begin.
pub async fn group_with(opts: SandboxOptions) -> (Sandbox, PathBuf) {
    let sandbox = Sandbox::start(opts)
        .await
        .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let inventory = sandbox.root.join("inventory.toml");
    sandbox.write_inventory(&inventory, GROUP).unwrap();
    (sandbox, inventory)
}

/// [`group_with`] a group running `version`.
pub async fn group_at(version: &str) -> (Sandbox, PathBuf) {
    group_with(SandboxOptions {
        version: version.into(),
        ..Default::default()
    })
    .await
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    hubshift_sim::bins::binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A `hubshift` command with the inventory selected.
pub fn hubshift(inventory: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("hubshift"));
    cmd.arg("--json")
        .args(args)
        .arg("-i")
        .arg(inventory)
        .stdin(Stdio::null());
    cmd
}

/// Runs `hubshift --json ARGS -i INVENTORY` to completion.
pub fn run(inventory: &Path, args: &[&str]) -> Output {
    hubshift(inventory, args).output().expect("hubshift runs")
}

/// JSON events of a finished run (stdout lines).
pub fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Both streams, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The first event named `name`.
pub fn find<'a>(events: &'a [Value], name: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["event"] == name)
}

/// A `hubshift` process whose JSON events are read line by line as they come.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Events read so far.
    pub seen: Vec<Value>,
}

impl Running {
    /// Starts `hubshift --json ARGS -i INVENTORY`.
    pub fn spawn(inventory: &Path, args: &[&str]) -> Running {
        let mut child = hubshift(inventory, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hubshift starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Reads events until one satisfies `pred`; panics after `timeout`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no event {what} within {timeout:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Collects the events already written, without waiting.
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(line) = self.lines.try_recv() {
            let v =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            self.seen.push(v);
        }
        &self.seen
    }

    /// Waits for the process to end and collects the remaining events.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<Value>) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader thread ends at the end of stdout: read until it
                // has, so that no event is lost on a slow machine.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
                    let v = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    self.seen.push(v);
                }
                return (status.code(), std::mem::take(&mut self.seen));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "hubshift did not finish within {timeout:?}; seen: {:#?}",
                    self.seen
                );
            }
            while let Ok(line) = self.lines.try_recv() {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                self.seen.push(v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A controller still running when its test ends (a failed assertion, say)
/// is killed: one held with SIGSTOP would otherwise never end.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// All files under `dir` with their bytes, relative paths sorted.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                let bytes = std::fs::read(&p)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
                out.push((rel, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Hub-like data the upgrade must keep byte for byte: a SQLite-like history
/// file and a store-and-forward segment in appdata, and store-and-forward
/// data inside the old runtime directory (where the hub keeps it when
/// `directories.storeForwardData` is unset; driver process only: a
/// container's runtime is inside its image, not on the host).
pub fn plant_hub_data(sandbox: &Sandbox) -> Vec<PathBuf> {
    let primary = &sandbox.nodes[0];
    let mut pages = Vec::with_capacity(256 * 1024);
    let mut x: u32 = 0x1234_5678;
    for i in 0..(256 * 1024) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pages.push(if i % 4096 < 100 {
            b"SQLite format 3\0"[i % 16]
        } else {
            x as u8
        });
    }
    let mut files = vec![
        (
            primary.appdata.join("history/hub-history.sqlite"),
            pages.clone(),
        ),
        (
            primary.appdata.join("storeforward/segment-000017.bin"),
            pages[..65536].to_vec(),
        ),
    ];
    if sandbox.driver == HubDriver::Process {
        files.push((
            primary
                .install_root
                .join("runtimes")
                .join(&sandbox.version)
                .join("storeforward/pipeline-7.bin"),
            pages[..4096].to_vec(),
        ));
    }
    for (path, bytes) in &files {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write hub data");
    }
    files.into_iter().map(|(p, _)| p).collect()
}

/// One step of a run as its group's journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStep {
    /// The step's name (`stop_primary`, …).
    pub name: String,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    /// How many times the step was started.
    pub attempts: i32,
    /// When the step last started (database clock).
    pub started_at: Option<std::time::SystemTime>,
    /// When it last finished.
    pub finished_at: Option<std::time::SystemTime>,
}

/// Step `index` (as the events count it, from 1) of `run` in the journal.
/// Panics when the journal cannot be read: a check on it must not pass on
/// a read that failed.
pub async fn journal_step(client: &tokio_postgres::Client, run: &str, index: u64) -> JournalStep {
    let idx = i32::try_from(index).expect("step index") - 1;
    let row = client
        .query_one(
            "SELECT spec->>'kind', state, attempts, started_at, finished_at
             FROM hubshift.steps WHERE run_id = $1 AND idx = $2",
            &[&run, &idx],
        )
        .await
        .unwrap_or_else(|e| panic!("journal of run {run}, step {index}: {e}"));
    JournalStep {
        name: row.get(0),
        state: row.get(1),
        attempts: row.get(2),
        started_at: row.get(3),
        finished_at: row.get(4),
    }
}

/// The index (from 1, as the events count) of the first step of `run`
/// named `name` in the journal.
pub async fn journal_index(client: &tokio_postgres::Client, run: &str, name: &str) -> u64 {
    let row = client
        .query_one(
            "SELECT idx FROM hubshift.steps WHERE run_id = $1 AND spec->>'kind' = $2
             ORDER BY idx LIMIT 1",
            &[&run, &name],
        )
        .await
        .unwrap_or_else(|e| panic!("journal of run {run}, step {name}: {e}"));
    u64::try_from(row.get::<_, i32>(0)).expect("index") + 1
}

/// The orchestration schema's version, if the schema exists.
pub async fn schema_version(client: &tokio_postgres::Client) -> Option<String> {
    client
        .query_opt(
            "SELECT version FROM orchestration.cluster WHERE id = 1",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

/// Whether a Docker test runs: an engine answers. Without one it fails —
/// a skipped test must never count as passed by accident — unless the
/// person opted out with `HUBSHIFT_SKIP_DOCKER=1` (see
/// [`hubshift_tests::docker_decision`]).
pub fn engine_or_skip(test: &str) -> bool {
    let engine = hubshift_sim::image::engine_available();
    let skip = std::env::var(hubshift_tests::SKIP_DOCKER).ok();
    hubshift_tests::docker_decision(test, engine, skip.as_deref())
}

/// Makes two tests of each `async fn CASE(driver: HubDriver)` named, in a
/// module `CASE`: `process` runs it on the agents' process driver, `docker`
/// on their docker driver (failing without an engine unless opted out; see
/// [`engine_or_skip`]). The case's assertions are the same for both.
#[allow(unused_macros)]
macro_rules! on_both_drivers {
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            use hubshift_sim::sandbox::HubDriver;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn process() {
                super::$case(HubDriver::Process).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn docker() {
                if crate::support::engine_or_skip(concat!(stringify!($case), "::docker")) {
                    super::$case(HubDriver::Docker).await;
                }
            }
        }
    )+};
}

/// Freezes node `i`'s hub the way a hung one is: SIGSTOP to its process
/// group (driver process) or `docker pause` of its container (driver
/// docker). Its agent still sees it running, and reports it frozen.
pub fn freeze(sandbox: &Sandbox, i: usize) {
    let node = &sandbox.nodes[i];
    match sandbox.driver {
        HubDriver::Process => {
            let pgid = node
                .hub_pid()
                .unwrap_or_else(|| panic!("{}: no hub pid", node.name));
            // SAFETY: a plain signal to a hub process group the sandbox started.
            let rc = unsafe { libc::kill(-pgid, libc::SIGSTOP) };
            assert_eq!(rc, 0, "SIGSTOP to the hub of {}", node.name);
        }
        HubDriver::Docker => {
            let out = Command::new("docker")
                .args(["pause", &node.container])
                .output()
                .expect("docker runs");
            assert!(out.status.success(), "docker pause: {}", text(&out));
        }
    }
}

/// The line an agent logs when it starts the hub.
pub fn hub_start_record(driver: HubDriver) -> &'static str {
    match driver {
        HubDriver::Process => "hub started",
        HubDriver::Docker => "hub container started",
    }
}

/// What says node `i` runs `version` in the driver's own terms, beyond the
/// agent's Status: the runtime directory the `current` link resolves to
/// (driver process), the image the engine runs the container from (driver
/// docker).
pub async fn assert_driver_runs(sandbox: &Sandbox, i: usize, version: &str) {
    let node = &sandbox.nodes[i];
    match sandbox.driver {
        HubDriver::Process => {
            let s = sandbox
                .status(i)
                .await
                .unwrap_or_else(|e| panic!("status of {}: {e}", node.name));
            let dir = node.install_root.join("runtimes").join(version);
            assert!(
                Path::new(&s.runtime_dir).starts_with(&dir),
                "{}: runtime dir {} is not under {}",
                node.name,
                s.runtime_dir,
                dir.display()
            );
        }
        HubDriver::Docker => {
            let out = Command::new("docker")
                .args(["inspect", "--format", "{{.Config.Image}}", &node.container])
                .output()
                .expect("docker runs");
            assert!(out.status.success(), "docker inspect: {}", text(&out));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("{}:{version}", sandbox.image_repository),
                "{}: image of its container",
                node.name
            );
        }
    }
}

/// `upgrade -g GROUP --runtime ARCHIVE --version VERSION --yes`.
pub fn upgrade_args<'a>(archive: &'a str, version: &'a str) -> Vec<&'a str> {
    vec![
        "upgrade",
        "-g",
        GROUP,
        "--runtime",
        archive,
        "--version",
        version,
        "--yes",
    ]
}

/// What a refused or dry command must leave as it was: the hub processes
/// and every file of the install roots.
#[derive(Debug, PartialEq, Eq)]
pub struct Untouched {
    pids: Vec<Option<i32>>,
    installs: Vec<Vec<(String, Vec<u8>)>>,
}

impl Untouched {
    /// Takes the picture now.
    pub fn capture(sandbox: &Sandbox) -> Untouched {
        Untouched {
            pids: sandbox.nodes.iter().map(|n| n.hub_pid()).collect(),
            installs: sandbox
                .nodes
                .iter()
                .map(|n| snapshot(&n.install_root))
                .collect(),
        }
    }

    /// Panics naming what changed since the picture.
    pub fn assert_same(&self, sandbox: &Sandbox, what: &str) {
        self.assert_same_processes(sandbox, what);
        let now = Untouched::capture(sandbox);
        assert!(
            now.installs == self.installs,
            "{what}: a file of an install root changed"
        );
    }

    /// Panics when a hub process is not the one of the picture.
    pub fn assert_same_processes(&self, sandbox: &Sandbox, what: &str) {
        let pids: Vec<_> = sandbox.nodes.iter().map(|n| n.hub_pid()).collect();
        assert_eq!(pids, self.pids, "{what}: same hub processes");
    }
}

/// Sends `sig` to `pid` (negative: a process group); panics unless it
/// reached a process.
pub fn signal(pid: i32, sig: i32, what: &str) {
    // SAFETY: a plain signal to a process (group) this test started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "signal {sig} to {what} ({pid}): {}",
        std::io::Error::last_os_error()
    );
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, `Z` …), `None` once
/// the process is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').expect("stat format") + 1..];
            after.trim_start().chars().next()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("/proc/{pid}/stat: {e}"),
    }
}

/// Waits (generously) until `pid`'s state satisfies `ok`.
pub fn wait_proc(pid: i32, what: &str, ok: impl Fn(Option<char>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok(proc_state(pid)) {
        assert!(
            Instant::now() < deadline,
            "{what} ({pid}): state {:?}",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the controller (SIGSTOP) and waits until it is stopped: what its
/// journal says stays true until it is continued or killed.
pub fn hold(up: &Running) {
    let pid = up.child.id() as i32;
    signal(pid, libc::SIGSTOP, "the controller");
    wait_proc(pid, "the controller stopped", |s| s == Some('T'));
}

/// Continues a held controller.
pub fn release(up: &Running) {
    signal(up.child.id() as i32, libc::SIGCONT, "the controller");
}
