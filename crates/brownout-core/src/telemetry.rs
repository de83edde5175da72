//! Metric names and pre-registered decision counters shared by every layer.
//!
//! Every admit/reject decision is counted through the [`metrics`] facade. Counters are
//! registered lazily, once per (outcome, reason, class, level) combination, so the hot path
//! is an atomic load and an increment: no key building, no allocation.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `brownout_requests_total` | counter | `layer`, `outcome` (`admitted`/`rejected`), `priority`, `level` |
//! | `brownout_rejections_total` | counter | `layer`, `reason`, `priority`, `level` |
//! | `brownout_level` | gauge | — (0 Normal … 4 Emergency) |
//! | `brownout_level_changes_total` | counter | `from`, `to` |
//! | `brownout_in_flight` | gauge | `layer` |
//! | `brownout_queue_depth` | gauge | `layer` |
//! | `brownout_queue_delay_seconds` | histogram | `layer` |
//! | `brownout_latency_seconds` | histogram | `layer`, `quantile` summary at each tick |
//! | `brownout_breaker_state` | gauge | `breaker` (0 closed, 1 half-open, 2 open) |

use std::fmt;
use std::sync::OnceLock;

use metrics::{Counter, counter};

use crate::{LoadLevel, Priority, RejectReason, Rejected};

/// `brownout_requests_total{layer, outcome, priority, level}`.
pub const REQUESTS_TOTAL: &str = "brownout_requests_total";
/// `brownout_rejections_total{layer, reason, priority, level}`.
pub const REJECTIONS_TOTAL: &str = "brownout_rejections_total";
/// `brownout_level`: the current level as a number.
pub const LEVEL: &str = "brownout_level";
/// `brownout_level_changes_total{from, to}`.
pub const LEVEL_CHANGES_TOTAL: &str = "brownout_level_changes_total";
/// `brownout_in_flight{layer}`.
pub const IN_FLIGHT: &str = "brownout_in_flight";
/// `brownout_queue_depth{layer}`.
pub const QUEUE_DEPTH: &str = "brownout_queue_depth";
/// `brownout_queue_delay_seconds{layer}`.
pub const QUEUE_DELAY_SECONDS: &str = "brownout_queue_delay_seconds";
/// `brownout_latency_seconds{layer}`.
pub const LATENCY_SECONDS: &str = "brownout_latency_seconds";
/// `brownout_breaker_state{breaker}`: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "brownout_breaker_state";

const CLASSES: usize = Priority::COUNT + 1; // + "unknown"
const LEVELS: usize = LoadLevel::COUNT;
const REASONS: usize = RejectReason::ALL.len();

fn priority_label(index: usize) -> &'static str {
    Priority::from_rank(index as u8).map_or("unknown", Priority::as_str)
}

fn priority_index(priority: Option<Priority>) -> usize {
    priority.map_or(Priority::COUNT, Priority::index)
}

fn reason_index(reason: RejectReason) -> usize {
    RejectReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
}

/// The decision counters of one layer (`layer` label), shared by all its clones.
///
/// ```
/// use brownout_core::{telemetry::DecisionMetrics, LoadLevel, Priority, RejectReason, Rejected};
///
/// let metrics = DecisionMetrics::new("shed");
/// metrics.admitted(Some(Priority::High), LoadLevel::Normal);
/// metrics.rejected(&Rejected::new(RejectReason::Shed, LoadLevel::High).with_priority(Priority::Low));
/// ```
pub struct DecisionMetrics {
    layer: &'static str,
    admitted: [OnceLock<Counter>; CLASSES * LEVELS],
    rejected_requests: [OnceLock<Counter>; CLASSES * LEVELS],
    rejections: [OnceLock<Counter>; REASONS * CLASSES * LEVELS],
}

impl DecisionMetrics {
    /// Counters labelled `layer = layer`.
    pub fn new(layer: &'static str) -> DecisionMetrics {
        DecisionMetrics {
            layer,
            admitted: std::array::from_fn(|_| OnceLock::new()),
            rejected_requests: std::array::from_fn(|_| OnceLock::new()),
            rejections: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The `layer` label.
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// Counts one admitted request.
    #[inline]
    pub fn admitted(&self, priority: Option<Priority>, level: LoadLevel) {
        let p = priority_index(priority);
        let l = level.index();
        self.admitted[p * LEVELS + l]
            .get_or_init(|| self.request_counter("admitted", p, l))
            .increment(1);
    }

    /// Counts one rejection (in both the requests and the rejections counters).
    #[inline]
    pub fn rejected(&self, rejected: &Rejected) {
        let p = priority_index(rejected.priority());
        let l = rejected.level().index();
        let r = reason_index(rejected.reason());
        self.rejected_requests[p * LEVELS + l]
            .get_or_init(|| self.request_counter("rejected", p, l))
            .increment(1);
        self.rejections[(r * CLASSES + p) * LEVELS + l]
            .get_or_init(|| {
                counter!(
                    REJECTIONS_TOTAL,
                    "layer" => self.layer,
                    "reason" => RejectReason::ALL[r].as_str(),
                    "priority" => priority_label(p),
                    "level" => LoadLevel::ALL[l].as_str(),
                )
            })
            .increment(1);
    }

    fn request_counter(&self, outcome: &'static str, p: usize, l: usize) -> Counter {
        counter!(
            REQUESTS_TOTAL,
            "layer" => self.layer,
            "outcome" => outcome,
            "priority" => priority_label(p),
            "level" => LoadLevel::ALL[l].as_str(),
        )
    }
}

impl fmt::Debug for DecisionMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionMetrics")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_cover_every_combination() {
        let m = DecisionMetrics::new("test");
        for level in LoadLevel::ALL {
            for p in Priority::ALL.map(Some).into_iter().chain([None]) {
                m.admitted(p, level);
                for reason in RejectReason::ALL {
                    let mut r = Rejected::new(reason, level);
                    if let Some(p) = p {
                        r = r.with_priority(p);
                    }
                    m.rejected(&r);
                }
            }
        }
        assert_eq!(m.layer(), "test");
        assert_eq!(priority_label(Priority::COUNT), "unknown");
    }
}
