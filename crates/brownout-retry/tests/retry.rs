//! Behaviour of `Retry` end to end: budgets, load level, idempotency, copies, deadlines,
//! server hints and cancellation. Every test runs on a paused clock with seeded jitter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use brownout_core::{BoxError, Deadline, LoadLevel, LoadSignal, RejectReason, Rejected};
use brownout_retry::body::{BufferBodyLayer, Buffered};
use brownout_retry::{
    Idempotent, Jitter, NoClone, RetryConfig, RetryDecision, RetryLayer, RetryStats,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// A service that fails its first `failures` calls (of all clones together) with
/// `"boom-N"`, then answers `"ok"`. Returns it with its call counter.
fn flaky(
    failures: u32,
) -> (
    impl Service<u32, Response = &'static str, Error = BoxError, Future: Send> + Clone,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let svc = service_fn(move |_: u32| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < failures {
                Err::<&'static str, BoxError>(format!("boom-{n}").into())
            } else {
                Ok("ok")
            }
        }
    });
    (svc, calls)
}

fn config() -> brownout_retry::RetryBuilder {
    RetryConfig::builder().seed(1)
}

#[tokio::test(start_paused = true)]
async fn retries_until_success_within_max_attempts() {
    let (svc, calls) = flaky(2);
    let layer = RetryLayer::new(config().max_attempts(3).build().unwrap());
    let mut svc = layer.layer(svc);
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(layer.stats().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_caps_retries_and_last_error_returns() {
    let (svc, calls) = flaky(u32::MAX);
    let layer = RetryLayer::new(config().max_attempts(4).unlimited_budget().build().unwrap());
    let mut svc = layer.layer(svc);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "boom-3");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(layer.stats().attempts_exhausted, 1);
}

/// A tower `Policy` retrying every error up to `attempts` attempts: the baseline without budget.
#[derive(Clone)]
struct NaivePolicy {
    left: u32,
}

impl tower::retry::Policy<u32, &'static str, BoxError> for NaivePolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut u32,
        result: &mut Result<&'static str, BoxError>,
    ) -> Option<Self::Future> {
        if result.is_err() && self.left > 1 {
            self.left -= 1;
            Some(std::future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &u32) -> Option<u32> {
        Some(*req)
    }
}

/// The headline figure: against a backend failing 100 % of requests, the budget keeps total
/// attempts at ≤ 1.1 × requests, where tower's `Retry` without a budget sends 3 ×.
#[tokio::test(start_paused = true)]
async fn figure_budget_caps_attempts_against_a_dead_backend() {
    const REQUESTS: u32 = 1000;

    let (dead, ours_calls) = flaky(u32::MAX);
    let layer = RetryLayer::new(
        config()
            .max_attempts(3)
            .budget(Duration::from_secs(10), 0.0, 0.1)
            .build()
            .unwrap(),
    );
    let mut ours = layer.layer(dead);
    for i in 0..REQUESTS {
        assert!(ours.ready().await.unwrap().call(i).await.is_err());
    }
    let ours_attempts = ours_calls.load(Ordering::SeqCst);

    let (dead, tower_calls) = flaky(u32::MAX);
    let mut naive = tower::retry::Retry::new(NaivePolicy { left: 3 }, dead);
    for i in 0..REQUESTS {
        assert!(naive.ready().await.unwrap().call(i).await.is_err());
    }
    let tower_attempts = tower_calls.load(Ordering::SeqCst);

    let ratio = f64::from(ours_attempts) / f64::from(REQUESTS);
    println!(
        "dead backend, {REQUESTS} requests, max 3 attempts: brownout-retry {ours_attempts} attempts \
         ({ratio:.3}x), tower::retry without budget {tower_attempts} attempts ({:.3}x), \
         budget exhausted {} times",
        f64::from(tower_attempts) / f64::from(REQUESTS),
        layer.stats().budget_exhausted,
    );
    assert!(ratio <= 1.1, "{ratio}");
    assert!(ours_attempts > REQUESTS, "the budget allows some retries");
    assert_eq!(tower_attempts, 3 * REQUESTS);
    let stats: RetryStats = layer.stats();
    assert_eq!(stats.retries, u64::from(ours_attempts - REQUESTS));
}

#[tokio::test(start_paused = true)]
async fn rel_13_level_high_or_above_suppresses_retries() {
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let (svc, calls) = flaky(u32::MAX);
    let layer = RetryLayer::new(
        config()
            .max_attempts(3)
            .unlimited_budget()
            .signal(signal)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    for (level, expected_calls) in [
        (LoadLevel::Normal, 3),
        (LoadLevel::Elevated, 3),
        (LoadLevel::High, 1),
        (LoadLevel::Critical, 1),
        (LoadLevel::Emergency, 1),
    ] {
        publisher.publish(level);
        calls.store(0, Ordering::SeqCst);
        let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls, "{level}");
        assert!(err.to_string().starts_with("boom-"));
    }
    assert_eq!(layer.stats().suppressed_by_level, 3);
}

/// The level is read when the request is sent (no copy is made at or above `suppress_at`)
/// and again when it fails: a request sent at High is not retried even if the level fell
/// before its failure; one sent at Normal is retried while the level stays below.
#[tokio::test(start_paused = true)]
async fn level_high_when_sent_suppresses_the_retry_and_skips_the_copy() {
    let (publisher, signal) = LoadSignal::channel(LoadLevel::High);
    let publisher = Arc::new(publisher);
    let calls = Arc::new(AtomicU32::new(0));
    let (p, seen) = (publisher.clone(), calls.clone());
    let svc = service_fn(move |_: u32| {
        seen.fetch_add(1, Ordering::SeqCst);
        let p = p.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            p.publish(LoadLevel::Normal);
            Err::<u32, BoxError>("boom".into())
        }
    });
    let layer = RetryLayer::new(
        config()
            .max_attempts(3)
            .unlimited_budget()
            .signal(signal)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "sent at High: no retry");
    let stats = layer.stats();
    assert_eq!((stats.suppressed_by_level, stats.retries), (1, 0));
    // Now sent at Normal (and still Normal when it fails): retried up to max_attempts.
    calls.store(0, Ordering::SeqCst);
    assert!(svc.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(layer.stats().suppressed_by_level, 1);
}

#[tokio::test(start_paused = true)]
async fn rel_12_empty_budget_returns_the_original_error() {
    let (svc, calls) = flaky(u32::MAX);
    let layer = RetryLayer::new(
        config()
            .budget(Duration::from_secs(10), 0.0, 0.0)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert_eq!(err.to_string(), "boom-0", "the first attempt's own error");
    assert!(
        Rejected::find_in_box(&*err).is_none(),
        "no invented rejection"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().budget_exhausted, 1);
    assert_eq!(layer.budget().unwrap().exhausted(), 1);
}

#[tokio::test(start_paused = true)]
async fn rel_12_non_cloneable_request_is_sent_once_with_its_error() {
    let (svc, calls) = flaky(u32::MAX);
    let layer = RetryLayer::new(config().build().unwrap()).with_cloner(NoClone);
    let mut svc = layer.layer(svc);
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert_eq!(err.to_string(), "boom-0");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().not_cloneable, 1);
}

#[tokio::test(start_paused = true)]
async fn rel_02_cancel_during_backoff_returns_the_budget() {
    let (svc, _calls) = flaky(u32::MAX);
    let layer = RetryLayer::new(
        config()
            .backoff(Duration::from_secs(1), Duration::from_secs(1), 2.0)
            .budget(Duration::from_secs(10), 0.5, 0.0)
            .build()
            .unwrap(),
    );
    let budget = layer.budget().unwrap().clone();
    assert_eq!(budget.balance(), 5);
    let mut svc = layer.layer(svc);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(0));
    assert!(fut.poll().is_pending(), "first attempt failed: backing off");
    assert_eq!(budget.balance(), 4, "the retry was withdrawn");
    drop(fut);
    assert_eq!(budget.balance(), 5, "dropped during back-off: given back");
    assert_eq!(layer.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn rejections_that_mean_overload_are_not_retried() {
    for (reason, expected_calls) in [
        (RejectReason::Shed, 1),
        (RejectReason::QueueFull, 1),
        (RejectReason::CircuitOpen, 1),
        (RejectReason::BudgetExhausted, 1),
        (RejectReason::ShuttingDown, 2),
        (RejectReason::RateLimited, 2),
    ] {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let svc = service_fn(move |_: ()| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err::<(), BoxError>(Rejected::new(reason, LoadLevel::High).into())
                } else {
                    Ok(())
                }
            }
        });
        let mut svc = RetryLayer::new(config().build().unwrap()).layer(svc);
        let _ = svc.ready().await.unwrap().call(()).await;
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls, "{reason}");
    }
}

