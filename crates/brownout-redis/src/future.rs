//! The response future of [`FleetRateLimit`](crate::FleetRateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use brownout_core::{BoxError, Rejected};
use pin_project_lite::pin_project;

pin_project! {
    /// The inner service's future when the request was admitted, or an immediate
    /// [`Rejected`] (`RateLimited`, with `retry_after`) when it was refused.
    ///
    /// # Cancel safety
    ///
    /// Holds nothing but the inner future: the token a request used is spent when it is
    /// admitted (a rate, not a concurrency limit), so dropping the future gives nothing back.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Rejected { rejected: Rejected },
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

    /// The rejection this future resolves to, if the request was refused.
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
        f.debug_struct("ResponseFuture")
            .field("rejection", &self.rejection())
            .finish()
    }
}
