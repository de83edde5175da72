//! Behaviour of `AdaptiveTimeout` under paused time: the estimate, level scaling, caller
//! deadlines, edge cases, cancellation and configuration validation.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brownout_core::config::duration::mul_f64_saturating;
use brownout_core::{
    BoxError, Deadline, LevelTable, LoadLevel, LoadSignal, RejectReason, Rejected,
};
use brownout_timeout::{AdaptiveTimeout, AdaptiveTimeoutConfig, AdaptiveTimeoutLayer, NoDeadline};
use proptest::prelude::*;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

type SleepFuture = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;
type Sleeper = tower::util::ServiceFn<fn(u64) -> SleepFuture>;

/// Answers request `ms` after `ms` milliseconds.
fn sleeper() -> Sleeper {
    fn call(ms: u64) -> SleepFuture {
        Box::pin(async move {
            sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        })
    }
    service_fn(call as fn(u64) -> SleepFuture)
}

fn config() -> AdaptiveTimeoutConfig {
    AdaptiveTimeoutConfig::builder()
        .initial(100 * MS)
        .min(10 * MS)
        .max(Duration::from_secs(10))
        .min_samples(10)
        .max_sample_every(1)
        .window(Duration::from_secs(1))
        .build()
        .unwrap()
}

fn timed(
    config: AdaptiveTimeoutConfig,
    signal: LoadSignal,
) -> AdaptiveTimeout<Sleeper, NoDeadline> {
    AdaptiveTimeoutLayer::new(config)
        .with_signal(signal)
        .without_caller_deadline()
        .layer(sleeper())
}

async fn send<S>(svc: &mut S, ms: u64) -> Result<u64, BoxError>
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    svc.ready().await?.call(ms).await
}

fn is_timeout(err: &BoxError) -> bool {
    Rejected::find(&**err).is_some_and(|r| r.reason() == RejectReason::Timeout)
}

/// Sends sequential requests of `ms` for `duration`; returns how many timed out.
async fn run_for<S>(svc: &mut S, ms: u64, duration: Duration) -> usize
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    let end = Instant::now() + duration;
    let mut timeouts = 0;
    while Instant::now() < end {
        if let Err(err) = send(svc, ms).await {
            assert!(is_timeout(&err));
            timeouts += 1;
        }
    }
    timeouts
}

#[tokio::test(start_paused = true)]
async fn rel_18_no_samples_uses_the_initial_timeout() {
    let mut svc = timed(config(), LoadSignal::default());
    assert_eq!(svc.current_timeout(), Some(100 * MS));
    assert_eq!(svc.estimate(), Some(100 * MS));
    let start = Instant::now();
    let err = send(&mut svc, 150).await.unwrap_err();
    assert!(is_timeout(&err));
    assert_eq!(start.elapsed(), 100 * MS);
    let rejected = Rejected::find(&*err).unwrap();
    assert_eq!(rejected.level(), LoadLevel::Normal);
    assert_eq!(send(&mut svc, 99).await.unwrap(), 99);
}

#[tokio::test(start_paused = true)]
async fn rel_18_fewer_than_min_samples_keep_the_initial_timeout() {
    let mut svc = timed(config(), LoadSignal::default());
    for _ in 0..9 {
        send(&mut svc, 1).await.unwrap();
    }
    sleep(Duration::from_secs(5)).await;
    send(&mut svc, 1).await.unwrap(); // closes the window: 9 samples < 10
    assert_eq!(svc.estimate(), Some(100 * MS));
}

