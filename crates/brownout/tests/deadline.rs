//! The caller's deadline through `Brownout::builder()`: the deadline layer reads it once
//! (capped by its `max`), the adaptive timeout enforces it, and handlers see it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brownout::http::DeadlineLayer;
use brownout::{Brownout, BrownoutBuilder, Deadline};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Sends one request with `headers` to a handler that records the deadline it sees and
/// then works for 10 s; returns the status, how long the answer took, and that deadline's
/// remaining time when the handler started.
async fn slow_call(
    builder: BrownoutBuilder,
    headers: &[(&str, &str)],
) -> (u16, Duration, Option<Duration>) {
    let brownout = builder.without_admission().build().unwrap();
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let mut svc = brownout
        .layer()
        .layer(service_fn(move |req: http::Request<()>| {
            *record.lock().unwrap() = Deadline::of(req.extensions()).map(|d| d.remaining());
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, Infallible>(http::Response::new(String::new()))
            }
        }));
    let mut request = http::Request::get("/").header("x-priority", "high");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let start = Instant::now();
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(request.body(()).unwrap())
        .await
        .unwrap();
    let seen = *seen.lock().unwrap();
    (response.status().as_u16(), start.elapsed(), seen)
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_is_enforced_and_seen_by_the_handler() {
    let (status, took, seen) = slow_call(Brownout::builder(), &[("grpc-timeout", "50m")]).await;
    assert_eq!(status, 504);
    assert_eq!(took, Duration::from_millis(50));
    assert_eq!(seen, Some(Duration::from_millis(50)));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_layers_max_caps_grpc_timeout() {
    let builder =
        Brownout::builder().deadline(DeadlineLayer::grpc_timeout().max(Duration::from_millis(20)));
    let (status, took, seen) = slow_call(builder, &[("grpc-timeout", "50m")]).await;
    assert_eq!(status, 504);
    assert_eq!(took, Duration::from_millis(20));
    assert_eq!(seen, Some(Duration::from_millis(20)));
}

#[tokio::test(start_paused = true)]
async fn a_custom_deadline_header_is_read_and_grpc_timeout_still_shortens() {
    let custom = || Brownout::builder().deadline(DeadlineLayer::header("x-timeout"));
    let (status, took, seen) = slow_call(custom(), &[("x-timeout", "30m")]).await;
    assert_eq!((status, took), (504, Duration::from_millis(30)));
    assert_eq!(seen, Some(Duration::from_millis(30)));
    // The adaptive timeout still honours `grpc-timeout` itself when the deadline layer
    // reads another header: the earlier of the two wins.
    let both = [("x-timeout", "30m"), ("grpc-timeout", "10m")];
    let (status, took, seen) = slow_call(custom(), &both).await;
    assert_eq!((status, took), (504, Duration::from_millis(10)));
    assert_eq!(seen, Some(Duration::from_millis(10)));
}

#[tokio::test(start_paused = true)]
async fn without_a_caller_deadline_the_handler_sees_the_adaptive_timeouts() {
    let (status, _, seen) = slow_call(Brownout::builder(), &[]).await;
    assert_eq!(status, 504);
    assert!(seen.is_some_and(|remaining| remaining > Duration::ZERO));
}
