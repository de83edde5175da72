//! What a completed request counts as, for the layers that learn from results.
//!
//! Two layers judge every completed request: the `Monitor` (its error rate and latency
//! quantiles drive the load level) and the `CircuitBreak` (its failure window and half-open
//! probes decide whether a dependency is called at all). They judge with the same
//! [`ClassifyOutcome`], so one classifier — [`ErrIsFailure`] (the default), [`HttpOutcome`],
//! the facade's `brownout::grpc::GrpcOutcome` or a closure — configures both:
//!
//! | [`Outcome`] | Monitor | CircuitBreak |
//! |---|---|---|
//! | [`Success`](Outcome::Success) | latency sample, not a failure | success in the window; a half-open probe counts towards closing |
//! | [`Failure`](Outcome::Failure) | latency sample, counts towards the error rate | failure in the window (and in the consecutive-failure run); a half-open probe reopens |
//! | [`Rejected`](Outcome::Rejected) | nothing: neither a failure nor a latency sample | nothing recorded; a half-open probe gives its slot back |
//!
//! The classifier runs once per completed request, on the response path: implementations
//! are cheap, `#[inline]`, and must not panic.
//!
//! ```
//! use brownout_core::{BoxError, ClassifyOutcome, ErrIsFailure, LoadLevel, Outcome};
//! use brownout_core::{RejectReason, Rejected};
//!
//! // A refusal by an inner brownout layer never reached the service: Rejected.
//! let shed: Result<(), BoxError> = Err(Rejected::new(RejectReason::Shed, LoadLevel::High).into());
//! assert_eq!(ErrIsFailure.classify(&shed), Outcome::Rejected);
//! // A timeout did: the service was too slow.
//! let late: Result<(), BoxError> = Err(Rejected::new(RejectReason::Timeout, LoadLevel::High).into());
//! assert_eq!(ErrIsFailure.classify(&late), Outcome::Failure);
//!
//! // Any closure over the result is a classifier too.
//! let negative_fails = |result: &Result<i32, BoxError>| match result {
//!     Ok(n) if *n < 0 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(negative_fails.classify(&Ok(-1)), Outcome::Failure);
//! ```

use std::any::Any;
use std::error::Error;

use http::StatusCode;

use crate::{BoxError, RejectReason, Rejected};

/// What one completed request counts as for the layers that learn from results (the
/// monitor's error rate and latency, the circuit breaker's window and probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The service (or dependency) worked — or failed in a way that is the caller's fault,
    /// e.g. an http 4xx. The monitor takes a latency sample; the breaker records a success.
    Success,
    /// The service (or dependency) failed: the monitor counts it towards the error rate
    /// (and takes a latency sample); the breaker counts it towards its failure rate and
    /// consecutive failures, and a half-open probe ending so reopens the circuit.
    Failure,
    /// A refusal by a brownout layer (shed, queue full, rate limited, circuit open, shutting
    /// down, …): a load-control decision that says nothing about the service or dependency.
    ///
    /// It counts neither as a failure nor as a latency sample. For the monitor, counting it
    /// would raise the error rate while shedding and escalate the level further (a feedback
    /// loop), and microsecond refusals would drag the latency quantiles down. For the
    /// breaker, the call never reached the dependency: nothing is recorded, and a half-open
    /// probe that ends `Rejected` gives its slot back for another call to probe with.
    ///
    /// A `Rejected { Timeout }` is *not* this outcome but a [`Failure`](Outcome::Failure):
    /// the work had started and the service was too slow.
    Rejected,
}

