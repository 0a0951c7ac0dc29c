//! The report's time axis: linear where things happen, with long stretches
//! in which nothing changed (an upload, a soak, a run parked overnight)
//! squeezed to a fixed width and labelled, so that a long run stays
//! readable and its short outage windows stay visible.

/// A stretch of the axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Unix ms.
    pub start_ms: u64,
    /// Unix ms.
    pub end_ms: u64,
    /// Pixels.
    pub x0: f64,
    /// Pixels.
    pub x1: f64,
    /// Squeezed: nothing changed in it.
    pub compressed: bool,
}

/// Width in pixels of a squeezed stretch.
pub const SQUEEZED_PX: f64 = 44.0;

/// Time axis from `start_ms` to `end_ms` over `width` pixels from `x0`.
#[derive(Debug, Clone)]
pub struct Axis {
    /// The pieces, in order, covering the whole span.
    pub pieces: Vec<Piece>,
}

impl Axis {
    /// An axis over `[start_ms, end_ms]` in which every gap between two
    /// consecutive `events` longer than a quarter of the span (and than 20
    /// s) is squeezed.
    pub fn new(start_ms: u64, end_ms: u64, events: &[u64], x0: f64, width: f64) -> Axis {
        let end_ms = end_ms.max(start_ms + 1);
        let span = end_ms - start_ms;
        let idle = (span / 4).max(20_000);
        let mut times: Vec<u64> = events
            .iter()
            .copied()
            .filter(|t| (start_ms..=end_ms).contains(t))
            .collect();
        times.push(start_ms);
        times.push(end_ms);
        times.sort_unstable();
        times.dedup();
        let mut stretches: Vec<(u64, u64, bool)> = Vec::new();
        for w in times.windows(2) {
            let squeeze = w[1] - w[0] > idle;
            match stretches.last_mut() {
                Some(last) if !squeeze && !last.2 => last.1 = w[1],
                _ => stretches.push((w[0], w[1], squeeze)),
            }
        }
        let squeezed = stretches.iter().filter(|s| s.2).count() as f64;
        let linear_ms: u64 = stretches.iter().filter(|s| !s.2).map(|s| s.1 - s.0).sum();
        let linear_px = (width - squeezed * SQUEEZED_PX).max(width / 4.0);
        let per_ms = if linear_ms == 0 {
            0.0
        } else {
            linear_px / linear_ms as f64
        };
        let mut x = x0;
        let pieces = stretches
            .into_iter()
            .map(|(s, e, c)| {
                let w = if c {
                    SQUEEZED_PX
                } else {
                    (e - s) as f64 * per_ms
                };
                let p = Piece {
                    start_ms: s,
                    end_ms: e,
                    x0: x,
                    x1: x + w,
                    compressed: c,
                };
                x += w;
                p
            })
            .collect();
        Axis { pieces }
    }

    /// The x of a time (clamped to the axis).
    pub fn x(&self, ms: u64) -> f64 {
        let Some(first) = self.pieces.first() else {
            return 0.0;
        };
        if ms <= first.start_ms {
            return first.x0;
        }
        for p in &self.pieces {
            if ms <= p.end_ms {
                let f = (ms - p.start_ms) as f64 / (p.end_ms - p.start_ms).max(1) as f64;
                return p.x0 + f * (p.x1 - p.x0);
            }
        }
        self.pieces.last().map_or(0.0, |p| p.x1)
    }

    /// Tick marks inside the linear pieces: (Unix ms, x), every `step_ms`
    /// counted from `origin_ms`, a nice step for about `count` ticks.
    pub fn ticks(&self, origin_ms: u64, count: u64) -> (u64, Vec<(u64, f64)>) {
        let linear: u64 = self
            .pieces
            .iter()
            .filter(|p| !p.compressed)
            .map(|p| p.end_ms - p.start_ms)
            .sum();
        let step = [
            100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
            600_000, 900_000, 1_800_000, 3_600_000,
        ]
        .into_iter()
        .find(|s| linear / s <= count.max(1))
        .unwrap_or(7_200_000);
        let mut out = Vec::new();
        for p in self.pieces.iter().filter(|p| !p.compressed) {
            let first = p.start_ms.saturating_sub(origin_ms).div_ceil(step) * step + origin_ms;
            let mut t = first;
            while t <= p.end_ms {
                out.push((t, self.x(t)));
                t += step;
            }
        }
        out.dedup_by(|a, b| a.0 == b.0);
        (step, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_is_linear() {
        let a = Axis::new(0, 10_000, &[1_000, 4_000, 9_000], 100.0, 1000.0);
        assert_eq!(a.pieces.len(), 1);
        assert!((a.x(5_000) - 600.0).abs() < 1e-9);
        let (step, ticks) = a.ticks(0, 10);
        assert_eq!(step, 1_000);
        assert_eq!(ticks.len(), 11);
    }

    #[test]
    fn a_long_idle_wait_is_squeezed_and_the_rest_keeps_the_width() {
        // 10 s of hand-over, 30 min of nothing, 10 s more.
        let events = [0, 2_000, 5_000, 10_000, 1_810_000, 1_815_000, 1_820_000];
        let a = Axis::new(0, 1_820_000, &events, 0.0, 1000.0);
        let squeezed: Vec<&Piece> = a.pieces.iter().filter(|p| p.compressed).collect();
        assert_eq!(squeezed.len(), 1);
        assert_eq!(
            (squeezed[0].start_ms, squeezed[0].end_ms),
            (10_000, 1_810_000)
        );
        assert!((squeezed[0].x1 - squeezed[0].x0 - SQUEEZED_PX).abs() < 1e-9);
        // The 20 s that matter share the rest: a 3 s window is ~140 px wide.
        assert!(a.x(5_000) - a.x(2_000) > 100.0);
        assert!((a.x(1_820_000) - 1000.0).abs() < 1e-6);
        // Monotonic.
        let xs: Vec<f64> = events.iter().map(|&t| a.x(t)).collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]), "{xs:?}");
    }
}
