//! The latency percentile estimate: a lock-free log-bucketed histogram per window, and the
//! per-level timeouts derived from it, cached in atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::LoadLevel;
use brownout_core::clock::SampleRate;
use brownout_core::config::duration::mul_f64_saturating;
use brownout_core::telemetry;
use metrics::Gauge;
use tokio::time::Instant;

use crate::AdaptiveTimeoutConfig;

/// Sub-buckets per power of two: 16, so a bucket spans at most 1/16 (6.25 %) of its value.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Samples are microseconds, saturating at 2^40 − 1 µs (about 12.7 days).
const MAX_MICROS: u64 = (1 << 40) - 1;
/// Buckets: 16 exact ones for 0..16 µs, then 16 per power of two up to 2^40.
pub(crate) const BUCKETS: usize = ((40 - SUB_BITS) as usize + 1) * SUB as usize;
/// Marks "no timer" in the cached per-level timeouts.
pub(crate) const NO_TIMER: u64 = u64::MAX;

/// The bucket of a sample of `micros` microseconds.
#[inline]
pub(crate) fn bucket_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < SUB {
        v as usize
    } else {
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS
        let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
        ((exp - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
    }
}

/// The exclusive upper bound of bucket `index`, in microseconds: what the bucket reports,
/// so the estimate errs on the long side (a timeout, not a latency).
pub(crate) fn bucket_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        index + 1
    } else {
        let exp = index / SUB + u64::from(SUB_BITS) - 1;
        let sub = index % SUB;
        let width = 1u64 << (exp - u64::from(SUB_BITS));
        ((SUB + sub) << (exp - u64::from(SUB_BITS))) + width
    }
}

/// The `percentile` of the histogram `counts` (of `total` samples), as a duration.
pub(crate) fn percentile_of(counts: &[u64], total: u64, percentile: f64) -> Duration {
    // The smallest rank r with r / total >= percentile, at least 1.
    let rank = ((percentile * total as f64).ceil() as u64).clamp(1, total.max(1));
    let mut seen = 0u64;
    for (index, &count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Duration::from_micros(bucket_upper(index));
        }
    }
    Duration::from_micros(bucket_upper(counts.len().saturating_sub(1)))
}

fn to_nanos(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_nanos()).map_or(NO_TIMER, |n| n.min(NO_TIMER - 1))
}

/// The shared estimator of one layer.
#[derive(Debug)]
pub(crate) struct Estimator {
    config: AdaptiveTimeoutConfig,
    base: Instant,
    window_micros: u64,
    /// End of the current window, in microseconds since `base`.
    window_end: AtomicU64,
    buckets: Box<[AtomicU64]>,
    /// The clamped, unscaled estimate in nanoseconds (`NO_TIMER` when unbounded).
    estimate: AtomicU64,
    /// The timeout per level in nanoseconds (`NO_TIMER`: none).
    timeouts: [AtomicU64; LoadLevel::COUNT],
    /// Whether the level's scale is 1: only then do completions teach the estimate.
    learns: [bool; LoadLevel::COUNT],
    /// One request in this many is timed (adaptive, `1..=max_sample_every`, aiming at
    /// `4 × min_samples` samples per window).
    pub(crate) rate: SampleRate,
    /// `brownout_timeout_seconds{layer="timeout"}`: the estimate before level scaling, set
    /// when it is published (registered once, at construction).
    gauge: Gauge,
}

impl Estimator {
    pub(crate) fn new(config: AdaptiveTimeoutConfig) -> Estimator {
        let window_micros = u64::try_from(config.window.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        let estimator = Estimator {
            config,
            base: Instant::now(),
            window_micros,
            window_end: AtomicU64::new(window_micros),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            estimate: AtomicU64::new(NO_TIMER),
            timeouts: std::array::from_fn(|_| AtomicU64::new(NO_TIMER)),
            learns: LoadLevel::ALL.map(|level| config.timeout_scale[level] >= 1.0),
            rate: SampleRate::new(
                config.max_sample_every,
                (config.min_samples as u64).saturating_mul(4),
            ),
            gauge: metrics::gauge!(telemetry::TIMEOUT_SECONDS, "layer" => "timeout"),
        };
        estimator.publish(config.initial);
        estimator
    }

    fn micros_since_base(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_micros())
            .unwrap_or(MAX_MICROS)
            .min(MAX_MICROS)
    }

