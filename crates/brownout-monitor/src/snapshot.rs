//! [`Snapshot`]: what a [`Monitor`](crate::Monitor) knows, for health and metrics endpoints.

use brownout_core::{LoadLevel, QueueWindow};
use tokio::time::Instant;

use crate::detector::{SignalReading, Transition};
use crate::histogram::Quantiles;

/// The state of a [`Monitor`](crate::Monitor) at one moment
/// ([`Monitor::snapshot`](crate::Monitor::snapshot)).
///
/// Measurements (`signals`, `latency`, `completed`, …) are those of the last tick's interval.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The level readers see (the forced one under an override).
    pub level: LoadLevel,
    /// The level the detector computed.
    pub detected: LoadLevel,
    /// When the detector entered `detected`.
    pub since: Instant,
    /// The operator override, if one is in force.
    pub forced: Option<LoadLevel>,
    /// Each configured signal's last value and the level it maps to.
    pub signals: Vec<SignalReading>,
    /// Requests in flight now.
    pub in_flight: usize,
    /// p50 / p95 / p99 latency over the last interval.
    pub latency: Quantiles,
    /// Requests completed in the last interval (all of them; `latency.samples` of them
    /// were timed).
    pub completed: u64,
    /// One request in this many was timed during the last interval (see
    /// [`MonitorBuilder::max_sample_every`](crate::MonitorBuilder::max_sample_every)).
    pub sample_every: u32,
    /// Of which failures (per the outcome classifier).
    pub failures: u64,
    /// Requests dropped before completing in the last interval.
    pub cancelled: u64,
    /// The queue probe's window at the last tick.
    pub queue: QueueWindow,
    /// The last level changes, oldest first (bounded; 32 by default).
    pub transitions: Vec<Transition>,
    /// Ticks so far.
    pub ticks: u64,
    /// When the last tick ran.
    pub last_tick: Option<Instant>,
}
