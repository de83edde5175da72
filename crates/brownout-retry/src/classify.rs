//! Which outcomes are retried: the [`RetryClassifier`] trait and its two presets.

use std::convert::Infallible;
use std::error::Error;
use std::time::{Duration, SystemTime};

use brownout_core::{BoxError, LoadLevel, RejectReason, Rejected};

use crate::pushback::{Pushback, parse_grpc_pushback, parse_retry_after};

/// What to do with one attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// A success: return it (and count it as one for hedging statistics).
    Success,
    /// A failure worth retrying, not before `after` when the server said when.
    Retry {
        /// The server's (or a brownout layer's) "come back after" hint.
        after: Option<Duration>,
    },
    /// A failure that must not be retried: return it as it is.
    Fail,
}

/// Decides whether an attempt's outcome is retried.
///
/// Implemented for closures `Fn(&Result<Res, E>) -> RetryDecision`, for
/// [`DefaultClassifier`] (any response is a success; errors are retried unless they are a
/// [`Rejected`] that says "do not retry") and for [`HttpClassifier`] (adds 429/502/503/504,
/// gRPC `UNAVAILABLE`, `Retry-After` and `grpc-retry-pushback-ms`).
pub trait RetryClassifier<Res, E> {
    /// The decision for `result`.
    fn classify(&self, result: &Result<Res, E>) -> RetryDecision;
}

impl<Res, E, F> RetryClassifier<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> RetryDecision,
{
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> RetryDecision {
        self(result)
    }
}

