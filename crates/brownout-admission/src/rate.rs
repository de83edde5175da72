//! Rate limits through `governor`, scaled per load level, on tokio's (pausable) clock.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::config::{ConfigError, check};
use brownout_core::{LevelTable, LoadLevel};
use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// A rate limit: `per_second` requests per second on average, bursts of up to `burst`.
///
/// The rate in force is scaled by the policy's rate table at the current level
/// (`Policy::rate`, default 100 / 80 / 60 / 40 / 20 %); so is the burst.
///
/// ```
/// use brownout_admission::RateLimit;
/// let limit = RateLimit::per_second(500.0).burst(50);
/// assert_eq!(limit.rate(), 500.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: u32,
}

impl RateLimit {
    /// `rate` requests per second, with a burst of one second's worth (at least 1).
    pub fn per_second(rate: f64) -> RateLimit {
        let burst = if rate.is_finite() && rate >= 1.0 {
            rate.min(f64::from(u32::MAX)) as u32
        } else {
            1
        };
        RateLimit {
            per_second: rate,
            burst,
        }
    }

    /// Sets the burst (requests admitted back to back after an idle period).
    #[must_use]
    pub const fn burst(mut self, burst: u32) -> RateLimit {
        self.burst = burst;
        self
    }

    /// The rate at `Normal`, per second.
    pub const fn rate(&self) -> f64 {
        self.per_second
    }

    /// The configured burst.
    pub const fn burst_size(&self) -> u32 {
        self.burst
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let rate_field = format!("{field}.per_second");
        check::positive(&rate_field, self.per_second)?;
        if self.per_second > MAX_RATE {
            return Err(ConfigError::new(
                rate_field,
                format!("must be at most {MAX_RATE} (got {})", self.per_second),
            ));
        }
        let burst = self.burst as usize;
        check::at_least(&format!("{field}.burst"), burst, 1)?;
        if burst > MAX_BURST {
            return Err(ConfigError::new(
                format!("{field}.burst"),
                format!("must be at most {MAX_BURST} (got {burst})"),
            ));
        }
        Ok(())
    }

    /// The governor quota at rate scale `scale`: rate and burst both scaled, burst ≥ 1.
    fn quota(&self, scale: f64) -> Quota {
        let per_second = self.per_second * scale;
        let period_ns = (1e9 / per_second).round().clamp(1.0, 1e18) as u64;
        let burst = (f64::from(self.burst) * scale).round().max(1.0) as u32;
        Quota::with_period(Duration::from_nanos(period_ns))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
    }
}

/// Highest accepted rate (requests per second).
const MAX_RATE: f64 = 1e9;
/// Highest accepted burst.
const MAX_BURST: usize = u32::MAX as usize;

/// governor clock reading `tokio::time::Instant`, so paused-time tests are deterministic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    origin: Instant,
}

/// An instant of [`TokioClock`]: nanoseconds since the clock's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(Nanos);

impl std::ops::Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, rhs: Nanos) -> TokioInstant {
        TokioInstant(self.0 + rhs)
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_sub(earlier.0)
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(self.0.saturating_sub(duration))
    }
}

thread_local! {
    /// The last instant a [`TokioClock`] read on this thread: governor reads the clock inside
    /// `check`, and a refusal's `retry_after` is measured from that same instant instead of a
    /// second clock read.
    static LAST_NOW: std::cell::Cell<TokioInstant> =
        const { std::cell::Cell::new(TokioInstant(Nanos::new(0))) };
}

