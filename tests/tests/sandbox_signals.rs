//! `hubshift-sandbox up`, `demo` and `bench` (also with `--groups`) leave
//! nothing behind however they end: terminated (SIGTERM, SIGHUP) they tear down as on Ctrl-C;
//! killed outright (SIGKILL) their agents, the hubs those agents started,
//! the controller, PostgreSQL and the temporary directories go away on their
//! own within seconds.
//!
//! Each run gets a temporary directory of its own as `TMPDIR`. Every process
//! of the run carries it (in its environment or, for PostgreSQL, whose
//! processes rewrite their environment area, in the postmaster's command
//! line), so "its processes" are those that carry it and their descendants.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// hubsim's short timings, as in the other end-to-end tests.
const FAST: [&str; 4] = ["--takeover-timeout", "1500ms", "--start-delay", "700ms"];

/// A process seen in /proc.
#[derive(Debug)]
struct Proc {
    pid: i32,
    ppid: i32,
    zombie: bool,
    cmdline: String,
    environ: Vec<u8>,
}

fn processes() -> Vec<Proc> {
    hubshift_tests::proc_pids()
        .into_iter()
        .filter_map(|pid| {
            let dir = PathBuf::from(format!("/proc/{pid}"));
            // A process that ended meanwhile is no longer there to count.
            let stat = hubshift_tests::read_proc_file(&dir.join("stat"))?;
            let stat = String::from_utf8_lossy(&stat);
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = rest.next()?;
            let ppid = rest.next()?.parse().ok()?;
            let cmdline = hubshift_tests::read_proc_file(&dir.join("cmdline"))?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let environ = hubshift_tests::read_proc_environ(pid)?;
            Some(Proc {
                pid,
                ppid,
                zombie: state == "Z" || state == "X",
                cmdline,
                environ,
            })
        })
        .collect()
}

/// Live processes that carry `marker`, and their descendants.
fn processes_of(marker: &Path) -> Vec<Proc> {
    let marker = marker.to_string_lossy().into_owned();
    let all = processes();
    let mut theirs: Vec<i32> = all
        .iter()
        .filter(|p| {
            p.cmdline.contains(&marker)
                || p.environ
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes())
        })
        .map(|p| p.pid)
        .collect();
    loop {
        let more: Vec<i32> = all
            .iter()
            .filter(|p| theirs.contains(&p.ppid) && !theirs.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        if more.is_empty() {
            break;
        }
        theirs.extend(more);
    }
    all.into_iter()
        .filter(|p| theirs.contains(&p.pid) && !p.zombie)
        .collect()
}

