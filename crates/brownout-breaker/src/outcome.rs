//! What counts as a failure: a classifier over the inner service's result.

use std::any::Any;
use std::error::Error;

use brownout_core::{RejectReason, Rejected};

/// How one completed call counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency worked.
    Success,
    /// The dependency is failing (counts towards the failure rate and consecutive failures).
    Failure,
    /// Not the dependency's fault (e.g. a refusal by an inner layer that never reached it):
    /// not recorded. A half-open probe that ends `Ignored` gives its slot back.
    Ignored,
}

/// Decides the [`Outcome`] of a call from its result.
///
/// Implemented for closures `Fn(&Result<Res, E>) -> Outcome`, for [`ErrorsFail`] (the
/// default) and for [`HttpStatus`].
///
/// ```
/// use brownout_breaker::{ClassifyOutcome, Outcome};
///
/// let negative_is_failure = |r: &Result<i32, std::io::Error>| match r {
///     Ok(n) if *n < 0 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(negative_is_failure.classify(&Ok(-1)), Outcome::Failure);
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

/// Every `Ok` is a success and every `Err` a failure — except a brownout [`Rejected`] from
/// an inner layer that never reached the dependency (shed, queue full, rate limited, …),
/// which is ignored. `Rejected { Timeout }` counts as a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsFail;

/// Classifies an error: a brownout refusal that never reached the dependency is ignored,
/// anything else (including `Rejected { Timeout }`) is a failure.
pub fn error_outcome(error: &(dyn Error + 'static)) -> Outcome {
    match Rejected::find(error) {
        Some(r) if r.reason() != RejectReason::Timeout && r.reason().never_started() => {
            Outcome::Ignored
        }
        _ => Outcome::Failure,
    }
}

impl<Res, E: 'static> ClassifyOutcome<Res, E> for ErrorsFail {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => any_error_outcome(e),
        }
    }
}

/// For http responses: a 5xx status or an error is a failure, anything else (including 4xx,
/// the caller's fault) a success. Errors are judged as by [`ErrorsFail`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStatus;

impl<B, E: 'static> ClassifyOutcome<http::Response<B>, E> for HttpStatus {
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) => any_error_outcome(e),
        }
    }
}

/// The outcome of an error of any type: a [`BoxError`](brownout_core::BoxError) or a bare
/// [`Rejected`] is searched for a brownout refusal (see [`error_outcome`]); any other error is a
/// failure.
pub fn any_error_outcome<E: 'static>(error: &E) -> Outcome {
    let any: &dyn Any = error;
    if let Some(boxed) = any.downcast_ref::<brownout_core::BoxError>() {
        error_outcome(&**boxed)
    } else if let Some(rejected) = any.downcast_ref::<Rejected>() {
        error_outcome(rejected)
    } else {
        Outcome::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brownout_core::{BoxError, LoadLevel};

    #[test]
    fn errors_fail_but_upstream_refusals_are_ignored() {
        let ok: Result<(), BoxError> = Ok(());
        assert_eq!(ErrorsFail.classify(&ok), Outcome::Success);
        let boom: Result<(), BoxError> = Err("boom".into());
        assert_eq!(ErrorsFail.classify(&boom), Outcome::Failure);
        let timeout: Result<(), BoxError> =
            Err(Rejected::new(RejectReason::Timeout, LoadLevel::Normal).into());
        assert_eq!(ErrorsFail.classify(&timeout), Outcome::Failure);
        let shed: Result<(), BoxError> =
            Err(Rejected::new(RejectReason::Shed, LoadLevel::High).into());
        assert_eq!(ErrorsFail.classify(&shed), Outcome::Ignored);
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(ErrorsFail.classify(&io), Outcome::Failure);
        let r: Result<(), Rejected> = Err(Rejected::new(RejectReason::QueueFull, LoadLevel::High));
        assert_eq!(ErrorsFail.classify(&r), Outcome::Ignored);
        let never: Result<(), std::convert::Infallible> = Ok(());
        assert_eq!(ErrorsFail.classify(&never), Outcome::Success);
    }

    #[test]
    fn http_5xx_fails_4xx_does_not() {
        let status = |code: u16| -> Result<http::Response<()>, BoxError> {
            Ok(http::Response::builder().status(code).body(()).unwrap())
        };
        assert_eq!(HttpStatus.classify(&status(200)), Outcome::Success);
        assert_eq!(HttpStatus.classify(&status(404)), Outcome::Success);
        assert_eq!(HttpStatus.classify(&status(429)), Outcome::Success);
        assert_eq!(HttpStatus.classify(&status(500)), Outcome::Failure);
        assert_eq!(HttpStatus.classify(&status(503)), Outcome::Failure);
        let err: Result<http::Response<()>, BoxError> = Err("reset".into());
        assert_eq!(HttpStatus.classify(&err), Outcome::Failure);
    }
}
