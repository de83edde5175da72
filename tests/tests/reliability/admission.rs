//! Capacity held and given back through the whole stack: cases 1, 2, 3, 4, 5, 6, 8, 9, 24.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get as axum_get;
use brownout::admission::{AimdConfig, GradientConfig, Limit, QueueTimeout};
use brownout::breaker::{BreakerState, CircuitBreakConfig, CircuitBreakLayer};
use brownout::retry::{Idempotent, Jitter, RetryConfig, RetryLayer};
use brownout::shutdown::Shutdown;
use brownout::{Brownout, LoadLevel, RejectReason, Rejected};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::{advance, sleep};
use tokio_test::task::spawn;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::support::{
    Backend, CountingWaker, Gauge, TestBody, get, reason, statuses, tagged, with_mode,
};

/// A stack with a fixed limit, a queue with a long fixed allowance and no adaptive timeout,
/// its level pinned at Normal so that the monitor's view of the queue cannot change the
/// queue's size in the middle of a scenario.
fn pinned(limit: usize, queue: usize, shutdown: Option<&Shutdown>) -> Brownout {
    let mut builder = Brownout::builder()
        .admission(move |a| {
            a.limit(Limit::fixed(limit))
                .queue_capacity(queue)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(30)))
        })
        .without_timeout();
    if let Some(shutdown) = shutdown {
        builder = builder.shutdown(shutdown);
    }
    let brownout = builder.build().unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    brownout
}

/// RELIABILITY #1: ten connections that called `poll_ready` and never `call` (idle
/// keep-alive connections) hold nothing anywhere in the stack — admission, shutdown guard,
/// monitor — and the next connection's request is admitted at once with a limit of 1.
#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_without_call_holds_nothing() {
    let shutdown = Shutdown::new();
    let brownout = pinned(1, 0, Some(&shutdown));
    let layer = brownout.layer();
    let backend = Backend::default();
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut svc = layer.layer(backend.clone());
        svc.ready().await.unwrap();
        idle.push(svc); // ready, never called
    }
    let admission = brownout.admission().unwrap();
    assert_eq!(admission.in_flight(), 0);
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(brownout.monitor().snapshot().in_flight, 0);

    // Queue capacity 0: if an idle connection held the only permit this would be refused.
    let mut next = layer.layer(backend.clone());
    let response = next.ready().await.unwrap().call(get("low")).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.body());
    assert_eq!(backend.calls(), 1);
    assert_eq!(admission.in_flight(), 0);
    assert_eq!(
        shutdown.counts().admitted,
        1,
        "only the real request was seen"
    );
    drop(idle);
}

