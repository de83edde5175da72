//! The response future of [`LoadShed`](crate::LoadShed).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use brownout_core::{BoxError, Rejected};
use pin_project_lite::pin_project;

pin_project! {
    /// The future returned by [`LoadShed`](crate::LoadShed): the inner service's future
    /// when the request was admitted, or an immediate [`Rejected`] error when it was shed.
    ///
    /// The admitted path stores the inner future inline (no allocation); the rejected path
    /// boxes the error once, when polled, like tower's `Overloaded`.
    ///
    /// # Cancel safety
    ///
    /// Holds nothing but the inner future: dropping it at any point releases whatever the
    /// inner future holds and nothing else.
    pub struct ResponseFuture<F> {
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

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn called(fut: F) -> Self {
        ResponseFuture {
            state: State::Called { fut },
        }
    }

    #[inline]
    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            state: State::Rejected { rejected },
        }
    }

    /// The rejection this future resolves to, if the request was shed.
    pub fn rejection(&self) -> Option<&Rejected> {
        match &self.state {
            State::Called { .. } => None,
            State::Rejected { rejected } => Some(rejected),
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
        match self.project().state.project() {
            StateProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Rejected { rejected } => Poll::Ready(Err(Box::new(*rejected))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Called { .. } => f.write_str("ResponseFuture::Called"),
            State::Rejected { rejected } => f
                .debug_tuple("ResponseFuture::Rejected")
                .field(rejected)
                .finish(),
        }
    }
}
