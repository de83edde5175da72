//! Measures a service's latency, errors, in-flight requests and queueing delay, and publishes
//! a [`LoadLevel`](brownout_core::LoadLevel) that every other brownout layer reads.
//!
//! ```
//! use std::time::Duration;
//! use brownout_core::LoadLevel;
//! use brownout_monitor::Monitor;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let monitor = Monitor::builder().latency_objective(Duration::from_millis(50)).build()?;
//! let signal = monitor.signal(); // hand this to the shed / admission / timeout layers
//! let mut svc = ServiceBuilder::new()
//!     .layer(monitor.layer())
//!     .service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n * 2) });
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//! assert_eq!(signal.level(), LoadLevel::Normal);
//! # Ok(()) }
//! ```
//!
//! # Why it exists
//!
//! Overload has to be *detected* before it can be handled. Tower has no equivalent: its
//! `ConcurrencyLimit` and `LoadShed` react to a fixed limit or to the inner service's
//! readiness, and know nothing of latency objectives, error rates or queueing delay.
//! [`MonitorLayer`] only observes (it never refuses work, adds no error and takes nothing in
//! `poll_ready`); the [`Monitor`] turns what it saw into one of five levels with hysteresis,
//! and publishes it through a [`LoadSignal`](brownout_core::LoadSignal).
//!
//! # What is measured
//!
//! - **Latency** of completed requests (success or failure), from `call` to the
//!   completion of the response future, into a lock-free
//!   log-linear [`LatencyHistogram`] (one atomic add per sample, ≤ 1.6 % quantile error).
//!   p50/p95/p99 are computed once per tick. Latency is **sampled**: every request while the
//!   service is quiet, one in `N` once an interval sees more than 256 requests
//!   (`N = requests / 256`, at most [`max_sample_every`](MonitorBuilder::max_sample_every),
//!   default 64), because the two clock reads that time a request cost more than everything
//!   else the layer does (see [`brownout_core::clock`]). `requests` counts every request the
//!   monitor saw finish, rejected and cancelled ones included: the start time is read at
//!   `call`, before a layer further in refuses the request, so a flood of rejections (the
//!   monitor outside the shed layer, in DESIGN.md order) is sampled too instead of being
//!   timed one by one. Only completions give latency samples, so when most requests are
//!   rejected `N` is capped to keep at least `min(256, 4 × min_latency_samples)` timed
//!   completions per interval (all of them when fewer complete). Outcomes, in-flight and the
//!   error rate count every request. The latency signal (p95 against
//!   1.0 / 1.5 / 2 / 3 × an objective) is on only when an objective is set.
//! - **Outcome**, through a [`ClassifyOutcome`] ([`ErrIsFailure`] by default; [`HttpOutcome`]
//!   counts 5xx but not 4xx), as an error rate over the interval once at least
//!   `min_error_samples` requests completed (5 / 10 / 25 / 50 %). A brownout refusal
//!   ([`Outcome::Rejected`]) is neither a failure nor a latency sample. The classifiers are
//!   brownout-core's, shared with the circuit breaker: one value configures both.
//! - **In flight**, with an RAII guard: a response future dropped before completing counts
//!   as *cancelled*, not as a success, and leaves no latency sample.
//! - **Queueing delay and depth**, from a [`QueueProbe`](brownout_core::QueueProbe) that the
//!   admission layer feeds (mean delay 25 / 50 / 75 / 100 ms, tuned in the overload
//!   simulation so that the ordinary queueing of a fully used server does not read as
//!   overload; see [`DEFAULT_QUEUE_DELAY`]).
//! - Any [`PressureSource`](brownout_core::PressureSource) with its
//!   [`Thresholds`](brownout_core::Thresholds); with the `system` feature, process / cgroup v2
//!   CPU and memory (50 / 65 / 80 / 90 %).
//!
//! # How the level moves
//!
//! See [`Detector`]: escalate (possibly several levels at once) after `escalate_after`
//! consecutive ticks over a threshold; step down one level per `cooldown` once every signal
//! is below its threshold × (1 − `hysteresis`). Default cooldown 250 ms (see
//! [`DEFAULT_COOLDOWN`]). Level changes are `tracing` info events.
//!
//! # Metrics
//!
//! Emitted once per tick, through handles registered once (at the first tick), so the
//! request path never touches the `metrics` recorder:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `brownout_level` | gauge | — |
//! | `brownout_level_changes_total` | counter | `from`, `to` |
//! | `brownout_in_flight` | gauge | `layer="monitor"` |
//! | `brownout_queue_depth` | gauge | `layer="monitor"` |
//! | `brownout_queue_delay_seconds` | histogram (the interval's mean delay) | `layer="monitor"` |
//! | `brownout_latency_seconds` | histogram: the interval's timed requests, one `record_many` per non-empty bucket | `layer="monitor"` |
//! | [`brownout_latency_quantile_seconds`](LATENCY_QUANTILE_SECONDS) | gauge: p50 / p95 / p99 of the interval | `layer="monitor"`, `quantile` |
//! | [`brownout_latency_sample_every`](LATENCY_SAMPLE_EVERY) | gauge: one request in this many was timed | `layer="monitor"` |
//!
//! The latency histogram's count is the number of *timed* requests; multiply by
//! `brownout_latency_sample_every` for an estimate of all requests.
//!
//! # Cancel safety
//!
//! Dropping a [`future::ResponseFuture`] at any point decrements the
//! in-flight count and counts the request as cancelled.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod detector;
pub mod future;
mod histogram;
mod layer;
mod monitor;
mod recorder;
mod snapshot;
#[cfg(any(feature = "system", test))]
pub mod system;

