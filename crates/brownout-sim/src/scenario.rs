//! What is simulated: load, backend, deadlines, class mix and an optional slowdown.

use std::time::Duration;

use brownout_core::Priority;
use brownout_test::{Latency, LoadDriver, LoadDriverBuilder};

/// The distribution of the backend's service time around its mean.
///
/// Service times are drawn in whole milliseconds (at least 1 ms): tokio's timer wheel has a
/// 1 ms resolution, so a fractional service time would be rounded up by the clock and
/// silently lower the capacity. The discrete draws keep the mean exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceDist {
    /// Every request takes exactly the mean.
    Constant,
    /// Exponential with the given mean (drawn as its discrete twin, a geometric
    /// distribution on 1, 2, 3 … ms, whose mean is exactly the mean).
    Exponential,
    /// Log-normal with the given mean and shape `sigma` (the standard deviation of the
    /// underlying normal), rounded to the nearest millisecond.
    LogNormal {
        /// Shape parameter; `0.5` is a moderately heavy tail.
        sigma: f64,
    },
}

impl ServiceDist {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            ServiceDist::Constant => "constant".to_owned(),
            ServiceDist::Exponential => "exponential".to_owned(),
            ServiceDist::LogNormal { sigma } => format!("lognormal(sigma={sigma})"),
        }
    }

    /// The distribution with mean `mean`, as `brownout_test` draws it (whole milliseconds,
    /// at least 1 ms).
    pub fn latency(&self, mean: Duration) -> Latency {
        match *self {
            ServiceDist::Constant => Latency::Fixed(mean.max(Duration::from_millis(1))),
            ServiceDist::Exponential => Latency::Exponential { mean },
            ServiceDist::LogNormal { sigma } => Latency::LogNormal { mean, sigma },
        }
    }
}

/// The backend slows down by `factor` for work that starts in `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowdown {
    /// When the slowdown begins (virtual time from the start of the run).
    pub start: Duration,
    /// When the backend is back to normal.
    pub end: Duration,
    /// Service-time multiplier while slow (`3.0`: three times slower).
    pub factor: f64,
}

/// One simulated run: open-loop Poisson arrivals of a class mix at `load` × capacity, into
/// a backend of `workers` workers with a mean service time of `service`.
///
/// Capacity is `workers / service` requests per second (800 req/s for the defaults,
/// 16 workers × 20 ms). Every request carries a [`Priority`] and a client deadline; the
/// client gives up (drops the future) at the deadline.
///
/// ```
/// use std::time::Duration;
/// use brownout_sim::Scenario;
///
/// let s = Scenario::load(2.0).with_duration(Duration::from_secs(5)).with_seed(7);
/// assert_eq!(s.capacity(), 800.0);
/// assert_eq!(s.offered_rate(), 1600.0);
/// let slow = Scenario::slowdown(2.0);
/// assert_eq!(slow.capacity_at(slow.slowdown.unwrap().start), 800.0 / 3.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// A label for reports (`"load 2x"`, `"slowdown"`).
    pub name: String,
    /// Offered load as a multiple of the nominal capacity.
    pub load: f64,
    /// How long requests arrive (virtual time).
    pub duration: Duration,
    /// Backend workers: how many requests it serves at once.
    pub workers: usize,
    /// Mean service time of one request on an idle worker.
    pub service: Duration,
    /// The shape of the service-time distribution.
    pub service_dist: ServiceDist,
    /// The client deadline of every request.
    pub deadline: Duration,
    /// Share of arrivals per class, Critical first (normalized when used).
    pub mix: [f64; Priority::COUNT],
    /// Seed of every random draw (arrivals, classes, service times).
    pub seed: u64,
    /// An optional backend slowdown.
    pub slowdown: Option<Slowdown>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "load 1x".to_owned(),
            load: 1.0,
            duration: Duration::from_secs(10),
            workers: 16,
            service: Duration::from_millis(20),
            service_dist: ServiceDist::Exponential,
            deadline: Duration::from_millis(500),
            mix: Scenario::DEFAULT_MIX,
            seed: 42,
            slowdown: None,
        }
    }
}

/// One request of the arrival timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// Milliseconds from the start of the run.
    pub(crate) at_ms: u64,
    pub(crate) priority: Priority,
    /// Work on an idle, normal-speed worker, in milliseconds.
    pub(crate) service_ms: u64,
}

impl Scenario {
    /// The default class mix: 10 / 30 / 30 / 20 / 10 % from Critical to Background.
    pub const DEFAULT_MIX: [f64; Priority::COUNT] = [0.10, 0.30, 0.30, 0.20, 0.10];

    /// The default scenario at `load` × capacity.
    pub fn load(load: f64) -> Scenario {
        Scenario {
            name: format!("load {}x", fmt_load(load)),
            load,
            ..Scenario::default()
        }
    }

    /// `load` × the nominal capacity, while the backend becomes 3× slower for the middle
    /// third of the run and then recovers.
    pub fn slowdown(load: f64) -> Scenario {
        Scenario {
            name: format!("slowdown 3x at load {}x", fmt_load(load)),
            load,
            slowdown: Some(Slowdown {
                start: Duration::ZERO,
                end: Duration::ZERO,
                factor: 3.0,
            }),
            ..Scenario::default()
        }
        .with_duration(Duration::from_secs(12))
    }

    /// Sets the duration, and moves a slowdown (if any) to the middle third of it.
    #[must_use]
    pub fn with_duration(mut self, duration: Duration) -> Scenario {
        self.duration = duration;
        if let Some(slowdown) = &mut self.slowdown {
            slowdown.start = duration / 3;
            slowdown.end = duration * 2 / 3;
        }
        self
    }

