//! Seeded randomness and latency distributions, shared by the mock backend, the chaos layer
//! and the load driver so that every run is reproducible from its seed.

use std::time::Duration;

use brownout_core::ConfigError;
use brownout_core::config::check;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The longest latency a distribution draws (one hour): a bound, not a realistic value.
const MAX_MS: f64 = 3_600_000.0;

/// A seeded random source: the same seed gives the same draws on every machine.
///
/// ```
/// use brownout_test::Draw;
///
/// let mut a = Draw::seeded(7);
/// let mut b = Draw::seeded(7);
/// let x = a.unit();
/// assert_eq!(x, b.unit());
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug, Clone)]
pub struct Draw {
    rng: SmallRng,
}

impl Draw {
    /// A source seeded with `seed`.
    pub fn seeded(seed: u64) -> Draw {
        Draw {
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// A uniform number in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// `true` with probability `p` (never draws when `p` is 0, so switching a fault off
    /// does not shift the other draws).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// One latency from `latency`.
    pub fn latency(&mut self, latency: &Latency) -> Duration {
        latency.sample(self)
    }

    /// A standard normal deviate (Box–Muller; one of the pair).
    fn standard_normal(&mut self) -> f64 {
        let u1: f64 = 1.0 - self.unit();
        let u2: f64 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A latency (service time) distribution.
///
/// Draws are in whole milliseconds: tokio's timer has a 1 ms resolution, so a fractional
/// service time would be rounded up by the clock and silently lower a backend's capacity.
/// The discrete draws keep the mean exact. Random distributions draw at least 1 ms;
/// [`Fixed`](Latency::Fixed) is rounded to the nearest millisecond (zero allowed). Every
/// draw is capped at one hour.
///
/// ```
/// use std::time::Duration;
/// use brownout_test::{Draw, Latency};
///
/// let ms = Duration::from_millis;
/// let mut draw = Draw::seeded(1);
/// assert_eq!(draw.latency(&Latency::Fixed(ms(20))), ms(20));
/// let uniform = Latency::Uniform { low: ms(10), high: ms(30) };
/// let x = draw.latency(&uniform);
/// assert!(x >= ms(10) && x <= ms(30));
/// assert_eq!(Latency::Exponential { mean: ms(20) }.mean(), ms(20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform between `low` and `high` (inclusive, whole milliseconds).
    Uniform {
        /// The shortest latency.
        low: Duration,
        /// The longest latency.
        high: Duration,
    },
    /// Exponential with mean `mean`, drawn as its discrete twin: a geometric distribution on
    /// 1, 2, 3 … ms whose mean is exactly `mean`.
    Exponential {
        /// The mean.
        mean: Duration,
    },
    /// Log-normal with mean `mean` and shape `sigma` (the standard deviation of the
    /// underlying normal; `0.5` is a moderately heavy tail), rounded to the millisecond.
    LogNormal {
        /// The mean.
        mean: Duration,
        /// The shape.
        sigma: f64,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed(Duration::from_millis(10))
    }
}

impl Latency {
    /// The distribution's mean.
    pub fn mean(&self) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { low, high } => (low + high) / 2,
            Latency::Exponential { mean } | Latency::LogNormal { mean, .. } => mean,
        }
    }

    /// Checks the parameters, naming `field` in the error.
    ///
    /// # Errors
    ///
    /// A zero or negative mean for the random distributions, `low > high`, or a `sigma`
    /// that is NaN, infinite or negative.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match *self {
            Latency::Fixed(_) => Ok(()),
            Latency::Uniform { low, high } => {
                check::ordered(&format!("{field}.low"), low, &format!("{field}.high"), high)
            }
            Latency::Exponential { mean } => {
                check::non_zero(&format!("{field}.mean"), mean).map(drop)
            }
            Latency::LogNormal { mean, sigma } => {
                check::non_zero(&format!("{field}.mean"), mean)?;
                check::at_least_f64(&format!("{field}.sigma"), sigma, 0.0).map(drop)
            }
        }
    }

    /// Draws one latency (see the type docs for the rounding).
    pub fn sample(&self, draw: &mut Draw) -> Duration {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let drawn = match *self {
            Latency::Fixed(d) => return Duration::from_millis(ms(d).round().min(MAX_MS) as u64),
            Latency::Uniform { low, high } => {
                let (low, high) = (ms(low).round(), ms(high).round());
                (low + draw.unit() * (high - low + 1.0)).floor().min(high)
            }
            Latency::Exponential { mean } => {
                let mean_ms = ms(mean);
                if mean_ms <= 1.0 {
                    1.0
                } else {
                    // Geometric on {1, 2, …} with p = 1/mean: P(X > k) = (1 - p)^k.
                    let p = 1.0 / mean_ms;
                    let u: f64 = 1.0 - draw.unit(); // (0, 1]
                    (u.ln() / (1.0 - p).ln()).ceil().max(1.0)
                }
            }
            Latency::LogNormal { mean, sigma } => {
                let mu = ms(mean).ln() - sigma * sigma / 2.0;
                (mu + sigma * draw.standard_normal()).exp().round()
            }
        };
        Duration::from_millis(drawn.clamp(1.0, MAX_MS) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_of(latency: Latency, n: usize) -> f64 {
        let mut draw = Draw::seeded(3);
        (0..n)
            .map(|_| draw.latency(&latency).as_secs_f64() * 1000.0)
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn every_distribution_keeps_its_mean() {
        let ms = Duration::from_millis;
        for latency in [
            Latency::Fixed(ms(20)),
            Latency::Uniform {
                low: ms(10),
                high: ms(30),
            },
            Latency::Exponential { mean: ms(20) },
            Latency::LogNormal {
                mean: ms(20),
                sigma: 0.5,
            },
        ] {
            let mean = mean_of(latency, 50_000);
            assert!((mean - 20.0).abs() < 0.5, "{latency:?}: {mean}");
        }
    }

    #[test]
    fn uniform_covers_both_ends() {
        let ms = Duration::from_millis;
        let latency = Latency::Uniform {
            low: ms(1),
            high: ms(3),
        };
        let mut draw = Draw::seeded(9);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            seen[draw.latency(&latency).as_millis() as usize] = true;
        }
        assert_eq!(seen, [false, true, true, true]);
    }

    #[test]
    fn validation_names_the_field() {
        let err = Latency::Exponential {
            mean: Duration::ZERO,
        }
        .validate("latency")
        .unwrap_err();
        assert_eq!(err.field(), "latency.mean");
        let err = Latency::LogNormal {
            mean: Duration::from_millis(5),
            sigma: f64::NAN,
        }
        .validate("latency")
        .unwrap_err();
        assert_eq!(err.field(), "latency.sigma");
        assert!(
            Latency::Uniform {
                low: Duration::from_millis(2),
                high: Duration::from_millis(1)
            }
            .validate("l")
            .is_err()
        );
    }

    #[test]
    fn chance_does_not_draw_when_off() {
        let mut a = Draw::seeded(5);
        let mut b = Draw::seeded(5);
        assert!(!a.chance(0.0));
        assert!(a.chance(1.0));
        assert!(b.chance(1.0));
        assert_eq!(a.unit(), b.unit());
    }
}
