//! Shutting down with work in every state: cases 20 and 21, and the shutdown of a real
//! server under load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get as axum_get;
use brownout::admission::{Limit, QueueTimeout};
use brownout::shutdown::{Phase, Shutdown};
use brownout::{Brownout, LoadLevel, RejectReason, Rejected};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep, timeout};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::common::{Conn, Sent, TrackedListener};
use crate::support::{Backend, TestBody, get, reason, with_mode};

fn stack(shutdown: &Shutdown) -> Brownout {
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::fixed(1))
                .queue_capacity(4)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(60)))
        })
        .without_timeout()
        .shutdown(shutdown)
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    brownout
}

/// A server-sent-events route guarded by `shutdown`'s body guard (the facade's guard ends
/// at the response head): each call streams what the returned sender sends.
fn sse(
    shutdown: &Shutdown,
) -> (
    impl tower::Service<
        http::Request<String>,
        Response = http::Response<brownout::shutdown::GuardedBody<TestBody>>,
        Error = brownout::BoxError,
        Future = impl Send,
    > + Clone,
    mpsc::Sender<Bytes>,
) {
    let events = Brownout::builder().without_timeout().build().unwrap();
    let (tx, rx) = mpsc::channel(8);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let handler = service_fn(move |_req: http::Request<String>| {
        let body = TestBody::Stream(rx.lock().unwrap().take().expect("one stream"));
        async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
    });
    let svc = ServiceBuilder::new()
        .layer(shutdown.body_layer())
        .layer(events.layer())
        .service(handler);
    (svc, tx)
}

fn assert_shutting_down(response: &http::Response<String>) {
    assert_eq!(response.status(), 503, "{:?}", response.body());
    assert_eq!(reason(response), "shutting_down");
    assert_eq!(response.headers()["connection"], "close");
    assert!(response.headers().contains_key("retry-after"));
}

/// RELIABILITY #20: shutdown with a request in flight, one queued, an idle keep-alive
/// connection and an open event stream: readiness answers 503 at once, the queued request
/// and every new one (the idle connection's included) get 503 + `Connection: close`, the
/// in-flight request and the stream finish, and the drain ends before its deadline.
#[tokio::test(start_paused = true)]
async fn rel_20_shutdown_with_in_flight_queued_idle_and_streaming() {
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let brownout = stack(&shutdown);
    let health = brownout.health().build().unwrap();
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());
    let (events, tx) = sse(&shutdown);

    let running = tokio::spawn(svc.clone().oneshot(with_mode("high", "hold")));
    sleep(Duration::from_millis(1)).await;
    let queued = tokio::spawn(svc.clone().oneshot(get("high")));
    let mut idle = svc.clone();
    idle.ready().await.unwrap(); // a keep-alive connection between requests
    let stream = events.clone().oneshot(get("high")).await.unwrap();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(brownout.admission().unwrap().queued(), 1);
    assert_eq!(shutdown.in_flight(), 3, "running, queued, streaming");
    assert_eq!(health.check().await.status.status_code(), 200);

    let triggered_at = Instant::now();
    assert!(shutdown.trigger());
    let report = health.check().await;
    assert!(!report.ready);
    assert_eq!(report.status.status_code(), 503, "readiness first");
    let queued = queued.await.unwrap().unwrap();
    assert_shutting_down(&queued);
    assert_eq!(
        triggered_at.elapsed(),
        Duration::ZERO,
        "queued rejected at once"
    );
    assert_shutting_down(&idle.call(get("critical")).await.unwrap());
    assert_shutting_down(&svc.clone().oneshot(get("critical")).await.unwrap());
    let refused = events.clone().oneshot(get("high")).await.unwrap_err();
    assert_eq!(
        Rejected::find(&*refused).unwrap().reason(),
        RejectReason::ShuttingDown
    );
    assert_eq!(shutdown.phase(), Phase::Draining);

    sleep(Duration::from_secs(2)).await;
    assert!(!running.is_finished(), "in flight keeps running");
    backend.release(1);
    let done = running.await.unwrap().unwrap();
    assert_eq!(done.status(), 200);
    tx.send(Bytes::from_static(b"data: bye\n\n")).await.unwrap();
    drop(tx);
    let body = stream.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"data: bye\n\n");

    let report = timeout(Duration::from_secs(10), shutdown.wait())
        .await
        .expect("done by the deadline");
    assert!(report.drained, "{report}");
    assert_eq!(report.aborted, 0);
    assert!(report.drain_duration < Duration::from_secs(10));
    assert_eq!(report.in_flight_at_trigger, 3);
    assert_eq!(report.completed_during_drain, 3, "{report}");
    assert_eq!(report.rejected, 3, "{report}");
    assert_eq!(
        report.sent(),
        report.completed + report.rejected + report.aborted + report.cancelled
    );
    assert_eq!(
        brownout.admission().unwrap().stats().rejected_shutting_down,
        1
    );
}

