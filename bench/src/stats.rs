//! Percentiles of measured samples.

use serde::{Deserialize, Serialize};

/// The nearest-rank `q` quantile (0 < q <= 1) of ascending `sorted` samples; 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles in milliseconds, from samples in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples_us: Vec<u64>) -> Self {
        samples_us.sort_unstable();
        let ms = |q| percentile(&samples_us, q) as f64 / 1000.0;
        Latency {
            samples: samples_us.len() as u64,
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        }
    }

    /// The p50, p90, p99 and max columns of a results table, in milliseconds.
    pub fn table_cells(&self) -> [String; 4] {
        [self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms]
            .map(|ms| crate::table::num(Some(ms), 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 0.5), 50);
        assert_eq!(percentile(&hundred, 0.9), 90);
        assert_eq!(percentile(&hundred, 0.99), 99);
        assert_eq!(percentile(&hundred, 1.0), 100);
        assert_eq!(percentile(&hundred, 0.001), 1);
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 0.95), 10);
        assert_eq!(percentile(&ten, 0.5), 5);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn latency_sorts_and_converts_to_ms() {
        let samples = vec![5_000, 1_000, 3_000, 2_000, 4_000];
        let latency = Latency::of(samples);
        assert_eq!(latency.samples, 5);
        assert_eq!(latency.p50_ms, 3.0);
        assert_eq!(latency.p90_ms, 5.0);
        assert_eq!(latency.max_ms, 5.0);
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }
}
