//! Behaviour of `ShutdownGuard` + `Shutdown` on a paused clock.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::{BoxError, LoadLevel, LoadSignal, RejectReason, Rejected};
use brownout_shutdown::{
    Aborted, HookOutcome, Phase, Readiness, Shutdown, ShutdownGuard, ShutdownReport,
};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};
use tower_test::mock;

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Answers each request after sleeping for the duration it carries.
#[derive(Clone, Copy, Debug)]
struct Sleeper;

impl Service<Duration> for Sleeper {
    type Response = Duration;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Duration, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, d: Duration) -> Self::Future {
        Box::pin(async move {
            sleep(d).await;
            Ok(d)
        })
    }
}

fn send(svc: &ShutdownGuard<Sleeper>, d: Duration) -> JoinHandle<Result<Duration, BoxError>> {
    tokio::spawn(svc.clone().oneshot(d))
}

/// Lets spawned tasks run up to their next await point without moving the clock.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

fn reason(err: &BoxError) -> Option<RejectReason> {
    Rejected::find(&**err).map(Rejected::reason)
}

fn assert_adds_up(report: &ShutdownReport, sent: u64) {
    assert_eq!(
        report.completed + report.rejected + report.aborted + report.cancelled + report.unfinished,
        sent,
        "{report:?}"
    );
    assert_eq!(report.sent(), sent, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn passes_through_and_counts_completed_while_running() {
    let shutdown = Shutdown::new();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(shutdown.layer());
    assert_ready_ok!(svc.poll_ready());
    let fut = tokio::spawn(svc.call("hello"));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "hello");
    assert_eq!(shutdown.in_flight(), 1);
    send.send_response("world");
    assert_eq!(fut.await.unwrap().unwrap(), "world");
    let counts = shutdown.counts();
    assert_eq!(
        (counts.admitted, counts.completed, counts.in_flight),
        (1, 1, 0)
    );
    assert_eq!(shutdown.phase(), Phase::Running);
    assert!(shutdown.is_ready() && shutdown.is_accepting());
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_and_count_as_completed() {
    let shutdown = Shutdown::new();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(shutdown.layer());
    assert_ready_ok!(svc.poll_ready());
    let fut = tokio::spawn(svc.call("boom"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("inner failure");
    let err = fut.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "inner failure");
    assert!(Rejected::find(&*err).is_none());
    assert_eq!(shutdown.counts().completed, 1);
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_without_call_holds_nothing() {
    let shutdown = Shutdown::new();
    let (mut svc, _handle) = mock::spawn_layer::<&str, &str, _>(shutdown.layer());
    for _ in 0..100 {
        assert_ready_ok!(svc.poll_ready());
    }
    assert_eq!(shutdown.in_flight(), 0);
    let start = Instant::now();
    let report = shutdown.shutdown().await;
    assert!(report.drained);
    assert_eq!(report.drain_duration, Duration::ZERO);
    assert_eq!(start.elapsed(), Duration::ZERO, "nothing to wait for");
    assert_eq!(report.admitted, 0);
}

#[tokio::test(start_paused = true)]
async fn rel_20_in_flight_at_trigger_all_complete_within_drain_timeout() {
    let shutdown = Shutdown::builder().drain_timeout(secs(30)).build().unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let tasks: Vec<_> = (1..=10).map(|n| send(&svc, secs(n))).collect();
    settle().await;
    assert_eq!(shutdown.in_flight(), 10);

    let start = Instant::now();
    assert!(shutdown.trigger());
    let report = shutdown.wait().await;

    for (n, task) in (1..=10).zip(tasks) {
        assert_eq!(task.await.unwrap().unwrap(), secs(n), "none lost");
    }
    assert_eq!(report.in_flight_at_trigger, 10);
    assert_eq!(report.completed_during_drain, 10);
    assert_eq!(
        (report.aborted, report.cancelled, report.unfinished),
        (0, 0, 0)
    );
    assert!(report.drained && report.is_clean());
    assert_eq!(
        report.drain_duration,
        secs(10),
        "waits for the longest one only"
    );
    assert_eq!(start.elapsed(), secs(10));
    assert_adds_up(&report, 10);
}

#[tokio::test(start_paused = true)]
async fn rel_20_new_requests_after_trigger_rejected_with_shutting_down() {
    let shutdown = Shutdown::builder().retry_after(secs(3)).build().unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    shutdown.trigger();
    for _ in 0..5 {
        let err = svc.clone().oneshot(SEC).await.unwrap_err();
        let rejected = Rejected::find(&*err).expect("a Rejected");
        assert_eq!(rejected.reason(), RejectReason::ShuttingDown);
        assert_eq!(rejected.retry_after(), Some(secs(3)));
        assert_eq!(rejected.level(), LoadLevel::Normal);
        assert!(
            err.downcast_ref::<Aborted>().is_none(),
            "refused, never started"
        );
    }
    let report = shutdown.wait().await;
    assert_eq!((report.rejected, report.admitted), (5, 0));
    assert_adds_up(&report, 5);
}

/// Triggers the shutdown from inside its `call` (a request already counted in flight when
/// the trigger fires), then answers like `Sleeper`; counts the futures it made that were polled.
#[derive(Clone)]
struct TriggersInCall {
    shutdown: Shutdown,
    polled: Arc<AtomicUsize>,
}

impl Service<Duration> for TriggersInCall {
    type Response = Duration;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Duration, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, d: Duration) -> Self::Future {
        self.shutdown.trigger();
        let polled = self.polled.clone();
        Box::pin(async move {
            polled.fetch_add(1, Ordering::SeqCst);
            Ok(d)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn rel_20_request_whose_inner_call_sees_the_trigger_is_drained_not_dropped() {
    // The guard counts a request in flight before calling the inner service, so a trigger
    // that fires during the inner `call` finds it in flight: the drain waits for it and it
    // is answered. (A trigger between the guard's check and its count refuses the request
    // without calling the inner service;
    // `rel_20_trigger_racing_many_threads_drains_and_every_request_is_counted_once`
    // runs that race on threads.)
    let shutdown = Shutdown::new();
    let polled = Arc::new(AtomicUsize::new(0));
    let mut svc = ShutdownGuard::new(
        TriggersInCall {
            shutdown: shutdown.clone(),
            polled: polled.clone(),
        },
        &shutdown,
    );
    let future = svc.ready().await.unwrap().call(SEC);
    assert_eq!(shutdown.in_flight(), 1);
    let drain = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.wait().await }
    });
    tokio::task::yield_now().await;
    assert!(!drain.is_finished(), "the drain waits for the request");
    assert_eq!(future.await.unwrap(), SEC);
    assert_eq!(polled.load(Ordering::SeqCst), 1);
    let report = drain.await.unwrap();
    assert_eq!(
        (report.completed, report.rejected, report.admitted),
        (1, 0, 1)
    );
    assert_adds_up(&report, 1);

    // Dropped without being polled: a cancellation of an admitted request.
    let shutdown = Shutdown::new();
    let mut svc = ShutdownGuard::new(
        TriggersInCall {
            shutdown: shutdown.clone(),
            polled: polled.clone(),
        },
        &shutdown,
    );
    drop(svc.ready().await.unwrap().call(SEC));
    let report = shutdown.wait().await;
    assert_eq!(
        (report.rejected, report.cancelled, report.admitted),
        (0, 1, 1)
    );
    assert_adds_up(&report, 1);
}

#[tokio::test(start_paused = true)]
async fn rejection_level_comes_from_the_load_signal() {
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let shutdown = Shutdown::builder()
        .load_signal(signal)
        .no_retry_after()
        .build()
        .unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    publisher.publish(LoadLevel::Critical);
    shutdown.trigger();
    let err = svc.oneshot(SEC).await.unwrap_err();
    let rejected = *Rejected::find(&*err).unwrap();
    assert_eq!(rejected.level(), LoadLevel::Critical);
    assert_eq!(rejected.retry_after(), None);
}

#[tokio::test(start_paused = true)]
async fn rel_20_readiness_turns_false_before_refusal_with_readiness_delay() {
    let shutdown = Shutdown::builder()
        .readiness_delay(secs(5))
        .drain_timeout(secs(10))
        .build()
        .unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let refusing = tokio::spawn({
        let refusing = shutdown.refusing();
        let start = Instant::now();
        async move {
            refusing.await;
            start.elapsed()
        }
    });
    assert_eq!(shutdown.readiness(), Readiness::Ready);

    shutdown.trigger();
    // Readiness is false at once; requests are still served during the delay.
    assert_eq!(shutdown.readiness(), Readiness::ShuttingDown);
    assert!(!shutdown.is_ready() && shutdown.is_accepting());
    assert_eq!(shutdown.phase(), Phase::Draining);
    let during_delay = send(&svc, secs(2));

    sleep(secs(4)).await;
    assert!(shutdown.is_accepting(), "still inside the readiness delay");
    let late_in_delay = send(&svc, secs(3));
    sleep(SEC).await;
    settle().await;
    assert!(!shutdown.is_accepting(), "refusing after the delay");
    let refused = svc.clone().oneshot(SEC).await.unwrap_err();
    assert_eq!(reason(&refused), Some(RejectReason::ShuttingDown));
    assert_eq!(refusing.await.unwrap(), secs(5));

    let report = shutdown.wait().await;
    assert_eq!(during_delay.await.unwrap().unwrap(), secs(2));
    assert_eq!(late_in_delay.await.unwrap().unwrap(), secs(3));
    assert_eq!(report.readiness_delay, secs(5));
    assert_eq!(report.in_flight_at_trigger, 0);
    assert_eq!(report.in_flight_at_drain_start, 1);
    assert_eq!(
        report.drain_duration,
        secs(2),
        "the 3 s request started at 4 s"
    );
    assert_eq!((report.completed_during_drain, report.rejected), (2, 1));
    assert_adds_up(&report, 3);
}

/// A future that is never ready and records when it is dropped.
struct Endless(Arc<AtomicBool>);

impl Future for Endless {
    type Output = Result<Duration, Infallible>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn rel_20_in_flight_past_drain_timeout_aborted_and_counted() {
    let shutdown = Shutdown::builder().drain_timeout(secs(10)).build().unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let short = send(&svc, secs(5));
    let long = send(&svc, secs(60));
    let dropped = Arc::new(AtomicBool::new(false));
    let endless = {
        let flag = dropped.clone();
        let svc = ShutdownGuard::new(
            tower::service_fn(move |()| Endless(flag.clone())),
            &shutdown,
        );
        tokio::spawn(svc.oneshot(()))
    };
    settle().await;
    let start = Instant::now();
    shutdown.trigger();

    let (long_at, long_result) = {
        let result = long.await.unwrap();
        (start.elapsed(), result)
    };
    assert_eq!(
        long_at,
        secs(10),
        "aborted exactly at the deadline, not at 60 s"
    );
    let err = long_result.unwrap_err();
    assert!(err.downcast_ref::<Aborted>().is_some(), "{err}");
    assert_eq!(reason(&err), Some(RejectReason::ShuttingDown));
    let err = endless.await.unwrap().unwrap_err();
    assert_eq!(reason(&err), Some(RejectReason::ShuttingDown));
    assert!(
        dropped.load(Ordering::SeqCst),
        "inner future dropped at the abort"
    );
    assert_eq!(short.await.unwrap().unwrap(), secs(5));

    let report = shutdown.wait().await;
    assert!(!report.drained && !report.is_clean());
    assert_eq!(
        (
            report.completed_during_drain,
            report.aborted,
            report.unfinished
        ),
        (1, 2, 0)
    );
    assert_eq!(
        report.drain_duration,
        secs(10),
        "aborted futures resolved at once"
    );
    assert_eq!(shutdown.in_flight(), 0);
    assert_adds_up(&report, 3);
}

#[tokio::test(start_paused = true)]
async fn rel_20_idle_long_running_and_endless_streams_at_shutdown() {
    let shutdown = Shutdown::builder().drain_timeout(secs(30)).build().unwrap();
    // Idle keep-alive connection: ready, never called.
    let (mut idle, _idle_handle) = mock::spawn_layer::<&str, &str, _>(shutdown.layer());
    assert_ready_ok!(idle.poll_ready());
    // A long request that makes progress in chunks (like a long-poll that gathers a body).
    let chunks = Arc::new(AtomicUsize::new(0));
    let streaming = {
        let chunks = chunks.clone();
        let svc = ShutdownGuard::new(
            tower::service_fn(move |n: usize| {
                let chunks = chunks.clone();
                async move {
                    for _ in 0..n {
                        sleep(SEC).await;
                        chunks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, Infallible>(n)
                }
            }),
            &shutdown,
        );
        tokio::spawn(svc.oneshot(20))
    };
    // An SSE-like request that would never end on its own.
    let sse = {
        let svc = ShutdownGuard::new(
            tower::service_fn(|()| async {
                std::future::pending::<()>().await;
                Ok::<(), Infallible>(())
            }),
            &shutdown,
        );
        tokio::spawn(svc.oneshot(()))
    };
    sleep(secs(5)).await;
    assert_eq!(shutdown.in_flight(), 2, "the idle connection holds nothing");
    let start = Instant::now();
    let report = shutdown.shutdown().await;
    assert_eq!(
        streaming.await.unwrap().unwrap(),
        20,
        "long request finished"
    );
    assert_eq!(chunks.load(Ordering::SeqCst), 20);
    let err = sse.await.unwrap().unwrap_err();
    assert_eq!(reason(&err), Some(RejectReason::ShuttingDown));
    assert_eq!(start.elapsed(), secs(30), "done by the deadline");
    assert_eq!((report.completed_during_drain, report.aborted), (1, 1));
    assert_adds_up(&report, 2);
}

#[tokio::test(start_paused = true)]
async fn unbounded_drain_timeout_waits_for_every_request() {
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::MAX)
        .build()
        .unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let hour = send(&svc, secs(3600));
    settle().await;
    let report = shutdown.shutdown().await;
    assert_eq!(hour.await.unwrap().unwrap(), secs(3600));
    assert!(report.drained);
    assert_eq!(report.drain_duration, secs(3600));
}

#[tokio::test(start_paused = true)]
async fn rel_21_trigger_twice_is_idempotent() {
    let shutdown = Shutdown::builder().drain_timeout(secs(5)).build().unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    shutdown.on_trigger({
        let fired = fired.clone();
        move || {
            fired.fetch_add(1, Ordering::SeqCst);
        }
    });
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let task = send(&svc, secs(2));
    settle().await;

    assert!(shutdown.trigger());
    assert!(!shutdown.trigger());
    assert!(!shutdown.clone().trigger());
    let first = shutdown.wait().await;
    assert!(!shutdown.trigger(), "after termination too");
    let second = shutdown.shutdown().await;
    assert_eq!(first, second);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    assert_eq!(shutdown.phase(), Phase::Terminated);
    assert_eq!(task.await.unwrap().unwrap(), secs(2));
    assert_eq!(first.drain_duration, secs(2), "one drain, not restarted");
}

#[tokio::test(start_paused = true)]
async fn rel_21_trigger_before_serving_starts() {
    let shutdown = Shutdown::new();
    assert!(shutdown.trigger());
    // The service is built and called after the trigger.
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let report = shutdown.wait().await;
    for _ in 0..3 {
        let err = svc.clone().oneshot(SEC).await.unwrap_err();
        assert_eq!(reason(&err), Some(RejectReason::ShuttingDown));
    }
    assert!(report.drained && report.is_clean());
    assert_eq!(report.admitted, 0);
    assert_eq!(shutdown.counts().rejected, 3);
}

#[test]
fn rel_21_trigger_outside_a_runtime_drains_at_the_first_wait() {
    let shutdown = Shutdown::new();
    assert!(shutdown.trigger());
    assert!(!shutdown.is_ready() && !shutdown.is_accepting());
    assert!(!shutdown.trigger());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let report = runtime.block_on(shutdown.wait());
    assert!(report.drained);
    assert_eq!(shutdown.phase(), Phase::Terminated);
}

#[tokio::test(start_paused = true)]
async fn hooks_run_in_order_with_individual_timeouts_and_failures_do_not_stop_later_ones() {
    let shutdown = Shutdown::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let record = |log: &Arc<Mutex<Vec<&'static str>>>, what| log.lock().unwrap().push(what);
    let l = log.clone();
    assert!(shutdown.hook("flush", secs(2), move || async move {
        sleep(SEC).await;
        record(&l, "flush");
        Ok(())
    }));
    let l = log.clone();
    shutdown.hook("save state", secs(2), move || async move {
        record(&l, "save state");
        Err::<(), BoxError>("disk full".into())
    });
    let l = log.clone();
    shutdown.hook("slow", secs(3), move || async move {
        record(&l, "slow started");
        sleep(secs(100)).await;
        record(&l, "slow finished");
        Ok(())
    });
    let l = log.clone();
    shutdown.hook("panics", secs(1), move || async move {
        record(&l, "panics");
        panic!("hook bug");
    });
    let l = log.clone();
    shutdown.hook("close pools", secs(1), move || async move {
        record(&l, "close pools");
        Ok(())
    });

    let report = shutdown.shutdown().await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "flush",
            "save state",
            "slow started",
            "panics",
            "close pools"
        ]
    );
    let outcomes: Vec<_> = report
        .hooks
        .iter()
        .map(|h| (h.name.as_ref(), h.outcome.clone(), h.duration))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("flush", HookOutcome::Completed, SEC),
            (
                "save state",
                HookOutcome::Failed("disk full".into()),
                Duration::ZERO
            ),
            ("slow", HookOutcome::TimedOut(secs(3)), secs(3)),
            (
                "panics",
                HookOutcome::Panicked("hook bug".into()),
                Duration::ZERO
            ),
            ("close pools", HookOutcome::Completed, Duration::ZERO),
        ]
    );
    assert_eq!(report.total_duration, secs(4));
    assert!(report.drained && !report.is_clean());
    // The timed-out hook was cancelled: it never finishes later.
    sleep(secs(200)).await;
    assert!(!log.lock().unwrap().contains(&"slow finished"));
    // Too late for a new hook.
    assert!(!shutdown.hook("late", SEC, || async { Ok(()) }));
    let text = report.to_string();
    assert!(text.contains("hook slow timed out after 3s"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn hooks_run_after_the_drain() {
    let shutdown = Shutdown::new();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let task = send(&svc, secs(4));
    settle().await;
    let at = Arc::new(Mutex::new(None));
    let (at2, start) = (at.clone(), Instant::now());
    let probe = shutdown.clone();
    shutdown.hook("after drain", SEC, move || async move {
        *at2.lock().unwrap() = Some((start.elapsed(), probe.in_flight()));
        Ok(())
    });
    shutdown.shutdown().await;
    task.await.unwrap().unwrap();
    assert_eq!(*at.lock().unwrap(), Some((secs(4), 0)));
}

#[tokio::test(start_paused = true)]
async fn report_counts_add_up_with_completed_rejected_aborted_and_cancelled() {
    let shutdown = Shutdown::builder()
        .readiness_delay(secs(2))
        .drain_timeout(secs(10))
        .build()
        .unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let mut tasks = Vec::new();
    let mut sent = 0;
    // Before the trigger: short, long (aborted) and cancelled requests.
    for n in 0..20u64 {
        tasks.push(send(&svc, secs(n % 7 + 1)));
        sent += 1;
    }
    for _ in 0..3 {
        tasks.push(send(&svc, secs(1000)));
        sent += 1;
    }
    let cancelled: Vec<_> = (0..4).map(|_| send(&svc, secs(50))).collect();
    sent += 4;
    sleep(SEC + Duration::from_millis(500)).await;
    for task in &cancelled {
        task.abort();
    }
    shutdown.trigger();
    // During the readiness delay: admitted. After it: refused.
    for _ in 0..5 {
        tasks.push(send(&svc, SEC));
        sent += 1;
    }
    sleep(secs(3)).await;
    for _ in 0..6 {
        tasks.push(send(&svc, SEC));
        sent += 1;
    }
    let report = shutdown.wait().await;
    let mut ok = 0;
    let mut shutting_down = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(err) => {
                assert_eq!(reason(&err), Some(RejectReason::ShuttingDown));
                shutting_down += 1;
            }
        }
    }
    assert_eq!(report.completed, ok);
    assert_eq!(report.rejected, 6);
    assert_eq!(report.aborted, 3);
    assert_eq!(report.cancelled, 4);
    assert_eq!(shutting_down, report.rejected + report.aborted);
    assert_adds_up(&report, sent);
}

#[tokio::test(start_paused = true)]
async fn on_trigger_callbacks_fire_once_before_and_after_trigger() {
    let shutdown = Shutdown::new();
    let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let saw_not_ready = Arc::new(AtomicBool::new(false));
    {
        let (counts, probe, saw) = (counts.clone(), shutdown.clone(), saw_not_ready.clone());
        shutdown.on_trigger(move || {
            counts[0].fetch_add(1, Ordering::SeqCst);
            saw.store(!probe.is_ready(), Ordering::SeqCst);
        });
    }
    shutdown.on_trigger(|| panic!("a buggy callback"));
    {
        let counts = counts.clone();
        shutdown.on_trigger(move || {
            counts[1].fetch_add(1, Ordering::SeqCst);
        });
    }
    assert_eq!(
        counts[0].load(Ordering::SeqCst),
        0,
        "not before the trigger"
    );
    shutdown.trigger();
    shutdown.trigger();
    assert_eq!(counts[0].load(Ordering::SeqCst), 1);
    assert_eq!(
        counts[1].load(Ordering::SeqCst),
        1,
        "a panicking callback stops nothing"
    );
    assert!(
        saw_not_ready.load(Ordering::SeqCst),
        "readiness turned false first"
    );
    {
        let counts = counts.clone();
        shutdown.on_trigger(move || {
            counts[2].fetch_add(1, Ordering::SeqCst);
        });
    }
    assert_eq!(
        counts[2].load(Ordering::SeqCst),
        1,
        "registered late: runs at once"
    );
    shutdown.wait().await;
    shutdown.trigger();
    let fired: Vec<_> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(fired, [1, 1, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn rel_02_dropped_response_future_releases_in_flight() {
    let shutdown = Shutdown::builder().drain_timeout(secs(10)).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(shutdown.layer());
    assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call("never answered"));
    assert_pending!(fut.poll());
    let (_req, _send) = handle.next_request().await.unwrap();
    assert_eq!(shutdown.in_flight(), 1);
    drop(fut);
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(shutdown.counts().cancelled, 1);
    // Dropped before its first poll, too.
    assert_ready_ok!(svc.poll_ready());
    drop(svc.call("never polled"));
    assert_eq!(shutdown.in_flight(), 0);

    let start = Instant::now();
    let report = shutdown.shutdown().await;
    assert_eq!(start.elapsed(), Duration::ZERO, "nothing left to drain");
    assert_eq!(report.cancelled, 2);
    assert_adds_up(&report, 2);
}

#[tokio::test(start_paused = true)]
async fn rel_02_dropped_during_drain_ends_the_drain_early() {
    let shutdown = Shutdown::builder().drain_timeout(secs(10)).build().unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let task = send(&svc, secs(100));
    settle().await;
    let start = Instant::now();
    shutdown.trigger();
    sleep(secs(3)).await;
    task.abort();
    let report = shutdown.wait().await;
    assert_eq!(start.elapsed(), secs(3));
    assert!(report.drained);
    assert_eq!((report.cancelled, report.aborted), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn rel_04_panicking_inner_future_releases_in_flight() {
    let shutdown = Shutdown::new();
    let svc = ShutdownGuard::new(
        tower::service_fn(|()| async {
            sleep(SEC).await;
            if true {
                panic!("handler bug");
            }
            Ok::<(), Infallible>(())
        }),
        &shutdown,
    );
    let task = tokio::spawn(svc.oneshot(()));
    settle().await;
    assert_eq!(shutdown.in_flight(), 1);
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(shutdown.counts().cancelled, 1);
}

/// Panics in `call` itself (not in the future) when asked to.
#[derive(Clone, Copy)]
struct PanicsInCall;

impl Service<bool> for PanicsInCall {
    type Response = ();
    type Error = Infallible;
    type Future = std::future::Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, panic: bool) -> Self::Future {
        assert!(!panic, "handler bug in call");
        std::future::ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn rel_04_panic_in_inner_call_releases_in_flight() {
    let shutdown = Shutdown::new();
    let mut svc = ShutdownGuard::new(PanicsInCall, &shutdown);
    let call = |svc: &mut ShutdownGuard<PanicsInCall>, panic| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.call(panic)))
    };
    // Caught, the service kept: the slot is released at its next call.
    assert!(call(&mut svc, true).is_err());
    assert_eq!(shutdown.in_flight(), 1);
    call(&mut svc, false).unwrap().await.unwrap();
    assert_eq!(shutdown.in_flight(), 0);
    // The unwinding drops the service (as a connection task does): released then.
    assert!(call(&mut svc, true).is_err());
    drop(svc);
    assert_eq!(shutdown.in_flight(), 0);
    shutdown.trigger();
    let report = shutdown.wait().await;
    assert!(report.drained);
    assert_eq!((report.completed, report.cancelled), (1, 2));
    assert_adds_up(&report, 3);
}

#[tokio::test(start_paused = true)]
async fn phase_changes_are_observable() {
    let shutdown = Shutdown::builder().drain_timeout(secs(5)).build().unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let _task = send(&svc, secs(3));
    let mut rx = shutdown.subscribe();
    let first = tokio::spawn({
        let s = shutdown.clone();
        async move { s.phase_changed().await }
    });
    settle().await;
    assert_eq!(shutdown.phase(), Phase::Running);
    shutdown.trigger();
    assert_eq!(first.await.unwrap(), Phase::Draining);
    assert_eq!(shutdown.phase_changed().await, Phase::Terminated);
    assert_eq!(shutdown.phase(), Phase::Terminated);
    assert_eq!(*rx.borrow_and_update(), Phase::Terminated);
    assert_eq!(
        shutdown.phase_changed().await,
        Phase::Terminated,
        "no wait once over"
    );
    assert!(shutdown.report().is_some());
    assert_eq!(Phase::Draining.to_string(), "draining");
}

#[tokio::test(start_paused = true)]
async fn triggered_refusing_and_drained_futures_resolve_in_order() {
    let shutdown = Shutdown::builder()
        .readiness_delay(secs(2))
        .drain_timeout(secs(20))
        .build()
        .unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let start = Instant::now();
    let at = |fut: Box<dyn Future<Output = ()> + Send + Unpin>| {
        tokio::spawn(async move {
            fut.await;
            start.elapsed()
        })
    };
    let triggered = at(Box::new(Box::pin(shutdown.triggered())));
    let refusing = at(Box::new(Box::pin(shutdown.refusing())));
    let drained = at(Box::new(Box::pin(shutdown.drained())));
    let waited = {
        let s = shutdown.clone();
        tokio::spawn(async move {
            s.wait().await;
            start.elapsed()
        })
    };
    let task = send(&svc, secs(5));
    sleep(SEC).await;
    shutdown.trigger();
    assert_eq!(task.await.unwrap().unwrap(), secs(5));
    assert_eq!(triggered.await.unwrap(), SEC);
    assert_eq!(refusing.await.unwrap(), secs(3));
    assert_eq!(drained.await.unwrap(), secs(5));
    assert_eq!(waited.await.unwrap(), secs(5));
    // Already past: resolve at once.
    shutdown.triggered().await;
    shutdown.refusing().await;
    shutdown.drained().await;
}

#[tokio::test(start_paused = true)]
async fn clones_and_layers_share_one_state() {
    let shutdown = Shutdown::new();
    let a = ShutdownGuard::new(Sleeper, &shutdown.clone());
    let b = tower::Layer::layer(&shutdown.layer(), Sleeper);
    let t1 = send(&a, secs(2));
    let t2 = send(&b, secs(2));
    settle().await;
    assert_eq!(shutdown.in_flight(), 2);
    let report = shutdown.shutdown().await;
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
    assert_eq!(report.completed_during_drain, 2);
    assert_eq!(
        (*a.get_ref()).oneshot(SEC).await.unwrap(),
        SEC,
        "inner access"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rel_03_clones_racing_on_a_multi_thread_runtime_add_up() {
    let shutdown = Shutdown::builder().drain_timeout(secs(30)).build().unwrap();
    let svc = ShutdownGuard::new(
        tower::service_fn(|n: u64| async move {
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(n)
        }),
        &shutdown,
    );
    // One request held in flight until every worker is done: the drain (and so the report)
    // cannot end while workers are still being refused, so the report counts them all.
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut holder = {
        let gate = gate.clone();
        ShutdownGuard::new(
            tower::service_fn(move |n: u64| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok::<_, Infallible>(n)
                }
            }),
            &shutdown,
        )
    };
    let held = holder.ready().await.unwrap().call(u64::MAX);
    let issued = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..16u64 {
        let svc = svc.clone();
        let issued = issued.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            for i in 0..250u64 {
                issued.fetch_add(1, Ordering::SeqCst);
                match svc.clone().oneshot(w * 1000 + i).await {
                    Ok(n) => {
                        assert_eq!(n, w * 1000 + i);
                        ok += 1;
                    }
                    Err(err) => {
                        assert_eq!(reason(&err), Some(RejectReason::ShuttingDown));
                        refused += 1;
                    }
                }
            }
            (ok, refused)
        }));
    }
    while issued.load(Ordering::SeqCst) < 2000 {
        tokio::task::yield_now().await;
    }
    shutdown.trigger();
    let (mut ok, mut refused) = (0, 0);
    for worker in workers {
        let (o, r) = worker.await.unwrap();
        ok += o;
        refused += r;
    }
    gate.notify_one();
    assert_eq!(held.await.unwrap(), u64::MAX);
    ok += 1;
    let report = shutdown.wait().await;
    assert_eq!(ok + refused, 16 * 250 + 1);
    assert_eq!((report.completed, report.rejected), (ok, refused));
    assert_eq!(
        (report.aborted, report.cancelled, report.unfinished),
        (0, 0, 0)
    );
    assert!(report.drained);
    assert_adds_up(&report, 16 * 250 + 1);
}

#[cfg(feature = "signal")]
#[tokio::test(start_paused = true)]
async fn signal_listener_ends_when_triggered_programmatically() {
    let shutdown = Shutdown::new();
    let listener = shutdown.listen_for_signals();
    settle().await;
    assert!(!listener.is_finished(), "waits for a signal");
    assert!(!shutdown.is_triggered());
    shutdown.trigger();
    listener.await.unwrap();
    shutdown.wait().await;
}

#[cfg(feature = "http")]
#[test]
fn readiness_maps_to_status_codes() {
    assert_eq!(Readiness::Ready.status_code(), http::StatusCode::OK);
    assert_eq!(
        Readiness::ShuttingDown.status_code(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
}

#[cfg(all(feature = "signal", unix))]
#[test]
fn signal_listener_without_an_io_driver_ends_without_triggering() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        shutdown.listen_for_signals().await.unwrap();
        assert!(!shutdown.is_triggered());
    });
}