#[tokio::test(start_paused = true)]
async fn rel_18_one_huge_outlier_stays_within_min_and_max() {
    let config = AdaptiveTimeoutConfig::builder()
        .initial(Duration::from_secs(2))
        .min(50 * MS)
        .max(Duration::from_secs(2))
        .percentile(1.0)
        .min_samples(10)
        .max_sample_every(1)
        .build()
        .unwrap();
    let mut svc = timed(config, LoadSignal::default());
    // The outlier (p100 × 2 = 3.8 s) ends the first window, which has too few samples to
    // close: it carries over into the next one.
    send(&mut svc, 1900).await.unwrap();
    for _ in 0..20 {
        send(&mut svc, 10).await.unwrap();
    }
    sleep(Duration::from_secs(1)).await;
    send(&mut svc, 10).await.unwrap(); // closes the window
    assert_eq!(
        svc.estimate(),
        Some(Duration::from_secs(2)),
        "clamped to max"
    );

    // Only fast samples: 2 × ~10 ms is below min.
    for _ in 0..20 {
        send(&mut svc, 10).await.unwrap();
    }
    sleep(Duration::from_secs(1)).await;
    send(&mut svc, 10).await.unwrap();
    assert_eq!(svc.estimate(), Some(50 * MS), "clamped to min");
}

#[tokio::test(start_paused = true)]
async fn estimate_is_multiplier_times_the_percentile() {
    let mut svc = timed(config(), LoadSignal::default());
    run_for(&mut svc, 20, Duration::from_millis(2500)).await;
    // p99 of 20 ms samples is reported at its bucket's upper bound (≤ 6.25 % above).
    let estimate = svc.estimate().unwrap();
    assert!(estimate >= 40 * MS && estimate <= 43 * MS, "{estimate:?}");
}

