//! [`RetryConfig`] and its builder.

use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, LoadLevel, LoadSignal};

use crate::{Backoff, Jitter, RetryBudget};

/// A validated retry configuration. `RetryConfig::default()` is:
///
/// | setting | default |
/// |---|---|
/// | `max_attempts` | 3 (the first attempt and two retries) |
/// | back-off | base 50 ms, max 5 s, multiplier 2, full jitter |
/// | budget | 10 % of requests + 1 retry/s over a 10 s window |
/// | `suppress_at` | `High`: no retry at High, Critical or Emergency |
/// | `max_retry_after` | 30 s: a server asking for a longer wait is not retried |
/// | signal | `LoadSignal::fixed(Normal)` |
/// | seed | from the OS |
///
/// The sleep before a retry is the jittered back-off or the server's hint (`Retry-After`,
/// `grpc-retry-pushback-ms`, [`Rejected::retry_after`](brownout_core::Rejected::retry_after)),
/// whichever is longer.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) suppress_at: LoadLevel,
    pub(crate) max_retry_after: Duration,
    pub(crate) signal: LoadSignal,
    pub(crate) seed: u64,
}

impl RetryConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::default()
    }

    /// The most attempts per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The back-off.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    /// The level from which retries stop.
    pub fn suppress_at(&self) -> LoadLevel {
        self.suppress_at
    }

    /// The load signal read before each retry.
    pub fn signal(&self) -> &LoadSignal {
        &self.signal
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryBuilder::default()
            .build()
            .unwrap_or_else(|e| unreachable!("the default retry configuration is valid: {e}"))
    }
}

/// Builds a [`RetryConfig`]; [`build`](RetryBuilder::build) refuses invalid values, naming
/// the field.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::LoadLevel;
/// use brownout_retry::{Jitter, RetryConfig};
///
/// let config = RetryConfig::builder()
///     .max_attempts(4)
///     .backoff(Duration::from_millis(20), Duration::from_secs(2), 3.0)
///     .jitter(Jitter::Equal)
///     .budget(Duration::from_secs(10), 5.0, 0.2)
///     .suppress_at(LoadLevel::Critical)
///     .seed(42)
///     .build()
///     .unwrap();
/// assert_eq!(config.max_attempts(), 4);
///
/// let err = RetryConfig::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_attempts");
/// ```
#[derive(Debug, Clone)]
pub struct RetryBuilder {
    max_attempts: u32,
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
    budget: BudgetChoice,
    suppress_at: LoadLevel,
    max_retry_after: Duration,
    signal: Option<LoadSignal>,
    seed: Option<u64>,
}

#[derive(Debug, Clone)]
enum BudgetChoice {
    New {
        ttl: Duration,
        min_per_sec: f64,
        ratio: f64,
    },
    Shared(RetryBudget),
    Unlimited,
}

impl Default for RetryBuilder {
    fn default() -> Self {
        RetryBuilder {
            max_attempts: 3,
            base: Duration::from_millis(50),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: Jitter::Full,
            budget: BudgetChoice::New {
                ttl: Duration::from_secs(10),
                min_per_sec: 1.0,
                ratio: 0.1,
            },
            suppress_at: LoadLevel::High,
            max_retry_after: Duration::from_secs(30),
            signal: None,
            seed: None,
        }
    }
}

