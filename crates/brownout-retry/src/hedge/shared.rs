//! Latency samples and the state shared by every clone of a hedge layer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use brownout_core::telemetry::DecisionMetrics;

use super::config::{HedgeConfig, HedgeDelay, NONE, RECOMPUTE_EVERY, SAMPLES};

/// Latencies of recent successes and the hedge delay derived from them.
pub(crate) struct Latencies {
    pub(crate) samples: Box<[AtomicU64]>,
    pub(crate) next: AtomicUsize,
    pub(crate) seen: AtomicU64,
    pub(crate) delay_nanos: AtomicU64,
}

impl Latencies {
    pub(crate) fn new() -> Self {
        Latencies {
            samples: (0..SAMPLES).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            seen: AtomicU64::new(0),
            delay_nanos: AtomicU64::new(NONE),
        }
    }

    fn record(&self, latency: Duration, percentile: f64, min_samples: usize) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % SAMPLES;
        self.samples[i].store(nanos, Ordering::Relaxed);
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen >= min_samples as u64
            && (seen.is_multiple_of(RECOMPUTE_EVERY) || seen == min_samples as u64)
        {
            let n = (seen as usize).min(SAMPLES);
            let mut copy = [0u64; SAMPLES];
            for (slot, sample) in copy.iter_mut().zip(self.samples.iter()).take(n) {
                *slot = sample.load(Ordering::Relaxed);
            }
            let copy = &mut copy[..n];
            let rank = ((percentile * n as f64).ceil() as usize).clamp(1, n) - 1;
            let (_, value, _) = copy.select_nth_unstable(rank);
            self.delay_nanos.store(*value, Ordering::Relaxed);
        }
    }

    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay_nanos.load(Ordering::Relaxed) {
            NONE => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

pub(crate) struct HedgeShared<K, C, I> {
    pub(crate) config: HedgeConfig,
    pub(crate) classifier: K,
    pub(crate) cloner: C,
    pub(crate) requests: I,
    pub(crate) latencies: Latencies,
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
    pub(crate) metrics: DecisionMetrics,
}

impl<K, C, I> HedgeShared<K, C, I> {
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.config.delay {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile { .. } => self.latencies.delay(),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        if let HedgeDelay::Percentile {
            percentile,
            min_samples,
        } = self.config.delay
        {
            self.latencies.record(latency, percentile, min_samples);
        }
    }
}
