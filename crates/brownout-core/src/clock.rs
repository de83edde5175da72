//! Reading time on the request path: cheap, shared by the layers, and still pausable in tests.
//!
//! Every brownout layer times requests with [`tokio::time::Instant`], so that tests and
//! simulations can pause and advance time. A read of that clock is a `clock_gettime` call
//! (through the vDSO): 23–25 ns on the project's 2-vCPU VM, 15–25 ns on bare metal, far more
//! than the rest of a layer's hot path. Tokio's `test-util` feature (turned on in every
//! workspace dev build by feature unification) adds nothing measurable until some runtime in
//! the process pauses time: `now()` first checks a process-wide "ever paused" flag; only
//! after a pause does it look up the runtime's clock (thread-local + mutex, +7 ns). A user's
//! release build therefore pays exactly `std::time::Instant::now()`.
//!
//! The way to make timing cheap is to **read the clock less**, not to read another clock:
//!
//! - **Read it only when the value is used.** A timeout whose response is ready at once
//!   needs no deadline; a request that is not a latency sample needs no start time.
//! - **Time one request in N** ([`SampleRate`] + [`Sampler`]): latency percentiles and
//!   latency estimates need a few hundred samples per interval, not every request. `N`
//!   adapts once per interval to the request rate ([`SampleRate::adapt`]), so a quiet service
//!   still times every request and a busy one pays the two clock reads on 1/N of them.
//!   Deciding costs a decrement of a per-service counter (no atomic read-modify-write).
//! - [`Stopwatch`] bundles the two: it reads the clock at the start only for a sampled
//!   request, and at the end only if it started.
//!
//! Rejected alternatives (measured on the same VM, see `docs/benchmarks/brownout-monitor.md`):
//!
//! - **The CPU's time-stamp counter** (`quanta`, 9.6 ns a read): 2.5× cheaper per read, but
//!   it does not follow tokio's paused clock. Calibrating it against tokio's clock at each
//!   monitor tick cannot fix that: under a paused clock a request's virtual duration (e.g.
//!   100 ms of `sleep`) passes in a few real microseconds, so TSC deltas inside an interval
//!   are wrong whatever the calibration. It stays an opt-in for the monitor
//!   (`LatencyClock::Tsc`), and is still paid on every sampled request only.
//! - **One clock read per request shared through a request extension**: inserting into
//!   `http::Extensions` allocates (the map and the boxed value) on a request that has none,
//!   and generic `Service<Req>` layers have no extensions at all.
//! - **A coarse clock** (an atomic updated every millisecond by a task): one atomic load per
//!   read, but a background task per runtime, 1 ms resolution, and 1 000 wake-ups per second
//!   of virtual time in paused tests.
//!
//! ```
//! use brownout_core::clock::{SampleRate, Sampler, Stopwatch};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let rate = SampleRate::new(64, 256); // at most 1 in 64, aim at 256 samples per interval
//! let mut sampler = Sampler::new();
//! assert_eq!(rate.every(), 1); // quiet until told otherwise: every request is timed
//!
//! // One interval saw 10 000 requests: time one in 39 from now on.
//! assert_eq!(rate.adapt(10_000), 39);
//! let timed = (0..390).filter(|_| sampler.sample(&rate)).count();
//! assert_eq!(timed, 10);
//!
//! let watch = Stopwatch::start_if(sampler.sample(&rate));
//! tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! if let Some(elapsed) = watch.elapsed() {
//!     assert_eq!(elapsed.as_millis(), 5); // paused clock: exact
//! }
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Now, on tokio's (pausable) clock: `tokio::time::Instant::now()`.
///
/// One `clock_gettime` in a release build; read it only when the value is used.
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

/// The current time, read from tokio's clock at most once, and only if asked for.
///
/// Lets a layer pass "now" to code that may or may not need it (a caller-deadline parser,
/// a sampled latency start) without paying for a clock read when nobody does.
///
/// ```
/// use brownout_core::clock::LazyNow;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut now = LazyNow::new();
/// assert_eq!(now.peek(), None); // not read yet
/// let first = now.get();
/// tokio::time::advance(std::time::Duration::from_secs(1)).await;
/// assert_eq!(now.get(), first); // read once, then cached
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LazyNow {
    now: Option<Instant>,
}

impl LazyNow {
    /// Nothing read yet.
    #[inline]
    pub const fn new() -> LazyNow {
        LazyNow { now: None }
    }

    /// The time, reading tokio's clock on the first call only.
    #[inline]
    pub fn get(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    /// The time if it was read, without reading it.
    #[inline]
    pub fn peek(&self) -> Option<Instant> {
        self.now
    }
}

/// How many requests in one are timed, shared by every clone of a layer and adapted once per
/// interval to the request rate.
///
/// Starts at 1 (time everything). [`adapt`](SampleRate::adapt) sets it to
/// `requests / target`, clamped to `[1, max_every]`. Reading it is one relaxed atomic load of
/// a read-mostly cache line.
pub struct SampleRate {
    every: AtomicU32,
    max_every: u32,
    target: u64,
}

impl SampleRate {
    /// A rate that times at most one request in `max_every` (at least 1) and aims at
    /// `target` samples (at least 1) per interval.
    pub fn new(max_every: u32, target: u64) -> SampleRate {
        SampleRate {
            every: AtomicU32::new(1),
            max_every: max_every.max(1),
            target: target.max(1),
        }
    }