#[tokio::test(start_paused = true)]
async fn abort_wakes_the_task_that_polled_last_after_the_waker_changed() {
    let shutdown = Shutdown::builder().drain_timeout(secs(5)).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(shutdown.layer());
    assert_ready_ok!(svc.poll_ready());
    let mut fut = Box::pin(svc.call("slow"));
    // First poll with one waker (registers it for the abort) ...
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    let (_req, _never_answered) = handle.next_request().await.unwrap();
    // ... then the future moves to a task with another waker.
    let task = tokio::spawn(fut);
    settle().await;
    shutdown.trigger();
    let start = Instant::now();
    let result = tokio::time::timeout(secs(60), task)
        .await
        .expect("woken at the deadline, not left hanging");
    let err = result.unwrap().unwrap_err();
    assert!(err.downcast_ref::<Aborted>().is_some());
    assert_eq!(start.elapsed(), secs(5));
}

#[test]
fn handles_services_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Shutdown>();
    send_sync::<brownout_shutdown::ShutdownGuardLayer>();
    send_sync::<ShutdownGuard<Sleeper>>();
    send_sync::<ShutdownReport>();
    send_sync::<Aborted>();
    let shutdown = Shutdown::new();
    send(&shutdown.triggered());
    send(&shutdown.refusing());
    send(&shutdown.drained());
    send(&shutdown.wait());
    send(&ShutdownGuard::new(Sleeper, &shutdown).call(SEC));
}

