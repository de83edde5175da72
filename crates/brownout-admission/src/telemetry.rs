//! The admission layer's gauges and queueing-delay histogram, next to the decision counters
//! of [`DecisionMetrics`].
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`IN_FLIGHT`] `brownout_in_flight` | gauge | `layer="admission"`, `[name]`, `priority` |
//! | [`QUEUE_DEPTH`] `brownout_queue_depth` | gauge | `layer`, `[name]`, `priority` |
//! | [`QUEUE_DELAY_SECONDS`] `brownout_queue_delay_seconds` | histogram | `layer`, `[name]`, `priority` |
//! | [`CONCURRENCY_LIMIT`] `brownout_concurrency_limit` | gauge | `layer`, `[name]` |
//!
//! Handles are registered lazily, once per class, the first time a value is recorded (so a
//! recorder installed after the layer was built still receives them), then kept: recording
//! is an atomic load and the handle's own update, no key building, no allocation.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use brownout_core::Priority;
use brownout_core::telemetry::{
    CONCURRENCY_LIMIT, DecisionMetrics, IN_FLIGHT, QUEUE_DELAY_SECONDS, QUEUE_DEPTH,
};
use metrics::{Gauge, Histogram, Label, gauge, histogram};

const CLASSES: usize = Priority::COUNT;

pub(crate) struct Telemetry {
    in_flight: [OnceLock<Gauge>; CLASSES],
    queue_depth: [OnceLock<Gauge>; CLASSES],
    queue_delay: [OnceLock<Histogram>; CLASSES],
    limit: OnceLock<Gauge>,
}

fn labels(metrics: &DecisionMetrics, class: usize) -> Vec<Label> {
    let mut labels = metrics.labels();
    labels.push(Label::from_static_parts(
        "priority",
        Priority::ALL[class].as_str(),
    ));
    labels
}

impl Telemetry {
    pub(crate) fn new() -> Telemetry {
        Telemetry {
            in_flight: Default::default(),
            queue_depth: Default::default(),
            queue_delay: Default::default(),
            limit: OnceLock::new(),
        }
    }

    /// Requests of `class` running now.
    #[inline]
    pub(crate) fn in_flight(&self, metrics: &DecisionMetrics, class: usize, value: usize) {
        self.in_flight[class]
            .get_or_init(|| gauge!(IN_FLIGHT, labels(metrics, class)))
            .set(value as f64);
    }

    /// Requests of `class` waiting now.
    #[inline]
    pub(crate) fn queue_depth(&self, metrics: &DecisionMetrics, class: usize, value: usize) {
        self.queue_depth[class]
            .get_or_init(|| gauge!(QUEUE_DEPTH, labels(metrics, class)))
            .set(value as f64);
    }

    /// How long a request of `class` waited before it was admitted (zero when admitted at
    /// once), refused or timed out.
    #[inline]
    pub(crate) fn queue_delay(&self, metrics: &DecisionMetrics, class: usize, waited: Duration) {
        self.queue_delay[class]
            .get_or_init(|| histogram!(QUEUE_DELAY_SECONDS, labels(metrics, class)))
            .record(waited.as_secs_f64());
    }

    /// The concurrency limit in force.
    pub(crate) fn limit(&self, metrics: &DecisionMetrics, value: usize) {
        self.limit
            .get_or_init(|| gauge!(CONCURRENCY_LIMIT, metrics.labels()))
            .set(value as f64);
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}
