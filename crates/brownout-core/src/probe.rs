//! Signals that layers feed to the monitor: queueing delay and depth, and extra pressure sources.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::LoadLevel;
use crate::config::{ConfigError, check};

#[derive(Debug, Default)]
struct QueueCounters {
    /// Sum of queueing delays (ns) recorded since the last drain.
    delay_sum_ns: AtomicU64,
    /// Number of delays recorded since the last drain.
    delay_count: AtomicU64,
    /// Largest delay (ns) since the last drain.
    delay_max_ns: AtomicU64,
    /// Requests waiting now.
    depth: AtomicUsize,
}

/// A cheap handle through which an admission layer reports queueing delay and queue depth,
/// and the monitor reads them once per tick. Clones share the same counters.
///
/// Recording is three relaxed atomic operations; no lock, no allocation.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::QueueProbe;
///
/// let probe = QueueProbe::new();
/// probe.enqueued();
/// probe.dequeued(Duration::from_millis(30));
/// probe.dequeued(Duration::from_millis(10));
/// let window = probe.drain();
/// assert_eq!(window.mean_delay, Duration::from_millis(20));
/// assert_eq!(window.max_delay, Duration::from_millis(30));
/// assert_eq!(window.samples, 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct QueueProbe {
    counters: Arc<QueueCounters>,
}

/// What a [`QueueProbe`] saw over one monitor interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueWindow {
    /// Mean time requests that left the queue had waited (zero when none left).
    pub mean_delay: Duration,
    /// The longest of those waits.
    pub max_delay: Duration,
    /// How many requests left the queue.
    pub samples: u64,
    /// Requests waiting at the moment of the drain.
    pub depth: usize,
}

impl QueueProbe {
    /// A new probe with zeroed counters.
    pub fn new() -> QueueProbe {
        QueueProbe::default()
    }

    /// A request started waiting.
    #[inline]
    pub fn enqueued(&self) {
        self.counters.depth.fetch_add(1, Ordering::Relaxed);
    }

    /// A request stopped waiting after `waited` (admitted, rejected or cancelled).
    #[inline]
    pub fn dequeued(&self, waited: Duration) {
        self.counters
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
            .ok();
        self.record_delay(waited);
    }

    /// Records a queueing delay without touching the depth (for requests admitted at once,
    /// record `Duration::ZERO` so the mean reflects them).
    #[inline]
    pub fn record_delay(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.counters.delay_sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.counters.delay_count.fetch_add(1, Ordering::Relaxed);
        self.counters.delay_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.counters.depth.load(Ordering::Relaxed)
    }

    /// Reads and resets the delay counters (the depth is a gauge and is kept).
    pub fn drain(&self) -> QueueWindow {
        let c = &self.counters;
        let sum = c.delay_sum_ns.swap(0, Ordering::Relaxed);
        let count = c.delay_count.swap(0, Ordering::Relaxed);
        let max = c.delay_max_ns.swap(0, Ordering::Relaxed);
        QueueWindow {
            mean_delay: Duration::from_nanos(sum.checked_div(count).unwrap_or(0)),
            max_delay: Duration::from_nanos(max),
            samples: count,
            depth: c.depth.load(Ordering::Relaxed),
        }
    }
}

/// Any extra signal the monitor should watch (CPU, memory, open breakers, a fleet level…).
///
/// The monitor samples each source once per tick and maps the value onto a level through the
/// [`Thresholds`] it was registered with. Sampling must be cheap and must not block.
pub trait PressureSource: Send + Sync + 'static {
    /// A short name for snapshots and metrics labels (`"cpu"`, `"breakers"`).
    fn name(&self) -> &str;

    /// The current value, or `None` when it cannot be read this tick (then it is ignored).
    fn sample(&self) -> Option<f64>;
}

impl fmt::Debug for dyn PressureSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PressureSource")
            .field("name", &self.name())
            .finish()
    }
}

