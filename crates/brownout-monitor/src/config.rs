//! [`MonitorBuilder`]: the validated configuration of a [`Monitor`] and its [`Detector`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, LoadLevel, PressureSource, QueueProbe, Thresholds};
use tokio::time::Instant;

use crate::Monitor;
use crate::detector::{Detector, DetectorConfig, SignalSpec, Source};
use crate::recorder::LatencyClock;

/// Default tick interval: 100 ms.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
/// Default cooldown before each one-level step down: 250 ms.
///
/// From the ablation in `docs/benchmarks/brownout-sim.md`: after a 3× backend slowdown ends,
/// the stack kept shedding for seconds with 2 s (efficiency in the recovered phase 56.9 %),
/// 97.1 % with 500 ms, 98.5 % with 250 ms; under steady overload the cooldown made no
/// difference (99.7 % at 4× and 8× for all three).
pub const DEFAULT_COOLDOWN: Duration = Duration::from_millis(250);
/// Default hysteresis: de-escalate only below 90 % of the threshold.
pub const DEFAULT_HYSTERESIS: f64 = 0.1;
/// Default latency thresholds, as multiples of the objective: 1.0 / 1.5 / 2 / 3 ×.
pub const DEFAULT_LATENCY_FACTORS: [f64; 4] = [1.0, 1.5, 2.0, 3.0];
/// Default mean queueing-delay thresholds: 25 / 50 / 75 / 100 ms.
///
/// From the ablation in `docs/benchmarks/brownout-sim.md`: with 5 / 20 / 50 / 100 ms the
/// ordinary queueing of a server at 100 % utilization (an M/M/16 at 1×) already reads as
/// High, and shedding took work the backend had room for (efficiency 93.5 % instead of
/// 96.2 % at 1×); under real overload both escalate alike (99.7 % at 4× and 8×). DAGOR's
/// ~20 ms overload mark sits between Normal and Elevated here.
pub const DEFAULT_QUEUE_DELAY: [Duration; 4] = [
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(75),
    Duration::from_millis(100),
];
/// Default error-rate thresholds: 5 / 10 / 25 / 50 %.
pub const DEFAULT_ERROR_RATE: [f64; 4] = [0.05, 0.10, 0.25, 0.50];
/// Default minimum number of completed requests in an interval before the error rate counts.
pub const DEFAULT_MIN_ERROR_SAMPLES: u64 = 20;
/// Default minimum number of latency samples in an interval before the p95 counts.
pub const DEFAULT_MIN_LATENCY_SAMPLES: u64 = 5;
/// Default number of transitions kept for [`Monitor::snapshot`].
pub const DEFAULT_TRANSITIONS: usize = 32;
/// Default upper bound of latency sampling: at most one request in 64 is timed.
pub const DEFAULT_MAX_SAMPLE_EVERY: u32 = 64;
/// Default number of latency samples aimed at per interval (the sampling rate adapts to it).
pub const DEFAULT_LATENCY_SAMPLE_TARGET: u64 = 256;

/// Builds a [`Monitor`] (or a bare [`Detector`]); every value is checked by
/// [`build`](MonitorBuilder::build).
///
/// | setting | default |
/// |---|---|
/// | `interval` | 100 ms |
/// | `escalate_after` | 1 tick |
/// | `cooldown` | 250 ms per level |
/// | `hysteresis` | 0.1 (de-escalate below 90 % of the threshold) |
/// | latency p95 | off; with `latency_objective(o)`: 1.0 / 1.5 / 2 / 3 × o, from 5 samples per interval |
/// | queueing delay (mean) | 25 / 50 / 75 / 100 ms |
/// | error rate | 5 / 10 / 25 / 50 %, from 20 requests per interval |
/// | queue depth, in-flight | off |
/// | CPU / memory (feature `system`) | off; `system_pressure()`: 50 / 65 / 80 / 90 % |
/// | transitions kept | 32 |
/// | latency clock | `LatencyClock::Tokio` (pausable) |
/// | latency sampling | every request while quiet; one in `requests seen / 256` per interval (rejections included), at most 1 in 64 |
/// | record shards | available parallelism, ≤ 16 |
///
/// ```
/// use std::time::Duration;
/// use brownout_monitor::Monitor;
///
/// let err = Monitor::builder().hysteresis(1.0).build_detector().unwrap_err();
/// assert_eq!(err.field(), "hysteresis");
/// let err = Monitor::builder().error_rate_thresholds([0.5, 0.1, 0.6, 0.7]).build_detector().unwrap_err();
/// assert_eq!(err.field(), "error_rate_thresholds[high]");
/// ```
pub struct MonitorBuilder {
    interval: Duration,
    escalate_after: u32,
    cooldown: Duration,
    hysteresis: f64,
    initial_level: LoadLevel,
    latency_objective: Option<Duration>,
    latency_factors: [f64; 4],
    min_latency_samples: u64,
    queue_delay: Option<[Duration; 4]>,
    queue_depth: Option<[f64; 4]>,
    error_rate: Option<[f64; 4]>,
    min_error_samples: u64,
    in_flight: Option<[f64; 4]>,
    pressure: Vec<(Box<dyn PressureSource>, Thresholds)>,
    probe: Option<QueueProbe>,
    transitions: usize,
    manual_ticks: bool,
    shards: Option<usize>,
    clock: LatencyClock,
    max_sample_every: u32,
    sample_target: u64,
}

