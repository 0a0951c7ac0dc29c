//! The newcomer's path: `hubshift-sandbox demo` builds a hubsim HA group
//! (two nodes, or `--nodes N`) on a throwaway PostgreSQL, runs the real `hubshift upgrade` on it
//! and prints the outage windows measured from the data ticks;
//! `hubshift-sandbox up` leaves such a group running with a ready inventory.
//! With `--groups N`, `demo` and `bench` work on a fleet of groups instead
//! (see [`crate::fleet_demo`]).

use crate::demo_args::{Driver, GroupArgs, hubshift_command, timing};
use crate::measure;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::timing::SimTiming;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// A throwaway Intelligence Hub HA group (hubsim) on this machine: a
/// primary and one or more secondaries (--nodes), each with its agent over
/// mTLS, a private PostgreSQL, data flowing.
#[derive(Debug, Parser)]
#[command(name = "hubshift-sandbox", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the group, upgrade it with `hubshift upgrade`, print the plan,
    /// each step, and the measured outage windows; tear everything down.
    ///
    /// With --nodes N: a group of a primary and N-1 secondaries; every
    /// secondary is switched, given the certificate store, started and
    /// seen standby in turn.
    ///
    /// With --groups N (at least 2): build N two-node groups, plant-1 …
    /// plant-N, each on a database of its own of one PostgreSQL server,
    /// upgrade them all with `hubshift upgrade --all --canary plant-1
    /// --soak 3s --parallel P`, print the fleet's closing table and, per
    /// group, the outage windows measured from that group's own data ticks
    /// and whether it ever had two nodes producing at once.
    Demo {
        #[command(flatten)]
        group: GroupArgs,
        /// Upgrade a fleet of this many groups instead of one group.
        #[arg(long)]
        groups: Option<usize>,
        /// With --groups: how many groups the controller upgrades at once
        /// after the canary.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Where to write the run's report (`hubshift report`, with the
        /// measured data gaps beside it); default: the temporary directory.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Benchmark: upgrade a fresh group RUNS times and report, for each
    /// outage window, how much longer it lasted than the hub's own time
    /// (window 1: tick gap minus the takeover timeout; window 2: tick gap
    /// minus the start-up delay).
    ///
    /// With --groups N: how much longer a fleet upgrade takes than one
    /// group's. Builds N groups (plant-1 … plant-N, one database each);
    /// the reference is plant-1 upgraded alone (`-g plant-1`, --from to
    /// --to) while the other groups run idle beside it; then the whole
    /// fleet is upgraded (`--all --parallel P`, every group to
    /// --fleet-to). Both wall times are measured around the controller
    /// process; prints `fleet ratio: FLEET/SINGLE (…)`.
    Bench {
        #[command(flatten)]
        group: GroupArgs,
        /// Benchmark a fleet of this many groups instead (see above).
        #[arg(long)]
        groups: Option<usize>,
        /// With --groups: how many groups the controller upgrades at once
        /// (default: all of them).
        #[arg(long)]
        parallel: Option<usize>,
        /// With --groups: the version the whole fleet is upgraded to.
        #[arg(long, default_value = "4.3.0")]
        fleet_to: String,
        /// Number of upgrades.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// After them, one more upgrade with this much store-and-forward
        /// data in the primary's appdata (MiB; 0 skips it), to show the
        /// single-node time a large backup costs.
        #[arg(long, default_value_t = 1024)]
        large_appdata_mib: u64,
    },
    /// Build the group (--nodes N for more than one secondary), write an
    /// inventory and certificates into DIR, print
    /// the `hubshift` commands to try, and keep running until Ctrl-C (or
    /// SIGTERM, SIGHUP); then stop everything, keeping DIR's files.
    Up {
        #[command(flatten)]
        group: GroupArgs,
        /// Directory for the inventory, certificates, agents and runtimes.
        #[arg(long, default_value = "hubshift-sandbox")]
        dir: PathBuf,
    },
}

/// Entry point of the `hubshift-sandbox` binary.
pub fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runs_until_signalled = matches!(cli.command, Cmd::Up { .. });
    // Listening before any work starts: a signal that arrives while the
    // group is being built tears down what exists so far.
    let stop = match runtime.block_on(async { Termination::listen() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let work = async {
            match cli.command {
                Cmd::Demo {
                    group,
                    groups: Some(n),
                    parallel,
                    ..
                } => crate::fleet_demo::demo(&group, n, parallel).await,
                Cmd::Demo { group, report, .. } => demo(&group, report.as_deref()).await,
                Cmd::Up { group, dir } => up(&group, &dir).await,
                Cmd::Bench {
                    group,
                    groups: Some(n),
                    parallel,
                    fleet_to,
                    ..
                } => crate::fleet_demo::bench(&group, n, parallel.unwrap_or(n), &fleet_to).await,
                Cmd::Bench {
                    group,
                    runs,
                    large_appdata_mib,
                    ..
                } => bench(&group, runs, large_appdata_mib).await,
            }
        };
        tokio::select! {
            r = work => r,
            name = stop.received() => {
                eprintln!("\n{name}: tearing the sandbox down");
                if runs_until_signalled {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("interrupted by {name}"))
                }
            }
        }
    });
    // Leaving the select dropped the work and with it the sandbox: agents,
    // hubs and PostgreSQL are stopped and temporary directories removed.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                hubshift_common::error_text::one_line(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// The signals that end the sandbox: Ctrl-C, and what `kill`, `timeout`,
