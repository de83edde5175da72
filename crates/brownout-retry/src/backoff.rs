//! Exponential back-off with jitter, in saturating arithmetic.

use std::time::Duration;

use rand::Rng;

/// How the randomness is spread over a back-off (formulas from the AWS architecture blog,
/// "Exponential Backoff And Jitter").
///
/// With `ceiling(n) = min(max, base × multiplier^n)`:
///
/// | jitter | sleep before retry `n` |
/// |---|---|
/// | `None` | `ceiling(n)` |
/// | `Full` | uniform in `(0, ceiling(n)]` (never zero) |
/// | `Equal` | `ceiling(n)/2 + uniform in [0, ceiling(n)/2]` |
/// | `Decorrelated` | `min(max, uniform in [base, 3 × previous sleep])` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: the ceiling itself.
    None,
    /// Uniform between zero (excluded) and the ceiling.
    #[default]
    Full,
    /// Half the ceiling plus a uniform draw over the other half.
    Equal,
    /// Uniform between `base` and three times the previous sleep, capped at `max`.
    Decorrelated,
}

/// A validated exponential back-off: `base`, `max`, `multiplier` and a [`Jitter`].
///
/// Built by [`RetryBuilder`](crate::RetryBuilder) (or [`Backoff::new`]), which refuses a zero
/// `base`, `base > max`, and a `multiplier` below 1 or not finite. Every computation
/// saturates: attempt 64 or 1000 with a huge base or multiplier gives `max`, never a panic.
///
/// ```
/// use std::time::Duration;
/// use brownout_retry::{Backoff, Jitter};
///
/// let backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 2.0, Jitter::None).unwrap();
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(10));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(80));
/// assert_eq!(backoff.ceiling(1000), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl Backoff {
    /// A validated back-off.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](brownout_core::ConfigError) naming `backoff.base` (zero),
    /// `backoff.multiplier` (below 1, NaN or infinite) or `backoff.base` > `backoff.max`.
    pub fn new(
        base: Duration,
        max: Duration,
        multiplier: f64,
        jitter: Jitter,
    ) -> Result<Backoff, brownout_core::ConfigError> {
        use brownout_core::config::check;
        check::non_zero("backoff.base", base)?;
        check::at_least_f64("backoff.multiplier", multiplier, 1.0)?;
        check::ordered("backoff.base", base, "backoff.max", max)?;
        Ok(Backoff {
            base,
            max,
            multiplier,
            jitter,
        })
    }

    /// The first back-off.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest back-off.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The growth factor per attempt.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// `min(max, base × multiplier^retry)` where `retry` counts retries already made
    /// (0 before the first retry). Monotone in `retry`, saturating at `max`, never zero.
    pub fn ceiling(&self, retry: u32) -> Duration {
        if retry == 0 || self.multiplier == 1.0 {
            return self.base;
        }
        // powf of a number ≥ 1 is monotone in the exponent and saturates at +inf;
        // the product saturates too, and `mul_f64_saturating` maps +inf to Duration::MAX.
        let factor = self.multiplier.powf(f64::from(retry));
        let scaled = brownout_core::config::duration::mul_f64_saturating(self.base, factor);
        scaled.clamp(self.base, self.max)
    }

    /// The sleep before retry number `retry` (0-based), given the previous sleep (for
    /// decorrelated jitter), drawn from `rng`. Always in `(0, max]`.
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, previous: Duration, rng: &mut R) -> Duration {
        match self.jitter {
            Jitter::None => self.ceiling(retry),
            Jitter::Full => {
                let cap = self.ceiling(retry);
                // Uniform in (0, cap]: cap minus a draw in [0, cap).
                cap - uniform_below(cap, rng)
            }
            Jitter::Equal => {
                let cap = self.ceiling(retry);
                let half = cap / 2;
                let rest = cap - half;
                // half + uniform in [0, rest]; never 0 since cap > 0.
                (half + uniform_below(rest, rng).saturating_add(Duration::from_nanos(1)))
                    .min(cap)
                    .max(Duration::from_nanos(1))
            }
            Jitter::Decorrelated => {
                let previous = previous.max(self.base);
                let hi = previous.saturating_mul(3).min(self.max).max(self.base);
                let span = hi - self.base;
                (self.base + uniform_below(span + Duration::from_nanos(1), rng)).min(hi)
            }
        }
    }
}

