//! Turning rejections and errors into trailers-only gRPC responses.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

use brownout_core::{RejectReason, Rejected};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderName, Response, StatusCode};

use brownout_core::headers::{level_value, reason_value};

use crate::http::{LOAD_LEVEL_HEADER, REJECT_REASON_HEADER};

/// The trailer (here: header of a trailers-only response) carrying the gRPC status code.
pub const GRPC_STATUS_HEADER: HeaderName = HeaderName::from_static("grpc-status");

/// The trailer carrying the percent-encoded, human-readable status message.
pub const GRPC_MESSAGE_HEADER: HeaderName = HeaderName::from_static("grpc-message");

/// The trailer telling a gRPC client's retry policy how long to wait before the next
/// attempt, in milliseconds (gRFC A6). Absent when the server does not know.
pub const RETRY_PUSHBACK_HEADER: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The largest pushback written, in milliseconds: `i32::MAX`, because some clients
/// (grpc-java) parse the value as a 32-bit integer and treat an overflow as "never retry".
pub const MAX_PUSHBACK_MS: u64 = i32::MAX as u64;

/// The gRPC status codes this module answers with (a subset of the 17 codes; the numbers
/// are the wire values, equal to `tonic::Code as i32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// `UNKNOWN` (2): an error the server cannot classify; its details are not sent.
    Unknown = 2,
    /// `DEADLINE_EXCEEDED` (4): the request ran past its timeout or its caller's deadline.
    DeadlineExceeded = 4,
    /// `RESOURCE_EXHAUSTED` (8): a rate limit refused the request.
    ResourceExhausted = 8,
    /// `INTERNAL` (13): the handler panicked. Never used for a rejection.
    Internal = 13,
    /// `UNAVAILABLE` (14): the server refused the request for now (overload, queue,
    /// circuit, shutdown, budget); the client may retry elsewhere or later.
    Unavailable = 14,
}

impl GrpcCode {
    /// The wire value (`tonic::Code::from_i32` accepts it).
    #[inline]
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical upper-case name (`UNAVAILABLE`).
    pub const fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Unknown => "UNKNOWN",
            GrpcCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            GrpcCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            GrpcCode::Internal => "INTERNAL",
            GrpcCode::Unavailable => "UNAVAILABLE",
        }
    }

    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            GrpcCode::Unknown => "2",
            GrpcCode::DeadlineExceeded => "4",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::Internal => "13",
            GrpcCode::Unavailable => "14",
        })
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gRPC code for a rejection: `RESOURCE_EXHAUSTED` for rate limits, `DEADLINE_EXCEEDED`
/// for timeouts, `UNAVAILABLE` for every other reason (shed, queue full or timed out,
/// circuit open, shutting down, budget spent). Never `INTERNAL`.
pub const fn code_for(reason: RejectReason) -> GrpcCode {
    match reason {
        RejectReason::RateLimited => GrpcCode::ResourceExhausted,
        RejectReason::Timeout => GrpcCode::DeadlineExceeded,
        _ => GrpcCode::Unavailable,
    }
}

/// `grpc-retry-pushback-ms` for a `retry_after`: whole milliseconds rounded up (so a
/// sub-millisecond hint never reads as "retry at once" unless it is zero), capped at
/// [`MAX_PUSHBACK_MS`].
pub fn pushback_ms(after: Duration) -> u64 {
    let millis = after.as_millis();
    let rounded_up =
        millis.saturating_add(u128::from(!after.subsec_nanos().is_multiple_of(1_000_000)));
    u64::try_from(rounded_up)
        .unwrap_or(u64::MAX)
        .min(MAX_PUSHBACK_MS)
}

fn explanation(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Shed => {
            "shed: the server is overloaded and is shedding this class of request"
        }
        RejectReason::QueueFull => "queue_full: the server's admission queue is full",
        RejectReason::QueueTimeout => "queue_timeout: the request waited too long for capacity",
        RejectReason::RateLimited => "rate_limited: rate limit exceeded",
        RejectReason::CircuitOpen => "circuit_open: a dependency is failing; the circuit is open",
        RejectReason::Timeout => "timeout: the request timed out",
        RejectReason::ShuttingDown => "shutting_down: the server is shutting down",
        RejectReason::BudgetExhausted => "budget_exhausted: the retry budget is spent",
        _ => "rejected: the request was rejected",
    }
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 protocol requires: bytes outside
/// `0x20..=0x7E`, and `%` itself, become `%XX` (upper-case hex) of their UTF-8 encoding.
/// Borrows when nothing needs encoding.
pub(crate) fn encode_message(message: &str) -> Cow<'_, str> {
    let plain = |b: u8| (0x20..=0x7E).contains(&b) && b != b'%';
    if message.bytes().all(plain) {
        return Cow::Borrowed(message);
    }
    let mut encoded = String::with_capacity(message.len() * 3);
    for b in message.bytes() {
        if plain(b) {
            encoded.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    Cow::Owned(encoded)
}

fn trailers_only<B: Default>(code: GrpcCode, message: &str) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS_HEADER, code.header_value());
    // Every byte of an encoded message is visible ASCII, which a header value accepts.
    if let Ok(value) = HeaderValue::from_str(&encode_message(message)) {
        headers.insert(GRPC_MESSAGE_HEADER, value);
    }
    response
}

