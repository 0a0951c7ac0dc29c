//! Timing goals the end-to-end tests do not assert (they wait on
//! conditions, with generous timeouts): measured here on the real
//! binaries, printed beside their goals; exit 1 when one is missed.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p hubshift-tests --bench timings
//! ```
//!
//! - hubsim ends within 1 s of SIGTERM, active and standby (its simulated
//!   JVM shutdown is 300 ms);
//! - `await_handback` with a frozen old secondary: under 17 s — it is
//!   stopped once the upgraded primary is active (a few seconds, plus the
//!   10 s graceful stop a frozen process sits out), not after the 10 s
//!   `secondary_shutdown`;
//! - an agent flooded with 400 idle connections logs fewer than 10 accept
//!   errors (their log lines are rate-limited).

use hubshift_sim::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// One measured timing and its goal.
struct Measured {
    what: &'static str,
    value: f64,
    unit: &'static str,
    goal: f64,
}

impl Measured {
    fn met(&self) -> bool {
        self.value < self.goal
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut results = Vec::new();
    for (role, i) in [("active", 0), ("standby", 1)] {
        let secs = hubsim_sigterm_exit(i).await;
        results.push(Measured {
            what: if role == "active" {
                "hubsim exit after SIGTERM, active node"
            } else {
                "hubsim exit after SIGTERM, standby node"
            },
            value: secs,
            unit: "s",
            goal: 1.0,
        });
    }
    results.push(Measured {
        what: "await_handback with a frozen old secondary",
        value: handback_with_frozen_secondary().await,
        unit: "s",
        goal: 17.0,
    });
    results.push(Measured {
        what: "agent accept-error log lines under a 400-connection flood",
        value: accept_errors_under_flood().await,
        unit: "lines",
        goal: 10.0,
    });
    let mut missed = 0;
    for r in &results {
        println!(
            "{:<60} {:>8.3} {:<5} goal < {} {}",
            r.what,
            r.value,
            r.unit,
            r.goal,
            if r.met() { "ok" } else { "MISSED" }
        );
        missed += usize::from(!r.met());
    }
    if missed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions::default())
        .await
        .unwrap_or_else(|e| panic!("sandbox: {e}"))
}

/// Seconds from SIGTERM to node `i`'s hub process group leader's end.
async fn hubsim_sigterm_exit(i: usize) -> f64 {
    let s = sandbox().await;
    let pid = s.nodes[i].hub_pid().expect("hub pid");
    let sent = Instant::now();
    // SAFETY: a plain signal to a hub process group the sandbox started.
    assert_eq!(unsafe { libc::kill(-pid, libc::SIGTERM) }, 0);
    let deadline = sent + Duration::from_secs(60);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid) {
        assert!(Instant::now() < deadline, "hub {pid} did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    sent.elapsed().as_secs_f64()
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// An upgrade whose old secondary freezes after the schema drop: the
/// duration `await_handback` reports.
async fn handback_with_frozen_secondary() -> f64 {
    let s = sandbox().await;
    let inventory = s.root.join("inventory.toml");
    s.write_inventory(&inventory, "bench").unwrap();
    let archive = s.runtime_archive("4.2.0").unwrap();
    let bin = hubshift_sim::bins::binary("hubshift").unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(bin)
        .arg("--json")
        .args(["upgrade", "-g", "bench", "--runtime"])
        .arg(&archive)
        .args(["--version", "4.2.0", "--yes", "-i"])
        .arg(&inventory)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hubshift starts");
    let mut duration = None;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let e: Value = serde_json::from_str(&line).expect("JSON event");
        if e["event"] == "step_finished" && e["name"] == "drop_schema" {
            let pid = s.nodes[1].hub_pid().expect("hub pid");
            // SAFETY: a plain signal to a hub process group the sandbox started.
            assert_eq!(unsafe { libc::kill(-pid, libc::SIGSTOP) }, 0);
        }
        if e["event"] == "step_finished" && e["name"] == "await_handback" {
            duration = e["duration_ms"].as_u64();
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the upgrade failed: {status}");
    duration.expect("await_handback finished") as f64 / 1000.0
}

/// Lines of the agent's log about accept errors while 400 idle TCP
/// connections are held open against an agent allowed 128 open files (it
/// runs out of them, as the agent's hardening test makes it).
async fn accept_errors_under_flood() -> f64 {
    let mut s = sandbox().await;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct; the
    // agent started in between inherits the lower soft limit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let low = libc::rlimit {
            rlim_cur: 128,
            rlim_max: limit.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    let restarted = s.restart_agent(0).await;
    // SAFETY: as above, back to this process's own limit.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    restarted.expect("the agent starts again");
    let addr: std::net::SocketAddr = s.nodes[0].addr.parse().expect("agent address");
    let flood: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.status(0)
        .await
        .expect("the agent answers during the flood");
    let log = s.nodes[0].read_agent_log().expect("the agent log");
    drop(flood);
    log.lines().filter(|l| l.contains("accept")).count() as f64
}