#[tokio::test(start_paused = true)]
async fn rel_21_trigger_from_a_plain_thread_drains_through_the_server_future() {
    let shutdown = Shutdown::builder()
        .readiness_delay(secs(2))
        .drain_timeout(secs(5))
        .build()
        .unwrap();
    let svc = ShutdownGuard::new(Sleeper, &shutdown);
    let long = send(&svc, secs(60));
    // What a server does with the handle: await `triggered()` inside the runtime.
    let server = tokio::spawn(shutdown.triggered());
    settle().await;
    let start = Instant::now();
    let remote = shutdown.clone();
    std::thread::spawn(move || assert!(remote.trigger()))
        .join()
        .unwrap();
    server.await.unwrap();
    // Nobody calls `wait()`: the drain still runs, refuses after the delay, aborts at the
    // deadline.
    let err = long.await.unwrap().unwrap_err();
    assert!(err.downcast_ref::<Aborted>().is_some());
    assert_eq!(start.elapsed(), secs(7));
    assert_eq!(shutdown.counts().aborted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_no_request_admitted_behind_the_drains_back() {
    // Callers race the trigger on 4 worker threads; every request the guard admitted must
    // be one the drain waited for: nothing completes after the report.
    let shutdown = Shutdown::builder().drain_timeout(secs(30)).build().unwrap();
    let svc = ShutdownGuard::new(
        tower::service_fn(|n: u64| async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            Ok::<_, Infallible>(n)
        }),
        &shutdown,
    );
    let workers: Vec<_> = (0..32u64)
        .map(|w| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut ok = 0u64;
                loop {
                    match svc.clone().oneshot(w).await {
                        Ok(_) => ok += 1,
                        Err(err) => {
                            assert_eq!(reason(&err), Some(RejectReason::ShuttingDown));
                            return ok;
                        }
                    }
                }
            })
        })
        .collect();
    while shutdown.counts().completed < 5_000 {
        tokio::task::yield_now().await;
    }
    let report = shutdown.shutdown().await;
    let mut ok = 0;
    for worker in workers {
        ok += worker.await.unwrap();
    }
    assert!(report.drained);
    assert_eq!(report.unfinished, 0);
    assert_eq!(
        shutdown.counts().completed,
        report.completed,
        "none after the report"
    );
    assert_eq!(ok, report.completed);
    assert_eq!(shutdown.counts().rejected, 32);
}