/// Decides the [`Outcome`] of a completed request from its result.
///
/// Implemented by [`ErrIsFailure`] (the default of both layers: every `Err` is a failure
/// except a brownout refusal), [`HttpOutcome`] (5xx responses are failures too, 4xx are
/// not), the facade's `GrpcOutcome`, and by closures `Fn(&Result<Res, E>) -> Outcome`. It
/// runs once per request, on the response path: it must be cheap and must not panic.
///
/// ```
/// use brownout_core::{ClassifyOutcome, Outcome};
///
/// // Timeouts count, "not found" does not.
/// let classify = |result: &Result<u16, &str>| match result {
///     Err("timeout") => Outcome::Failure,
///     _ => Outcome::Success,
/// };
/// assert_eq!(classify.classify(&Err("timeout")), Outcome::Failure);
/// assert_eq!(classify.classify(&Err("not found")), Outcome::Success);
/// ```
pub trait ClassifyOutcome<Res, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<Res, E, F> ClassifyOutcome<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// The outcome of an error: a brownout [`Rejected`] anywhere in its `source()` chain is
/// [`Outcome::Rejected`] unless it is a timeout; anything else is [`Outcome::Failure`].
///
/// ```
/// use brownout_core::outcome::error_outcome;
/// use brownout_core::{LoadLevel, Outcome, RejectReason, Rejected};
///
/// let limited = Rejected::new(RejectReason::RateLimited, LoadLevel::Normal);
/// assert_eq!(error_outcome(&limited), Outcome::Rejected);
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(error_outcome(&reset), Outcome::Failure);
/// ```
// Not `#[inline]`: it is the error path; kept out of line so the layers' response futures
// stay as small as their success path needs.
pub fn error_outcome(error: &(dyn Error + 'static)) -> Outcome {
    match Rejected::find(error) {
        Some(rejected) if rejected.reason().never_started() => Outcome::Rejected,
        _ => Outcome::Failure,
    }
}

/// The outcome of an error of any type: a [`BoxError`] or a bare [`Rejected`] is judged by
/// [`error_outcome`]; any other error type is [`Outcome::Failure`]. The type tests are
/// resolved at compile time.
///
/// ```
/// use brownout_core::outcome::any_error_outcome;
/// use brownout_core::{BoxError, LoadLevel, Outcome, RejectReason, Rejected};
///
/// let open: BoxError = Rejected::new(RejectReason::CircuitOpen, LoadLevel::Normal).into();
/// assert_eq!(any_error_outcome(&open), Outcome::Rejected);
/// assert_eq!(any_error_outcome(&"db down"), Outcome::Failure);
/// ```
#[inline]
pub fn any_error_outcome<E: 'static>(error: &E) -> Outcome {
    let any: &dyn Any = error;
    if let Some(boxed) = any.downcast_ref::<BoxError>() {
        error_outcome(&**boxed)
    } else if let Some(rejected) = any.downcast_ref::<Rejected>() {
        error_outcome(rejected)
    } else {
        Outcome::Failure
    }
}

/// The default classifier of the monitor and the circuit breaker: `Ok` is a success and
/// `Err` a failure — except a brownout [`Rejected`] (bare, or in a `BoxError`'s source
/// chain) other than a timeout, which is [`Outcome::Rejected`] (see [`any_error_outcome`]).
///
/// ```
/// use brownout_core::{BoxError, ClassifyOutcome, ErrIsFailure, LoadLevel, Outcome};
/// use brownout_core::{RejectReason, Rejected};
///
/// let shed: Result<(), BoxError> = Err(Rejected::new(RejectReason::Shed, LoadLevel::High).into());
/// assert_eq!(ErrIsFailure.classify(&shed), Outcome::Rejected);
/// let timeout: Result<(), BoxError> = Err(Rejected::new(RejectReason::Timeout, LoadLevel::High).into());
/// assert_eq!(ErrIsFailure.classify(&timeout), Outcome::Failure);
/// assert_eq!(ErrIsFailure.classify(&Err::<(), _>("db down")), Outcome::Failure);
/// assert_eq!(ErrIsFailure.classify(&Ok::<_, std::io::Error>(())), Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrIsFailure;

impl<Res, E: 'static> ClassifyOutcome<Res, E> for ErrIsFailure {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(error) => any_error_outcome(error),
        }
    }
}

