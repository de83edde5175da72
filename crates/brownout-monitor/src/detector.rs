//! [`Detector`]: the pure state machine turning signal samples into a load level.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use brownout_core::{LoadLevel, Thresholds};
use tokio::time::Instant;

/// One sample of every signal, taken at a tick. `None` means "no reading this tick" (too few
/// requests, no queue activity, an unreadable source): that signal neither escalates nor
/// blocks de-escalation.
///
/// Signals without configured thresholds are ignored by the [`Detector`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// p95 latency over the interval (used only when a latency objective is set).
    pub latency_p95: Option<Duration>,
    /// Mean queueing delay over the interval (from the [`QueueProbe`](brownout_core::QueueProbe)).
    pub queue_delay: Option<Duration>,
    /// Requests waiting in the admission queue at the tick.
    pub queue_depth: Option<usize>,
    /// Failures ÷ completed requests over the interval, in `[0, 1]`.
    pub error_rate: Option<f64>,
    /// Requests in flight at the tick.
    pub in_flight: Option<usize>,
    /// One value per registered pressure source, in registration order.
    pub pressure: Vec<Option<f64>>,
}

/// Which field of [`Signals`] a configured signal reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    LatencyP95,
    QueueDelay,
    QueueDepth,
    ErrorRate,
    InFlight,
    Pressure(usize),
}

impl Source {
    fn read(self, signals: &Signals) -> Option<f64> {
        let value = match self {
            Source::LatencyP95 => signals.latency_p95.map(|d| d.as_secs_f64()),
            Source::QueueDelay => signals.queue_delay.map(|d| d.as_secs_f64()),
            Source::QueueDepth => signals.queue_depth.map(|d| d as f64),
            Source::ErrorRate => signals.error_rate,
            Source::InFlight => signals.in_flight.map(|n| n as f64),
            Source::Pressure(i) => signals.pressure.get(i).copied().flatten(),
        };
        value.filter(|v| !v.is_nan())
    }
}

/// A configured signal: where it reads from, its name and its thresholds.
#[derive(Debug, Clone)]
pub(crate) struct SignalSpec {
    pub(crate) source: Source,
    pub(crate) name: Arc<str>,
    pub(crate) thresholds: Thresholds,
}

/// The validated settings of a [`Detector`] (built by
/// [`MonitorBuilder`](crate::MonitorBuilder)).
#[derive(Debug, Clone)]
pub(crate) struct DetectorConfig {
    pub(crate) signals: Vec<SignalSpec>,
    pub(crate) escalate_after: u32,
    pub(crate) cooldown: Duration,
    pub(crate) hysteresis: f64,
    pub(crate) initial: LoadLevel,
}

/// The last value of one signal and the level it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalReading {
    /// The signal's name: `latency_p95` (seconds), `queue_delay` (seconds), `queue_depth`,
    /// `error_rate` (fraction), `in_flight`, or a pressure source's own name.
    pub name: Arc<str>,
    /// Its value at the last tick (`None`: no reading).
    pub value: Option<f64>,
    /// The level that value maps to through the signal's thresholds.
    pub level: LoadLevel,
    /// The signal's thresholds (Elevated … Emergency), in the value's unit.
    pub thresholds: [f64; 4],
}

/// Why the level changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// A signal crossed a threshold (the highest one, when several did).
    Signal {
        /// The signal's name.
        name: Arc<str>,
        /// Its value.
        value: f64,
    },
    /// Every signal stayed below its hysteresis-lowered threshold for a cooldown.
    Cooldown,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Signal { name, value } => write!(f, "{name}={value}"),
            Cause::Cooldown => f.write_str("cooldown"),
        }
    }
}

/// One level change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// When it happened.
    pub at: Instant,
    /// The level before.
    pub from: LoadLevel,
    /// The level after.
    pub to: LoadLevel,
    /// Why.
    pub cause: Cause,
}

