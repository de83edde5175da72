//! The http integration: classify requests from headers and routes, carry the caller's
//! deadline, tell handlers how much work to do, key per-client limits, and answer
//! rejections with the right status code and `Retry-After`.
//!
//! | rejection reason | status |
//! |---|---|
//! | shed, queue full, queue timeout, circuit open, shutting down, budget exhausted | 503 |
//! | rate limited | 429 |
//! | timeout | 504 |
//! | any other error, or a panic | 500 (nothing leaked) |
//!
//! Every rejection carries `Retry-After` when the layer knows it, `x-load-level`,
//! `x-reject-reason`, and a one-line plain-text body naming the reason; a shutting-down
//! server adds `Connection: close`.
//!
//! [`HttpOutcome`](brownout_core::HttpOutcome) (from brownout-core, also `brownout::HttpOutcome`)
//! classifies http results for the monitor and a circuit breaker alike: 5xx is a failure,
//! 4xx is not, and these rejection answers (503 / 429 with `x-reject-reason`) are
//! [`Outcome::Rejected`](brownout_core::Outcome::Rejected), neither.

mod answer;
mod classify;
mod deadline;
mod degradation;
mod keys;
mod response;

pub use answer::{Answer, AnswerFuture, Answering, AnsweringLayer, HttpAnswer};
pub use classify::HttpClassifier;
pub use deadline::{DeadlineLayer, DeadlineService};
pub use degradation::{
    Degradation, DegradationLayer, DegradationService, FeatureToggles, FeatureTogglesBuilder,
};
pub use keys::{ClientIp, HeaderKey, IpNet};
pub use response::{
    LOAD_LEVEL_HEADER, REJECT_REASON_HEADER, RejectionResponse, RejectionResponseLayer,
    ResponseFuture, error_response, rejection_response, retry_after_secs, status_for,
};

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "axum")]
pub use extract::CurrentLevel;
