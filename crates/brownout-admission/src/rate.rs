//! Rate limits scaled per load level, on tokio's (pausable) clock: the global one through
//! `governor`, and the thread-local clock reading that lets both the global and the per-key
//! limits (`crate::keyed`) refuse a flood without reading the clock.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::config::{ConfigError, check};
use brownout_core::{LevelTable, LoadLevel};
use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// A rate limit: `per_second` requests per second on average, bursts of up to `burst`.
///
/// The rate in force is scaled by the policy's rate table at the current level
/// (`Policy::rate`, default 100 / 80 / 60 / 40 / 20 %); so is the burst.
///
/// # Refusals during a flood
///
/// A global limit ([`rate_limit`](crate::PriorityAdmissionBuilder::rate_limit)) decides most
/// refusals of a flood without reading the clock: a thread whose requests arrive at least
/// one per 10 µs compares its last clock reading with the instant the limiter last said
/// "not before". Only a real check admits, so the limit is never exceeded, and a steady
/// flood is admitted exactly when tokens free up. If a flood stops abruptly and requests
/// come back after a token is free, each thread may refuse up to 16 of them from its old
/// reading (with a `retry_after` too long by the pause) before it reads the clock again.
/// Per-key limits ([`keyed_rate_limit`](crate::PriorityAdmissionBuilder::keyed_rate_limit))
/// do the same per key: a key's flood is refused from the thread's last reading, and other
/// keys are decided on their own state.
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
    pub(crate) fn quota(&self, scale: f64) -> Quota {
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
///
/// Every reading is also recorded in this thread's [`Reading`], which the refusal cache
/// uses (see [`GlobalRate`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    origin: Instant,
    /// Tells this clock's readings apart from other clocks' in the thread's [`Reading`].
    id: u64,
}

/// The ids of [`TokioClock`]s (0 is never used: "no reading yet").
static CLOCK_IDS: AtomicU64 = AtomicU64::new(1);

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

/// A refusal is decided without a clock read only while this thread's requests through the
/// rate limiters arrive at least one per this many nanoseconds (100 000 per second).
const FLOOD_INTERVAL_NS: u64 = 10_000;
/// At most this many refusals in a row are decided without a clock read, per thread.
pub(crate) const MAX_UNREAD: u32 = 16;

/// What this thread last read from a [`TokioClock`], and how many refusals it may still
/// decide from that reading.
///
/// governor reads the clock inside `check`: a refusal's `retry_after` is measured from that
/// same reading instead of a second one, and the gap between two readings (over the requests
/// decided in between) is this thread's arrival pace, which sizes the refusal credit.
struct Reading {
    /// The last reading on this thread (any [`TokioClock`]).
    last: Cell<Option<Instant>>,
    /// The same reading, in nanoseconds since the origin of the clock that took it.
    last_ns: Cell<u64>,
    /// The id of the clock that took it (0: none yet).
    clock: Cell<u64>,
    /// Nanoseconds between the last reading and the one before it (0: unknown, or time is
    /// paused).
    gap_ns: Cell<u64>,
    /// Requests decided over that gap (the unread refusals in between, plus the reading's own).
    covered: Cell<u32>,
    /// Refusals decided from the cache since the last reading.
    unread: Cell<u32>,
    /// Refusals this thread may still decide without reading the clock.
    credit: Cell<u32>,
    /// The arrival pace the credit was sized with, in nanoseconds per request.
    pace_ns: Cell<u64>,
    /// The "not before" instant the credit was granted against (0: none).
    streak_until: Cell<u64>,
    /// The `retry_after` from the last reading to `streak_until`: every cached refusal
    /// against that instant answers it.
    streak_retry: Cell<Duration>,
}

thread_local! {
    static READING: Reading = const {
        Reading {
            last: Cell::new(None),
            last_ns: Cell::new(0),
            clock: Cell::new(0),
            gap_ns: Cell::new(0),
            covered: Cell::new(1),
            unread: Cell::new(0),
            credit: Cell::new(0),
            pace_ns: Cell::new(0),
            streak_until: Cell::new(0),
            streak_retry: Cell::new(Duration::ZERO),
        }
    };
}

impl TokioClock {
    pub(crate) fn new() -> TokioClock {
        TokioClock {
            origin: brownout_core::clock::now(),
            id: CLOCK_IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The instant this clock counts from.
    #[cfg(test)]
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }

    /// The instant of the clock read by the `check` that just returned on this thread.
    #[inline]
    fn last_read(&self) -> TokioInstant {
        TokioInstant(Nanos::new(READING.with(|r| r.last_ns.get())))
    }

    /// Reads the clock (recording the reading in this thread's [`Reading`]): nanoseconds
    /// since this clock's origin.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.now().0.as_u64()
    }

