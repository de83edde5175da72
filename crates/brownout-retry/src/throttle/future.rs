//! The response future of [`AdaptiveThrottle`](super::AdaptiveThrottle).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use brownout_core::{BoxError, Rejected};
use pin_project_lite::pin_project;

use super::accept::AcceptClassifier;
use super::state::ThrottleState;

pin_project! {
    /// Either a local refusal or the inner call, whose answer is recorded in the window.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before the answer records nothing: a cancelled request is neither a
    /// request nor an accept (a hedge's cancelled loser does not look like a refusal).
    pub struct ResponseFuture<F, A> {
        #[pin]
        kind: Kind<F, A>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, A> {
        Rejected { rejected: Option<Rejected> },
        Called { #[pin] future: F, accept: A, state: Arc<ThrottleState> },
    }
}

impl<F, A> ResponseFuture<F, A> {
    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                rejected: Some(rejected),
            },
        }
    }

    pub(crate) fn called(future: F, accept: A, state: Arc<ThrottleState>) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                accept,
                state,
            },
        }
    }
}

impl<F, A, Res, E> Future for ResponseFuture<F, A>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    A: AcceptClassifier<Res, E>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { rejected } => Poll::Ready(Err(match rejected.take() {
                Some(rejected) => rejected.into(),
                None => "throttle future polled after completion".into(),
            })),
            KindProj::Called {
                future,
                accept,
                state,
            } => {
                let result = ready!(future.poll(cx));
                let verdict = accept.verdict(&result);
                if let Some(level) = verdict.level {
                    state.remember_level(level);
                }
                state.record(verdict.accepted);
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}

impl<F, A> fmt::Debug for ResponseFuture<F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Called { .. } => "called",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