/// A uniform duration in `[0, bound)` (zero for a zero bound), at nanosecond resolution.
fn uniform_below<R: Rng + ?Sized>(bound: Duration, rng: &mut R) -> Duration {
    let nanos = bound.as_nanos();
    if nanos == 0 {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated)
        ]
    }

    #[test]
    fn rel_11_attempt_64_and_1000_saturate_at_max() {
        let b = Backoff::new(
            Duration::from_millis(1),
            Duration::from_secs(30),
            2.0,
            Jitter::None,
        )
        .unwrap();
        assert_eq!(b.ceiling(64), Duration::from_secs(30));
        assert_eq!(b.ceiling(1000), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        let huge = Backoff::new(Duration::MAX, Duration::MAX, f64::MAX, Jitter::Full).unwrap();
        assert_eq!(huge.ceiling(1000), Duration::MAX);
        let mut rng = SmallRng::seed_from_u64(7);
        assert!(huge.delay(1000, Duration::MAX, &mut rng) > Duration::ZERO);
    }

    #[test]
    fn rel_10_invalid_backoff_refused_naming_the_field() {
        let s = Duration::from_secs(1);
        let field =
            |r: Result<Backoff, brownout_core::ConfigError>| r.unwrap_err().field().to_owned();
        assert_eq!(
            field(Backoff::new(Duration::ZERO, s, 2.0, Jitter::Full)),
            "backoff.base"
        );
        assert_eq!(
            field(Backoff::new(s, s, 0.5, Jitter::Full)),
            "backoff.multiplier"
        );
        assert_eq!(
            field(Backoff::new(s, s, f64::NAN, Jitter::Full)),
            "backoff.multiplier"
        );
        assert_eq!(
            field(Backoff::new(s, s, f64::INFINITY, Jitter::Full)),
            "backoff.multiplier"
        );
        assert_eq!(
            field(Backoff::new(s * 2, s, 2.0, Jitter::Full)),
            "backoff.base"
        );
    }

    proptest! {
        #[test]
        fn rel_11_ceiling_monotone_saturating_never_zero(
            base_ns in 1u64..=u64::MAX,
            extra_ns in 0u64..=u64::MAX,
            multiplier in prop_oneof![1.0f64..4.0, 1.0f64..1e300, Just(f64::MAX)],
            retry in 0u32..2000,
        ) {
            let base = Duration::from_nanos(base_ns);
            let max = base.saturating_add(Duration::from_nanos(extra_ns));
            let b = Backoff::new(base, max, multiplier, Jitter::None).unwrap();
            let now = b.ceiling(retry);
            let next = b.ceiling(retry + 1);
            prop_assert!(now > Duration::ZERO);
            prop_assert!(now <= next, "{now:?} > {next:?}");
            prop_assert!(next <= max);
            prop_assert!(now >= base);
            if multiplier > 1.000_001 {
                prop_assert_eq!(b.ceiling(u32::MAX), max);
            }
        }

        #[test]
        fn jittered_delay_within_bounds(
            base_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            multiplier in 1.0f64..10.0,
            retry in 0u32..1100,
            previous_ms in 0u64..1_000_000,
            jitter in any_jitter(),
            seed in any::<u64>(),
        ) {
            let base = Duration::from_millis(base_ms);
            let max = base + Duration::from_millis(extra_ms);
            let b = Backoff::new(base, max, multiplier, jitter).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            let d = b.delay(retry, Duration::from_millis(previous_ms), &mut rng);
            prop_assert!(d > Duration::ZERO);
            prop_assert!(d <= max);
            match jitter {
                Jitter::None => prop_assert_eq!(d, b.ceiling(retry)),
                Jitter::Full => prop_assert!(d <= b.ceiling(retry)),
                Jitter::Equal => prop_assert!(d >= b.ceiling(retry) / 2 && d <= b.ceiling(retry)),
                Jitter::Decorrelated => prop_assert!(d >= base),
            }
        }
    }
}
