//! The response future of [`PriorityAdmission`](crate::PriorityAdmission).

use brownout_core::sync::Arc;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker, ready};

use brownout_core::{BoxError, LoadLevel, Priority, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::limit::Outcome;
use crate::shared::{GRANTED, Permit, Shared, Slot, WaitPoll};

/// A queued request's place; dropping it frees the place (or passes on a permit granted
/// at the same moment).
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    id: u64,
    class: Priority,
    level: LoadLevel,
    active: bool,
}

impl Waiter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        slot: Arc<Slot>,
        id: u64,
        class: Priority,
        level: LoadLevel,
    ) -> Waiter {
        Waiter {
            shared,
            slot,
            id,
            class,
            level,
            active: true,
        }
    }
}

impl Waiter {
    /// The waiter's fate, or `Pending(expiry)` (its waker is stored for the hand-off).
    #[inline]
    pub(crate) fn poll_grant(&self, waker: &Waker) -> WaitPoll {
        if self.slot.state.load(Ordering::Acquire) == GRANTED {
            WaitPoll::Granted
        } else {
            self.shared
                .poll_waiter(self.class, self.id, &self.slot, waker)
        }
    }

    /// The waiter was granted a permit: it is now the caller's.
    pub(crate) fn take_permit(&mut self) -> Permit {
        self.active = false;
        Permit::new(Arc::clone(&self.shared), self.class)
    }

    /// The waiter was refused (already counted when decided): its rejection.
    pub(crate) fn take_rejection(&mut self, reason: RejectReason) -> Rejected {
        self.active = false;
        self.shared
            .rejection_counted(reason, self.level, self.class)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.active {
            self.shared.cancel_waiter(self.class, self.id, &self.slot);
        }
    }
}

pin_project! {
    /// The response future of [`PriorityAdmission`](crate::PriorityAdmission): rejected at
    /// once, waiting in the queue, or running the inner service with a permit.
    ///
    /// # Cancel safety
    ///
    /// Dropping it at any point releases what it holds: a queue place at once, a permit
    /// (which passes on to the best waiter), including a permit granted at the same moment.
    pub struct ResponseFuture<F, S, Req> {
        #[pin]
        state: State<F, S, Req>,
        // The running request's permit, kept beside the state rather than in its `Running`
        // variant: the inner future then moves into the variant on its own, which LLVM
        // can build in place. Dropped after the state (the inner future goes first).
        permit: Option<Permit>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, Req> {
        Rejected { error: Option<Rejected> },
        Waiting {
            waiter: Waiter,
            #[pin]
            sleep: Sleep,
            armed: Option<Instant>,
            svc: Option<S>,
            req: Option<Req>,
        },
        Running {
            #[pin]
            fut: F,
        },
        Done,
    }
}

impl<F, S, Req> ResponseFuture<F, S, Req> {
    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            state: State::Rejected {
                error: Some(rejected),
            },
            permit: None,
        }
    }

    #[inline(always)]
    pub(crate) fn running(fut: F, permit: Option<Permit>) -> Self {
        ResponseFuture {
            state: State::Running { fut },
            permit,
        }
    }

    pub(crate) fn waiting(waiter: Waiter, svc: S, req: Req) -> Self {
        ResponseFuture {
            state: State::Waiting {
                waiter,
                // Armed with the real expiry at the first poll.
                sleep: tokio::time::sleep_until(Instant::now()),
                armed: None,
                svc: Some(svc),
                req: Some(req),
            },
            permit: None,
        }
    }
}

impl<F, S, Req> fmt::Debug for ResponseFuture<F, S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Waiting { .. } => "waiting",
            State::Running { .. } => "running",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, S, Req, T, E> Future for ResponseFuture<F, S, Req>
where
    S: Service<Req, Future = F, Response = T, Error = E>,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Rejected { error } => {
                    let error: BoxError = match error.take() {
                        Some(rejected) => rejected.into(),
                        None => "admission future polled after completion".into(),
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => {
                    return Poll::Ready(Err("admission future polled after completion".into()));
                }
                StateProj::Running { fut } => {
                    let output = ready!(fut.poll(cx));
                    if let Some(permit) = this.permit {
                        permit.complete(match output {
                            Ok(_) => Outcome::Success,
                            Err(_) => Outcome::Error,
                        });
                    }
                    this.state.set(State::Done);
                    // Dropping the permit gives it back and wakes the next waiter.
                    *this.permit = None;
                    return Poll::Ready(output.map_err(Into::into));
                }
                StateProj::Waiting {
                    waiter,
                    mut sleep,
                    armed,
                    svc,
                    req,
                } => {
                    match waiter.poll_grant(cx.waker()) {
                        WaitPoll::Granted => {
                            // Held by the future from here: a panic in the inner `call`
                            // unwinds through the future's owner, which drops it.
                            *this.permit = Some(waiter.take_permit());
                            let (Some(mut svc), Some(req)) = (svc.take(), req.take()) else {
                                this.state.set(State::Done);
                                *this.permit = None;
                                return Poll::Ready(Err(
                                    "admission future polled after completion".into(),
                                ));
                            };
                            let fut = svc.call(req);
                            this.state.set(State::Running { fut });
                        }
                        WaitPoll::Rejected(reason) => {
                            let rejected = waiter.take_rejection(reason);
                            this.state.set(State::Done);
                            return Poll::Ready(Err(rejected.into()));
                        }
                        WaitPoll::Pending(expiry) => {
                            if *armed != Some(expiry) {
                                sleep.as_mut().reset(expiry);
                                *armed = Some(expiry);
                            }
                            if sleep.poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                            // The expiry passed: the next round rejects it (or finds it granted).
                        }
                    }
                }
            }
        }
    }
}
