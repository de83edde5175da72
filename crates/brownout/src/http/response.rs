//! Turning rejections and errors into http responses, so the stack's error type is `Infallible`.

use std::time::Duration;

use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{HeaderName, Response, StatusCode};

use super::answer::{AnswerFuture, Answering, AnsweringLayer, HttpAnswer};
use brownout_core::headers::{level_value, reason_value};
use brownout_core::{RejectReason, Rejected};

/// The response header carrying the server's load level (`normal` … `emergency`), read by
/// client-side throttles to shed locally what the server would shed anyway.
pub const LOAD_LEVEL_HEADER: HeaderName = brownout_core::headers::LOAD_LEVEL;

/// The response header naming why a request was refused (`shed`, `queue_full`, …), so
/// clients need not parse the body ([`brownout_core::headers::reject_reason`] reads it).
pub const REJECT_REASON_HEADER: HeaderName = brownout_core::headers::REJECT_REASON;

/// The status code for a rejection: 429 for rate limits, 504 for timeouts, 503 for every
/// other reason (shed, queue full or timed out, circuit open, shutting down, budget spent).
pub const fn status_for(reason: RejectReason) -> StatusCode {
    match reason {
        RejectReason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        RejectReason::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (the header has no fractions).
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0));
    secs.max(1)
}

fn explanation(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Shed => "the server is overloaded and is shedding this class of request",
        RejectReason::QueueFull => "the server's admission queue is full",
        RejectReason::QueueTimeout => "the request waited too long for capacity",
        RejectReason::RateLimited => "rate limit exceeded",
        RejectReason::CircuitOpen => "a dependency is failing; the circuit is open",
        RejectReason::Timeout => "the request timed out",
        RejectReason::ShuttingDown => "the server is shutting down",
        RejectReason::BudgetExhausted => "the retry budget is spent",
        _ => "the request was rejected",
    }
}

/// The response for a rejection: its status, `Retry-After`, `x-load-level`, `Connection:
/// close` while shutting down, and a short plain-text body naming the reason.
///
/// ```
/// use std::time::Duration;
/// use brownout::http::rejection_response;
/// use brownout_core::{LoadLevel, RejectReason, Rejected};
///
/// let rejected = Rejected::new(RejectReason::RateLimited, LoadLevel::High)
///     .with_retry_after(Duration::from_millis(1500));
/// let response: http::Response<String> = rejection_response(&rejected);
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "2");
/// assert_eq!(response.headers()["x-load-level"], "high");
/// assert_eq!(response.headers()["x-reject-reason"], "rate_limited");
/// assert!(response.body().starts_with("rate_limited"));
/// ```
pub fn rejection_response<B: From<String>>(rejected: &Rejected) -> Response<B> {
    let reason = rejected.reason();
    let mut response = Response::new(B::from(body(reason)));
    *response.status_mut() = status_for(reason);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, TEXT_PLAIN);
    headers.insert(LOAD_LEVEL_HEADER, level_value(rejected.level()));
    headers.insert(REJECT_REASON_HEADER, reason_value(reason));
    if let Some(after) = rejected.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
    }
    if reason == RejectReason::ShuttingDown {
        headers.insert(CONNECTION, const { HeaderValue::from_static("close") });
    }
    response
}

/// `Content-Type` of the answers' one-line bodies (made at compile time:
/// `HeaderValue::from_static` checks every byte when it runs).
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// The body of a rejection: `<reason>: <explanation>` and a newline, without the
/// formatting machinery (one allocation of the right size).
fn body(reason: RejectReason) -> String {
    let (name, why) = (reason.as_str(), explanation(reason));
    let mut body = String::with_capacity(name.len() + why.len() + 3);
    body.push_str(name);
    body.push_str(": ");
    body.push_str(why);
    body.push('\n');
    body
}

/// The response for any error out of a stack: a rejection's own response, or a bare 500
/// that leaks nothing about the error.
pub fn error_response<B: From<String>>(
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> Response<B> {
    match Rejected::find_in_box(error) {
        Some(rejected) => rejection_response(rejected),
        None => internal_error(),
    }
}

pub(super) fn internal_error<B: From<String>>() -> Response<B> {
    let mut response = Response::new(B::from("internal server error\n".to_owned()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
    response
}

/// Answers every error of the inner stack with a response and every panic with a 500, so
/// the service's error type is `Infallible` (what axum's `Router::layer` requires), and
/// stamps `x-load-level` on every response when given a
/// [`LoadSignal`](brownout_core::LoadSignal).
///
/// ```
/// use brownout::http::RejectionResponseLayer;
/// use brownout_core::{LoadLevel, LoadSignal, RejectReason, Rejected, BoxError};
/// use tower_layer::Layer;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # #[derive(Clone)] struct Refuse;
/// # impl Service<http::Request<()>> for Refuse {
/// #     type Response = http::Response<String>; type Error = BoxError;
/// #     type Future = std::future::Ready<Result<http::Response<String>, BoxError>>;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, _: http::Request<()>) -> Self::Future {
/// #         std::future::ready(Err(Rejected::new(RejectReason::Shed, LoadLevel::High).into()))
/// #     }
/// # }
/// let mut svc = RejectionResponseLayer::new()
///     .with_level_header(LoadSignal::fixed(LoadLevel::High))
///     .layer(Refuse);
/// let response = svc.call(http::Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()["x-load-level"], "high");
/// # }
/// ```
pub type RejectionResponseLayer = AnsweringLayer<HttpAnswer>;

/// The service of [`RejectionResponseLayer`].
pub type RejectionResponse<S> = Answering<S, HttpAnswer>;

/// The response future of [`RejectionResponse`].
pub type ResponseFuture<F> = AnswerFuture<F, HttpAnswer>;

#[cfg(test)]
mod tests {
    use super::*;
    use brownout_core::{BoxError, LoadLevel};

    #[test]
    fn statuses() {
        assert_eq!(status_for(RejectReason::Shed), 503);
        assert_eq!(status_for(RejectReason::QueueFull), 503);
        assert_eq!(status_for(RejectReason::QueueTimeout), 503);
        assert_eq!(status_for(RejectReason::CircuitOpen), 503);
        assert_eq!(status_for(RejectReason::ShuttingDown), 503);
        assert_eq!(status_for(RejectReason::RateLimited), 429);
        assert_eq!(status_for(RejectReason::Timeout), 504);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn other_errors_leak_nothing() {
        let err: BoxError = "database password is hunter2".into();
        let response: Response<String> = error_response(&*err);
        assert_eq!(response.status(), 500);
        assert!(!response.body().contains("hunter2"));
    }

    #[test]
    fn bodies_name_every_reason() {
        for reason in RejectReason::ALL {
            let expected = format!("{}: {}\n", reason.as_str(), explanation(reason));
            assert_eq!(body(reason), expected);
        }
    }

    #[test]
    fn shutting_down_closes_the_connection() {
        let r = Rejected::new(RejectReason::ShuttingDown, LoadLevel::Normal);
        let response: Response<String> = rejection_response(&r);
        assert_eq!(response.headers()[CONNECTION], "close");
        assert!(response.headers().get(RETRY_AFTER).is_none());
    }
}
