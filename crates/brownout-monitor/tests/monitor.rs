//! Behaviour of the monitor, its layer and its detector, in paused time.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::{LoadLevel, PressureSource, QueueProbe, Thresholds};
use brownout_monitor::{Cause, LatencyClock, Monitor, Outcome, Signals};
use tokio::time::{Instant, sleep};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

const TICK: Duration = Duration::from_millis(100);

/// A service that answers after `latency`, with an error when `fail` is set.
fn slow(
    latency: Arc<AtomicU64>,
) -> impl Service<bool, Response = (), Error = &'static str, Future: Send> + Clone {
    service_fn(move |fail: bool| {
        let ms = latency.load(Ordering::Relaxed);
        async move {
            sleep(Duration::from_millis(ms)).await;
            if fail { Err("boom") } else { Ok(()) }
        }
    })
}

/// Sends `n` requests concurrently and waits for all of them.
async fn burst<S>(svc: &S, n: usize, failures: usize)
where
    S: Service<bool, Response = (), Error = &'static str> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut handles = Vec::new();
    for i in 0..n {
        let svc = svc.clone();
        handles.push(tokio::spawn(async move {
            let _ = svc.oneshot(i < failures).await;
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

/// Moves to the middle of the next tick interval, so that requests never complete on a tick.
async fn to_mid_interval(start: Instant) {
    let elapsed = start.elapsed().as_nanos() % TICK.as_nanos();
    let half = TICK.as_nanos() / 2;
    let wait = if elapsed < half {
        half - elapsed
    } else {
        TICK.as_nanos() - elapsed + half
    };
    sleep(Duration::from_nanos(wait as u64)).await;
}

#[tokio::test(start_paused = true)]
async fn latency_ramp_escalates_within_two_ticks() {
    let monitor = Monitor::builder()
        .latency_objective(Duration::from_millis(20))
        .build()
        .unwrap();
    let start = Instant::now();
    let signal = monitor.signal();
    let latency = Arc::new(AtomicU64::new(10));
    let svc = monitor.layer().layer(slow(latency.clone()));

    to_mid_interval(start).await;
    burst(&svc, 10, 0).await;
    sleep(TICK).await;
    assert_eq!(
        signal.level(),
        LoadLevel::Normal,
        "10 ms is under the 20 ms objective"
    );

    // Ramp: 65 ms ≥ 3 × 20 ms → Emergency. Requests complete within this interval.
    latency.store(65, Ordering::Relaxed);
    let ramp_started = Instant::now();
    to_mid_interval(start).await;
    burst(&svc, 10, 0).await;
    let mut ticks = 0;
    while signal.level() != LoadLevel::Emergency {
        sleep(TICK).await;
        ticks += 1;
        assert!(ticks <= 2, "not escalated after {ticks} ticks");
    }
    assert!(ramp_started.elapsed() <= TICK * 3);
    let snapshot = monitor.snapshot();
    let last = snapshot.transitions.last().unwrap();
    assert_eq!(
        (last.from, last.to),
        (LoadLevel::Normal, LoadLevel::Emergency)
    );
    assert!(matches!(&last.cause, Cause::Signal { name, .. } if &**name == "latency_p95"));
}

#[tokio::test(start_paused = true)]
async fn recovery_is_stepwise_one_level_per_cooldown() {
    let probe = QueueProbe::new();
    let monitor = Monitor::builder()
        .queue_probe(probe.clone())
        .cooldown(Duration::from_secs(2))
        .build()
        .unwrap();
    let signal = monitor.signal();
    sleep(TICK / 2).await;
    probe.dequeued(Duration::from_millis(150)); // ≥ 100 ms: Emergency
    sleep(TICK).await;
    assert_eq!(signal.level(), LoadLevel::Emergency);
    let escalated_at = monitor.snapshot().since;

    // From now on, no queueing at all: every tick reads 0 ms.
    let feeder = {
        let probe = probe.clone();
        tokio::spawn(async move {
            loop {
                probe.record_delay(Duration::ZERO);
                sleep(TICK / 2).await;
            }
        })
    };
    let mut steps = Vec::new();
    let mut level = signal.level();
    while level != LoadLevel::Normal {
        sleep(TICK).await;
        if signal.level() != level {
            level = signal.level();
            steps.push((escalated_at.elapsed(), level));
        }
        assert!(
            escalated_at.elapsed() < Duration::from_secs(20),
            "never recovered"
        );
    }
    feeder.abort();
    let levels: Vec<_> = steps.iter().map(|(_, l)| *l).collect();
    assert_eq!(
        levels,
        [
            LoadLevel::Critical,
            LoadLevel::High,
            LoadLevel::Elevated,
            LoadLevel::Normal
        ]
    );
    for pair in steps.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= Duration::from_secs(2), "steps {gap:?} apart");
        assert!(gap <= Duration::from_secs(2) + 2 * TICK);
    }
    assert!(steps[0].0 >= Duration::from_secs(2));
    let transitions = monitor.snapshot().transitions;
    assert_eq!(transitions.len(), 5);
    assert!(transitions[1..].iter().all(|t| t.cause == Cause::Cooldown));
}

#[tokio::test(start_paused = true)]
async fn steady_load_at_a_threshold_flips_at_most_once_in_10s() {
    let probe = QueueProbe::new();
    let monitor = Monitor::builder()
        .queue_probe(probe.clone())
        .build()
        .unwrap();
    let mut rx = monitor.signal().subscribe();
    sleep(TICK / 2).await;
    // Mean delay jitters ±4 % around the 50 ms High threshold (hysteresis is 10 %).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0u64;
    while Instant::now() < deadline {
        let jitter = [750i64, -2_000, 2_000, -500, 1_250, -1_500][(i % 6) as usize];
        probe.record_delay(Duration::from_micros((50_000 + jitter) as u64));
        i += 1;
        sleep(TICK).await;
    }
    let transitions = monitor.snapshot().transitions;
    assert!(transitions.len() <= 1, "{transitions:?}");
    assert_eq!(monitor.signal().level(), LoadLevel::High);
    assert!(rx.has_changed().unwrap());
    rx.borrow_and_update();
}

#[tokio::test(start_paused = true)]
async fn error_rate_escalates_but_not_below_min_samples() {
    let monitor = Monitor::builder().build().unwrap();
    let start = Instant::now();
    let signal = monitor.signal();
    let svc = monitor.layer().layer(slow(Arc::new(AtomicU64::new(1))));

    // 1 error in 2 requests: 50 %, but under the 20-request minimum.
    to_mid_interval(start).await;
    burst(&svc, 2, 1).await;
    sleep(TICK).await;
    assert_eq!(signal.level(), LoadLevel::Normal);
    assert_eq!(monitor.snapshot().failures, 1);

    // 30 % of 40 requests: ≥ 25 % → Critical.
    to_mid_interval(start).await;
    burst(&svc, 40, 12).await;
    sleep(TICK).await;
    assert_eq!(signal.level(), LoadLevel::Critical);
    let reading = monitor
        .snapshot()
        .signals
        .into_iter()
        .find(|s| &*s.name == "error_rate")
        .unwrap();
    assert_eq!(reading.value, Some(0.3));
    assert_eq!(reading.level, LoadLevel::Critical);
}

#[tokio::test(start_paused = true)]
async fn http_outcome_counts_5xx_but_not_4xx() {
    let monitor = Monitor::builder()
        .min_error_samples(1)
        .manual_ticks()
        .build()
        .unwrap();
    let mut svc = monitor
        .http_layer()
        .layer(service_fn(|status: u16| async move {
            Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap())
        }));
    for status in [200, 404, 429, 500, 503] {
        svc.ready().await.unwrap().call(status).await.unwrap();
    }
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!((snapshot.completed, snapshot.failures), (5, 2));
    // A closure classifier works too.
    let mut custom = monitor
        .layer()
        .with_classifier(|r: &Result<u16, Infallible>| match r {
            Ok(n) if *n > 10 => Outcome::Failure,
            _ => Outcome::Success,
        })
        .layer(service_fn(|n: u16| async move { Ok::<_, Infallible>(n) }));
    custom.ready().await.unwrap().call(11).await.unwrap();
    custom.ready().await.unwrap().call(1).await.unwrap();
    monitor.tick_now();
    assert_eq!(monitor.snapshot().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn queueing_delay_from_the_probe_escalates() {
    let probe = QueueProbe::new();
    let monitor = Monitor::builder()
        .queue_probe(probe.clone())
        .queue_depth_thresholds([10, 20, 50, 100])
        .build()
        .unwrap();
    assert_eq!(monitor.queue_probe().depth(), 0);
    let signal = monitor.signal();
    sleep(TICK / 2).await;
    probe.dequeued(Duration::from_millis(55)); // mean 55 ms ≥ 50 ms → High
    sleep(TICK).await;
    assert_eq!(signal.level(), LoadLevel::High);
    // A deep queue (depth ≥ 50) escalates further even without dequeues.
    for _ in 0..60 {
        monitor.queue_probe().enqueued();
    }
    sleep(TICK).await;
    assert_eq!(signal.level(), LoadLevel::Critical);
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.queue.depth, 60);
}

struct Gauge(Arc<AtomicU64>);

impl PressureSource for Gauge {
    fn name(&self) -> &str {
        "breakers_open"
    }
    fn sample(&self) -> Option<f64> {
        match self.0.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v as f64),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn pressure_source_escalates_and_unreadable_is_ignored() {
    let value = Arc::new(AtomicU64::new(0));
    let monitor = Monitor::builder()
        .pressure_source(
            Gauge(value.clone()),
            Thresholds::new([1.0, 3.0, 5.0, 8.0]).unwrap(),
        )
        .cooldown(Duration::ZERO)
        .manual_ticks()
        .build()
        .unwrap();
    assert_eq!(monitor.tick_now(), LoadLevel::Normal);
    value.store(5, Ordering::Relaxed);
    assert_eq!(monitor.tick_now(), LoadLevel::Critical);
    value.store(u64::MAX, Ordering::Relaxed); // unreadable: calm, steps down
    assert_eq!(monitor.tick_now(), LoadLevel::High);
    let reading = monitor.snapshot().signals.pop().unwrap();
    assert_eq!(&*reading.name, "breakers_open");
    assert_eq!(reading.value, None);
}

#[tokio::test(start_paused = true)]
async fn rel_02_cancelled_futures_count_as_cancelled_not_success() {
    let monitor = Monitor::builder().manual_ticks().build().unwrap();
    let (inner, mut handle) = mock::pair::<(), ()>();
    let mut svc = monitor.layer().layer(inner);
    handle.allow(2);
    assert_ready_ok!(tokio_test::task::spawn(()).enter(|cx, _| svc.poll_ready(cx)));
    let first = svc.call(());
    assert_ready_ok!(tokio_test::task::spawn(()).enter(|cx, _| svc.poll_ready(cx)));
    let mut second = tokio_test::task::spawn(svc.call(()));
    assert_eq!(monitor.snapshot().in_flight, 2);
    assert_pending!(second.poll());

    drop(first); // cancelled while the inner service works on it
    let (_, _abandoned) = handle.next_request().await.unwrap();
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(());
    assert_ready_ok!(second.poll());
    drop(second);

    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.in_flight, 0);
    assert_eq!(snapshot.cancelled, 1);
    assert_eq!(
        snapshot.completed, 1,
        "the cancelled request left no latency sample"
    );
    assert_eq!(snapshot.failures, 0);
}

#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_without_call_holds_nothing() {
    let monitor = Monitor::builder().manual_ticks().build().unwrap();
    let (inner, mut handle) = mock::pair::<(), ()>();
    let mut svc = monitor.layer().layer(inner);
    handle.allow(1);
    assert_ready_ok!(tokio_test::task::spawn(()).enter(|cx, _| svc.poll_ready(cx)));
    assert_eq!(monitor.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn rel_04_inner_panic_releases_in_flight() {
    let monitor = Monitor::builder().manual_ticks().build().unwrap();
    let svc = monitor.layer().layer(service_fn(|_: ()| async {
        panic!("handler bug");
        #[allow(unreachable_code)]
        Ok::<(), Infallible>(())
    }));
    let joined = tokio::spawn(svc.oneshot(())).await;
    assert!(joined.unwrap_err().is_panic());
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.cancelled), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn rel_19_dropping_the_monitor_ends_its_task_and_readers_keep_the_level() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let probe = QueueProbe::new();
    let monitor = Monitor::builder()
        .queue_probe(probe.clone())
        .build()
        .unwrap();
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    let mut signal = monitor.signal();
    let layer = monitor.layer();
    sleep(TICK / 2).await;
    probe.dequeued(Duration::from_millis(80)); // ≥ 75 ms: Critical
    sleep(TICK).await;
    assert_eq!(signal.level(), LoadLevel::Critical);

    drop(monitor);
    sleep(TICK * 3).await;
    assert_eq!(metrics.num_alive_tasks(), baseline, "tick task leaked");
    // Readers keep the last level; `changed` ends instead of spinning.
    while signal.changed().await.is_some() {}
    assert_eq!(signal.level(), LoadLevel::Critical);
    // Services built from the layer still work.
    let svc = layer.layer(service_fn(|n: u8| async move { Ok::<_, Infallible>(n) }));
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn operator_override_and_release_while_the_detector_runs() {
    let probe = QueueProbe::new();
    let monitor = Monitor::builder()
        .queue_probe(probe.clone())
        .build()
        .unwrap();
    let signal = monitor.signal();
    let publisher = monitor.publisher();
    publisher.force(LoadLevel::Emergency);
    sleep(TICK / 2).await;
    probe.dequeued(Duration::from_millis(55)); // detector: High
    sleep(TICK).await;
    assert_eq!(signal.level(), LoadLevel::Emergency);
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.forced, Some(LoadLevel::Emergency));
    assert_eq!(snapshot.detected, LoadLevel::High);
    publisher.release();
    assert_eq!(signal.level(), LoadLevel::High);
    sleep(TICK).await;
    assert_eq!(monitor.snapshot().forced, None);
}

#[test]
fn tsc_clock_measures_real_time() {
    let monitor = Monitor::builder()
        .latency_clock(LatencyClock::Tsc)
        .manual_ticks()
        .build()
        .unwrap();
    let mut svc = monitor.layer().layer(service_fn(|ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        std::future::ready(Ok::<_, Infallible>(ms))
    }));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    for _ in 0..5 {
        let fut = std::pin::pin!(svc.call(3));
        assert!(std::future::Future::poll(fut, &mut cx).is_ready());
    }
    monitor.tick_now();
    let latency = monitor.snapshot().latency;
    assert_eq!(latency.samples, 5);
    // The sleep happens in `call`, inside the measured span; at least 3 ms each.
    assert!(
        latency.p50.unwrap() >= Duration::from_millis(3),
        "{latency:?}"
    );
}

/// Sends `n` requests one after the other through `svc`, each answered after `latency`
/// (paused time), `failures` of them failing.
async fn sequential<S>(svc: &mut S, n: usize, failures: usize)
where
    S: Service<bool, Response = (), Error = &'static str>,
{
    for i in 0..n {
        let _ = svc.ready().await.unwrap().call(i < failures).await;
    }
}

#[tokio::test(start_paused = true)]
async fn busy_interval_samples_latency_but_counts_every_outcome() {
    let latency = Arc::new(AtomicU64::new(40));
    let monitor = Monitor::builder()
        .latency_objective(Duration::from_millis(100))
        .latency_sample_target(10)
        .max_sample_every(8)
        .min_error_samples(1)
        .manual_ticks()
        .build()
        .unwrap();
    let mut svc = monitor.layer().layer(slow(latency.clone()));

    // Quiet so far: every request is timed.
    sequential(&mut svc, 40, 4).await;
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.sample_every, 1);
    assert_eq!((snapshot.completed, snapshot.failures), (40, 4));
    assert_eq!(snapshot.latency.samples, 40);

    // 40 completions for a target of 10 samples: one in 4 from now on.
    sequential(&mut svc, 40, 8).await;
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.sample_every, 4);
    assert_eq!(monitor.sample_every(), 4);
    assert_eq!((snapshot.completed, snapshot.failures), (40, 8));
    assert_eq!(snapshot.latency.samples, 10);
    let p95 = snapshot.latency.p95.unwrap();
    assert!(
        p95 >= Duration::from_millis(39) && p95 <= Duration::from_millis(41),
        "sampled p95 {p95:?} for a 40 ms service"
    );
    let error_rate = snapshot
        .signals
        .iter()
        .find(|s| &*s.name == "error_rate")
        .unwrap();
    assert_eq!(
        error_rate.value,
        Some(0.2),
        "error rate counts every request"
    );

    // A fresh clone (a new connection) times its first request whatever the rate.
    let mut clone = svc.clone();
    sequential(&mut clone, 1, 0).await;
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!((snapshot.completed, snapshot.latency.samples), (1, 1));
    // A quiet interval brings the rate back to every request.
    assert_eq!(
        snapshot.sample_every, 4,
        "rate of the interval just measured"
    );
    sequential(&mut svc, 3, 0).await;
    monitor.tick_now();
    assert_eq!(monitor.snapshot().latency.samples, 3);
    assert_eq!(monitor.snapshot().sample_every, 1);
}

