//! The response future of [`ShutdownGuard`](crate::ShutdownGuard).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use brownout_core::{BoxError, Rejected};
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;

use crate::Aborted;
use crate::handle::{ABORT_SHARDS, Shared};

/// Holds one in-flight slot; releases it on drop, whatever the outcome.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    settled: bool,
}

impl InFlight {
    /// Holds the in-flight count the caller has just taken (`started` incremented).
    #[inline]
    pub(crate) fn adopt(shared: Arc<Shared>) -> InFlight {
        InFlight {
            shared,
            settled: false,
        }
    }

    pub(crate) fn complete(mut self) {
        // Counted by the release in `drop` (completed = finished − cancelled − aborted).
        self.settled = true;
    }

    /// Settles the slot as aborted and returns the error the request resolves to.
    pub(crate) fn abort_error(mut self) -> BoxError {
        let rejected = self.shared.rejection();
        self.shared.aborted.fetch_add(1, Ordering::Relaxed);
        self.settled = true;
        Box::new(Aborted::new(rejected))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped before resolving: cancelled by the caller, or the inner future panicked.
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        // The counter above happens-before this release, so the drain sees final counts.
        self.shared.release();
    }
}

pin_project! {
    /// The response future of [`ShutdownGuard`](crate::ShutdownGuard).
    ///
    /// Either a refusal (resolves at once to a [`Rejected`] with reason `ShuttingDown`), or
    /// an admitted request: it polls the inner future and holds an in-flight slot until the
    /// inner future resolves, this future is dropped, or the drain deadline aborts it.
    ///
    /// # Abort at the drain deadline
    ///
    /// When it is pending at the deadline it is woken and resolves to an [`Aborted`] error
    /// (whose source is the `ShuttingDown` rejection); the inner future is dropped then.
    /// If the inner future is ready in the same poll, the response wins.
    ///
    /// # Cancel safety
    ///
    /// Dropping it at any point releases the in-flight slot (counted as cancelled).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateOwned]
    enum State<F> {
        Running {
            #[pin]
            future: F,
            #[pin]
            abort: AbortWatch,
            // Taken when the inner future resolves.
            guard: Option<InFlight>,
        },
        Refused {
            rejected: Rejected,
        },
        Done,
    }
}

impl<F> ResponseFuture<F> {
    #[inline(always)]
    pub(crate) fn running(future: F, guard: Option<InFlight>) -> ResponseFuture<F> {
        ResponseFuture {
            state: State::Running {
                future,
                abort: AbortWatch::new(),
                guard,
            },
        }
    }

    pub(crate) fn refused(rejected: Rejected) -> ResponseFuture<F> {
        ResponseFuture {
            state: State::Refused { rejected },
        }
    }
}

pin_project! {
    /// Wakes a pending request at the drain deadline.
    ///
    /// The `Notified` is created at the first `Pending`, so requests that are ready at once
    /// never touch it, and re-polled only when the task's waker changes.
    pub(crate) struct AbortWatch {
        #[pin]
        notified: Option<OwnedNotified>,
        registered: Option<Waker>,
    }
}

impl AbortWatch {
    pub(crate) fn new() -> AbortWatch {
        AbortWatch {
            notified: None,
            registered: None,
        }
    }

    /// After the owner saw `Pending`: whether the drain deadline has passed. When it has
    /// not, the task is registered to be woken when it does.
    pub(crate) fn poll_abort(self: Pin<&mut Self>, slot: &InFlight, cx: &mut Context<'_>) -> bool {
        let mut this = self.project();
        let shared = &slot.shared;
        if this.notified.is_none() {
            // Created before reading `aborting`: an abort that happens after the read is
            // then seen by the poll below.
            let notify = shared.abort[shard_of(slot)].clone();
            this.notified.set(Some(notify.notified_owned()));
        }
        let stale = this
            .registered
            .as_ref()
            .is_none_or(|waker| !waker.will_wake(cx.waker()));
        if stale && let Some(notified) = this.notified.as_pin_mut() {
            if notified.poll(cx).is_ready() {
                return true;
            }
            *this.registered = Some(cx.waker().clone());
        }
        shared.aborting.load(Ordering::SeqCst)
    }
}

/// Picks the abort shard for a request from the address of its (pinned) slot.
fn shard_of(slot: &InFlight) -> usize {
    let addr = slot as *const InFlight as usize as u64;
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % ABORT_SHARDS
}

impl<F> ResponseFuture<F> {
    /// Polls the request. With `keep_slot`, a successful response comes back with its
    /// in-flight slot still held (for a body that outlives the response future); otherwise
    /// the slot is settled as completed and `None` is returned with it.
    pub(crate) fn poll_slot<T, E>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        keep_slot: bool,
    ) -> Poll<Result<(T, Option<InFlight>), BoxError>>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        let mut state = self.project().state;
        let refused = match state.as_mut().project() {
            StateProj::Running {
                future,
                abort,
                guard,
            } => {
                let Some(slot) = guard.as_ref() else {
                    panic!("brownout_shutdown::ResponseFuture polled after completion")
                };
                if let Poll::Ready(result) = future.poll(cx) {
                    // Settled in place: no move of the (large) state on the common path.
                    let slot = guard.take();
                    return Poll::Ready(match result {
                        Ok(response) if keep_slot => Ok((response, slot)),
                        other => {
                            if let Some(slot) = slot {
                                slot.complete();
                            }
                            other.map(|response| (response, None)).map_err(Into::into)
                        }
                    });
                } else if abort.poll_abort(slot, cx) {
                    None
                } else {
                    return Poll::Pending;
                }
            }
            StateProj::Refused { rejected } => Some(*rejected),
            StateProj::Done => panic!("brownout_shutdown::ResponseFuture polled after completion"),
        };
        // Refused, or aborted: drop the inner future now, not when the caller drops us.
        let old = state.project_replace(State::Done);
        match (refused, old) {
            (Some(rejected), _) => Poll::Ready(Err(Box::new(rejected))),
            (
                None,
                StateOwned::Running {
                    guard: Some(slot), ..
                },
            ) => Poll::Ready(Err(slot.abort_error())),
            (None, _) => unreachable!("only a running request is aborted"),
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
        self.poll_slot(cx, false)
            .map(|result| result.map(|(response, _)| response))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Refused { .. } => "refused",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
