//! Time as the agent writes it into records and names: milliseconds since
//! the epoch for records, a compact UTC stamp for backup ids and set-aside
//! names.

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// UTC time stamp `YYYYMMDDTHHMMSSZ` for backup ids and set-aside names.
pub fn timestamp() -> String {
    hubshift_common::clock::Utc::now().compact()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_is_compact_utc() {
        let t = timestamp();
        assert_eq!(t.len(), 16);
        assert!(t.ends_with('Z') && t.as_bytes()[8] == b'T', "{t}");
    }
}
