//! [`GrpcRejectionLayer`]: the outermost layer of a tonic server's brownout stack.

use std::error::Error;

use http::Response;

use super::status::{error_response, panic_response};
use crate::http::{Answer, AnswerFuture, Answering, AnsweringLayer};

/// The gRPC answers: a rejection's trailers-only status (see
/// [`rejection_response`](super::rejection_response)), `UNKNOWN` for any other error and
/// `INTERNAL` for a panic, leaking nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcAnswer;

impl<B: Default> Answer<B> for GrpcAnswer {
    const PANIC_ANSWER: &'static str = "INTERNAL";

    fn error(error: &(dyn Error + Send + Sync + 'static)) -> Response<B> {
        error_response(error)
    }

    fn panic() -> Response<B> {
        panic_response()
    }
}

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
pub type GrpcRejectionLayer = AnsweringLayer<GrpcAnswer>;

/// The service of [`GrpcRejectionLayer`].
pub type GrpcRejection<S> = Answering<S, GrpcAnswer>;

/// The response future of [`GrpcRejection`]: the inner response, or the trailers-only gRPC
/// response for its error or panic.
pub type ResponseFuture<F> = AnswerFuture<F, GrpcAnswer>;