/// A service behind a shed layer, as the monitor sees it in DESIGN.md order: `0` is refused
/// at once (a `Rejected` shed), `1` succeeds and `2` fails, both after 40 ms.
fn behind_shed() -> impl Service<u8, Response = (), Error = brownout_core::BoxError> + Clone {
    service_fn(|kind: u8| async move {
        if kind == 0 {
            return Err(brownout_core::Rejected::new(
                brownout_core::RejectReason::Shed,
                LoadLevel::Emergency,
            )
            .into());
        }
        sleep(Duration::from_millis(40)).await;
        if kind == 2 {
            Err("boom".into())
        } else {
            Ok(())
        }
    })
}

async fn send<S>(svc: &mut S, kind: u8, n: usize)
where
    S: Service<u8, Response = (), Error = brownout_core::BoxError>,
{
    for _ in 0..n {
        let _ = svc.ready().await.unwrap().call(kind).await;
    }
}

#[tokio::test(start_paused = true)]
async fn rejection_flood_is_sampled_and_latency_and_errors_stay_right() {
    let monitor = Monitor::builder()
        .latency_objective(Duration::from_millis(100))
        .min_error_samples(1)
        .manual_ticks()
        .build()
        .unwrap();
    let mut svc = monitor.layer().layer(behind_shed());

    // A flood of 10 000 rejections, nothing completes: it sets the rate like 10 000
    // completions would (one in 39), where it used to stay at one in 1 and time them all.
    send(&mut svc, 0, 10_000).await;
    monitor.tick_now();
    let snapshot = monitor.snapshot();
    assert_eq!((snapshot.completed, snapshot.latency.samples), (0, 0));
    assert_eq!(snapshot.sample_every, 1, "the flood was timed at one in 1");
    assert_eq!(monitor.sample_every(), 39, "the flood sets the next rate");

    // The same flood with 400 completions (40 failures) after it: timed one in 39, the
    // completions still give the p95 (10 samples, at least the 5 it needs); the error rate
    // counts every completion and no rejection.
    let interval = async |svc: &mut _| {
        send(svc, 0, 10_000).await;
        send(svc, 2, 40).await;
        send(svc, 1, 360).await;
        monitor.tick_now();
        monitor.snapshot()
    };
    let snapshot = interval(&mut svc).await;
    assert_eq!(snapshot.sample_every, 39);
    assert_eq!((snapshot.completed, snapshot.failures), (400, 40));
    assert!(
        (10..=11).contains(&snapshot.latency.samples),
        "{} timed completions",
        snapshot.latency.samples
    );
    let p95 = snapshot.latency.p95.unwrap();
    assert!(
        p95 >= Duration::from_millis(39) && p95 <= Duration::from_millis(41),
        "sampled p95 {p95:?} for a 40 ms service"
    );
    let reading = |name: &str| {
        monitor
            .snapshot()
            .signals
            .iter()
            .find(|s| &*s.name == name)
            .unwrap()
            .value
    };
    assert_eq!(
        reading("error_rate"),
        Some(0.1),
        "rejections are not failures"
    );
    assert!(
        reading("latency_p95").is_some(),
        "the latency signal counts"
    );

    // 10 400 seen, 400 completed: the rate is capped so that 20 completions (4 × the 5 the
    // p95 needs) stay timed.
    assert_eq!(monitor.sample_every(), 20);
    let snapshot = interval(&mut svc).await;
    assert_eq!(snapshot.sample_every, 20);
    assert!(
        (20..=21).contains(&snapshot.latency.samples),
        "{} timed completions",
        snapshot.latency.samples
    );
    assert_eq!(snapshot.completed, 400);
    assert_eq!(monitor.sample_every(), 20);
}

