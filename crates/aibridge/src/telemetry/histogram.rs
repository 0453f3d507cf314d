//! A histogram that observes with atomics only. `prometheus-client`'s own histogram takes a lock
//! on every observation; this one is on every request's path, so it adds to atomic buckets and
//! leaves the summing up to the scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds, in seconds, for request durations: a blocking call of a few ms to a stream of
/// ten minutes.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Upper bounds, in seconds, for the gateway's own time per request: tens of µs to a slow
/// database commit.
pub const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Keys tried per pool-paid request (the reference's buckets).
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 25.0];

/// Cheap to clone: clones share the buckets.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    /// One per bound, then the `+Inf` bucket; not cumulative.
    counts: Box<[AtomicU64]>,
    /// The sum's bits as f64 (compare-and-swap to add).
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Inner {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, value: f64) {
        let inner = &*self.0;
        let bucket = inner
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(inner.bounds.len());
        if let Some(count) = inner.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let _ = inner
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// (sum, count, per-bucket counts) as of now.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.0;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        (
            f64::from_bits(inner.sum.load(Ordering::Relaxed)),
            count,
            buckets,
        )
    }
}

/// The `q` quantile (0 to 1) of observations counted in `buckets` (upper bound and count, not
/// cumulative, in ascending order, as [`Histogram::snapshot`] gives them), estimated as
/// Prometheus's `histogram_quantile` does: linearly within the bucket that holds it (from 0 for
/// the first); one in the `+Inf` bucket is the highest finite bound. `None` without
/// observations.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for &(bound, count) in buckets {
        let (below_f, count_f) = (below as f64, count as f64);
        if count > 0 && below_f + count_f >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (bound - lower) * ((rank - below_f) / count_f));
        }
        below += count;
        if bound.is_finite() {
            lower = bound;
        }
    }
    Some(lower)
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new(&[1.0, 2.0]);
        for value in [0.5, 1.0, 1.5, 3.0, 7.0] {
            histogram.observe(value);
        }
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 13.0).abs() < 1e-9);
        assert_eq!(buckets, vec![(1.0, 2), (2.0, 1), (f64::INFINITY, 2)]);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        assert_eq!(quantile(&[(1.0, 0), (f64::INFINITY, 0)], 0.5), None);
        let histogram = Histogram::new(&[1.0, 2.0, 4.0]);
        for value in [0.5, 1.5, 1.5, 3.0] {
            histogram.observe(value);
        }
        let (_, _, buckets) = histogram.snapshot();
        // Ranks: 1 in (0, 1], 2 in (1, 2], 1 in (2, 4].
        assert_eq!(quantile(&buckets, 0.25), Some(1.0));
        assert_eq!(quantile(&buckets, 0.5), Some(1.5));
        assert_eq!(quantile(&buckets, 1.0), Some(4.0));
        assert_eq!(quantile(&buckets, 0.125), Some(0.5));
        histogram.observe(100.0);
        let (_, _, buckets) = histogram.snapshot();
        assert_eq!(
            quantile(&buckets, 0.99),
            Some(4.0),
            "+Inf: the highest bound"
        );
    }

    #[test]
    fn clones_share_their_buckets_across_threads() {
        let histogram = Histogram::new(ATTEMPT_BUCKETS);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = histogram.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| h.observe(2.0)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let (sum, count, _) = histogram.snapshot();
        assert_eq!(count, 4000);
        assert!((sum - 8000.0).abs() < 1e-9);
    }
}
