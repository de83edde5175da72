//! A retry budget shared by every clone of a retry (and hedge) layer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::ConfigError;
use brownout_core::clock::{SampleRate, Sampler};
use brownout_core::config::check;
use brownout_core::telemetry::{DecisionMetrics, RETRY_BUDGET};

use crate::window::BucketClock;

/// The number of buckets the budget window is cut into.
const SLOTS: usize = 10;
/// Fixed-point scale: one retry costs this many units.
const UNIT: i64 = 1000;
/// [`Retry`](crate::Retry)'s deposits read the clock about this many times per bucket
/// (`ttl / 10`)…
const CLOCK_READS_PER_BUCKET: u64 = 64;
/// …and at least once every this many requests of one service clone.
const MAX_DEPOSITS_PER_READ: u32 = 64;

/// How many retries all clones of a layer may make: a fraction of recent requests plus a
/// small floor per second (Finagle's retry budget, tower's `TpsBudget`).
///
/// Every first attempt *deposits* `ratio` retries; every retry (or hedge) *withdraws* one.
/// Deposits and withdrawals age out after `ttl` (a window of ten buckets), and
/// `min_per_sec × ttl` retries are always available on top, so a quiet client can still
/// retry. When the balance is below one retry, the retry is not made and the original
/// outcome returns; [`exhausted`](RetryBudget::exhausted) counts those times.
///
/// Time comes from `tokio::time::Instant`, so a paused test clock drives the window.
/// Deposits and withdrawals are atomic additions; only the step into a new bucket
/// (once per `ttl / 10`) takes a short lock. Under concurrent withdrawals the balance can
/// overshoot by at most the number of racing withdrawers.
///
/// [`deposit`](RetryBudget::deposit) reads the clock every time. The deposits
/// [`Retry`](crate::Retry) makes for its requests read it for one request in N per service
/// clone (N adapted at each bucket step to about 64 reads per bucket, at most 1 in 64, 1
/// while quiet); the others land in the bucket the last read found current. A deposit can
/// so count in the bucket before its own — at most N − 1 requests of one clone late, about
/// 1/64 of a bucket at a steady rate — and age out that much early; after a silence of a
/// whole `ttl`, up to N − 1 deposits per clone land in an aged-out bucket and are lost
/// (fewer retries, never more).
///
/// ```
/// use std::time::Duration;
/// use brownout_retry::RetryBudget;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let budget = RetryBudget::new(Duration::from_secs(10), 0.0, 0.1).unwrap();
/// for _ in 0..20 {
///     budget.deposit();
/// }
/// // 20 requests × 10 % = two retries.
/// assert!(budget.try_withdraw().map(|t| t.spend()).is_some());
/// assert!(budget.try_withdraw().map(|t| t.spend()).is_some());
/// assert!(budget.try_withdraw().is_none());
/// assert_eq!(budget.exhausted(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    clock: BucketClock,
    slots: [AtomicI64; SLOTS],
    deposit: i64,
    reserve: i64,
    exhausted: AtomicU64,
    /// How many of `Retry`'s deposits in one read the clock.
    rate: SampleRate,
    ttl: Duration,
    min_per_sec: f64,
    ratio: f64,
    /// `brownout_retry_budget{layer="retry"}`: the retries available, set at each bucket
    /// step (every `ttl / 10`) rather than per request.
    gauge: metrics::Gauge,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request (0 to 1000) over a `ttl` window
    /// (1 s to 60 s), plus `min_per_sec` retries per second.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `budget.ttl`, `budget.min_per_sec` or `budget.ratio`.
    pub fn new(ttl: Duration, min_per_sec: f64, ratio: f64) -> Result<RetryBudget, ConfigError> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "budget.ttl",
                format!("must be between 1s and 60s (got {ttl:?})"),
            ));
        }
        check::at_least_f64("budget.min_per_sec", min_per_sec, 0.0)?;
        check::at_least_f64("budget.ratio", ratio, 0.0)?;
        if ratio > 1000.0 {
            return Err(ConfigError::new(
                "budget.ratio",
                format!("must be in [0, 1000] (got {ratio})"),
            ));
        }
        // min_per_sec is finite: the product saturates in the float-to-int cast.
        let reserve = (min_per_sec * ttl.as_secs_f64() * UNIT as f64) as i64;
        let deposit = (ratio * UNIT as f64).round() as i64;
        let slot_nanos = u64::try_from(ttl.as_nanos() / SLOTS as u128).unwrap_or(u64::MAX);
        let gauge = DecisionMetrics::new("retry").gauge(RETRY_BUDGET);
        gauge.set(reserve.div_euclid(UNIT) as f64);
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                clock: BucketClock::new(slot_nanos, SLOTS),
                slots: std::array::from_fn(|_| AtomicI64::new(0)),
                deposit,
                reserve,
                exhausted: AtomicU64::new(0),
                rate: SampleRate::new(MAX_DEPOSITS_PER_READ, CLOCK_READS_PER_BUCKET),
                ttl,
                min_per_sec,
                ratio,
                gauge,
            }),
        })
    }

    /// The window over which deposits and withdrawals count.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The retries per second always available.
    pub fn min_per_sec(&self) -> f64 {
        self.inner.min_per_sec
    }

    /// The retries allowed per request.
    pub fn ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// Records one request (a first attempt).
    #[inline]
    pub fn deposit(&self) {
        if self.inner.deposit != 0 {
            let slot = self.inner.slot();
            self.inner.slots[slot].fetch_add(self.inner.deposit, Ordering::Relaxed);
        }
    }

    /// Records one request like [`deposit`](Self::deposit), reading the clock only when
    /// `sampler` picks this request (see the type docs): the others go into the bucket the
    /// last read found current, one atomic add and no clock read.
    #[inline]
    pub(crate) fn deposit_sampled(&self, sampler: &mut Sampler) {
        if self.inner.deposit != 0 {
            let slot = if sampler.sample(&self.inner.rate) {
                self.inner.sampled_slot()
            } else {
                self.inner.clock.current()
            };
            self.inner.slots[slot].fetch_add(self.inner.deposit, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget, or counts an exhaustion and returns `None`.
    ///
    /// The returned [`BudgetToken`] gives the retry back when dropped unless
    /// [`spend`](BudgetToken::spend) is called: a retry future dropped during its back-off
    /// returns what it withdrew.
    pub fn try_withdraw(&self) -> Option<BudgetToken> {
        let slot = self.inner.slot();
        if self.balance_units() < UNIT {
            self.inner.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.inner.slots[slot].fetch_sub(UNIT, Ordering::Relaxed);
        Some(BudgetToken {
            budget: Some(self.clone()),
        })
    }

    /// The retries available now (rounded down).
    pub fn balance(&self) -> i64 {
        self.inner.slot();
        self.balance_units().div_euclid(UNIT)
    }

    /// How many retries (and hedges) were refused because the budget was spent.
    pub fn exhausted(&self) -> u64 {
        self.inner.exhausted.load(Ordering::Relaxed)
    }

    fn balance_units(&self) -> i64 {
        self.inner.balance_units()
    }

    fn refund(&self) {
        let slot = self.inner.slot();
        self.inner.slots[slot].fetch_add(UNIT, Ordering::Relaxed);
    }
}

impl Inner {
    fn balance_units(&self) -> i64 {
        let sum: i64 = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .fold(0i64, i64::saturating_add);
        sum.saturating_add(self.reserve)
    }

    /// [`slot`](Self::slot) out of line: the clock read of one deposit in N stays out of
    /// the request path's code.
    #[inline(never)]
    fn sampled_slot(&self) -> usize {
        self.slot()
    }

    /// The index of the current bucket, clearing the buckets that aged out.
    #[inline]
    fn slot(&self) -> usize {
        self.clock.index_with(
            |i| self.slots[i].store(0, Ordering::Relaxed),
            |closed, steps| {
                // The requests of the bucket that just closed (its balance over one
                // deposit; withdrawals make it an underestimate, which only reads the clock
                // more often); a gap means the service went quiet: read it every time.
                let requests = if steps == 1 && self.deposit > 0 {
                    self.slots[closed].load(Ordering::Relaxed).max(0) / self.deposit
                } else {
                    0
                };
                self.rate.adapt(requests as u64);
                self.publish_balance(closed, steps);
            },
        )
    }

    /// Sets the gauge to the balance the bucket step leaves: the `steps` buckets after
    /// `closed` are about to be cleared (all of them after a long gap).
    #[cold]
    fn publish_balance(&self, closed: usize, steps: u64) {
        let cleared = usize::try_from(steps).unwrap_or(SLOTS).min(SLOTS);
        let kept = (0..SLOTS)
            .filter(|&i| (i + SLOTS - closed - 1) % SLOTS >= cleared)
            .map(|i| self.slots[i].load(Ordering::Relaxed))
            .fold(0i64, i64::saturating_add);
        let balance = kept.saturating_add(self.reserve).div_euclid(UNIT);
        self.gauge.set(balance as f64);
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.inner.ttl)
            .field("min_per_sec", &self.inner.min_per_sec)
            .field("ratio", &self.inner.ratio)
            .field("balance", &self.balance())
            .field("exhausted", &self.exhausted())
            .finish()
    }
}

/// One retry withdrawn from a [`RetryBudget`]; returned to it when dropped unspent.
#[must_use = "dropping the token returns the retry to the budget"]
pub struct BudgetToken {
    budget: Option<RetryBudget>,
}

impl BudgetToken {
    /// Marks the retry as made: it stays withdrawn.
    pub fn spend(mut self) {
        self.budget = None;
    }
}

impl Drop for BudgetToken {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.refund();
        }
    }
}

