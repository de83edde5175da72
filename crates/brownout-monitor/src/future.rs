//! The response future of [`MonitorService`](crate::MonitorService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use brownout_core::{ClassifyOutcome, Outcome};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::recorder::{Recorder, Shard};

/// Counts one request in flight from `call` until it completes or is dropped.
///
/// Completing records the outcome, and the latency when the request is a sample (one in
/// `every`, see [`SampleRate`](brownout_core::clock::SampleRate)); dropping without
/// completing (the caller went away, a timeout fired, the inner future panicked) counts the
/// request as cancelled and records no latency sample.
pub(crate) struct InFlight {
    shard: Arc<Shard>,
    start: Start,
    end: End,
}

/// How a request ended, for the counters its drop updates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Not completed (yet): dropped now, it counts as cancelled and finished.
    Open,
    /// Completed (success or failure): counts as finished.
    Completed,
    /// Completed with a rejection: counted in `rejected` only.
    Rejected,
}

/// When a sampled request started, on the monitor's [`LatencyClock`](crate::LatencyClock);
/// `NotTimed` for the others (no clock read at all).
#[derive(Clone, Copy)]
enum Start {
    NotTimed,
    Tokio(Instant),
    Tsc(u64),
}

/// A request's start, read before the inner `call` (a plain value: nothing to undo if that
/// call panics); [`InFlight::begin`] counts it once the call returned.
#[derive(Clone, Copy)]
pub(crate) struct Started {
    shard: usize,
    start: Start,
}

impl Started {
    /// Reads the clock of the calling thread's shard when `timed`.
    #[inline]
    pub(crate) fn now(recorder: &Recorder, timed: bool) -> Started {
        let (shard, clock) = recorder.shard_index();
        let start = if !timed {
            Start::NotTimed
        } else {
            match clock {
                None => Start::Tokio(Instant::now()),
                Some(clock) => Start::Tsc(clock.raw()),
            }
        };
        Started { shard, start }
    }
}

impl InFlight {
    /// Counts the request in flight from now (after the inner `call` returned).
    #[inline]
    pub(crate) fn begin(recorder: &Recorder, started: Started) -> InFlight {
        // The clone is the in-flight count (see `Shard`).
        let shard = recorder.shard_at(started.shard);
        InFlight {
            shard: shard.clone(),
            start: started.start,
            end: End::Open,
        }
    }

    #[inline]
    fn complete(mut self, outcome: Outcome) {
        let shard = &self.shard;
        if outcome == Outcome::Rejected {
            // A load-control decision: no latency sample, not a failure (see `Outcome`),
            // and not `finished`: one counter per rejection.
            self.end = End::Rejected;
            shard.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.end = End::Completed;
        if outcome == Outcome::Failure {
            shard.failures.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = match (self.start, &shard.tsc) {
            (Start::NotTimed, _) => return,
            (Start::Tsc(start), Some(clock)) => clock.delta_as_nanos(start, clock.raw()),
            (Start::Tokio(start), _) => {
                u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            (Start::Tsc(_), None) => return, // not built that way; a shard's clock never changes
        };
        shard.histogram.record_nanos(nanos);
    }
}

impl Drop for InFlight {
    #[inline]
    fn drop(&mut self) {
        match self.end {
            End::Rejected => {}
            End::Completed => {
                self.shard.finished.fetch_add(1, Ordering::Relaxed);
            }
            End::Open => {
                self.shard.cancelled.fetch_add(1, Ordering::Relaxed);
                self.shard.finished.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pin_project! {
    /// The response future of [`MonitorService`](crate::MonitorService): the inner future,
    /// measured.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it completes decrements the in-flight count and counts the request
    /// as cancelled (not as a success, and without a latency sample).
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline(always)]
    pub(crate) fn new(inner: F, in_flight: InFlight, classifier: C) -> Self {
        ResponseFuture {
            inner,
            in_flight: Some(in_flight),
            classifier,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: ClassifyOutcome<T, E>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(in_flight) = this.in_flight.take() {
            in_flight.complete(this.classifier.classify(&result));
        }
        Poll::Ready(result)
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("completed", &self.in_flight.is_none())
            .finish_non_exhaustive()
    }
}
