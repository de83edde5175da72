//! Configuration of the [`LoadShed`](crate::LoadShed) layer.

use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, LevelTable, LoadLevel, Policy, PrioritySet};

/// The default `retry_after` hint carried by every rejection: one second.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The default seed of the smooth-mode decision generator.
const DEFAULT_SEED: u64 = 0x5EED_F0B0_0C0D_E5E5;

/// A validated configuration of the [`LoadShed`](crate::LoadShed) layer.
///
/// `LoadShedConfig::default()` sheds by the design's default table
/// ([`LevelTable::default_shed`]), hints `retry_after` = 1 s, sheds the boundary class all at
/// once (no smooth mode) and never looks at the inner service's readiness.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::{LevelTable, LoadLevel, Priority, PrioritySet};
/// use brownout_shed::LoadShedConfig;
///
/// let config = LoadShedConfig::builder()
///     .shed_table(LevelTable::default_shed().with(LoadLevel::Elevated, PrioritySet::at_or_below(Priority::Low)))
///     .retry_after(Duration::from_secs(2))
///     .smooth(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// assert_eq!(config.retry_after(), Duration::from_secs(2));
///
/// // A level that stops shedding what the level below sheds is refused, naming the entry.
/// let err = LoadShedConfig::builder()
///     .shed_table(LevelTable::default_shed().with(LoadLevel::High, PrioritySet::EMPTY))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "shed[high]");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadShedConfig {
    pub(crate) shed: LevelTable<PrioritySet>,
    pub(crate) retry_after: Duration,
    pub(crate) smooth: Option<Duration>,
    pub(crate) shed_when_not_ready: bool,
    pub(crate) seed: u64,
}

impl Default for LoadShedConfig {
    fn default() -> Self {
        LoadShedConfig {
            shed: LevelTable::default_shed(),
            retry_after: DEFAULT_RETRY_AFTER,
            smooth: None,
            shed_when_not_ready: false,
            seed: DEFAULT_SEED,
        }
    }
}

impl LoadShedConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> LoadShedBuilder {
        LoadShedBuilder {
            config: LoadShedConfig::default(),
        }
    }

    /// The classes shed at each level.
    pub fn shed_table(&self) -> &LevelTable<PrioritySet> {
        &self.shed
    }

    /// The classes shed at `level`.
    pub fn shed_at(&self, level: LoadLevel) -> PrioritySet {
        self.shed[level]
    }

    /// The `retry_after` hint carried by rejections.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The ramp of smooth mode, if enabled.
    pub fn smooth_ramp(&self) -> Option<Duration> {
        self.smooth
    }

    /// Whether requests are also shed when the inner service is not ready.
    pub fn sheds_when_not_ready(&self) -> bool {
        self.shed_when_not_ready
    }

    /// Checks every rule; see [`LoadShedBuilder::build`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.shed.validate_shed("shed")?;
        for (level, set) in self.shed.iter() {
            if *set == PrioritySet::ALL {
                return Err(ConfigError::new(
                    format!("shed[{level}]"),
                    "must leave at least one class served (shedding every class is an outage; \
                     stop serving with the shutdown layer instead)",
                ));
            }
        }
        check::non_zero("retry_after", self.retry_after)?;
        if let Some(ramp) = self.smooth {
            check::non_zero("smooth_ramp", ramp)?;
        }
        Ok(())
    }
}

/// Builds a [`LoadShedConfig`]; [`build`](LoadShedBuilder::build) validates it.
#[derive(Debug, Clone)]
pub struct LoadShedBuilder {
    config: LoadShedConfig,
}

impl LoadShedBuilder {
    /// The classes shed at each level (default: [`LevelTable::default_shed`]).
    #[must_use]
    pub fn shed_table(mut self, table: LevelTable<PrioritySet>) -> Self {
        self.config.shed = table;
        self
    }

    /// Takes the shed table of a whole [`Policy`] (the other tables are not used here).
    #[must_use]
    pub fn policy(mut self, policy: &Policy) -> Self {
        self.config.shed = policy.shed;
        self
    }

    /// The `retry_after` hint put in every rejection (default 1 s; must not be zero, which
    /// would invite clients to retry into the overload at once).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// Enables smooth mode: after the level rises, the *boundary class* (the most important
    /// class shed at the new level) is shed in a fraction that grows linearly from 0 to 1
    /// over `ramp`, instead of all at once. Classes below the boundary are shed at once;
    /// classes above it are never shed. See the crate docs for the exact rule.
    #[must_use]
    pub fn smooth(mut self, ramp: Duration) -> Self {
        self.config.smooth = Some(ramp);
        self
    }

    /// Disables smooth mode (the default).
    #[must_use]
    pub fn no_smooth(mut self) -> Self {
        self.config.smooth = None;
        self
    }

    /// Also sheds when the inner service is not ready, like `tower::load_shed::LoadShed`:
    /// `poll_ready` polls the inner service, records whether it was ready and always
    /// returns ready; `call` sheds if it was not.
    #[must_use]
    pub fn shed_when_not_ready(mut self, enabled: bool) -> Self {
        self.config.shed_when_not_ready = enabled;
        self
    }

    /// Seeds the per-request generator of smooth mode (each service clone derives its own
    /// stream from it), for reproducible runs.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when:
    /// - a level of the shed table does not shed every class the level below sheds
    ///   (`shed[high]`), or sheds every class (`shed[emergency]`);
    /// - `retry_after` is zero;
    /// - the smooth ramp is zero (`smooth_ramp`).
    pub fn build(self) -> Result<LoadShedConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}
