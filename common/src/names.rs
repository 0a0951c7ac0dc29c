//! Names that arrive over the wire (runtime versions, backup ids) become file
//! names on the agent's host, so they are held to a safe charset.

use thiserror::Error;

/// A name that cannot be used as a single path component.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {kind} {shown:?}: {reason}")]
pub struct NameError {
    /// What the name was for ("runtime version", "backup id").
    pub kind: &'static str,
    /// The offending name, shortened when long.
    pub shown: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Accepts 1–128 characters of `[A-Za-z0-9._+-]`, not starting with `.` or
/// `-`: a name that can only ever be one plain path component.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    let fail = |reason| NameError {
        kind,
        shown: name.chars().take(64).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(fail("must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(fail("longer than 128 characters"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(fail("must not start with '.' or '-'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
    {
        return Err(fail("only letters, digits and . _ - + are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_versions_and_ids() {
        for ok in ["4.1.2", "4.2.0-rc1", "20261128T051900Z-ab12", "v5+build.7"] {
            assert_eq!(validate_name("runtime version", ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_paths_and_odd_characters() {
        for bad in [
            "", "..", "../x", "a/b", ".hidden", "-rf", "a b", "a\0b", "x\\y",
        ] {
            assert!(validate_name("backup id", bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("backup id", &"a".repeat(129)).is_err());
    }
}
