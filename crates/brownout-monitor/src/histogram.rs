//! A lock-free, fixed-size, log-linear latency histogram.
//!
//! Values are nanoseconds. Below 32 ns every value has its own bucket; above, each power of
//! two is split into 32 equal buckets, up to 2³⁶ ns (≈ 68.7 s; larger values land in the top
//! bucket). A quantile is reported as the midpoint of its bucket, so it is within 1/64
//! (≈ 1.6 %) of the true sample quantile, inside the required 3 %.
//!
//! Recording is one relaxed `fetch_add` on one of 1024 `AtomicU64` buckets (8 KiB); no lock,
//! no allocation. The monitor drains the buckets once per tick and computes quantiles there.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// The largest value with a bucket of its own (ns); larger values are clamped to it.
const MAX_NS: u64 = (1 << 36) - 1;

/// The number of buckets of a [`LatencyHistogram`].
pub const BUCKETS: usize = 1024;

#[inline]
fn index_of(ns: u64) -> usize {
    let v = ns.min(MAX_NS);
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) - SUB;
    ((msb - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
}

/// The smallest value of bucket `index` and the bucket's width, in nanoseconds.
fn bounds_of(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < SUB {
        return (i, 1);
    }
    let octave = i / SUB;
    let sub = i % SUB;
    let shift = octave - 1;
    ((SUB + sub) << shift, 1 << shift)
}

/// The value a bucket reports: its midpoint (exact for the one-value buckets below 32 ns).
fn representative(index: usize) -> u64 {
    let (low, width) = bounds_of(index);
    low + width / 2
}

/// A concurrent latency histogram: record from any thread, drain once per interval.
///
/// ```
/// use std::time::Duration;
/// use brownout_monitor::LatencyHistogram;
///
/// let histogram = LatencyHistogram::new();
/// for ms in 1..=100 {
///     histogram.record(Duration::from_millis(ms));
/// }
/// let counts = histogram.drain();
/// assert_eq!(counts.count(), 100);
/// let p95 = counts.quantile(0.95).unwrap().as_secs_f64();
/// assert!((p95 - 0.095).abs() / 0.095 < 0.03);
/// assert_eq!(histogram.drain().count(), 0); // drained
/// ```
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl LatencyHistogram {
    /// An empty histogram (allocates its 8 KiB of buckets once).
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one sample: one relaxed atomic add, no lock, no allocation.
    #[inline]
    pub fn record(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.record_nanos(ns);
    }

    /// Records one sample given in nanoseconds.
    #[inline]
    pub fn record_nanos(&self, ns: u64) {
        self.buckets[index_of(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// Moves every count into `into` (overwriting it) and resets the histogram.
    ///
    /// Samples recorded concurrently land either in this drain or in the next one; none is
    /// lost or counted twice.
    pub fn drain_into(&self, into: &mut HistogramCounts) {
        into.clear();
        self.drain_add_into(into);
    }

    /// Like [`drain_into`](Self::drain_into), but adds to the counts already in `into`
    /// (to merge several histograms, e.g. per-thread stripes).
    pub fn drain_add_into(&self, into: &mut HistogramCounts) {
        for (bucket, slot) in self.buckets.iter().zip(into.counts.iter_mut()) {
            // A load first: most buckets are empty, and a load does not take the cache line
            // away from recording threads.
            if bucket.load(Ordering::Relaxed) != 0 {
                let count = bucket.swap(0, Ordering::Relaxed);
                *slot += count;
                into.total += count;
            }
        }
    }

    /// The counts recorded since the last drain, resetting the histogram.
    pub fn drain(&self) -> HistogramCounts {
        let mut counts = HistogramCounts::new();
        self.drain_into(&mut counts);
        counts
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("buckets", &BUCKETS)
            .finish_non_exhaustive()
    }
}

/// The counts drained from a [`LatencyHistogram`] over one interval.
#[derive(Clone, PartialEq, Eq)]
pub struct HistogramCounts {
    counts: Box<[u64]>,
    total: u64,
}

impl HistogramCounts {
    /// Empty counts (a reusable buffer for [`LatencyHistogram::drain_into`]).
    pub fn new() -> HistogramCounts {
        HistogramCounts {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }

    /// Resets every count to zero.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }

    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q`-quantile (`q` in `[0, 1]`, clamped) of the samples, within 1.6 % of the exact
    /// sample quantile (nearest-rank definition); `None` when there is no sample.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        // Nearest rank: the smallest value with at least ⌈q·n⌉ samples at or below it.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos(representative(index)));
            }
        }
        None
    }

    /// The non-empty buckets in increasing order: each bucket's value (its midpoint, as
    /// [`quantile`](Self::quantile) reports) and its count.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, count)| (Duration::from_nanos(representative(index)), *count))
    }

    /// The p50, p95 and p99 of the samples.
    pub fn quantiles(&self) -> Quantiles {
        Quantiles {
            p50: self.quantile(0.50),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            samples: self.total,
        }
    }
}

impl Default for HistogramCounts {
    fn default() -> Self {
        HistogramCounts::new()
    }
}

impl fmt::Debug for HistogramCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramCounts")
            .field("count", &self.total)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

/// Latency quantiles of one interval; `None` when no request completed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quantiles {
    /// The median.
    pub p50: Option<Duration>,
    /// The 95th percentile.
    pub p95: Option<Duration>,
    /// The 99th percentile.
    pub p99: Option<Duration>,
    /// How many samples they were computed from.
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_cover_the_range() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, width) = bounds_of(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(index_of(low), index);
            assert_eq!(index_of(low + width - 1), index);
            expected_low = low + width;
        }
        assert_eq!(expected_low, MAX_NS + 1);
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn empty_has_no_quantile_and_huge_values_clamp() {
        let h = LatencyHistogram::new();
        assert_eq!(h.drain().quantile(0.5), None);
        h.record(Duration::MAX);
        h.record(Duration::ZERO);
        let c = h.drain();
        assert_eq!(c.quantile(0.0), Some(Duration::ZERO));
        assert!(c.quantile(1.0).unwrap() > Duration::from_secs(60));
        assert_eq!(c.quantile(f64::NAN), Some(Duration::ZERO));
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn assert_close(estimate: Duration, exact: u64) {
        let estimate = estimate.as_nanos() as f64;
        let exact_f = exact as f64;
        let err = (estimate - exact_f).abs() / exact_f.max(1.0);
        assert!(err <= 0.03, "estimate {estimate} vs exact {exact} ({err})");
    }

    #[test]
    fn uniform_and_exponential_distributions_within_3_percent() {
        // SplitMix64, seeded: deterministic without a dependency.
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let uniform: Vec<u64> = (0..50_000)
            .map(|_| 1_000 + next() % 60_000_000_000)
            .collect();
        let exponential: Vec<u64> = (0..50_000)
            .map(|_| {
                let u = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // (0, 1]
                (-u.ln() * 5_000_000.0) as u64 + 1_000 // mean 5 ms, ≥ 1 µs
            })
            .collect();
        for samples in [uniform, exponential] {
            let h = LatencyHistogram::new();
            for &s in &samples {
                h.record_nanos(s);
            }
            let counts = h.drain();
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
                assert_close(counts.quantile(q).unwrap(), exact_quantile(&sorted, q));
            }
        }
    }

    proptest! {
        #[test]
        fn quantile_within_3_percent(
            samples in proptest::collection::vec(1_000u64..60_000_000_000, 1..400),
            q in 0.0f64..=1.0,
        ) {
            let h = LatencyHistogram::new();
            for &s in &samples {
                h.record_nanos(s);
            }
            let counts = h.drain();
            prop_assert_eq!(counts.count(), samples.len() as u64);
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            let exact = exact_quantile(&sorted, q) as f64;
            let estimate = counts.quantile(q).unwrap().as_nanos() as f64;
            prop_assert!((estimate - exact).abs() / exact <= 0.03, "{} vs {}", estimate, exact);
        }

        #[test]
        fn index_is_monotone(a in any::<u64>(), b in any::<u64>()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(index_of(lo) <= index_of(hi));
        }
    }
}