impl fmt::Debug for BudgetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetToken")
            .field("spent", &self.budget.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn reserve_allows_min_per_sec_without_requests() {
        let budget = RetryBudget::new(Duration::from_secs(10), 1.0, 0.1).unwrap();
        assert_eq!(budget.balance(), 10);
        for _ in 0..10 {
            budget.try_withdraw().unwrap().spend();
        }
        assert!(budget.try_withdraw().is_none());
        assert_eq!(budget.exhausted(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_and_deposits_age_out_after_ttl() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0.0, 0.5).unwrap();
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(budget.balance(), 2);
        budget.try_withdraw().unwrap().spend();
        budget.try_withdraw().unwrap().spend();
        assert_eq!(budget.balance(), 0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        for _ in 0..2 {
            budget.deposit();
        }
        assert_eq!(budget.balance(), 1);
        // The first deposits and both withdrawals age out; the later deposits remain.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(budget.balance(), 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(budget.balance(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn sampled_deposits_of_a_quiet_service_read_the_clock_every_time() {
        let exact = RetryBudget::new(Duration::from_secs(10), 0.0, 1.0).unwrap();
        let sampled = RetryBudget::new(Duration::from_secs(10), 0.0, 1.0).unwrap();
        let mut sampler = Sampler::new();
        // A few requests per bucket: the rate stays at one read per deposit, so the two
        // budgets age out identically.
        for step in 0..40 {
            for _ in 0..(step % 3) {
                exact.deposit();
                sampled.deposit_sampled(&mut sampler);
            }
            assert_eq!(sampled.inner.rate.every(), 1);
            assert_eq!(sampled.balance(), exact.balance(), "at step {step}");
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sampled_deposits_of_a_busy_service_are_at_most_one_read_late() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0.0, 1.0).unwrap();
        let mut sampler = Sampler::new();
        // 6 400 requests in the first bucket, every one of them counted.
        for _ in 0..6_400 {
            budget.deposit_sampled(&mut sampler);
        }
        assert_eq!(budget.balance(), 6_400);
        // The step into the next bucket adapts the rate: 6 400 / 64 = one read in 64 at most.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..6_400 {
            budget.deposit_sampled(&mut sampler);
        }
        assert_eq!(budget.inner.rate.every(), 64);
        assert_eq!(
            budget.balance(),
            12_800,
            "no deposit is lost within the window"
        );
        // At 2 s, some deposits of this clone (fewer than 64) still go to the bucket of 1 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..100 {
            budget.deposit_sampled(&mut sampler);
        }
        assert_eq!(budget.balance(), 12_900);
        // At 11 s the bucket of 1 s ages out, with the late deposits: early by one bucket.
        tokio::time::sleep(Duration::from_secs(9)).await;
        let left = budget.balance();
        assert!(
            (100 - 63..=100).contains(&left),
            "{left} of the 100 deposits left"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(budget.balance(), 0);
        // After the silence the next bucket step finds a gap: back to a read per deposit.
        sampler = Sampler::new();
        budget.deposit_sampled(&mut sampler);
        assert_eq!(budget.inner.rate.every(), 1);
        assert_eq!(budget.balance(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rel_02_dropped_token_returns_the_retry() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0.1, 0.0).unwrap();
        assert_eq!(budget.balance(), 1);
        let token = budget.try_withdraw().unwrap();
        assert_eq!(budget.balance(), 0);
        drop(token);
        assert_eq!(budget.balance(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_gauge_follows_the_balance_at_each_bucket_step() {
        use metrics_exporter_prometheus::PrometheusBuilder;
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let value = || {
            handle
                .render()
                .lines()
                .find(|l| l.starts_with("brownout_retry_budget{"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        // 10 s window, 1 retry/s reserve (10), 0.5 retries per request.
        let budget = metrics::with_local_recorder(&recorder, || {
            RetryBudget::new(Duration::from_secs(10), 1.0, 0.5).unwrap()
        });
        assert_eq!(value(), Some(10.0), "the reserve at build");
        for _ in 0..40 {
            budget.deposit();
        }
        // The gauge moves at the next bucket step (1 s), not per request.
        assert_eq!(value(), Some(10.0));
        tokio::time::advance(Duration::from_millis(1001)).await;
        budget.deposit();
        assert_eq!(value(), Some(30.0), "reserve 10 + 40 x 0.5");
        // After the whole window has passed, the deposits have aged out.
        tokio::time::advance(Duration::from_secs(11)).await;
        budget.deposit();
        assert_eq!(value(), Some(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_balance() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0.0, 1.0).unwrap();
        let clone = budget.clone();
        clone.deposit();
        budget.try_withdraw().unwrap().spend();
        assert!(clone.try_withdraw().is_none());
    }

    proptest! {
        #[test]
        fn rel_10_budget_config_validated(
            ttl_ms in 0u64..100_000,
            min in prop_oneof![-10.0f64..10.0, Just(f64::NAN), Just(f64::INFINITY)],
            ratio in prop_oneof![-1.0f64..2000.0, Just(f64::NAN), Just(f64::NEG_INFINITY)],
        ) {
            let ttl = Duration::from_millis(ttl_ms);
            match RetryBudget::new(ttl, min, ratio) {
                Ok(b) => {
                    prop_assert!((1000..=60_000).contains(&ttl_ms));
                    prop_assert!(min >= 0.0 && min.is_finite());
                    prop_assert!((0.0..=1000.0).contains(&ratio));
                    prop_assert!(b.ratio() == ratio);
                }
                Err(e) => {
                    let ok_ttl = (1000..=60_000).contains(&ttl_ms);
                    let ok_min = min >= 0.0 && min.is_finite();
                    let expected = if !ok_ttl { "budget.ttl" } else if !ok_min { "budget.min_per_sec" } else { "budget.ratio" };
                    prop_assert_eq!(e.field(), expected);
                }
            }
        }
    }
}