/// Four escalation thresholds mapping a signal's value onto a [`LoadLevel`]: a value at or
/// above `thresholds[i]` means at least level `i + 1` (Elevated … Emergency).
///
/// ```
/// use brownout_core::{LoadLevel, Thresholds};
///
/// let cpu = Thresholds::new([0.50, 0.65, 0.80, 0.90]).unwrap();
/// assert_eq!(cpu.level_for(0.3), LoadLevel::Normal);
/// assert_eq!(cpu.level_for(0.7), LoadLevel::High);
/// assert_eq!(cpu.level_for(0.95), LoadLevel::Emergency);
/// assert!(Thresholds::new([0.5, 0.4, 0.8, 0.9]).is_err()); // not increasing
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds([f64; 4]);

impl Thresholds {
    /// The default CPU and memory thresholds of the design (fractions): 50 / 65 / 80 / 90 %.
    pub const UTILIZATION: Thresholds = Thresholds([0.50, 0.65, 0.80, 0.90]);

    /// Thresholds for a source whose value is itself a level number (0 – 4).
    pub const LEVEL: Thresholds = Thresholds([1.0, 2.0, 3.0, 4.0]);

    /// Validated thresholds: finite, non-negative, strictly increasing.
    pub fn new(values: [f64; 4]) -> Result<Thresholds, ConfigError> {
        Thresholds::named("thresholds", values)
    }

    /// Like [`new`](Thresholds::new), with errors naming `field` (e.g. `latency_thresholds`).
    pub fn named(field: &str, values: [f64; 4]) -> Result<Thresholds, ConfigError> {
        let mut previous = f64::NEG_INFINITY;
        for (i, &v) in values.iter().enumerate() {
            let entry = format!("{field}[{}]", LoadLevel::ALL[i + 1]);
            check::at_least_f64(&entry, v, 0.0)?;
            if v <= previous {
                return Err(ConfigError::new(
                    entry,
                    format!("must be above the threshold of the level below ({v} <= {previous})"),
                ));
            }
            previous = v;
        }
        Ok(Thresholds(values))
    }

    /// The thresholds, Elevated first.
    pub const fn values(&self) -> [f64; 4] {
        self.0
    }

    /// The threshold to reach `level` (`0.0` for Normal).
    pub fn threshold_of(&self, level: LoadLevel) -> f64 {
        match level {
            LoadLevel::Normal => 0.0,
            other => self.0[other.index() - 1],
        }
    }

    /// The highest level whose threshold `value` reaches. NaN maps to Normal.
    pub fn level_for(&self, value: f64) -> LoadLevel {
        let reached = self.0.iter().take_while(|&&t| value >= t).count();
        LoadLevel::saturating_from_u8(reached as u8)
    }

    /// The thresholds with every entry multiplied by `factor` (for latency objectives).
    pub fn scaled(&self, factor: f64) -> Thresholds {
        Thresholds(self.0.map(|t| t * factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_depth_never_underflows() {
        let probe = QueueProbe::new();
        probe.dequeued(Duration::ZERO);
        assert_eq!(probe.depth(), 0);
        probe.enqueued();
        probe.enqueued();
        assert_eq!(probe.drain().depth, 2);
        assert_eq!(
            probe.drain(),
            QueueWindow {
                depth: 2,
                ..QueueWindow::default()
            }
        );
        probe.record_delay(Duration::MAX);
        assert_eq!(probe.drain().max_delay, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn thresholds() {
        for bad in [
            [f64::NAN, 1.0, 2.0, 3.0],
            [0.0, 0.0, 1.0, 2.0],
            [-1.0, 1.0, 2.0, 3.0],
            [1.0, 2.0, 3.0, f64::INFINITY],
            [3.0, 2.0, 1.0, 0.5],
        ] {
            assert!(Thresholds::new(bad).is_err(), "{bad:?}");
        }
        let err = Thresholds::named("queue_delay", [1.0, 2.0, 2.0, 3.0]).unwrap_err();
        assert_eq!(err.field(), "queue_delay[critical]");
        let t = Thresholds::LEVEL;
        assert_eq!(t.level_for(f64::NAN), LoadLevel::Normal);
        assert_eq!(t.level_for(3.0), LoadLevel::Critical);
        assert_eq!(t.threshold_of(LoadLevel::High), 2.0);
        assert_eq!(t.scaled(2.0).values(), [2.0, 4.0, 6.0, 8.0]);
    }
}
