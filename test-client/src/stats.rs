//! The one place latencies are summarised: an HDR histogram in microseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies of one run.
pub struct Latencies(Histogram<u64>);

/// Highest latency the histogram tracks (60 s, in µs); slower replies are clamped.
const MAX_TRACKED_US: u64 = 60_000_000;

impl Default for Latencies {
    fn default() -> Self {
        // 3 significant figures over 1 µs..60 s: ~0.1% error, a few hundred KB.
        Latencies(Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant bounds are valid"))
    }
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, d: std::time::Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_TRACKED_US);
        let _ = self.0.record(us);
    }

    /// Adds another run's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &self.0;
        Summary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Latency percentiles of a run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Replies measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.5, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.5, "{s:?}");
        let mut other = Latencies::default();
        other.record(Duration::from_secs(2));
        l.merge(&other);
        assert_eq!(l.summary().count, 1001);
    }
}
