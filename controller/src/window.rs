//! Maintenance windows: when a group's hand-over (the stop of its primary)
//! may begin. `"Sat 01:00-05:00 Europe/Berlin"`, `"Mon-Fri 22:00-02:00
//! America/Chicago"` (past midnight into the next day), `"daily 03:00-04:00
//! UTC"`; weekdays and times in an IANA zone, DST through jiff and the
//! system's tzdata. The decision is pure: windows, now and the time the
//! hand-over needs in, open or the next opening out.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use std::sync::OnceLock;

/// One window, parsed.
#[derive(Debug, Clone)]
pub struct Window {
    /// As the inventory writes it.
    pub text: String,
    days: Vec<Weekday>,
    start: Time,
    end: Time,
    tz: TimeZone,
}

/// May a hand-over begin now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// No window applies, or one is open and the hand-over fits before it
    /// closes.
    Open,
    /// Not now: the next window it fits in opens at `opens`.
    Wait {
        /// When that window opens.
        opens: Timestamp,
        /// Which window.
        window: String,
    },
    /// No window is long enough for the hand-over.
    Never,
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

fn day(s: &str) -> Result<Weekday, String> {
    let l = s.to_ascii_lowercase();
    DAYS.iter()
        .find(|(n, _)| l.starts_with(n) && n.len() >= 3)
        .map(|(_, d)| *d)
        .ok_or_else(|| format!("{s:?} is not a weekday (Mon … Sun)"))
}

fn days(s: &str) -> Result<Vec<Weekday>, String> {
    if matches!(s.to_ascii_lowercase().as_str(), "daily" | "*") {
        return Ok(DAYS.iter().map(|(_, d)| *d).collect());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    out.push(d);
                    if d == b {
                        break;
                    }
                    d = d.next();
                }
            }
            None => out.push(day(part)?),
        }
    }
    Ok(out)
}

fn time(s: &str) -> Result<Time, String> {
    let bad = || format!("{s:?} is not a time of day (HH:MM)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

impl Window {
    /// Parses `"DAYS HH:MM-HH:MM ZONE"`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Window, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [d, span, zone] = parts[..] else {
            return Err(format!(
                "{text:?}: expected \"DAYS HH:MM-HH:MM ZONE\", e.g. \"Sat 01:00-05:00 Europe/Berlin\""
            ));
        };
        let (a, b) = span
            .split_once('-')
            .ok_or_else(|| format!("{text:?}: {span:?} is not HH:MM-HH:MM"))?;
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(format!("{text:?}: the window is empty"));
        }
        let tz = TimeZone::get(zone)
            .map_err(|e| format!("{text:?}: {zone:?} is not a time zone ({e})"))?;
        Ok(Window {
            text: text.to_string(),
            days: days(d).map_err(|e| format!("{text:?}: {e}"))?,
            start,
            end,
            tz,
        })
    }

    /// The occurrences (start, end) that begin on the local days around
    /// `now`: from yesterday (a window past midnight) to eight days on.
    fn occurrences(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today: Date = now.to_zoned(self.tz.clone()).date();
        let mut out = Vec::new();
        for offset in -1..=8i32 {
            let Ok(d) = today.checked_add(offset.days()) else {
                continue;
            };
            if !self.days.contains(&d.weekday()) {
                continue;
            }
            let end_day = if self.end > self.start {
                d
            } else {
                match d.tomorrow() {
                    Ok(t) => t,
                    Err(_) => continue,
                }
            };
            // A local time DST skips or repeats resolves as jiff's
            // "compatible" rule does (later for a gap, earlier for a fold).
            let (Ok(s), Ok(e)) = (
                d.to_datetime(self.start).to_zoned(self.tz.clone()),
                end_day.to_datetime(self.end).to_zoned(self.tz.clone()),
            ) else {
                continue;
            };
            out.push((s.timestamp(), e.timestamp()));
        }
        out
    }
}

/// Whether a hand-over that needs `need` may begin at `now`, given the
/// group's `windows` (none: always).
pub fn decide(windows: &[Window], now: Timestamp, need: SignedDuration) -> Gate {
    if windows.is_empty() {
        return Gate::Open;
    }
    let mut next: Option<(Timestamp, &str)> = None;
    for w in windows {
        for (s, e) in w.occurrences(now) {
            let fits = e.duration_since(s) >= need;
            if !fits {
                continue;
            }
            if s <= now && now < e && e.duration_since(now) >= need {
                return Gate::Open;
            }
            if s > now && next.is_none_or(|(t, _)| s < t) {
                next = Some((s, &w.text));
            }
        }
    }
    match next {
        Some((opens, window)) => Gate::Wait {
            opens,
            window: window.to_string(),
        },
        None => Gate::Never,
    }
}

/// The clock windows are decided by: the system's, or — for tests and
/// drills — one that starts at `HUBSHIFT_WINDOW_CLOCK` (an RFC 3339 time)
/// when the process starts and runs on from there. Only the window decision
/// reads it; journals, TLS and timeouts keep the real clock.
pub fn now() -> Timestamp {
    match drill_clock() {
        Ok(Some((at, t))) => {
            let run = SignedDuration::try_from(at.elapsed()).unwrap_or(SignedDuration::ZERO);
            t.checked_add(run).unwrap_or(t)
        }
        // A bad value is refused at start-up (`check_clock`); should it be
        // read anyway, no window opens on a guess.
        Ok(None) => Timestamp::now(),
        Err(_) => Timestamp::MIN,
    }
}

