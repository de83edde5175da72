//! The gRPC (tonic) integration: answer rejections with the gRPC status a client's retry
//! policy understands, classify calls from metadata, and carry the caller's `grpc-timeout`.
//!
//! # Why
//!
//! brownout layers refuse work with a [`Rejected`](brownout_core::Rejected) boxed into
//! `BoxError`. tonic's server only turns a `tonic::Status` error into a gRPC status; any
//! other error from a layer resets the HTTP/2 stream, which a tonic client reports as
//! `INTERNAL` ("h2 protocol error"), with no pushback and nothing telling it that retrying
//! elsewhere is safe (`examples/tonic-greeter` has a test showing it). [`GrpcRejectionLayer`] sits on top of the stack and answers instead
//! with a *trailers-only* gRPC response (HTTP 200, `content-type: application/grpc`, the
//! status in the headers, empty body):
//!
//! | rejection reason | `grpc-status` |
//! |---|---|
//! | shed, queue full, queue timeout, circuit open, shutting down, budget exhausted | `UNAVAILABLE` (14) |
//! | rate limited | `RESOURCE_EXHAUSTED` (8) |
//! | timeout | `DEADLINE_EXCEEDED` (4) |
//! | any other error | `UNKNOWN` (2), nothing leaked |
//! | a panic | `INTERNAL` (13), nothing leaked |
//!
//! Every rejection also carries `grpc-message` (the reason, percent-encoded as gRPC
//! requires), `grpc-retry-pushback-ms` when the layer knows the `retry_after` (gRFC A6:
//! grpc-go, grpc-java and brownout-retry wait that long before retrying), `x-load-level`
//! and `x-reject-reason` (the reason's name). All of them reach a tonic client as
//! `Status::metadata()`.
//!
//! [`GrpcOutcome`] classifies results from `grpc-status` (which carries gRPC failures over
//! HTTP 200) and skips brownout's own refusals, for the monitor's error rate and for a
//! circuit breaker around a tonic client alike: it is a
//! [`ClassifyOutcome`](brownout_core::ClassifyOutcome), the classifier both layers take.
//!
//! Unlike the http flavour ([`RejectionResponseLayer`](crate::http::RejectionResponseLayer)),
//! no `Connection: close` is sent while shutting down: HTTP/2 forbids connection headers;
//! tonic's `serve_with_shutdown` sends GOAWAY instead.
//!
//! # Priority and deadline from metadata
//!
//! gRPC metadata are HTTP/2 headers and a tonic server's layers see `http::Request`s, so the
//! http building blocks apply unchanged:
//!
//! - [`HttpClassifier`](crate::http::HttpClassifier) reads the class from the `x-priority`
//!   metadata (`critical|high|medium|low|background|0-4`; a tonic client sets it with
//!   `request.metadata_mut().insert("x-priority", "low".parse()?)`). Route rules match the
//!   gRPC path `/package.Service/Method`, e.g. `.route("/grpc.health.v1.Health/Check",
//!   Priority::Critical)`; cap what clients may claim with `max_from_headers`. Store the
//!   class once with [`ClassifyLayer`](brownout_core::ClassifyLayer), so the shed and
//!   admission layers (default classifier `FromExtensions`) agree on it.
//! - [`DeadlineLayer::grpc_timeout()`](crate::http::DeadlineLayer::grpc_timeout) turns the
//!   caller's `grpc-timeout` into a [`Deadline`](brownout_core::Deadline) in the request's
//!   extensions, so an admission queue never serves a call whose caller has given up.
//!   (tonic itself also cancels the call when `grpc-timeout` expires.)
//!
//! # Wiring with tonic
//!
//! The whole stack in one layer, from [`Brownout::grpc_builder`](crate::Brownout::grpc_builder)
//! (the same layers as the http stack, with this module's answers, [`GrpcOutcome`] for the
//! monitor, the class from `x-priority` metadata and [`HEALTH_PATHS`] always Critical):
//!
//! ```text
//! let monitor = Monitor::builder().build()?;
//! let shutdown = Shutdown::builder().load_signal(monitor.signal()).build()?;
//! let brownout = Brownout::grpc_builder()
//!     .with_monitor(monitor)
//!     .shutdown(&shutdown)
//!     .priority_header("x-priority")                 // the metadata key (default)
//!     .deadline(DeadlineLayer::grpc_timeout().max(Duration::from_secs(30)))
//!     .build()?;
//! let (reporter, health_server) = tonic_health::server::health_reporter();
//! tokio::spawn(brownout.grpc_health(reporter)?.run()); // feature `grpc-health`
//! Server::builder()
//!     .layer(brownout.layer())
//!     .add_service(health_server)
//!     .add_service(GreeterServer::new(greeter))
//!     .serve_with_shutdown(addr, shutdown.refusing())
//!     .await?;
//! ```
//!
//! Or by hand, picking layers:
//!
//! ```text
//! Server::builder()
//!     .layer(GrpcRejectionLayer::new().with_level_header(monitor.signal())) // outermost
//!     .layer(shutdown.layer())
//!     .layer(ClassifyLayer::new(HttpClassifier::default()))
//!     .layer(DeadlineLayer::grpc_timeout().max(Duration::from_secs(30)))
//!     .layer(LoadShedLayer::default().with_signal(monitor.signal()))
//!     .layer(monitor.layer().with_classifier(GrpcOutcome))
//!     .add_service(GreeterServer::new(greeter))
//!     .serve_with_shutdown(addr, shutdown.triggered())
//!     .await?;
//! ```
//!
//! With the `grpc-health` feature, `health::GrpcHealth` keeps tonic-health's
//! `grpc.health.v1` status in step with [`Health`](crate::health::Health): `SERVING` while
//! healthy or degraded, `NOT_SERVING` at Emergency, on shutdown or with an essential
//! component down.
//!
//! `examples/tonic-greeter` in the repository runs this stack end to end.
//!
//! ```
//! use std::time::Duration;
//! use brownout::grpc::{GrpcCode, code_for, rejection_response};
//! use brownout::{LoadLevel, RejectReason, Rejected};
//!
//! assert_eq!(code_for(RejectReason::Shed), GrpcCode::Unavailable);
//! let limited = Rejected::new(RejectReason::RateLimited, LoadLevel::Elevated)
//!     .with_retry_after(Duration::from_millis(200));
//! let response: http::Response<()> = rejection_response(&limited);
//! assert_eq!(response.headers()["grpc-status"], "8");
//! assert_eq!(response.headers()["grpc-retry-pushback-ms"], "200");
//! ```

#[cfg(feature = "grpc-health")]
pub mod health;
mod layer;
mod outcome;
mod status;

pub use layer::{GrpcAnswer, GrpcRejection, GrpcRejectionLayer, ResponseFuture};
pub use outcome::GrpcOutcome;
pub use status::{
    GRPC_MESSAGE_HEADER, GRPC_STATUS_HEADER, GrpcCode, MAX_PUSHBACK_MS, RETRY_PUSHBACK_HEADER,
    code_for, error_response, panic_response, pushback_ms, rejection_response,
};

/// The gRPC health-checking methods (`grpc.health.v1.Health/Check` and `/Watch`), which
/// the gRPC stack's default classifier always serves as Critical, so probes get through
/// while the server sheds.
pub const HEALTH_PATHS: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The gRPC stack's default classifier: the health-checking methods are Critical, then the
/// class from metadata key `key`, else Medium.
#[cfg(feature = "stack")]
pub(crate) fn classifier(key: &str) -> crate::http::HttpClassifier {
    HEALTH_PATHS
        .into_iter()
        .fold(crate::http::HttpClassifier::new(), |c, path| {
            c.route(path, brownout_core::Priority::Critical)
        })
        .header(key)
}

#[cfg(test)]
mod tests;
