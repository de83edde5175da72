//! [`AdmissionHandle`]: observe and close the shared admission state.

use brownout_core::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use brownout_core::{LoadLevel, Priority};

use crate::shared::Shared;

/// A cheap, cloneable handle on the state shared by every clone of one layer.
///
/// Read the current limit, in-flight and queued requests (per class), counters, and
/// [`close`](AdmissionHandle::close) it at shutdown.
#[derive(Debug, Clone)]
pub struct AdmissionHandle {
    shared: Arc<Shared>,
}

/// A snapshot of the admission state and its counters since the layer was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionStats {
    /// The concurrency limit in force.
    pub limit: usize,
    /// Requests running now.
    pub in_flight: usize,
    /// Requests running now, per class (Critical first).
    pub in_flight_by_class: [usize; Priority::COUNT],
    /// Requests waiting now, per class (Critical first).
    pub queued_by_class: [usize; Priority::COUNT],
    /// Queue capacity at the current level.
    pub queue_capacity: usize,
    /// The current load level.
    pub level: LoadLevel,
    /// Requests admitted (at once or after waiting).
    pub admitted: u64,
    /// Requests that had to wait.
    pub queued_total: u64,
    /// Queued requests evicted by more important ones (counted in `rejected_queue_full` too).
    pub evicted: u64,
    /// Rejections because the queue was full.
    pub rejected_queue_full: u64,
    /// Rejections because a request waited too long or its deadline passed.
    pub rejected_queue_timeout: u64,
    /// Rejections by a rate limit.
    pub rejected_rate_limited: u64,
    /// Rejections after `close`.
    pub rejected_shutting_down: u64,
    /// Whether the layer was closed.
    pub closed: bool,
}

impl AdmissionStats {
    /// Requests waiting now, all classes.
    pub fn queued(&self) -> usize {
        self.queued_by_class.iter().sum()
    }
}

impl AdmissionHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> AdmissionHandle {
        AdmissionHandle { shared }
    }

    /// The concurrency limit in force (adaptive limits change it; lowered to ¾ while a
    /// latency probe's requests run).
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Requests of `class` running now.
    pub fn in_flight_of(&self, class: Priority) -> usize {
        self.shared.in_flight_of(class)
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// Requests of `class` waiting now.
    pub fn queued_of(&self, class: Priority) -> usize {
        self.shared.queued_of(class)
    }

    /// Whether CoDel currently sees a standing queue (always false with a fixed timeout).
    pub fn standing_queue(&self) -> bool {
        self.shared.standing_queue()
    }

    /// A snapshot of everything above and the counters.
    pub fn stats(&self) -> AdmissionStats {
        let s = &self.shared;
        let level = s.signal.level();
        let t = &s.totals;
        AdmissionStats {
            limit: s.limit(),
            in_flight: s.in_flight(),
            in_flight_by_class: Priority::ALL.map(|p| s.in_flight_of(p)),
            queued_by_class: Priority::ALL.map(|p| s.queued_of(p)),
            queue_capacity: s.queue_capacity(level),
            level,
            admitted: t.admitted.load(Ordering::Relaxed),
            queued_total: t.queued.load(Ordering::Relaxed),
            evicted: t.evicted.load(Ordering::Relaxed),
            rejected_queue_full: t.rejected[0].load(Ordering::Relaxed),
            rejected_queue_timeout: t.rejected[1].load(Ordering::Relaxed),
            rejected_rate_limited: t.rejected[2].load(Ordering::Relaxed),
            rejected_shutting_down: t.rejected[3].load(Ordering::Relaxed),
            closed: s.is_closed(),
        }
    }

    /// Refuses every queued request at once and every new one, with
    /// `Rejected { ShuttingDown }` and the builder's `shutdown_retry_after`. Requests already
    /// running are not touched. Idempotent.
    pub fn close(&self) {
        self.shared
            .close(self.shared.settings().shutdown_retry_after);
    }

    /// [`close`](Self::close) with a specific `retry_after`.
    pub fn close_with_retry_after(&self, retry_after: Duration) {
        self.shared.close(retry_after);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}
