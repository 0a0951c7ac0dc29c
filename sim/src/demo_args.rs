//! What `hubshift-sandbox demo | up | bench` share whether they build one
//! group or a fleet: the group's options, its hubsim timings, and the
//! controller process they run.

use crate::sandbox::HubDriver;
use crate::timing::SimTiming;
use clap::Args;
use std::process::Stdio;
use std::time::Duration;

/// A group's versions, size, timings and driver, as the sandbox's
/// commands take them.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// Version the group runs first.
    #[arg(long, default_value = "4.1.0")]
    pub(crate) from: String,
    /// Version to upgrade to.
    #[arg(long, default_value = "4.2.0")]
    pub(crate) to: String,
    /// Nodes in the group: hub-a, the primary, and N-1 secondaries (hub-b,
    /// hub-c, …), each with its own agent; the upgrade runs steps 12–15
    /// (switch, certificate, start, standby) once per secondary. Not with
    /// --groups, whose groups have two nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=26))]
    pub(crate) nodes: u8,
    /// hubsim takeover timeout (how long a standby waits for a silent primary).
    #[arg(long, default_value = "3s", value_parser = crate::timing::parse_duration)]
    pub(crate) takeover_timeout: Duration,
    /// hubsim start-up delay (stands in for the JVM start).
    #[arg(long, default_value = "1500ms", value_parser = crate::timing::parse_duration)]
    pub(crate) start_delay: Duration,
    /// hubsim heartbeat interval (also how often standbys look at it).
    #[arg(long, default_value = "200ms", value_parser = crate::timing::parse_duration)]
    pub(crate) heartbeat_interval: Duration,
    /// hubsim data tick interval: an active hub writes one numbered tick
    /// this often, from which outages and split brains are measured
    /// [default: 50ms for one group; 250ms for a fleet (`demo --groups`,
    /// `bench`), whose hundred active hubs would otherwise write 2,000
    /// ticks a second and be the largest load on the machine].
    #[arg(long, value_parser = crate::timing::parse_duration)]
    pub(crate) tick_interval: Option<Duration>,
    /// How the agents run the hubs: host processes, or containers of the
    /// local Docker Engine (hubsim images built here, no registry needed).
    #[arg(long, value_enum, default_value_t = Driver::Process)]
    pub(crate) driver: Driver,
}

/// How the agents run the hubs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Driver {
    Process,
    Docker,
}

impl From<Driver> for HubDriver {
    fn from(d: Driver) -> HubDriver {
        match d {
            Driver::Process => HubDriver::Process,
            Driver::Docker => HubDriver::Docker,
        }
    }
}

/// `hubshift`, ended with the sandbox should the sandbox be killed outright.
pub(crate) fn hubshift_command() -> anyhow::Result<tokio::process::Command> {
    let mut command = std::process::Command::new(crate::bins::binary("hubshift")?);
    crate::lifetime::set_die_with_parent(&mut command, libc::SIGKILL);
    let mut command = tokio::process::Command::from(command);
    command.stdin(Stdio::null()).kill_on_drop(true);
    Ok(command)
}

/// Tick interval of one group unless asked otherwise.
const GROUP_TICK: Duration = Duration::from_millis(50);
/// Tick interval of a fleet's groups unless asked otherwise.
const FLEET_TICK: Duration = Duration::from_millis(250);

/// The hubsim timings the options ask for, for one group.
pub(crate) fn timing(g: &GroupArgs) -> SimTiming {
    timing_with_tick(g, g.tick_interval.unwrap_or(GROUP_TICK))
}

/// The hubsim timings the options ask for, for a fleet's groups.
pub(crate) fn fleet_timing(g: &GroupArgs) -> SimTiming {
    timing_with_tick(g, g.tick_interval.unwrap_or(FLEET_TICK))
}

fn timing_with_tick(g: &GroupArgs, tick_interval: Duration) -> SimTiming {
    SimTiming {
        heartbeat_interval: g.heartbeat_interval,
        takeover_timeout: g.takeover_timeout,
        start_delay: g.start_delay,
        tick_interval,
        stop_delay: SimTiming::fast().stop_delay,
    }
}
