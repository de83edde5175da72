//! Per-level policy tables and the default policy of the design.

use std::fmt;
use std::ops::{Index, IndexMut};

use crate::config::{ConfigError, check};
use crate::{LoadLevel, Priority, PrioritySet};

/// One value per [`LoadLevel`], indexed by level.
///
/// ```
/// use brownout_core::{LevelTable, LoadLevel};
///
/// let rates = LevelTable::default_rate();
/// assert_eq!(rates[LoadLevel::High], 0.6);
/// let custom = LevelTable::new([1.0, 0.9, 0.5, 0.3, 0.1]);
/// custom.validate_fraction("rate").unwrap();
/// // Rates must not grow with the level: the error names the bad entry.
/// let err = LevelTable::new([1.0, 0.9, 0.95, 0.3, 0.1]).validate_fraction("rate").unwrap_err();
/// assert_eq!(err.field(), "rate[high]");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelTable<T>([T; LoadLevel::COUNT]);

impl<T> LevelTable<T> {
    /// A table from its values, Normal first.
    pub const fn new(values: [T; LoadLevel::COUNT]) -> LevelTable<T> {
        LevelTable(values)
    }

    /// A table whose entry for each level is `f(level)`.
    pub fn from_fn(mut f: impl FnMut(LoadLevel) -> T) -> LevelTable<T> {
        LevelTable(LoadLevel::ALL.map(&mut f))
    }

    /// The entry for `level`.
    #[inline]
    pub fn get(&self, level: LoadLevel) -> &T {
        &self.0[level.index()]
    }

    /// Replaces the entry for `level`.
    pub fn set(&mut self, level: LoadLevel, value: T) -> &mut Self {
        self.0[level.index()] = value;
        self
    }

    /// The table with the entry for `level` replaced.
    #[must_use]
    pub fn with(mut self, level: LoadLevel, value: T) -> Self {
        self.0[level.index()] = value;
        self
    }

    /// A table of `f` applied to every entry.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> LevelTable<U> {
        LevelTable(self.0.map(f))
    }

    /// `(level, entry)` pairs, Normal first.
    pub fn iter(&self) -> impl Iterator<Item = (LoadLevel, &T)> {
        LoadLevel::ALL.into_iter().zip(self.0.iter())
    }

    /// The entries, Normal first.
    pub fn as_array(&self) -> &[T; LoadLevel::COUNT] {
        &self.0
    }
}

impl<T> Index<LoadLevel> for LevelTable<T> {
    type Output = T;

    #[inline]
    fn index(&self, level: LoadLevel) -> &T {
        &self.0[level.index()]
    }
}

impl<T> IndexMut<LoadLevel> for LevelTable<T> {
    #[inline]
    fn index_mut(&mut self, level: LoadLevel) -> &mut T {
        &mut self.0[level.index()]
    }
}

impl<T: fmt::Debug> fmt::Debug for LevelTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(level, v)| (level.as_str(), v)))
            .finish()
    }
}

fn entry(name: &str, level: LoadLevel) -> String {
    format!("{name}[{level}]")
}

impl LevelTable<f64> {
    /// The default rate-limit scale: 100 / 80 / 60 / 40 / 20 %.
    pub const fn default_rate() -> LevelTable<f64> {
        LevelTable([1.0, 0.8, 0.6, 0.4, 0.2])
    }

    /// The default queue-size scale: 100 / 80 / 60 / 40 / 20 %.
    pub const fn default_queue() -> LevelTable<f64> {
        LevelTable([1.0, 0.8, 0.6, 0.4, 0.2])
    }

    /// The default timeout scale: 1.0 / 0.75 / 0.5 / 0.33 / 0.17.
    pub const fn default_timeout_scale() -> LevelTable<f64> {
        LevelTable([1.0, 0.75, 0.5, 0.33, 0.17])
    }

    /// Checks that every entry is in `(0, 1]` and that entries never grow with the level.
    /// Errors name the entry, e.g. `queue[critical]`.
    pub fn validate_fraction(&self, name: &str) -> Result<(), ConfigError> {
        let mut previous = f64::INFINITY;
        for (level, &value) in self.iter() {
            check::fraction(&entry(name, level), value)?;
            if value > previous {
                return Err(ConfigError::new(
                    entry(name, level),
                    format!("must not exceed the entry of the level below ({value} > {previous})"),
                ));
            }
            previous = value;
        }
        Ok(())
    }
}

impl LevelTable<PrioritySet> {
    /// The default shed sets: none; Background; Low and below; Medium and below; all but Critical.
    pub const fn default_shed() -> LevelTable<PrioritySet> {
        LevelTable([
            PrioritySet::EMPTY,
            PrioritySet::at_or_below(Priority::Background),
            PrioritySet::at_or_below(Priority::Low),
            PrioritySet::at_or_below(Priority::Medium),
            PrioritySet::below(Priority::Critical),
        ])
    }

    /// Checks that each level sheds at least what the level below sheds.
    pub fn validate_shed(&self, name: &str) -> Result<(), ConfigError> {
        let mut previous = PrioritySet::EMPTY;
        for (level, &set) in self.iter() {
            if !previous.is_subset(set) {
                return Err(ConfigError::new(
                    entry(name, level),
                    format!(
                        "must shed every class the level below sheds ({previous:?} is not within {set:?})"
                    ),
                ));
            }
            previous = set;
        }
        Ok(())
    }
}

