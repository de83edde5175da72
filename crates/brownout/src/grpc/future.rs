//! The response future of [`GrpcRejection`](super::GrpcRejection).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use brownout_core::{BoxError, LoadSignal};
use http::Response;
use pin_project_lite::pin_project;

use super::layer::log_panic;
use super::status::{error_response, level_value, panic_response};
use crate::http::LOAD_LEVEL_HEADER;

pin_project! {
    /// The response future of [`GrpcRejection`](super::GrpcRejection): the inner
    /// response, or the trailers-only gRPC response for its error or panic.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future, which releases whatever the inner layers hold.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        signal: Option<LoadSignal>,
    }
}

pin_project! {
    #[project = StateProj]
    pub(super) enum State<F> {
        Running { #[pin] future: F },
        Panicked,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(state: State<F>, signal: Option<LoadSignal>) -> ResponseFuture<F> {
        ResponseFuture { state, signal }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.state.project() {
            StateProj::Panicked => panic_response(),
            StateProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => response,
                    Ok(Poll::Ready(Err(error))) => error_response(&*error.into()),
                    Err(panic) => {
                        log_panic(&*panic);
                        panic_response()
                    }
                }
            }
        };
        if let Some(signal) = this.signal {
            response
                .headers_mut()
                .entry(LOAD_LEVEL_HEADER)
                .or_insert_with(|| level_value(signal.level()));
        }
        Poll::Ready(Ok(response))
    }
}