/// One `hubshift-sandbox` run in a temporary directory of its own.
struct Run {
    tmp: tempfile::TempDir,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let tmp = tempfile::Builder::new()
            .prefix("hubshift-signals-")
            .tempdir()
            .unwrap();
        // Like /tmp: as root the cluster runs as `postgres`, which must be
        // able to make and remove its own directory here.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(bin)
            .args(args)
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stdout);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Run { tmp, child, stdout }
    }

    fn marker(&self) -> &Path {
        self.tmp.path()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    fn processes(&self) -> Vec<Proc> {
        processes_of(self.marker())
    }

    /// Waits (generously) until `cond` holds; panics with `what` and the
    /// run's state otherwise.
    fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&mut Run) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting until {what}\nprocesses: {:#?}\nleft in TMPDIR: {:?}\nstdout:\n{}",
                    self.processes()
                        .iter()
                        .map(|p| format!("{} {}", p.pid, p.cmdline))
                        .collect::<Vec<_>>(),
                    self.leftovers(),
                    self.stdout()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a process of the run whose command line contains all of
    /// `words` runs.
    fn wait_for_process(&mut self, words: &[&str]) {
        self.wait_until(
            &format!("a process with {words:?} runs"),
            Duration::from_secs(180),
            |r| {
                r.processes()
                    .iter()
                    .any(|p| words.iter().all(|w| p.cmdline.contains(w)))
            },
        );
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own unreaped child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        self.wait_until("hubshift-sandbox exits", Duration::from_secs(120), |r| {
            status = r.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut text).expect("stderr of `up`");
        }
        text
    }

    /// Sandbox, fleet and cluster directories still in the run's TMPDIR.
    fn leftovers(&self) -> Vec<String> {
        // The run's TMPDIR outlives the run: a failed read is no "nothing left".
        std::fs::read_dir(self.marker())
            .unwrap_or_else(|e| panic!("{}: {e}", self.marker().display()))
            .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", self.marker().display())))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                ["hubshift-pg-", "hubshift-sandbox-", "hubshift-fleet-"]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .collect()
    }

    /// Everything of the run is gone (the generous timeout is a bound on
    /// a hung test, not a timing goal).
    fn wait_all_gone(&mut self) {
        self.wait_until(
            "no process of the run is left and its temporary directories are removed",
            Duration::from_secs(60),
            |r| r.processes().is_empty() && r.leftovers().is_empty(),
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up_args(dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["up", "--dir"].iter().map(|s| s.to_string()).collect();
    args.push(dir.display().to_string());
    args.extend(FAST.iter().map(|s| s.to_string()));
    args
}

/// `up` with a `--dir` of the user's, outside the run's TMPDIR (it is kept).
fn start_up() -> (Run, PathBuf, tempfile::TempDir) {
    let user = tempfile::tempdir().unwrap();
    let dir = user.path().join("sb");
    let args = up_args(&dir);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (Run::start(&refs), dir, user)
}

fn wait_until_up_serves(run: &mut Run) {
    run.wait_until("`up` serves its group", Duration::from_secs(180), |r| {
        r.stdout().contains("Running until Ctrl-C")
    });
}

#[test]
fn up_on_sigterm_stops_everything_and_keeps_the_files_of_its_dir() {
    let (mut run, dir, _user) = start_up();
    wait_until_up_serves(&mut run);
    assert!(
        run.processes()
            .iter()
            .filter(|p| p.cmdline.contains("hubsim"))
            .count()
            >= 2,
        "the hubs of `up` were not found by its marker: {:#?}",
        run.processes()
    );
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    let stderr = run.stderr();
    assert!(
        status.success(),
        "SIGTERM ends `up` normally: {status}\n{stderr}"
    );
    assert!(
        stderr.contains("SIGTERM: tearing the sandbox down"),
        "{stderr}"
    );
    run.wait_all_gone();
    assert!(
        dir.join("inventory.toml").is_file(),
        "the --dir lost its files"
    );
}

#[test]
fn up_on_sighup_while_building_stops_what_was_started() {
    let (mut run, _dir, _user) = start_up();
    // The primary's hub runs, the group is not complete yet (or just).
    run.wait_for_process(&["hubsim", "start", "hub-a"]);
    run.signal(libc::SIGHUP);
    let status = run.wait_exit();
    let stderr = run.stderr();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("SIGHUP: tearing the sandbox down"),
        "{stderr}"
    );
    run.wait_all_gone();
}

#[test]
fn up_killed_outright_leaves_nothing_running() {
    let (mut run, dir, _user) = start_up();
    wait_until_up_serves(&mut run);
    run.signal(libc::SIGKILL);
    run.wait_exit();
    run.wait_all_gone();
    assert!(
        dir.join("inventory.toml").is_file(),
        "the --dir lost its files"
    );
}

fn start_demo() -> Run {
    let mut args = vec!["demo"];
    args.extend(FAST);
    let mut run = Run::start(&args);
    // Mid-upgrade: the controller runs against the group.
    run.wait_for_process(&["hubshift", "upgrade", "--yes"]);
    run
}

#[test]
fn demo_on_sigterm_mid_upgrade_tears_down() {
    let mut run = start_demo();
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    let stderr = run.stderr();
    assert!(!status.success(), "an interrupted demo is a failure");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    run.wait_all_gone();
}

#[test]
fn demo_killed_outright_mid_upgrade_leaves_nothing_running() {
    let mut run = start_demo();
    run.signal(libc::SIGKILL);
    run.wait_exit();
    run.wait_all_gone();
}

fn start_bench() -> Run {
    let mut args = vec!["bench", "--runs", "1"];
    args.extend(FAST);
    let mut run = Run::start(&args);
    run.wait_for_process(&["hubshift", "upgrade", "--yes"]);
    run
}

#[test]
fn bench_on_sigterm_mid_upgrade_tears_down() {
    let mut run = start_bench();
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    let stderr = run.stderr();
    assert!(!status.success(), "an interrupted bench is a failure");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    run.wait_all_gone();
}

#[test]
fn bench_killed_outright_mid_upgrade_leaves_nothing_running() {
    let mut run = start_bench();
    run.signal(libc::SIGKILL);
    run.wait_exit();
    run.wait_all_gone();
}

/// `demo --groups 3` while its groups are being built: the third group's
/// primary hub runs, so every group has agents and hubs of its own.
fn start_fleet_demo() -> Run {
    let mut args = vec!["demo", "--groups", "3"];
    args.extend(FAST);
    let mut run = Run::start(&args);
    run.wait_for_process(&["hubsim", "start", "plant-3-a"]);
    run
}

#[test]
fn fleet_demo_on_sigterm_while_building_tears_down_every_group() {
    let mut run = start_fleet_demo();
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    let stderr = run.stderr();
    assert!(!status.success(), "an interrupted demo is a failure");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    run.wait_all_gone();
}

#[test]
fn fleet_demo_killed_outright_while_building_leaves_nothing_running() {
    let mut run = start_fleet_demo();
    run.signal(libc::SIGKILL);
    run.wait_exit();
    run.wait_all_gone();
}
