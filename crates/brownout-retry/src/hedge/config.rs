//! [`HedgeConfig`] and its builder.

use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, LoadLevel, LoadSignal};

use crate::RetryBudget;

/// The number of recent success latencies kept for the percentile.
pub(crate) const SAMPLES: usize = 256;
/// The percentile is recomputed every this many samples.
pub(crate) const RECOMPUTE_EVERY: u64 = 128;
pub(crate) const NONE: u64 = u64::MAX;

/// When the hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// After a fixed delay.
    Fixed(Duration),
    /// After this percentile (in `(0, 1]`) of the latencies of the last 256 successes;
    /// no hedge before `min_samples` successes were seen.
    Percentile {
        /// E.g. `0.95`.
        percentile: f64,
        /// Successes needed before hedging starts.
        min_samples: usize,
    },
}

/// A validated hedging configuration. Defaults: p95 after 20 samples, a budget of 10 % of
/// requests + 1 per second over 10 s, no hedge at `High` or above.
#[derive(Debug, Clone)]
pub struct HedgeConfig {
    pub(crate) delay: HedgeDelay,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) deposit: bool,
    pub(crate) suppress_at: LoadLevel,
    pub(crate) signal: LoadSignal,
}

impl HedgeConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder::default()
    }

    /// The budget hedges draw from.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

/// Builds a [`HedgeConfig`].
#[derive(Debug, Clone)]
pub struct HedgeBuilder {
    delay: HedgeDelay,
    budget: Result<RetryBudget, (Duration, f64, f64)>,
    unlimited: bool,
    suppress_at: LoadLevel,
    signal: Option<LoadSignal>,
}

impl Default for HedgeBuilder {
    fn default() -> Self {
        HedgeBuilder {
            delay: HedgeDelay::Percentile {
                percentile: 0.95,
                min_samples: 20,
            },
            budget: Err((Duration::from_secs(10), 1.0, 0.1)),
            unlimited: false,
            suppress_at: LoadLevel::High,
            signal: None,
        }
    }
}

impl HedgeBuilder {
    /// Hedge after a fixed delay.
    #[must_use]
    pub fn fixed_delay(mut self, delay: Duration) -> Self {
        self.delay = HedgeDelay::Fixed(delay);
        self
    }

    /// Hedge after `percentile` of recent success latencies, once `min_samples` were seen.
    #[must_use]
    pub fn percentile(mut self, percentile: f64, min_samples: usize) -> Self {
        self.delay = HedgeDelay::Percentile {
            percentile,
            min_samples,
        };
        self
    }

    /// A budget of its own (see [`RetryBudget::new`]); each request deposits into it.
    #[must_use]
    pub fn budget(mut self, ttl: Duration, min_per_sec: f64, ratio: f64) -> Self {
        self.budget = Err((ttl, min_per_sec, ratio));
        self.unlimited = false;
        self
    }

    /// Draw from a budget shared with a retry layer, which makes the deposits (the hedge
    /// layer does not deposit into it, so requests are not counted twice).
    #[must_use]
    pub fn shared_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Ok(budget);
        self.unlimited = false;
        self
    }

    /// No budget: every slow request is hedged.
    #[must_use]
    pub fn unlimited_budget(mut self) -> Self {
        self.unlimited = true;
        self
    }

    /// No hedge at or above this level.
    #[must_use]
    pub fn suppress_at(mut self, level: LoadLevel) -> Self {
        self.suppress_at = level;
        self
    }

    /// The load signal read before each hedge.
    #[must_use]
    pub fn signal(mut self, signal: LoadSignal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `delay.percentile` (outside `(0, 1]`),
    /// `delay.min_samples` (0 or above 256) or a `budget.*` field.
    pub fn build(self) -> Result<HedgeConfig, ConfigError> {
        if let HedgeDelay::Percentile {
            percentile,
            min_samples,
        } = self.delay
        {
            check::fraction("delay.percentile", percentile)?;
            check::at_least("delay.min_samples", min_samples, 1)?;
            if min_samples > SAMPLES {
                return Err(ConfigError::new(
                    "delay.min_samples",
                    format!("must be at most {SAMPLES} (got {min_samples})"),
                ));
            }
        }
        let (budget, deposit) = match (self.unlimited, self.budget) {
            (true, _) => (None, false),
            (false, Ok(shared)) => (Some(shared), false),
            (false, Err((ttl, min, ratio))) => (Some(RetryBudget::new(ttl, min, ratio)?), true),
        };
        Ok(HedgeConfig {
            delay: self.delay,
            budget,
            deposit,
            suppress_at: self.suppress_at,
            signal: self.signal.unwrap_or_default(),
        })
    }
}
