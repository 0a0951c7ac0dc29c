//! hubsim's timing knobs: heartbeat, takeover timeout, start-up delay and data
//! tick interval, with the real hub's defaults and a fast set for tests.

use std::time::Duration;

/// hubsim timing, passed to it as flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimTiming {
    /// How often the active node writes its heartbeat (and every node polls).
    pub heartbeat_interval: Duration,
    /// How old the heartbeat must be before a standby takes over.
    pub takeover_timeout: Duration,
    /// Simulated JVM start-up before a node does anything.
    pub start_delay: Duration,
    /// How often the active node produces a data tick.
    pub tick_interval: Duration,
    /// Simulated JVM shutdown: after SIGTERM the node stops its data and its
    /// heartbeat at once, then takes this long to exit.
    pub stop_delay: Duration,
}

impl Default for SimTiming {
    /// The defaults hubsim uses when no flag is given.
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            takeover_timeout: Duration::from_secs(10),
            start_delay: Duration::from_secs(5),
            tick_interval: Duration::from_millis(50),
            stop_delay: Duration::from_secs(2),
        }
    }
}

impl SimTiming {
    /// Short timings for tests: outages of a second or two.
    pub fn fast() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            takeover_timeout: Duration::from_millis(1500),
            start_delay: Duration::from_millis(700),
            tick_interval: Duration::from_millis(50),
            stop_delay: Duration::from_millis(300),
        }
    }

    /// The hubsim flags that select these timings.
    pub fn hubsim_args(&self) -> Vec<String> {
        vec![
            "--heartbeat-interval".into(),
            format_duration(self.heartbeat_interval),
            "--takeover-timeout".into(),
            format_duration(self.takeover_timeout),
            "--start-delay".into(),
            format_duration(self.start_delay),
            "--tick-interval".into(),
            format_duration(self.tick_interval),
            "--stop-delay".into(),
            format_duration(self.stop_delay),
        ]
    }

    /// Refuses timings under which the HA protocol is not safe: the takeover
    /// timeout must leave room for several heartbeats and a tick.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() || self.tick_interval.is_zero() {
            return Err("heartbeat and tick intervals must be greater than zero".into());
        }
        if self.takeover_timeout < 3 * self.heartbeat_interval + self.tick_interval {
            return Err(format!(
                "takeover timeout {} must be at least 3 heartbeat intervals plus one tick interval ({})",
                format_duration(self.takeover_timeout),
                format_duration(3 * self.heartbeat_interval + self.tick_interval)
            ));
        }
        Ok(())
    }
}

/// Formats a duration as whole milliseconds (`1500ms`), which
/// [`parse_duration`] reads back exactly.
pub fn format_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Parses `200ms`, `2s`, `1.5s`, `1m`, `500us`, `1h`: a non-negative decimal
/// number followed by a unit (`ns`, `us`, `ms`, `s`, `m`, `h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {text:?} lacks a unit (ms, s, m, h)"))?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.chars().filter(|&c| c == '.').count() > 1 {
        return Err(format!("duration {text:?} must start with a number"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} has an invalid number"))?;
    let nanos_per_unit: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(format!(
                "duration {text:?} has an unknown unit {unit:?} (ns, us, ms, s, m, h)"
            ));
        }
    };
    let nanos = value * nanos_per_unit;
    if !nanos.is_finite() || nanos > 1e18 {
        return Err(format!("duration {text:?} is too large"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "200", "ms", "1.2.3s", "-1s", "5 parsecs", "3d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn args_round_trip_and_fast_is_valid() {
        let t = SimTiming::fast();
        t.validate().unwrap();
        SimTiming::default().validate().unwrap();
        let args = t.hubsim_args();
        assert_eq!(args[0], "--heartbeat-interval");
        assert_eq!(parse_duration(&args[3]), Ok(t.takeover_timeout));
        let bad = SimTiming {
            takeover_timeout: Duration::from_millis(150),
            ..t
        };
        assert!(bad.validate().is_err());
    }
}
