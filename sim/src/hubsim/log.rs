//! hubsim's log: one line per event on stdout, flushed at once. Every line
//! passes through secret redaction, with the JDBC password registered as a
//! literal secret, so no password reaches the log whatever a message holds.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// Registers a literal secret to be masked in every later line.
pub fn add_secret(secret: &str) {
    let list = SECRETS.get_or_init(|| Mutex::new(Vec::new()));
    if let Ok(mut l) = list.lock() {
        l.push(secret.to_string());
    }
}

/// Masks URI passwords and every registered secret in `text`.
pub fn scrub(text: &str) -> String {
    let secrets: Vec<String> = SECRETS
        .get()
        .and_then(|l| l.lock().ok().map(|l| l.clone()))
        .unwrap_or_default();
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    hubshift_common::redact::redact_with(text, &refs)
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn stamped(level: &str, message: &str) {
    emit(&format!(
        "{} {level} {}",
        timestamp(SystemTime::now()),
        scrub(message)
    ));
}

/// An informative line.
pub fn info(message: &str) {
    stamped("INFO", message);
}

/// A warning: something failed and hubsim carries on.
pub fn warn(message: &str) {
    stamped("WARN", message);
}

/// An error.
pub fn error(message: &str) {
    stamped("ERROR", message);
}

/// The HA role line, printed bare and exactly (`HA role: active` /
/// `HA role: standby`): the agent's log role probe matches it.
pub fn role(active: bool) {
    emit(if active {
        "HA role: active"
    } else {
        "HA role: standby"
    });
}

/// Flushes stdout.
pub fn flush() {
    let _ = std::io::stdout().lock().flush();
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Remembers the last failure of one activity so a failing loop logs a line
/// when the failure starts or changes and when it ends, not every iteration.
#[derive(Debug, Default)]
pub struct Latch {
    last: Option<String>,
}

impl Latch {
    /// Logs `message` as a warning unless it is the failure already logged.
    pub fn fail(&mut self, message: String) {
        if self.last.as_deref() != Some(message.as_str()) {
            warn(&message);
            self.last = Some(message);
        }
    }

    /// Logs `message` if a failure was being reported, and clears it.
    pub fn ok(&mut self, message: &str) {
        if self.last.take().is_some() {
            info(message);
        }
    }

    /// Whether a failure is being reported.
    pub fn failing(&self) -> bool {
        self.last.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(timestamp(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn scrubs_registered_secrets() {
        add_secret("pa55-word-xyz");
        let s = scrub(
            "failed for jdbc:postgresql://h/db?user=u&password=pa55-word-xyz and pa55-word-xyz",
        );
        assert!(!s.contains("pa55-word-xyz"), "{s}");
    }
}