/// RELIABILITY #20 (deadline): a request that never finishes and an endless event stream
/// are aborted at the drain deadline — the request answered 503, the stream cut — so the
/// shutdown is done by `drain_timeout` plus the abort grace, whatever the handlers do.
#[tokio::test(start_paused = true)]
async fn rel_20_hung_request_and_endless_stream_aborted_at_the_drain_deadline() {
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(5))
        .abort_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    let brownout = stack(&shutdown);
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());
    let (events, tx) = sse(&shutdown);
    let hung = tokio::spawn(svc.clone().oneshot(with_mode("high", "hold")));
    let stream = events.oneshot(get("high")).await.unwrap();
    let reader = tokio::spawn(async move { stream.into_body().collect().await.map(|_| ()) });
    sleep(Duration::from_millis(1)).await;

    let started = Instant::now();
    let report = shutdown.shutdown().await;
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(!report.drained);
    assert_eq!(report.aborted, 2, "{report}");
    assert_eq!(report.unfinished, 0, "{report}");
    let response = hung.await.unwrap().unwrap();
    assert_eq!(response.status(), 503, "aborted requests are answered");
    assert!(
        reader.await.unwrap().is_err(),
        "the stream is cut with an error"
    );
    assert_eq!(backend.held(), 0, "the handler's future was dropped");
    assert_eq!(brownout.admission().unwrap().in_flight(), 0);
    drop(tx);
}

/// RELIABILITY #20, with a readiness delay: readiness turns 503 at the trigger, and the
/// shutdown crate documents that requests arriving during the delay are "served and
/// drained like any other" so that balancers can move away first.
#[tokio::test(start_paused = true)]
async fn rel_20_requests_during_the_readiness_delay_are_served() {
    let shutdown = Shutdown::builder()
        .readiness_delay(Duration::from_secs(2))
        .drain_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let brownout = stack(&shutdown);
    let health = brownout.health().build().unwrap();
    let svc = brownout.layer().layer(Backend::default());
    shutdown.trigger();
    assert_eq!(
        health.check().await.status.status_code(),
        503,
        "readiness first"
    );
    let response = svc.clone().oneshot(get("high")).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.body());
    // Refusals start once the delay has passed (at the same instant, the order of the
    // shutdown task's timer and this one is the runtime's choice).
    sleep(Duration::from_secs(2) + Duration::from_millis(1)).await;
    assert_shutting_down(&svc.oneshot(get("high")).await.unwrap());
}