/// How much work a handler should do at a level (brownout's "dimmer").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum WorkMode {
    /// Everything, optional features included.
    #[default]
    Full,
    /// Skip optional features, smaller result sets.
    Limited,
    /// Only the simple core of the answer.
    Simple,
    /// The cheapest answer that is still correct (cached, static or partial).
    Minimal,
}

impl WorkMode {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkMode::Full => "full",
            WorkMode::Limited => "limited",
            WorkMode::Simple => "simple",
            WorkMode::Minimal => "minimal",
        }
    }
}

impl fmt::Display for WorkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LevelTable<WorkMode> {
    /// The default handler work: full, full, limited, simple, minimal.
    pub const fn default_work() -> LevelTable<WorkMode> {
        LevelTable([
            WorkMode::Full,
            WorkMode::Full,
            WorkMode::Limited,
            WorkMode::Simple,
            WorkMode::Minimal,
        ])
    }

    /// Checks that handler work never grows with the level.
    pub fn validate_work(&self, name: &str) -> Result<(), ConfigError> {
        let mut previous = WorkMode::Full;
        for (level, &mode) in self.iter() {
            if mode < previous {
                return Err(ConfigError::new(
                    entry(name, level),
                    format!("must not do more work than the level below ({mode} after {previous})"),
                ));
            }
            previous = mode;
        }
        Ok(())
    }
}

/// The whole per-level policy: what each layer does at each level.
///
/// `Policy::default()` is the table of the design:
///
/// | level | shed | rate | queue | timeout scale | handler work |
/// |---|---|---|---|---|---|
/// | Normal | none | 100 % | 100 % | 1.0 | full |
/// | Elevated | Background | 80 % | 80 % | 0.75 | full |
/// | High | Low, Background | 60 % | 60 % | 0.5 | limited |
/// | Critical | Medium and below | 40 % | 40 % | 0.33 | simple |
/// | Emergency | all but Critical | 20 % | 20 % | 0.17 | minimal |
///
/// ```
/// use brownout_core::{LevelTable, LoadLevel, Policy, Priority};
///
/// let policy = Policy::default();
/// assert!(policy.shed[LoadLevel::High].contains(Priority::Low));
/// let stricter = Policy { rate: LevelTable::new([1.0, 0.5, 0.25, 0.1, 0.05]), ..policy };
/// stricter.validate().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The classes shed at each level.
    pub shed: LevelTable<PrioritySet>,
    /// The fraction of the configured rate limit allowed at each level.
    pub rate: LevelTable<f64>,
    /// The fraction of the configured queue capacity usable at each level.
    pub queue: LevelTable<f64>,
    /// The factor applied to timeouts at each level.
    pub timeout_scale: LevelTable<f64>,
    /// How much work handlers should do at each level.
    pub work: LevelTable<WorkMode>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            shed: LevelTable::default_shed(),
            rate: LevelTable::default_rate(),
            queue: LevelTable::default_queue(),
            timeout_scale: LevelTable::default_timeout_scale(),
            work: LevelTable::default_work(),
        }
    }
}

impl Policy {
    /// Validates every table; the error names the table and the level.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.shed.validate_shed("shed")?;
        self.rate.validate_fraction("rate")?;
        self.queue.validate_fraction("queue")?;
        self.timeout_scale.validate_fraction("timeout_scale")?;
        self.work.validate_work("work")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_matches_design() {
        let p = Policy::default();
        p.validate().unwrap();
        assert!(p.shed[LoadLevel::Normal].is_empty());
        assert_eq!(
            p.shed[LoadLevel::Elevated],
            PrioritySet::only(Priority::Background)
        );
        assert!(!p.shed[LoadLevel::Emergency].contains(Priority::Critical));
        assert_eq!(p.shed[LoadLevel::Emergency].len(), 4);
        assert_eq!(p.timeout_scale[LoadLevel::Critical], 0.33);
        assert_eq!(p.work[LoadLevel::High], WorkMode::Limited);
    }

    #[test]
    fn validation_names_the_entry() {
        for bad in [f64::NAN, 0.0, -0.5, 1.5, f64::INFINITY] {
            let err = LevelTable::new([1.0, 0.8, bad, 0.4, 0.2])
                .validate_fraction("queue")
                .unwrap_err();
            assert_eq!(err.field(), "queue[high]", "{bad}");
        }
        let err = LevelTable::new([
            PrioritySet::EMPTY,
            PrioritySet::only(Priority::Background),
            PrioritySet::only(Priority::Low),
            PrioritySet::ALL,
            PrioritySet::ALL,
        ])
        .validate_shed("shed")
        .unwrap_err();
        assert_eq!(err.field(), "shed[high]");
        let err = LevelTable::new([
            WorkMode::Full,
            WorkMode::Simple,
            WorkMode::Limited,
            WorkMode::Minimal,
            WorkMode::Minimal,
        ])
        .validate_work("work")
        .unwrap_err();
        assert_eq!(err.field(), "work[high]");
    }
}