#[tokio::test(start_paused = true)]
async fn rejected_retry_after_is_waited_for() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let svc = service_fn(move |_: ()| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err::<(), BoxError>(
                    Rejected::new(RejectReason::RateLimited, LoadLevel::Normal)
                        .with_retry_after(Duration::from_secs(3))
                        .into(),
                )
            } else {
                Ok(())
            }
        }
    });
    let mut svc = RetryLayer::new(config().build().unwrap()).layer(svc);
    let start = Instant::now();
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// An http backend answering the queued responses in order, then 200.
fn http_backend(
    responses: Vec<http::Response<&'static str>>,
) -> (
    impl Service<
        http::Request<String>,
        Response = http::Response<&'static str>,
        Error = BoxError,
        Future: Send,
    > + Clone,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let responses = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        responses,
    )));
    let svc = service_fn(move |_: http::Request<String>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let next = responses.lock().unwrap().pop_front();
        async move { Ok::<_, BoxError>(next.unwrap_or_else(|| http::Response::new("ok"))) }
    });
    (svc, calls)
}

fn status(code: u16, headers: &[(&str, &str)]) -> http::Response<&'static str> {
    let mut b = http::Response::builder().status(code);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body("").unwrap()
}

#[tokio::test(start_paused = true)]
async fn http_retry_after_seconds_is_honoured() {
    let (svc, calls) = http_backend(vec![status(503, &[("retry-after", "2")])]);
    let mut svc = RetryLayer::http(config().build().unwrap()).layer(svc);
    let start = Instant::now();
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(start.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn grpc_pushback_honoured_and_negative_means_never() {
    let (svc, calls) = http_backend(vec![status(
        200,
        &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "700")],
    )]);
    let mut svc = RetryLayer::http(config().build().unwrap()).layer(svc);
    let start = Instant::now();
    let req = http::Request::get("/svc/Method")
        .body(String::new())
        .unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.headers().get("grpc-status"), None);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(start.elapsed() >= Duration::from_millis(700));

    let (svc, calls) = http_backend(vec![status(
        200,
        &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")],
    )]);
    let mut svc = RetryLayer::http(config().build().unwrap()).layer(svc);
    let req = http::Request::get("/svc/Method")
        .body(String::new())
        .unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "14", "returned as is");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_max_is_not_waited_for() {
    let (svc, calls) = http_backend(vec![status(503, &[("retry-after", "3600")])]);
    let layer = RetryLayer::http(config().build().unwrap());
    let mut svc = layer.clone().layer(svc);
    let req = http::Request::get("/").body(String::new()).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().retry_after_too_long, 1);
}