#[tokio::test(start_paused = true)]
async fn max_sample_every_one_times_every_request() {
    let monitor = Monitor::builder()
        .latency_sample_target(1)
        .max_sample_every(1)
        .manual_ticks()
        .build()
        .unwrap();
    let mut svc = monitor.layer().layer(slow(Arc::new(AtomicU64::new(5))));
    for _ in 0..3 {
        sequential(&mut svc, 20, 0).await;
        monitor.tick_now();
        let snapshot = monitor.snapshot();
        assert_eq!((snapshot.completed, snapshot.latency.samples), (20, 20));
        assert_eq!(snapshot.sample_every, 1);
    }
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Monitor::builder().build().unwrap_err();
    assert_eq!(err.field(), "runtime");
    // Manual ticks need no runtime.
    let monitor = Monitor::builder().manual_ticks().build().unwrap();
    assert_eq!(monitor.tick_now(), LoadLevel::Normal);
}

#[test]
fn transitions_ring_is_bounded_and_keeps_the_newest() {
    let value = Arc::new(AtomicU64::new(0));
    let monitor = Monitor::builder()
        .pressure_source(
            Gauge(value.clone()),
            Thresholds::new([1.0, 2.0, 3.0, 4.0]).unwrap(),
        )
        .cooldown(Duration::ZERO)
        .transitions_kept(3)
        .manual_ticks()
        .build()
        .unwrap();
    for i in 0..10u64 {
        value.store(if i % 2 == 0 { 2 } else { 0 }, Ordering::Relaxed);
        monitor.tick_now();
    }
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.ticks, 10);
    let moves: Vec<_> = snapshot
        .transitions
        .iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        moves,
        [
            (LoadLevel::High, LoadLevel::Elevated),
            (LoadLevel::Elevated, LoadLevel::High),
            (LoadLevel::High, LoadLevel::Elevated),
        ]
    );
}