use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_core::clock::Sampler;
use tower_service::Service;

/// The result classifier, shared with the circuit breaker (defined once, in
/// [`brownout_core::outcome`]).
pub use brownout_core::outcome::{ClassifyOutcome, ErrIsFailure, HttpOutcome, Outcome};
pub use config::{
    DEFAULT_COOLDOWN, DEFAULT_ERROR_RATE, DEFAULT_HYSTERESIS, DEFAULT_INTERVAL,
    DEFAULT_LATENCY_FACTORS, DEFAULT_LATENCY_SAMPLE_TARGET, DEFAULT_MAX_SAMPLE_EVERY,
    DEFAULT_MIN_ERROR_SAMPLES, DEFAULT_MIN_LATENCY_SAMPLES, DEFAULT_QUEUE_DELAY,
    DEFAULT_TRANSITIONS, MonitorBuilder,
};
pub use detector::{Cause, Detector, SignalReading, Signals, Transition};
pub use histogram::{BUCKETS, HistogramCounts, LatencyHistogram, Quantiles};
pub use layer::MonitorLayer;
pub use monitor::{LATENCY_QUANTILE_SECONDS, LATENCY_SAMPLE_EVERY, Monitor};
pub use recorder::LatencyClock;
pub use snapshot::Snapshot;

use crate::future::{InFlight, ResponseFuture, Started};
use crate::recorder::Recorder;

/// The service built by [`MonitorLayer`]: forwards every request to `inner` and records its
/// latency, outcome and in-flight count.
///
/// It keeps the inner service's error type (it adds no failure), forwards `poll_ready`
/// unchanged, and allocates nothing per request.
pub struct MonitorService<S, C = ErrIsFailure> {
    inner: S,
    recorder: Arc<Recorder>,
    classifier: C,
    /// Picks the timed requests of this clone (a countdown, no atomic).
    sampler: Sampler,
}

brownout_core::impl_inner_access!(MonitorService<S, C>);

impl<S: Clone, C: Clone> Clone for MonitorService<S, C> {
    fn clone(&self) -> Self {
        MonitorService {
            inner: self.inner.clone(),
            recorder: self.recorder.clone(),
            classifier: self.classifier.clone(),
            sampler: Sampler::new(),
        }
    }
}

impl<S, C, Req> Service<Req> for MonitorService<S, C>
where
    S: Service<Req>,
    C: ClassifyOutcome<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let timed = self.sampler.sample(&self.recorder.rate);
        // The start time is read before the inner call, the in-flight guard made after it:
        // no guard lives across the call, so a panic there leaves nothing counted.
        let started = Started::now(&self.recorder, timed);
        let inner = self.inner.call(req);
        let in_flight = InFlight::begin(&self.recorder, started);
        ResponseFuture::new(inner, in_flight, self.classifier.clone())
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for MonitorService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorService")
            .field("inner", &self.inner)
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}
