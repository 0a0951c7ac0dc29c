//! The JDBC URI and database URLs carry passwords; everything that may end in
//! a log, an error or a JSON event goes through here first.

use std::fmt;

const MASK: &str = "***";

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Masks passwords in URIs and key/value connection strings:
/// `user:pw@host`, `password=pw` (query or libpq style), case-insensitive.
pub fn redact(text: &str) -> String {
    let mut out = mask_userinfo(text);
    for key in ["password=", "pwd=", "passfile="] {
        out = mask_after_key(&out, key);
    }
    out
}

/// Also masks every literal secret given, wherever it appears in `text`.
pub fn redact_with(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, MASK);
    }
    redact(&out)
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn mask_after_key(text: &str, key: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(key) {
        let start = search + found + key.len();
        let end = text[start..]
            .find(|c: char| c == '&' || c == ';' || c.is_whitespace() || c == '"' || c == '\'')
            .map_or(text.len(), |e| start + e);
        out.push_str(&text[last..start]);
        out.push_str(MASK);
        last = end;
        search = end.max(start);
        if search >= text.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_jdbc_query_password() {
        let s = "jdbc:postgresql://db:5432/hub?user=hb&password=s3cr3t&ssl=true";
        let r = redact(s);
        assert!(!r.contains("s3cr3t"), "{r}");
        assert!(r.contains("user=hb") && r.contains("ssl=true"), "{r}");
    }

    #[test]
    fn masks_url_userinfo_and_libpq_style() {
        let r = redact("postgres://hb:topsecret@db:5432/hub and host=db password=hunter22 user=x");
        assert!(!r.contains("topsecret") && !r.contains("hunter22"), "{r}");
        assert!(r.contains("hb:***@db"), "{r}");
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("pw-value");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "pw-value");
        assert_eq!(redact_with("x pw-value y", &["pw-value"]), "x *** y");
    }
}