#[test]
fn detector_escalate_after_waits_and_jumps_to_the_sustained_level() {
    let mut detector = Monitor::builder()
        .escalate_after(3)
        .build_detector()
        .unwrap();
    let t0 = Instant::now();
    let delay = |ms| Signals {
        queue_delay: Some(Duration::from_millis(ms)),
        ..Signals::default()
    };
    // Three ticks over: 200 ms (Emergency), 80 ms (Critical), 120 ms (Emergency):
    // the level sustained for all three is Critical.
    assert_eq!(detector.update(&delay(200), t0), LoadLevel::Normal);
    assert_eq!(detector.update(&delay(80), t0 + TICK), LoadLevel::Normal);
    assert_eq!(
        detector.update(&delay(120), t0 + TICK * 2),
        LoadLevel::Critical
    );
    assert_eq!(detector.since(), t0 + TICK * 2);
    // A tick under the threshold resets the streak.
    assert_eq!(
        detector.update(&delay(200), t0 + TICK * 3),
        LoadLevel::Critical
    );
    assert_eq!(
        detector.update(&delay(55), t0 + TICK * 4),
        LoadLevel::Critical
    );
    assert_eq!(
        detector.update(&delay(200), t0 + TICK * 5),
        LoadLevel::Critical
    );
    assert_eq!(
        detector.update(&delay(200), t0 + TICK * 6),
        LoadLevel::Critical
    );
    assert_eq!(
        detector.update(&delay(200), t0 + TICK * 7),
        LoadLevel::Emergency
    );
    assert_eq!(detector.transitions(), 2);
    let readings = detector.readings();
    assert_eq!(&*readings[0].name, "queue_delay");
    assert_eq!(readings[0].level, LoadLevel::Emergency);
}