/// RELIABILITY #2: a response future dropped while queued, while running, while a retry
/// backs off, or while it is a half-open breaker probe gives everything back: the queue
/// slot, the admission permit, the shutdown guard's in-flight count, the retry budget and
/// the probe slot. The stack is the facade with a retry and a breaker inside, as a handler
/// calling a dependency would have.
#[tokio::test(start_paused = true)]
async fn rel_02_dropped_futures_return_permits_slots_budget_and_probes() {
    let shutdown = Shutdown::new();
    let brownout = pinned(1, 4, Some(&shutdown));
    let admission = brownout.admission().unwrap().clone();
    let backend = Backend::default();
    let breaker = CircuitBreakLayer::new(
        CircuitBreakConfig::builder()
            .consecutive_failures(2)
            .open_duration(Duration::from_secs(1))
            .half_open_probes(1)
            .success_threshold(1)
            .build()
            .unwrap(),
    );
    let breaker_handle = breaker.handle();
    let retry = RetryLayer::http(
        RetryConfig::builder()
            .max_attempts(3)
            .backoff(Duration::from_millis(100), Duration::from_secs(1), 2.0)
            .jitter(Jitter::None)
            .budget(Duration::from_secs(10), 1.0, 0.1)
            .signal(brownout.signal())
            .seed(2)
            .build()
            .unwrap(),
    );
    let budget = retry.budget().unwrap().clone();
    let svc = ServiceBuilder::new()
        .layer(brownout.layer())
        .layer(retry)
        .layer(breaker)
        .service(backend.clone());

    // Running: holds the only permit.
    let mut running = spawn(svc.clone().oneshot(with_mode("high", "hold")));
    assert!(running.poll().is_pending());
    assert_eq!(backend.held(), 1);
    assert_eq!(admission.in_flight(), 1);

    // Queued behind it, then dropped: its queue slot is free at once.
    let mut queued = spawn(svc.clone().oneshot(get("high")));
    assert!(queued.poll().is_pending());
    assert_eq!(admission.queued(), 1);
    assert_eq!(shutdown.in_flight(), 2);
    drop(queued);
    assert_eq!(admission.queued(), 0, "queue slot returned");
    assert_eq!(shutdown.in_flight(), 1);

    // The running request dropped: the permit and the handler's work go away.
    drop(running);
    assert_eq!(admission.in_flight(), 0, "permit returned");
    assert_eq!(backend.held(), 0, "the handler's future was dropped");
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(shutdown.counts().cancelled, 2);

    // In back-off: the first attempt failed, the retry withdrew from the budget and sleeps.
    let before = budget.balance();
    let calls = backend.calls();
    let mut backing_off = spawn(svc.clone().oneshot(with_mode("high", "fail")));
    assert!(backing_off.poll().is_pending());
    assert_eq!(backend.calls(), calls + 1, "one attempt made");
    assert_eq!(budget.balance(), before - 1, "one retry withdrawn");
    assert_eq!(admission.in_flight(), 1);
    drop(backing_off);
    assert_eq!(budget.balance(), before, "the unspent retry came back");
    assert_eq!(admission.in_flight(), 0);
    advance(Duration::from_secs(1)).await;
    assert_eq!(backend.calls(), calls + 1, "no attempt after the drop");

    // Probing: a failing dependency trips the breaker (one attempt per non-idempotent
    // request), the open duration passes, the only probe starts and is dropped.
    breaker_handle.reset();
    for _ in 0..2 {
        let mut req = with_mode("high", "fail");
        req.extensions_mut().insert(Idempotent(false));
        let response = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(
            response.status(),
            500,
            "a failed dependency is an opaque 500"
        );
    }
    assert_eq!(breaker_handle.state(), BreakerState::Open);
    let response = svc.clone().oneshot(get("high")).await.unwrap();
    assert_eq!(response.status(), 503, "open: fail fast");
    assert_eq!(reason(&response), "circuit_open");
    sleep(Duration::from_secs(1)).await;
    let mut probe = spawn(svc.clone().oneshot(with_mode("high", "hold")));
    assert!(probe.poll().is_pending());
    assert_eq!(breaker_handle.state(), BreakerState::HalfOpen);
    drop(probe);
    // The probe slot is back: the next request is let through as the probe and closes it.
    let response = svc.clone().oneshot(get("high")).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.body());
    assert_eq!(breaker_handle.state(), BreakerState::Closed);
    assert_eq!(admission.in_flight(), 0);
    assert_eq!(shutdown.in_flight(), 0);
}

/// RELIABILITY #3: 1000 clones of the stack racing on a multi-thread runtime keep the peak
/// in-flight at or below the limit, together, and everyone is served by the queue.
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
    // The queue's capacity follows the level; a slow machine must not make the monitor
    // shrink it under the 1000 waiting requests.
    brownout.publisher().force(LoadLevel::Normal);
    let gauge = Gauge::default();
    let handler = {
        let gauge = gauge.clone();
        service_fn(move |_req: http::Request<String>| {
            let gauge = gauge.clone();
            async move {
                let _inside = gauge.enter();
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_micros(200)).await;
                Ok::<_, Infallible>(http::Response::new(String::new()))
            }
        })
    };
    let layer = brownout.layer();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let svc = layer.layer(handler.clone());
        tasks.push(tokio::spawn(svc.oneshot(get("medium"))));
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        let key = format!("{} {}", response.status().as_u16(), reason(&response));
        *codes.entry(key).or_default() += 1;
    }
    assert_eq!(
        codes.len(),
        1,
        "a queue of 2000 with a 30 s allowance serves everyone: {codes:?}"
    );
    assert_eq!(codes.get("200 "), Some(&1000), "{codes:?}");
    assert!(
        gauge.peak() <= LIMIT,
        "peak {} > limit {LIMIT}",
        gauge.peak()
    );
    assert_eq!(gauge.total(), 1000);
    assert_eq!(brownout.admission().unwrap().in_flight(), 0);
}