    /// A refusal decided from `until` (a limiter's "not before", in this clock's
    /// nanoseconds; 0 for none) and this thread's last reading, without reading the clock:
    /// `Some(retry_after)` when the thread has credit left and its last reading was before
    /// `until`; `None` to check for real.
    #[inline]
    pub(crate) fn cached_refusal(&self, until: u64) -> Option<RetryAfter> {
        if until == 0 {
            return None;
        }
        READING.with(|r| {
            let credit = r.credit.get();
            if credit == 0 {
                return None;
            }
            if r.streak_until.get() == until && r.clock.get() == self.id {
                // The instant the credit was granted against, from this clock's reading.
                r.credit.set(credit - 1);
                r.unread.set(r.unread.get() + 1);
                return Some(r.streak_retry.get());
            }
            self.cached_refusal_against(r, until)
        })
    }

    /// [`cached_refusal`](Self::cached_refusal) against another instant than the credit's
    /// (another thread moved it, another level or another limiter): the credit was sized
    /// for its own instant, so this one is refused only if, at the credit's pace, this
    /// request still arrives before it; `retry_after` is measured from the last reading.
    #[cold]
    #[inline(never)]
    fn cached_refusal_against(&self, r: &Reading, until: u64) -> Option<RetryAfter> {
        let last = if r.clock.get() == self.id {
            r.last_ns.get()
        } else {
            nanos_since(r.last.get()?, self.origin)
        };
        let arrives = u64::from(r.unread.get() + 1)
            .saturating_mul(r.pace_ns.get())
            .saturating_add(last);
        if arrives >= until {
            r.credit.set(0);
            return None;
        }
        r.credit.set(r.credit.get() - 1);
        r.unread.set(r.unread.get() + 1);
        Some(Duration::from_nanos(until - last))
    }

    /// After governor refused at `now` (this thread's last reading) until `until`: how many
    /// of this thread's next refusals may be decided without a reading. None unless the
    /// thread's requests arrive at least one per [`FLOOD_INTERVAL_NS`]; then as many as fit
    /// before `until` at that pace less one, at most twice the requests the last gap covered
    /// (the credit grows only with a sustained flood) and at most [`MAX_UNREAD`].
    pub(crate) fn grant(now: u64, until: u64, retry: RetryAfter) {
        READING.with(|r| {
            r.streak_until.set(until);
            r.streak_retry.set(retry);
            let gap = r.gap_ns.get();
            let covered = u64::from(r.covered.get());
            let pace = gap / covered;
            r.pace_ns.set(pace.max(1));
            let credit = if gap == 0 || pace > FLOOD_INTERVAL_NS {
                0
            } else {
                let fits = until.saturating_sub(now) / pace.max(1);
                fits.saturating_sub(1)
                    .min(2 * covered)
                    .min(u64::from(MAX_UNREAD)) as u32
            };
            r.credit.set(credit);
        });
    }
}

