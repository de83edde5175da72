//! The throttle's shared window, remembered server level and random draws.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{LoadLevel, Priority, RejectReason, Rejected};

use super::config::AdaptiveThrottleConfig;
use crate::shared::splitmix64;
use crate::window::BucketClock;

const ACCEPT: u64 = 1;
const REQUEST: u64 = 1 << 32;
const NO_LEVEL: u8 = u8::MAX;

/// Shared by every clone of a throttle.
#[derive(Debug)]
pub(crate) struct ThrottleState {
    pub(crate) config: AdaptiveThrottleConfig,
    clock: BucketClock,
    /// Per bucket: requests in the high 32 bits, accepts in the low 32 bits.
    buckets: Box<[AtomicU64]>,
    /// The sum of the buckets (same packing), so the probability is one load.
    /// Invariant: `total = Σ buckets + additions in flight` (added to `total` first).
    total: AtomicU64,
    level: AtomicU8,
    level_until: AtomicU64,
    rng: AtomicU64,
    pub(crate) rejected_locally: AtomicU64,
    pub(crate) shed_by_level: AtomicU64,
    pub(crate) metrics: DecisionMetrics,
}

impl ThrottleState {
    pub(crate) fn new(config: AdaptiveThrottleConfig) -> ThrottleState {
        let buckets = config.buckets;
        let bucket_nanos =
            u64::try_from(config.window.as_nanos() / buckets as u128).unwrap_or(u64::MAX);
        ThrottleState {
            clock: BucketClock::new(bucket_nanos, buckets),
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            level: AtomicU8::new(NO_LEVEL),
            level_until: AtomicU64::new(0),
            rng: AtomicU64::new(config.seed),
            rejected_locally: AtomicU64::new(0),
            shed_by_level: AtomicU64::new(0),
            metrics: DecisionMetrics::new("throttle"),
            config,
        }
    }

    fn now_nanos(&self) -> u64 {
        self.clock.now_nanos()
    }

    fn bucket(&self) -> usize {
        self.clock.index(|i| {
            let expired = self.buckets[i].swap(0, Ordering::AcqRel);
            // Both halves of `total` are at least those of any bucket: no borrow across halves.
            self.total.fetch_sub(expired, Ordering::AcqRel);
        })
    }

    /// Records one request and whether the server accepted it.
    pub(crate) fn record(&self, accepted: bool) {
        let add = if accepted { REQUEST + ACCEPT } else { REQUEST };
        let bucket = self.bucket();
        // Total first: a rotation racing with this addition then subtracts no more than
        // the total holds.
        self.total.fetch_add(add, Ordering::AcqRel);
        self.buckets[bucket].fetch_add(add, Ordering::AcqRel);
    }

    /// Requests and accepts over the window.
    pub(crate) fn totals(&self) -> (u64, u64) {
        self.bucket();
        let v = self.total.load(Ordering::Acquire);
        (v >> 32, v & 0xFFFF_FFFF)
    }

    /// `max(0, (requests − K·accepts) / (requests + 1))`.
    pub(crate) fn reject_probability(&self) -> f64 {
        self.bucket();
        self.probability_of(self.total.load(Ordering::Acquire))
    }

    fn probability_of(&self, total: u64) -> f64 {
        let requests = (total >> 32) as f64;
        let accepts = (total & 0xFFFF_FFFF) as f64;
        ((requests - self.config.k * accepts) / (requests + 1.0)).max(0.0)
    }

    /// The probability for the admit path. Every answer recorded rotates the window, so the
    /// totals are at most as old as the last answer; when they give 0 (the usual healthy
    /// case) the request is admitted without reading the clock. Otherwise the window is
    /// brought up to date first, so stale refusals never keep a recovered server throttled.
    fn admit_probability(&self) -> f64 {
        if self.probability_of(self.total.load(Ordering::Acquire)) == 0.0 {
            return 0.0;
        }
        self.reject_probability()
    }

    /// Remembers the level the server reported.
    pub(crate) fn remember_level(&self, level: LoadLevel) {
        if self.config.level_ttl.is_zero() {
            return;
        }
        let until = self
            .now_nanos()
            .saturating_add(u64::try_from(self.config.level_ttl.as_nanos()).unwrap_or(u64::MAX));
        let previous = self.level.swap(level.as_u8(), Ordering::Relaxed);
        self.level_until.store(until, Ordering::Relaxed);
        if previous != level.as_u8() {
            tracing::debug!(%level, "server reported a new load level");
        }
    }

    /// The last level the server reported, fresh or not (no clock read).
    pub(crate) fn last_level(&self) -> Option<LoadLevel> {
        LoadLevel::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// The server's level while it is fresh, and how long it stays fresh.
    pub(crate) fn server_level(&self) -> Option<(LoadLevel, Duration)> {
        let level = LoadLevel::from_u8(self.level.load(Ordering::Relaxed))?;
        let until = self.level_until.load(Ordering::Relaxed);
        let now = self.now_nanos();
        (now < until).then(|| (level, Duration::from_nanos(until - now)))
    }

    /// A uniform draw in `[0, 1)`; lock-free, reproducible from the seed on one thread.
    fn draw(&self) -> f64 {
        let x = splitmix64(self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether to refuse a request of class `priority` locally.
    pub(crate) fn admit(&self, priority: Priority) -> Result<(), Rejected> {
        // The clock is read only when the last reported level sheds this class.
        if let Some(level) = self.last_level()
            && self.config.policy.shed[level].contains(priority)
            && let Some((level, fresh_for)) = self.server_level()
        {
            self.shed_by_level.fetch_add(1, Ordering::Relaxed);
            let rejected = Rejected::new(RejectReason::Shed, level)
                .with_priority(priority)
                .with_retry_after(fresh_for);
            // Not recorded in the window: the server did not refuse this request, and the
            // probabilistic throttle should not punish the other classes for it.
            self.metrics.rejected(&rejected);
            return Err(rejected);
        }
        let p = self.admit_probability();
        if p > 0.0 && self.draw() < p {
            self.rejected_locally.fetch_add(1, Ordering::Relaxed);
            let level = self.last_level().unwrap_or(LoadLevel::Normal);
            let rejected =
                Rejected::new(RejectReason::BudgetExhausted, level).with_priority(priority);
            self.record(false);
            self.metrics.rejected(&rejected);
            return Err(rejected);
        }
        Ok(())
    }
}
