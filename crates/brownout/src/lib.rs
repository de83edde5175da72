//! Overload control for tower, axum and tonic services.
//!
//! brownout keeps a service useful under overload: one monitor measures queueing delay,
//! latency and errors and publishes a [`LoadLevel`]; every layer reads it to shed the least
//! important work first, queue the rest by priority, tighten timeouts, stop retry storms and
//! tell handlers to do less.
//!
//! ```
//! use brownout::http::{HttpClassifier, rejection_response};
//! use brownout::{Classify, LoadLevel, LoadSignal, Policy, Priority, RejectReason, Rejected};
//!
//! let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
//! let classify = HttpClassifier::default();
//! let req = http::Request::get("/report").header("x-priority", "low").body(()).unwrap();
//! let class = classify.classify(&req);
//!
//! publisher.publish(LoadLevel::High); // the monitor does this under pressure
//! if Policy::default().shed[signal.level()].contains(class) {
//!     let r = Rejected::new(RejectReason::Shed, signal.level()).with_priority(class);
//!     let response: http::Response<String> = rejection_response(&r);
//!     assert_eq!(response.status(), 503);
//! }
//! # assert_eq!(class, Priority::Low);
//! ```
//!
//! `Brownout::builder()` stacks every layer behind one monitor for an http (axum) server;
//! `Brownout::grpc_builder()` does the same for a tonic server, answering rejections as
//! gRPC statuses with `grpc-retry-pushback-ms`.
//!
//! What a completed request counts as — a success, a failure, or a brownout refusal that
//! says nothing about the service ([`Outcome::Rejected`]) — is decided by one
//! [`ClassifyOutcome`]: [`ErrIsFailure`] (the default), [`HttpOutcome`], `grpc::GrpcOutcome`
//! or a closure over the result. The same value configures the monitor's error rate and a
//! circuit breaker's failure window (`with_classifier` on either layer).
//!
//! | feature | adds |
//! |---|---|
//! | `http` (default) | classifiers, rejection responses, deadlines, degradation, client keys |
//! | `stack` (default) | `Brownout::builder()` and the layers it needs, `health` |
//! | `axum` | extractors for the level and `Degradation` |
//! | `grpc` | `grpc`: gRPC statuses for rejections, `GrpcOutcome`, `Brownout::grpc_builder()` |
//! | `grpc-health` | `grpc::health::GrpcHealth`: tonic-health's `grpc.health.v1` driven by `Health` |
//! | `monitor`, `shed`, `admission`, `timeout`, `breaker`, `retry`, `shutdown` | each layer crate, re-exported |
//! | `redis` | `brownout::fleet`: shared rate limits and a fleet load level through Redis (`brownout-redis`) |
//! | `full` | everything but `grpc-health` (which pulls in tonic) and `redis` (a Redis client) |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use brownout_core::*;

#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "health")]
pub mod health;
#[cfg(feature = "http")]
pub mod http;
mod optional;
#[cfg(feature = "stack")]
mod stack;
mod toggle;

pub use optional::{Optional, OptionalFuture};
#[cfg(feature = "stack")]
pub use stack::{Brownout, BrownoutBuilder, BrownoutLayer, BrownoutService};
pub use toggle::{Toggle, ToggleHandle, ToggleLayer};

#[cfg(feature = "admission")]
pub use brownout_admission as admission;
#[cfg(feature = "breaker")]
pub use brownout_breaker as breaker;
#[cfg(feature = "monitor")]
pub use brownout_monitor as monitor;
#[cfg(feature = "redis")]
pub use brownout_redis as fleet;
#[cfg(feature = "retry")]
pub use brownout_retry as retry;
#[cfg(feature = "shed")]
pub use brownout_shed as shed;
#[cfg(feature = "shutdown")]
pub use brownout_shutdown as shutdown;
#[cfg(feature = "timeout")]
pub use brownout_timeout as timeout;