impl Default for MonitorBuilder {
    fn default() -> Self {
        MonitorBuilder {
            interval: DEFAULT_INTERVAL,
            escalate_after: 1,
            cooldown: DEFAULT_COOLDOWN,
            hysteresis: DEFAULT_HYSTERESIS,
            initial_level: LoadLevel::Normal,
            latency_objective: None,
            latency_factors: DEFAULT_LATENCY_FACTORS,
            min_latency_samples: DEFAULT_MIN_LATENCY_SAMPLES,
            queue_delay: Some(DEFAULT_QUEUE_DELAY),
            queue_depth: None,
            error_rate: Some(DEFAULT_ERROR_RATE),
            min_error_samples: DEFAULT_MIN_ERROR_SAMPLES,
            in_flight: None,
            pressure: Vec::new(),
            probe: None,
            transitions: DEFAULT_TRANSITIONS,
            manual_ticks: false,
            shards: None,
            clock: LatencyClock::Tokio,
            max_sample_every: DEFAULT_MAX_SAMPLE_EVERY,
            sample_target: DEFAULT_LATENCY_SAMPLE_TARGET,
        }
    }
}

impl MonitorBuilder {
    /// A builder with the defaults above.
    pub fn new() -> MonitorBuilder {
        MonitorBuilder::default()
    }

    /// How often the detector ticks (default 100 ms). Must not be zero.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Consecutive ticks over a threshold before escalating (default 1). At least 1.
    pub fn escalate_after(mut self, ticks: u32) -> Self {
        self.escalate_after = ticks;
        self
    }

    /// Calm time required before each one-level step down (default 250 ms, see
    /// [`DEFAULT_COOLDOWN`]). Zero steps down one level on every calm tick.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// De-escalate only when every signal is below `threshold × (1 − hysteresis)`
    /// (default 0.1). In `[0, 1)`.
    pub fn hysteresis(mut self, hysteresis: f64) -> Self {
        self.hysteresis = hysteresis;
        self
    }

    /// The level published before the first tick (default Normal).
    pub fn initial_level(mut self, level: LoadLevel) -> Self {
        self.initial_level = level;
        self
    }

    /// Turns the latency signal on: p95 latency compared with `objective` × the latency
    /// factors (default 1.0 / 1.5 / 2 / 3). Must not be zero.
    pub fn latency_objective(mut self, objective: Duration) -> Self {
        self.latency_objective = Some(objective);
        self
    }

    /// Multiples of the latency objective at which p95 means Elevated … Emergency.
    pub fn latency_factors(mut self, factors: [f64; 4]) -> Self {
        self.latency_factors = factors;
        self
    }

    /// Latency samples needed in an interval before its p95 counts (default 5). At least 1.
    pub fn min_latency_samples(mut self, samples: u64) -> Self {
        self.min_latency_samples = samples;
        self
    }

    /// Mean queueing delay thresholds (default 25 / 50 / 75 / 100 ms, see
    /// [`DEFAULT_QUEUE_DELAY`]).
    pub fn queue_delay_thresholds(mut self, thresholds: [Duration; 4]) -> Self {
        self.queue_delay = Some(thresholds);
        self
    }

    /// Turns the queueing-delay signal off.
    pub fn disable_queue_delay(mut self) -> Self {
        self.queue_delay = None;
        self
    }

    /// Turns the queue-depth signal on with these thresholds (requests waiting).
    pub fn queue_depth_thresholds(mut self, thresholds: [usize; 4]) -> Self {
        self.queue_depth = Some(thresholds.map(|t| t as f64));
        self
    }

    /// Error-rate thresholds, fractions in `[0, 1]` (default 0.05 / 0.10 / 0.25 / 0.50).
    pub fn error_rate_thresholds(mut self, thresholds: [f64; 4]) -> Self {
        self.error_rate = Some(thresholds);
        self
    }

    /// Turns the error-rate signal off.
    pub fn disable_error_rate(mut self) -> Self {
        self.error_rate = None;
        self
    }

    /// Completed requests needed in an interval before its error rate counts (default 20),
    /// so that 1 error in 2 requests does not escalate. At least 1.
    pub fn min_error_samples(mut self, samples: u64) -> Self {
        self.min_error_samples = samples;
        self
    }

