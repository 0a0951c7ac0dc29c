//! Command line: what an operator or a pipeline can ask for.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// hubshift: upgrade a HighByte Intelligence Hub HA group to a new runtime
/// version with the least interruption of data flow, journaled and resumable.
///
/// Exit codes: 0 done; 1 failed (state consistent, next actions printed);
/// 2 usage or configuration error; 3 refused (preflight failed or lock held).
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
    /// HA group to upgrade (its `name` in the inventory).
    #[arg(long, short = 'g')]
    pub group: String,
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
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show each node: agent reachable, hub state and role, runtimes,
    /// certificate store digest, free disk.
    Status {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// Only this group.
        #[arg(long, short = 'g')]
        group: Option<String>,
    },
    /// Dry run: preflight findings and the numbered steps. Changes nothing.
    Plan {
        #[command(flatten)]
        inventory: InventoryArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Upgrade a group: stage, stop primary, back up, drop schema, switch,
    /// create+start, copy certificate store, start secondaries.
    Upgrade {
        #[command(flatten)]
        inventory: InventoryArgs,
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
    Stop {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// The running run.
        #[arg(long)]
        run: String,
    },
    /// Continue an interrupted, failed, paused or stopped run from its first
    /// unfinished step.
    Resume {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// Run id (see `hubshift runs`).
        #[arg(long)]
        run: String,
        /// Runtime archive, needed only if staging had not finished.
        #[arg(long)]
        runtime: Option<PathBuf>,
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
    /// List journaled runs, newest first (with --run: that run's steps).
    Runs {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// Only this group.
        #[arg(long, short = 'g')]
        group: Option<String>,
        /// Show the steps of one run.
        #[arg(long)]
        run: Option<String>,
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
