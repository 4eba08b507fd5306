//! What one scenario measured, and its summary line: counts, rate and latency percentiles.

use std::time::Duration;

/// The raw measurements of one scenario, after warm-up.
#[derive(Debug, Default)]
pub struct Samples {
    /// Latency of every successful (200) request.
    pub ok: Vec<Duration>,
    /// Requests answered with anything but 200, or not answered at all.
    pub errors: u64,
    /// The length of the measured window.
    pub window: Duration,
}

impl Samples {
    /// Adds another worker's samples (the window is the run's, not the worker's).
    pub fn merge(&mut self, other: Samples) {
        self.ok.extend(other.ok);
        self.errors += other.errors;
    }
}

/// The numbers printed for one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests sent in the measured window (successes and errors).
    pub requests: u64,
    /// Of those, the ones that were not a 200.
    pub errors: u64,
    /// Successful requests per second of the measured window.
    pub rate: f64,
    /// Median latency of successful requests.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest successful request.
    pub max: Duration,
}

/// The nearest-rank percentile `p` (0–100) of `sorted`, which must be sorted ascending.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted.get(i).copied().unwrap_or(Duration::ZERO)
}

/// Summarises `samples`.
pub fn summarise(mut samples: Samples) -> Summary {
    samples.ok.sort_unstable();
    let ok = samples.ok.len() as u64;
    let secs = samples.window.as_secs_f64();
    Summary {
        requests: ok + samples.errors,
        errors: samples.errors,
        rate: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
        p50: percentile(&samples.ok, 50.0),
        p90: percentile(&samples.ok, 90.0),
        p99: percentile(&samples.ok, 99.0),
        max: samples.ok.last().copied().unwrap_or(Duration::ZERO),
    }
}

/// The table header matching [`line`].
pub fn header() -> String {
    format!(
        "{:<21} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "scenario", "requests", "errors", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of the results table.
pub fn line(scenario: &str, s: &Summary) -> String {
    format!(
        "{:<21} {:>9} {:>7} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        scenario,
        s.requests,
        s.errors,
        s.rate,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&d, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&d, 90.0), Duration::from_millis(90));
        assert_eq!(percentile(&d, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&d, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&d, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(percentile(&millis(&[7]), 99.0), Duration::from_millis(7));
    }

    #[test]
    fn summary_counts_errors_but_rates_only_successes() {
        let mut a = Samples {
            ok: millis(&[3, 1]),
            errors: 1,
            window: Duration::from_secs(2),
        };
        a.merge(Samples {
            ok: millis(&[2, 4]),
            errors: 2,
            window: Duration::ZERO,
        });
        let s = summarise(a);
        assert_eq!(s.requests, 7);
        assert_eq!(s.errors, 3);
        assert!((s.rate - 2.0).abs() < 1e-9);
        assert_eq!(s.p50, Duration::from_millis(2));
        assert_eq!(s.max, Duration::from_millis(4));
    }

    #[test]
    fn an_empty_run_summarises_to_zeros() {
        let s = summarise(Samples::default());
        assert_eq!(s.requests, 0);
        assert_eq!(s.rate, 0.0);
        assert!(line("exchange", &s).starts_with("exchange"));
    }
}
