//! Calling a dependency from behind the stack — retries and breakers wired to the stack's
//! load signal: cases 11, 12, 13, 14, 15.

use std::convert::Infallible;
use std::time::Duration;

use brownout::admission::{Limit, QueueTimeout};
use brownout::breaker::{BreakerState, CircuitBreakConfig, CircuitBreakLayer};
use brownout::retry::body::{BufferBodyLayer, Buffered};
use brownout::retry::{Backoff, Jitter, RetryConfig, RetryLayer};
use brownout::{BoxError, Brownout, LoadLevel};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use crate::support::{Backend, Log, TestBody, get, reason, with_mode};

/// A stack in front of a handler that calls a dependency (retry and breaker inside it).
fn stack() -> Brownout {
    // The monitor ticks rarely: its level is pinned, and paused time jumps hours ahead.
    let brownout = Brownout::builder()
        .monitor(|m| m.interval(Duration::from_secs(3600)))
        .admission(|a| {
            a.limit(Limit::fixed(16))
                .queue_capacity(16)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(60)))
        })
        .without_timeout()
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    brownout
}

/// A dependency that always fails and logs the instant of every attempt.
fn failing(
    log: Log<Instant>,
) -> impl Service<
    http::Request<String>,
    Response = http::Response<String>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(move |_req: http::Request<String>| {
        log.push(Instant::now());
        async { Err::<http::Response<String>, BoxError>("connection reset".into()) }
    })
}

/// RELIABILITY #11: back-off at attempt 64 and beyond, with a huge multiplier or a huge
/// base, is monotone, saturates at its maximum, never overflows and never sleeps 0 — here
/// as the sleeps a retrying handler behind the stack actually makes (70 attempts, paused
/// clock), and as the ceilings of extreme configurations.
#[tokio::test(start_paused = true)]
async fn rel_11_backoff_monotone_saturating_never_zero_through_70_attempts() {
    let brownout = stack();
    let log = Log::default();
    let hour = Duration::from_secs(3600);
    let retry = RetryLayer::http(
        RetryConfig::builder()
            .max_attempts(70)
            .backoff(Duration::from_millis(1), hour, 2.0)
            .jitter(Jitter::None)
            .unlimited_budget()
            .signal(brownout.signal())
            .build()
            .unwrap(),
    );
    let stats = retry.clone();
    let svc = ServiceBuilder::new()
        .layer(brownout.layer())
        .layer(retry)
        .service(failing(log.clone()));
    let response = svc.oneshot(get("high")).await.unwrap();
    assert_eq!(response.status(), 500, "the last error, answered opaquely");
    let at = log.items();
    assert_eq!(at.len(), 70);
    assert_eq!(stats.stats().retries, 69);
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| !g.is_zero()), "never 0: {gaps:?}");
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "monotone: {gaps:?}");
    assert!(gaps.iter().all(|g| *g <= hour), "capped: {gaps:?}");
    assert_eq!(gaps[0], Duration::from_millis(1));
    assert_eq!(
        gaps[63..],
        [hour; 6],
        "attempt 64 onwards sleep the maximum"
    );

    // Extreme configurations: huge multiplier, huge base, attempt 64, 1000 and u32::MAX.
    for (base, max, multiplier) in [
        (Duration::from_millis(1), hour, 1e300),
        (Duration::MAX, Duration::MAX, 2.0),
        (Duration::from_nanos(1), Duration::MAX, f64::MAX),
    ] {
        let backoff = Backoff::new(base, max, multiplier, Jitter::None).unwrap();
        let mut last = Duration::ZERO;
        for attempt in [0u32, 1, 2, 63, 64, 65, 1000, u32::MAX] {
            let ceiling = backoff.ceiling(attempt);
            assert!(!ceiling.is_zero() && ceiling <= max && ceiling >= last);
            last = ceiling;
        }
        assert_eq!(backoff.ceiling(1000), max);
    }
}

/// The body length of every attempt a dependency saw.
type Attempts = Log<usize>;

/// A dependency reading buffered request bodies, failing every time.
fn failing_reader(
    attempts: Attempts,
) -> impl Service<
    http::Request<Buffered<TestBody>>,
    Response = http::Response<String>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(move |req: http::Request<Buffered<TestBody>>| {
        let attempts = attempts.clone();
        async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await?.to_bytes();
            attempts.push(body.len());
            Err::<http::Response<String>, BoxError>("connection reset".into())
        }
    })
}

