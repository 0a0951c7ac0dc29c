//! hubsim's log: one line per event on stdout, flushed at once. Every line
//! passes through secret redaction, with the JDBC password registered as a
//! literal secret, so no password reaches the log whatever a message holds.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

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
    hubshift_common::clock::Utc::of(t).rfc3339_millis()
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
    use std::time::{Duration, UNIX_EPOCH};

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
