//! Breaker configuration: thresholds, window, open duration, half-open probes, key map bounds.

use std::time::Duration;

use brownout_core::ConfigError;
use brownout_core::config::check;

/// The window over which failure and slow-call rates are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` recorded outcomes (a ring).
    Count(u32),
    /// The outcomes of the last `duration`, kept in about one-second buckets; the bucket that
    /// ages out is subtracted, so a snapshot costs O(1).
    Time(Duration),
}

impl Default for Window {
    /// The last 100 calls.
    fn default() -> Self {
        Window::Count(100)
    }
}

/// A validated breaker configuration. Build one with [`CircuitBreakConfig::builder`];
/// [`Default`] gives the documented defaults.
///
/// ```
/// use std::time::Duration;
/// use brownout_breaker::{CircuitBreakConfig, Window};
///
/// let config = CircuitBreakConfig::builder()
///     .failure_rate(0.5)
///     .slow_call_rate(0.8)
///     .slow_call_duration(Duration::from_secs(2))
///     .window(Window::Time(Duration::from_secs(10)))
///     .minimum_calls(20)
///     .open_duration(Duration::from_secs(5))
///     .open_growth(2.0, Duration::from_secs(60))
///     .half_open_probes(3)
///     .success_threshold(2)
///     .build()
///     .unwrap();
/// assert_eq!(config.half_open_probes(), 3);
///
/// let err = CircuitBreakConfig::builder().failure_rate(1.5).build().unwrap_err();
/// assert_eq!(err.field(), "failure_rate");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakConfig {
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Duration,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) open_duration: Duration,
    pub(crate) open_growth: f64,
    pub(crate) max_open_duration: Duration,
    pub(crate) half_open_probes: u32,
    pub(crate) success_threshold: u32,
    pub(crate) probe_timeout: Duration,
    pub(crate) max_keys: usize,
    pub(crate) idle_timeout: Duration,
}

impl Default for CircuitBreakConfig {
    /// Failure rate 50 % over the last 100 calls once 10 were seen, no slow-call rate, no
    /// consecutive-failure threshold, open 10 s (no growth, cap 5 min), 3 probes that must
    /// all succeed, probe timeout 10 s, at most 1024 keys forgotten after 10 min idle.
    fn default() -> Self {
        CircuitBreakConfig {
            failure_rate: Some(0.5),
            slow_call_rate: None,
            slow_call_duration: Duration::from_secs(60),
            consecutive_failures: None,
            window: Window::Count(100),
            minimum_calls: 10,
            open_duration: Duration::from_secs(10),
            open_growth: 1.0,
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 3,
            success_threshold: 3,
            probe_timeout: Duration::from_secs(10),
            max_keys: 1024,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl CircuitBreakConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CircuitBreakBuilder {
        CircuitBreakBuilder {
            config: CircuitBreakConfig::default(),
        }
    }

    /// The failure-rate threshold, if any.
    pub fn failure_rate(&self) -> Option<f64> {
        self.failure_rate
    }
    /// The slow-call-rate threshold, if any.
    pub fn slow_call_rate(&self) -> Option<f64> {
        self.slow_call_rate
    }
    /// Calls at least this long count as slow.
    pub fn slow_call_duration(&self) -> Duration {
        self.slow_call_duration
    }
    /// The consecutive-failure threshold, if any.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }
    /// The rate window.
    pub fn window(&self) -> Window {
        self.window
    }
    /// Calls needed in the window before rates count.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }
    /// The open duration of the first trip.
    pub fn open_duration(&self) -> Duration {
        self.open_duration
    }
    /// The factor applied to the open duration on each repeated trip.
    pub fn open_growth(&self) -> f64 {
        self.open_growth
    }
    /// The cap of a grown open duration.
    pub fn max_open_duration(&self) -> Duration {
        self.max_open_duration
    }
    /// Requests let through in half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }
    /// Successful probes needed to close.
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold
    }
    /// How long a probe may run (or stay unanswered) before it counts as a failure.
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }
    /// The most per-key breakers kept.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
    /// Per-key breakers unused this long are forgotten.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The open duration after `trips` consecutive trips (1 = first trip):
    /// `open_duration × open_growth^(trips − 1)`, capped at `max_open_duration` (never below
    /// `open_duration`), saturating, never zero.
    pub fn open_duration_for(&self, trips: u32) -> Duration {
        let exponent = trips.saturating_sub(1).min(i32::MAX as u32) as i32;
        let factor = self.open_growth.powi(exponent);
        let grown = brownout_core::config::duration::mul_f64_saturating(self.open_duration, factor);
        grown
            .min(self.max_open_duration.max(self.open_duration))
            .max(self.open_duration)
    }
}