#[tokio::test(start_paused = true)]
async fn only_idempotent_http_requests_are_retried() {
    let (svc, calls) = http_backend(vec![status(503, &[]), status(503, &[])]);
    let layer = RetryLayer::http(config().build().unwrap());
    let mut svc = layer.clone().layer(svc);
    let post = http::Request::post("/orders").body("x".to_owned()).unwrap();
    let res = svc.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().not_idempotent, 1);

    let mut post = http::Request::post("/orders").body("x".to_owned()).unwrap();
    post.extensions_mut().insert(Idempotent(true));
    let res = svc.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(res.status(), 200, "marked idempotent: retried");
}

#[tokio::test(start_paused = true)]
async fn deadline_shorter_than_backoff_means_no_retry() {
    let exact = || {
        config()
            .backoff(Duration::from_millis(100), Duration::from_secs(1), 2.0)
            .jitter(Jitter::None)
            .build()
            .unwrap()
    };
    let (svc, calls) = http_backend(vec![status(503, &[])]);
    let layer = RetryLayer::http(exact());
    let mut svc = layer.clone().layer(svc);
    let mut req = http::Request::get("/").body(String::new()).unwrap();
    Deadline::after(Duration::from_millis(50)).tighten(req.extensions_mut());
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().deadline, 1);

    let (svc, calls) = http_backend(vec![status(503, &[])]);
    let mut svc = RetryLayer::http(exact()).layer(svc);
    let mut req = http::Request::get("/").body(String::new()).unwrap();
    Deadline::after(Duration::from_millis(500)).tighten(req.extensions_mut());
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_is_reproducible() {
    async fn total_sleep(seed: u64) -> Duration {
        let (svc, _) = flaky(u32::MAX);
        let config = RetryConfig::builder()
            .seed(seed)
            .max_attempts(5)
            .unlimited_budget()
            .jitter(Jitter::Decorrelated)
            .build()
            .unwrap();
        let mut svc = RetryLayer::new(config).layer(svc);
        let start = Instant::now();
        let _ = svc.ready().await.unwrap().call(0).await;
        start.elapsed()
    }
    assert_eq!(total_sleep(9).await, total_sleep(9).await);
    assert_ne!(total_sleep(9).await, total_sleep(10).await);
}

