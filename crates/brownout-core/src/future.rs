//! The response future of a layer whose only decision is "call the inner service, or refuse
//! at once": shedding, fleet rate limits.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::{BoxError, Rejected};

pin_project! {
    /// The inner service's future when the request was admitted, or an immediate
    /// [`Rejected`] error when it was refused.
    ///
    /// The admitted path stores the inner future inline (no allocation); the refused path
    /// boxes the error once, when polled, like tower's `Overloaded`.
    ///
    /// # Cancel safety
    ///
    /// Holds nothing but the inner future: dropping it at any point releases whatever the
    /// inner future holds and nothing else.
    pub struct MaybeRejected<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            fut: F,
        },
        Rejected {
            rejected: Rejected,
        },
    }
}

impl<F> MaybeRejected<F> {
    /// The admitted request's inner future.
    #[inline]
    pub fn called(fut: F) -> Self {
        MaybeRejected {
            state: State::Called { fut },
        }
    }

    /// A refusal, returned as the error when polled.
    #[inline]
    pub fn rejected(rejected: Rejected) -> Self {
        MaybeRejected {
            state: State::Rejected { rejected },
        }
    }

    /// The rejection this future resolves to, if the request was refused.
    pub fn rejection(&self) -> Option<&Rejected> {
        match &self.state {
            State::Called { .. } => None,
            State::Rejected { rejected } => Some(rejected),
        }
    }
}

impl<F, T, E> Future for MaybeRejected<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Rejected { rejected } => Poll::Ready(Err(Box::new(*rejected))),
        }
    }
}

impl<F> fmt::Debug for MaybeRejected<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Called { .. } => f.write_str("MaybeRejected::Called"),
            State::Rejected { rejected } => f
                .debug_tuple("MaybeRejected::Rejected")
                .field(rejected)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::ready;
    use std::task::Waker;

    use super::*;
    use crate::{LoadLevel, RejectReason};

    fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        std::pin::pin!(fut).poll(&mut cx)
    }

    #[test]
    fn called_forwards_the_inner_result_and_boxes_its_error() {
        let ok = MaybeRejected::called(ready(Ok::<_, std::io::Error>(7)));
        assert!(ok.rejection().is_none());
        assert!(matches!(poll_once(ok), Poll::Ready(Ok(7))));
        let err = MaybeRejected::called(ready(Err::<(), _>(std::io::Error::other("down"))));
        match poll_once(err) {
            Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "down"),
            other => panic!("expected the inner error, got {other:?}"),
        }
    }

    #[test]
    fn rejected_resolves_to_the_rejection_at_once() {
        let rejected = Rejected::new(RejectReason::Shed, LoadLevel::High);
        let fut = MaybeRejected::<std::future::Pending<Result<(), BoxError>>>::rejected(rejected);
        assert_eq!(fut.rejection(), Some(&rejected));
        match poll_once(fut) {
            Poll::Ready(Err(e)) => assert_eq!(Rejected::find_in_box(&*e), Some(&rejected)),
            other => panic!("expected the rejection, got {other:?}"),
        }
    }
}
