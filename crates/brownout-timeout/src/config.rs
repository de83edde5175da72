//! Configuration of the [`AdaptiveTimeout`](crate::AdaptiveTimeout) layer.

use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, LevelTable, Policy};

/// A validated configuration of the [`AdaptiveTimeout`](crate::AdaptiveTimeout) layer.
///
/// The timeout at level `L` is
/// `clamp(multiplier × p(percentile), min, max) × timeout_scale[L]`, where `p` is the
/// chosen percentile of the latencies observed over the last completed window, and
/// `initial` replaces the clamped estimate until a window holds `min_samples` samples.
///
/// | field | default | rule |
/// |---|---|---|
/// | `initial` | 1 s | within `[min, max]` |
/// | `min` | 1 ms | above zero, at most `max` |
/// | `max` | 30 s | `Duration::MAX` means "no upper bound" |
/// | `percentile` | 0.99 | in `(0, 1]` |
/// | `multiplier` | 2.0 | finite, at least 1 |
/// | `min_samples` | 50 | at least 1 |
/// | `window` | 1 s | above zero |
/// | `max_sample_every` | 64 | at least 1 |
/// | `timeout_scale` | 1.0 / 0.75 / 0.5 / 0.33 / 0.17 | each in `(0, 1]`, never growing with the level |
///
/// Why `multiplier ≥ 1`: below 1 the timeout is shorter than the percentile it is derived
/// from, so it kills more than `1 − percentile` of healthy requests by construction; and
/// since the estimate only sees what finishes, each window's percentile would be at most
/// the previous timeout × multiplier, ratcheting the timeout down to `min`.
///
/// ```
/// use std::time::Duration;
/// use brownout_timeout::AdaptiveTimeoutConfig;
///
/// let config = AdaptiveTimeoutConfig::builder()
///     .percentile(0.95)
///     .multiplier(3.0)
///     .min(Duration::from_millis(5))
///     .max(Duration::from_secs(2))
///     .initial(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// assert_eq!(config.percentile(), 0.95);
///
/// let err = AdaptiveTimeoutConfig::builder()
///     .min(Duration::from_secs(3))
///     .max(Duration::from_secs(2))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "min");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveTimeoutConfig {
    pub(crate) initial: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) percentile: f64,
    pub(crate) multiplier: f64,
    pub(crate) min_samples: usize,
    pub(crate) window: Duration,
    pub(crate) max_sample_every: u32,
    pub(crate) timeout_scale: LevelTable<f64>,
}

impl Default for AdaptiveTimeoutConfig {
    fn default() -> Self {
        AdaptiveTimeoutConfig {
            initial: Duration::from_secs(1),
            min: Duration::from_millis(1),
            max: Duration::from_secs(30),
            percentile: 0.99,
            multiplier: 2.0,
            min_samples: 50,
            window: Duration::from_secs(1),
            max_sample_every: 64,
            timeout_scale: LevelTable::default_timeout_scale(),
        }
    }
}

impl AdaptiveTimeoutConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> AdaptiveTimeoutBuilder {
        AdaptiveTimeoutBuilder {
            config: AdaptiveTimeoutConfig::default(),
        }
    }

    /// The timeout used until enough samples are seen.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The lower bound of the adaptive estimate.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The upper bound of the adaptive estimate.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The latency percentile the estimate follows.
    pub fn percentile(&self) -> f64 {
        self.percentile
    }

    /// The factor applied to the percentile.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The samples a window needs before its percentile replaces the estimate.
    pub fn min_samples(&self) -> usize {
        self.min_samples
    }

    /// The length of one estimation window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The most requests per latency sample under load.
    pub fn max_sample_every(&self) -> u32 {
        self.max_sample_every
    }

    /// The factor applied to the timeout at each level.
    pub fn timeout_scale(&self) -> &LevelTable<f64> {
        &self.timeout_scale
    }

    /// Checks every rule; see [`AdaptiveTimeoutBuilder::build`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::non_zero("min", self.min)?;
        check::ordered("min", self.min, "max", self.max)?;
        if self.initial < self.min || self.initial > self.max {
            return Err(ConfigError::new(
                "initial",
                format!(
                    "must be within [min, max] (got {:?}, bounds {:?}..={:?})",
                    self.initial, self.min, self.max
                ),
            ));
        }
        check::fraction("percentile", self.percentile)?;
        check::at_least_f64("multiplier", self.multiplier, 1.0)?;
        check::at_least("min_samples", self.min_samples, 1)?;
        check::non_zero("window", self.window)?;
        check::at_least("max_sample_every", self.max_sample_every as usize, 1)?;
        self.timeout_scale.validate_fraction("timeout_scale")
    }
}