/// systemd, a cancelled CI job or a closed terminal send. Without a handler
/// the last three would end the process with no teardown at all.
struct Termination {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Termination {
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The name of the first signal received.
    async fn received(mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

async fn build(g: &GroupArgs, dir: Option<PathBuf>) -> anyhow::Result<Sandbox> {
    let t = timing(g);
    t.validate().map_err(|e| anyhow::anyhow!("timing: {e}"))?;
    let n = g.nodes;
    println!(
        "Starting a throwaway PostgreSQL, a CA, {n} agents and {n} hubsim nodes at {} ({}) ...",
        g.from,
        match g.driver {
            Driver::Process => "host processes",
            Driver::Docker => "Docker containers",
        }
    );
    let sandbox = Sandbox::start(SandboxOptions {
        nodes: n.into(),
        version: g.from.clone(),
        timing: t,
        dir,
        driver: g.driver.into(),
        ..Default::default()
    })
    .await?;
    let standbys: Vec<&str> = sandbox.nodes[1..].iter().map(|n| n.name.as_str()).collect();
    println!(
        "HA group up: {} active, {} standby, data flowing.\n",
        sandbox.nodes[0].name,
        standbys.join(", ")
    );
    println!("Where everything lives:");
    println!("  sandbox root:   {}", sandbox.root.display());
    println!(
        "  database:       postgres://{}@{}:{}/{} (password in {})",
        sandbox.db.user(),
        sandbox.db.host(),
        sandbox.db.port(),
        sandbox.db.dbname(),
        sandbox.root.join("database-url").display()
    );
    for n in &sandbox.nodes {
        println!(
            "  {}: agent {} config {} appdata {} hub log {}",
            n.name,
            n.addr,
            n.config.display(),
            n.appdata.display(),
            n.state_dir.join("hub.log").display()
        );
    }
    println!();
    Ok(sandbox)
}

async fn hubshift(inventory: &Path, args: &[&str]) -> anyhow::Result<std::process::ExitStatus> {
    println!("$ hubshift {} -i {}", args.join(" "), inventory.display());
    let status = hubshift_command()?
        .args(args)
        .arg("-i")
        .arg(inventory)
        .status()
        .await?;
    println!();
    Ok(status)
}

async fn demo(g: &GroupArgs, report: Option<&Path>) -> anyhow::Result<()> {
    let sandbox = build(g, None).await?;
    let inventory = sandbox.root.join("inventory.toml");
    sandbox.write_inventory(&inventory, "sandbox")?;
    let archive = sandbox.runtime_archive(&g.to)?;
    let db = sandbox.db.connect().await?;
    let since = SystemTime::now();
    // Let data flow for a moment so the measurement has a before.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while measure::fetch_ticks(&db, since).await?.len() < 20 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no data ticks from the active hub"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = archive.display().to_string();
    let plan = hubshift(
        &inventory,
        &["plan", "-g", "sandbox", "--runtime", &a, "--version", &g.to],
    )
    .await?;
    anyhow::ensure!(plan.success(), "hubshift plan refused ({plan})");
    let up = hubshift(
        &inventory,
        &[
            "upgrade",
            "-g",
            "sandbox",
            "--runtime",
            &a,
            "--version",
            &g.to,
            "--yes",
        ],
    )
    .await?;
    anyhow::ensure!(up.success(), "hubshift upgrade failed ({up})");
    // A little data after the upgrade, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticks = measure::fetch_ticks(&db, since).await?;
    let t = sandbox.timing;
    let windows = measure::no_active_windows(&ticks, 4 * t.tick_interval);
    println!(
        "Measured from {} data ticks (one every {} ms while a node is active):",
        ticks.len(),
        t.tick_interval.as_millis()
    );
    for (i, w) in windows.iter().enumerate() {
        println!(
            "  measured outage {}: {:.3} s with no active node ({} -> {})",
            i + 1,
            w.length.as_secs_f64(),
            w.from_node,
            w.to_node
        );
    }
    println!(
        "  hub's own share: takeover timeout {:.3} s (window 1), start-up {:.3} s (window 2)",
        t.takeover_timeout.as_secs_f64(),
        t.start_delay.as_secs_f64()
    );
    match measure::split_brain(&ticks, t.tick_interval) {
        None => println!("  split brain: none (never two nodes producing at once)"),
        Some(s) => anyhow::bail!("split brain detected: {s}"),
    }
    let versions: Vec<String> = {
        let mut v: Vec<String> = ticks
            .iter()
            .rev()
            .take(10)
            .map(|t| format!("{}@{}", t.node, t.version))
            .collect();
        v.dedup();
        v
    };
    println!("  now producing: {}", versions.join(", "));
    let report = crate::demo_report::write(&inventory, &sandbox.root, &windows, report).await?;
    println!(
        "Report (reported windows beside the measured gaps): {}",
        report.display()
    );
    println!("\nTearing the sandbox down.");
    Ok(())
}

async fn up(g: &GroupArgs, dir: &Path) -> anyhow::Result<()> {
    let sandbox = build(g, Some(dir.to_path_buf())).await?;
    let inventory = sandbox.root.join("inventory.toml");
    sandbox.write_inventory(&inventory, "sandbox")?;
    let archive = sandbox.runtime_archive(&g.to)?;
    let i = inventory.display();
    let a = archive.display();
    println!("Inventory: {i}\nRuntime archive for {}: {a}\n", g.to);
    println!("Try (in another terminal):");
    println!("  hubshift status -i {i}");
    println!(
        "  hubshift plan -i {i} -g sandbox --runtime {a} --version {}",
        g.to
    );
    println!(
        "  hubshift upgrade -i {i} -g sandbox --runtime {a} --version {}",
        g.to
    );
    println!("  hubshift runs -i {i}");
    // The Prometheus side: the agents' endpoints and a watcher of the group.
    let every = Duration::from_secs(1);
    let watch =
        crate::exporters::WatchProcess::start(&inventory, every, &sandbox.root.join("watch.log"))?;
    println!(
        "\nPrometheus endpoints (scrape config in {}):",
        sandbox.root.join("prometheus-scrape.yml").display()
    );
    for n in &sandbox.nodes {
        println!("  agent of {}: http://{}/metrics", n.name, n.metrics_addr);
    }
    println!(
        "  hubshift watch: http://{}/metrics (events in {})",
        watch.addr,
        watch.log.display()
    );
    let scrape =
        crate::exporters::scrape_config(&[("sandbox", &sandbox.nodes)], &watch.addr, every);
    std::fs::write(sandbox.root.join("prometheus-scrape.yml"), &scrape)?;
    println!(
        "{}",
        scrape
            .trim_end()
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("\nRunning until Ctrl-C.");
    std::future::pending::<()>().await;
    Ok(())
}

/// Writes `mib` MiB of store-and-forward-like data (half compressible
/// records, half noise) into `dir`.
fn fill_appdata(dir: &std::path::Path, mib: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = dir.join("storeforward");
    std::fs::create_dir_all(&dir)?;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut chunk = vec![0u8; 1 << 20];
    for file in 0..mib.div_ceil(64) {
        let path = dir.join(format!("bench-segment-{file:04}.db"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for _ in 0..(mib - file * 64).min(64) {
            for (i, b) in chunk.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = if i % 2048 < 1024 {
                    b"{\"tag\":\"line-7/temperature\",\"v\":21.5}\n"[i % 38]
                } else {
                    x as u8
                };
            }
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    Ok(())
}

/// One quiet upgrade of a fresh sandbox group whose primary holds `mib` MiB
/// of extra appdata: its ticks, its timing, and the single-node time the
/// run reported.
async fn upgrade_once(
    g: &GroupArgs,
    mib: u64,
) -> anyhow::Result<(Vec<measure::Tick>, SimTiming, Option<u64>)> {
    let (ticks, timing, finished) = upgrade_measured(g, mib, true).await?;
    Ok((ticks, timing, finished["single_node_ms"].as_u64()))
}

/// [`upgrade_once`] with pre-copy on or off (`[backups] pre_copy`);
/// returns the run's `run_finished` event.
async fn upgrade_measured(
    g: &GroupArgs,
    mib: u64,
    pre_copy: bool,
) -> anyhow::Result<(Vec<measure::Tick>, SimTiming, serde_json::Value)> {
    let sandbox = Sandbox::start(SandboxOptions {
        nodes: g.nodes.into(),
        version: g.from.clone(),
        timing: timing(g),
        dir: None,
        driver: g.driver.into(),
        ..Default::default()
    })
    .await?;
    if mib > 0 {
        fill_appdata(&sandbox.nodes[0].appdata, mib)?;
    }
    let inventory = sandbox.root.join("inventory.toml");
    sandbox.write_inventory(&inventory, "sandbox")?;
    if !pre_copy {
        let text = std::fs::read_to_string(&inventory)?;
        anyhow::ensure!(
            text.contains("\n[backups]\n"),
            "no [backups] in the inventory"
        );
        std::fs::write(
            &inventory,
            text.replace("\n[backups]\n", "\n[backups]\npre_copy = false\n"),
        )?;
    }
    let archive = sandbox.runtime_archive(&g.to)?.display().to_string();
    let db = sandbox.db.connect().await?;
    let since = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = hubshift_command()?
        .args([
            "--json",
            "upgrade",
            "-g",
            "sandbox",
            "--runtime",
            &archive,
            "--version",
            &g.to,
            "--yes",
            "-i",
        ])
        .arg(&inventory)
        .stdout(Stdio::piped())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "hubshift upgrade failed ({})",
        output.status
    );
    let finished = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "run_finished")
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((
        measure::fetch_ticks(&db, since).await?,
        sandbox.timing,
        finished,
    ))
}

async fn bench(g: &GroupArgs, runs: usize, large_appdata_mib: u64) -> anyhow::Result<()> {
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let t = timing(g);
    println!(
        "outage overhead beyond the hub's own time, {runs} upgrade(s); takeover timeout {} ms, start-up {} ms, heartbeat {} ms, tick {} ms",
        t.takeover_timeout.as_millis(),
        t.start_delay.as_millis(),
        t.heartbeat_interval.as_millis(),
        t.tick_interval.as_millis()
    );
    let mut over = [Vec::new(), Vec::new()];
    for run in 1..=runs {
        let (ticks, t, single) = upgrade_once(g, 0).await?;
        anyhow::ensure!(
            measure::split_brain(&ticks, t.tick_interval).is_none(),
            "split brain in run {run}"
        );
        let windows = measure::no_active_windows(&ticks, 4 * t.tick_interval);
        anyhow::ensure!(
            windows.len() == 2,
            "run {run}: expected 2 outage windows, measured {}",
            windows.len()
        );
        let own = [t.takeover_timeout, t.start_delay];
        let mut line = format!("run {run}:");
        for (i, w) in windows.iter().enumerate() {
            let extra = w.length.as_secs_f64() - own[i].as_secs_f64();
            over[i].push(extra);
            line.push_str(&format!(
                "  window {} gap {:.3} s, overhead {:+.3} s",
                i + 1,
                w.length.as_secs_f64(),
                extra
            ));
        }
        line.push_str(&format!("  single-node {}", single_time(single)));
        println!("{line}");
    }
    for (i, o) in over.iter().enumerate() {
        let mean = o.iter().sum::<f64>() / o.len() as f64;
        let max = o.iter().cloned().fold(f64::MIN, f64::max);
        println!(
            "window {}: overhead mean {mean:.3} s, max {max:.3} s",
            i + 1
        );
    }
    if large_appdata_mib > 0 {
        pre_copy_comparison(g, large_appdata_mib).await?;
    }
    Ok(())
}

/// The single-node time with 10 MiB and with `large_mib` MiB of appdata,
/// each with and without pre-copy, side by side.
async fn pre_copy_comparison(g: &GroupArgs, large_mib: u64) -> anyhow::Result<()> {
    let mut with = Vec::new();
    for mib in [SMALL_APPDATA_MIB, large_mib] {
        let (_, _, on) = upgrade_measured(g, mib, true).await?;
        let (_, _, off) = upgrade_measured(g, mib, false).await?;
        let p = &on["pre_copy"];
        println!(
            "single-node time with {mib} MiB of appdata: {} with pre-copy, {} without",
            single_secs(&on),
            single_secs(&off)
        );
        println!(
            "  pre-copy: base {} bytes, delta {} bytes written in {} ms{}",
            p["base_bytes"],
            p["delta_bytes"],
            p["delta_ms"],
            p["full_because"]
                .as_str()
                .map(|w| format!(" (full backup instead: {w})"))
                .unwrap_or_default()
        );
        with.push(on["single_node_ms"].as_u64());
    }
    if let [Some(small), Some(large)] = with[..] {
        println!(
            "with pre-copy, {large_mib} MiB adds {:+.1} % to the {SMALL_APPDATA_MIB} MiB figure (goal: at most 10 %)",
            (large as f64 - small as f64) * 100.0 / small as f64
        );
    }
    Ok(())
}

/// The small appdata of the comparison.
const SMALL_APPDATA_MIB: u64 = 10;

fn single_secs(finished: &serde_json::Value) -> String {
    finished["single_node_ms"].as_u64().map_or_else(
        || "not reported".to_string(),
        |ms| format!("{:.2} s", ms as f64 / 1000.0),
    )
}

fn single_time(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "not reported".to_string(),
        |ms| format!("{:.3} s", ms as f64 / 1000.0),
    )
}
