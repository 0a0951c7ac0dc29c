//! Command line: what an operator or a pipeline can ask for.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// hubshift: upgrade a HighByte Intelligence Hub HA group to a new runtime
/// version with the least interruption of data flow, journaled and resumable.
///
/// Exit codes: 0 done (every group, for a fleet); 1 failed (some group
/// failed; state consistent, next actions printed); 2 usage or configuration
/// error; 3 refused (preflight failed or lock held; nothing changed);
/// 4 parked (paused by --pause-before, stopped by `hubshift stop` or
/// Ctrl-C at a safe point, or outside a maintenance window; `hubshift
/// resume` continues).
#[derive(Debug, Parser)]
#[command(name = "hubshift", version)]
pub struct Cli {
    /// Print one JSON object per line instead of human output.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Inventory selection shared by the commands that talk to a group.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Inventory TOML (database, TLS files, groups, timeouts).
    #[arg(
        long,
        short = 'i',
        env = "HUBSHIFT_INVENTORY",
        default_value = "hubshift.toml"
    )]
    pub inventory: PathBuf,
}

/// The runtime being rolled out.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// New runtime archive (.tar.gz, or .zip where the hub ships so).
    #[arg(long)]
    pub runtime: PathBuf,
    /// Version of that runtime (becomes runtimes/<version>/ on each host).
    #[arg(long)]
    pub version: String,
    /// SHA-256 (hex) published with the download: the archive is refused,
    /// before anything changes, unless its digest matches. The agents check
    /// the upload against the digest too, and the gzip/zip checksums of
    /// every byte as they unpack.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The archive's minisign signature (`.minisig`): checked against the
    /// inventory's `[trust] keys` before anything is staged; required when
    /// `[trust] require_signature = true`.
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// Allow a target older than the version the group runs (compared as
    /// the vendor numbers them: 4.10 is newer than 4.9). An older hub may
    /// not read a project saved by a newer one: to go back after an
    /// upgrade, `hubshift rollback --run ID` (which restores the backup
    /// taken before it) is the safer way.
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// Which groups an upgrade takes, and the fleet's policy.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// HA group to upgrade (its `name` in the inventory). Repeat for a fleet.
    #[arg(long = "group", short = 'g', required_unless_present = "all")]
    pub groups: Vec<String>,
    /// Every group of the inventory, as a fleet.
    #[arg(long, conflicts_with = "groups")]
    pub all: bool,
    /// How many groups are upgraded at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Upgraded first and alone; the others start only after it is done and
    /// has stayed healthy for --soak.
    #[arg(long, value_name = "GROUP")]
    pub canary: Option<String>,
    /// How long the canary must stay healthy (one active, the others
    /// standby, all on the new version, no role change, checks passing),
    /// e.g. `90s`, `10m`, `1h`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub soak: std::time::Duration,
    /// Failed groups the fleet tolerates: once more have failed, no new
    /// group starts (running ones finish). Default 0: the first failure
    /// stops the fleet from starting more.
    #[arg(long, default_value_t = 0)]
    pub max_failed: u32,
    /// Upgrade the groups that pass preflight and report the others as
    /// skipped, instead of refusing the whole fleet.
    #[arg(long)]
    pub skip_unready: bool,
    /// A group outside its maintenance window (`[windows]`) is waited for
    /// in this process. Without it such a group is parked, the others go
    /// on, and the command exits 4 naming the next window; `hubshift resume
    /// --fleet ID` (or, for one group, the same `upgrade`) continues inside it.
    #[arg(long)]
    pub wait_for_window: bool,
}

/// `--run ID` or `--fleet ID`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RunOrFleet {
    /// A run id (see `hubshift runs`).
    #[arg(long)]
    pub run: Option<String>,
    /// A fleet id (see `hubshift runs`).
    #[arg(long)]
    pub fleet: Option<String>,
}

