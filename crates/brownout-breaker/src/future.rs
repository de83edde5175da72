//! The response future of [`CircuitBreak`](crate::CircuitBreak).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_core::{BoxError, ClassifyOutcome, Outcome, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::breaker::Slot;
use crate::fallback::Remember;

/// Records the outcome of one admitted call; a probe whose future is dropped before it
/// finished gives its half-open permit back (RAII).
pub(crate) struct CallGuard<K, M>
where
    K: fmt::Debug + Send + Sync,
{
    slot: Arc<Slot<K, M>>,
    word: u64,
    start: Option<Instant>,
    probe: bool,
    done: bool,
}

impl<K, M> CallGuard<K, M>
where
    K: fmt::Debug + Send + Sync,
{
    #[inline(always)]
    pub(crate) fn new(slot: Arc<Slot<K, M>>, word: u64, probe: bool) -> CallGuard<K, M> {
        let start = (probe || slot.core.times_calls).then(Instant::now);
        CallGuard {
            slot,
            word,
            start,
            probe,
            done: false,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.map(|s| s.elapsed());
        if self.probe {
            self.slot.on_probe_result(self.word, outcome, elapsed);
        } else {
            self.slot.on_call_result(self.word, outcome, elapsed);
        }
    }
}

impl<K, M> Drop for CallGuard<K, M>
where
    K: fmt::Debug + Send + Sync,
{
    fn drop(&mut self) {
        if self.probe && !self.done {
            // Cancelled (or the inner future panicked): the slot goes back to the round.
            self.slot.release_probe(self.word);
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreak`](crate::CircuitBreak): the inner call (with
    /// its outcome recorded when it completes), or the fallback for a refused call.
    ///
    /// # Cancel safety
    ///
    /// Dropping it at any point is safe: a dropped half-open probe gives its permit back, a
    /// dropped normal call is not recorded.
    pub struct ResponseFuture<Fut, FbFut, C, K, M>
    where
        K: fmt::Debug,
        K: Send,
        K: Sync,
    {
        #[pin]
        state: State<Fut, FbFut, C, K, M>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, FbFut, C, K, M>
    where
        K: fmt::Debug,
        K: Send,
        K: Sync,
    {
        Called {
            #[pin]
            fut: Fut,
            guard: CallGuard<K, M>,
            classifier: C,
            probe_timer: Option<Pin<Box<Sleep>>>,
        },
        Fallback {
            #[pin]
            fut: FbFut,
        },
        Done,
    }
}

impl<Fut, FbFut, C, K, M> ResponseFuture<Fut, FbFut, C, K, M>
where
    K: fmt::Debug + Send + Sync,
{
    // Always inlined, so the future is built in place: moved through a call, its fields
    // were reloaded with wider loads than the stores that wrote them (store-forwarding
    // stalls, a third of the closed-path time).
    #[inline(always)]
    pub(crate) fn called(fut: Fut, guard: CallGuard<K, M>, classifier: C) -> Self {
        let probe_timer = if guard.probe {
            Some(probe_timer(&guard))
        } else {
            None
        };
        ResponseFuture {
            state: State::Called {
                fut,
                guard,
                classifier,
                probe_timer,
            },
        }
    }

    pub(crate) fn fallback(fut: FbFut) -> Self {
        ResponseFuture {
            state: State::Fallback { fut },
        }
    }
}

/// The timer of a half-open probe (rare: kept out of the inlined call path).
#[cold]
#[inline(never)]
fn probe_timer<K, M>(guard: &CallGuard<K, M>) -> Pin<Box<Sleep>>
where
    K: fmt::Debug + Send + Sync,
{
    Box::pin(tokio::time::sleep(guard.slot.core.probe_timeout()))
}

impl<Fut, FbFut, C, K, M> fmt::Debug for ResponseFuture<Fut, FbFut, C, K, M>
where
    K: fmt::Debug + Send + Sync,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { guard, .. } if guard.probe => "probe",
            State::Called { .. } => "called",
            State::Fallback { .. } => "fallback",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<Fut, FbFut, C, K, M, Res, E> Future for ResponseFuture<Fut, FbFut, C, K, M>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    FbFut: Future<Output = Result<Res, BoxError>>,
    C: ClassifyOutcome<Res, E>,
    K: fmt::Debug + Send + Sync,
    M: Remember<Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        match state.as_mut().project() {
            StateProj::Called {
                fut,
                guard,
                classifier,
                probe_timer,
            } => {
                if let Poll::Ready(result) = fut.poll(cx) {
                    let outcome = classifier.classify(&result);
                    if let (Outcome::Success, Ok(response)) = (outcome, &result) {
                        guard.slot.memo.remember(response);
                    }
                    guard.finish(outcome);
                    state.set(State::Done);
                    return Poll::Ready(result.map_err(Into::into));
                }
                if let Some(timer) = probe_timer
                    && timer.as_mut().poll(cx).is_ready()
                {
                    // A hung probe: count it as a failure (reopens) and answer with a timeout.
                    guard.finish(Outcome::Failure);
                    let level = guard.slot.core.signal.level();
                    state.set(State::Done);
                    return Poll::Ready(Err(Box::new(Rejected::new(RejectReason::Timeout, level))));
                }
                Poll::Pending
            }
            StateProj::Fallback { fut } => {
                let out = std::task::ready!(fut.poll(cx));
                state.set(State::Done);
                Poll::Ready(out)
            }
            StateProj::Done => {
                Poll::Ready(Err("circuit breaker future polled after completion".into()))
            }
        }
    }
}