#[tokio::test(start_paused = true)]
async fn follows_a_latency_fall_after_one_window_of_new_samples() {
    let mut svc = timed(config(), LoadSignal::default());
    run_for(&mut svc, 50, Duration::from_millis(2500)).await;
    let before = svc.estimate().unwrap();
    assert!(before >= 100 * MS && before <= 107 * MS, "{before:?}");
    // The shift: the window in progress is mixed; the next one holds only new samples.
    run_for(&mut svc, 10, Duration::from_millis(2100)).await;
    let after = svc.estimate().unwrap();
    assert!(after >= 20 * MS && after <= 22 * MS, "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn follows_a_latency_rise_within_one_window() {
    let mut svc = timed(config(), LoadSignal::default());
    run_for(&mut svc, 20, Duration::from_millis(2500)).await;
    assert!(svc.estimate().unwrap() <= 43 * MS);
    // 30 ms is below the 40 ms timeout: the first window that closes after the rise holds
    // more than 1 % of new samples, so its p99 already follows.
    run_for(&mut svc, 30, Duration::from_millis(1100)).await;
    let after = svc.estimate().unwrap();
    assert!(after >= 60 * MS && after <= 64 * MS, "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn latency_above_the_timeout_grows_it_through_censored_samples() {
    let mut svc = timed(config(), LoadSignal::default());
    run_for(&mut svc, 20, Duration::from_millis(2500)).await;
    // Latency jumps to 200 ms, five times the timeout. Timed-out requests count as
    // samples of their elapsed time, so the estimate doubles per window until it covers them.
    let mut windows = 0;
    while run_for(&mut svc, 200, Duration::from_secs(1)).await > 0 {
        windows += 1;
        assert!(windows <= 5, "estimate stuck at {:?}", svc.estimate());
    }
    assert!(svc.estimate().unwrap() >= 200 * MS);
}

#[tokio::test(start_paused = true)]
async fn sampling_adapts_to_the_request_rate() {
    // Target: 4 × 10 = 40 samples per window, at most one request in 8 timed.
    let config = AdaptiveTimeoutConfig::builder()
        .initial(100 * MS)
        .min(10 * MS)
        .min_samples(10)
        .max_sample_every(8)
        .build()
        .unwrap();
    assert_eq!(config.max_sample_every(), 8);
    let mut svc = timed(config, LoadSignal::default());
    assert_eq!(svc.sample_every(), 1, "a quiet service times every request");
    // Busy: 1 ms requests, ~1000 per window.
    run_for(&mut svc, 1, Duration::from_millis(1500)).await;
    assert_eq!(svc.sample_every(), 8);
    // The estimate still follows with one request in 8 timed (from the 10 ms floor, through
    // censored samples, to 2 × 20 ms).
    run_for(&mut svc, 20, Duration::from_millis(5000)).await;
    let estimate = svc.estimate().unwrap();
    assert!(estimate >= 40 * MS && estimate <= 43 * MS, "{estimate:?}");
    // Quiet again: a few requests per window bring the rate back to 1.
    for _ in 0..40 {
        send(&mut svc, 1).await.unwrap();
        sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(svc.sample_every(), 1);
}

#[tokio::test(start_paused = true)]
async fn estimate_is_recomputed_once_per_window_not_per_request() {
    let mut svc = timed(config(), LoadSignal::default());
    run_for(&mut svc, 20, Duration::from_millis(1500)).await;
    let settled = svc.estimate();
    // Within the next window, requests of another latency do not move it.
    run_for(&mut svc, 5, Duration::from_millis(400)).await;
    assert_eq!(svc.estimate(), settled);
}

#[tokio::test(start_paused = true)]
async fn timeout_is_scaled_by_the_level() {
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let mut svc = timed(config(), signal);
    let scale = LevelTable::default_timeout_scale();
    for level in LoadLevel::ALL {
        publisher.publish(level);
        let expected = mul_f64_saturating(100 * MS, scale[level]);
        assert_eq!(svc.current_timeout(), Some(expected), "{level}");
        let start = Instant::now();
        let err = send(&mut svc, 200).await.unwrap_err();
        assert!(is_timeout(&err));
        assert_eq!(Rejected::find(&*err).unwrap().level(), level);
        // The sleep fires at the next whole millisecond of the paused clock.
        let waited = start.elapsed();
        assert!(
            waited >= expected && waited <= expected + MS,
            "{level}: {waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn scaled_levels_do_not_teach_the_estimate() {
    let (publisher, signal) = LoadSignal::channel(LoadLevel::High);
    let mut svc = timed(config(), signal);
    // At High only requests under 50 ms finish: learning from them would shrink the estimate.
    run_for(&mut svc, 5, Duration::from_millis(2500)).await;
    assert_eq!(svc.estimate(), Some(100 * MS));
    publisher.publish(LoadLevel::Normal);
    run_for(&mut svc, 5, Duration::from_millis(2500)).await;
    let learned = svc.estimate().unwrap();
    assert!(learned <= 11 * MS, "learns at Normal: {learned:?}");
}

type Seen = Option<Deadline>;

type HttpFuture = Pin<Box<dyn Future<Output = Result<Seen, Infallible>> + Send>>;
type HttpSleeper = tower::util::ServiceFn<fn(http::Request<u64>) -> HttpFuture>;

/// An http service answering with the deadline it sees, after `body` milliseconds.
fn http_sleeper() -> HttpSleeper {
    fn call(req: http::Request<u64>) -> HttpFuture {
        Box::pin(async move {
            let seen = Deadline::of(req.extensions());
            sleep(Duration::from_millis(*req.body())).await;
            Ok(seen)
        })
    }
    service_fn(call as fn(http::Request<u64>) -> HttpFuture)
}

fn http_request(ms: u64) -> http::Request<u64> {
    http::Request::new(ms)
}

#[tokio::test(start_paused = true)]
async fn never_exceeds_the_callers_deadline_and_propagates_the_budget() {
    let mut svc = AdaptiveTimeoutLayer::new(config()).layer(http_sleeper());

    // The caller's deadline (30 ms) is earlier than the timeout (100 ms): it wins.
    let start = Instant::now();
    let mut req = http_request(10);
    Deadline::after(30 * MS).tighten(req.extensions_mut());
    let seen = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(seen, Some(Deadline::at(start + 30 * MS)));

    let start = Instant::now();
    let mut req = http_request(80);
    Deadline::after(30 * MS).tighten(req.extensions_mut());
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(is_timeout(&err));
    assert_eq!(start.elapsed(), 30 * MS);

    // A later caller deadline: the handler sees the layer's own, tighter deadline.
    let start = Instant::now();
    let mut req = http_request(10);
    Deadline::after(Duration::from_secs(60)).tighten(req.extensions_mut());
    let seen = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(seen, Some(Deadline::at(start + 100 * MS)));

    // No caller deadline: the handler sees the layer's.
    let start = Instant::now();
    let seen = svc
        .ready()
        .await
        .unwrap()
        .call(http_request(1))
        .await
        .unwrap();
    assert_eq!(seen, Some(Deadline::at(start + 100 * MS)));
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_header_caps_the_timeout_and_malformed_values_are_ignored() {
    let mut svc = AdaptiveTimeoutLayer::new(config()).layer(http_sleeper());
    let start = Instant::now();
    let mut req = http_request(5);
    req.headers_mut()
        .insert("grpc-timeout", "20m".parse().unwrap());
    let seen = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(seen, Some(Deadline::at(start + 20 * MS)));

    let mut req = http_request(50);
    req.headers_mut()
        .insert("grpc-timeout", "20m".parse().unwrap());
    assert!(is_timeout(
        &svc.ready().await.unwrap().call(req).await.unwrap_err()
    ));

    for bad in ["abc", "1.5S", "123456789S", "-1S", "20", "m", "20x"] {
        let start = Instant::now();
        let mut req = http_request(5);
        req.headers_mut()
            .insert("grpc-timeout", bad.parse().unwrap());
        let seen = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(
            seen,
            Some(Deadline::at(start + 100 * MS)),
            "{bad:?} must be ignored"
        );
    }

    // Header and extension: the earlier wins.
    let start = Instant::now();
    let mut req = http_request(1);
    req.headers_mut()
        .insert("grpc-timeout", "50m".parse().unwrap());
    Deadline::after(40 * MS).tighten(req.extensions_mut());
    let seen = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(seen, Some(Deadline::at(start + 40 * MS)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// RELIABILITY #25: any `grpc-timeout` bytes: no panic, and the deadline the handler
    /// sees is never later than the layer's own.
    #[test]
    fn rel_25_arbitrary_grpc_timeout_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let mut svc = AdaptiveTimeoutLayer::new(config()).layer(http_sleeper());
            let start = Instant::now();
            let mut req = http_request(0);
            if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                req.headers_mut().insert("grpc-timeout", value);
            }
            match svc.ready().await.unwrap().call(req).await {
                Ok(seen) => prop_assert!(seen.unwrap() <= Deadline::at(start + 100 * MS)),
                Err(err) => prop_assert!(is_timeout(&err)), // e.g. "0m"
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn rel_17_deadline_already_passed_rejects_without_calling_the_inner_service() {
    let called = Arc::new(AtomicUsize::new(0));
    let counter = called.clone();
    let inner = service_fn(move |_: http::Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(()) }
    });
    let mut svc = AdaptiveTimeoutLayer::new(config()).layer(inner);

    let mut req = http::Request::new(());
    Deadline::at(Instant::now()).tighten(req.extensions_mut());
    let fut = svc.ready().await.unwrap().call(req);
    assert!(fut.rejection().is_some());
    assert!(is_timeout(&fut.await.unwrap_err()));

    let mut req = http::Request::new(());
    req.headers_mut()
        .insert("grpc-timeout", "0n".parse().unwrap());
    assert!(is_timeout(
        &svc.ready().await.unwrap().call(req).await.unwrap_err()
    ));
    assert_eq!(called.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_17_zero_timeout_rejects_at_once() {
    // 1 ns scaled by Emergency's 0.17 rounds to zero.
    let config = AdaptiveTimeoutConfig::builder()
        .initial(Duration::from_nanos(1))
        .min(Duration::from_nanos(1))
        .build()
        .unwrap();
    let mut svc = timed(config, LoadSignal::fixed(LoadLevel::Emergency));
    assert_eq!(svc.current_timeout(), Some(Duration::ZERO));
    let fut = svc.ready().await.unwrap().call(0);
    assert!(fut.rejection().is_some());
    assert!(is_timeout(&fut.await.unwrap_err()));
}

#[tokio::test(start_paused = true)]
async fn rel_17_duration_max_means_no_timer() {
    let config = AdaptiveTimeoutConfig::builder()
        .initial(Duration::MAX)
        .max(Duration::MAX)
        .build()
        .unwrap();
    for level in LoadLevel::ALL {
        let mut svc = timed(config, LoadSignal::fixed(level));
        assert_eq!(svc.current_timeout(), None, "{level}");
        // A year-long request completes: no timer, no overflow.
        let year = 365 * 24 * 3600 * 1000;
        assert_eq!(send(&mut svc, year).await.unwrap(), year);
    }
    // A caller deadline still applies without an own timer.
    let mut svc = AdaptiveTimeoutLayer::new(config).layer(http_sleeper());
    let mut req = http_request(100);
    req.headers_mut()
        .insert("grpc-timeout", "10m".parse().unwrap());
    assert!(is_timeout(
        &svc.ready().await.unwrap().call(req).await.unwrap_err()
    ));
    // The longest grpc-timeout with a huge own timeout: no overflow either.
    let mut req = http_request(1);
    req.headers_mut()
        .insert("grpc-timeout", "99999999H".parse().unwrap());
    assert!(svc.ready().await.unwrap().call(req).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn rel_16_response_ready_at_the_deadline_wins() {
    let mut svc = timed(config(), LoadSignal::default());
    // Inner sleep and timeout both end at exactly +100 ms: the response is polled first.
    assert_eq!(send(&mut svc, 100).await.unwrap(), 100);
    assert!(is_timeout(&send(&mut svc, 101).await.unwrap_err()));

    // The same with the clock moved past both at once, polled once afterwards.
    let mut fut = Box::pin(svc.ready().await.unwrap().call(100));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(Duration::from_millis(150)).await;
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(100)) => {}
        other => panic!("the response must win, got {other:?}"),
    }
}

/// A future that notes when it is dropped.
struct Tracked(Arc<AtomicBool>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn rel_02_cancel_safety_dropping_the_future_drops_inner_and_timer() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let inner = service_fn(move |ms: u64| {
        let guard = Tracked(flag.clone());
        async move {
            let _guard = guard;
            sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(ms)
        }
    });
    let config = AdaptiveTimeoutConfig::builder()
        .initial(100 * MS)
        .min(10 * MS)
        .min_samples(1)
        .max_sample_every(1)
        .build()
        .unwrap();
    let mut svc = AdaptiveTimeoutLayer::new(config)
        .without_caller_deadline()
        .layer(inner);
    // Poll once (arms the timer), then drop mid-flight.
    let mut fut = Box::pin(svc.ready().await.unwrap().call(50));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    drop(fut);
    assert!(dropped.load(Ordering::SeqCst));
    // Dropped requests teach nothing: after the window, the estimate is unchanged.
    for _ in 0..20 {
        let fut = svc.ready().await.unwrap().call(1);
        drop(fut);
    }
    sleep(Duration::from_secs(2)).await;
    // Under tokio::time::timeout the dropped requests must not have left timers firing.
    let ok = tokio::time::timeout(Duration::from_secs(1), svc.ready().await.unwrap().call(2)).await;
    assert_eq!(ok.unwrap().unwrap(), 2);
    assert_eq!(
        svc.estimate(),
        Some(100 * MS),
        "one sample closes no window yet"
    );
}

#[test]
fn ready_inner_service_needs_no_timer_and_no_runtime() {
    // No tokio runtime: creating a `Sleep` would panic. A response ready on the first poll
    // never creates one.
    let inner = service_fn(|x: u64| std::future::ready(Ok::<_, Infallible>(x)));
    let mut svc = AdaptiveTimeoutLayer::default()
        .without_caller_deadline()
        .layer(inner);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = Box::pin(svc.call(7));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(7)) => {}
        other => panic!("{other:?}"),
    }
}

/// Calls `svc` now, waits `idle` before the first poll, then awaits the response.
async fn call_then_poll_later<S>(svc: &mut S, ms: u64, idle: Duration) -> Result<u64, BoxError>
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    let fut = svc.ready().await.unwrap().call(ms);
    sleep(idle).await;
    fut.await
}

#[tokio::test(start_paused = true)]
async fn unsampled_request_without_a_deadline_is_timed_from_its_first_pending_poll() {
    // At High nothing is learned, so no request is a sample; without a caller deadline the
    // layer reads no clock at `call`, and the 100 ms timer (200 ms × 0.5) starts when the
    // response is first found pending.
    let config = AdaptiveTimeoutConfig::builder()
        .initial(200 * MS)
        .build()
        .unwrap();
    let mut svc = timed(config, LoadSignal::fixed(LoadLevel::High));
    assert_eq!(svc.current_timeout(), Some(100 * MS));
    let start = Instant::now();
    // Polled 60 ms after `call`, answered 80 ms after that: within 100 ms of the first poll.
    assert_eq!(
        call_then_poll_later(&mut svc, 80, 60 * MS).await.unwrap(),
        80
    );
    assert_eq!(start.elapsed(), 140 * MS);
    // 120 ms after the first poll: cut at 100 ms after it.
    let start = Instant::now();
    assert!(is_timeout(
        &call_then_poll_later(&mut svc, 120, 60 * MS)
            .await
            .unwrap_err()
    ));
    assert_eq!(start.elapsed(), 160 * MS);
}

#[tokio::test(start_paused = true)]
async fn deferred_timer_is_armed_once_at_the_first_pending_poll_not_at_every_poll() {
    // Unsampled (High), no caller deadline: the 100 ms timer is armed when the response is
    // first found pending. The inner future is then pending three more times (40 ms each):
    // the deadline stays 100 ms after that first poll instead of moving with every poll.
    let config = AdaptiveTimeoutConfig::builder()
        .initial(200 * MS)
        .build()
        .unwrap();
    let steps = Arc::new(AtomicUsize::new(0));
    let counted = steps.clone();
    let mut svc = AdaptiveTimeoutLayer::new(config)
        .with_signal(LoadSignal::fixed(LoadLevel::High))
        .without_caller_deadline()
        .layer(service_fn(move |n: u64| {
            let steps = counted.clone();
            async move {
                for _ in 0..n {
                    sleep(40 * MS).await;
                    steps.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, Infallible>(n)
            }
        }));
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert!(is_timeout(&err));
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(
        steps.load(Ordering::Relaxed),
        2,
        "cut during the third step"
    );
    // Two steps (80 ms) fit in the same 100 ms.
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(start.elapsed(), 80 * MS);
}

#[tokio::test(start_paused = true)]
async fn sampled_request_is_timed_from_call_like_tower() {
    // `config()` times every request: the arrival time is read at `call` and the 100 ms
    // deadline counts from there, however late the first poll.
    let mut svc = timed(config(), LoadSignal::default());
    let start = Instant::now();
    assert!(is_timeout(
        &call_then_poll_later(&mut svc, 80, 60 * MS)
            .await
            .unwrap_err()
    ));
    assert_eq!(start.elapsed(), 100 * MS);
    // A caller deadline is absolute, so the arrival time is read at `call` even for a
    // request that is not a sample (at High, own timeout 200 ms × 0.5 = 100 ms).
    let config = AdaptiveTimeoutConfig::builder()
        .initial(200 * MS)
        .build()
        .unwrap();
    let mut svc = AdaptiveTimeoutLayer::new(config)
        .with_signal(LoadSignal::fixed(LoadLevel::High))
        .caller_deadline(|_: &u64| Some(Deadline::after(70 * MS)))
        .layer(sleeper());
    let start = Instant::now();
    assert!(is_timeout(
        &call_then_poll_later(&mut svc, 30, 60 * MS)
            .await
            .unwrap_err()
    ));
    assert_eq!(start.elapsed(), 70 * MS);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_boxed_and_teach_nothing() {
    let inner = service_fn(|_: u64| async { Err::<u64, _>(std::io::Error::other("boom")) });
    let config = AdaptiveTimeoutConfig::builder()
        .min_samples(1)
        .max_sample_every(1)
        .build()
        .unwrap();
    let mut svc = AdaptiveTimeoutLayer::new(config)
        .without_caller_deadline()
        .layer(inner);
    for _ in 0..5 {
        let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert!(Rejected::find(&*err).is_none());
        sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(svc.estimate(), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn any_request_type_with_a_closure_deadline() {
    struct Job {
        ms: u64,
        budget: Option<Duration>,
    }
    let inner = service_fn(|job: Job| async move {
        sleep(Duration::from_millis(job.ms)).await;
        Ok::<_, Infallible>(job.ms)
    });
    let mut svc = AdaptiveTimeoutLayer::new(config())
        .caller_deadline(|job: &Job| job.budget.map(Deadline::after))
        .layer(inner);
    let start = Instant::now();
    let job = Job {
        ms: 50,
        budget: Some(20 * MS),
    };
    assert!(is_timeout(
        &svc.ready().await.unwrap().call(job).await.unwrap_err()
    ));
    assert_eq!(start.elapsed(), 20 * MS);
    let job = Job {
        ms: 50,
        budget: None,
    };
    assert_eq!(svc.ready().await.unwrap().call(job).await.unwrap(), 50);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_estimate() {
    let layer = AdaptiveTimeoutLayer::new(config()).without_caller_deadline();
    let mut a = layer.layer(sleeper());
    let b = a.clone();
    let c = layer.layer(sleeper());
    run_for(&mut a, 20, Duration::from_millis(2500)).await;
    assert_eq!(b.estimate(), a.estimate());
    assert_eq!(c.estimate(), a.estimate());
    assert_eq!(layer.current_timeout(), a.current_timeout());
    assert_ne!(a.estimate(), Some(100 * MS));
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let b = AdaptiveTimeoutConfig::builder;
    let cases = [
        (b().min(Duration::ZERO).build(), "min"),
        (b().min(3 * MS).max(2 * MS).initial(2 * MS).build(), "min"),
        (b().initial(Duration::from_secs(60)).build(), "initial"),
        (b().initial(Duration::from_micros(1)).build(), "initial"),
        (b().percentile(0.0).build(), "percentile"),
        (b().percentile(1.5).build(), "percentile"),
        (b().percentile(f64::NAN).build(), "percentile"),
        (b().multiplier(f64::NAN).build(), "multiplier"),
        (b().multiplier(0.5).build(), "multiplier"),
        (b().multiplier(f64::INFINITY).build(), "multiplier"),
        (b().min_samples(0).build(), "min_samples"),
        (b().window(Duration::ZERO).build(), "window"),
        (b().max_sample_every(0).build(), "max_sample_every"),
        (
            b().timeout_scale(LevelTable::new([1.0, 0.75, 0.8, 0.33, 0.17]))
                .build(),
            "timeout_scale[high]",
        ),
        (
            b().timeout_scale(LevelTable::new([1.0, 0.75, 0.5, 0.33, 0.0]))
                .build(),
            "timeout_scale[emergency]",
        ),
    ];
    for (result, field) in cases {
        let err = result.unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field));
    }
    assert!(b().multiplier(1.0).percentile(1.0).build().is_ok());
    AdaptiveTimeoutConfig::default().validate().unwrap();
}

proptest! {
    /// Every combination is accepted exactly when each rule holds; refusals name a field.
    #[test]
    fn config_validation(
        min_ms in 0u64..200,
        max_ms in 0u64..200,
        initial_ms in 0u64..200,
        percentile in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -1.0f64..2.0],
        multiplier in prop_oneof![Just(f64::NAN), Just(f64::NEG_INFINITY), -1.0f64..5.0],
        min_samples in 0usize..3,
        window_ms in 0u64..3,
    ) {
        let result = AdaptiveTimeoutConfig::builder()
            .min(Duration::from_millis(min_ms))
            .max(Duration::from_millis(max_ms))
            .initial(Duration::from_millis(initial_ms))
            .percentile(percentile)
            .multiplier(multiplier)
            .min_samples(min_samples)
            .window(Duration::from_millis(window_ms))
            .build();
        let valid = min_ms > 0
            && min_ms <= max_ms
            && (min_ms..=max_ms).contains(&initial_ms)
            && percentile > 0.0 && percentile <= 1.0
            && multiplier.is_finite() && multiplier >= 1.0
            && min_samples >= 1
            && window_ms > 0;
        prop_assert_eq!(result.is_ok(), valid);
        if let Err(err) = result {
            prop_assert!(
                ["min", "initial", "percentile", "multiplier", "min_samples", "window"].contains(&err.field()),
                "{}", err.field()
            );
        }
    }
}

mod telemetry {
    use super::*;
    use metrics::{
        Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use std::sync::Mutex;

    /// Records every value set on a `brownout_timeout_seconds` gauge.
    #[derive(Default, Clone)]
    struct TimeoutGauge {
        values: Arc<Mutex<Vec<(String, f64)>>>,
    }

    struct Entry {
        key: String,
        values: Arc<Mutex<Vec<(String, f64)>>>,
    }

    impl GaugeFn for Entry {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            self.values.lock().unwrap().push((self.key.clone(), value));
        }
    }

    impl Recorder for TimeoutGauge {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            Gauge::from_arc(Arc::new(Entry {
                key: format!("{}{{{}}}", key.name(), labels.join(",")),
                values: self.values.clone(),
            }))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_gauge_follows_the_estimate() {
        let capture = TimeoutGauge::default();
        // The gauge is registered when the layer is built, and set at every new estimate.
        let mut svc =
            metrics::with_local_recorder(&capture, || timed(config(), LoadSignal::default()));
        run_for(&mut svc, 20, Duration::from_millis(2500)).await;
        let values = capture.values.lock().unwrap().clone();
        let key = "brownout_timeout_seconds{layer=timeout}";
        assert!(values.iter().all(|(k, _)| k == key), "{values:?}");
        assert_eq!(values.first().map(|(_, v)| *v), Some(0.1), "initial 100 ms");
        let last = values.last().unwrap().1;
        let estimate = svc.estimate().unwrap().as_secs_f64();
        assert_eq!(last, estimate);
        assert!((0.040..=0.043).contains(&last), "2 × p99 of 20 ms: {last}");
    }
}

/// RELIABILITY #4, a panic in the inner `call` itself: a latency sample's reference to the
/// layer is held by the service while the inner `call` runs; after the panic is caught the
/// service (a sample again) still answers and still times out.
#[tokio::test(start_paused = true)]
async fn rel_04_panic_in_inner_call_leaves_the_service_working() {
    let config = AdaptiveTimeoutConfig::builder()
        .initial(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut svc = AdaptiveTimeout::new(
        service_fn(|ms: u64| {
            if ms == 0 {
                panic!("handler panicked in call");
            }
            async move {
                sleep(Duration::from_millis(ms)).await;
                Ok::<_, Infallible>(ms)
            }
        }),
        config,
    )
    .caller_deadline(NoDeadline);
    assert_eq!(svc.sample_every(), 1, "every request is a sample here");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(0));
    }));
    assert!(caught.is_err());
    assert_eq!(svc.ready().await.unwrap().call(5).await.unwrap(), 5);
    let err = svc.ready().await.unwrap().call(500).await.unwrap_err();
    assert!(err.is::<brownout_core::Rejected>(), "{err}");
}