#[test]
fn detector_hysteresis_band_blocks_recovery() {
    let mut detector = Monitor::builder()
        .disable_error_rate()
        .cooldown(Duration::from_secs(1))
        .build_detector()
        .unwrap();
    let t0 = Instant::now();
    let delay = |us| Signals {
        queue_delay: Some(Duration::from_micros(us)),
        ..Signals::default()
    };
    assert_eq!(detector.update(&delay(50_000), t0), LoadLevel::High);
    // 47 ms is under the 50 ms threshold but not under 50 × 0.9 = 45 ms: stays High.
    for s in 1..=10 {
        assert_eq!(
            detector.update(&delay(47_000), t0 + Duration::from_secs(s)),
            LoadLevel::High
        );
    }
    // 44 ms: calm; one cooldown later, one step down.
    assert_eq!(
        detector.update(&delay(44_000), t0 + Duration::from_secs(11)),
        LoadLevel::High
    );
    assert_eq!(
        detector.update(&delay(44_000), t0 + Duration::from_secs(12)),
        LoadLevel::Elevated
    );
    // NaN from a custom source would be ignored; a missing reading counts as calm.
    assert_eq!(
        detector.update(&Signals::default(), t0 + Duration::from_secs(13)),
        LoadLevel::Normal
    );
}

