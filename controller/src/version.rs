//! Runtime versions compared as the vendor numbers them: `4.10.0` is newer
//! than `4.9.2`, so a string comparison would call an upgrade a downgrade.

use std::cmp::Ordering;

/// Compares two version strings part by part: runs of digits as numbers,
/// anything else as text; a version that is a prefix of another is older
/// (`4.1` < `4.1.1`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x, y) {
            (Part::Num(x), Part::Num(y)) => x.cmp(y),
            (Part::Text(x), Part::Text(y)) => x.cmp(y),
            // Numbers rank above text in the same place (a total order).
            (Part::Num(_), Part::Text(_)) => Ordering::Greater,
            (Part::Text(_), Part::Num(_)) => Ordering::Less,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Whether `target` is older than `running` (both non-empty).
pub fn is_downgrade(running: &str, target: &str) -> bool {
    !running.is_empty() && !target.is_empty() && compare(target, running) == Ordering::Less
}

#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    Num(u64),
    Text(&'a str),
}

/// Splits at `.`, `-`, `_` and `+`, and between digits and other characters.
fn parts(v: &str) -> Vec<Part<'_>> {
    let mut out = Vec::new();
    for field in v.split(['.', '-', '_', '+']).filter(|f| !f.is_empty()) {
        let mut rest = field;
        while !rest.is_empty() {
            let digits = rest.starts_with(|c: char| c.is_ascii_digit());
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digits)
                .unwrap_or(rest.len());
            let (head, tail) = rest.split_at(end);
            out.push(match head.parse::<u64>() {
                Ok(n) if digits => Part::Num(n),
                _ => Part::Text(head),
            });
            rest = tail;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_as_numbers() {
        assert_eq!(compare("4.10", "4.9"), Ordering::Greater);
        assert_eq!(compare("4.10.0", "4.9.12"), Ordering::Greater);
        assert_eq!(compare("4.0.0", "4.1.0"), Ordering::Less);
        assert_eq!(compare("4.1.0", "4.1.0"), Ordering::Equal);
        assert_eq!(compare("4.1", "4.1.1"), Ordering::Less);
        assert_eq!(compare("4.2.0-b7", "4.2.0-b12"), Ordering::Less);
    }

    #[test]
    fn a_downgrade_is_an_older_target_than_what_runs() {
        assert!(is_downgrade("4.1.0", "4.0.0"));
        assert!(is_downgrade("4.10.0", "4.9.0"));
        assert!(!is_downgrade("4.9.0", "4.10.0"));
        assert!(!is_downgrade("4.1.0", "4.1.0"));
        assert!(!is_downgrade("", "4.0.0"));
    }
}
