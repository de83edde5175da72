//! Drives the router in process (`Router::clone().oneshot`) on a paused clock: per-route
//! limits, classes and the runtime switch, without sockets.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, Response, StatusCode};
use axum_routes::{RouteLimits, Routes};
use brownout::LoadLevel;
use brownout::admission::{QueueTimeout, RateLimit};
use tokio::task::JoinSet;
use tower::ServiceExt;

fn request(method: Method, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

async fn send(router: &Router, method: Method, uri: &str) -> Response<Body> {
    router.clone().oneshot(request(method, uri)).await.unwrap()
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = to_bytes(response.into_body(), 64 * 1024).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn reports_limit_holds_across_router_clones_while_search_is_unaffected() {
    let limits = RouteLimits {
        reports_concurrency: 2,
        reports_queue: 64,
        // Long enough that every queued request is served: the test is about the limit.
        reports_queue_timeout: QueueTimeout::fixed(Duration::from_secs(10)),
        reports_rate: RateLimit::per_second(1e6).burst(1_000_000),
        work: Duration::from_millis(10),
        ..RouteLimits::default()
    };
    let routes = Routes::build(limits, None).unwrap();
    // Pin the level: the queue behind /reports must not raise it and shed /reports (Low).
    routes.brownout().publisher().force(LoadLevel::Normal);
    let router = axum_routes::app(&routes, None).unwrap();

    const N: usize = 40;
    let mut calls = JoinSet::new();
    for i in 0..N {
        // Every request goes through its own clone of the router, and axum clones the
        // route's service again per request.
        let (a, b) = (router.clone(), router.clone());
        calls.spawn(async move {
            let r = a.oneshot(request(Method::GET, "/reports")).await.unwrap();
            ("reports", r.status())
        });
        calls.spawn(async move {
            let uri = format!("/search?q={i}");
            let r = b.oneshot(request(Method::GET, &uri)).await.unwrap();
            ("search", r.status())
        });
    }
    let mut served = [0usize; 2];
    while let Some(done) = calls.join_next().await {
        let (route, status) = done.unwrap();
        assert_eq!(status, StatusCode::OK, "{route}");
        served[usize::from(route == "search")] += 1;
    }
    assert_eq!(served, [N, N]);

    // The handler side never saw more than the route's limit, however many clones ran...
    assert_eq!(routes.reports_handler().peak(), 2);
    assert_eq!(routes.reports_admission().limit(), 2);
    // ...while /search ran all of its requests at once: it does not share /reports' limit.
    assert_eq!(routes.search_handler().peak(), N);
    assert_eq!(routes.reports_handler().now(), 0);
    assert_eq!(routes.reports_admission().in_flight(), 0);
    assert_eq!(routes.search_admission().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn at_high_reports_is_shed_while_search_and_health_are_served() {
    let routes = Routes::build(RouteLimits::default(), None).unwrap();
    let router = axum_routes::app(&routes, None).unwrap();
    let publisher = routes.brownout().publisher();

    assert_eq!(send(&router, Method::GET, "/reports").await.status(), 200);

    publisher.force(LoadLevel::High);
    let shed = send(&router, Method::GET, "/reports").await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(shed.headers().contains_key("retry-after"), "{shed:?}");
    assert_eq!(shed.headers()["x-load-level"], "high");
    assert!(body_text(shed).await.contains("shed"));

    let search = send(&router, Method::GET, "/search?q=rust").await;
    assert_eq!(search.status(), StatusCode::OK);
    let text = body_text(search).await;
    assert!(
        text.contains("limited mode"),
        "handlers degrade at High: {text}"
    );

    let health = send(&router, Method::GET, "/health").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert!(body_text(health).await.contains(r#""level":"high""#));

    // Critical still serves /health; Emergency sheds everything below Critical.
    publisher.force(LoadLevel::Emergency);
    assert_eq!(send(&router, Method::GET, "/search").await.status(), 503);
    assert_eq!(send(&router, Method::GET, "/reports").await.status(), 503);
    let admin = send(&router, Method::POST, "/admin/toggle/reports?enabled=true").await;
    assert_eq!(
        admin.status(),
        StatusCode::OK,
        "operators reach the admin route"
    );

    publisher.release();
    assert_eq!(send(&router, Method::GET, "/reports").await.status(), 200);
    assert_eq!(routes.reports_handler().peak(), 1);
}

#[tokio::test(start_paused = true)]
async fn admin_toggle_bypasses_and_restores_the_reports_limiter() {
    let limits = RouteLimits {
        // One request per 100 s: the second one is always over the rate.
        reports_rate: RateLimit::per_second(0.01).burst(1),
        work: Duration::ZERO,
        ..RouteLimits::default()
    };
    let routes = Routes::build(limits, None).unwrap();
    routes.brownout().publisher().force(LoadLevel::Normal);
    let router = axum_routes::app(&routes, None).unwrap();

    assert_eq!(send(&router, Method::GET, "/reports").await.status(), 200);
    let limited = send(&router, Method::GET, "/reports").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));

    let off = send(&router, Method::POST, "/admin/toggle/reports?enabled=false").await;
    assert_eq!(off.status(), StatusCode::OK);
    assert!(body_text(off).await.contains("enabled=false"));
    assert!(!routes.reports_switch().is_enabled());
    for _ in 0..5 {
        assert_eq!(send(&router, Method::GET, "/reports").await.status(), 200);
    }

    let on = send(&router, Method::POST, "/admin/toggle/reports?enabled=true").await;
    assert_eq!(on.status(), StatusCode::OK);
    assert!(routes.reports_switch().is_enabled());
    assert_eq!(send(&router, Method::GET, "/reports").await.status(), 429);

    // Malformed or missing values change nothing; only POST flips the switch.
    let bad = send(&router, Method::POST, "/admin/toggle/reports?enabled=maybe").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bare = send(&router, Method::POST, "/admin/toggle/reports").await;
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    let get = send(&router, Method::GET, "/admin/toggle/reports?enabled=false").await;
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(routes.reports_switch().is_enabled());
}

#[tokio::test(start_paused = true)]
async fn invalid_route_limits_are_refused_naming_the_route() {
    let zero = RouteLimits {
        reports_concurrency: 0,
        ..RouteLimits::default()
    };
    let err = Routes::build(zero, None).unwrap_err().to_string();
    assert!(err.contains("reports"), "{err}");

    let nan = RouteLimits {
        reports_rate: RateLimit::per_second(f64::NAN),
        ..RouteLimits::default()
    };
    let err = Routes::build(nan, None).unwrap_err().to_string();
    assert!(err.contains("reports") && err.contains("rate"), "{err}");
}