mod config {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rel_10_each_bad_value_names_its_field() {
        let cases: Vec<(brownout_monitor::MonitorBuilder, &str)> = vec![
            (Monitor::builder().interval(Duration::ZERO), "interval"),
            (Monitor::builder().escalate_after(0), "escalate_after"),
            (Monitor::builder().hysteresis(1.0), "hysteresis"),
            (Monitor::builder().hysteresis(-0.1), "hysteresis"),
            (Monitor::builder().hysteresis(f64::NAN), "hysteresis"),
            (
                Monitor::builder().latency_objective(Duration::ZERO),
                "latency_objective",
            ),
            (
                Monitor::builder().latency_factors([1.0, f64::NAN, 2.0, 3.0]),
                "latency_factors[high]",
            ),
            (
                Monitor::builder()
                    .latency_objective(Duration::from_millis(5))
                    .latency_factors([0.0, 1.0, 2.0, 3.0]),
                "latency_factors[elevated]",
            ),
            (
                Monitor::builder().error_rate_thresholds([0.1, 0.2, 0.5, 1.5]),
                "error_rate_thresholds[emergency]",
            ),
            (
                Monitor::builder().error_rate_thresholds([0.3, 0.2, 0.5, 0.9]),
                "error_rate_thresholds[high]",
            ),
            (
                Monitor::builder().queue_delay_thresholds([Duration::from_millis(9); 4]),
                "queue_delay_thresholds[high]",
            ),
            (
                Monitor::builder().queue_depth_thresholds([4, 3, 5, 6]),
                "queue_depth_thresholds[high]",
            ),
            (
                Monitor::builder().in_flight_thresholds([1, 2, 3, 3]),
                "in_flight_thresholds[emergency]",
            ),
            (Monitor::builder().min_error_samples(0), "min_error_samples"),
            (
                Monitor::builder().min_latency_samples(0),
                "min_latency_samples",
            ),
            (Monitor::builder().transitions_kept(0), "transitions_kept"),
        ];
        for (builder, field) in cases {
            let err = builder.build_detector().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -2.0f64..2.0,
        ]
    }