/// An error type the default classifiers can look into (for a [`Rejected`] in its source
/// chain). Implemented for `BoxError` and the other boxed error types, [`Rejected`],
/// `std::io::Error`, `http::Error` and `Infallible`.
pub trait AsError {
    /// The error as a `dyn Error`.
    fn as_error(&self) -> &(dyn Error + 'static);
}

impl AsError for BoxError {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error + Send + 'static> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error + 'static> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Rejected {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for std::io::Error {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for http::Error {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for Infallible {
    fn as_error(&self) -> &(dyn Error + 'static) {
        match *self {}
    }
}

/// The decision for an error: retried, unless it is (or wraps) a [`Rejected`] whose reason
/// says retrying would add load where it was just refused.
///
/// | reason | retried? | why |
/// |---|---|---|
/// | `Shed`, `QueueFull`, `QueueTimeout` | no | the server is overloaded: a retry is more of the load it just shed |
/// | `CircuitOpen` | no | the breaker exists to fail fast; it reopens by itself |
/// | `BudgetExhausted` | no | a budget or throttle already decided against more attempts |
/// | `RateLimited` | yes, after its `retry_after` | the limiter says when there is room again |
/// | `ShuttingDown` | yes | the work never started; another replica (or the next connection) serves it |
/// | `Timeout` | yes (idempotent requests only, as always) | the usual transient failure |
///
/// Any other error is retried.
pub fn classify_error(error: &(dyn Error + 'static)) -> RetryDecision {
    match Rejected::find(error) {
        None => RetryDecision::Retry { after: None },
        Some(rejected) => classify_rejected(rejected),
    }
}

/// The decision for one of our own rejections (see [`classify_error`]).
pub fn classify_rejected(rejected: &Rejected) -> RetryDecision {
    match rejected.reason() {
        RejectReason::RateLimited | RejectReason::ShuttingDown | RejectReason::Timeout => {
            RetryDecision::Retry {
                after: rejected.retry_after(),
            }
        }
        // Shed, QueueFull, QueueTimeout, CircuitOpen, BudgetExhausted and any future reason.
        _ => RetryDecision::Fail,
    }
}

/// Any response is a success; errors go through [`classify_error`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<Res, E: AsError> RetryClassifier<Res, E> for DefaultClassifier {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> RetryDecision {
        match result {
            Ok(_) => RetryDecision::Success,
            Err(e) => classify_error(e.as_error()),
        }
    }
}

/// The classifier for `http::Response`s (hyper, reqwest-style clients and tonic channels).
///
/// - errors: [`classify_error`];
/// - `429`, `502`, `503`, `504`: retried after `Retry-After` (seconds or an HTTP-date) or
///   `grpc-retry-pushback-ms` when present;
/// - a trailers-only gRPC answer with `grpc-status: 14` (`UNAVAILABLE`) is retried;
///   `8` (`RESOURCE_EXHAUSTED`) only when it carries a pushback;
/// - a negative or malformed `grpc-retry-pushback-ms` means "do not retry";
/// - a `503` or gRPC `UNAVAILABLE` whose `x-load-level` header reports `High` or above is
///   not retried: the server says it is overloaded (the brownout http and gRPC integrations
///   stamp that header on their rejections);
/// - anything else (`500` included: the work may have been done) is returned as is.
///
/// gRPC puts `grpc-status` in the trailers of a normal answer, which arrive after the body
/// and are not seen here; only *trailers-only* answers (an immediate error, which is how the
/// brownout gRPC integration and most servers answer `UNAVAILABLE`) carry it in the headers.
/// A streamed error status is returned as is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier;

impl<B, E: AsError> RetryClassifier<http::Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> RetryDecision {
        let response = match result {
            Ok(response) => response,
            Err(e) => return classify_error(e.as_error()),
        };
        classify_response(response.status(), response.headers())
    }
}

/// The header our http integration uses to tell clients the server's load level.
pub const LOAD_LEVEL_HEADER: http::HeaderName = brownout_core::headers::LOAD_LEVEL;
/// The gRPC pushback header.
pub const GRPC_PUSHBACK_HEADER: http::HeaderName = brownout_core::headers::GRPC_RETRY_PUSHBACK_MS;

/// The decision for an http status and headers (see [`HttpClassifier`]).
pub fn classify_response(status: http::StatusCode, headers: &http::HeaderMap) -> RetryDecision {
    let pushback = headers
        .get(GRPC_PUSHBACK_HEADER)
        .map(|v| parse_grpc_pushback(v.as_bytes()));
    if pushback == Some(Pushback::DoNotRetry) {
        return RetryDecision::Fail;
    }
    let pushback = match pushback {
        Some(Pushback::After(after)) => Some(after),
        _ => None,
    };
    let overloaded = || server_level(headers).is_some_and(|level| level >= LoadLevel::High);
    let grpc_status = headers.get("grpc-status").map(|v| v.as_bytes());
    match grpc_status {
        Some(b"14") if overloaded() => return RetryDecision::Fail,
        Some(b"14") => return RetryDecision::Retry { after: pushback },
        Some(b"8") if pushback.is_some() => return RetryDecision::Retry { after: pushback },
        Some(b"0") | None => {}
        Some(_) => return RetryDecision::Fail,
    }
    match status.as_u16() {
        429 | 502 | 503 | 504 => {
            if status == http::StatusCode::SERVICE_UNAVAILABLE && overloaded() {
                return RetryDecision::Fail;
            }
            let after = headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()))
                .or(pushback);
            RetryDecision::Retry { after }
        }
        _ => RetryDecision::Success,
    }
}

/// The load level a server reported in its `x-load-level` header (a level name or digit).
pub fn server_level(headers: &http::HeaderMap) -> Option<LoadLevel> {
    brownout_core::headers::load_level(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> Result<http::Response<()>, BoxError> {
        let mut builder = http::Response::builder().status(status);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        Ok(builder.body(()).unwrap())
    }

    #[test]
    fn rejections_that_say_do_not_retry() {
        for reason in RejectReason::ALL {
            let err: BoxError = Rejected::new(reason, LoadLevel::Normal).into();
            let decision = DefaultClassifier.classify(&Err::<(), _>(err));
            let retried = matches!(decision, RetryDecision::Retry { .. });
            let expected = matches!(
                reason,
                RejectReason::RateLimited | RejectReason::ShuttingDown | RejectReason::Timeout
            );
            assert_eq!(retried, expected, "{reason}");
        }
        let err: BoxError = Rejected::new(RejectReason::RateLimited, LoadLevel::Normal)
            .with_retry_after(Duration::from_secs(2))
            .into();
        assert_eq!(
            DefaultClassifier.classify(&Err::<(), _>(err)),
            RetryDecision::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
        let other: BoxError = "connection reset".into();
        assert_eq!(
            DefaultClassifier.classify(&Err::<(), _>(other)),
            RetryDecision::Retry { after: None }
        );
        assert_eq!(
            DefaultClassifier.classify(&Ok::<_, BoxError>(())),
            RetryDecision::Success
        );
    }

    #[test]
    fn http_statuses_and_headers() {
        let c = HttpClassifier;
        assert_eq!(c.classify(&response(200, &[])), RetryDecision::Success);
        assert_eq!(c.classify(&response(500, &[])), RetryDecision::Success);
        assert_eq!(
            c.classify(&response(503, &[("retry-after", "2")])),
            RetryDecision::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            c.classify(&response(429, &[])),
            RetryDecision::Retry { after: None }
        );
        assert_eq!(
            c.classify(&response(503, &[("x-load-level", "critical")])),
            RetryDecision::Fail
        );
        assert_eq!(
            c.classify(&response(503, &[("x-load-level", "1")])),
            RetryDecision::Retry { after: None }
        );
        assert_eq!(
            c.classify(&response(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "300")]
            )),
            RetryDecision::Retry {
                after: Some(Duration::from_millis(300))
            }
        );
        assert_eq!(
            c.classify(&response(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]
            )),
            RetryDecision::Fail
        );
        assert_eq!(
            c.classify(&response(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "x")]
            )),
            RetryDecision::Fail
        );
        assert_eq!(
            c.classify(&response(200, &[("grpc-status", "8")])),
            RetryDecision::Fail
        );
        assert_eq!(
            c.classify(&response(
                200,
                &[("grpc-status", "14"), ("x-load-level", "emergency")]
            )),
            RetryDecision::Fail
        );
        assert_eq!(
            c.classify(&response(200, &[("grpc-status", "3")])),
            RetryDecision::Fail
        );
    }
}
