//! Measuring data flow from `hubdata.ticks`: outages as gaps between ticks,
//! split brain as two nodes producing at once.
//!
//! Split brain, precisely. Ticks are ordered by `produced_at`. hubsim
//! numbers a tick with its slot: tick intervals elapsed since the node
//! process started, so a node that stops producing and resumes skips slot
//! numbers. [`split_brain`] reports
//! 1. two consecutive ticks of different nodes less than one tick interval
//!    apart (two nodes ticking at the same time), or
//! 2. an interleaving: ticks of node A in consecutive slots (same process,
//!    same version: `seq` n and n+1) with a tick of another node between
//!    them — A never stopped while the other node produced.
//!
//! A clean handover never triggers either: the old node stops before it
//! releases leadership, the new one starts a tick interval plus a heartbeat
//! interval after it becomes leader, and the old one, to tick again, must
//! become leader and wait again, which skips slots.

use std::time::{Duration, SystemTime};

/// One data tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Producing node.
    pub node: String,
    /// Slot number (tick intervals since the producing process started).
    pub seq: i64,
    /// Runtime version of the producer.
    pub version: String,
    /// When it was produced (not when it was stored).
    pub produced_at: SystemTime,
}

/// A stretch without data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Last tick before the gap.
    pub start: SystemTime,
    /// First tick after it.
    pub end: SystemTime,
    /// `end - start`.
    pub length: Duration,
    /// Node of the last tick before.
    pub from_node: String,
    /// Node of the first tick after.
    pub to_node: String,
}

/// Ticks produced at or after `since`, ordered by `produced_at`.
pub async fn fetch_ticks(
    client: &tokio_postgres::Client,
    since: SystemTime,
) -> Result<Vec<Tick>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT node, seq, version, produced_at FROM hubdata.ticks
             WHERE produced_at >= $1 ORDER BY produced_at, node, seq",
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Tick {
            node: r.get(0),
            seq: r.get(1),
            version: r.get(2),
            produced_at: r.get(3),
        })
        .collect())
}

fn between(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a).unwrap_or_default()
}

fn sorted(ticks: &[Tick]) -> Vec<&Tick> {
    let mut v: Vec<&Tick> = ticks.iter().collect();
    v.sort_by(|a, b| (a.produced_at, &a.node, a.seq).cmp(&(b.produced_at, &b.node, b.seq)));
    v
}

/// The largest gap between consecutive ticks: its length and the ticks on
/// either side.
pub fn largest_gap(ticks: &[Tick]) -> Option<(Duration, Tick, Tick)> {
    sorted(ticks)
        .windows(2)
        .map(|w| (between(w[0].produced_at, w[1].produced_at), w[0], w[1]))
        .max_by_key(|(d, _, _)| *d)
        .map(|(d, a, b)| (d, a.clone(), b.clone()))
}

/// Every gap longer than `threshold`, in time order.
pub fn no_active_windows(ticks: &[Tick], threshold: Duration) -> Vec<Window> {
    sorted(ticks)
        .windows(2)
        .filter_map(|w| {
            let length = between(w[0].produced_at, w[1].produced_at);
            (length > threshold).then(|| Window {
                start: w[0].produced_at,
                end: w[1].produced_at,
                length,
                from_node: w[0].node.clone(),
                to_node: w[1].node.clone(),
            })
        })
        .collect()
}

/// A description of the first split brain found (see the module docs), or
/// `None` when the history is clean.
pub fn split_brain(ticks: &[Tick], tick_interval: Duration) -> Option<String> {
    let s = sorted(ticks);
    for w in s.windows(2) {
        let gap = between(w[0].produced_at, w[1].produced_at);
        if w[0].node != w[1].node && gap < tick_interval {
            return Some(format!(
                "nodes {} (seq {}) and {} (seq {}) ticked {gap:?} apart, less than the tick interval {tick_interval:?}",
                w[0].node, w[0].seq, w[1].node, w[1].seq
            ));
        }
    }
    // Interleaving: for each tick, the previous tick of the same node
    // (same version) and whether another node ticked in between.
    let mut last: std::collections::HashMap<(&str, &str), (usize, i64)> = Default::default();
    for (i, t) in s.iter().enumerate() {
        let key = (t.node.as_str(), t.version.as_str());
        if let Some(&(j, seq)) = last.get(&key)
            && t.seq == seq + 1
            && let Some(other) = s[j + 1..i].iter().find(|o| o.node != t.node)
        {
            return Some(format!(
                "node {} ticked in consecutive slots {seq} and {} while node {} ticked (seq {}) in between",
                t.node, t.seq, other.node, other.seq
            ));
        }
        last.insert(key, (i, t.seq));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(50);

    fn t(node: &str, seq: i64, ms: u64) -> Tick {
        Tick {
            node: node.into(),
            seq,
            version: "1".into(),
            produced_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms),
        }
    }

    /// Node `node` ticking every 50 ms in slots `first..first+n`, starting at `ms`.
    fn run(node: &str, first: i64, n: i64, ms: u64) -> Vec<Tick> {
        (0..n)
            .map(|k| t(node, first + k, ms + 50 * k as u64))
            .collect()
    }

    #[test]
    fn clean_handovers_are_not_split_brain() {
        // a ticks 0..=450ms, hands over; b starts 150 ms later; then back to a.
        let mut ticks = run("a", 1, 10, 0);
        ticks.extend(run("b", 30, 10, 600));
        ticks.extend(run("a", 30, 5, 1250));
        assert_eq!(split_brain(&ticks, I), None);
        let (gap, from, to) = largest_gap(&ticks).unwrap();
        assert_eq!(gap, Duration::from_millis(200));
        assert_eq!((from.node.as_str(), to.node.as_str()), ("b", "a"));
        let w = no_active_windows(&ticks, Duration::from_millis(120));
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].from_node.as_str(), w[0].to_node.as_str(), w[0].length),
            ("a", "b", Duration::from_millis(150))
        );
        assert!(no_active_windows(&ticks, Duration::from_millis(500)).is_empty());
    }

    #[test]
    fn concurrent_tickers_are_split_brain() {
        let mut ticks = run("a", 1, 10, 0);
        ticks.extend(run("b", 1, 10, 20));
        let d = split_brain(&ticks, I).unwrap();
        assert!(d.contains("less than the tick interval"), "{d}");
    }

    #[test]
    fn interleaving_is_split_brain_even_with_wide_gaps() {
        // a's loop lagged: slots 5 and 6 are 200 ms apart, b ticked between.
        let ticks = vec![t("a", 5, 0), t("b", 9, 100), t("a", 6, 200)];
        let d = split_brain(&ticks, I).unwrap();
        assert!(d.contains("consecutive slots 5 and 6"), "{d}");
        // With skipped slots it is a handover back and forth.
        let ticks = vec![t("a", 5, 0), t("b", 9, 100), t("a", 8, 200)];
        assert_eq!(split_brain(&ticks, I), None);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(largest_gap(&[]), None);
        assert_eq!(largest_gap(&[t("a", 1, 0)]), None);
        assert_eq!(split_brain(&[], I), None);
        assert!(no_active_windows(&[t("a", 1, 0)], I).is_empty());
    }
}