/// RELIABILITY #4: a panicking handler answers 500 (nothing about the panic leaks) and
/// gives back its admission permit, the monitor's in-flight and the shutdown guard's count;
/// with a limit of 1 the next request is admitted at once.
#[tokio::test(start_paused = true)]
async fn rel_04_handler_panic_answers_500_and_releases_everything() {
    let shutdown = Shutdown::new();
    let brownout = pinned(1, 0, Some(&shutdown));
    let backend = Backend::default();
    let mut svc = brownout.layer().layer(backend.clone());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(with_mode("high", "panic"))
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(!response.body().contains("handler bug"), "nothing leaks");
    assert_eq!(brownout.admission().unwrap().in_flight(), 0);
    assert_eq!(brownout.monitor().snapshot().in_flight, 0);
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(backend.gauge().now(), 0);
    let response = svc.ready().await.unwrap().call(get("high")).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "admitted at once: the permit came back"
    );

    // The same through an axum Router: the panic is answered, the route keeps serving.
    let router = Router::new()
        .route("/", axum_get(boom))
        .route("/ok", axum_get(|| async { "fine" }))
        .layer(brownout.layer());
    let boom = http::Request::get("/").body(Body::empty()).unwrap();
    assert_eq!(router.clone().oneshot(boom).await.unwrap().status(), 500);
    let ok = http::Request::get("/ok").body(Body::empty()).unwrap();
    assert_eq!(router.oneshot(ok).await.unwrap().status(), 200);
    assert_eq!(brownout.admission().unwrap().in_flight(), 0);
}

async fn boom() -> &'static str {
    panic!("route bug")
}

