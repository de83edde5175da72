//! The counters the hot path writes and the detector drains, striped across shards.
//!
//! Each thread records into one shard (picked once per thread, round robin), so threads on
//! different shards never write the same cache line: not the histogram buckets, not the
//! in-flight and failure counters, not even the reference count the response future holds.
//! The tick sums the shards.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use brownout_core::clock::SampleRate;

use crate::histogram::{HistogramCounts, LatencyHistogram};

/// The clock that times requests.
///
/// ```
/// use brownout_monitor::{LatencyClock, Monitor};
///
/// let monitor = Monitor::builder()
///     .latency_clock(LatencyClock::Tsc)
///     .manual_ticks()
///     .build()
///     .unwrap();
/// # drop(monitor);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LatencyClock {
    /// `tokio::time::Instant` (the default): follows tokio's paused / advanced clock, so
    /// latency is deterministic in tests and simulations. Costs two `clock_gettime` calls per
    /// *timed* request (15–25 ns each with a vDSO, more in some VMs); with sampling
    /// ([`MonitorBuilder::max_sample_every`](crate::MonitorBuilder::max_sample_every)) a busy
    /// service times one request in up to 64.
    #[default]
    Tokio,
    /// The CPU's time-stamp counter through `quanta` (falls back to the monotonic clock where
    /// there is no usable TSC): 9.6 ns a read against 24 ns on the project's VM, paid on
    /// timed requests only. Calibrated once per
    /// process at build (up to 200 ms). **Not** affected by tokio's paused time: use it in
    /// production, not in paused-time tests.
    Tsc,
}

/// Most shards a recorder uses by default (8 KiB of histogram each).
const MAX_DEFAULT_SHARDS: usize = 16;

/// One stripe of counters. Aligned so that two shards never share a cache line (128 bytes
/// covers adjacent-line prefetching).
///
/// In flight = the shard's `Arc` count − 1: each response future holds a clone of its
/// shard's `Arc` (it needs it to record its outcome anyway) from `call` until it completes or
/// is dropped, and only the recorder holds the other reference. So the in-flight count costs
/// no counter of its own. `finished` (one increment when the future completes or is dropped,
/// rejections excepted: they are counted in `rejected` alone) never resets; the tick keeps
/// the previous total to compute per-interval counts.
#[repr(align(128))]
pub(crate) struct Shard {
    /// `Some` when latency is timed with the CPU counter ([`LatencyClock::Tsc`]).
    pub(crate) tsc: Option<quanta::Clock>,
    pub(crate) histogram: LatencyHistogram,
    pub(crate) finished: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    /// Completed with [`Outcome::Rejected`](crate::Outcome::Rejected).
    pub(crate) rejected: AtomicU64,
}

impl Shard {
    fn new(clock: LatencyClock) -> Shard {
        Shard {
            tsc: match clock {
                LatencyClock::Tokio => None,
                LatencyClock::Tsc => Some(quanta::Clock::new()),
            },
            histogram: LatencyHistogram::new(),
            finished: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

/// Requests in flight on `shard`: the response futures holding a clone of its `Arc` (the
/// recorder holds the one other reference).
fn in_flight(shard: &Arc<Shard>) -> usize {
    Arc::strong_count(shard).saturating_sub(1)
}

/// Shared by every clone of every [`MonitorService`](crate::MonitorService) of one monitor.
pub(crate) struct Recorder {
    shards: Box<[Arc<Shard>]>,
    mask: usize,
    /// One request in `rate.every()` is timed; adapted at each tick.
    pub(crate) rate: SampleRate,
}

/// What one drain of the recorder found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Drained {
    pub(crate) failures: u64,
    pub(crate) cancelled: u64,
    pub(crate) rejected: u64,
    /// `finished` summed over the stripes (a running total, never reset): completed and
    /// cancelled requests, not rejected ones.
    pub(crate) finished_total: u64,
    pub(crate) in_flight: usize,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// The default number of shards: the available parallelism, rounded up to a power of two,
/// at most 16.
pub(crate) fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_DEFAULT_SHARDS)
        .next_power_of_two()
}

impl Recorder {
    /// A recorder with `shards` stripes (rounded up to a power of two, at least 1).
    pub(crate) fn new(shards: usize, clock: LatencyClock, rate: SampleRate) -> Recorder {
        let shards = shards.max(1).next_power_of_two();
        Recorder {
            shards: (0..shards).map(|_| Arc::new(Shard::new(clock))).collect(),
            mask: shards - 1,
            rate,
        }
    }

    /// The shard of the calling thread.
    #[cfg(test)]
    pub(crate) fn shard(&self) -> &Arc<Shard> {
        self.shard_at(self.shard_index().0)
    }

    /// The index of the calling thread's shard, and that shard's CPU clock (`None`: time on
    /// tokio's clock).
    #[inline]
    pub(crate) fn shard_index(&self) -> (usize, Option<&quanta::Clock>) {
        let index = if self.mask == 0 {
            0
        } else {
            THREAD_INDEX.try_with(|i| *i).unwrap_or(0) & self.mask
        };
        (index, self.shards[index].tsc.as_ref())
    }

    /// The shard at `index` (from [`shard_index`](Recorder::shard_index)).
    #[inline]
    pub(crate) fn shard_at(&self, index: usize) -> &Arc<Shard> {
        &self.shards[index & self.mask]
    }

    /// Requests in flight now, over all shards.
    pub(crate) fn in_flight(&self) -> usize {
        self.shards.iter().map(in_flight).sum()
    }

    /// Moves every shard's latency counts into `counts` and resets the failure,
    /// cancellation and rejection counters.
    pub(crate) fn drain(&self, counts: &mut HistogramCounts) -> Drained {
        counts.clear();
        let mut drained = Drained::default();
        for shard in self.shards.iter() {
            shard.histogram.drain_add_into(counts);
            drained.failures += shard.failures.swap(0, Ordering::Relaxed);
            drained.cancelled += shard.cancelled.swap(0, Ordering::Relaxed);
            drained.rejected += shard.rejected.swap(0, Ordering::Relaxed);
            drained.in_flight += in_flight(shard);
            drained.finished_total += shard.finished.load(Ordering::Relaxed);
        }
        drained
    }

    /// The number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("shards", &self.shards.len())
            .field("in_flight", &self.in_flight())
            .field("sample_every", &self.rate.every())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shards_are_summed_and_threads_spread_over_them() {
        let recorder = Recorder::new(3, LatencyClock::Tokio, SampleRate::default());
        assert_eq!(recorder.shards(), 4);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let shard = recorder.shard();
                    for _ in 0..100 {
                        shard.histogram.record(Duration::from_micros(50));
                    }
                    shard.failures.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        let used = recorder
            .shards
            .iter()
            .filter(|s| s.failures.load(Ordering::Relaxed) > 0)
            .count();
        assert!(used > 1, "8 threads all landed on one shard");
        let mut counts = HistogramCounts::new();
        let drained = recorder.drain(&mut counts);
        assert_eq!(counts.count(), 800);
        assert_eq!(drained.failures, 8);
        assert_eq!(recorder.drain(&mut counts).failures, 0);
        assert_eq!(counts.count(), 0);
        assert!(default_shards().is_power_of_two());
    }
}
