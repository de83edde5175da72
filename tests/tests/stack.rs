//! Reliability cases that cross layers, run against the full `Brownout` stack.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use brownout::admission::{Limit, QueueTimeout};
use brownout::{Brownout, LoadLevel};
use tower::{Layer, Service, ServiceExt, service_fn};

fn request(priority: &str) -> http::Request<Body> {
    http::Request::get("/")
        .header("x-priority", priority)
        .body(Body::empty())
        .unwrap()
}

/// Counts requests inside the handler and remembers the peak.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Gauge {
    fn enter(&self) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.now.clone())
    }
}

struct GaugeGuard(Arc<AtomicUsize>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// RELIABILITY #6: overload behind an axum `Router` (always ready) is shed with 503 +
/// `Retry-After`, and the queue stays bounded instead of growing without limit.
#[tokio::test(start_paused = true)]
async fn rel_06_overload_behind_axum_router_is_shed_not_queued_without_bound() {
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::fixed(2))
                .queue_capacity(4)
                .queue_timeout(QueueTimeout::fixed(Duration::from_millis(100)))
        })
        .without_timeout()
        .build()
        .unwrap();
    let router = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "done"
            }),
        )
        .layer(brownout.layer());

    let mut calls = Vec::new();
    for _ in 0..50 {
        calls.push(tokio::spawn(router.clone().oneshot(request("medium"))));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let admission = brownout.admission().unwrap();
    assert!(
        admission.queued() <= 4,
        "queue bounded: {}",
        admission.queued()
    );
    assert!(admission.in_flight() <= 2);

    let mut statuses = Vec::new();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        if response.status() == 503 {
            assert!(
                response.headers().contains_key("retry-after"),
                "{response:?}"
            );
        }
        statuses.push(response.status().as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + refused, 50, "every request answered: {statuses:?}");
    assert!(ok >= 2 && refused >= 40, "ok {ok}, refused {refused}");
}

/// RELIABILITY #4: a panicking handler answers 500 and returns its admission permit.
#[tokio::test(start_paused = true)]
async fn rel_04_handler_panic_answers_500_and_releases_the_permit() {
    let brownout = Brownout::builder()
        .admission(|a| a.limit(Limit::fixed(1)))
        .build()
        .unwrap();
    let mut svc = brownout
        .layer()
        .layer(service_fn(|req: http::Request<Body>| async move {
            if req.headers().contains_key("x-explode") {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(http::Response::new(Body::from("fine")))
        }));
    let mut boom = request("high");
    boom.headers_mut()
        .insert("x-explode", http::HeaderValue::from_static("1"));
    let response = svc.ready().await.unwrap().call(boom).await.unwrap();
    assert_eq!(response.status(), 500);
    let admission = brownout.admission().unwrap();
    assert_eq!(admission.in_flight(), 0, "the permit came back");
    // With a limit of 1, a leaked permit would make this request wait forever.
    let response = tokio::time::timeout(
        Duration::from_secs(1),
        svc.ready().await.unwrap().call(request("high")),
    )
    .await
    .expect("admitted at once")
    .unwrap();
    assert_eq!(response.status(), 200);
}

/// RELIABILITY #1: `poll_ready` without `call` (an idle keep-alive connection) holds no
/// capacity anywhere in the stack.
#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_without_call_holds_nothing() {
    let brownout = Brownout::builder()
        .admission(|a| a.limit(Limit::fixed(1)))
        .build()
        .unwrap();
    let layer = brownout.layer();
    let handler = service_fn(|_req: http::Request<Body>| async {
        Ok::<_, Infallible>(http::Response::new(Body::empty()))
    });
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut svc = layer.layer(handler);
        svc.ready().await.unwrap();
        idle.push(svc); // ready, never called
    }
    let mut next = layer.layer(handler);
    let response = tokio::time::timeout(
        Duration::from_millis(10),
        next.ready().await.unwrap().call(request("low")),
    )
    .await
    .expect("admitted although ten connections are ready and idle")
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(brownout.admission().unwrap().in_flight(), 0);
}

/// RELIABILITY #3: 1000 clones racing on a multi-thread runtime keep the peak in-flight at
/// or below the limit, together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rel_03_thousand_clones_racing_respect_the_limit_together() {
    const LIMIT: usize = 8;
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::fixed(LIMIT))
                .queue_capacity(2000)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(30)))
        })
        .without_shed()
        .without_timeout()
        .build()
        .unwrap();
    let gauge = Gauge::default();
    let handler = {
        let gauge = gauge.clone();
        service_fn(move |_req: http::Request<Body>| {
            let gauge = gauge.clone();
            async move {
                let _inside = gauge.enter();
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_micros(200)).await;
                Ok::<_, Infallible>(http::Response::new(Body::empty()))
            }
        })
    };
    let layer = brownout.layer();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let svc = layer.layer(handler.clone());
        tasks.push(tokio::spawn(svc.oneshot(request("medium"))));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().status() == 200 {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 1000,
        "a queue of 2000 with a 30 s allowance serves everyone"
    );
    let peak = gauge.peak.load(Ordering::SeqCst);
    assert!(peak <= LIMIT, "peak in-flight {peak} > limit {LIMIT}");
    assert_eq!(brownout.admission().unwrap().in_flight(), 0);
}

/// An operator override reaches every layer at once; releasing it restores service.
#[tokio::test(start_paused = true)]
async fn operator_override_sheds_and_release_restores() {
    let brownout = Brownout::builder().build().unwrap();
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(brownout.layer());
    brownout.publisher().force(LoadLevel::Emergency);
    let response = router.clone().oneshot(request("high")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-load-level"], "emergency");
    let response = router.clone().oneshot(request("critical")).await.unwrap();
    assert_eq!(response.status(), 200);
    brownout.publisher().release();
    let response = router.oneshot(request("background")).await.unwrap();
    assert_eq!(response.status(), 200);
}
