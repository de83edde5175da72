//! Overload in a gRPC (tonic) server: case 7. The stack is `Brownout::grpc_builder()`, whose
//! layer goes into `tonic::transport::Server::builder().layer(..)`; tonic's server sees
//! `http::Request`s, so the calls are driven here as http requests with gRPC metadata
//! (examples/tonic-greeter runs the same stack under a real tonic client).

use std::time::Duration;

use brownout::admission::{Limit, QueueTimeout, RateLimit};
use brownout::shutdown::Shutdown;
use brownout::{Brownout, LoadLevel};
use tokio::time::sleep;
use tower::{Layer, ServiceExt};

use crate::support::{Backend, with_mode};

fn call(priority: &str, mode: &str) -> http::Request<String> {
    let mut req = with_mode(priority, mode);
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = "/greeter.v1.Greeter/SayHello".parse().unwrap();
    req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    req
}

/// The gRPC status code of an answer (`None` for a plain success without trailers-only).
fn grpc_status(response: &http::Response<String>) -> Option<&str> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
}

fn assert_retryable(response: &http::Response<String>, code: &str) {
    assert_eq!(response.status(), 200, "gRPC errors travel in an HTTP 200");
    assert_eq!(grpc_status(response), Some(code), "{response:?}");
    assert_ne!(grpc_status(response), Some("13"), "never INTERNAL");
    assert!(
        response.headers().contains_key("grpc-retry-pushback-ms"),
        "{response:?}"
    );
    assert!(response.headers().contains_key("x-load-level"));
}

/// RELIABILITY #7: a tonic server's overload answers are retryable gRPC statuses with
/// pushback — a full admission queue, a shed class and a shutdown are `UNAVAILABLE` (14), a
/// rate limit is `RESOURCE_EXHAUSTED` (8) — never `INTERNAL` (13), which only a panic gets.
#[tokio::test(start_paused = true)]
async fn rel_07_grpc_overload_answers_unavailable_or_resource_exhausted_with_pushback() {
    let shutdown = Shutdown::new();
    let brownout = Brownout::grpc_builder()
        .admission(|a| {
            a.limit(Limit::fixed(1))
                .queue_capacity(0)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(1)))
        })
        .without_timeout()
        .shutdown(&shutdown)
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());

    // Concurrency limit reached: UNAVAILABLE with pushback.
    let running = tokio::spawn(svc.clone().oneshot(call("high", "hold")));
    sleep(Duration::from_millis(1)).await;
    let full = svc.clone().oneshot(call("high", "ok")).await.unwrap();
    assert_retryable(&full, "14");
    backend.release(1);
    let ok = running.await.unwrap().unwrap();
    assert_eq!(
        (ok.status(), grpc_status(&ok)),
        (http::StatusCode::OK, None)
    );

    // Shed by class at a high level: UNAVAILABLE; Critical still served.
    brownout.publisher().force(LoadLevel::Critical);
    let shed = svc.clone().oneshot(call("low", "ok")).await.unwrap();
    assert_retryable(&shed, "14");
    assert_eq!(shed.headers()["x-load-level"], "critical");
    let critical = svc.clone().oneshot(call("critical", "ok")).await.unwrap();
    assert_eq!(grpc_status(&critical), None);
    brownout.publisher().force(LoadLevel::Normal);

    // A panic is the only INTERNAL.
    let panicked = svc.clone().oneshot(call("high", "panic")).await.unwrap();
    assert_eq!(grpc_status(&panicked), Some("13"));

    // Shutting down: UNAVAILABLE, so the client retries on another replica.
    shutdown.trigger();
    let closing = svc.oneshot(call("critical", "ok")).await.unwrap();
    assert_retryable(&closing, "14");

    // A rate limit: RESOURCE_EXHAUSTED with the limiter's pushback.
    let limited = Brownout::grpc_builder()
        .admission(|a| {
            a.limit(Limit::fixed(8))
                .rate_limit(RateLimit::per_second(1.0))
        })
        .without_timeout()
        .build()
        .unwrap();
    limited.publisher().force(LoadLevel::Normal);
    let svc = limited.layer().layer(Backend::default());
    let first = svc.clone().oneshot(call("high", "ok")).await.unwrap();
    assert_eq!(grpc_status(&first), None);
    let second = svc.oneshot(call("high", "ok")).await.unwrap();
    assert_retryable(&second, "8");
    let pushback: u64 = second.headers()["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0 && pushback <= 1000, "{pushback}");
}