/// Builds a [`CircuitBreakConfig`]; [`build`](CircuitBreakBuilder::build) validates it.
#[derive(Debug, Clone)]
pub struct CircuitBreakBuilder {
    config: CircuitBreakConfig,
}

impl CircuitBreakBuilder {
    /// Trips when the failure rate in the window reaches `rate` (in `(0, 1]`).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }
    /// Never trips on the failure rate (other thresholds still apply).
    pub fn no_failure_rate(mut self) -> Self {
        self.config.failure_rate = None;
        self
    }
    /// Trips when the share of calls lasting at least
    /// [`slow_call_duration`](Self::slow_call_duration) reaches `rate` (in `(0, 1]`).
    pub fn slow_call_rate(mut self, rate: f64) -> Self {
        self.config.slow_call_rate = Some(rate);
        self
    }
    /// Calls lasting at least `duration` count as slow (non-zero).
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration = duration;
        self
    }
    /// Trips after `n` failures in a row (at least 1), whatever the window says.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }
    /// The rate window (`Count(n)` with n ≥ 1, or `Time(d)` with d non-zero).
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }
    /// Rates only count once the window holds `n` calls (at least 1; capped at the size of
    /// a count window, so a ring smaller than `n` can still trip).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }
    /// How long the breaker stays open after the first trip (non-zero).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = duration;
        self
    }
    /// Multiplies the open duration by `factor` (finite, ≥ 1) on each repeated trip without
    /// closing in between, up to `max` (non-zero).
    pub fn open_growth(mut self, factor: f64, max: Duration) -> Self {
        self.config.open_growth = factor;
        self.config.max_open_duration = max;
        self
    }
    /// Exactly `n` requests (at least 1) are let through in half-open; the rest fail fast.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.config.half_open_probes = n;
        self
    }
    /// Successful probes needed to close (1 ≤ n ≤ `half_open_probes`).
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.config.success_threshold = n;
        self
    }
    /// A probe running (or left unpolled) this long counts as a failure and gives its slot
    /// back (non-zero).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.config.probe_timeout = timeout;
        self
    }
    /// The most per-key breakers kept (at least 1); the least recently used is evicted.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.config.max_keys = n;
        self
    }
    /// Per-key breakers unused this long are forgotten (non-zero).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that breaks its rule: rates in `(0, 1]`,
    /// window size ≥ 1, `minimum_calls` ≥ 1, durations non-zero, `open_growth` finite and
    /// ≥ 1, `half_open_probes` ≥ 1, `success_threshold` between 1 and `half_open_probes`,
    /// `consecutive_failures` ≥ 1, `max_keys` ≥ 1, and at least one trip condition.
    pub fn build(self) -> Result<CircuitBreakConfig, ConfigError> {
        let c = self.config;
        if let Some(rate) = c.failure_rate {
            check::fraction("failure_rate", rate)?;
        }
        if let Some(rate) = c.slow_call_rate {
            check::fraction("slow_call_rate", rate)?;
        }
        check::non_zero("slow_call_duration", c.slow_call_duration)?;
        if let Some(n) = c.consecutive_failures {
            check::at_least("consecutive_failures", n as usize, 1)?;
        }
        if c.failure_rate.is_none()
            && c.slow_call_rate.is_none()
            && c.consecutive_failures.is_none()
        {
            return Err(ConfigError::new(
                "failure_rate",
                "must be set when neither `slow_call_rate` nor `consecutive_failures` is",
            ));
        }
        match c.window {
            Window::Count(n) => {
                check::at_least("window", n as usize, 1)?;
            }
            Window::Time(d) => {
                check::non_zero("window", d)?;
            }
        }
        check::at_least("minimum_calls", c.minimum_calls as usize, 1)?;
        check::non_zero("open_duration", c.open_duration)?;
        check::at_least_f64("open_growth", c.open_growth, 1.0)?;
        check::non_zero("max_open_duration", c.max_open_duration)?;
        check::at_least("half_open_probes", c.half_open_probes as usize, 1)?;
        check::at_least("success_threshold", c.success_threshold as usize, 1)?;
        check::ordered(
            "success_threshold",
            c.success_threshold,
            "half_open_probes",
            c.half_open_probes,
        )?;
        check::non_zero("probe_timeout", c.probe_timeout)?;
        check::at_least("max_keys", c.max_keys, 1)?;
        check::non_zero("idle_timeout", c.idle_timeout)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_valid() {
        let built = CircuitBreakConfig::builder().build().unwrap();
        assert_eq!(built, CircuitBreakConfig::default());
    }

    #[test]
    fn each_rule_names_its_field() {
        let b = CircuitBreakConfig::builder;
        let cases: Vec<(CircuitBreakBuilder, &str)> = vec![
            (b().failure_rate(0.0), "failure_rate"),
            (b().failure_rate(f64::NAN), "failure_rate"),
            (b().slow_call_rate(1.01), "slow_call_rate"),
            (b().slow_call_duration(Duration::ZERO), "slow_call_duration"),
            (b().consecutive_failures(0), "consecutive_failures"),
            (b().no_failure_rate(), "failure_rate"),
            (b().window(Window::Count(0)), "window"),
            (b().window(Window::Time(Duration::ZERO)), "window"),
            (b().minimum_calls(0), "minimum_calls"),
            (b().open_duration(Duration::ZERO), "open_duration"),
            (b().open_growth(0.5, Duration::from_secs(1)), "open_growth"),
            (
                b().open_growth(f64::INFINITY, Duration::from_secs(1)),
                "open_growth",
            ),
            (b().open_growth(2.0, Duration::ZERO), "max_open_duration"),
            (b().half_open_probes(0), "half_open_probes"),
            (b().success_threshold(0), "success_threshold"),
            (
                b().half_open_probes(2).success_threshold(3),
                "success_threshold",
            ),
            (b().probe_timeout(Duration::ZERO), "probe_timeout"),
            (b().max_keys(0), "max_keys"),
            (b().idle_timeout(Duration::ZERO), "idle_timeout"),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn open_duration_grows_and_is_capped() {
        let c = CircuitBreakConfig::builder()
            .open_duration(Duration::from_secs(1))
            .open_growth(2.0, Duration::from_secs(10))
            .build()
            .unwrap();
        let secs: Vec<u64> = (1..=6).map(|t| c.open_duration_for(t).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
        assert_eq!(c.open_duration_for(0), Duration::from_secs(1));
        assert_eq!(c.open_duration_for(u32::MAX), Duration::from_secs(10));
    }

    proptest! {
        #[test]
        fn rates_accepted_exactly_in_unit_interval(rate in proptest::num::f64::ANY) {
            let ok = CircuitBreakConfig::builder().failure_rate(rate).build().is_ok();
            prop_assert_eq!(ok, rate > 0.0 && rate <= 1.0);
            let ok = CircuitBreakConfig::builder().slow_call_rate(rate).build().is_ok();
            prop_assert_eq!(ok, rate > 0.0 && rate <= 1.0);
        }

        #[test]
        fn growth_accepted_when_finite_and_at_least_one(factor in proptest::num::f64::ANY) {
            let r = CircuitBreakConfig::builder().open_growth(factor, Duration::from_secs(60)).build();
            prop_assert_eq!(r.is_ok(), factor.is_finite() && factor >= 1.0);
        }

        #[test]
        fn probes_and_success_threshold(probes in 0u32..8, success in 0u32..8) {
            let r = CircuitBreakConfig::builder().half_open_probes(probes).success_threshold(success).build();
            prop_assert_eq!(r.is_ok(), probes >= 1 && success >= 1 && success <= probes);
        }

        #[test]
        fn open_duration_never_zero_never_above_cap(
            base_ms in 1u64..10_000, factor in 1.0f64..100.0, cap_ms in 1u64..1_000_000, trips in 0u32..2000
        ) {
            let c = CircuitBreakConfig::builder()
                .open_duration(Duration::from_millis(base_ms))
                .open_growth(factor, Duration::from_millis(cap_ms))
                .build()
                .unwrap();
            let d = c.open_duration_for(trips);
            prop_assert!(d >= Duration::from_millis(base_ms));
            prop_assert!(d <= Duration::from_millis(cap_ms.max(base_ms)));
            prop_assert!(c.open_duration_for(trips.saturating_add(1)) >= d);
        }
    }
}