/// The http classifier: `Err` is judged as by [`ErrIsFailure`]; a `5xx` response is a
/// failure; `4xx` (the caller's fault) and everything else are successes — except a
/// brownout refusal answered as a response, which is [`Outcome::Rejected`].
///
/// A brownout refusal answer is a 503 or 429 carrying
/// [`x-reject-reason`](crate::headers::REJECT_REASON), the header brownout's rejection
/// responses (http and gRPC) set and nothing else does. `x-load-level` is *not* the marker:
/// a server may stamp it on every response, its handlers' own 503s included, and those are
/// failures. A brownout timeout is answered 504: a failure, like a `Rejected { Timeout }`
/// error.
///
/// The same rule serves the monitor (a refusal by a layer inside it, or by a downstream
/// brownout server, is not an error of the service) and the breaker (a dependency that
/// sheds or rate-limits is protecting itself and still answering; opening the circuit on
/// it would cut off the requests it still serves).
///
/// ```
/// use brownout_core::{ClassifyOutcome, HttpOutcome, Outcome};
///
/// let response = |status: u16, reason: Option<&str>| -> Result<http::Response<()>, ()> {
///     let mut response = http::Response::builder().status(status);
///     if let Some(reason) = reason {
///         response = response.header("x-reject-reason", reason);
///     }
///     Ok(response.body(()).unwrap())
/// };
/// assert_eq!(HttpOutcome.classify(&response(200, None)), Outcome::Success);
/// assert_eq!(HttpOutcome.classify(&response(404, None)), Outcome::Success);
/// assert_eq!(HttpOutcome.classify(&response(429, None)), Outcome::Success);
/// assert_eq!(HttpOutcome.classify(&response(503, None)), Outcome::Failure);
/// assert_eq!(HttpOutcome.classify(&response(503, Some("shed"))), Outcome::Rejected);
/// assert_eq!(HttpOutcome.classify(&response(429, Some("rate_limited"))), Outcome::Rejected);
/// assert_eq!(HttpOutcome.classify(&response(504, Some("timeout"))), Outcome::Failure);
/// assert_eq!(HttpOutcome.classify(&Err::<http::Response<()>, ()>(())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpOutcome;

impl<B, E: 'static> ClassifyOutcome<http::Response<B>, E> for HttpOutcome {
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => http_status_outcome(response.status(), response.headers()),
            Err(error) => any_error_outcome(error),
        }
    }
}

