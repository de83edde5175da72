//! Cross-layer behaviour of the full `Brownout` stack that is not a RELIABILITY.md case
//! (those live in `tests/reliability/`).

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use brownout::{Brownout, LoadLevel};
use tower::ServiceExt;

fn request(priority: &str) -> http::Request<Body> {
    http::Request::get("/")
        .header("x-priority", priority)
        .body(Body::empty())
        .unwrap()
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
