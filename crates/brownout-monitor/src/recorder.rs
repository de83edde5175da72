//! The counters the hot path writes and the detector drains.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use crate::histogram::LatencyHistogram;

/// Shared by every clone of every [`MonitorService`](crate::MonitorService) of one monitor.
pub(crate) struct Recorder {
    pub(crate) histogram: LatencyHistogram,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) failures: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            histogram: LatencyHistogram::new(),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("in_flight", &self.in_flight)
            .field("failures", &self.failures)
            .field("cancelled", &self.cancelled)
            .finish_non_exhaustive()
    }
}
