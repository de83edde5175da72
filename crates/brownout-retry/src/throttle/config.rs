//! [`AdaptiveThrottleConfig`] and its builder.

use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, Policy};

/// A validated throttle configuration. `AdaptiveThrottleConfig::default()` is K = 2 over a
/// two-minute window of twelve 10 s buckets, server levels remembered for 10 s, the default
/// [`Policy`] shed table, a seed from the OS.
#[derive(Debug, Clone)]
pub struct AdaptiveThrottleConfig {
    pub(crate) k: f64,
    pub(crate) window: Duration,
    pub(crate) buckets: usize,
    pub(crate) level_ttl: Duration,
    pub(crate) policy: Policy,
    pub(crate) seed: u64,
}

impl AdaptiveThrottleConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> AdaptiveThrottleBuilder {
        AdaptiveThrottleBuilder::default()
    }

    /// The multiplier K of accepts.
    pub fn k(&self) -> f64 {
        self.k
    }

    /// The sliding window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long a level reported by the server is remembered.
    pub fn level_ttl(&self) -> Duration {
        self.level_ttl
    }
}

impl Default for AdaptiveThrottleConfig {
    fn default() -> Self {
        AdaptiveThrottleBuilder::default()
            .build()
            .unwrap_or_else(|e| unreachable!("the default throttle configuration is valid: {e}"))
    }
}

/// Builds an [`AdaptiveThrottleConfig`].
///
/// ```
/// use std::time::Duration;
/// use brownout_retry::throttle::AdaptiveThrottleConfig;
///
/// let config = AdaptiveThrottleConfig::builder().k(1.5).window(Duration::from_secs(60), 6).seed(3).build().unwrap();
/// assert_eq!(config.k(), 1.5);
/// assert_eq!(AdaptiveThrottleConfig::builder().k(0.5).build().unwrap_err().field(), "k");
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveThrottleBuilder {
    k: f64,
    window: Duration,
    buckets: usize,
    level_ttl: Duration,
    policy: Policy,
    seed: Option<u64>,
}

impl Default for AdaptiveThrottleBuilder {
    fn default() -> Self {
        AdaptiveThrottleBuilder {
            k: 2.0,
            window: Duration::from_secs(120),
            buckets: 12,
            level_ttl: Duration::from_secs(10),
            policy: Policy::default(),
            seed: None,
        }
    }
}

impl AdaptiveThrottleBuilder {
    /// K: how many requests per accept are sent before local rejection starts (≥ 1; 2 is
    /// the SRE book's default, 1.1 aggressive).
    #[must_use]
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// The sliding window (≥ 1 s) and its number of buckets (1 to 1000).
    #[must_use]
    pub fn window(mut self, window: Duration, buckets: usize) -> Self {
        self.window = window;
        self.buckets = buckets;
        self
    }

    /// How long a server-reported level (`x-load-level`) is remembered (zero: ignored).
    #[must_use]
    pub fn level_ttl(mut self, ttl: Duration) -> Self {
        self.level_ttl = ttl;
        self
    }

    /// The shed table used with server-reported levels.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Seeds the local rejection draws.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `k` (below 1, NaN, infinite), `window` (under 1 s),
    /// `buckets` (0 or above 1000) or `policy.*`.
    pub fn build(self) -> Result<AdaptiveThrottleConfig, ConfigError> {
        check::at_least_f64("k", self.k, 1.0)?;
        if self.window < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "window",
                format!("must be at least 1s (got {:?})", self.window),
            ));
        }
        check::at_least("buckets", self.buckets, 1)?;
        if self.buckets > 1000 {
            return Err(ConfigError::new(
                "buckets",
                format!("must be at most 1000 (got {})", self.buckets),
            ));
        }
        self.policy.validate().map_err(|e| e.within("policy"))?;
        Ok(AdaptiveThrottleConfig {
            k: self.k,
            window: self.window,
            buckets: self.buckets,
            level_ttl: self.level_ttl,
            policy: self.policy,
            seed: self.seed.unwrap_or_else(crate::config::os_seed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rel_10_throttle_config_refused_naming_the_field(
            k in prop_oneof![-1.0f64..5.0, Just(f64::NAN), Just(f64::INFINITY)],
            window_ms in 0u64..5000,
            buckets in 0usize..1500,
        ) {
            let r = AdaptiveThrottleConfig::builder()
                .k(k)
                .window(Duration::from_millis(window_ms), buckets)
                .build();
            let expected = if !(k.is_finite() && k >= 1.0) {
                Some("k")
            } else if window_ms < 1000 {
                Some("window")
            } else if buckets == 0 || buckets > 1000 {
                Some("buckets")
            } else {
                None
            };
            match (r, expected) {
                (Ok(_), None) => {}
                (Err(e), Some(f)) => prop_assert_eq!(e.field(), f),
                (r, e) => prop_assert!(false, "{:?} vs {:?}", r.map(|_| ()), e),
            }
        }
    }
}