fn streamed(chunks: &[&'static [u8]]) -> TestBody {
    let (tx, rx) = mpsc::channel(chunks.len().max(1));
    for chunk in chunks {
        tx.try_send(Bytes::from_static(chunk)).unwrap();
    }
    TestBody::Stream(rx)
}

/// RELIABILITY #12: a request whose streamed body is larger than the buffer cap (not
/// copyable) is sent once and its original error returns; with an empty budget nothing is
/// retried either. A small body is retried, which shows it is the body that decided.
#[tokio::test(start_paused = true)]
async fn rel_12_uncopyable_body_or_empty_budget_means_one_attempt_and_the_original_error() {
    let brownout = stack();
    let attempts = Attempts::default();
    let config = RetryConfig::builder()
        .max_attempts(3)
        .backoff(Duration::from_millis(10), Duration::from_secs(1), 2.0)
        .unlimited_budget()
        .signal(brownout.signal())
        .seed(12)
        .build()
        .unwrap();
    let retry = RetryLayer::http(config);
    let svc = ServiceBuilder::new()
        .layer(brownout.layer())
        .layer(BufferBodyLayer::new(8))
        .layer(retry.clone())
        .service(failing_reader(attempts.clone()));

    let big = http::Request::put("/doc")
        .body(streamed(&[b"0123456789", b"abcdef"]))
        .unwrap();
    let response = svc.clone().oneshot(big).await.unwrap();
    assert_eq!(response.status(), 500, "the original error");
    assert_eq!(attempts.items(), vec![16], "sent once, whole");
    assert_eq!(retry.stats().not_cloneable, 1);

    let small = http::Request::put("/doc")
        .body(streamed(&[b"tiny"]))
        .unwrap();
    let response = svc.oneshot(small).await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        attempts.items(),
        vec![16, 4, 4, 4],
        "a copyable body is retried"
    );

    // An empty budget: no floor, no ratio.
    let attempts = Attempts::default();
    let retry = RetryLayer::http(
        RetryConfig::builder()
            .max_attempts(3)
            .budget(Duration::from_secs(1), 0.0, 0.0)
            .signal(brownout.signal())
            .build()
            .unwrap(),
    );
    let svc = ServiceBuilder::new()
        .layer(brownout.layer())
        .layer(BufferBodyLayer::new(1024))
        .layer(retry.clone())
        .service(failing_reader(attempts.clone()));
    let req = http::Request::put("/doc")
        .body(streamed(&[b"tiny"]))
        .unwrap();
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(response.status(), 500, "the original error");
    assert_eq!(attempts.items(), vec![4], "no retry from an empty budget");
    assert_eq!(retry.stats().budget_exhausted, 1);
}

/// RELIABILITY #13: a handler's retries read the stack's own level: at High or above (the
/// process is overloaded) they are suppressed; back at Normal the same failure is retried.
#[tokio::test(start_paused = true)]
async fn rel_13_retries_suppressed_while_the_stack_level_is_high() {
    let brownout = stack();
    let log = Log::default();
    let retry = RetryLayer::http(
        RetryConfig::builder()
            .max_attempts(3)
            .backoff(Duration::from_millis(10), Duration::from_secs(1), 2.0)
            .unlimited_budget()
            .signal(brownout.signal())
            .seed(13)
            .build()
            .unwrap(),
    );
    let svc = ServiceBuilder::new()
        .layer(brownout.layer())
        .layer(retry.clone())
        .service(failing(log.clone()));
    for (level, suppressed) in [
        (LoadLevel::High, 1),
        (LoadLevel::Critical, 2),
        (LoadLevel::Emergency, 3),
    ] {
        brownout.publisher().force(level);
        let before = log.items().len();
        let response = svc.clone().oneshot(get("critical")).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["x-load-level"], level.as_str());
        assert_eq!(log.items().len(), before + 1, "one attempt at {level}");
        assert_eq!(retry.stats().suppressed_by_level, suppressed);
    }
    brownout.publisher().force(LoadLevel::Elevated);
    let before = log.items().len();
    svc.clone().oneshot(get("critical")).await.unwrap();
    assert_eq!(log.items().len(), before + 3, "retried below High");
    assert_eq!(retry.stats().retries, 2);
}

