//! [`GrpcOutcome`]: the monitor's outcome classifier for gRPC responses.

use brownout_monitor::{ClassifyOutcome, ErrIsFailure, Outcome};
use http::Response;

use super::status::GRPC_STATUS_HEADER;
use crate::http::LOAD_LEVEL_HEADER;

/// Classifies gRPC responses for the [`Monitor`](brownout_monitor::Monitor)'s error rate.
///
/// gRPC answers errors with HTTP 200 and a `grpc-status`, so
/// [`HttpOutcome`](brownout_monitor::HttpOutcome) sees none of them. `GrpcOutcome` reads
/// the status of a trailers-only response (how tonic sends a unary call's error):
///
/// - `UNAVAILABLE` or `RESOURCE_EXHAUSTED` carrying `x-load-level` — a brownout
///   rejection answered by [`GrpcRejectionLayer`](super::GrpcRejectionLayer) — is
///   [`Outcome::Rejected`]: a load-control decision, neither a failure nor a latency sample;
/// - the codes that mean the server failed or is overloaded (`UNKNOWN`,
///   `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`)
///   are [`Outcome::Failure`];
/// - success and the caller's own errors (`INVALID_ARGUMENT`, `NOT_FOUND`,
///   `PERMISSION_DENIED`, …) are [`Outcome::Success`];
/// - an `Err` is classified as [`ErrIsFailure`] does (a brownout rejection other than a
///   timeout is `Rejected`, anything else a failure).
///
/// A status sent in the trailers of a streamed body is not visible when the response head
/// is ready, so streaming errors are not counted.
///
/// ```
/// use brownout::grpc::GrpcOutcome;
/// use brownout::monitor::{ClassifyOutcome, Outcome};
///
/// let status = |code: &str, ours: bool| -> Result<http::Response<()>, std::convert::Infallible> {
///     let mut response = http::Response::builder().header("grpc-status", code);
///     if ours {
///         response = response.header("x-load-level", "high");
///     }
///     Ok(response.body(()).unwrap())
/// };
/// assert_eq!(GrpcOutcome.classify(&status("0", false)), Outcome::Success);
/// assert_eq!(GrpcOutcome.classify(&status("5", false)), Outcome::Success); // NOT_FOUND
/// assert_eq!(GrpcOutcome.classify(&status("13", false)), Outcome::Failure); // INTERNAL
/// assert_eq!(GrpcOutcome.classify(&status("14", true)), Outcome::Rejected); // brownout
/// assert_eq!(GrpcOutcome.classify(&status("4", true)), Outcome::Failure); // too slow
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcOutcome;

impl<B, E: 'static> ClassifyOutcome<Response<B>, E> for GrpcOutcome {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        let response = match result {
            Ok(response) => response,
            Err(_) => return ErrIsFailure.classify(result),
        };
        let headers = response.headers();
        let Some(code) = headers.get(GRPC_STATUS_HEADER) else {
            return Outcome::Success;
        };
        match code.as_bytes() {
            b"8" | b"14" if headers.contains_key(LOAD_LEVEL_HEADER) => Outcome::Rejected,
            b"2" | b"4" | b"8" | b"13" | b"14" | b"15" => Outcome::Failure,
            _ => Outcome::Success,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::{error_response, panic_response, rejection_response};
    use brownout_core::{BoxError, LoadLevel, RejectReason, Rejected};

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
        // A handler's own UNAVAILABLE (no x-load-level) is a failure of the service.
        let response = Response::builder()
            .header("grpc-status", "14")
            .body(())
            .unwrap();
        assert_eq!(GrpcOutcome.classify(&ok(response)), Outcome::Failure);
        assert_eq!(
            GrpcOutcome.classify(&ok(Response::new(()))),
            Outcome::Success
        );
    }
}