    /// Turns the in-flight signal on with these thresholds (requests in flight).
    pub fn in_flight_thresholds(mut self, thresholds: [usize; 4]) -> Self {
        self.in_flight = Some(thresholds.map(|t| t as f64));
        self
    }

    /// Registers an extra signal, sampled once per tick and mapped through `thresholds`.
    pub fn pressure_source(mut self, source: impl PressureSource, thresholds: Thresholds) -> Self {
        self.pressure.push((Box::new(source), thresholds));
        self
    }

    /// Adds process / cgroup v2 CPU and memory utilization as pressure sources, with the
    /// default thresholds 50 / 65 / 80 / 90 % ([`Thresholds::UTILIZATION`]).
    #[cfg(feature = "system")]
    pub fn system_pressure(self) -> Self {
        self.pressure_source(crate::system::CpuPressure::new(), Thresholds::UTILIZATION)
            .pressure_source(
                crate::system::MemoryPressure::new(),
                Thresholds::UTILIZATION,
            )
    }

    /// Reads queueing delay and depth from this probe (shared with the admission layer)
    /// instead of a new one.
    pub fn queue_probe(mut self, probe: QueueProbe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// How many level changes [`Monitor::snapshot`] keeps (default 32). At least 1.
    pub fn transitions_kept(mut self, transitions: usize) -> Self {
        self.transitions = transitions;
        self
    }

    /// Spawns no background task: the level changes only on [`Monitor::tick_now`]. Such a
    /// monitor can be built outside a tokio runtime (simulations, tests, custom drivers).
    pub fn manual_ticks(mut self) -> Self {
        self.manual_ticks = true;
        self
    }

    /// How many stripes the request-path counters are split into (rounded up to a power of
    /// two). Threads record into different stripes, so they do not contend on one cache line;
    /// each stripe costs 8 KiB. Default: the available parallelism, at most 16. At least 1.
    pub fn record_shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The clock that times requests (default [`LatencyClock::Tokio`], pausable).
    pub fn latency_clock(mut self, clock: LatencyClock) -> Self {
        self.clock = clock;
        self
    }

    /// Times at most one request in `every` (default 64; 1 times every request). At least 1.
    ///
    /// The rate adapts at each tick: `requests seen / latency_sample_target` (every request
    /// that finished, rejected and cancelled ones included), clamped to `[1, every]` and
    /// capped so that at least `min(latency_sample_target, 4 × min_latency_samples)`
    /// completions stay timed. A quiet service times every request, a busy one (or a flood
    /// of rejections) reads the clock on 1/`every` of them. Outcomes, in-flight and error
    /// rate always count every request; only latency is sampled.
    pub fn max_sample_every(mut self, every: u32) -> Self {
        self.max_sample_every = every;
        self
    }

    /// Latency samples to aim at per interval (default 256). At least 1.
    pub fn latency_sample_target(mut self, samples: u64) -> Self {
        self.sample_target = samples;
        self
    }

    /// Builds the monitor and spawns its tick task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when a value is invalid (zero interval, hysteresis
    /// outside `[0, 1)`, NaN, negative or non-increasing thresholds, …), or naming `runtime`
    /// when called outside a tokio runtime without [`manual_ticks`](Self::manual_ticks).
    pub fn build(self) -> Result<Monitor, ConfigError> {
        let validated = self.validate()?;
        Monitor::from_validated(validated)
    }

    /// Builds only the synchronous [`Detector`], with the same settings (pressure sources
    /// contribute their thresholds; feed their values through
    /// [`Signals::pressure`](crate::Signals::pressure)).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), except that no runtime is needed.
    pub fn build_detector(self) -> Result<Detector, ConfigError> {
        let validated = self.validate()?;
        Ok(Detector::new(validated.detector, Instant::now()))
    }

    fn validate(self) -> Result<Validated, ConfigError> {
        check::non_zero("interval", self.interval)?;
        if self.escalate_after == 0 {
            return Err(ConfigError::new(
                "escalate_after",
                "must be at least 1 (got 0)",
            ));
        }
        if !(self.hysteresis.is_finite() && (0.0..1.0).contains(&self.hysteresis)) {
            return Err(ConfigError::new(
                "hysteresis",
                format!("must be in [0, 1) (got {})", self.hysteresis),
            ));
        }
        check::at_least("min_latency_samples", self.min_latency_samples as usize, 1)?;
        check::at_least("min_error_samples", self.min_error_samples as usize, 1)?;
        check::at_least("transitions_kept", self.transitions, 1)?;
        check::at_least("max_sample_every", self.max_sample_every as usize, 1)?;
        check::at_least("latency_sample_target", self.sample_target as usize, 1)?;
        let shards = match self.shards {
            Some(shards) => check::at_least("record_shards", shards, 1)?.min(1024),
            None => crate::recorder::default_shards(),
        };

        let mut signals = Vec::new();
        let mut latency_objective = None;
        if let Some(objective) = self.latency_objective {
            check::non_zero("latency_objective", objective)?;
            let factors = Thresholds::named("latency_factors", self.latency_factors)?;
            if factors.values()[0] <= 0.0 {
                return Err(ConfigError::new(
                    "latency_factors[elevated]",
                    "must be above 0 (got 0)",
                ));
            }
            latency_objective = Some(objective);
            signals.push(SignalSpec {
                source: Source::LatencyP95,
                name: Arc::from("latency_p95"),
                thresholds: factors.scaled(objective.as_secs_f64()),
            });
        } else {
            // Validate the factors anyway, so a bad value is reported even before an
            // objective is set.
            Thresholds::named("latency_factors", self.latency_factors)?;
        }
        if let Some(delay) = self.queue_delay {
            let thresholds =
                Thresholds::named("queue_delay_thresholds", delay.map(|d| d.as_secs_f64()))?;
            signals.push(SignalSpec {
                source: Source::QueueDelay,
                name: Arc::from("queue_delay"),
                thresholds,
            });
        }
        if let Some(depth) = self.queue_depth {
            signals.push(SignalSpec {
                source: Source::QueueDepth,
                name: Arc::from("queue_depth"),
                thresholds: Thresholds::named("queue_depth_thresholds", depth)?,
            });
        }
        if let Some(rate) = self.error_rate {
            let thresholds = Thresholds::named("error_rate_thresholds", rate)?;
            for (i, v) in rate.iter().enumerate() {
                if *v > 1.0 {
                    return Err(ConfigError::new(
                        format!("error_rate_thresholds[{}]", LoadLevel::ALL[i + 1]),
                        format!("must be a fraction in [0, 1] (got {v})"),
                    ));
                }
            }
            signals.push(SignalSpec {
                source: Source::ErrorRate,
                name: Arc::from("error_rate"),
                thresholds,
            });
        }
        if let Some(in_flight) = self.in_flight {
            signals.push(SignalSpec {
                source: Source::InFlight,
                name: Arc::from("in_flight"),
                thresholds: Thresholds::named("in_flight_thresholds", in_flight)?,
            });
        }
        let mut sources = Vec::with_capacity(self.pressure.len());
        for (i, (source, thresholds)) in self.pressure.into_iter().enumerate() {
            let name: Arc<str> = Arc::from(source.name());
            if name.is_empty() {
                return Err(ConfigError::new(
                    format!("pressure_source[{i}].name"),
                    "must not be empty",
                ));
            }
            signals.push(SignalSpec {
                source: Source::Pressure(i),
                name,
                thresholds,
            });
            sources.push(source);
        }

        Ok(Validated {
            interval: self.interval,
            latency_objective,
            min_latency_samples: self.min_latency_samples,
            min_error_samples: self.min_error_samples,
            sources,
            probe: self.probe.unwrap_or_default(),
            transitions: self.transitions,
            manual_ticks: self.manual_ticks,
            shards,
            clock: self.clock,
            max_sample_every: self.max_sample_every,
            sample_target: self.sample_target,
            detector: DetectorConfig {
                signals,
                escalate_after: self.escalate_after,
                cooldown: self.cooldown,
                hysteresis: self.hysteresis,
                initial: self.initial_level,
            },
        })
    }
}

impl fmt::Debug for MonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorBuilder")
            .field("interval", &self.interval)
            .field("escalate_after", &self.escalate_after)
            .field("cooldown", &self.cooldown)
            .field("hysteresis", &self.hysteresis)
            .field("latency_objective", &self.latency_objective)
            .field("queue_delay", &self.queue_delay)
            .field("error_rate", &self.error_rate)
            .field("pressure_sources", &self.pressure.len())
            .field("manual_ticks", &self.manual_ticks)
            .finish_non_exhaustive()
    }
}

/// A checked configuration, ready to build a monitor from.
pub(crate) struct Validated {
    pub(crate) interval: Duration,
    pub(crate) latency_objective: Option<Duration>,
    pub(crate) min_latency_samples: u64,
    pub(crate) min_error_samples: u64,
    pub(crate) sources: Vec<Box<dyn PressureSource>>,
    pub(crate) probe: QueueProbe,
    pub(crate) transitions: usize,
    pub(crate) manual_ticks: bool,
    pub(crate) shards: usize,
    pub(crate) clock: LatencyClock,
    pub(crate) max_sample_every: u32,
    pub(crate) sample_target: u64,
    pub(crate) detector: DetectorConfig,
}