/// Builds an [`AdaptiveTimeoutConfig`]; [`build`](AdaptiveTimeoutBuilder::build) validates it.
#[derive(Debug, Clone)]
pub struct AdaptiveTimeoutBuilder {
    config: AdaptiveTimeoutConfig,
}

impl AdaptiveTimeoutBuilder {
    /// The timeout used until a window holds `min_samples` samples (default 1 s).
    #[must_use]
    pub fn initial(mut self, initial: Duration) -> Self {
        self.config.initial = initial;
        self
    }

    /// The lower bound of the adaptive estimate (default 1 ms).
    #[must_use]
    pub fn min(mut self, min: Duration) -> Self {
        self.config.min = min;
        self
    }

    /// The upper bound of the adaptive estimate (default 30 s; `Duration::MAX` for none).
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.config.max = max;
        self
    }

    /// The latency percentile to follow, in `(0, 1]` (default 0.99).
    #[must_use]
    pub fn percentile(mut self, percentile: f64) -> Self {
        self.config.percentile = percentile;
        self
    }

    /// The factor applied to the percentile, at least 1 (default 2.0).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.config.multiplier = multiplier;
        self
    }

    /// The samples a window needs before its percentile is used (default 50). A window
    /// with fewer keeps accumulating into the next one.
    #[must_use]
    pub fn min_samples(mut self, min_samples: usize) -> Self {
        self.config.min_samples = min_samples;
        self
    }

    /// The length of one estimation window (default 1 s): the estimate is recomputed at
    /// most once per window.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// Bounds adaptive sampling (default 64): at most one request in `n` is timed as a
    /// latency sample. `1` times every request.
    ///
    /// Reading the clock a second time at completion and recording the sample is most of
    /// this layer's own cost, so the layer times only as many requests as it needs: at each
    /// window's close the rate becomes `requests in the window / (4 × min_samples)`,
    /// clamped to `[1, n]` (halved when the window had fewer than `min_samples`). A quiet
    /// service times every request; a busy one pays the second clock read on one request
    /// in up to `n`, which brings the per-request cost to that of `tower::timeout`.
    #[must_use]
    pub fn max_sample_every(mut self, n: u32) -> Self {
        self.config.max_sample_every = n;
        self
    }

    /// The factor applied to the timeout at each level (default
    /// [`LevelTable::default_timeout_scale`]).
    #[must_use]
    pub fn timeout_scale(mut self, scale: LevelTable<f64>) -> Self {
        self.config.timeout_scale = scale;
        self
    }

    /// Takes the timeout-scale table of a whole [`Policy`].
    #[must_use]
    pub fn policy(mut self, policy: &Policy) -> Self {
        self.config.timeout_scale = policy.timeout_scale;
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `min` is zero or above `max`, `initial` is
    /// outside `[min, max]`, `percentile` is outside `(0, 1]` or NaN, `multiplier` is NaN,
    /// infinite or below 1, `min_samples` or `max_sample_every` is 0, `window` is zero, or a `timeout_scale`
    /// entry is outside `(0, 1]` or grows with the level (`timeout_scale[high]`).
    pub fn build(self) -> Result<AdaptiveTimeoutConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}