/// RELIABILITY #21: a shutdown triggered before the stack is even built, and triggered
/// again, is one shutdown: the stack refuses from its first request, admission is closed,
/// every `wait` returns the same report, and a server handed `triggered()` stops at once.
#[tokio::test]
async fn rel_21_trigger_before_serving_and_twice_is_idempotent() {
    let shutdown = Shutdown::new();
    assert!(shutdown.trigger(), "the first trigger starts it");
    assert!(!shutdown.trigger(), "the second does nothing");
    let brownout = stack(&shutdown);
    assert!(brownout.admission().unwrap().is_closed(), "closed on build");
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());
    assert_shutting_down(&svc.clone().oneshot(get("critical")).await.unwrap());
    assert!(!shutdown.trigger());
    let first = shutdown.wait().await;
    let second = shutdown.wait().await;
    assert_eq!(first, second);
    assert_eq!(shutdown.phase(), Phase::Terminated);
    assert_eq!((first.admitted, first.rejected), (0, 1));
    assert_shutting_down(&svc.oneshot(get("critical")).await.unwrap());
    assert_eq!(backend.calls(), 0);

    let (listener, _addr) = TrackedListener::bind().await;
    let state = listener.state.clone();
    let router = Router::new()
        .route("/", axum_get(|| async { "ok" }))
        .layer(brownout.layer());
    timeout(
        Duration::from_secs(5),
        axum::serve(listener, router).with_graceful_shutdown(shutdown.triggered()),
    )
    .await
    .expect("a server started after the trigger stops at once")
    .unwrap();
    assert!(state.is_closed());
}

/// What the clients of [`shutdown_under_load_every_request_answered_and_counted`] saw.
#[derive(Debug, Default)]
struct Tally {
    by_outcome: BTreeMap<String, usize>,
    answered: usize,
    failed: Vec<String>,
    refused_after_close: usize,
    other_connect_errors: Vec<String>,
}