/// The trailers-only gRPC response for a rejection: HTTP 200, `content-type:
/// application/grpc`, `grpc-status` from [`code_for`], a `grpc-message` naming the reason,
/// `grpc-retry-pushback-ms` when the rejection carries a `retry_after`, `x-load-level`, and
/// `x-reject-reason` (the reason's snake-case name, which marks the answer as a brownout
/// refusal for [`GrpcOutcome`](crate::grpc::GrpcOutcome)). The body is `B::default()` (empty for `tonic::body::Body`), so the
/// response ends with its headers, as gRPC's trailers-only form requires.
///
/// ```
/// use std::time::Duration;
/// use brownout::grpc::rejection_response;
/// use brownout::{LoadLevel, RejectReason, Rejected};
///
/// let rejected = Rejected::new(RejectReason::Shed, LoadLevel::Critical)
///     .with_retry_after(Duration::from_millis(1500));
/// let response: http::Response<()> = rejection_response(&rejected);
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.headers()["content-type"], "application/grpc");
/// assert_eq!(response.headers()["grpc-status"], "14"); // UNAVAILABLE
/// assert_eq!(response.headers()["grpc-retry-pushback-ms"], "1500");
/// assert_eq!(response.headers()["x-load-level"], "critical");
/// assert_eq!(response.headers()["x-reject-reason"], "shed");
/// assert!(response.headers()["grpc-message"].to_str().unwrap().starts_with("shed: "));
/// ```
pub fn rejection_response<B: Default>(rejected: &Rejected) -> Response<B> {
    let reason = rejected.reason();
    let mut response = trailers_only(code_for(reason), explanation(reason));
    let headers = response.headers_mut();
    headers.insert(LOAD_LEVEL_HEADER, level_value(rejected.level()));
    headers.insert(REJECT_REASON_HEADER, reason_value(reason));
    if let Some(after) = rejected.retry_after() {
        headers.insert(RETRY_PUSHBACK_HEADER, HeaderValue::from(pushback_ms(after)));
    }
    response
}

