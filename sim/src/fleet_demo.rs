//! `hubshift-sandbox demo --groups N` and `bench --groups N`: a fleet of
//! groups, each on its own database of one PostgreSQL server, upgraded by
//! the real `hubshift upgrade --all`; outages and split brain measured per
//! group from that group's own data ticks.

use crate::demo_args::{GroupArgs, fleet_timing, hubshift_command};
use crate::fleet::{Fleet, FleetOptions, group_name};
use crate::measure;
use anyhow::Context;
use serde_json::Value;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Soak of the canary group in the demo.
const DEMO_SOAK: &str = "3s";

/// One finished `hubshift --json` invocation.
struct ControllerRun {
    status: ExitStatus,
    events: Vec<Value>,
    /// When each of `events` arrived, from the start.
    arrived: Vec<Duration>,
    /// From start to exit, measured here.
    wall: Duration,
    /// The controller's peak resident memory (VmHWM), KiB, as last sampled.
    peak_rss_kib: u64,
}

/// `VmHWM` (peak resident set) of process `pid`, KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl ControllerRun {
    fn event(&self, name: &str) -> Option<&Value> {
        self.events.iter().rev().find(|e| e["event"] == name)
    }

    /// When the first `name` event arrived.
    fn first_arrival(&self, name: &str) -> Option<Duration> {
        self.events
            .iter()
            .zip(&self.arrived)
            .find(|(e, _)| e["event"] == name)
            .map(|(_, t)| *t)
    }

    /// Every step's durations, ms, by step name.
    fn step_durations(&self) -> std::collections::BTreeMap<String, Vec<u64>> {
        let mut out = std::collections::BTreeMap::<String, Vec<u64>>::new();
        for e in self.events.iter().filter(|e| e["event"] == "step_finished") {
            if let (Some(name), Some(ms)) = (e["name"].as_str(), e["duration_ms"].as_u64()) {
                out.entry(name.to_string()).or_default().push(ms);
            }
        }
        out
    }
}

/// Where a fleet's extra time goes: until its first run starts (preflight,
/// journal), then each step's median in the fleet against the lone group's,
/// the steps that grew most first.
fn where_the_time_goes(single: &ControllerRun, fleet: &ControllerRun) -> String {
    let secs = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
    let mut text = format!(
        "until the first run starts: {} alone, {} in the fleet (preflight of every group done at {}, fleet journaled at {})\n",
        secs(single.first_arrival("run_started")),
        secs(fleet.first_arrival("run_started")),
        secs(
            fleet
                .first_arrival("fleet_started")
                .and(fleet.first_arrival("fleet_preflight"))
                .and_then(|_| {
                    fleet
                        .events
                        .iter()
                        .zip(&fleet.arrived)
                        .filter(|(e, _)| e["event"] == "group_ready")
                        .map(|(_, t)| *t)
                        .max()
                })
        ),
        secs(fleet.first_arrival("fleet_started"))
    );
    let alone = single.step_durations();
    let mut rows: Vec<(String, u64, u64)> = fleet
        .step_durations()
        .into_iter()
        .map(|(name, mut ms)| {
            let fleet_median = median(&mut ms);
            let alone_median = alone.get(&name).cloned().map_or(0, |mut a| median(&mut a));
            (name, alone_median, fleet_median)
        })
        .collect();
    rows.sort_by_key(|(_, a, f)| std::cmp::Reverse(f.saturating_sub(*a)));
    text.push_str("step medians, alone -> fleet:");
    for (name, a, f) in rows {
        text.push_str(&format!(
            "\n  {name:<22} {:>6.2} s -> {:>6.2} s",
            a as f64 / 1000.0,
            f as f64 / 1000.0
        ));
    }
    text
}

fn median(ms: &mut [u64]) -> u64 {
    ms.sort_unstable();
    ms.get(ms.len() / 2).copied().unwrap_or(0)
}