/// RELIABILITY #5 (documented choice): the admission permit is returned when the response
/// head is ready — like tower's `ConcurrencyLimit` — while a user who stacks the shutdown
/// crate's body guard outside the facade keeps the request in flight until the streamed body
/// ends, and the drain waits for it.
#[tokio::test(start_paused = true)]
async fn rel_05_streaming_body_permit_released_at_head_and_drain_waits_for_the_body() {
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let brownout = pinned(1, 0, None);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let handler = service_fn(move |req: http::Request<String>| {
        let stream = req.uri().path() == "/events";
        let body = if stream {
            TestBody::Stream(rx.lock().unwrap().take().expect("one stream"))
        } else {
            TestBody::from("whole".to_owned())
        };
        async move { Ok::<_, Infallible>(http::Response::new(body)) }
    });
    let svc = ServiceBuilder::new()
        .layer(shutdown.body_layer())
        .layer(brownout.layer())
        .service(handler);
    let events = http::Request::get("/events").body(String::new()).unwrap();
    let response = svc.clone().oneshot(events).await.unwrap();
    let admission = brownout.admission().unwrap();
    assert_eq!(admission.in_flight(), 0, "permit returned with the head");
    assert_eq!(
        shutdown.in_flight(),
        1,
        "the body guard holds it until the body ends"
    );
    // With a limit of 1, another request is admitted while the stream is open.
    let other = svc.clone().oneshot(get("low")).await.unwrap();
    let other_body = other.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&other_body[..], b"whole");

    shutdown.trigger();
    let mut drained = spawn(shutdown.drained());
    sleep(Duration::from_secs(5)).await;
    assert!(
        drained.poll().is_pending(),
        "the drain waits for the open stream"
    );
    let refused = svc.clone().oneshot(get("high")).await.unwrap_err();
    assert_eq!(
        Rejected::find(&*refused).unwrap().reason(),
        RejectReason::ShuttingDown
    );

    tx.send(Bytes::from_static(b"data: last\n\n"))
        .await
        .unwrap();
    drop(tx);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"data: last\n\n");
    assert_eq!(shutdown.in_flight(), 0);
    drained.await;
    let report = shutdown.wait().await;
    assert!(report.drained, "{report}");
    assert_eq!(
        (report.completed, report.aborted, report.rejected),
        (2, 0, 1)
    );
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
            axum_get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "done"
            }),
        )
        .layer(brownout.layer());

    let mut calls = Vec::new();
    for _ in 0..50 {
        let req = http::Request::get("/")
            .header("x-priority", "medium")
            .body(Body::empty())
            .unwrap();
        calls.push(tokio::spawn(router.clone().oneshot(req)));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let admission = brownout.admission().unwrap();
    assert!(
        admission.queued() <= 4,
        "queue bounded: {}",
        admission.queued()
    );
    assert!(admission.in_flight() <= 2);

    let mut codes = Vec::new();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        if response.status() == 503 {
            assert!(
                response.headers().contains_key("retry-after"),
                "{response:?}"
            );
            assert!(response.headers().contains_key("x-load-level"));
        }
        codes.push(response.status().as_u16());
    }
    let ok = codes.iter().filter(|s| **s == 200).count();
    let refused = codes.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + refused, 50, "every request answered: {codes:?}");
    assert!(ok >= 2 && refused >= 40, "ok {ok}, refused {refused}");
}

/// RELIABILITY #8: with the queue full, a newcomer evicts the newest request of the lowest
/// class (answered 503 `queue_full`), and a Low request is not starved past the starvation
/// bound although High requests keep arriving.
#[tokio::test(start_paused = true)]
async fn rel_08_full_queue_evicts_lowest_class_and_low_is_not_starved() {
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::fixed(1))
                .queue_capacity(3)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(10)))
                .starvation_bound(Duration::from_millis(500))
        })
        .without_timeout()
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());
    let admission = brownout.admission().unwrap();
    let send =
        |priority: &str, id: &str| tokio::spawn(svc.clone().oneshot(tagged(priority, "hold", id)));
    let settle = || sleep(Duration::from_millis(1));

    let first = send("critical", "first");
    settle().await;
    let low_old = send("low", "low-old");
    settle().await;
    let low_new = send("low", "low-new");
    let medium = send("medium", "medium");
    settle().await;
    assert_eq!(admission.queued(), 3, "full");

    let high = send("high", "high-0");
    settle().await;
    assert!(low_new.is_finished(), "the newest Low is evicted at once");
    let evicted = low_new.await.unwrap().unwrap();
    assert_eq!(evicted.status(), 503);
    assert_eq!(reason(&evicted), "queue_full");
    assert!(evicted.headers().contains_key("retry-after"));
    assert!(!low_old.is_finished(), "the older Low keeps its place");
    assert_eq!(admission.queued(), 3);

    // One permit frees every 100 ms and a new High arrives each time: without the bound the
    // Low request would wait forever behind them.
    let mut rest = vec![first, medium, high];
    let mut served_low_at = None;
    for step in 1..=30u32 {
        sleep(Duration::from_millis(100)).await;
        backend.release(1);
        settle().await;
        rest.push(send("high", &format!("high-{step}")));
        settle().await;
        assert!(admission.queued() <= 3);
        if backend.served().iter().any(|id| id == "low-old") {
            served_low_at = Some(step);
            break;
        }
    }
    let step = served_low_at.expect("the Low request was served");
    assert!(step <= 10, "Low served after {step} permits, bound 500 ms");
    assert!(
        admission.queued_of(brownout::Priority::High) >= 1,
        "while High still waited"
    );
    assert_eq!(backend.served()[0], "first");
    backend.release(100);
    for call in rest {
        call.abort();
    }
    low_old.abort();
}

