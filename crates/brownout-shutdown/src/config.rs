//! Configuration of a [`Shutdown`](crate::Shutdown): drain deadline, readiness delay,
//! `Retry-After` hint.

use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, LoadSignal};

use crate::Shutdown;

/// The validated settings of a [`Shutdown`].
///
/// Build one with [`Shutdown::builder`]; [`ShutdownConfig::default`] holds the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    pub(crate) drain_timeout: Duration,
    pub(crate) readiness_delay: Duration,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) abort_grace: Duration,
}

impl ShutdownConfig {
    /// Default drain deadline: 20 s, so that with a 5 s readiness delay and a few seconds of
    /// hooks the whole shutdown fits Kubernetes' default 30 s `terminationGracePeriodSeconds`.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
    /// Default `Retry-After` hint on refusals: 1 s.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
    /// Default time given to aborted requests to resolve after the drain deadline: 1 s.
    pub const DEFAULT_ABORT_GRACE: Duration = Duration::from_secs(1);

    /// How long in-flight requests may keep running once new requests are refused.
    /// `Duration::MAX` means no deadline.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Time between readiness turning false and new requests being refused.
    pub fn readiness_delay(&self) -> Duration {
        self.readiness_delay
    }

    /// The `Retry-After` hint put on refusals, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// How long, after the drain deadline, aborted requests get to resolve before the
    /// report counts them as unfinished.
    pub fn abort_grace(&self) -> Duration {
        self.abort_grace
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            readiness_delay: Duration::ZERO,
            retry_after: Some(Self::DEFAULT_RETRY_AFTER),
            abort_grace: Self::DEFAULT_ABORT_GRACE,
        }
    }
}

/// Builds a [`Shutdown`] handle.
///
/// ```
/// use std::time::Duration;
/// use brownout_shutdown::Shutdown;
///
/// let shutdown = Shutdown::builder()
///     .readiness_delay(Duration::from_secs(5))
///     .drain_timeout(Duration::from_secs(20))
///     .retry_after(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// assert_eq!(shutdown.config().drain_timeout(), Duration::from_secs(20));
///
/// let err = Shutdown::builder().drain_timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "drain_timeout");
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ShutdownBuilder {
    config: ShutdownConfig,
    signal: Option<LoadSignal>,
}

impl ShutdownBuilder {
    /// A builder with the defaults of [`ShutdownConfig::default`].
    pub fn new() -> ShutdownBuilder {
        ShutdownBuilder::default()
    }

    /// How long in-flight requests may keep running once new requests are refused
    /// (default 20 s). At the deadline the remaining ones are aborted.
    ///
    /// Must be longer than zero; `Duration::MAX` waits for them without a deadline.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// Time between readiness turning false and new requests being refused (default 0),
    /// so that load balancers polling the health endpoint stop sending first.
    /// Requests that arrive meanwhile are served and drained like any other.
    ///
    /// Must be shorter than `Duration::MAX`.
    pub fn readiness_delay(mut self, delay: Duration) -> Self {
        self.config.readiness_delay = delay;
        self
    }

    /// The `Retry-After` hint put on refusals (default 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = Some(retry_after);
        self
    }

    /// Puts no `Retry-After` hint on refusals.
    pub fn no_retry_after(mut self) -> Self {
        self.config.retry_after = None;
        self
    }

    /// How long, after the drain deadline, aborted requests get to resolve (their tasks
    /// must poll them once) before the report counts them as unfinished (default 1 s).
    pub fn abort_grace(mut self, grace: Duration) -> Self {
        self.config.abort_grace = grace;
        self
    }

    /// The load signal whose level is reported in rejections
    /// (default: fixed at `Normal`).
    pub fn load_signal(mut self, signal: LoadSignal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Validates the settings and builds the handle.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `drain_timeout` is zero or
    /// `readiness_delay` is `Duration::MAX`.
    pub fn build(self) -> Result<Shutdown, ConfigError> {
        let config = self.validate()?;
        Ok(Shutdown::from_parts(
            config,
            self.signal.unwrap_or_default(),
        ))
    }

    /// Validates the settings without building a handle.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn validate(&self) -> Result<ShutdownConfig, ConfigError> {
        check::non_zero("drain_timeout", self.config.drain_timeout).map_err(|_| {
            ConfigError::new(
                "drain_timeout",
                "must be longer than zero (use Duration::MAX for no deadline)",
            )
        })?;
        if self.config.readiness_delay == Duration::MAX {
            return Err(ConfigError::new(
                "readiness_delay",
                "must be shorter than Duration::MAX (new requests would never be refused)",
            ));
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rel_10_zero_drain_timeout_refused_naming_the_field() {
        let err = ShutdownBuilder::new()
            .drain_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "drain_timeout");
        assert!(err.to_string().contains("longer than zero"), "{err}");
    }

    #[test]
    fn rel_10_unbounded_readiness_delay_refused_naming_the_field() {
        let err = ShutdownBuilder::new()
            .readiness_delay(Duration::MAX)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "readiness_delay");
    }

    #[test]
    fn rel_17_unbounded_drain_timeout_accepted() {
        let config = ShutdownBuilder::new()
            .drain_timeout(Duration::MAX)
            .no_retry_after()
            .abort_grace(Duration::ZERO)
            .validate()
            .unwrap();
        assert_eq!(config.drain_timeout(), Duration::MAX);
        assert_eq!(config.retry_after(), None);
        assert_eq!(config.abort_grace(), Duration::ZERO);
    }

    #[test]
    fn defaults() {
        let config = ShutdownBuilder::new().validate().unwrap();
        assert_eq!(config, ShutdownConfig::default());
        assert_eq!(config.drain_timeout(), Duration::from_secs(20));
        assert_eq!(config.readiness_delay(), Duration::ZERO);
        assert_eq!(config.retry_after(), Some(Duration::from_secs(1)));
    }

    proptest! {
        #[test]
        fn validation_accepts_exactly_the_documented_values(
            drain_ns in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
            drain_max in any::<bool>(),
            delay_ns in any::<u64>(),
            delay_max in any::<bool>(),
            grace_ns in any::<u64>(),
        ) {
            let drain = if drain_max { Duration::MAX } else { Duration::from_nanos(drain_ns) };
            let delay = if delay_max { Duration::MAX } else { Duration::from_nanos(delay_ns) };
            let result = ShutdownBuilder::new()
                .drain_timeout(drain)
                .readiness_delay(delay)
                .abort_grace(Duration::from_nanos(grace_ns))
                .validate();
            let valid = !drain.is_zero() && delay != Duration::MAX;
            prop_assert_eq!(result.is_ok(), valid);
            if let Ok(config) = result {
                prop_assert_eq!(config.drain_timeout(), drain);
                prop_assert_eq!(config.readiness_delay(), delay);
            }
        }
    }
}