/// The response for any error out of a stack: a rejection's own response (found anywhere
/// in the `source()` chain, e.g. inside a shutdown `Aborted`), or a bare `UNKNOWN` whose
/// message leaks nothing about the error.
pub fn error_response<B: Default>(
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> Response<B> {
    match Rejected::find_in_box(error) {
        Some(rejected) => rejection_response(rejected),
        None => trailers_only(GrpcCode::Unknown, "the server failed to handle the request"),
    }
}

/// The response for a handler that panicked: `INTERNAL`, with nothing of the panic sent.
pub fn panic_response<B: Default>() -> Response<B> {
    trailers_only(GrpcCode::Internal, "internal server error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use brownout_core::{BoxError, LoadLevel};
    use proptest::prelude::*;

    fn header<'a>(r: &'a Response<()>, name: &str) -> Option<&'a str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn decode(encoded: &str) -> Vec<u8> {
        let bytes = encoded.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    }

    // RELIABILITY #7: overload in a tonic server → UNAVAILABLE / RESOURCE_EXHAUSTED with
    // pushback, never INTERNAL; checked for every reason, with and without retry_after.
    #[test]
    fn rel_07_every_reason_maps_to_a_retryable_code_with_pushback() {
        for reason in RejectReason::ALL {
            let expected = match reason {
                RejectReason::RateLimited => "8",
                RejectReason::Timeout => "4",
                _ => "14",
            };
            let with =
                Rejected::new(reason, LoadLevel::High).with_retry_after(Duration::from_millis(250));
            let r: Response<()> = rejection_response(&with);
            assert_eq!(r.status(), StatusCode::OK, "{reason}");
            assert_eq!(header(&r, "content-type"), Some("application/grpc"));
            assert_eq!(header(&r, "grpc-status"), Some(expected), "{reason}");
            assert_ne!(header(&r, "grpc-status"), Some("13"), "{reason}");
            assert_eq!(
                header(&r, "grpc-retry-pushback-ms"),
                Some("250"),
                "{reason}"
            );
            assert_eq!(header(&r, "x-load-level"), Some("high"));
            assert_eq!(header(&r, "x-reject-reason"), Some(reason.as_str()));
            let message = header(&r, "grpc-message").unwrap();
            assert!(message.starts_with(reason.as_str()), "{message}");
            // h2 forbids connection-specific headers; never send them.
            assert!(r.headers().get("connection").is_none());

            let without = Rejected::new(reason, LoadLevel::Emergency);
            let r: Response<()> = rejection_response(&without);
            assert_eq!(header(&r, "grpc-status"), Some(expected));
            assert_eq!(header(&r, "grpc-retry-pushback-ms"), None, "{reason}");
            assert_eq!(header(&r, "x-load-level"), Some("emergency"));
        }
    }

    #[test]
    fn codes_match_the_grpc_wire_values() {
        assert_eq!(code_for(RejectReason::Shed), GrpcCode::Unavailable);
        assert_eq!(code_for(RejectReason::QueueFull), GrpcCode::Unavailable);
        assert_eq!(code_for(RejectReason::QueueTimeout), GrpcCode::Unavailable);
        assert_eq!(code_for(RejectReason::CircuitOpen), GrpcCode::Unavailable);
        assert_eq!(code_for(RejectReason::ShuttingDown), GrpcCode::Unavailable);
        assert_eq!(
            code_for(RejectReason::BudgetExhausted),
            GrpcCode::Unavailable
        );
        assert_eq!(
            code_for(RejectReason::RateLimited),
            GrpcCode::ResourceExhausted
        );
        assert_eq!(code_for(RejectReason::Timeout), GrpcCode::DeadlineExceeded);
        for (code, value, name) in [
            (GrpcCode::Unknown, 2, "UNKNOWN"),
            (GrpcCode::DeadlineExceeded, 4, "DEADLINE_EXCEEDED"),
            (GrpcCode::ResourceExhausted, 8, "RESOURCE_EXHAUSTED"),
            (GrpcCode::Internal, 13, "INTERNAL"),
            (GrpcCode::Unavailable, 14, "UNAVAILABLE"),
        ] {
            assert_eq!(code.as_i32(), value);
            assert_eq!(code.header_value(), value.to_string().as_str());
            assert_eq!(code.to_string(), name);
        }
    }

    #[test]
    fn pushback_rounds_up_and_caps() {
        assert_eq!(pushback_ms(Duration::ZERO), 0);
        assert_eq!(pushback_ms(Duration::from_nanos(1)), 1);
        assert_eq!(pushback_ms(Duration::from_micros(1500)), 2);
        assert_eq!(pushback_ms(Duration::from_secs(3)), 3000);
        assert_eq!(
            pushback_ms(Duration::from_secs(86_400 * 365)),
            MAX_PUSHBACK_MS
        );
        assert_eq!(pushback_ms(Duration::MAX), MAX_PUSHBACK_MS);
    }

    #[test]
    fn other_errors_are_unknown_and_leak_nothing() {
        let err: BoxError = "database password is hunter2".into();
        let r: Response<()> = error_response(&*err);
        assert_eq!(header(&r, "grpc-status"), Some("2"));
        assert!(!header(&r, "grpc-message").unwrap().contains("hunter2"));
        assert!(r.headers().get("grpc-retry-pushback-ms").is_none());

        let boxed: BoxError = Rejected::new(RejectReason::RateLimited, LoadLevel::Normal).into();
        let r: Response<()> = error_response(&*boxed);
        assert_eq!(header(&r, "grpc-status"), Some("8"));

        let r: Response<()> = panic_response();
        assert_eq!(header(&r, "grpc-status"), Some("13"));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert!(matches!(encode_message("plain: ok"), Cow::Borrowed(_)));
        assert_eq!(encode_message("100%"), "100%25");
        assert_eq!(encode_message("a\nb"), "a%0Ab");
        assert_eq!(encode_message("é"), "%C3%A9");
        for reason in RejectReason::ALL {
            // The fixed messages need no encoding, so they read the same on every client.
            assert!(matches!(
                encode_message(explanation(reason)),
                Cow::Borrowed(_)
            ));
        }
    }

    proptest! {
        #[test]
        fn encoded_messages_are_valid_headers_and_decode_back(message in ".{0,64}") {
            let encoded = encode_message(&message);
            prop_assert!(HeaderValue::from_str(&encoded).is_ok());
            prop_assert!(encoded.bytes().all(|b| (0x20..=0x7E).contains(&b)));
            prop_assert_eq!(decode(&encoded), message.as_bytes());
        }

        #[test]
        fn pushback_is_never_below_the_hint_unless_capped(nanos in any::<u64>()) {
            let after = Duration::from_nanos(nanos);
            let ms = pushback_ms(after);
            prop_assert!(ms <= MAX_PUSHBACK_MS);
            if ms < MAX_PUSHBACK_MS {
                prop_assert!(Duration::from_millis(ms) >= after);
                prop_assert!(Duration::from_millis(ms) < after + Duration::from_millis(1));
            }
        }
    }
}