fn breaker(probes: u32) -> CircuitBreakLayer {
    CircuitBreakLayer::new(
        CircuitBreakConfig::builder()
            .consecutive_failures(3)
            .open_duration(Duration::from_secs(5))
            .half_open_probes(probes)
            .success_threshold(probes)
            .probe_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    )
}

async fn trip<S>(svc: &S)
where
    S: Service<http::Request<String>, Response = http::Response<String>, Error = Infallible>
        + Clone,
{
    for _ in 0..3 {
        let response = svc
            .clone()
            .oneshot(with_mode("high", "fail"))
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
}

/// RELIABILITY #14: once the open duration has elapsed, exactly N concurrent requests
/// reach the dependency as half-open probes; the others fail fast with 503 `circuit_open`
/// and a `Retry-After`; N successful probes close the breaker.
#[tokio::test(start_paused = true)]
async fn rel_14_exactly_n_half_open_probes_through_the_stack_rest_fail_fast() {
    const N: usize = 3;
    let brownout = stack();
    let backend = Backend::default();
    let breaker = breaker(N as u32);
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(brownout.layer())
        .layer(breaker)
        .service(backend.clone());
    trip(&svc).await;
    assert_eq!(handle.state(), BreakerState::Open);
    let calls = backend.calls();
    let refused = svc.clone().oneshot(get("high")).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(reason(&refused), "circuit_open");
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(backend.calls(), calls, "open: the dependency is not called");

    sleep(Duration::from_secs(5)).await;
    let mut calls_in_flight = Vec::new();
    for _ in 0..10 {
        calls_in_flight.push(tokio::spawn(svc.clone().oneshot(with_mode("high", "hold"))));
    }
    sleep(Duration::from_millis(1)).await;
    assert_eq!(backend.held(), N, "exactly N probes reached the dependency");
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    let mut fast = 0;
    for call in &calls_in_flight {
        fast += usize::from(call.is_finished());
    }
    assert_eq!(fast, 10 - N, "the rest failed fast");
    backend.release(N);
    let mut codes = Vec::new();
    for call in calls_in_flight {
        codes.push(call.await.unwrap().unwrap().status().as_u16());
    }
    codes.sort_unstable();
    assert_eq!(codes, [[200; N].as_slice(), &[503; 10 - N]].concat());
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(svc.oneshot(get("low")).await.unwrap().status(), 200);
}

/// RELIABILITY #15: a half-open probe whose caller goes away gives its slot back (the next
/// request becomes the probe); a probe that hangs is cut at the probe timeout (504) and the
/// breaker reopens — it is never stuck half-open.
#[tokio::test(start_paused = true)]
async fn rel_15_dropped_or_hung_probe_never_leaves_the_breaker_half_open() {
    let brownout = stack();
    let backend = Backend::default();
    let breaker = breaker(1);
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(brownout.layer())
        .layer(breaker)
        .service(backend.clone());

    // Dropped: the client disconnects while the only probe runs.
    trip(&svc).await;
    sleep(Duration::from_secs(5)).await;
    let probe = tokio::spawn(svc.clone().oneshot(with_mode("high", "hold")));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(
        (backend.held(), handle.state()),
        (1, BreakerState::HalfOpen)
    );
    probe.abort();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(backend.held(), 0);
    let response = svc.clone().oneshot(get("high")).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the slot came back: this was the probe"
    );
    assert_eq!(handle.state(), BreakerState::Closed);

    // Hung: the probe never answers.
    trip(&svc).await;
    let trips = handle.snapshot().trips;
    sleep(Duration::from_secs(5)).await;
    let started = Instant::now();
    let hung = tokio::spawn(svc.clone().oneshot(with_mode("high", "hold")));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    let response = hung.await.unwrap().unwrap();
    assert_eq!(response.status(), 504, "cut at the probe timeout");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(
        handle.state(),
        BreakerState::Open,
        "reopened, not stuck half-open"
    );
    assert_eq!(handle.snapshot().trips, trips + 1);
    assert_eq!(backend.held(), 0, "the hung call was dropped");
    // After the (grown) open duration a new probe closes it.
    let retry_after = handle.snapshot().retry_after.unwrap();
    sleep(retry_after).await;
    let response = svc.oneshot(get("high")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(handle.state(), BreakerState::Closed);
}
