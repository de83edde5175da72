//! [`GrpcOutcome`]: the outcome classifier for gRPC responses, for the monitor and the
//! circuit breaker alike.

use brownout_core::outcome::{any_error_outcome, is_refusal_answer};
use brownout_core::{ClassifyOutcome, Outcome};
use http::Response;

use super::status::GRPC_STATUS_HEADER;

/// Classifies gRPC responses, for the [`Monitor`](https://docs.rs/brownout-monitor)'s error
/// rate and a [`CircuitBreak`](https://docs.rs/brownout-breaker)'s failure window alike
/// (both take a [`ClassifyOutcome`]; one `GrpcOutcome` value configures either).
///
/// gRPC answers errors with HTTP 200 and a `grpc-status`, so
/// [`HttpOutcome`](brownout_core::HttpOutcome) sees none of them. `GrpcOutcome` reads
/// the status of a trailers-only response (how tonic sends a unary call's error):
///
/// - `UNAVAILABLE` or `RESOURCE_EXHAUSTED` carrying `x-reject-reason` — a brownout
///   rejection answered by [`GrpcRejectionLayer`](super::GrpcRejectionLayer), here or in
///   the server a client calls — is [`Outcome::Rejected`]: a load-control decision,
///   neither a failure nor a latency sample for the monitor, not recorded by a breaker (a
///   half-open probe answered so gives its slot back). `x-load-level` alone is not the
///   marker: the layer may stamp it on every response, a handler's own `UNAVAILABLE`
///   included;
/// - the codes that mean the server failed or is overloaded (`UNKNOWN`,
///   `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`)
///   are [`Outcome::Failure`];
/// - success and the caller's own errors (`INVALID_ARGUMENT`, `NOT_FOUND`,
///   `PERMISSION_DENIED`, …) are [`Outcome::Success`];
/// - an `Err` is classified as [`ErrIsFailure`](brownout_core::ErrIsFailure) does (a
///   brownout rejection other than a timeout is `Rejected`, anything else a failure).
///
/// A status sent in the trailers of a streamed body is not visible when the response head
/// is ready, so streaming errors are not counted.
///
/// ```
/// use brownout::grpc::GrpcOutcome;
/// use brownout::{ClassifyOutcome, Outcome};
///
/// let status = |code: &str, ours: bool| -> Result<http::Response<()>, std::convert::Infallible> {
///     let mut response = http::Response::builder().header("grpc-status", code);
///     if ours {
///         response = response.header("x-reject-reason", "shed");
///     }
///     Ok(response.body(()).unwrap())
/// };
/// assert_eq!(GrpcOutcome.classify(&status("0", false)), Outcome::Success);
/// assert_eq!(GrpcOutcome.classify(&status("5", false)), Outcome::Success); // NOT_FOUND
/// assert_eq!(GrpcOutcome.classify(&status("13", false)), Outcome::Failure); // INTERNAL
/// assert_eq!(GrpcOutcome.classify(&status("14", false)), Outcome::Failure); // the handler's
/// assert_eq!(GrpcOutcome.classify(&status("14", true)), Outcome::Rejected); // brownout's
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcOutcome;

impl<B, E: 'static> ClassifyOutcome<Response<B>, E> for GrpcOutcome {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        let response = match result {
            Ok(response) => response,
            Err(error) => return any_error_outcome(error),
        };
        let headers = response.headers();
        let Some(code) = headers.get(GRPC_STATUS_HEADER) else {
            return Outcome::Success;
        };
        match code.as_bytes() {
            b"8" | b"14" if is_refusal_answer(headers) => Outcome::Rejected,
            b"2" | b"4" | b"8" | b"13" | b"14" | b"15" => Outcome::Failure,
            _ => Outcome::Success,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::{error_response, panic_response, rejection_response};
    use brownout_core::{BoxError, ErrIsFailure, LoadLevel, RejectReason, Rejected};

    fn ok(response: Response<()>) -> Result<Response<()>, BoxError> {
        Ok(response)
    }

    #[test]
    fn the_layers_own_answers_classify_like_the_errors_they_replace() {
        for reason in RejectReason::ALL {
            let rejected = Rejected::new(reason, LoadLevel::High);
            let answered = GrpcOutcome.classify(&ok(rejection_response(&rejected)));
            let raw: Result<Response<()>, BoxError> = Err(rejected.into());
            assert_eq!(answered, ErrIsFailure.classify(&raw), "{reason}");
        }
        let err: BoxError = "db down".into();
        assert_eq!(
            GrpcOutcome.classify(&ok(error_response(&*err))),
            Outcome::Failure
        );
        assert_eq!(
            GrpcOutcome.classify(&ok(panic_response())),
            Outcome::Failure
        );
    }

    #[test]
    fn caller_errors_and_successes_are_not_failures() {
        for code in [
            "0", "1", "3", "5", "6", "7", "9", "10", "11", "12", "16", "garbage",
        ] {
            let response = Response::builder()
                .header("grpc-status", code)
                .body(())
                .unwrap();
            assert_eq!(
                GrpcOutcome.classify(&ok(response)),
                Outcome::Success,
                "{code}"
            );
        }
        // A handler's own UNAVAILABLE or RESOURCE_EXHAUSTED is a failure of the service,
        // also when a layer stamped the level on it.
        for code in ["8", "14"] {
            let response = Response::builder()
                .header("grpc-status", code)
                .header("x-load-level", "high")
                .body(())
                .unwrap();
            assert_eq!(
                GrpcOutcome.classify(&ok(response)),
                Outcome::Failure,
                "{code}"
            );
        }
        assert_eq!(
            GrpcOutcome.classify(&ok(Response::new(()))),
            Outcome::Success
        );
    }
}