/// [`HttpOutcome`]'s rule for a response head: `status` and its `headers`.
///
/// ```
/// use brownout_core::outcome::http_status_outcome;
/// use brownout_core::{Outcome, headers};
///
/// let mut map = http::HeaderMap::new();
/// assert_eq!(http_status_outcome(http::StatusCode::SERVICE_UNAVAILABLE, &map), Outcome::Failure);
/// map.insert(headers::REJECT_REASON, http::HeaderValue::from_static("queue_full"));
/// assert_eq!(http_status_outcome(http::StatusCode::SERVICE_UNAVAILABLE, &map), Outcome::Rejected);
/// ```
#[inline]
pub fn http_status_outcome(status: StatusCode, headers: &http::HeaderMap) -> Outcome {
    let refusal_status =
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS;
    if refusal_status && is_refusal_answer(headers) {
        Outcome::Rejected
    } else if status.is_server_error() {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

/// Whether `headers` are those of a brownout refusal answer: an `x-reject-reason` naming
/// a reason other than a timeout (a timeout is answered as one, but it is a failure).
#[inline]
pub fn is_refusal_answer(headers: &http::HeaderMap) -> bool {
    headers
        .get(crate::headers::REJECT_REASON)
        .is_some_and(|reason| reason.as_bytes() != RejectReason::Timeout.as_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadLevel;
    use crate::headers::{LOAD_LEVEL, REJECT_REASON, level_value, reason_value};
    use crate::rejected::tests::Wrapper;

    #[test]
    fn every_refusal_but_a_timeout_is_rejected_bare_boxed_or_wrapped() {
        for reason in RejectReason::ALL {
            let rejected = Rejected::new(reason, LoadLevel::High);
            let expected = if reason == RejectReason::Timeout {
                Outcome::Failure
            } else {
                Outcome::Rejected
            };
            let bare: Result<(), Rejected> = Err(rejected);
            let boxed: Result<(), BoxError> = Err(rejected.into());
            let wrapped: Result<(), BoxError> = Err(Box::new(Wrapper(rejected)));
            assert_eq!(ErrIsFailure.classify(&bare), expected, "{reason}");
            assert_eq!(ErrIsFailure.classify(&boxed), expected, "{reason}");
            assert_eq!(ErrIsFailure.classify(&wrapped), expected, "{reason}");
            assert_eq!(
                HttpOutcome.classify(&Err::<http::Response<()>, _>(rejected)),
                expected
            );
        }
    }

    #[test]
    fn other_errors_fail_and_ok_succeeds() {
        let boom: Result<(), BoxError> = Err("boom".into());
        assert_eq!(ErrIsFailure.classify(&boom), Outcome::Failure);
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(ErrIsFailure.classify(&io), Outcome::Failure);
        let never: Result<(), std::convert::Infallible> = Ok(());
        assert_eq!(ErrIsFailure.classify(&never), Outcome::Success);
    }

    fn answer(
        status: u16,
        headers: impl IntoIterator<Item = (http::HeaderName, http::HeaderValue)>,
    ) -> http::Response<()> {
        let mut response = http::Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(name, value);
        }
        response.body(()).unwrap()
    }

    fn classify(response: http::Response<()>) -> Outcome {
        HttpOutcome.classify(&Ok::<_, BoxError>(response))
    }

    #[test]
    fn http_5xx_fails_4xx_does_not() {
        for status in [200, 204, 301, 400, 404, 429] {
            assert_eq!(classify(answer(status, [])), Outcome::Success, "{status}");
        }
        for status in [500, 502, 503, 504] {
            assert_eq!(classify(answer(status, [])), Outcome::Failure, "{status}");
        }
    }

    #[test]
    fn http_refusal_answers_are_rejected_by_their_reason_header_not_the_level() {
        let level = (LOAD_LEVEL, level_value(LoadLevel::High));
        for reason in RejectReason::ALL {
            let status = match reason {
                RejectReason::RateLimited => 429,
                RejectReason::Timeout => 504,
                _ => 503,
            };
            let ours = answer(
                status,
                [level.clone(), (REJECT_REASON, reason_value(reason))],
            );
            let expected = if reason == RejectReason::Timeout {
                Outcome::Failure
            } else {
                Outcome::Rejected
            };
            assert_eq!(classify(ours), expected, "{reason}");
        }
        // A handler's own 503 through a layer stamping the level on every response.
        assert_eq!(classify(answer(503, [level.clone()])), Outcome::Failure);
        assert_eq!(classify(answer(429, [level])), Outcome::Success);
        // The reason header on another status changes nothing.
        let shed = (REJECT_REASON, reason_value(RejectReason::Shed));
        assert_eq!(classify(answer(500, [shed.clone()])), Outcome::Failure);
        assert_eq!(classify(answer(200, [shed])), Outcome::Success);
    }

    #[test]
    fn one_closure_classifies_any_result_type() {
        let classify = |result: &Result<u16, BoxError>| match result {
            Ok(n) if *n >= 500 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(error) => error_outcome(&**error),
        };
        assert_eq!(classify.classify(&Ok(503)), Outcome::Failure);
        assert_eq!(classify.classify(&Ok(200)), Outcome::Success);
        let queue_full: BoxError = Rejected::new(RejectReason::QueueFull, LoadLevel::High).into();
        assert_eq!(classify.classify(&Err(queue_full)), Outcome::Rejected);
    }
}
