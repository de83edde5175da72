//! The configuration error every builder in the workspace returns, and the checks they share.

use std::fmt;

/// A configuration value was refused when a layer, table or monitor was built.
///
/// It names the field and the rule it broke, e.g.
/// `invalid brownout configuration: `max_concurrency` must be at least 1 (got 0)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    rule: String,
}

impl ConfigError {
    /// A new error for `field` breaking `rule`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The field (or table entry, e.g. `rate[high]`) that was refused.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule that the value broke.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The same error, with its field prefixed by `outer.` (for nested configurations).
    #[must_use]
    pub fn within(self, outer: &str) -> ConfigError {
        ConfigError {
            field: format!("{outer}.{}", self.field),
            rule: self.rule,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid brownout configuration: `{}` {}",
            self.field, self.rule
        )
    }
}

impl std::error::Error for ConfigError {}

/// Shared validation checks; each returns an error naming `field` and the broken rule.
pub mod check {
    use super::ConfigError;
    use std::time::Duration;

    /// `value` is finite (not NaN, not ±∞).
    pub fn finite(field: &str, value: f64) -> Result<f64, ConfigError> {
        if value.is_finite() {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                format!("must be a finite number (got {value})"),
            ))
        }
    }

    /// `value` is finite and in `(0, 1]`.
    pub fn fraction(field: &str, value: f64) -> Result<f64, ConfigError> {
        if value.is_finite() && value > 0.0 && value <= 1.0 {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                format!("must be in (0, 1] (got {value})"),
            ))
        }
    }

    /// `value` is finite and in `[0, 1]`.
    pub fn unit_interval(field: &str, value: f64) -> Result<f64, ConfigError> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                format!("must be in [0, 1] (got {value})"),
            ))
        }
    }

    /// `value` is finite and strictly positive.
    pub fn positive(field: &str, value: f64) -> Result<f64, ConfigError> {
        if value.is_finite() && value > 0.0 {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                format!("must be a finite number above 0 (got {value})"),
            ))
        }
    }

    /// `value` is finite and at least `min`.
    pub fn at_least_f64(field: &str, value: f64, min: f64) -> Result<f64, ConfigError> {
        if value.is_finite() && value >= min {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                format!("must be a finite number of at least {min} (got {value})"),
            ))
        }
    }

    /// `value` is at least `min`.
    pub fn at_least(field: &str, value: usize, min: usize) -> Result<usize, ConfigError> {
        if value >= min {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                format!("must be at least {min} (got {value})"),
            ))
        }
    }

    /// `duration` is not zero.
    pub fn non_zero(field: &str, duration: Duration) -> Result<Duration, ConfigError> {
        if duration.is_zero() {
            Err(ConfigError::new(field, "must be longer than zero"))
        } else {
            Ok(duration)
        }
    }

    /// `low <= high`, naming both fields.
    pub fn ordered<T: PartialOrd + std::fmt::Debug>(
        low_field: &str,
        low: T,
        high_field: &str,
        high: T,
    ) -> Result<(), ConfigError> {
        if low <= high {
            Ok(())
        } else {
            Err(ConfigError::new(
                low_field,
                format!("must not exceed `{high_field}` (got {low:?} > {high:?})"),
            ))
        }
    }
}

/// Saturating arithmetic on durations, for back-offs and scaled deadlines.
pub mod duration {
    use std::time::Duration;

    /// `d × factor`, saturating at `Duration::MAX`; NaN or negative factors give zero.
    pub fn mul_f64_saturating(d: Duration, factor: f64) -> Duration {
        if factor.is_nan() || factor <= 0.0 {
            return Duration::ZERO;
        }
        let secs = d.as_secs_f64() * factor;
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn message_names_field_and_rule() {
        let err = check::at_least("max_concurrency", 0, 1).unwrap_err();
        assert_eq!(err.field(), "max_concurrency");
        assert_eq!(
            err.to_string(),
            "invalid brownout configuration: `max_concurrency` must be at least 1 (got 0)"
        );
        assert_eq!(err.within("admission").field(), "admission.max_concurrency");
    }

    #[test]
    fn checks() {
        assert!(check::fraction("f", f64::NAN).is_err());
        assert!(check::fraction("f", 0.0).is_err());
        assert!(check::fraction("f", 1.0).is_ok());
        assert!(check::fraction("f", 1.01).is_err());
        assert!(check::positive("p", f64::INFINITY).is_err());
        assert!(check::unit_interval("u", 0.0).is_ok());
        assert!(check::non_zero("d", Duration::ZERO).is_err());
        assert!(check::ordered("min", 3, "max", 2).is_err());
        assert!(check::ordered("min", 2, "max", 2).is_ok());
    }

    #[test]
    fn saturating_scale() {
        use duration::mul_f64_saturating as mul;
        assert_eq!(mul(Duration::MAX, 2.0), Duration::MAX);
        assert_eq!(mul(Duration::from_secs(1), f64::NAN), Duration::ZERO);
        assert_eq!(mul(Duration::from_secs(1), f64::INFINITY), Duration::MAX);
        assert_eq!(mul(Duration::from_secs(2), 0.5), Duration::from_secs(1));
    }
}
