//! `Brownout::grpc_builder()`: the facade's stack answering as a gRPC server must.
#![cfg(all(feature = "stack", feature = "grpc"))]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout::admission::{Limit, RateLimit};
use brownout::monitor::Monitor;
use brownout::shutdown::Shutdown;
use brownout::{Brownout, Deadline, LoadLevel, Priority};
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

/// A gRPC handler stand-in: answers `grpc-status: 0` with the class and deadline it saw.
#[derive(Clone, Copy)]
struct Handler;

impl Service<Request<()>> for Handler {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let class = req
            .extensions()
            .get::<Priority>()
            .map_or("none", |p| p.as_str());
        let deadline = Deadline::of(req.extensions()).map(|d| d.remaining());
        let body = format!("{class} {deadline:?}");
        ready(Ok(Response::builder()
            .header("grpc-status", "0")
            .body(body)
            .expect("valid response")))
    }
}

fn call(path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::post(path).header("content-type", "application/grpc");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(()).expect("valid request")
}

async fn send<S>(svc: &mut S, req: Request<()>) -> Response<String>
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
{
    svc.ready().await.unwrap().call(req).await.unwrap()
}

const SAY_HELLO: &str = "/greeter.v1.Greeter/SayHello";

// RELIABILITY #7 through the facade: shed calls are UNAVAILABLE with pushback and the
// level, in a trailers-only 200; health checks stay Critical; Critical calls are served.
#[tokio::test(start_paused = true)]
async fn rel_07_shed_is_unavailable_with_pushback_and_health_checks_pass() {
    let brownout = Brownout::grpc_builder()
        .monitor(|m| m.manual_ticks())
        .build()
        .unwrap();
    let mut svc = brownout.layer().layer(Handler);

    let ok = send(&mut svc, call(SAY_HELLO, &[("x-priority", "low")])).await;
    assert_eq!(ok.headers()["grpc-status"], "0");
    assert!(ok.body().starts_with("low "), "{}", ok.body());
    assert_eq!(ok.headers()["x-load-level"], "normal");

    brownout.publisher().force(LoadLevel::Emergency);
    let shed = send(&mut svc, call(SAY_HELLO, &[("x-priority", "low")])).await;
    assert_eq!(shed.status(), 200, "gRPC errors travel in a 200");
    assert_eq!(shed.headers()["content-type"], "application/grpc");
    assert_eq!(shed.headers()["grpc-status"], "14"); // UNAVAILABLE
    let pushback: u64 = shed.headers()["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0);
    assert_eq!(shed.headers()["x-load-level"], "emergency");
    assert!(
        shed.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("shed")
    );

    // Unclassified calls are Medium (shed at Emergency); health checks are Critical.
    let medium = send(&mut svc, call(SAY_HELLO, &[])).await;
    assert_eq!(medium.headers()["grpc-status"], "14");
    for path in brownout::grpc::HEALTH_PATHS {
        let health = send(&mut svc, call(path, &[("x-priority", "background")])).await;
        assert_eq!(health.headers()["grpc-status"], "0", "{path}");
        assert!(health.body().starts_with("critical "), "{path}");
    }
    let critical = send(&mut svc, call(SAY_HELLO, &[("x-priority", "critical")])).await;
    assert_eq!(critical.headers()["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn priority_comes_from_a_configurable_metadata_key_and_deadline_from_grpc_timeout() {
    let brownout = Brownout::builder()
        .grpc()
        .monitor(|m| m.manual_ticks())
        .priority_header("x-tenant-class")
        // Without the adaptive timeout, whose own deadline would also reach the handler.
        .without_timeout()
        .build()
        .unwrap();
    let mut svc = brownout.layer().layer(Handler);
    let req = call(
        SAY_HELLO,
        &[
            ("x-tenant-class", "background"),
            ("x-priority", "critical"), // not the configured key: ignored
            ("grpc-timeout", "250m"),
        ],
    );
    let response = send(&mut svc, req).await;
    assert_eq!(
        response.body(),
        &format!("background {:?}", Some(Duration::from_millis(250)))
    );

    // Malformed values fall back to the default class (Medium).
    let response = send(
        &mut svc,
        call(
            SAY_HELLO,
            &[("x-tenant-class", "urgent!!"), ("grpc-timeout", "x")],
        ),
    )
    .await;
    assert_eq!(response.body(), "medium None");
}

#[tokio::test(start_paused = true)]
async fn rel_07_rate_limited_is_resource_exhausted() {
    let brownout = Brownout::grpc_builder()
        .monitor(|m| m.manual_ticks())
        .admission(|a| {
            a.limit(Limit::fixed(8))
                .rate_limit(RateLimit::per_second(1.0).burst(1))
        })
        .build()
        .unwrap();
    let mut svc = brownout.layer().layer(Handler);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = send(&mut svc, call(SAY_HELLO, &[("x-priority", "high")])).await;
        statuses.push(response);
    }
    let limited = statuses
        .iter()
        .find(|r| r.headers()["grpc-status"] != "0")
        .expect("20 calls at 1/s: one is limited");
    assert_eq!(limited.headers()["grpc-status"], "8"); // RESOURCE_EXHAUSTED
    assert!(limited.headers().contains_key("grpc-retry-pushback-ms"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_unavailable_and_a_given_monitor_drives_the_level() {
    let monitor = Monitor::builder().manual_ticks().build().unwrap();
    let publisher = monitor.publisher();
    let shutdown = Shutdown::builder()
        .load_signal(monitor.signal())
        .build()
        .unwrap();
    let brownout = Brownout::grpc_builder()
        .with_monitor(monitor)
        .shutdown(&shutdown)
        .build()
        .unwrap();
    let mut svc = brownout.layer().layer(Handler);

    publisher.force(LoadLevel::High);
    assert_eq!(brownout.signal().level(), LoadLevel::High);
    let shed = send(&mut svc, call(SAY_HELLO, &[("x-priority", "low")])).await;
    assert_eq!(shed.headers()["grpc-status"], "14");
    assert_eq!(shed.headers()["x-load-level"], "high");

    publisher.release();
    shutdown.trigger();
    let refused = send(&mut svc, call(SAY_HELLO, &[("x-priority", "critical")])).await;
    assert_eq!(refused.headers()["grpc-status"], "14");
    assert!(
        refused.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("shutting_down")
    );
    // HTTP/2 forbids connection headers: the gRPC answer never carries `Connection: close`.
    assert!(!refused.headers().contains_key("connection"));
}

#[test]
fn an_invalid_priority_key_is_refused_at_build() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let err = Brownout::grpc_builder()
        .priority_header("not a header")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "priority_header");
}

// RELIABILITY #20 through the facade: during the shutdown's readiness delay requests are
// still served (balancers move away first), then refused; the admission queue closes with
// the guard, not at the trigger.
#[tokio::test(start_paused = true)]
async fn rel_20_requests_during_the_readiness_delay_are_served() {
    let shutdown = Shutdown::builder()
        .readiness_delay(Duration::from_secs(2))
        .drain_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let brownout = Brownout::grpc_builder()
        .monitor(|m| m.manual_ticks())
        .shutdown(&shutdown)
        .build()
        .unwrap();
    let mut svc = brownout.layer().layer(Handler);
    shutdown.trigger();
    let during = send(&mut svc, call(SAY_HELLO, &[("x-priority", "high")])).await;
    assert_eq!(during.headers()["grpc-status"], "0");
    assert!(!brownout.admission().unwrap().is_closed());

    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::yield_now().await;
    assert!(brownout.admission().unwrap().is_closed());
    let after = send(&mut svc, call(SAY_HELLO, &[("x-priority", "high")])).await;
    assert_eq!(after.headers()["grpc-status"], "14");
}
