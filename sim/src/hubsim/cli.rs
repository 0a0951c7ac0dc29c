//! hubsim's command line, mirroring the real HA entry point:
//! `hubsim create|start -n NODE -j JDBC_URI` (appData and store-and-forward
//! places come from the settings file, see `settings.rs`), plus
//! `hubsim runtime --version V --out FILE` to write a runtime archive.

use crate::timing::{SimTiming, parse_duration};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// The whole command line.
#[derive(Debug, Parser)]
#[command(name = "hubsim", disable_version_flag = true)]
#[command(about = "Stand-in HighByte Intelligence Hub runtime with the real HA behaviour")]
pub struct Cli {
    /// Version this hubsim runs as (the runtime launcher passes it); default:
    /// the VERSION file of the runtime directory it was launched from.
    #[arg(long, global = true, value_name = "V")]
    pub version: Option<String>,
    /// The runtime directory this hubsim runs as (the launcher passes its
    /// own); default: the working directory. The settings are found beside
    /// it and store-and-forward files default to it, as for the real hub.
    #[arg(long, global = true, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the HA schema `orchestration` with this node as preferred primary.
    Create(NodeArgs),
    /// Run this node in the HA group.
    Start(NodeArgs),
    /// Write a runtime archive (VERSION + bin/hubsim launcher) for --version.
    Runtime(RuntimeArgs),
    /// The entrypoint of the hubsim image, like the vendor image's:
    /// `start` with `START_MODE=HA_INIT` runs create then start, with any
    /// other `START_MODE` start; node and JDBC URI come from the
    /// environment (`HUBSHIFT_NODE`, `HUBSHIFT_JDBC_URI`).
    Container(ContainerArgs),
}

/// Flags of `container`.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// What the image is asked to do: `start`.
    pub action: String,
    /// appData inside the container.
    #[arg(long, default_value = "/usr/local/highbyte/appData")]
    pub appdata: PathBuf,
    /// HA_INIT or HA instead of `START_MODE` (what an older image's start
    /// command does without it).
    #[arg(long)]
    pub mode: Option<String>,
    /// Timing.
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// Flags of `create` and `start`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node name.
    #[arg(short = 'n', long = "node")]
    pub node: String,
    /// `jdbc:postgresql://host:port/db?user=U&password=P`, or `env:NAME` to
    /// read it from that environment variable.
    #[arg(short = 'j', long = "jdbc")]
    pub jdbc: String,
    /// Timing.
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// Timing flags (`200ms`, `2s`).
#[derive(Debug, Args, Clone, Copy)]
pub struct TimingArgs {
    /// Heartbeat interval of the active node (and poll interval of standbys).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Age of the heartbeat after which a standby takes over.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub takeover_timeout: Duration,
    /// Simulated JVM start-up time before the node does anything.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub start_delay: Duration,
    /// Interval of data ticks while active.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub tick_interval: Duration,
    /// Simulated JVM shutdown: after SIGTERM, data and heartbeat stop at
    /// once and the process exits this much later.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub stop_delay: Duration,
}

impl From<TimingArgs> for SimTiming {
    fn from(t: TimingArgs) -> Self {
        SimTiming {
            heartbeat_interval: t.heartbeat_interval,
            takeover_timeout: t.takeover_timeout,
            start_delay: t.start_delay,
            tick_interval: t.tick_interval,
            stop_delay: t.stop_delay,
        }
    }
}

/// Flags of `runtime`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Archive to write (`hubsim-runtime-<V>.tar.gz` by convention).
    #[arg(long)]
    pub out: PathBuf,
    /// The real hubsim binary the launcher runs; default: this one.
    #[arg(long)]
    pub hubsim: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ha_command_line_with_version_anywhere() {
        let cli = Cli::try_parse_from([
            "hubsim",
            "--version",
            "4.1.0",
            "start",
            "-n",
            "hub-a",
            "-j",
            "env:X",
            "--runtime-dir",
            "/r",
            "--heartbeat-interval",
            "200ms",
        ])
        .unwrap();
        assert_eq!(cli.version.as_deref(), Some("4.1.0"));
        let Command::Start(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.node, "hub-a");
        assert_eq!(cli.runtime_dir.as_deref(), Some(std::path::Path::new("/r")));
        assert_eq!(a.timing.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(a.timing.takeover_timeout, Duration::from_secs(10));
        let cli = Cli::try_parse_from(["hubsim", "create", "-n", "a", "-j", "x", "--version", "2"])
            .unwrap();
        assert_eq!(cli.version.as_deref(), Some("2"));
    }
}