impl TokioClock {
    /// The instant of the clock read by the `check` that just returned on this thread.
    #[inline]
    fn last_read(&self) -> TokioInstant {
        LAST_NOW.with(std::cell::Cell::get)
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    #[inline]
    fn now(&self) -> TokioInstant {
        let now = TokioInstant(Nanos::from(
            Instant::now().saturating_duration_since(self.origin),
        ));
        LAST_NOW.with(|last| last.set(now));
        now
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;
type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// The outcome of a refused check: when to come back.
pub(crate) type RetryAfter = Duration;

/// One limiter per level, each with the rate and burst scaled by `Policy::rate`.
///
/// One limiter per level (rather than one limiter charging `1 / scale` cells per request)
/// keeps each level's rate *and* burst exact for any burst, including a burst of 1. The
/// price: when the level changes, the new level's limiter starts from its own state (full
/// if it was idle), so a level change can let through at most one burst of the new level.
#[derive(Debug)]
pub(crate) struct GlobalRate {
    limiters: LevelTable<Direct>,
    clock: TokioClock,
}

impl GlobalRate {
    pub(crate) fn new(limit: RateLimit, rate: &LevelTable<f64>) -> GlobalRate {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        GlobalRate {
            limiters: LevelTable::from_fn(|level| {
                RateLimiter::direct_with_clock(limit.quota(rate[level]), clock)
            }),
            clock,
        }
    }

    #[inline]
    pub(crate) fn check(&self, level: LoadLevel) -> Result<(), RetryAfter> {
        self.limiters[level]
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.last_read()))
    }
}

/// One keyed limiter per level; idle keys expired every `idle_sweep`.
#[derive(Debug)]
pub(crate) struct KeyedRate<K: Hash + Eq + Clone> {
    limiters: LevelTable<Keyed<K>>,
    clock: TokioClock,
    sweep_every_ns: u64,
    last_sweep_ns: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    pub(crate) fn new(limit: RateLimit, rate: &LevelTable<f64>, idle_sweep: Duration) -> Self {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        KeyedRate {
            limiters: LevelTable::from_fn(|level| {
                RateLimiter::hashmap_with_clock(limit.quota(rate[level]), clock)
            }),
            clock,
            sweep_every_ns: u64::try_from(idle_sweep.as_nanos()).unwrap_or(u64::MAX),
            last_sweep_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn check(&self, key: &K, level: LoadLevel) -> Result<(), RetryAfter> {
        self.maybe_sweep();
        self.limiters[level]
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.last_read()))
    }

    /// Forgets keys whose state is back to "full burst available" (governor's
    /// `retain_recent`) once per sweep period; one CAS decides which caller sweeps.
    fn maybe_sweep(&self) {
        let now = self.clock.now().0.as_u64();
        let last = self.last_sweep_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.sweep_every_ns
            && self
                .last_sweep_ns
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            for (_, limiter) in self.limiters.iter() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }

    /// Keys currently tracked (all levels).
    pub(crate) fn len(&self) -> usize {
        self.limiters.iter().map(|(_, l)| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scaled_rate_and_retry_after() {
        let table = LevelTable::default_rate();
        let rate = GlobalRate::new(RateLimit::per_second(10.0).burst(1), &table);
        for _ in 0..1 {
            assert!(rate.check(LoadLevel::Normal).is_ok());
        }
        let retry = rate.check(LoadLevel::Normal).unwrap_err();
        assert_eq!(retry, Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(rate.check(LoadLevel::Normal).is_ok());
        // At Emergency (20 %) the rate is 2/s: the next conforms 500 ms later.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rate.check(LoadLevel::Emergency).is_ok());
        let retry = rate.check(LoadLevel::Emergency).unwrap_err();
        assert_eq!(retry, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_sweep_forgets_idle_keys() {
        let table = LevelTable::default_rate();
        let rate = KeyedRate::new(RateLimit::per_second(100.0), &table, Duration::from_secs(1));
        for k in 0..100u32 {
            assert!(rate.check(&k, LoadLevel::Normal).is_ok());
        }
        assert_eq!(rate.len(), 100);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(rate.check(&1000, LoadLevel::Normal).is_ok());
        assert!(rate.len() <= 1, "idle keys expired, len {}", rate.len());
    }

    #[test]
    fn validation() {
        assert!(RateLimit::per_second(0.0).validate("rate").is_err());
        assert!(RateLimit::per_second(f64::NAN).validate("rate").is_err());
        assert!(RateLimit::per_second(1e10).validate("rate").is_err());
        let err = RateLimit::per_second(5.0)
            .burst(0)
            .validate("rate")
            .unwrap_err();
        assert_eq!(err.field(), "rate.burst");
        assert!(RateLimit::per_second(0.5).validate("rate").is_ok());
    }
}
