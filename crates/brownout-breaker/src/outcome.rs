//! What counts as a failure: a classifier over the inner service's result.

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

impl<Res, E> ClassifyOutcome<Res, E> for ErrorsFail
where
    E: AsErrorRef,
{
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => match e.as_error_ref() {
                Some(e) => error_outcome(e),
                None => Outcome::Failure,
            },
        }
    }
}

/// For http responses: a 5xx status or an error is a failure, anything else (including 4xx,
/// the caller's fault) a success. Errors are judged as by [`ErrorsFail`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStatus;

impl<B, E> ClassifyOutcome<http::Response<B>, E> for HttpStatus
where
    E: AsErrorRef,
{
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => ErrorsFail.classify(&result.as_ref().map(|_| ())),
        }
    }
}

impl<E: AsErrorRef> AsErrorRef for &E {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        (**self).as_error_ref()
    }
}

/// Error types whose `Rejected` cause [`ErrorsFail`] can look for.
///
/// Implemented for `BoxError`, `std::io::Error`, `Infallible`, and `Box<dyn Error>`; for other
/// error types every `Err` is a failure (implement it to return `Some(self)`).
pub trait AsErrorRef {
    /// The error as a `dyn Error`, if it is one.
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)>;
}

impl AsErrorRef for Box<dyn Error + Send + Sync> {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self)
    }
}

impl AsErrorRef for Box<dyn Error> {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self)
    }
}

impl AsErrorRef for std::io::Error {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

impl AsErrorRef for Rejected {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

impl AsErrorRef for std::convert::Infallible {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        match *self {}
    }
}

impl AsErrorRef for &'static str {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        None
    }
}

impl AsErrorRef for String {
    fn as_error_ref(&self) -> Option<&(dyn Error + 'static)> {
        None
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
        let s: Result<(), &'static str> = Err("x");
        assert_eq!(ErrorsFail.classify(&s), Outcome::Failure);
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
