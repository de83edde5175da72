//! Deciding whether a completed request counts as a failure for the error-rate signal.

/// What a completed request counts as for the error-rate signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request succeeded (or failed in a way that says nothing about our load, e.g. a 4xx).
    Success,
    /// The request failed in a way that counts towards the error rate.
    Failure,
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

/// The default classifier: `Err` is a failure, `Ok` a success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrIsFailure;

impl<Res, E> ClassifyOutcome<Res, E> for ErrIsFailure {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// The http classifier: `Err` and `5xx` responses are failures; `4xx` (the caller's fault)
/// and everything else are successes.
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

impl<B, E> ClassifyOutcome<http::Response<B>, E> for HttpOutcome {
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(response) if !response.status().is_server_error() => Outcome::Success,
            _ => Outcome::Failure,
        }
    }
}
