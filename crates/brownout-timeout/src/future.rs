//! The response future of [`AdaptiveTimeout`](crate::AdaptiveTimeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::{BoxError, LoadLevel, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::{Shared, decision_metrics};

pin_project! {
    /// The future returned by [`AdaptiveTimeout`](crate::AdaptiveTimeout).
    ///
    /// The timer is created lazily: only when the inner future is not ready on a poll is a
    /// `tokio::time::Sleep` created, stored inline (no `Box`) and registered. The inner
    /// future is polled first on every poll, so when it is ready at the same instant as the
    /// deadline, **the response wins**.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the inner future and the timer (deregistering it); the
    /// layer holds nothing else. A dropped request is not recorded as a latency sample.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            fut: F,
            #[pin]
            timer: Timer,
            ctx: Ctx,
        },
        Rejected {
            rejected: Rejected,
        },
    }
}

/// How a request's timer starts: plain data, built before the inner `call` (see
/// `AdaptiveTimeout::call`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    // Not yet created: the inner future has not been pending yet.
    Unarmed { deadline: Instant },
    // Not yet created, and the arrival time was not read (no caller deadline, not a
    // latency sample): the deadline is `nanos` nanoseconds after the first pending poll.
    Deferred { nanos: u64 },
    // Neither a timeout nor a caller deadline.
    Never,
}

pin_project! {
    /// The timer of one request, created only when its response is not ready at once.
    #[project = TimerProj]
    pub(crate) enum Timer {
        // No `Sleep` yet.
        Idle { start: Start },
        Armed {
            #[pin]
            sleep: Sleep,
        },
    }
}

impl Timer {
    /// Polls the timer, creating (and registering) the `Sleep` on the first call: only
    /// requests whose response is not ready at once get here.
    #[inline]
    fn poll_expired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let start = match self.as_mut().project() {
            TimerProj::Armed { sleep } => return sleep.poll(cx),
            TimerProj::Idle { start } => *start,
        };
        let deadline = match start {
            Start::Never => return Poll::Pending,
            Start::Unarmed { deadline } => {
                self.set(Timer::Armed {
                    sleep: sleep_until(deadline),
                });
                None
            }
            Start::Deferred { nanos } => {
                let timeout = Duration::from_nanos(nanos);
                // The `Sleep` is built before the clock is read, and moved into place after:
                // the move then reads memory written ~25 ns earlier rather than at once
                // (an immediate copy of a just-returned `Sleep` stalls on store forwarding,
                // ~8 ns). Its deadline is then set by `reset`, which also registers it.
                let sleep = sleep_until(placeholder());
                let Some(deadline) = Instant::now().checked_add(timeout) else {
                    // Too far away to represent: no timer at all.
                    self.set(Timer::Idle {
                        start: Start::Never,
                    });
                    return Poll::Pending;
                };
                self.set(Timer::Armed { sleep });
                Some(deadline)
            }
        };
        match self.project() {
            TimerProj::Armed { mut sleep } => {
                if let Some(deadline) = deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep.poll(cx)
            }
            TimerProj::Idle { .. } => Poll::Pending,
        }
    }
}

/// A deadline for a `Sleep` that is reset before its first poll (never registered with it).
#[inline]
fn placeholder() -> Instant {
    static PLACEHOLDER: LazyLock<Instant> = LazyLock::new(Instant::now);
    *PLACEHOLDER
}

/// What the future needs to record its outcome.
pub(crate) struct Ctx {
    pub(crate) level: LoadLevel,
    /// Set for a latency sample only.
    pub(crate) sample: Option<Sample>,
    /// The layer's shared state (its estimator): set for a latency sample only, so the
    /// others carry no reference to the layer.
    pub(crate) shared: Option<Arc<Shared>>,
}

/// A request timed as a latency sample.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    /// When the request arrived (read at `call`).
    pub(crate) start: Instant,
    /// Record an expiry as a (censored) latency sample: only when the adaptive timer fired,
    /// not the caller's deadline.
    pub(crate) on_timeout: bool,
}

impl Ctx {
    /// Records the time since the sample's start, if this request is a latency sample.
    #[inline]
    fn record(&self, only_on_timeout: bool) {
        if let (Some(sample), Some(shared)) = (&self.sample, &self.shared)
            && (sample.on_timeout || !only_on_timeout)
        {
            let now = Instant::now();
            shared
                .estimator
                .record(now.saturating_duration_since(sample.start), now);
        }
    }

    #[inline]
    fn completed(&self, ok: bool) {
        if ok {
            self.record(false);
        }
        decision_metrics().admitted(None, self.level);
    }

    #[cold]
    fn expired(&self) -> Rejected {
        // The request took at least this long: a lower bound that lets the estimate grow
        // when latency rises above the timeout (otherwise it could never learn). Only when
        // the adaptive timer fired, not the caller's deadline.
        self.record(true);
        let rejected = Rejected::new(RejectReason::Timeout, self.level);
        decision_metrics().rejected(&rejected);
        rejected
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn running(fut: F, timer: Timer, ctx: Ctx) -> Self {
        ResponseFuture {
            state: State::Running { fut, timer, ctx },
        }
    }

    #[inline]
    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            state: State::Rejected { rejected },
        }
    }

    /// The rejection this future resolves to without calling the inner service, if the
    /// request was refused at once (deadline already passed, or a zero timeout).
    pub fn rejection(&self) -> Option<&Rejected> {
        match &self.state {
            State::Rejected { rejected } => Some(rejected),
            State::Running { .. } => None,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (fut, timer, ctx) = match self.project().state.project() {
            StateProj::Running { fut, timer, ctx } => (fut, timer, ctx),
            StateProj::Rejected { rejected } => return Poll::Ready(Err(Box::new(*rejected))),
        };
        // The response first: it wins a tie with the deadline.
        if let Poll::Ready(result) = fut.poll(cx) {
            ctx.completed(result.is_ok());
            return Poll::Ready(result.map_err(Into::into));
        }
        if timer.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Err(Box::new(ctx.expired())))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Running { timer, ctx, .. } => {
                let timer = match timer {
                    Timer::Idle {
                        start: Start::Unarmed { .. } | Start::Deferred { .. },
                    } => "unarmed",
                    Timer::Armed { .. } => "armed",
                    Timer::Idle {
                        start: Start::Never,
                    } => "none",
                };
                f.debug_struct("ResponseFuture::Running")
                    .field("timer", &timer)
                    .field("sample_start", &ctx.sample.map(|s| s.start))
                    .field("level", &ctx.level)
                    .finish_non_exhaustive()
            }
            State::Rejected { rejected } => f
                .debug_tuple("ResponseFuture::Rejected")
                .field(rejected)
                .finish(),
        }
    }
}