/// Refuses a `HUBSHIFT_WINDOW_CLOCK` that is not an RFC 3339 time, naming
/// it: a drill with a typo must not fall back to the real clock and open a
/// real window.
pub fn check_clock() -> Result<(), crate::exit::UsageError> {
    drill_clock().map(|_| ()).map_err(crate::exit::UsageError)
}

fn drill_clock() -> Result<Option<(std::time::Instant, Timestamp)>, String> {
    static START: OnceLock<Result<Option<(std::time::Instant, Timestamp)>, String>> =
        OnceLock::new();
    START
        .get_or_init(|| {
            let Ok(text) = std::env::var("HUBSHIFT_WINDOW_CLOCK") else {
                return Ok(None);
            };
            text.parse::<Timestamp>()
                .map(|t| Some((std::time::Instant::now(), t)))
                .map_err(|e| {
                    format!("HUBSHIFT_WINDOW_CLOCK {text:?} is not an RFC 3339 time ({e}); unset it to use the system clock")
                })
        })
        .clone()
}

/// `2026-12-05 01:00 CET (2026-12-05T00:00:00Z)` for people.
pub fn show(t: Timestamp, windows: &[Window]) -> String {
    match windows.first() {
        Some(w) => format!(
            "{} ({t})",
            t.to_zoned(w.tz.clone()).strftime("%Y-%m-%d %H:%M %Z")
        ),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn mins(m: i64) -> SignedDuration {
        SignedDuration::from_mins(m)
    }

    #[test]
    fn inside_and_fitting_is_open_otherwise_the_next_opening() {
        let w = [Window::parse("Sat 01:00-05:00 Europe/Berlin").unwrap()];
        // Saturday 2026-12-05 02:00 CET = 01:00Z.
        assert_eq!(decide(&w, at("2026-12-05T01:00:00Z"), mins(60)), Gate::Open);
        // Friday evening: the window of the next morning.
        let Gate::Wait { opens, .. } = decide(&w, at("2026-12-04T20:00:00Z"), mins(60)) else {
            panic!()
        };
        assert_eq!(opens, at("2026-12-05T00:00:00Z"));
        // Inside, but 30 minutes left for an hour's hand-over: next week.
        let Gate::Wait { opens, .. } = decide(&w, at("2026-12-05T03:30:00Z"), mins(60)) else {
            panic!()
        };
        assert_eq!(opens, at("2026-12-12T00:00:00Z"));
        // Longer than the window: never.
        assert_eq!(
            decide(&w, at("2026-12-05T01:00:00Z"), mins(300)),
            Gate::Never
        );
        assert_eq!(
            decide(&[], at("2026-12-05T01:00:00Z"), mins(300)),
            Gate::Open
        );
    }

    #[test]
    fn dst_moves_the_window_with_the_wall_clock() {
        let w = [Window::parse("Sun 01:00-05:00 Europe/Berlin").unwrap()];
        // Summer (CEST, +2): 01:00 local is 23:00Z the day before.
        let Gate::Wait { opens, .. } = decide(&w, at("2026-07-04T12:00:00Z"), mins(10)) else {
            panic!()
        };
        assert_eq!(opens, at("2026-07-04T23:00:00Z"));
        // The night clocks go back (2026-10-25): still 01:00 local, +2.
        let Gate::Wait { opens, .. } = decide(&w, at("2026-10-24T12:00:00Z"), mins(10)) else {
            panic!()
        };
        assert_eq!(opens, at("2026-10-24T23:00:00Z"));
        // The window that night is an hour longer than on the wall.
        assert_eq!(
            decide(&w, at("2026-10-24T23:00:00Z"), mins(290)),
            Gate::Open
        );
    }

    #[test]
    fn past_midnight_ranges_and_several_windows() {
        let w = [
            Window::parse("Mon-Fri 22:00-02:00 UTC").unwrap(),
            Window::parse("sat,sun 10:00-11:00 UTC").unwrap(),
        ];
        // Tuesday 01:00 is inside Monday's window.
        assert_eq!(decide(&w, at("2026-12-01T01:00:00Z"), mins(30)), Gate::Open);
        // Saturday 03:00: Friday's window closed at 02:00, Saturday's at 10.
        let Gate::Wait { opens, window } = decide(&w, at("2026-12-05T03:00:00Z"), mins(30)) else {
            panic!()
        };
        assert_eq!(opens, at("2026-12-05T10:00:00Z"));
        assert!(window.starts_with("sat"));
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        for (text, says) in [
            ("Sat 01:00-05:00", "expected"),
            ("Caturday 01:00-05:00 UTC", "weekday"),
            ("Sat 25:00-05:00 UTC", "time of day"),
            ("Sat 01:00-01:00 UTC", "empty"),
            ("Sat 01:00-05:00 Mars/Olympus", "time zone"),
        ] {
            let e = Window::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
