//! The cost of watching, measured on the real binaries (numbers, not
//! tests; exit 1 when a goal is missed):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p hubshift-tests --bench monitoring
//! ```
//!
//! - an agent whose `/metrics` is scraped every second uses at most 1 % of
//!   one core (its CPU time over 60 s of scrapes, beside 60 s idle);
//! - `hubshift watch` over a fleet of 10 groups, polling every second, peaks
//!   below 64 MiB of resident memory.

use hubshift_sim::exporters::WatchProcess;
use hubshift_sim::fleet::{Fleet, FleetOptions};
use hubshift_sim::sandbox::{Sandbox, SandboxOptions};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const SPAN: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (idle, scraped) = agent_cpu().await;
    let rss = watch_rss().await;
    let rows = [
        ("agent CPU, idle", idle, "% of a core", f64::INFINITY),
        (
            "agent CPU, /metrics scraped every second",
            scraped,
            "% of a core",
            1.0,
        ),
        ("hubshift watch over 10 groups, peak RSS", rss, "MiB", 64.0),
    ];
    let mut ok = true;
    for (what, value, unit, goal) in rows {
        let met = value <= goal;
        ok &= met;
        let goal = if goal.is_finite() {
            format!("goal <= {goal} {unit}")
        } else {
            "for comparison".into()
        };
        println!(
            "{what}: {value:.3} {unit} ({goal}){}",
            if met { "" } else { "  MISSED" }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The pid of the process whose command line holds `needle`.
fn pid_with_arg(needle: &str) -> i32 {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == needle.as_bytes()))
        })
        .unwrap_or_else(|| panic!("no process with argument {needle}"))
}

/// User + system CPU seconds of `pid` so far.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name's closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn scrape(addr: &str) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    assert!(body.contains("hubshift_agent_hub_up"), "{body}");
}

async fn agent_cpu() -> (f64, f64) {
    let sandbox = Sandbox::start(SandboxOptions::default())
        .await
        .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let node = &sandbox.nodes[0];
    let pid = pid_with_arg(&node.config.display().to_string());
    let addr = node.metrics_addr.clone();
    let before = cpu_secs(pid);
    tokio::time::sleep(SPAN).await;
    let idle = cpu_secs(pid) - before;
    let before = cpu_secs(pid);
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < SPAN {
        let a = addr.clone();
        tokio::task::spawn_blocking(move || scrape(&a))
            .await
            .expect("scrape");
        next += Duration::from_secs(1);
        tokio::time::sleep_until(next.into()).await;
    }
    let scraped = cpu_secs(pid) - before;
    let pct = |cpu: f64| 100.0 * cpu / SPAN.as_secs_f64();
    (pct(idle), pct(scraped))
}

async fn watch_rss() -> f64 {
    let fleet = Fleet::start(FleetOptions {
        groups: 10,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("fleet: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let inventory = dir.path().join("inventory.toml");
    fleet.write_inventory(&inventory).expect("inventory");
    let watch = WatchProcess::start(
        &inventory,
        Duration::from_secs(1),
        &dir.path().join("watch.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pid = pid_with_arg(&inventory.display().to_string());
    tokio::time::sleep(SPAN).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    let (_, body) = {
        let mut s = std::net::TcpStream::connect(&watch.addr).expect("connect");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut b = String::new();
        s.read_to_string(&mut b).expect("read");
        ((), b)
    };
    let healthy = body
        .lines()
        .filter(|l| l.starts_with("hubshift_group_active_nodes{") && l.ends_with(" 1.0"))
        .count();
    assert_eq!(
        healthy, 10,
        "the watcher does not see 10 healthy groups:\n{body}"
    );
    drop(watch);
    kib / 1024.0
}