    /// One request in this many is timed now (at least 1).
    #[inline]
    pub fn every(&self) -> u32 {
        self.every.load(Ordering::Relaxed).max(1)
    }

    /// The most `every` can become.
    pub fn max_every(&self) -> u32 {
        self.max_every
    }

    /// The samples per interval this rate aims at.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Sets the rate from the number of requests seen over the last interval, so that the
    /// next interval yields about `target` samples; returns the new `every`.
    pub fn adapt(&self, requests: u64) -> u32 {
        let every = (requests / self.target).clamp(1, u64::from(self.max_every)) as u32;
        if every != self.every.load(Ordering::Relaxed) {
            self.every.store(every, Ordering::Relaxed);
        }
        every
    }
}

impl Default for SampleRate {
    /// At most one in 64, aiming at 256 samples per interval.
    fn default() -> Self {
        SampleRate::new(64, 256)
    }
}

impl fmt::Debug for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SampleRate")
            .field("every", &self.every())
            .field("max_every", &self.max_every)
            .field("target", &self.target)
            .finish()
    }
}

/// Picks the sampled requests of one service (one clone): a countdown, no atomic write.
///
/// The first request after [`new`](Sampler::new) is always sampled, so a service clone per
/// connection times each connection's first request. Clones of a service should start a
/// fresh `Sampler` rather than copy the countdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sampler {
    countdown: u32,
}

impl Sampler {
    /// A sampler whose next request is sampled.
    pub const fn new() -> Sampler {
        Sampler { countdown: 0 }
    }

    /// Whether this request is a sample, at `rate`.
    #[inline]
    pub fn sample(&mut self, rate: &SampleRate) -> bool {
        if self.countdown == 0 {
            self.countdown = rate.every() - 1;
            true
        } else {
            self.countdown -= 1;
            false
        }
    }
}

/// A start time read from tokio's clock only for sampled requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopwatch {
    start: Option<Instant>,
}

impl Stopwatch {
    /// Reads the clock if `sampled`, otherwise does nothing.
    #[inline]
    pub fn start_if(sampled: bool) -> Stopwatch {
        Stopwatch {
            start: sampled.then(Instant::now),
        }
    }

    /// A stopwatch started at `start`.
    pub const fn started_at(start: Instant) -> Stopwatch {
        Stopwatch { start: Some(start) }
    }

    /// When it started, if it did.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.start
    }

    /// Whether it started (the request is a sample).
    #[inline]
    pub fn is_running(&self) -> bool {
        self.start.is_some()
    }

    /// The time since the start (one clock read), or `None` without reading the clock when
    /// it never started.
    #[inline]
    pub fn elapsed(&self) -> Option<Duration> {
        self.start.map(|start| start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rate_starts_at_one_and_clamps() {
        let rate = SampleRate::new(0, 0);
        assert_eq!((rate.every(), rate.max_every(), rate.target()), (1, 1, 1));
        assert_eq!(rate.adapt(u64::MAX), 1);
        let rate = SampleRate::new(64, 256);
        assert_eq!(rate.adapt(0), 1);
        assert_eq!(rate.adapt(511), 1);
        assert_eq!(rate.adapt(512), 2);
        assert_eq!(rate.adapt(u64::MAX), 64);
        assert_eq!(rate.every(), 64);
        assert_eq!(SampleRate::default().max_every(), 64);
    }

    #[test]
    fn sampler_samples_the_first_request_then_one_in_every() {
        let rate = SampleRate::new(64, 1);
        let mut sampler = Sampler::new();
        assert!(sampler.sample(&rate));
        assert!(sampler.sample(&rate), "every = 1: all sampled");
        rate.adapt(4);
        let picks: Vec<bool> = (0..9).map(|_| sampler.sample(&rate)).collect();
        // The countdown set at every = 1 runs out first, then one in four.
        assert_eq!(
            picks,
            [true, false, false, false, true, false, false, false, true]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stopwatch_reads_virtual_time_only_when_running() {
        let idle = Stopwatch::start_if(false);
        assert!(!idle.is_running());
        assert_eq!(idle.elapsed(), None);
        let running = Stopwatch::start_if(true);
        tokio::time::advance(Duration::from_millis(7)).await;
        assert_eq!(running.elapsed(), Some(Duration::from_millis(7)));
        let at = Stopwatch::started_at(now());
        assert!(at.start().is_some());
    }

    proptest! {
        #[test]
        fn sampled_share_matches_the_rate(every in 1u32..200, n in 1u32..5_000) {
            let rate = SampleRate::new(u32::MAX, 1);
            rate.adapt(u64::from(every));
            let mut sampler = Sampler::new();
            let sampled = (0..n).filter(|_| sampler.sample(&rate)).count() as u32;
            prop_assert_eq!(sampled, n.div_ceil(every));
        }
    }
}