    proptest! {
        #[test]
        fn validator_accepts_exactly_the_valid_configs(
            hysteresis in any_f64(),
            rates in proptest::array::uniform4(any_f64()),
            interval_ms in 0u64..3,
            escalate_after in 0u32..3,
        ) {
            let result = Monitor::builder()
                .hysteresis(hysteresis)
                .error_rate_thresholds(rates)
                .interval(Duration::from_millis(interval_ms))
                .escalate_after(escalate_after)
                .build_detector();
            let rates_ok = rates.iter().all(|r| (0.0..=1.0).contains(r))
                && rates.windows(2).all(|w| w[0] < w[1]);
            let valid = (0.0..1.0).contains(&hysteresis)
                && rates_ok
                && interval_ms > 0
                && escalate_after > 0;
            prop_assert_eq!(result.is_ok(), valid, "{:?}", result.err());
        }
    }
}

mod telemetry {
    use super::*;
    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };
    use std::sync::Mutex;

    type Log = Arc<Mutex<Vec<(String, f64)>>>;

    /// Logs every metric update as ("name{label=value,...}", value).
    struct Entry {
        key: String,
        log: Log,
    }

    impl Entry {
        fn push(&self, value: f64) {
            self.log.lock().unwrap().push((self.key.clone(), value));
        }
    }

    impl CounterFn for Entry {
        fn increment(&self, value: u64) {
            self.push(value as f64);
        }
        fn absolute(&self, value: u64) {
            self.push(value as f64);
        }
    }

    impl GaugeFn for Entry {
        fn increment(&self, value: f64) {
            self.push(value);
        }
        fn decrement(&self, value: f64) {
            self.push(-value);
        }
        fn set(&self, value: f64) {
            self.push(value);
        }
    }

    impl HistogramFn for Entry {
        fn record(&self, value: f64) {
            self.push(value);
        }
    }

    #[derive(Default)]
    struct Capture {
        log: Log,
    }

    impl Capture {
        fn entry(&self, key: &Key) -> Arc<Entry> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            Arc::new(Entry {
                key: format!("{}{{{}}}", key.name(), labels.join(",")),
                log: self.log.clone(),
            })
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.entry(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.entry(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.entry(key))
        }
    }

    #[test]
    fn level_changes_are_counted_and_gauged() {
        let capture = Capture::default();
        let probe = QueueProbe::new();
        let monitor = Monitor::builder()
            .queue_probe(probe.clone())
            .manual_ticks()
            .build()
            .unwrap();
        metrics::with_local_recorder(&capture, || {
            probe.dequeued(Duration::from_millis(80));
            assert_eq!(monitor.tick_now(), LoadLevel::Critical);
        });
        let log = capture.log.lock().unwrap().clone();
        assert!(
            log.contains(&(
                "brownout_level_changes_total{from=normal,to=critical}".to_string(),
                1.0
            )),
            "{log:?}"
        );
        assert!(
            log.contains(&("brownout_level{}".to_string(), 3.0)),
            "{log:?}"
        );
        assert!(
            log.contains(&(
                "brownout_queue_delay_seconds{layer=monitor}".to_string(),
                0.08
            )),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|(k, _)| k == "brownout_in_flight{layer=monitor}")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_exported_as_a_histogram_and_quantile_gauges_at_the_tick() {
        let capture = Capture::default();
        let monitor = Monitor::builder().manual_ticks().build().unwrap();
        let mut svc = monitor.layer().layer(service_fn(|ms: u64| async move {
            sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(())
        }));
        for ms in [10, 10, 10, 30] {
            svc.ready().await.unwrap().call(ms).await.unwrap();
        }
        // Requests record nothing in the recorder; the tick exports the interval.
        metrics::with_local_recorder(&capture, || monitor.tick_now());
        let log = capture.log.lock().unwrap().clone();
        let histogram: Vec<f64> = log
            .iter()
            .filter(|(k, _)| k == "brownout_latency_seconds{layer=monitor}")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(histogram.len(), 4, "{log:?}");
        assert_eq!(
            histogram
                .iter()
                .filter(|v| (**v - 0.010).abs() < 0.0002)
                .count(),
            3
        );
        assert_eq!(
            histogram
                .iter()
                .filter(|v| (**v - 0.030).abs() < 0.0005)
                .count(),
            1
        );
        let p99 = log
            .iter()
            .find(|(k, _)| k == "brownout_latency_quantile_seconds{layer=monitor,quantile=0.99}")
            .map(|(_, v)| *v)
            .unwrap();
        assert!((p99 - 0.030).abs() < 0.0005, "{p99}");
        assert!(log.contains(&(
            "brownout_latency_sample_every{layer=monitor}".to_string(),
            1.0
        )));
        assert_eq!(
            brownout_monitor::LATENCY_QUANTILE_SECONDS,
            "brownout_latency_quantile_seconds"
        );
    }

    #[test]
    fn latency_signal_only_with_an_objective() {
        let names = |monitor: &Monitor| -> Vec<String> {
            monitor
                .snapshot()
                .signals
                .iter()
                .map(|s| s.name.to_string())
                .collect()
        };
        let plain = Monitor::builder().manual_ticks().build().unwrap();
        assert_eq!(names(&plain), ["queue_delay", "error_rate"]);
        let with_objective = Monitor::builder()
            .latency_objective(Duration::from_millis(40))
            .in_flight_thresholds([10, 20, 30, 40])
            .manual_ticks()
            .build()
            .unwrap();
        assert_eq!(
            names(&with_objective),
            ["latency_p95", "queue_delay", "error_rate", "in_flight"]
        );
        let latency = &with_objective.snapshot().signals[0];
        assert_eq!(latency.thresholds, [0.04, 0.06, 0.08, 0.12]);
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Monitor>();
        assert_send_sync::<brownout_monitor::MonitorLayer>();
        assert_send_sync::<brownout_monitor::Snapshot>();
        assert_send_sync::<brownout_monitor::Detector>();
        assert_send_sync::<
            brownout_monitor::future::ResponseFuture<
                std::future::Ready<Result<(), ()>>,
                brownout_monitor::ErrIsFailure,
            >,
        >();
    }
}