/// Answers at once (ready future), for the threaded race below.
#[derive(Clone, Copy)]
struct Instant0;

impl Service<u32> for Instant0 {
    type Response = u32;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u32, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        std::future::ready(Ok(n))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rel_20_trigger_racing_many_threads_drains_and_every_request_is_counted_once() {
    // 8 tasks on 4 threads send requests while another triggers the shutdown: the drain
    // must end (the last request to finish wakes it) and each request is counted exactly
    // once, as completed or rejected (in flight = started − finished, completed derived).
    for round in 0..20u32 {
        let shutdown = Shutdown::builder().drain_timeout(secs(30)).build().unwrap();
        let svc = ShutdownGuard::new(Instant0, &shutdown);
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let svc = svc.clone();
                let sent = sent.clone();
                tokio::spawn(async move {
                    for i in 0..2_000u32 {
                        let _ = svc.clone().oneshot(i).await;
                        sent.fetch_add(1, Ordering::SeqCst);
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let trigger = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                for _ in 0..(round % 7) * 8 {
                    tokio::task::yield_now().await;
                }
                shutdown.trigger();
            })
        };
        for task in tasks {
            task.await.unwrap();
        }
        trigger.await.unwrap();
        let report = tokio::time::timeout(secs(10), shutdown.wait())
            .await
            .expect("the drain ends once every request finished");
        let sent = sent.load(Ordering::SeqCst) as u64;
        assert!(report.drained, "round {round}: {report:?}");
        assert_eq!(report.unfinished, 0, "round {round}: {report:?}");
        // The report is frozen when the drain ends; requests refused after it are in the
        // live counts.
        let counts = shutdown.counts();
        assert_eq!(counts.in_flight, 0, "round {round}: {counts:?}");
        assert_eq!(
            counts.aborted + counts.cancelled,
            0,
            "round {round}: {counts:?}"
        );
        assert_eq!(
            counts.completed + counts.rejected,
            sent,
            "round {round}: {counts:?}"
        );
        assert_eq!(
            counts.admitted, counts.completed,
            "round {round}: {counts:?}"
        );
    }
}