/// The detector: a synchronous state machine fed one [`Signals`] sample per tick.
///
/// - Each configured signal maps to a level through its [`Thresholds`]; the target is the
///   highest of them.
/// - **Escalation**: after `escalate_after` consecutive ticks with the target above the
///   current level, the level jumps to the lowest target of those ticks (several levels at
///   once if need be).
/// - **De-escalation**: one level at a time, once every signal has stayed below its threshold
///   for the current level × (1 − `hysteresis`) for a whole `cooldown`; the next step needs
///   another full cooldown.
///
/// The [`Monitor`](crate::Monitor)'s background task drives one; simulators can drive their
/// own in paused or virtual time.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::LoadLevel;
/// use brownout_monitor::{Monitor, Signals};
/// use tokio::time::Instant;
///
/// let mut detector = Monitor::builder()
///     .cooldown(Duration::from_secs(2))
///     .build_detector()
///     .unwrap();
/// let start = Instant::now();
/// // Mean queueing delay 80 ms: above 75 ms, the Critical threshold.
/// let busy = Signals { queue_delay: Some(Duration::from_millis(80)), ..Signals::default() };
/// assert_eq!(detector.update(&busy, start), LoadLevel::Critical);
///
/// let calm = Signals { queue_delay: Some(Duration::ZERO), ..Signals::default() };
/// assert_eq!(detector.update(&calm, start + Duration::from_secs(1)), LoadLevel::Critical);
/// assert_eq!(detector.update(&calm, start + Duration::from_secs(3)), LoadLevel::High);
/// assert_eq!(detector.update(&calm, start + Duration::from_secs(4)), LoadLevel::High);
/// assert_eq!(detector.update(&calm, start + Duration::from_secs(5)), LoadLevel::Elevated);
/// ```
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    level: LoadLevel,
    since: Instant,
    /// Consecutive ticks with the target above the level, and the lowest target among them.
    streak: u32,
    streak_target: LoadLevel,
    /// Since when every signal has been calm (below its lowered threshold).
    calm_since: Option<Instant>,
    readings: Vec<SignalReading>,
    last_transition: Option<Transition>,
    transitions: u64,
}

impl Detector {
    pub(crate) fn new(config: DetectorConfig, now: Instant) -> Detector {
        let readings = config
            .signals
            .iter()
            .map(|spec| SignalReading {
                name: spec.name.clone(),
                value: None,
                level: LoadLevel::Normal,
                thresholds: spec.thresholds.values(),
            })
            .collect();
        Detector {
            level: config.initial,
            since: now,
            streak: 0,
            streak_target: LoadLevel::Normal,
            calm_since: None,
            readings,
            last_transition: None,
            transitions: 0,
            config,
        }
    }

    /// Feeds one sample taken at `now` and returns the (possibly new) level.
    ///
    /// `now` must not go backwards; if it does, elapsed time saturates at zero.
    pub fn update(&mut self, signals: &Signals, now: Instant) -> LoadLevel {
        let mut target = LoadLevel::Normal;
        let mut cause: Option<Cause> = None;
        for (spec, reading) in self.config.signals.iter().zip(self.readings.iter_mut()) {
            let value = spec.source.read(signals);
            let level = value.map_or(LoadLevel::Normal, |v| spec.thresholds.level_for(v));
            reading.value = value;
            reading.level = level;
            if level > target {
                target = level;
                cause = value.map(|value| Cause::Signal {
                    name: spec.name.clone(),
                    value,
                });
            }
        }

        if target > self.level {
            self.calm_since = None;
            self.streak_target = if self.streak == 0 {
                target
            } else {
                self.streak_target.min(target)
            };
            self.streak += 1;
            if self.streak >= self.config.escalate_after {
                let to = self.streak_target;
                self.streak = 0;
                self.change(to, cause.unwrap_or(Cause::Cooldown), now);
            }
            return self.level;
        }

        self.streak = 0;
        if self.level == LoadLevel::Normal {
            self.calm_since = None;
            return self.level;
        }
        if self.is_calm() {
            let calm_since = *self.calm_since.get_or_insert(now);
            if now.saturating_duration_since(calm_since) >= self.config.cooldown {
                let to = self.level.down();
                self.change(to, Cause::Cooldown, now);
                // The next step down needs a full cooldown of its own.
                self.calm_since = Some(now);
            }
        } else {
            self.calm_since = None;
        }
        self.level
    }

    /// Whether every signal is below its threshold for the current level × (1 − hysteresis).
    fn is_calm(&self) -> bool {
        let keep = 1.0 - self.config.hysteresis;
        self.config
            .signals
            .iter()
            .zip(&self.readings)
            .all(|(spec, reading)| match reading.value {
                None => true,
                Some(v) => v < spec.thresholds.threshold_of(self.level) * keep,
            })
    }

    fn change(&mut self, to: LoadLevel, cause: Cause, now: Instant) {
        if to == self.level {
            return;
        }
        self.last_transition = Some(Transition {
            at: now,
            from: self.level,
            to,
            cause,
        });
        self.transitions += 1;
        self.level = to;
        self.since = now;
    }

    /// The current level.
    pub fn level(&self) -> LoadLevel {
        self.level
    }

    /// When the current level was entered (or the detector built).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Each configured signal's last value and the level it mapped to.
    pub fn readings(&self) -> &[SignalReading] {
        &self.readings
    }

    /// The last level change, if any.
    pub fn last_transition(&self) -> Option<&Transition> {
        self.last_transition.as_ref()
    }

    /// How many level changes there have been.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }
}
