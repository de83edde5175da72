//! Test that my axum router sheds Low before High at 4× load.
//!
//! An axum `Router` whose handler calls a `MockBackend` (8 workers, exponential service
//! time of mean 20 ms: 400 req/s), behind the whole brownout stack built by the facade,
//! driven at 4× its capacity by the `LoadDriver` under tokio's paused clock: 20 virtual
//! seconds in a fraction of a real one, the same result on every run.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use brownout::admission::{Limit, QueueTimeout};
use brownout::{Brownout, LoadLevel, Priority};
use brownout_test::{
    HttpJudge, Latency, LoadDriver, MockBackend, assert_all_answered_or_refused,
    assert_level_reached, assert_sheds_before, assert_success_at_least, assert_success_at_most,
};
use tower::ServiceExt;

/// The handler: its work is the mock backend's (a 500 if the backend fails).
async fn search(State(backend): State<MockBackend>) -> StatusCode {
    match backend.oneshot(()).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::test(start_paused = true)]
async fn router_sheds_low_before_high_at_4x_load() {
    // The backend: 8 workers, 20 ms on average, seeded.
    let backend = MockBackend::builder()
        .workers(8)
        .latency(Latency::Exponential {
            mean: Duration::from_millis(20),
        })
        .seed(1)
        .build()
        .unwrap();

    // The stack under test, configured as in production: a concurrency limit that matches
    // the backend's workers, a bounded wait in the admission queue, and monitor thresholds
    // on that wait (mean queueing delay 25 / 50 / 75 / 100 ms for Elevated … Emergency; a
    // wait of at most 100 ms never reaches Emergency, where High would be shed too).
    // `x-priority` headers classify the requests.
    let ms = Duration::from_millis;
    let brownout = Brownout::builder()
        .admission(move |a| {
            a.limit(Limit::fixed(8))
                .queue_capacity(64)
                .queue_timeout(QueueTimeout::fixed(ms(100)))
        })
        .monitor(|m| {
            m.queue_delay_thresholds([ms(25), ms(50), ms(75), ms(100)])
                .cooldown(ms(500))
        })
        .build()
        .unwrap();
    let app = Router::new()
        .route("/search", get(search))
        .with_state(backend.clone())
        .layer(brownout.layer());

    // 4× the backend's capacity, a fifth of it High (0.8× capacity), the rest Low; clients
    // give up after 1 s. The facade answers rejections with 503s: `HttpJudge` reads their
    // reason from the body.
    let driver = LoadDriver::builder()
        .rate(4.0 * backend.capacity())
        .duration(Duration::from_secs(20))
        .mix([0.0, 0.2, 0.0, 0.8, 0.0])
        .deadline(Duration::from_secs(1))
        .seed(7)
        .judge(HttpJudge)
        .watch(brownout.signal())
        .build()
        .unwrap();
    let summary = driver
        .run(app, |class: Priority| {
            Request::get("/search")
                .header("x-priority", class.as_str())
                .body(Body::empty())
                .unwrap()
        })
        .await;

    println!("{summary}"); // shown with `cargo test -- --nocapture`

    // Low is refused first and most; High keeps being served.
    assert_sheds_before(&summary, Priority::Low, Priority::High);
    assert_success_at_least(&summary, Priority::High, 0.95);
    assert_success_at_most(&summary, Priority::Low, 0.5);
    // The monitor saw the overload (the level sheds Low from High up).
    assert_level_reached(&brownout.monitor().snapshot(), LoadLevel::High);
    // Nothing was lost: every request was answered or refused with a reason, in time.
    assert_all_answered_or_refused(&summary);
    // The backend never ran more than its workers.
    assert!(backend.stats().peak_concurrency <= 8);
}