/// RELIABILITY #9: an adaptive limit under sustained errors (AIMD) or sustained rising
/// latency (gradient) stays at or above its minimum, and a request is still admitted at
/// once afterwards — the stack never deadlocks at a limit of 0.
#[tokio::test(start_paused = true)]
async fn rel_09_adaptive_limits_stay_at_least_min_under_errors_and_latency() {
    // AIMD: every request fails.
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::aimd(AimdConfig {
                initial_limit: 10,
                min_limit: 1,
                ..AimdConfig::default()
            }))
            .queue_capacity(0)
        })
        .without_timeout()
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());
    let admission = brownout.admission().unwrap().clone();
    for round in 0..200 {
        let mut batch = Vec::new();
        for _ in 0..4 {
            batch.push(tokio::spawn(svc.clone().oneshot(with_mode("high", "fail"))));
        }
        for call in batch {
            let status = call.await.unwrap().unwrap().status();
            assert!(status == 500 || status == 503, "round {round}: {status}");
        }
        assert!(admission.limit() >= 1, "round {round}");
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admission.limit(), 1, "AIMD backed off to its minimum");
    let response = tokio::time::timeout(Duration::from_millis(1), svc.clone().oneshot(get("high")))
        .await
        .expect("admitted at once")
        .unwrap();
    assert_eq!(response.status(), 200);

    // Gradient: latency keeps growing.
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::gradient(GradientConfig {
                initial_limit: 8,
                min_limit: 2,
                ..GradientConfig::default()
            }))
            .queue_capacity(16)
            .queue_timeout(QueueTimeout::fixed(Duration::from_secs(60)))
        })
        .without_timeout()
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    let svc = brownout.layer().layer(backend.clone());
    let admission = brownout.admission().unwrap().clone();
    let mut min_seen = usize::MAX;
    for round in 0..60u64 {
        let mut batch = Vec::new();
        for _ in 0..8 {
            let mode = format!("sleep-{}", 10 + round * round);
            batch.push(tokio::spawn(svc.clone().oneshot(with_mode("high", &mode))));
        }
        for call in batch {
            assert_eq!(call.await.unwrap().unwrap().status(), 200);
        }
        min_seen = min_seen.min(admission.limit());
    }
    assert!(
        min_seen >= 2,
        "gradient limit went below its minimum: {min_seen}"
    );
    let response = svc.oneshot(get("high")).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// RELIABILITY #24: a request waiting in the queue is woken exactly once when capacity
/// frees, and polling it while it waits does not wake it again (no self-wake spin).
#[tokio::test(start_paused = true)]
async fn rel_24_waiting_request_woken_once_without_self_wake() {
    let brownout = pinned(1, 4, None);
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());
    let mut running = spawn(svc.clone().oneshot(with_mode("high", "hold")));
    assert!(running.poll().is_pending());

    let (counter, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    let mut waiting = Box::pin(svc.clone().oneshot(get("high")));
    for _ in 0..5 {
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
    }
    sleep(Duration::from_millis(100)).await;
    assert_eq!(
        counter.wakes(),
        0,
        "pending polls and time passing do not wake it"
    );
    assert_eq!(brownout.admission().unwrap().queued(), 1);

    backend.release(1);
    assert!(running.poll().is_ready());
    assert_eq!(counter.wakes(), 1, "woken once by the released permit");
    let response = match waiting.as_mut().poll(&mut cx) {
        Poll::Ready(response) => response.unwrap(),
        Poll::Pending => panic!("admitted after the wake-up"),
    };
    assert_eq!(response.status(), 200);
    assert_eq!(counter.wakes(), 1, "no extra wake-ups");
    assert_eq!(statuses(&[response]), vec![200]);
}