/// Runs `hubshift ARGS -i INVENTORY` (ARGS include `--json`), reading its
/// events as they come; with `progress`, prints one short line per event.
async fn run_hubshift(
    inventory: &Path,
    args: &[String],
    progress: bool,
) -> anyhow::Result<ControllerRun> {
    println!("$ hubshift {} -i {}", args.join(" "), inventory.display());
    let started = Instant::now();
    let mut child = hubshift_command()?
        .args(args)
        .arg("-i")
        .arg(inventory)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting hubshift")?;
    let stdout = child
        .stdout
        .take()
        .context("hubshift's output is not piped")?;
    // The peak only grows: sampled until the process is gone, the last
    // sample misses at most the final 100 ms.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = child.id().map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            while let Some(kib) = peak_rss_kib(pid) {
                peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut events = Vec::new();
    let mut arrived = Vec::new();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Value>(&line) {
            Ok(event) => {
                if progress && let Some(text) = progress_line(&event) {
                    println!("{text}");
                }
                events.push(event);
                arrived.push(started.elapsed());
            }
            // Not an event: show it as it is.
            Err(_) => println!("{line}"),
        }
    }
    let status = child.wait().await?;
    let wall = started.elapsed();
    if let Some(s) = sampler {
        s.abort();
    }
    println!();
    Ok(ControllerRun {
        status,
        events,
        arrived,
        wall,
        peak_rss_kib: peak.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Events too many to show one line each in a fleet (every preflight check
/// and step of every group), and the closing one (rendered as a table).
const QUIET: [&str; 4] = [
    "preflight",
    "step_started",
    "step_finished",
    "fleet_finished",
];

/// A one-line rendering of a controller event, `None` for the [`QUIET`] ones.
fn progress_line(e: &Value) -> Option<String> {
    let event = e["event"].as_str()?;
    if QUIET.contains(&event) {
        return None;
    }
    let group = e["group"].as_str().unwrap_or("-");
    let mut line = format!("  {group:<10} {event}");
    for key in ["window", "result", "state", "reason", "message", "error"] {
        match &e[key] {
            Value::String(v) => line.push_str(&format!(" {key}={v}")),
            Value::Number(v) => line.push_str(&format!(" {key}={v}")),
            _ => {}
        }
    }
    for key in ["duration_ms", "soak_ms"] {
        if let Some(ms) = e[key].as_u64() {
            line.push_str(&format!(" ({:.1} s)", ms as f64 / 1000.0));
        }
    }
    Some(line)
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
}

/// The closing table, from the `fleet_finished` event.
fn render_fleet_finished(e: &Value) -> String {
    let mut out = format!(
        "Fleet {} finished in {}:\n",
        e["fleet"].as_str().unwrap_or("?"),
        secs(e["wall_ms"].as_u64())
    );
    out.push_str(&format!(
        "  {:<10} {:<12} {:>9}  {:<28} {}\n",
        "group", "result", "duration", "outage windows (controller)", "run / backup"
    ));
    for g in e["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let windows: Vec<String> = g["windows"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|w| {
                format!(
                    "{}: {}",
                    w["window"].as_u64().unwrap_or(0),
                    secs(w["duration_ms"].as_u64())
                )
            })
            .collect();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        out.push_str(&format!(
            "  {:<10} {:<12} {:>9}  {:<28} {} / {}\n",
            g["group"].as_str().unwrap_or("?"),
            g["result"].as_str().unwrap_or("?"),
            secs(g["duration_ms"].as_u64()),
            if windows.is_empty() {
                "-".to_string()
            } else {
                windows.join(", ")
            },
            text(&g["run"]),
            text(&g["backup_id"]),
        ));
        if let Some(reason) = g["reason"].as_str().filter(|r| !r.is_empty()) {
            out.push_str(&format!("  {:<10} {reason}\n", ""));
        }
    }
    if let Some(halted) = e["halted"].as_str() {
        out.push_str(&format!("  no new group was started: {halted}\n"));
    }
    out
}

/// Groups of the `fleet_finished` event whose result is not `done`.
fn not_done(e: &Value) -> Vec<String> {
    e["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|g| g["result"] != "done")
        .map(|g| {
            format!(
                "{} {}{}",
                g["group"].as_str().unwrap_or("?"),
                g["result"].as_str().unwrap_or("?"),
                g["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

async fn build_fleet(g: &GroupArgs, groups: usize) -> anyhow::Result<Fleet> {
    anyhow::ensure!(
        g.nodes == 2,
        "--groups builds two-node groups; --nodes is for one group"
    );
    anyhow::ensure!(
        matches!(g.driver, crate::demo_args::Driver::Process),
        "--groups runs the hubs as host processes (--driver process)"
    );
    let t = fleet_timing(g);
    t.validate().map_err(|e| anyhow::anyhow!("timing: {e}"))?;
    println!(
        "Starting one throwaway PostgreSQL, a CA and {groups} two-node groups ({} … {}), each on a database of its own, at {} ...",
        group_name(1),
        group_name(groups),
        g.from
    );
    let started = Instant::now();
    let fleet = Fleet::start(FleetOptions {
        groups,
        version: g.from.clone(),
        timing: t,
        driver: g.driver.into(),
        dir: None,
    })
    .await?;
    println!(
        "{groups} groups up in {:.1} s: in each, <group>-a active, <group>-b standby, data flowing.\n",
        started.elapsed().as_secs_f64()
    );
    println!("Where everything lives:");
    println!("  fleet root:  {}", fleet.root.display());
    println!(
        "  PostgreSQL:  {}:{} (user {})",
        fleet.server().host(),
        fleet.server().port(),
        fleet.server().user()
    );
    for group in fleet.groups() {
        let nodes: Vec<String> = group
            .nodes
            .iter()
            .map(|n| format!("{} agent {}", n.name, n.addr))
            .collect();
        println!(
            "  {:<10} database {:<10} {}",
            group.name,
            group.db.dbname(),
            nodes.join(", ")
        );
    }
    println!();
    Ok(fleet)
}

/// Connections to every group's database, and when the measurement starts,
/// once every group has some data before it.
async fn connect_and_wait_for_data(
    fleet: &Fleet,
) -> anyhow::Result<(Vec<tokio_postgres::Client>, SystemTime)> {
    let mut clients = Vec::new();
    for group in fleet.groups() {
        clients.push(group.db.connect().await?);
    }
    const WANTED: u32 = 20;
    let since = SystemTime::now();
    // Long enough for WANTED ticks at any tick interval the timings allow.
    let wait = Duration::from_secs(30) + fleet.timing.tick_interval * WANTED;
    let deadline = Instant::now() + wait;
    for (group, db) in fleet.groups().iter().zip(&clients) {
        while measure::fetch_ticks(db, since).await?.len() < WANTED as usize {
            anyhow::ensure!(
                Instant::now() < deadline,
                "fewer than {WANTED} data ticks from the active hub of {} in {} s",
                group.name,
                wait.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok((clients, since))
}

/// `hubshift-sandbox demo --groups N`.
pub(crate) async fn demo(g: &GroupArgs, groups: usize, parallel: usize) -> anyhow::Result<()> {
    anyhow::ensure!(groups >= 2, "--groups must be at least 2 (a fleet)");
    anyhow::ensure!(parallel >= 1, "--parallel must be at least 1");
    let fleet = build_fleet(g, groups).await?;
    let inventory = fleet.root.join("inventory.toml");
    fleet.write_inventory(&inventory)?;
    println!(
        "Inventory: {} ({} groups, each with its own [groups.database])\n",
        inventory.display(),
        groups
    );
    let archive = fleet.runtime_archive(&g.to)?.display().to_string();
    let (clients, since) = connect_and_wait_for_data(&fleet).await?;
    let canary = group_name(1);
    let args: Vec<String> = [
        "upgrade",
        "--all",
        "--canary",
        &canary,
        "--soak",
        DEMO_SOAK,
        "--parallel",
        &parallel.to_string(),
        "--runtime",
        &archive,
        "--version",
        &g.to,
        "--yes",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = run_hubshift(&inventory, &args, true).await?;
    let finished = run.event("fleet_finished");
    match finished {
        Some(e) => println!("{}", render_fleet_finished(e)),
        None => println!("(hubshift reported no fleet_finished event)\n"),
    }
    anyhow::ensure!(
        run.status.success(),
        "hubshift upgrade --all did not finish every group ({}){}",
        run.status,
        finished
            .map(|e| format!(": {}", not_done(e).join(", ")))
            .unwrap_or_default()
    );
    // A little data after the upgrade, then measure every group.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = fleet.timing;
    println!(
        "Measured from each group's own data ticks, in its own database (one tick every {} ms while a node is active; hub's own share: takeover timeout {:.3} s, start-up {:.3} s):",
        t.tick_interval.as_millis(),
        t.takeover_timeout.as_secs_f64(),
        t.start_delay.as_secs_f64()
    );
    let mut split = Vec::new();
    for (group, db) in fleet.groups().iter().zip(&clients) {
        let ticks = measure::fetch_ticks(db, since).await?;
        println!(
            "  {} (database {}, {} ticks):",
            group.name,
            group.db.dbname(),
            ticks.len()
        );
        for (i, w) in measure::no_active_windows(&ticks, 4 * t.tick_interval)
            .iter()
            .enumerate()
        {
            println!(
                "    measured outage {}: {:.3} s with no active node ({} -> {})",
                i + 1,
                w.length.as_secs_f64(),
                w.from_node,
                w.to_node
            );
        }
        match measure::split_brain(&ticks, t.tick_interval) {
            None => println!("    split brain: none"),
            Some(s) => {
                println!("    split brain: {s}");
                split.push(group.name.clone());
            }
        }
        let mut now: Vec<String> = ticks
            .iter()
            .rev()
            .take(10)
            .map(|t| format!("{}@{}", t.node, t.version))
            .collect();
        now.dedup();
        println!("    now producing: {}", now.join(", "));
    }
    anyhow::ensure!(
        split.is_empty(),
        "split brain detected in {}",
        split.join(", ")
    );
    println!("\nTearing the fleet down.");
    Ok(())
}

/// `hubshift-sandbox bench --groups N --parallel P`: the reference is
/// `plant-1` upgraded alone (`-g plant-1`, `--from` to `--to`) while the
/// other groups run idle, then the whole fleet (`--all --parallel P`,
/// every group to `fleet_to`); prints `fleet ratio: ` fleet wall / single
/// wall, both measured here around the controller process.
pub(crate) async fn bench(
    g: &GroupArgs,
    groups: usize,
    parallel: usize,
    fleet_to: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(groups >= 2, "--groups must be at least 2 (a fleet)");
    anyhow::ensure!(parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(
        fleet_to != g.to && fleet_to != g.from,
        "--fleet-to must differ from --from and --to"
    );
    let fleet = build_fleet(g, groups).await?;
    let inventory = fleet.root.join("inventory.toml");
    fleet.write_inventory(&inventory)?;
    let (clients, since) = connect_and_wait_for_data(&fleet).await?;
    let reference = group_name(1);

    let single_archive = fleet.runtime_archive(&g.to)?.display().to_string();
    let single_args: Vec<String> = [
        "upgrade",
        "-g",
        &reference,
        "--runtime",
        &single_archive,
        "--version",
        &g.to,
        "--yes",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!("Reference: {reference} alone, {} -> {}", g.from, g.to);
    let single = run_hubshift(&inventory, &single_args, false).await?;
    anyhow::ensure!(
        single.status.success(),
        "the reference upgrade of {reference} failed ({})",
        single.status
    );
    println!("  {reference} alone: {:.1} s\n", single.wall.as_secs_f64());

    let fleet_archive = fleet.runtime_archive(fleet_to)?.display().to_string();
    let fleet_args: Vec<String> = [
        "upgrade",
        "--all",
        "--parallel",
        &parallel.to_string(),
        "--runtime",
        &fleet_archive,
        "--version",
        fleet_to,
        "--yes",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!("Fleet: all {groups} groups -> {fleet_to}, --parallel {parallel}");
    let all = run_hubshift(&inventory, &fleet_args, false).await?;
    if let Some(e) = all.event("fleet_finished") {
        println!("{}", render_fleet_finished(e));
    }
    anyhow::ensure!(
        all.status.success(),
        "the fleet upgrade failed ({}){}",
        all.status,
        all.event("fleet_finished")
            .map(|e| format!(": {}", not_done(e).join(", ")))
            .unwrap_or_default()
    );
    // A benchmark of upgrades that broke the HA promise would mean nothing.
    for (group, db) in fleet.groups().iter().zip(&clients) {
        let ticks = measure::fetch_ticks(db, since).await?;
        if let Some(s) = measure::split_brain(&ticks, fleet.timing.tick_interval) {
            anyhow::bail!("split brain in {}: {s}", group.name);
        }
    }
    println!("split brain: none in any group (each measured in its own database)");
    println!("{}", where_the_time_goes(&single, &all));
    let (fleet_s, single_s) = (all.wall.as_secs_f64(), single.wall.as_secs_f64());
    println!(
        "fleet ratio: {:.2} (fleet {fleet_s:.1} s for {groups} groups at --parallel {parallel}, one group alone {single_s:.1} s)",
        fleet_s / single_s
    );
    println!(
        "controller peak RSS: {:.1} MiB for the fleet, {:.1} MiB for one group (VmHWM, sampled every 100 ms)",
        all.peak_rss_kib as f64 / 1024.0,
        single.peak_rss_kib as f64 / 1024.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_table_names_every_group_with_its_result_and_windows() {
        let e = serde_json::json!({
            "event": "fleet_finished", "fleet": "f-1", "wall_ms": 14200,
            "groups": [
                {"group": "plant-1", "result": "done", "run": "r-1", "duration_ms": 10800,
                 "windows": [{"window": 1, "duration_ms": 3100}, {"window": 2, "duration_ms": 1700}],
                 "backup_id": "b-1"},
                {"group": "plant-2", "result": "not_started", "run": null, "duration_ms": null,
                 "windows": [], "backup_id": null}
            ]
        });
        let table = render_fleet_finished(&e);
        assert!(
            table.starts_with("Fleet f-1 finished in 14.2 s:\n"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[2].contains("plant-1")
                && lines[2].contains("done")
                && lines[2].contains("10.8 s")
                && lines[2].contains("1: 3.1 s, 2: 1.7 s")
                && lines[2].contains("r-1 / b-1"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("plant-2") && lines[3].contains("not_started"),
            "{}",
            lines[3]
        );
        assert_eq!(not_done(&e), vec!["plant-2 not_started".to_string()]);
    }

    #[test]
    fn progress_lines_skip_steps_and_checks_and_show_the_group() {
        for event in QUIET {
            let e = serde_json::json!({"event": event, "group": "plant-1", "name": "backup"});
            assert_eq!(progress_line(&e), None, "{event}");
        }
        let window = serde_json::json!({"event": "outage_window", "group": "plant-2", "window": 1, "duration_ms": 3300});
        assert_eq!(
            progress_line(&window).as_deref(),
            Some("  plant-2    outage_window window=1 (3.3 s)")
        );
        let done = serde_json::json!({"event": "group_finished", "group": "plant-3", "result": "failed", "reason": "no standby", "duration_ms": 1500});
        let line = progress_line(&done).unwrap();
        assert!(
            line.contains("plant-3")
                && line.contains("result=failed")
                && line.contains("reason=no standby")
                && line.contains("1.5 s"),
            "{line}"
        );
    }
}