/// A real axum server on loopback with the full stack and a `ShutdownGuard`, driven by
/// keep-alive HTTP/1.1 clients at twice its capacity (16 clients, 8 permits, 50 ms per
/// request). Shutdown is triggered mid-load; the server's listener closes once every client
/// has been told to go away. Asserts that every request the server received was answered
/// and counted: running ones complete 200 within the drain timeout, queued ones and new ones
/// get 503 `shutting_down` with `Retry-After` and `Connection: close`, the report's counts
/// add up to what the server received, and the only client errors are connections refused
/// after the listener closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_every_request_answered_and_counted() {
    const LIMIT: usize = 8;
    const CLIENTS: usize = 2 * LIMIT;
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::fixed(LIMIT))
                .queue_capacity(64)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(5)))
        })
        .shutdown(&shutdown)
        .build()
        .unwrap();
    let router = Router::new()
        .route(
            "/",
            axum_get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "ok"
            }),
        )
        .layer(brownout.layer());
    let (listener, addr) = TrackedListener::bind().await;
    let listener_state = listener.state.clone();
    let clients_told = Arc::new(Notify::new());
    let server = {
        let triggered = shutdown.triggered();
        let clients_told = clients_told.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    triggered.await;
                    clients_told.notified().await;
                })
                .await
        })
    };

    // Clients: keep-alive connections, each sending as soon as its previous answer came.
    let stopped = Arc::new(AtomicUsize::new(0));
    let all_stopped = Arc::new(Notify::new());
    let go_reconnect = Arc::new(tokio::sync::Semaphore::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let stopped = stopped.clone();
        let all_stopped = all_stopped.clone();
        let go_reconnect = go_reconnect.clone();
        let listener_state = listener_state.clone();
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn = Conn::open(addr).await.expect("the server accepts");
            loop {
                match conn.get("/", "high").await {
                    Sent::Answered(answer) => {
                        tally.answered += 1;
                        let key = format!("{} {}", answer.status, answer.reason());
                        *tally.by_outcome.entry(key).or_default() += 1;
                        if answer.status != 200 {
                            assert!(answer.is_typed_rejection(), "{answer:?}");
                            assert!(answer.header("retry-after").is_some(), "{answer:?}");
                        }
                        if answer.reason() == "shutting_down" {
                            assert!(answer.closes(), "{answer:?}");
                            break;
                        }
                        if !conn.is_open() {
                            conn = Conn::open(addr).await.expect("still listening");
                        }
                    }
                    Sent::Failed(err) => {
                        tally.failed.push(err.to_string());
                        break;
                    }
                }
            }
            if stopped.fetch_add(1, Ordering::SeqCst) + 1 == CLIENTS {
                all_stopped.notify_one();
            }
            // Once the listener is closed, a new connection is refused.
            let _permit = go_reconnect.acquire().await.unwrap();
            assert!(listener_state.is_closed());
            match Conn::open(addr).await {
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tally.refused_after_close += 1;
                }
                Err(err) => tally.other_connect_errors.push(err.to_string()),
                Ok(_) => tally
                    .other_connect_errors
                    .push("accepted after close".into()),
            }
            tally
        }));
    }

    tokio::time::sleep(Duration::from_millis(600)).await;
    let admission = brownout.admission().unwrap().clone();
    let before = admission.stats();
    assert!(
        before.admitted > LIMIT as u64,
        "load was served: {before:?}"
    );
    // Trigger while requests wait in the queue (at 2x load they almost always do; on a
    // starved machine the clients may lag, so wait for the moment).
    timeout(Duration::from_secs(10), async {
        while admission.queued() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("requests queue at twice the capacity");
    assert!(shutdown.trigger());
    timeout(Duration::from_secs(10), all_stopped.notified())
        .await
        .expect("every client was told to go away");
    clients_told.notify_one();
    timeout(Duration::from_secs(10), listener_state.closed())
        .await
        .expect("the listener closes");
    go_reconnect.add_permits(CLIENTS);

    let mut total = Tally::default();
    for client in clients {
        let tally = client.await.unwrap();
        total.answered += tally.answered;
        for (k, v) in tally.by_outcome {
            *total.by_outcome.entry(k).or_default() += v;
        }
        total.failed.extend(tally.failed);
        total.refused_after_close += tally.refused_after_close;
        total
            .other_connect_errors
            .extend(tally.other_connect_errors);
    }
    timeout(Duration::from_secs(10), server)
        .await
        .expect("the server finishes its graceful shutdown")
        .unwrap()
        .unwrap();
    let report = timeout(Duration::from_secs(10), shutdown.wait())
        .await
        .expect("the drain ends");
    let stats = admission.stats();
    eprintln!("{report}\n{total:?}\n{stats:?}");

    assert!(
        total.failed.is_empty(),
        "no request lost: {:?}",
        total.failed
    );
    assert!(total.other_connect_errors.is_empty(), "{total:?}");
    assert_eq!(total.refused_after_close, CLIENTS, "refused once closed");
    // The report is written when the drain ends; refusals of requests that arrive later
    // (until the listener closes) are in the live counts.
    let counts = shutdown.counts();
    assert_eq!(
        total.answered as u64,
        counts.sent(),
        "every request the server received was answered, and only those"
    );
    assert_eq!(
        counts.sent(),
        counts.completed + counts.rejected + counts.aborted + counts.cancelled + counts.in_flight,
        "the counts add up: {counts:?}"
    );
    assert_eq!(
        report.sent(),
        report.completed + report.rejected + report.aborted + report.cancelled + report.unfinished,
        "the report adds up: {report}"
    );
    assert!(report.sent() <= counts.sent() && report.admitted == counts.admitted);
    assert!(report.drained && report.aborted == 0, "{report}");
    assert_eq!(report.cancelled, 0, "{report}");
    assert_eq!(
        report.completed_during_drain, report.in_flight_at_trigger,
        "everything inside at the trigger finished during the drain: {report}"
    );
    let shutting_down = total
        .by_outcome
        .get("503 shutting_down")
        .copied()
        .unwrap_or(0) as u64;
    assert_eq!(
        shutting_down,
        counts.rejected + stats.rejected_shutting_down,
        "new requests refused by the guard + queued ones rejected by admission"
    );
    assert_eq!(
        shutting_down, CLIENTS as u64,
        "each client told once to go away"
    );
    assert!(
        stats.rejected_shutting_down >= 1,
        "some were queued at the trigger: {stats:?}"
    );
    let served_in_drain = report.completed_during_drain - stats.rejected_shutting_down;
    assert!(
        served_in_drain >= 1,
        "in-flight requests completed during the drain: {report}"
    );
    assert!(total.by_outcome.get("200 ok").copied().unwrap_or(0) > LIMIT);
}