/// Nanoseconds from `origin` to `t` (0 if `t` is earlier).
#[inline]
fn nanos_since(t: Instant, origin: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    #[inline]
    fn now(&self) -> TokioInstant {
        let now = brownout_core::clock::now();
        let ns = nanos_since(now, self.origin);
        READING.with(|r| {
            let gap = if r.clock.get() == self.id {
                ns.saturating_sub(r.last_ns.get())
            } else {
                r.last.get().map_or(0, |last| nanos_since(now, last))
            };
            r.gap_ns.set(gap);
            r.covered.set(r.unread.get() + 1);
            r.unread.set(0);
            r.credit.set(0);
            r.last.set(Some(now));
            r.last_ns.set(ns);
            r.clock.set(self.id);
        });
        TokioInstant(Nanos::new(ns))
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// The outcome of a refused check: when to come back.
pub(crate) type RetryAfter = Duration;

/// One level's limiter and the last "not before" it answered.
#[derive(Debug)]
struct LevelRate {
    limiter: Direct,
    /// governor's earliest conforming instant at its last refusal, in the clock's
    /// nanoseconds (0: never refused). Always at or before the limiter's real one, which
    /// only moves forward, so refusing before it never refuses a conforming request
    /// *at the reading it is compared with*.
    refuse_until: AtomicU64,
}

/// One limiter per level, each with the rate and burst scaled by `Policy::rate`.
///
/// One limiter per level (rather than one limiter charging `1 / scale` cells per request)
/// keeps each level's rate *and* burst exact for any burst, including a burst of 1. The
/// price: when the level changes, the new level's limiter starts from its own state (full
/// if it was idle), so a level change can let through at most one burst of the new level.
///
/// # Refusals without a clock read
///
/// A clock read costs more than the rest of a refusal, and refusals come in floods. Each
/// level remembers governor's last "not until" instant; a thread whose requests arrive at
/// least one per [`FLOOD_INTERVAL_NS`] (10 µs) gets a credit of refusals it decides by
/// comparing its *last* clock reading with that instant, without a read: as many as its
/// pace fits before the instant, less one, growing ×2 per reading, at most [`MAX_UNREAD`]
/// (16). Consequences, all on the side of refusing:
///
/// - The limiter never admits more than its rate: only governor admits, after a read.
/// - In a steady flood no request is refused after a token is free: the credit ends one
///   arrival before the instant, and the next request reads the clock.
/// - If a thread's flood stops abruptly and requests come back after the instant, at most
///   [`MAX_UNREAD`] of them (per thread) are refused from the old reading, with a
///   `retry_after` measured from that reading (too long by the pause). A paused clock never
///   grants credit (two readings at one instant tell no pace), so paused-time tests that do
///   not advance during a flood see exact decisions.
/// - A cached refusal's `retry_after` is measured from the thread's last reading: too long
///   by at most the credit spent since (≤ 16 arrivals of ≤ 10 µs in a flood).
#[derive(Debug)]
pub(crate) struct GlobalRate {
    levels: LevelTable<LevelRate>,
    clock: TokioClock,
}

impl GlobalRate {
    pub(crate) fn new(limit: RateLimit, rate: &LevelTable<f64>) -> GlobalRate {
        let clock = TokioClock::new();
        GlobalRate {
            levels: LevelTable::from_fn(|level| LevelRate {
                limiter: RateLimiter::direct_with_clock(limit.quota(rate[level]), clock),
                refuse_until: AtomicU64::new(0),
            }),
            clock,
        }
    }

    /// `Err(retry_after)` when a request at `level` is over the rate.
    #[inline]
    pub(crate) fn check(&self, level: LoadLevel) -> Result<(), RetryAfter> {
        let rate = &self.levels[level];
        let until = rate.refuse_until.load(Ordering::Relaxed);
        if let Some(retry) = self.clock.cached_refusal(until) {
            return Err(retry);
        }
        self.check_governor(rate)
    }

    /// governor's check (one clock read); a refusal updates the cache and this thread's
    /// credit. Out of line: the cached refusal above is the path to keep small.
    #[inline(never)]
    fn check_governor(&self, rate: &LevelRate) -> Result<(), RetryAfter> {
        rate.limiter.check().map_err(|not_until| {
            let now = self.clock.last_read();
            let until = not_until.earliest_possible();
            let retry = not_until.wait_time_from(now);
            // Stored only when it moved: threads refusing against the same instant then
            // share the cache line read-only.
            if rate.refuse_until.load(Ordering::Relaxed) != until.0.as_u64() {
                rate.refuse_until.store(until.0.as_u64(), Ordering::Relaxed);
            }
            TokioClock::grant(now.0.as_u64(), until.0.as_u64(), retry);
            retry
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// The GCRA the limiters must agree with, on exact virtual nanoseconds, with no cache
    /// (also the oracle of the keyed limiter's tests, `crate::keyed`).
    pub(crate) struct Reference {
        pub(crate) t: u64,
        pub(crate) tau: u64,
        pub(crate) tat: Option<u64>,
    }

    impl Reference {
        pub(crate) fn new(per_second: u64, burst: u64) -> Reference {
            // governor's period: 1 s / rate, rounded to the nanosecond.
            let t = (1_000_000_000 + per_second / 2) / per_second;
            Reference {
                t,
                tau: t * (burst - 1),
                tat: None,
            }
        }

        /// How long a request at `now` must wait, without taking it (0 if it conforms).
        pub(crate) fn wait_at(&self, now: u64) -> u64 {
            self.tat
                .unwrap_or(now)
                .saturating_sub(self.tau)
                .saturating_sub(now)
        }

        /// Whether a request at `now` would conform, without taking it.
        pub(crate) fn conforms(&self, now: u64) -> bool {
            now >= self.tat.unwrap_or(now).saturating_sub(self.tau)
        }

        /// `Err(wait)` when a request at `now` does not conform.
        pub(crate) fn check(&mut self, now: u64) -> Result<(), u64> {
            let tat = self.tat.unwrap_or(now);
            let earliest = tat.saturating_sub(self.tau);
            if now < earliest {
                return Err(earliest - now);
            }
            self.tat = Some(tat.max(now) + self.t);
            Ok(())
        }
    }

    /// Refusals this thread may still decide without a clock read.
    pub(crate) fn credit() -> u32 {
        READING.with(|r| r.credit.get())
    }

    pub(crate) fn ns(since: Instant) -> u64 {
        nanos_since(Instant::now(), since)
    }

    /// A flood of one request every `step` for `span`, each decided by `check` (a limiter
    /// whose clock starts at `origin`); every decision and every `retry_after` compared with
    /// the reference. Returns (admitted, refusals decided from the cache). Shared by the
    /// global and the keyed limits' tests.
    pub(crate) async fn flood_matches_reference(
        mut check: impl FnMut() -> Result<(), RetryAfter>,
        reference: &mut Reference,
        origin: Instant,
        step: Duration,
        span: Duration,
    ) -> (u64, u64) {
        let (mut admitted, mut cached) = (0, 0);
        let end = Instant::now() + span;
        while Instant::now() < end {
            let now = ns(origin);
            let from_cache = credit() > 0;
            let expected = reference.check(now);
            match (check(), expected) {
                (Ok(()), Ok(())) => admitted += 1,
                (Err(retry), Err(wait)) => {
                    let retry = retry.as_nanos() as u64;
                    // Never too early; too late by at most the unread arrivals.
                    assert!(retry >= wait, "retry_after {retry} < {wait} at {now}");
                    let slack = u64::from(MAX_UNREAD) * step.as_nanos() as u64;
                    assert!(
                        retry <= wait + slack,
                        "retry_after {retry} ≫ {wait} at {now}"
                    );
                    cached += u64::from(from_cache);
                }
                (got, want) => panic!("at {now} ns: got {got:?}, reference {want:?}"),
            }
            tokio::time::advance(step).await;
        }
        (admitted, cached)
    }

    #[tokio::test(start_paused = true)]
    async fn steady_flood_decides_exactly_like_governor_with_few_clock_reads() {
        let origin = Instant::now();
        let rate = GlobalRate::new(
            RateLimit::per_second(100.0).burst(3),
            &LevelTable::default_rate(),
        );
        let mut reference = Reference::new(100, 3);
        let (admitted, cached) = flood_matches_reference(
            || rate.check(LoadLevel::Normal),
            &mut reference,
            origin,
            Duration::from_micros(2),
            Duration::from_millis(200),
        )
        .await;
        // 3 at once, then one per 10 ms for 200 ms: 3 + 19 (the one at 200 ms is not sent).
        assert_eq!(admitted, 3 + 19);
        let requests = 100_000;
        let refused = requests - admitted;
        assert!(
            cached * 10 >= refused * 8,
            "only {cached} of {refused} refusals without a clock read"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn steady_flood_at_each_level_keeps_that_levels_rate() {
        let origin = Instant::now();
        let rate = GlobalRate::new(
            RateLimit::per_second(50.0).burst(1),
            &LevelTable::default_rate(),
        );
        // 50/s scaled by 100 / 80 / 60 / 40 / 20 %; each level its own limiter and cache.
        for (level, per_second) in [
            (LoadLevel::Normal, 50),
            (LoadLevel::Elevated, 40),
            (LoadLevel::High, 30),
            (LoadLevel::Critical, 20),
            (LoadLevel::Emergency, 10),
        ] {
            let mut reference = Reference::new(per_second, 1);
            let (admitted, cached) = flood_matches_reference(
                || rate.check(level),
                &mut reference,
                origin,
                Duration::from_micros(8),
                Duration::from_millis(500),
            )
            .await;
            // One at 0, then one per period, for 500 ms.
            assert_eq!(admitted, per_second / 2, "{level:?} at {per_second}/s");
            assert!(cached > 50_000, "{level:?}: {cached} cached refusals");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn level_changes_mid_flood_use_each_levels_own_cache() {
        let origin = Instant::now();
        let rate = GlobalRate::new(
            RateLimit::per_second(100.0).burst(1),
            &LevelTable::default_rate(),
        );
        let mut normal = Reference::new(100, 1);
        let mut emergency = Reference::new(20, 1);
        let step = Duration::from_micros(3);
        for i in 0..60_000u32 {
            // Alternate levels every 5 000 requests (15 ms).
            let (level, reference) = if (i / 5_000) % 2 == 0 {
                (LoadLevel::Normal, &mut normal)
            } else {
                (LoadLevel::Emergency, &mut emergency)
            };
            let now = ns(origin);
            let got = rate.check(level).is_ok();
            assert_eq!(got, reference.check(now).is_ok(), "request {i} at {now}");
            tokio::time::advance(step).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn two_limiters_flooded_in_turn_on_one_thread_stay_exact() {
        let origin = Instant::now();
        let table = LevelTable::default_rate();
        let a = GlobalRate::new(RateLimit::per_second(100.0).burst(2), &table);
        tokio::time::advance(Duration::from_micros(3)).await;
        let b_origin = Instant::now();
        let b = GlobalRate::new(RateLimit::per_second(30.0).burst(1), &table);
        let (mut ref_a, mut ref_b) = (Reference::new(100, 2), Reference::new(30, 1));
        let mut other_clock = 0;
        for i in 0..40_000u32 {
            // Runs of 7 requests to one limiter, then to the other: the credit one earned is
            // spent against the other's instant, measured across clocks.
            let (rate, reference, since) = if (i / 7) % 2 == 0 {
                (&a, &mut ref_a, origin)
            } else {
                (&b, &mut ref_b, b_origin)
            };
            other_clock += u32::from(credit() > 0 && (i % 7) == 0);
            let now = ns(since);
            let got = rate.check(LoadLevel::Normal);
            match (got, reference.check(now)) {
                (Ok(()), Ok(())) => {}
                (Err(retry), Err(wait)) => {
                    let retry = retry.as_nanos() as u64;
                    assert!(
                        retry >= wait && retry <= wait + 16 * 2_000,
                        "{retry} vs {wait}"
                    );
                }
                (got, want) => panic!("request {i} at {now}: {got:?} vs {want:?}"),
            }
            tokio::time::advance(Duration::from_micros(2)).await;
        }
        assert!(
            other_clock > 100,
            "credit spent across clocks {other_clock} times"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn paused_clock_without_advance_grants_no_credit() {
        let rate = GlobalRate::new(
            RateLimit::per_second(10.0).burst(1),
            &LevelTable::default_rate(),
        );
        assert!(rate.check(LoadLevel::Normal).is_ok());
        for _ in 0..100 {
            let retry = rate.check(LoadLevel::Normal).unwrap_err();
            assert_eq!(retry, Duration::from_millis(100));
            assert_eq!(credit(), 0, "two readings at one instant tell no pace");
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(rate.check(LoadLevel::Normal).is_ok(), "released on time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_that_stops_refuses_at_most_max_unread_late_then_reads() {
        let origin = Instant::now();
        let rate = GlobalRate::new(
            RateLimit::per_second(10.0).burst(1),
            &LevelTable::default_rate(),
        );
        let mut reference = Reference::new(10, 1);
        flood_matches_reference(
            || rate.check(LoadLevel::Normal),
            &mut reference,
            origin,
            Duration::from_micros(1),
            Duration::from_millis(20),
        )
        .await;
        let left = credit();
        assert!(left > 0 && left <= MAX_UNREAD, "credit {left}");
        // The flood stops; requests come back 200 ms later, after the token at 100 ms.
        tokio::time::advance(Duration::from_millis(200)).await;
        for late in 0..left {
            let retry = rate.check(LoadLevel::Normal).unwrap_err();
            // From the last reading (~20 ms): up to ~80 ms, too long by the pause.
            assert!(
                retry > Duration::from_millis(79),
                "late refusal {late}: {retry:?}"
            );
        }
        assert_eq!(credit(), 0);
        assert!(
            rate.check(LoadLevel::Normal).is_ok(),
            "the next one reads the clock"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_refusals_always_read_the_clock() {
        let rate = GlobalRate::new(
            RateLimit::per_second(1.0).burst(1),
            &LevelTable::default_rate(),
        );
        assert!(rate.check(LoadLevel::Normal).is_ok());
        // One request per 50 µs: slower than one per FLOOD_INTERVAL_NS.
        for i in 0..1_000u32 {
            tokio::time::advance(Duration::from_micros(50)).await;
            let retry = rate.check(LoadLevel::Normal).unwrap_err();
            assert_eq!(
                retry,
                Duration::from_secs(1) - Duration::from_micros(50) * (i + 1)
            );
            assert_eq!(credit(), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_limiter_on_the_thread_is_not_refused_by_this_ones_cache() {
        let table = LevelTable::default_rate();
        let flooded = GlobalRate::new(RateLimit::per_second(1.0).burst(1), &table);
        let other = GlobalRate::new(RateLimit::per_second(1000.0).burst(1), &table);
        assert!(flooded.check(LoadLevel::Normal).is_ok());
        for _ in 0..100 {
            tokio::time::advance(Duration::from_micros(1)).await;
            assert!(flooded.check(LoadLevel::Normal).is_err());
        }
        assert!(credit() > 0);
        // `other` never refused: no cached instant, governor decides (and admits).
        assert!(other.check(LoadLevel::Normal).is_ok());
    }

    /// Gaps between requests: mostly a flood (< 3 µs), some slower, a few long pauses.
    /// Arrivals: the gap before each request (mostly a flood under 3 µs, some slower, a few
    /// long pauses) and its level (mostly Normal, sometimes Elevated or Emergency).
    /// Judges one decision of a limiter against `reference` (fed only the admissions) at
    /// `now`: an admission must conform (never above the rate); a refusal the reference
    /// would not make may only come from the refusal cache (`from_cache`), at most
    /// `MAX_UNREAD` in a row (`late_in_a_row` counts them); a true refusal's `retry_after`
    /// is never earlier than the reference's.
    pub(crate) fn judge(
        decision: Result<(), RetryAfter>,
        reference: &mut Reference,
        now: u64,
        from_cache: bool,
        late_in_a_row: &mut u32,
    ) -> Result<(), TestCaseError> {
        match decision {
            Ok(()) => {
                prop_assert!(reference.check(now).is_ok(), "over the rate at {}", now);
                *late_in_a_row = 0;
            }
            Err(retry) if reference.conforms(now) => {
                prop_assert!(from_cache, "a real check refused a conforming request");
                prop_assert!(retry > Duration::ZERO);
                *late_in_a_row += 1;
                prop_assert!(*late_in_a_row <= MAX_UNREAD, "{} late", late_in_a_row);
            }
            Err(retry) => {
                let wait = reference.wait_at(now);
                prop_assert!(
                    retry.as_nanos() as u64 >= wait,
                    "retry {:?} < {}",
                    retry,
                    wait
                );
                *late_in_a_row = 0;
            }
        }
        Ok(())
    }

    pub(crate) fn arrivals() -> impl Strategy<Value = Vec<(u64, LoadLevel)>> {
        let gap = prop_oneof![
            8 => 0u64..3_000,
            1 => 3_000u64..200_000,
            1 => 1_000_000u64..300_000_000,
        ];
        let level = prop_oneof![
            6 => Just(LoadLevel::Normal),
            1 => Just(LoadLevel::Elevated),
            1 => Just(LoadLevel::Emergency),
        ];
        proptest::collection::vec((gap, level), 1..2_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the arrivals and level changes: every admission conforms to that level's
        /// reference GCRA fed only its admissions (never above the rate); a refusal the
        /// reference would not make ("late") is only ever decided from the cache, at most
        /// `MAX_UNREAD` in a row; a true refusal's `retry_after` is never earlier than the
        /// reference's.
        #[test]
        fn random_arrivals_never_over_admit_and_late_refusals_are_bounded(
            arrivals in arrivals(),
            per_second in 1u64..2_000,
            burst in 1u32..5,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let origin = Instant::now();
                let table = LevelTable::default_rate();
                let limit = RateLimit::per_second(per_second as f64).burst(burst);
                let rate = GlobalRate::new(limit, &table);
                // Each level's reference from the quota governor got.
                let mut references = LevelTable::from_fn(|level| {
                    let quota = limit.quota(table[level]);
                    let t = quota.replenish_interval().as_nanos() as u64;
                    Reference {
                        t,
                        tau: t * (u64::from(quota.burst_size().get()) - 1),
                        tat: None,
                    }
                });
                let mut late_in_a_row = 0;
                for (gap, level) in arrivals {
                    tokio::time::advance(Duration::from_nanos(gap)).await;
                    let now = ns(origin);
                    let from_cache = credit() > 0;
                    let decision = rate.check(level);
                    judge(decision, &mut references[level], now, from_cache, &mut late_in_a_row)?;
                }
                Ok::<(), TestCaseError>(())
            })?;
        }
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