    /// Sets the seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.seed = seed;
        self
    }

    /// Sets the backend's workers.
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Scenario {
        self.workers = workers.max(1);
        self
    }

    /// Sets the mean service time (whole milliseconds, at least 1 ms).
    #[must_use]
    pub fn with_service(mut self, service: Duration) -> Scenario {
        self.service = service.max(Duration::from_millis(1));
        self
    }

    /// Sets the client deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Scenario {
        self.deadline = deadline;
        self
    }

    /// Sets the service-time distribution.
    #[must_use]
    pub fn with_service_dist(mut self, dist: ServiceDist) -> Scenario {
        self.service_dist = dist;
        self
    }

    /// Sets the class mix (Critical first).
    #[must_use]
    pub fn with_mix(mut self, mix: [f64; Priority::COUNT]) -> Scenario {
        self.mix = mix;
        self
    }

    /// Sets a slowdown explicitly (call after [`with_duration`](Scenario::with_duration),
    /// which moves it).
    #[must_use]
    pub fn with_slowdown(mut self, slowdown: Option<Slowdown>) -> Scenario {
        self.slowdown = slowdown;
        self
    }

    /// Nominal capacity in requests per second: workers / mean service time.
    pub fn capacity(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }

    /// Offered arrival rate in requests per second.
    pub fn offered_rate(&self) -> f64 {
        self.load * self.capacity()
    }

    /// The service-time multiplier for work starting at `t` (from the start of the run).
    pub fn factor_at(&self, t: Duration) -> f64 {
        match self.slowdown {
            Some(s) if t >= s.start && t < s.end => s.factor,
            _ => 1.0,
        }
    }

    /// Capacity in requests per second at `t`, slowdown included.
    pub fn capacity_at(&self, t: Duration) -> f64 {
        self.capacity() / self.factor_at(t)
    }

    /// The capacity, in requests, of the window `[from, to)`.
    pub fn capacity_between(&self, from: Duration, to: Duration) -> f64 {
        let mut edges = vec![from, to];
        if let Some(s) = self.slowdown {
            for e in [s.start, s.end] {
                if e > from && e < to {
                    edges.push(e);
                }
            }
        }
        edges.sort();
        edges
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * self.capacity_at(w[0]))
            .sum()
    }

    /// The moments the backend's speed changes.
    pub fn changes(&self) -> Vec<Duration> {
        self.slowdown
            .map_or_else(Vec::new, |s| vec![s.start, s.end])
    }

    /// The load driver of this scenario: Poisson arrivals at the offered rate with the
    /// class mix, the seed and the client deadline (negative or NaN rates and weights count
    /// as zero).
    pub fn driver(&self) -> LoadDriverBuilder {
        LoadDriver::builder()
            .rate(self.offered_rate().max(0.0))
            .duration(self.duration)
            .mix(self.mix.map(|w| w.max(0.0)))
            .seed(self.seed)
            .deadline(self.deadline)
    }

    /// The arrival timeline: identical for every stack given the same scenario. Each
    /// arrival's service time is drawn right after its class, from the same seeded stream
    /// ([`LoadDriver::plan`]).
    pub(crate) fn arrivals(&self) -> Vec<Arrival> {
        let latency = self.service_dist.latency(self.service);
        let Ok(driver) = self.driver().build() else {
            return Vec::new();
        };
        driver
            .plan(|_, draw| draw.latency(&latency).as_millis() as u64)
            .into_iter()
            .map(|p| Arrival {
                at_ms: p.at.as_millis() as u64,
                priority: p.priority,
                service_ms: p.data,
            })
            .collect()
    }
}

/// `2` for 2.0, `0.5` for 0.5.
pub(crate) fn fmt_load(load: f64) -> String {
    if load.fract() == 0.0 {
        format!("{load:.0}")
    } else {
        format!("{load}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_deterministic_and_match_the_rate_and_mix() {
        let s = Scenario::load(2.0).with_duration(Duration::from_secs(20));
        let a = s.arrivals();
        assert_eq!(a, s.arrivals());
        let expected = s.offered_rate() * 20.0;
        assert!(
            (a.len() as f64 - expected).abs() < expected * 0.03,
            "{}",
            a.len()
        );
        let crit = a
            .iter()
            .filter(|x| x.priority == Priority::Critical)
            .count() as f64;
        assert!((crit / a.len() as f64 - 0.10).abs() < 0.01);
        let mean = a.iter().map(|x| x.service_ms as f64).sum::<f64>() / a.len() as f64;
        assert!((mean - 20.0).abs() < 0.5, "mean service {mean}");
        assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert_ne!(a, s.clone().with_seed(1).arrivals());
    }

    #[test]
    fn lognormal_and_constant_keep_the_mean() {
        let mut draw = brownout_test::Draw::seeded(3);
        for dist in [ServiceDist::Constant, ServiceDist::LogNormal { sigma: 0.5 }] {
            let n = 50_000;
            let latency = dist.latency(Duration::from_millis(20));
            let mean = (0..n)
                .map(|_| draw.latency(&latency).as_secs_f64() * 1000.0)
                .sum::<f64>()
                / n as f64;
            assert!((mean - 20.0).abs() < 0.5, "{dist:?}: {mean}");
        }
    }

    #[test]
    fn slowdown_capacity() {
        let s = Scenario::slowdown(1.0);
        let sd = s.slowdown.unwrap();
        assert_eq!(sd.start, Duration::from_secs(4));
        assert_eq!(sd.end, Duration::from_secs(8));
        let total = s.capacity_between(Duration::ZERO, s.duration);
        let expected = 800.0 * 8.0 + 800.0 / 3.0 * 4.0;
        assert!((total - expected).abs() < 1e-6);
        assert_eq!(s.capacity_at(Duration::from_secs(9)), 800.0);
    }
}