    /// The timeout at `level`: `None` for no timer. One atomic load.
    #[inline]
    pub(crate) fn timeout(&self, level: LoadLevel) -> Option<Duration> {
        match self.timeouts[level.index()].load(Ordering::Relaxed) {
            NO_TIMER => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// The timeout at `level` in nanoseconds, [`NO_TIMER`] for none: one atomic load and no
    /// conversion (a request answered at once never needs it as a `Duration`).
    #[inline]
    pub(crate) fn timeout_nanos(&self, level: LoadLevel) -> u64 {
        self.timeouts[level.index()].load(Ordering::Relaxed)
    }

    /// The clamped, unscaled estimate (`None`: unbounded).
    pub(crate) fn estimate(&self) -> Option<Duration> {
        match self.estimate.load(Ordering::Relaxed) {
            NO_TIMER => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// One request in this many is timed now.
    #[inline]
    pub(crate) fn sample_every(&self) -> u32 {
        self.rate.every()
    }

    /// Sets the sampling rate for the next window from the `total` samples of the window
    /// that closes: about `total × every` requests went by.
    fn adapt_sampling(&self, total: u64) {
        let requests = total.saturating_mul(u64::from(self.rate.every()));
        self.rate.adapt(requests);
    }

    /// Whether completions at `level` are recorded.
    #[inline]
    pub(crate) fn learns_at(&self, level: LoadLevel) -> bool {
        self.learns[level.index()]
    }

    /// Records one latency observed at `now`, closing the window first if it has ended.
    #[inline]
    pub(crate) fn record(&self, latency: Duration, now: Instant) {
        let t = self.micros_since_base(now);
        let end = self.window_end.load(Ordering::Relaxed);
        if t >= end {
            self.rotate(end, t);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Closes the window ending at `end` (one caller wins) and recomputes the estimate when
    /// it holds enough samples; otherwise its samples carry over into the next window.
    #[cold]
    fn rotate(&self, end: u64, t: u64) {
        let next = t.saturating_add(self.window_micros).min(MAX_MICROS);
        if self
            .window_end
            .compare_exchange(end, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another thread is closing this window
        }
        let total: u64 = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        if total < self.config.min_samples as u64 {
            self.adapt_sampling(total);
            return;
        }
        // Samples recorded while we sweep land in this window or the next: never lost.
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total = counts.iter().sum();
        self.adapt_sampling(total);
        let p = percentile_of(&counts, total, self.config.percentile);
        let estimate =
            mul_f64_saturating(p, self.config.multiplier).clamp(self.config.min, self.config.max);
        tracing::debug!(
            target: "brownout::timeout",
            samples = total,
            percentile = self.config.percentile,
            observed = ?p,
            timeout = ?estimate,
            "adaptive timeout: estimate updated"
        );
        self.publish(estimate);
    }

    fn publish(&self, estimate: Duration) {
        let unbounded = estimate == Duration::MAX;
        self.gauge.set(if unbounded {
            f64::INFINITY
        } else {
            estimate.as_secs_f64()
        });
        self.estimate.store(
            if unbounded {
                NO_TIMER
            } else {
                to_nanos(estimate)
            },
            Ordering::Relaxed,
        );
        for level in LoadLevel::ALL {
            let nanos = if unbounded {
                NO_TIMER
            } else {
                to_nanos(mul_f64_saturating(
                    estimate,
                    self.config.timeout_scale[level],
                ))
            };
            self.timeouts[level.index()].store(nanos, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(15), 15);
        assert_eq!(bucket_of(16), 16);
        assert_eq!(bucket_of(MAX_MICROS), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket_of(bucket_upper(i)), i + 1, "bucket {i}");
        }
    }

    #[test]
    fn percentile_picks_the_upper_bound() {
        let mut counts = vec![0u64; BUCKETS];
        counts[bucket_of(1000)] = 99;
        counts[bucket_of(50_000)] = 1;
        let p99 = percentile_of(&counts, 100, 0.99);
        assert!(p99 >= Duration::from_micros(1000) && p99 < Duration::from_micros(1070));
        let p100 = percentile_of(&counts, 100, 1.0);
        assert!(p100 >= Duration::from_micros(50_000));
    }

    proptest! {
        /// RELIABILITY #18: whatever the samples (outliers included), the estimate and every
        /// per-level timeout stay within [min, max] (scaled by at most 1).
        #[test]
        fn rel_18_estimate_stays_within_min_and_max(
            samples in proptest::collection::vec(0u64..u64::MAX, 1..64),
            min_ms in 1u64..1000,
            span_ms in 0u64..100_000,
        ) {
            let min = Duration::from_millis(min_ms);
            let max = Duration::from_millis(min_ms + span_ms);
            let config = AdaptiveTimeoutConfig::builder()
                .min(min)
                .max(max)
                .initial(min)
                .min_samples(1)
                .build()
                .unwrap();
            let estimator = Estimator::new(config);
            let t0 = estimator.base;
            for (i, s) in samples.iter().enumerate() {
                estimator.record(Duration::from_nanos(*s), t0 + Duration::from_millis(i as u64));
            }
            // Close the window.
            estimator.record(Duration::ZERO, t0 + Duration::from_secs(3600));
            let estimate = estimator.estimate().unwrap();
            prop_assert!(estimate >= min && estimate <= max, "{estimate:?}");
            for level in LoadLevel::ALL {
                prop_assert!(estimator.timeout(level).unwrap() <= max);
            }
        }

        #[test]
        fn a_sample_lies_within_its_bucket(v in 0u64..MAX_MICROS) {
            let i = bucket_of(v);
            prop_assert!(v < bucket_upper(i));
            // The bucket is at most 1/16 of its value wide.
            prop_assert!(bucket_upper(i) - v <= v / 16 + 1);
            if i > 0 {
                prop_assert!(bucket_upper(i - 1) <= v);
            }
        }

        #[test]
        fn percentile_is_monotone_in_p(samples in proptest::collection::vec(0u64..10_000_000, 1..200), p in 0.001f64..1.0) {
            let mut counts = vec![0u64; BUCKETS];
            for s in &samples {
                counts[bucket_of(*s)] += 1;
            }
            let total = samples.len() as u64;
            let lo = percentile_of(&counts, total, p);
            let hi = percentile_of(&counts, total, 1.0);
            prop_assert!(lo <= hi);
            let max = *samples.iter().max().unwrap();
            prop_assert!(hi > Duration::from_micros(max));
        }
    }
}