impl RetryBuilder {
    /// The most attempts per request, the first included (at least 1; 1 disables retries).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The exponential back-off: first sleep `base`, growing by `multiplier` up to `max`.
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration, multiplier: f64) -> Self {
        self.base = base;
        self.max = max;
        self.multiplier = multiplier;
        self
    }

    /// How the back-off is randomised.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// A budget of its own: `ratio` retries per request (0 to 1000) plus `min_per_sec`
    /// retries per second, over a `ttl` window (1 s to 60 s).
    #[must_use]
    pub fn budget(mut self, ttl: Duration, min_per_sec: f64, ratio: f64) -> Self {
        self.budget = BudgetChoice::New {
            ttl,
            min_per_sec,
            ratio,
        };
        self
    }

    /// A budget shared with other layers (another route's retry, a hedge).
    #[must_use]
    pub fn shared_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = BudgetChoice::Shared(budget);
        self
    }

    /// No budget: every retryable failure is retried up to `max_attempts` (tower's
    /// behaviour without a budget; amplifies load during an outage).
    #[must_use]
    pub fn unlimited_budget(mut self) -> Self {
        self.budget = BudgetChoice::Unlimited;
        self
    }

    /// No retry at or above this level (default `High`). The level is read when a request
    /// is sent (at or above it, no copy of the request is made and a failure is not
    /// retried, even if the level fell meanwhile) and again when an attempt fails.
    #[must_use]
    pub fn suppress_at(mut self, level: LoadLevel) -> Self {
        self.suppress_at = level;
        self
    }

    /// The longest server-requested wait (`Retry-After`, pushback, `Rejected::retry_after`)
    /// the layer honours by waiting; a longer one returns the outcome at once.
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The load signal read before each retry.
    #[must_use]
    pub fn signal(mut self, signal: LoadSignal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Seeds the jitter for reproducible sleeps.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_attempts` (0), `backoff.base` (zero, or above
    /// `backoff.max`), `backoff.multiplier` (below 1, NaN, infinite), `budget.ttl`,
    /// `budget.min_per_sec` or `budget.ratio` (outside `[0, 1000]`, NaN, infinite).
    pub fn build(self) -> Result<RetryConfig, ConfigError> {
        check::at_least("max_attempts", self.max_attempts as usize, 1)?;
        let backoff = Backoff::new(self.base, self.max, self.multiplier, self.jitter)?;
        let budget = match self.budget {
            BudgetChoice::New {
                ttl,
                min_per_sec,
                ratio,
            } => Some(RetryBudget::new(ttl, min_per_sec, ratio)?),
            BudgetChoice::Shared(budget) => Some(budget),
            BudgetChoice::Unlimited => None,
        };
        Ok(RetryConfig {
            max_attempts: self.max_attempts,
            backoff,
            budget,
            suppress_at: self.suppress_at,
            max_retry_after: self.max_retry_after,
            signal: self.signal.unwrap_or_default(),
            seed: self.seed.unwrap_or_else(os_seed),
        })
    }
}

/// A seed from the operating system's generator.
pub(crate) fn os_seed() -> u64 {
    use rand::{RngCore, SeedableRng, rngs::SmallRng};
    SmallRng::from_os_rng().next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_valid() {
        let c = RetryConfig::default();
        assert_eq!(c.max_attempts(), 3);
        assert_eq!(c.suppress_at(), LoadLevel::High);
        assert_eq!(c.budget().unwrap().ratio(), 0.1);
        assert_eq!(c.signal().level(), LoadLevel::Normal);
    }

    fn finite_or_not() -> impl Strategy<Value = f64> {
        prop_oneof![
            -10.0f64..2000.0,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(1.0),
            Just(0.0),
        ]
    }

    proptest! {
        #[test]
        fn rel_10_builder_refuses_naming_the_field(
            attempts in 0u32..5,
            base_ms in 0u64..2000,
            max_ms in 0u64..2000,
            multiplier in finite_or_not(),
            ratio in finite_or_not(),
            min_per_sec in finite_or_not(),
        ) {
            let result = RetryConfig::builder()
                .max_attempts(attempts)
                .backoff(Duration::from_millis(base_ms), Duration::from_millis(max_ms), multiplier)
                .budget(Duration::from_secs(10), min_per_sec, ratio)
                .build();
            let expected = if attempts == 0 {
                Some("max_attempts")
            } else if base_ms == 0 {
                Some("backoff.base")
            } else if !(multiplier.is_finite() && multiplier >= 1.0) {
                Some("backoff.multiplier")
            } else if base_ms > max_ms {
                Some("backoff.base")
            } else if !(min_per_sec.is_finite() && min_per_sec >= 0.0) {
                Some("budget.min_per_sec")
            } else if !(ratio.is_finite() && (0.0..=1000.0).contains(&ratio)) {
                Some("budget.ratio")
            } else {
                None
            };
            match (result, expected) {
                (Ok(_), None) => {}
                (Err(e), Some(field)) => {
                    prop_assert_eq!(e.field(), field);
                    prop_assert!(e.to_string().contains(field));
                }
                (Ok(_), Some(field)) => prop_assert!(false, "accepted, expected {field} refused"),
                (Err(e), None) => prop_assert!(false, "refused valid config: {e}"),
            }
        }
    }
}