#[tokio::test(start_paused = true)]
async fn custom_classifier_closure() {
    let (svc, calls) = flaky(u32::MAX);
    let never = |_: &Result<&'static str, BoxError>| RetryDecision::Fail;
    let mut svc = RetryLayer::new(config().build().unwrap())
        .with_classifier(never)
        .layer(svc);
    let _ = svc.ready().await.unwrap().call(0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A backend of buffered bodies: fails the first call with 503, echoes the body after.
fn echo_after_503() -> (
    impl Service<
        http::Request<Buffered<Chunks>>,
        Response = http::Response<Bytes>,
        Error = BoxError,
        Future: Send,
    > + Clone,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let svc = service_fn(move |req: http::Request<Buffered<Chunks>>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = req.into_body().collect().await?.to_bytes();
            let status = if n == 0 { 503 } else { 200 };
            Ok::<_, BoxError>(http::Response::builder().status(status).body(body).unwrap())
        }
    });
    (svc, calls)
}

/// A streaming body of chunks that cannot be cloned (like hyper's `Incoming`).
struct Chunks(std::vec::IntoIter<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test(start_paused = true)]
async fn streaming_bodies_buffered_under_the_cap_are_retried_larger_ones_sent_once() {
    let chunks = |n: usize| Chunks(vec![Bytes::from_static(b"0123456789"); n].into_iter());
    let (svc, calls) = echo_after_503();
    let mut client = ServiceBuilder::new()
        .layer(BufferBodyLayer::new(64))
        .layer(RetryLayer::http(config().build().unwrap()))
        .service(svc);
    let req = http::Request::put("/doc").body(chunks(3)).unwrap();
    let res = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().len(), 30, "the same body sent again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let (svc, calls) = echo_after_503();
    let mut client = ServiceBuilder::new()
        .layer(BufferBodyLayer::new(64))
        .layer(RetryLayer::http(config().build().unwrap()))
        .service(svc);
    let req = http::Request::put("/doc").body(chunks(10)).unwrap();
    let res = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(
        res.status(),
        503,
        "too large to copy: the first answer returns"
    );
    assert_eq!(
        res.body().len(),
        100,
        "the whole body streamed through once"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn full_body_helper() {
    let body: Buffered<Full<Bytes>> = Buffered::full("abc");
    assert!(body.is_full());
}

#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_without_call_takes_nothing() {
    let (svc, calls) = flaky(0);
    let layer = RetryLayer::new(
        config()
            .budget(Duration::from_secs(10), 1.0, 0.1)
            .build()
            .unwrap(),
    );
    let budget = layer.budget().unwrap().clone();
    let before = budget.balance();
    let mut svc = layer.layer(svc);
    for _ in 0..100 {
        svc.ready().await.unwrap();
    }
    assert_eq!(
        budget.balance(),
        before,
        "readiness deposits and withdraws nothing"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// RELIABILITY #3 for the budget: clones racing on a multi-thread runtime share one budget,
/// so together they retry no more than the ratio allows (plus the reserve, plus at most one
/// overshoot per racing task).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rel_03_clones_racing_share_one_budget() {
    const TASKS: u32 = 64;
    const PER_TASK: u32 = 50;
    let (svc, calls) = flaky(u32::MAX);
    let layer = RetryLayer::new(
        config()
            .max_attempts(3)
            .backoff(Duration::from_micros(1), Duration::from_micros(10), 2.0)
            .budget(Duration::from_secs(60), 0.0, 0.1)
            .build()
            .unwrap(),
    );
    let svc = layer.layer(svc);
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let _ = svc.ready().await.unwrap().call(i).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let requests = TASKS * PER_TASK;
    let attempts = calls.load(Ordering::SeqCst);
    let retries = attempts - requests;
    assert!(
        retries <= requests / 10 + TASKS,
        "{retries} retries for {requests} requests"
    );
    assert_eq!(u64::from(retries), layer.stats().retries);
}

/// `Retry-After` as an HTTP-date (IMF-fixdate) about five seconds ahead of the wall clock.
#[tokio::test(start_paused = true)]
async fn http_retry_after_date_is_honoured() {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 5;
    let date = imf_fixdate(at);
    let (svc, calls) = http_backend(vec![status(503, &[("retry-after", date.leak())])]);
    let mut svc = RetryLayer::http(config().build().unwrap()).layer(svc);
    let start = Instant::now();
    let req = http::Request::get("/").body(String::new()).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Whole seconds, measured against the wall clock while the test clock is paused.
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// Formats seconds since the epoch as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn imf_fixdate(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The throttle's local refusals (`Rejected { BudgetExhausted }`) end the retries at once:
/// a throttle inside the retry layer never turns one refusal into three.
#[tokio::test(start_paused = true)]
async fn throttle_refusals_are_not_retried() {
    use brownout_retry::throttle::{AdaptiveThrottleConfig, AdaptiveThrottleLayer};
    let (dead, calls) = flaky(u32::MAX);
    let throttle = AdaptiveThrottleLayer::new(
        AdaptiveThrottleConfig::builder()
            .k(1.0)
            .seed(3)
            .build()
            .unwrap(),
    );
    let retry = RetryLayer::new(config().max_attempts(3).unlimited_budget().build().unwrap());
    let mut svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(throttle.clone())
        .service(dead);
    let mut refused = 0;
    for i in 0..200 {
        let err = svc.ready().await.unwrap().call(i).await.unwrap_err();
        if Rejected::find_in_box(&*err).is_some() {
            refused += 1;
        }
    }
    let sent = u64::from(calls.load(Ordering::SeqCst));
    let throttled = throttle.stats().rejected_locally;
    let retries = retry.stats().retries;
    assert_eq!(
        sent + throttled,
        200 + retries,
        "every attempt sent or refused"
    );
    assert!(
        throttled >= 150,
        "the throttle refused most attempts: {throttled}"
    );
    assert!(
        refused >= 150,
        "{refused} requests ended on a local refusal"
    );
    // Only a sent (and failed) attempt is followed by a retry: refusals end the request.
    assert!(
        retries <= sent,
        "{retries} retries for {sent} sent attempts"
    );
}

/// After its back-off, a retry waits for the inner service to be ready again (tower's
/// readiness contract), holding its withdrawn retry; dropping it then gives the retry back.
#[tokio::test(start_paused = true)]
async fn retry_waits_for_readiness_after_backoff() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, &'static str>();
    let layer = RetryLayer::new(
        config()
            .backoff(Duration::from_millis(10), Duration::from_millis(10), 1.0)
            .jitter(Jitter::None)
            .budget(Duration::from_secs(10), 0.2, 0.0)
            .build()
            .unwrap(),
    );
    let budget = layer.budget().unwrap().clone();
    let mut svc = layer.layer(mock);
    handle.allow(1);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(7));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 7);
    send.send_error("reset");
    assert!(fut.poll().is_pending());
    assert_eq!(budget.balance(), 1, "one of two retries withdrawn");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        fut.poll().is_pending(),
        "back-off over, the service is not ready"
    );
    drop(fut);
    assert_eq!(
        budget.balance(),
        2,
        "dropped before the retry was sent: given back"
    );
}

/// A hedge layer can draw from the retry layer's budget; only the retry layer deposits.
#[tokio::test(start_paused = true)]
async fn hedge_and_retry_share_one_budget() {
    use brownout_retry::hedge::{HedgeConfig, HedgeLayer};
    let retry = RetryLayer::new(
        config()
            .budget(Duration::from_secs(10), 0.0, 0.5)
            .build()
            .unwrap(),
    );
    let budget = retry.budget().unwrap().clone();
    let hedge = HedgeLayer::new(
        HedgeConfig::builder()
            .fixed_delay(Duration::from_millis(5))
            .shared_budget(budget.clone())
            .build()
            .unwrap(),
    );
    let slow = service_fn(|_: u32| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, BoxError>("ok")
    });
    let mut svc = ServiceBuilder::new()
        .layer(retry)
        .layer(hedge.clone())
        .service(slow);
    for i in 0..4 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    // 4 requests × 0.5 deposited once (by the retry layer) = 2 hedges.
    assert_eq!(hedge.stats().hedges, 2);
    assert_eq!(budget.balance(), 0);
}
