//! Deciding whether a completed request counts as a failure for the error-rate signal.

use std::any::Any;

use brownout_core::{BoxError, RejectReason, Rejected};
use http::StatusCode;

/// What a completed request counts as for the error-rate signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request succeeded (or failed in a way that says nothing about our load, e.g. a 4xx).
    Success,
    /// The request failed in a way that counts towards the error rate.
    Failure,
    /// A brownout layer refused the request (shed, queue full, rate limited, circuit open,
    /// shutting down…): a load-control decision, not a failure of the service. It counts
    /// neither as a failure nor as a latency sample — otherwise shedding would raise the
    /// error rate and escalate the level further, a feedback loop, and microsecond
    /// rejections would drag the latency quantiles down. A `Timeout` rejection is a
    /// `Failure`: the service was too slow.
    Rejected,
}

/// Whether `error` is (or wraps) a brownout [`Rejected`] other than a timeout.
fn is_load_control<E: 'static>(error: &E) -> bool {
    let any = error as &dyn Any;
    let rejected = if let Some(rejected) = any.downcast_ref::<Rejected>() {
        Some(rejected)
    } else if let Some(boxed) = any.downcast_ref::<BoxError>() {
        Rejected::find_in_box(&**boxed)
    } else {
        None
    };
    rejected.is_some_and(|r| r.reason() != RejectReason::Timeout)
}

fn err_outcome<E: 'static>(error: &E) -> Outcome {
    if is_load_control(error) {
        Outcome::Rejected
    } else {
        Outcome::Failure
    }
}

/// Classifies the result of a request as a success or a failure.
///
/// Implemented by [`ErrIsFailure`] (the default: every `Err` is a failure), [`HttpOutcome`]
/// (5xx responses are failures too, 4xx are not) and by closures
/// `Fn(&Result<Res, E>) -> Outcome`. It runs once per request, on the response path; it must
/// be cheap and must not panic.
///
/// ```
/// use brownout_monitor::{ClassifyOutcome, Outcome};
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

/// The default classifier: `Err` is a failure, `Ok` a success — except a brownout
/// [`Rejected`] (bare or in a `BoxError`), which is [`Outcome::Rejected`] unless it is a
/// timeout.
///
/// ```
/// use brownout_core::{BoxError, LoadLevel, RejectReason, Rejected};
/// use brownout_monitor::{ClassifyOutcome, ErrIsFailure, Outcome};
///
/// let shed: Result<(), BoxError> = Err(Rejected::new(RejectReason::Shed, LoadLevel::High).into());
/// assert_eq!(ErrIsFailure.classify(&shed), Outcome::Rejected);
/// let timeout: Result<(), BoxError> = Err(Rejected::new(RejectReason::Timeout, LoadLevel::High).into());
/// assert_eq!(ErrIsFailure.classify(&timeout), Outcome::Failure);
/// assert_eq!(ErrIsFailure.classify(&Err::<(), _>("db down")), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrIsFailure;

impl<Res, E: 'static> ClassifyOutcome<Res, E> for ErrIsFailure {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(error) => err_outcome(error),
        }
    }
}

/// The http classifier: `Err` and `5xx` responses are failures; `4xx` (the caller's fault)
/// and everything else are successes. Rejections by brownout layers — a `Rejected` error, or
/// a 503 / 429 response carrying the `x-load-level` header that brownout's rejection
/// responses set — are [`Outcome::Rejected`]; a 504 from brownout is a timeout, a failure.
///
/// ```
/// use brownout_monitor::{ClassifyOutcome, HttpOutcome, Outcome};
///
/// let response = |status: u16| -> Result<http::Response<()>, ()> {
///     Ok(http::Response::builder().status(status).body(()).unwrap())
/// };
/// assert_eq!(HttpOutcome.classify(&response(503)), Outcome::Failure);
/// assert_eq!(HttpOutcome.classify(&response(404)), Outcome::Success);
/// assert_eq!(HttpOutcome.classify(&response(200)), Outcome::Success);
/// assert_eq!(HttpOutcome.classify(&Err::<http::Response<()>, ()>(())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpOutcome;

impl<B, E: 'static> ClassifyOutcome<http::Response<B>, E> for HttpOutcome {
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => {
                let status = response.status();
                let ours = || {
                    response
                        .headers()
                        .contains_key(brownout_core::headers::LOAD_LEVEL)
                };
                if (status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::TOO_MANY_REQUESTS)
                    && ours()
                {
                    Outcome::Rejected
                } else if status.is_server_error() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }
            Err(error) => err_outcome(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brownout_core::LoadLevel;

    #[test]
    fn brownout_rejections_are_not_failures() {
        for reason in RejectReason::ALL {
            let bare: Result<(), Rejected> = Err(Rejected::new(reason, LoadLevel::High));
            let boxed: Result<(), BoxError> = Err(Rejected::new(reason, LoadLevel::High).into());
            let expected = if reason == RejectReason::Timeout {
                Outcome::Failure
            } else {
                Outcome::Rejected
            };
            assert_eq!(ErrIsFailure.classify(&bare), expected, "{reason}");
            assert_eq!(ErrIsFailure.classify(&boxed), expected, "{reason}");
        }
        let ours = |status: u16| -> Result<http::Response<()>, BoxError> {
            Ok(http::Response::builder()
                .status(status)
                .header("x-load-level", "high")
                .body(())
                .unwrap())
        };
        assert_eq!(HttpOutcome.classify(&ours(503)), Outcome::Rejected);
        assert_eq!(HttpOutcome.classify(&ours(429)), Outcome::Rejected);
        assert_eq!(HttpOutcome.classify(&ours(504)), Outcome::Failure);
        assert_eq!(HttpOutcome.classify(&ours(200)), Outcome::Success);
        let theirs: Result<http::Response<()>, BoxError> =
            Ok(http::Response::builder().status(503).body(()).unwrap());
        assert_eq!(HttpOutcome.classify(&theirs), Outcome::Failure);
    }
}
