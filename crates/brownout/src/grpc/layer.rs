//! [`GrpcRejectionLayer`]: the outermost layer of a tonic server's brownout stack.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Context, Poll};

use brownout_core::{BoxError, LoadSignal};
use http::Response;
use tower_layer::Layer;
use tower_service::Service;

use super::future::{ResponseFuture, State};

/// Answers every error of the inner stack with a trailers-only gRPC response and every
/// panic with `INTERNAL`, so the service's error type is `Infallible`; optionally stamps
/// `x-load-level` on every response (as initial metadata).
///
/// Put it on top of the brownout layers of a tonic server
/// (`Server::builder().layer(GrpcRejectionLayer::new()).layer(..)`): without it, a
/// [`Rejected`](brownout_core::Rejected) reaching tonic is not a `tonic::Status`, so the
/// stream is reset and the client sees a transport error instead of a retryable
/// `UNAVAILABLE` with pushback.
///
/// It works over plain `http` types: the response body only needs `Default` (tonic's
/// `tonic::body::Body` is empty by default), so it needs no tonic dependency.
///
/// # Errors
///
/// None: the error type is `Infallible`. A `Rejected` anywhere in an error's `source()`
/// chain (e.g. a shutdown `Aborted`) is answered as that rejection; any other error becomes
/// `UNKNOWN`, including a `tonic::Status` returned as a *layer* error (this crate does not
/// depend on tonic) — put layers that fail with a `Status` above this one, where tonic's
/// own error recovery turns them into their status. Handlers' `Status` errors are
/// responses, not errors, and pass through untouched.
///
/// ```
/// use brownout::grpc::GrpcRejectionLayer;
/// use brownout::{BoxError, LoadLevel, LoadSignal, RejectReason, Rejected};
/// use tower_layer::Layer;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # #[derive(Clone)] struct RateLimit;
/// # impl Service<http::Request<()>> for RateLimit {
/// #     type Response = http::Response<()>; type Error = BoxError;
/// #     type Future = std::future::Ready<Result<http::Response<()>, BoxError>>;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, _: http::Request<()>) -> Self::Future {
/// #         std::future::ready(Err(Rejected::new(RejectReason::RateLimited, LoadLevel::High)
/// #             .with_retry_after(std::time::Duration::from_millis(40)).into()))
/// #     }
/// # }
/// let mut svc = GrpcRejectionLayer::new()
///     .with_level_header(LoadSignal::fixed(LoadLevel::High))
///     .layer(RateLimit);
/// let response = svc.call(http::Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.headers()["grpc-status"], "8"); // RESOURCE_EXHAUSTED
/// assert_eq!(response.headers()["grpc-retry-pushback-ms"], "40");
/// assert_eq!(response.headers()["x-load-level"], "high");
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct GrpcRejectionLayer {
    signal: Option<LoadSignal>,
}

impl GrpcRejectionLayer {
    /// A layer that answers errors and panics, without the level header on successes.
    pub fn new() -> GrpcRejectionLayer {
        GrpcRejectionLayer::default()
    }

    /// Also stamps `x-load-level` from `signal` on every response that lacks one.
    #[must_use]
    pub fn with_level_header(mut self, signal: LoadSignal) -> Self {
        self.signal = Some(signal);
        self
    }
}

impl<S> Layer<S> for GrpcRejectionLayer {
    type Service = GrpcRejection<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcRejection {
            inner,
            signal: self.signal.clone(),
        }
    }
}

/// The service of [`GrpcRejectionLayer`].
#[derive(Clone)]
pub struct GrpcRejection<S> {
    inner: S,
    signal: Option<LoadSignal>,
}

brownout_core::impl_inner_access!(GrpcRejection<S>);

impl<S: fmt::Debug> fmt::Debug for GrpcRejection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcRejection")
            .field("inner", &self.inner)
            .field("signal", &self.signal)
            .finish()
    }
}

impl<S, Req, B> Service<Req> for GrpcRejection<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An inner readiness error is answered per request in `call`, where it can become
        // a response; report ready so the connection proceeds.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let signal = self.signal.clone();
        let state = match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => State::Running { future },
            Err(panic) => {
                log_panic(&*panic);
                State::Panicked
            }
        };
        ResponseFuture::new(state, signal)
    }
}

pub(super) fn log_panic(panic: &(dyn Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic>");
    tracing::error!(panic = message, "gRPC handler panicked; answering INTERNAL");
}