/// `90`, `90s`, `10m`, `1h`, `500ms`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (say 90s, 10m or 1h)"))?;
    let ms = match unit {
        "" | "s" => n.checked_mul(1000),
        "ms" => Some(n),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a duration (say 90s, 10m or 1h)"))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// A watch interval: at least 200 ms, at most an hour.
fn parse_watch_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_millis(200) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s:?} is outside 200ms..1h"));
    }
    Ok(d)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show each node: agent reachable, hub state and role, runtimes,
    /// certificate store digest, free disk; and one line per group saying
    /// whether it is ready to upgrade. Exit 1 when some group is not ready.
    Status {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// Only these groups (repeatable); default: all.
        #[arg(long = "group", short = 'g')]
        groups: Vec<String>,
    },
    /// Watch groups between upgrades, for Prometheus: every interval look
    /// at each group's agents and database, print one event per change of
    /// its health (lost its active node, two actives, version skew, a node
    /// unreachable, healthy again), and serve the latest numbers at
    /// http://LISTEN/metrics (and /healthz). Runs until SIGINT or SIGTERM;
    /// changes nothing. See docs/monitoring.md.
    Watch {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// Only these groups (repeatable); default: all.
        #[arg(long = "group", short = 'g')]
        groups: Vec<String>,
        /// Address to serve /metrics and /healthz on (port 0: any free port,
        /// printed at start).
        #[arg(long, default_value = "127.0.0.1:9465")]
        listen: String,
        /// Time between looks (the agents' Status and a few read-only
        /// queries per group): 10s, 1m.
        #[arg(long, default_value = "10s", value_parser = parse_watch_interval)]
        interval: std::time::Duration,
    },
    /// Dry run: preflight findings and the numbered steps. Changes nothing.
    Plan {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// HA group to plan for (its `name` in the inventory).
        #[arg(long, short = 'g')]
        group: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Upgrade a group, or several as a fleet: stage, stop primary, back up,
    /// drop schema, switch, create+start, copy certificate store, start
    /// secondaries — each group in its own database's journal and lock.
    ///
    /// A fleet (several -g, or --all) is preflighted whole before anything
    /// changes; groups then run --parallel at a time, after an optional
    /// --canary that must finish and stay healthy for --soak. A group whose
    /// lock another controller holds is reported as taken and left to it.
    Upgrade {
        #[command(flatten)]
        inventory: InventoryArgs,
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Park the run before this step (a name as `plan` prints it, e.g.
        /// `drop_schema`): an approval gate. Exit 4; `hubshift resume`
        /// continues. Repeatable; only steps that start while the group has
        /// an active node and nothing is half done.
        #[arg(long, value_name = "STEP")]
        pause_before: Vec<String>,
    },
    /// Ask a running run (from any machine) to stop at its next safe point:
    /// between steps, with an active node and nothing half done. The run
    /// exits 4 and is journaled `stopped`; `hubshift resume` continues it.
    /// With --fleet: every running run of the fleet, and no new group starts.
    Stop {
        #[command(flatten)]
        inventory: InventoryArgs,
        #[command(flatten)]
        which: RunOrFleet,
    },
    /// Continue an interrupted, failed, paused or stopped run from its first
    /// unfinished step. With --fleet: every unfinished group of the fleet,
    /// and the groups it had not begun, with the fleet's policy.
    Resume {
        #[command(flatten)]
        inventory: InventoryArgs,
        #[command(flatten)]
        which: RunOrFleet,
        /// Runtime archive, needed only if staging had not finished (or, for
        /// a fleet, some group had not begun) and the archive is no longer
        /// where the run read it.
        #[arg(long)]
        runtime: Option<PathBuf>,
        /// For a fleet: wait in this process for the maintenance windows of
        /// the groups it has yet to begin (instead of exiting 4 again).
        #[arg(long, requires = "fleet")]
        wait_for_window: bool,
    },
    /// Take a group back to the version and appdata an upgrade run started
    /// from: the same hand-over as the upgrade, restoring the run's verified
    /// backup on the primary (its current appdata is kept aside).
    Rollback {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// The upgrade run to reverse (see `hubshift runs`).
        #[arg(long)]
        run: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Give up an unfinished run that changed nothing irreversible (no schema
    /// drop, restore or runtime switch), so that a new upgrade may start —
    /// e.g. after staging refused a bad runtime archive.
    Abandon {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// The unfinished run.
        #[arg(long)]
        run: String,
    },
    /// Draw a run from its journal: one self-contained HTML page (inline
    /// SVG and CSS, no script, works offline) with a lane per node, the
    /// steps as bars, the outage windows shaded and labelled, versions,
    /// backup, who ran it, warnings and the next action. With --fleet: one
    /// row per group with its windows and result.
    Report {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// The run.
        #[arg(long, required_unless_present = "fleet", conflicts_with = "fleet")]
        run: Option<String>,
        /// A fleet: one row per group.
        #[arg(long)]
        fleet: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// html (the page), svg (the picture alone) or json (the data).
        #[arg(long, value_enum, default_value = "html")]
        format: crate::report::Format,
        /// Data gaps measured outside hubshift (a JSON array of
        /// {start_ms, end_ms, from, to}, Unix ms), drawn as a second track.
        #[arg(long, value_name = "FILE")]
        measured_gaps: Option<PathBuf>,
    },
    /// List journaled runs of every group's database, newest first, and the
    /// fleets they belong to (with --run: that run's steps; with --fleet:
    /// that fleet's groups).
    Runs {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// Only this group.
        #[arg(long, short = 'g')]
        group: Option<String>,
        /// Show the steps of one run.
        #[arg(long, conflicts_with = "fleet")]
        run: Option<String>,
        /// Show one fleet: its policy and each group's run.
        #[arg(long)]
        fleet: Option<String>,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Certificates for mTLS between controller and agents.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

/// `hubshift certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Mint a CA, one certificate per agent and a controller certificate.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// An agent: NAME, or NAME=SAN[,SAN...] with the DNS names or IP
        /// addresses the controller uses to reach it. Repeat per agent.
        #[arg(long = "agent", required = true)]
        agents: Vec<String>,
        /// Common name of the controller certificate (the agents' allow-list entry).
        #[arg(long, default_value = "hubshift-controller")]
        controller: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}
