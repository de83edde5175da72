//! Behaviour of the circuit breaker under a paused clock: tripping, windows, half-open
//! probes (RELIABILITY #14, #15), fallbacks, per-key breakers, callbacks and the handle.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brownout_breaker::{
    BreakerState, CircuitBreakConfig, CircuitBreakLayer, HttpOutcome, Outcome, Window,
};
use brownout_core::{BoxError, LoadLevel, LoadSignal, PressureSource, RejectReason, Rejected};
use tokio::time::{advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

/// A service whose failures are switched on and off, counting the calls that reach it.
#[derive(Clone)]
struct Flaky {
    fail: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    latency: Arc<Mutex<Duration>>,
}

impl Flaky {
    fn new() -> Flaky {
        Flaky {
            fail: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
            latency: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    fn failing(self, fail: bool) -> Self {
        self.fail.store(fail, Ordering::SeqCst);
        self
    }

    fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<
        u32,
        Response = u32,
        Error = BoxError,
        Future = impl Future<Output = Result<u32, BoxError>> + Send,
    > + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |req: u32| {
            this.calls.fetch_add(1, Ordering::SeqCst);
            let fail = this.fail.load(Ordering::SeqCst);
            let latency = *this.latency.lock().unwrap();
            async move {
                if !latency.is_zero() {
                    sleep(latency).await;
                }
                if fail {
                    Err::<u32, BoxError>("dependency down".into())
                } else {
                    Ok(req)
                }
            }
        })
    }
}

fn rejected(err: &BoxError) -> Rejected {
    *Rejected::find(&**err).unwrap_or_else(|| panic!("not a Rejected: {err}"))
}

async fn call<S>(svc: &mut S, req: u32) -> Result<u32, BoxError>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn config() -> brownout_breaker::CircuitBreakBuilder {
    CircuitBreakConfig::builder()
        .failure_rate(0.5)
        .window(Window::Count(20))
        .minimum_calls(10)
        .open_duration(Duration::from_secs(10))
        .half_open_probes(2)
        .success_threshold(2)
        .probe_timeout(Duration::from_secs(5))
}

/// Trips the breaker behind `svc` by failing `n` calls.
async fn trip<S>(svc: &mut S, flaky: &Flaky, n: u32)
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    flaky.set_failing(true);
    for i in 0..n {
        let _ = call(svc, i).await;
    }
    flaky.set_failing(false);
}

#[tokio::test(start_paused = true)]
async fn opens_within_100_calls_after_failures_begin() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(CircuitBreakConfig::default());
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    for i in 0..50 {
        call(&mut svc, i).await.unwrap();
    }
    flaky.set_failing(true);
    let mut calls_until_open = None;
    for i in 0..100 {
        match call(&mut svc, i).await {
            Err(e) if Rejected::find(&*e).is_some() => {
                calls_until_open = Some(i);
                break;
            }
            _ => {}
        }
    }
    let n = calls_until_open.expect("breaker never opened within 100 calls");
    // 50 successes in a 100-call window: 50 failures make the rate 50 %.
    assert_eq!(n, 50);
    assert_eq!(handle.state(), BreakerState::Open);
    assert_eq!(flaky.calls(), 100);
}

#[tokio::test(start_paused = true)]
async fn time_window_opens_within_one_second_of_failures() {
    let flaky = Flaky::new().failing(true);
    let config = config()
        .window(Window::Time(Duration::from_secs(10)))
        .minimum_calls(5)
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    let start = tokio::time::Instant::now();
    // 10 requests per second, all failing.
    while handle.state() == BreakerState::Closed {
        let _ = call(&mut svc, 0).await;
        sleep(Duration::from_millis(100)).await;
        assert!(
            start.elapsed() <= Duration::from_secs(1),
            "not open after 1 s"
        );
    }
    assert_eq!(flaky.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_under_minimum_calls() {
    let flaky = Flaky::new().failing(true);
    let layer = CircuitBreakLayer::new(config().minimum_calls(10).build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    for i in 0..9 {
        let err = call(&mut svc, i).await.unwrap_err();
        assert!(Rejected::find(&*err).is_none());
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.snapshot().failure_rate, 1.0);
    let _ = call(&mut svc, 9).await;
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips_even_when_calls_succeed() {
    let flaky = Flaky::new();
    *flaky.latency.lock().unwrap() = Duration::from_secs(2);
    let config = config()
        .no_failure_rate()
        .slow_call_rate(0.5)
        .slow_call_duration(Duration::from_secs(1))
        .minimum_calls(4)
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    for i in 0..3 {
        assert_eq!(call(&mut svc, i).await.unwrap(), i);
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.snapshot().slow_calls, 3);
    call(&mut svc, 3).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn fast_calls_do_not_count_as_slow() {
    let flaky = Flaky::new();
    *flaky.latency.lock().unwrap() = Duration::from_millis(999);
    let config = config()
        .slow_call_rate(0.5)
        .slow_call_duration(Duration::from_secs(1))
        .minimum_calls(4)
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    for i in 0..10 {
        call(&mut svc, i).await.unwrap();
    }
    assert_eq!(handle.snapshot().slow_calls, 0);
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn count_window_ages_out_old_failures() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(config().window(Window::Count(10)).build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    // 4 failures, then 10 successes push them out of the 10-call window.
    trip(&mut svc, &flaky, 4).await;
    for i in 0..10 {
        call(&mut svc, i).await.unwrap();
    }
    assert_eq!(handle.snapshot().failures, 0);
    // 4 more failures: 40 % of the window, below 50 %.
    trip(&mut svc, &flaky, 4).await;
    assert_eq!(handle.snapshot().failures, 4);
    assert_eq!(handle.state(), BreakerState::Closed);
    // Without the ageing out it would be 8 failures of 18 calls; one more makes 5/10.
    trip(&mut svc, &flaky, 1).await;
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_ages_out_old_failures() {
    let flaky = Flaky::new();
    let config = config()
        .window(Window::Time(Duration::from_secs(5)))
        .minimum_calls(6)
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 5).await;
    assert_eq!(handle.snapshot().calls, 5);
    sleep(Duration::from_secs(5)).await;
    assert_eq!(handle.snapshot().calls, 0, "the failures aged out");
    trip(&mut svc, &flaky, 5).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    trip(&mut svc, &flaky, 1).await;
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_regardless_of_window() {
    let flaky = Flaky::new();
    let config = config().consecutive_failures(3).build().unwrap();
    let layer = CircuitBreakLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    for i in 0..50 {
        call(&mut svc, i).await.unwrap();
    }
    trip(&mut svc, &flaky, 2).await;
    call(&mut svc, 0).await.unwrap();
    trip(&mut svc, &flaky, 2).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    trip(&mut svc, &flaky, 1).await;
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_rejection_carries_time_until_half_open() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(config().build().unwrap())
        .with_signal(LoadSignal::fixed(LoadLevel::High));
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 10).await;
    sleep(Duration::from_secs(3)).await;
    let err = call(&mut svc, 0).await.unwrap_err();
    let r = rejected(&err);
    assert_eq!(r.reason(), RejectReason::CircuitOpen);
    assert_eq!(r.level(), LoadLevel::High);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(flaky.calls(), 10, "open: the dependency is not called");
}

#[tokio::test(start_paused = true)]
async fn rel_14_exactly_n_half_open_probes_rest_fail_fast() {
    let (mock, mut dep) = mock::pair::<u32, u32>();
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(3)
            .success_threshold(3)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    // Trip with 10 failures.
    for i in 0..10 {
        let fut = svc.ready().await.unwrap().call(i);
        let (_, send) = dep.next_request().await.unwrap();
        send.send_error("down");
        assert!(fut.await.is_err());
    }
    assert_eq!(handle.state(), BreakerState::Open);
    sleep(Duration::from_secs(10)).await;
    let mut probes = Vec::new();
    let mut fast = 0;
    for i in 0..10 {
        let mut fut = tokio_test::task::spawn(svc.ready().await.unwrap().call(i));
        match fut.poll() {
            std::task::Poll::Ready(Err(e)) => {
                assert_eq!(rejected(&e).reason(), RejectReason::CircuitOpen);
                fast += 1;
            }
            std::task::Poll::Pending => probes.push(fut),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((probes.len(), fast), (3, 7));
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    for _ in 0..3 {
        let (req, send) = dep.next_request().await.unwrap();
        send.send_response(req);
    }
    for probe in probes {
        probe.await.unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.snapshot().calls, 0, "closing starts a fresh window");
}

#[tokio::test(start_paused = true)]
async fn rel_15_dropped_probe_gives_its_slot_back() {
    let (mock, mut dep) = mock::pair::<u32, u32>();
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(1)
            .success_threshold(1)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    handle.force_open();
    handle.reset();
    for i in 0..10 {
        let fut = svc.ready().await.unwrap().call(i);
        let (_, send) = dep.next_request().await.unwrap();
        send.send_error("down");
        let _ = fut.await;
    }
    sleep(Duration::from_secs(10)).await;
    let probe = svc.ready().await.unwrap().call(1);
    let second = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(rejected(&second).reason(), RejectReason::CircuitOpen);
    drop(probe);
    let _ = dep.next_request().await.unwrap(); // the dropped probe had reached the mock
    // The slot came back: the next request is a probe, and its success closes.
    let probe = svc.ready().await.unwrap().call(3);
    let (req, send) = dep.next_request().await.unwrap();
    assert_eq!(req, 3);
    send.send_response(req);
    assert_eq!(probe.await.unwrap(), 3);
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn rel_15_hung_probe_times_out_and_reopens() {
    let (mock, mut dep) = mock::pair::<u32, u32>();
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(1)
            .success_threshold(1)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    handle.force_open();
    handle.force_closed();
    handle.reset();
    // Open through failures.
    for i in 0..10 {
        let fut = svc.ready().await.unwrap().call(i);
        let (_, send) = dep.next_request().await.unwrap();
        send.send_error("down");
        let _ = fut.await;
    }
    sleep(Duration::from_secs(10)).await;
    let hung = svc.ready().await.unwrap().call(1);
    let _request_never_answered = dep.next_request().await.unwrap();
    let err = hung.await.unwrap_err(); // the paused clock jumps to the probe timeout
    assert_eq!(rejected(&err).reason(), RejectReason::Timeout);
    assert_eq!(handle.state(), BreakerState::Open);
    assert_eq!(handle.snapshot().trips, 2);
}

#[tokio::test(start_paused = true)]
async fn rel_15_unpolled_probe_is_reclaimed_never_stuck_half_open() {
    let flaky = Flaky::new();
    *flaky.latency.lock().unwrap() = Duration::from_secs(3600);
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(2)
            .success_threshold(1)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    *flaky.latency.lock().unwrap() = Duration::ZERO;
    trip(&mut svc, &flaky, 10).await;
    *flaky.latency.lock().unwrap() = Duration::from_secs(3600);
    sleep(Duration::from_secs(10)).await;
    // Two probes that are never polled again: they hang.
    let stuck_a = svc.ready().await.unwrap().call(1);
    let stuck_b = svc.ready().await.unwrap().call(2);
    let err = call(&mut svc, 3).await.unwrap_err();
    assert_eq!(rejected(&err).retry_after(), Some(Duration::from_secs(5)));
    advance(Duration::from_secs(5)).await;
    // Past the probe timeout the round is stuck: it counts as a failure and reopens.
    let err = call(&mut svc, 4).await.unwrap_err();
    assert_eq!(rejected(&err).reason(), RejectReason::CircuitOpen);
    assert_eq!(handle.state(), BreakerState::Open);
    // After the (grown) open duration, a new round of probes is let through and closes.
    *flaky.latency.lock().unwrap() = Duration::ZERO;
    advance(Duration::from_secs(10)).await;
    assert_eq!(call(&mut svc, 5).await.unwrap(), 5);
    assert_eq!(handle.state(), BreakerState::Closed);
    // The stale probes finishing late change nothing.
    drop((stuck_a, stuck_b));
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 10).await;
    sleep(Duration::from_secs(10)).await;
    call(&mut svc, 1).await.unwrap();
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    flaky.set_failing(true);
    assert!(call(&mut svc, 2).await.is_err());
    assert_eq!(handle.state(), BreakerState::Open);
    let err = call(&mut svc, 3).await.unwrap_err();
    assert_eq!(rejected(&err).reason(), RejectReason::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn success_threshold_closes() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(3)
            .success_threshold(2)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 10).await;
    sleep(Duration::from_secs(10)).await;
    call(&mut svc, 1).await.unwrap();
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    call(&mut svc, 2).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.snapshot().trips, 0);
}

#[tokio::test(start_paused = true)]
async fn exponential_open_duration_growth_is_capped() {
    let flaky = Flaky::new();
    let config = config()
        .open_duration(Duration::from_secs(1))
        .open_growth(2.0, Duration::from_secs(5))
        .half_open_probes(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 10).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let err = call(&mut svc, 0).await.unwrap_err();
        let after = rejected(&err).retry_after().unwrap();
        seen.push(after.as_secs());
        sleep(after).await;
        flaky.set_failing(true);
        let _ = call(&mut svc, 0).await; // the probe fails: reopen, longer
        flaky.set_failing(false);
    }
    assert_eq!(seen, [1, 2, 4, 5, 5]);
    // A successful recovery resets the growth.
    let after = handle.snapshot().retry_after.unwrap();
    sleep(after).await;
    call(&mut svc, 0).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    trip(&mut svc, &flaky, 10).await;
    assert_eq!(handle.snapshot().retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn per_key_breakers_are_isolated() {
    let (mock, mut dep) = mock::pair::<(&'static str, u32), u32>();
    let layer = CircuitBreakLayer::new(config().build().unwrap())
        .with_key(|req: &(&'static str, u32)| req.0);
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    let answer = tokio::spawn(async move {
        while let Some(((host, n), send)) = dep.next_request().await {
            if host == "down.example" {
                send.send_error("down");
            } else {
                send.send_response(n);
            }
        }
    });
    for i in 0..10 {
        assert!(
            svc.ready()
                .await
                .unwrap()
                .call(("down.example", i))
                .await
                .is_err()
        );
        assert_eq!(
            svc.ready()
                .await
                .unwrap()
                .call(("up.example", i))
                .await
                .unwrap(),
            i
        );
    }
    assert_eq!(handle.state_of(&"down.example"), Some(BreakerState::Open));
    assert_eq!(handle.state_of(&"up.example"), Some(BreakerState::Closed));
    assert_eq!(handle.state_of(&"other"), None);
    assert_eq!(handle.state(), BreakerState::Open, "worst state over keys");
    assert_eq!(handle.open_count(), 1);
    assert_eq!(handle.pressure_source().sample(), Some(1.0));
    assert_eq!(handle.pressure_fraction().sample(), Some(0.5));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("down.example", 0))
        .await
        .unwrap_err();
    assert_eq!(rejected(&err).reason(), RejectReason::CircuitOpen);
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call(("up.example", 7))
            .await
            .unwrap(),
        7
    );
    let mut keys = handle.keys();
    keys.sort();
    assert_eq!(keys, ["down.example", "up.example"]);
    assert!(handle.reset_key(&"down.example"));
    assert_eq!(handle.state_of(&"down.example"), Some(BreakerState::Closed));
    drop(svc);
    answer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn key_map_is_bounded_and_forgets_idle_keys() {
    let flaky = Flaky::new();
    let config = config()
        .max_keys(3)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config).with_key(|req: &u32| *req % 100);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    // Key 1 opens; keys 2 and 3 stay closed.
    trip(&mut svc, &flaky, 10).await; // keys 0..9: 10 keys, at most 3 kept
    assert!(handle.len() <= 3, "len {}", handle.len());
    flaky.set_failing(true);
    for _ in 0..10 {
        let _ = call(&mut svc, 1).await;
    }
    flaky.set_failing(false);
    assert_eq!(handle.state_of(&1), Some(BreakerState::Open));
    sleep(Duration::from_secs(1)).await;
    call(&mut svc, 2).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    call(&mut svc, 3).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    // A fourth key evicts the least recently used closed breaker (2), not the open one.
    call(&mut svc, 4).await.unwrap();
    assert_eq!(handle.len(), 3);
    assert_eq!(handle.state_of(&2), None);
    assert_eq!(handle.state_of(&1), Some(BreakerState::Open));
    assert_eq!(handle.open_count(), 1);
    // Idle keys are forgotten.
    sleep(Duration::from_secs(61)).await;
    assert_eq!(handle.purge_idle(), 3);
    assert!(handle.is_empty());
    assert_eq!(handle.open_count(), 0);
    assert_eq!(handle.pressure_fraction().sample(), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn static_fallback_answers_while_open() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(config().build().unwrap()).with_static_fallback(
        |req: u32, r: &Rejected| {
            assert_eq!(r.reason(), RejectReason::CircuitOpen);
            req + 1000
        },
    );
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 10).await;
    assert_eq!(call(&mut svc, 5).await.unwrap(), 1005);
    assert_eq!(flaky.calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn last_good_fallback_replays_the_last_success_per_key() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(config().build().unwrap())
        .with_key(|req: &u32| *req >= 100)
        .with_last_good::<u32>();
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 7);
    assert_eq!(call(&mut svc, 150).await.unwrap(), 150);
    flaky.set_failing(true);
    for _ in 0..10 {
        let _ = call(&mut svc, 1).await;
        let _ = call(&mut svc, 101).await;
    }
    assert_eq!(handle.open_count(), 2);
    assert_eq!(call(&mut svc, 3).await.unwrap(), 7);
    assert_eq!(call(&mut svc, 199).await.unwrap(), 150);
}

#[tokio::test(start_paused = true)]
async fn last_good_without_a_success_rejects() {
    let flaky = Flaky::new().failing(true);
    let layer = CircuitBreakLayer::new(config().build().unwrap()).with_last_good::<u32>();
    let mut svc = layer.layer(flaky.service());
    for i in 0..10 {
        let _ = call(&mut svc, i).await;
    }
    let err = call(&mut svc, 0).await.unwrap_err();
    assert_eq!(rejected(&err).reason(), RejectReason::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn failover_to_secondary_while_primary_is_open() {
    let primary = Flaky::new();
    let secondary = Flaky::new();
    let layer =
        CircuitBreakLayer::new(config().build().unwrap()).with_failover(secondary.service());
    let handle = layer.handle();
    let mut svc = layer.layer(primary.service());
    trip(&mut svc, &primary, 10).await;
    assert_eq!(secondary.calls(), 0);
    for i in 0..5 {
        assert_eq!(call(&mut svc, i).await.unwrap(), i);
    }
    assert_eq!((primary.calls(), secondary.calls()), (10, 5));
    // The primary is skipped for the whole open duration, then probed again.
    sleep(Duration::from_secs(9)).await;
    call(&mut svc, 0).await.unwrap();
    assert_eq!(primary.calls(), 10);
    sleep(Duration::from_secs(1)).await;
    call(&mut svc, 0).await.unwrap();
    call(&mut svc, 0).await.unwrap();
    assert_eq!((primary.calls(), secondary.calls()), (12, 6));
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn callbacks_fire_once_per_transition() {
    let flaky = Flaky::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(1)
            .success_threshold(1)
            .build()
            .unwrap(),
    )
    .with_name("upstream")
    .on_state_change(move |c| {
        assert_eq!(c.name, "upstream");
        log.lock().unwrap().push((c.from, c.to, c.open_for));
    });
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 30).await; // 20 extra failures hit the open breaker
    sleep(Duration::from_secs(10)).await;
    for _ in 0..5 {
        call(&mut svc, 0).await.unwrap();
    }
    use BreakerState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Closed, Open, Some(Duration::from_secs(10))),
            (Open, HalfOpen, None),
            (HalfOpen, Closed, None),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn clones_and_layered_services_share_state() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(config().build().unwrap());
    let mut a = layer.layer(flaky.service());
    let mut b = a.clone();
    let mut c = layer.clone().layer(flaky.service());
    trip(&mut a, &flaky, 5).await;
    trip(&mut b, &flaky, 5).await;
    for svc in [&mut a, &mut b, &mut c] {
        let err = call(svc, 0).await.unwrap_err();
        assert_eq!(rejected(&err).reason(), RejectReason::CircuitOpen);
    }
    assert_eq!(a.handle().snapshot().calls, 10);
    assert_eq!(c.handle().state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn http_classifier_trips_on_5xx_not_4xx() {
    let status = Arc::new(AtomicUsize::new(404));
    let s = status.clone();
    let inner = service_fn(move |_: http::Request<()>| {
        let code = s.load(Ordering::SeqCst) as u16;
        async move { Ok::<_, BoxError>(http::Response::builder().status(code).body(()).unwrap()) }
    });
    let layer = CircuitBreakLayer::new(config().build().unwrap()).with_classifier(HttpOutcome);
    let handle = layer.handle();
    let mut svc = layer.layer(inner);
    for _ in 0..20 {
        svc.ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    status.store(503, Ordering::SeqCst);
    for _ in 0..10 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await;
    }
    assert_eq!(handle.state(), BreakerState::Open);
}

/// What the dependency answers in `http_refusal_answers_*`.
const ANSWER_OK: usize = 0;
const ANSWER_REFUSAL: usize = 1;
const ANSWER_OWN_503: usize = 2;

async fn get<S>(svc: &mut S) -> Result<http::Response<()>, BoxError>
where
    S: Service<http::Request<()>, Response = http::Response<()>, Error = BoxError>,
{
    svc.ready().await?.call(http::Request::new(())).await
}

#[tokio::test(start_paused = true)]
async fn http_refusal_answers_are_not_failures_and_give_a_probe_slot_back() {
    // A dependency running brownout stamps its level on every response; only its refusal
    // answers carry `x-reject-reason`.
    let answer = Arc::new(AtomicUsize::new(ANSWER_REFUSAL));
    let reached = Arc::new(AtomicUsize::new(0));
    let (a, r) = (answer.clone(), reached.clone());
    let inner = service_fn(move |_: http::Request<()>| {
        let answer = a.load(Ordering::SeqCst);
        r.fetch_add(1, Ordering::SeqCst);
        async move {
            let response = http::Response::builder().header("x-load-level", "high");
            let response = match answer {
                ANSWER_OK => response.status(200),
                ANSWER_REFUSAL => response.status(503).header("x-reject-reason", "shed"),
                _ => response.status(503),
            };
            Ok::<_, BoxError>(response.body(()).unwrap())
        }
    });
    let layer = CircuitBreakLayer::new(config().build().unwrap()).with_classifier(HttpOutcome);
    let handle = layer.handle();
    let mut svc = layer.layer(inner);
    for _ in 0..50 {
        assert_eq!(get(&mut svc).await.unwrap().status(), 503);
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.snapshot().calls, 0);
    // Its own 503s (the level header alone) are failures.
    answer.store(ANSWER_OWN_503, Ordering::SeqCst);
    for _ in 0..10 {
        let _ = get(&mut svc).await;
    }
    assert_eq!(handle.state(), BreakerState::Open);
    // Half-open with 2 probe slots: 5 probes answered by refusals in a row all reach the
    // dependency, each giving its slot back.
    sleep(Duration::from_secs(10)).await;
    answer.store(ANSWER_REFUSAL, Ordering::SeqCst);
    let before = reached.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(get(&mut svc).await.unwrap().status(), 503);
    }
    assert_eq!(reached.load(Ordering::SeqCst), before + 5);
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    answer.store(ANSWER_OK, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(get(&mut svc).await.unwrap().status(), 200);
    }
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn closure_classifier_and_rejected_outcomes_are_not_recorded() {
    let flaky = Flaky::new();
    // Errors classified `Rejected` are not recorded: the breaker never trips.
    let layer = CircuitBreakLayer::new(config().build().unwrap()).with_classifier(
        |r: &Result<u32, BoxError>| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Rejected,
        },
    );
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 50).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.snapshot().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_takes_no_probe() {
    let (mock, mut dep) = mock::pair::<u32, u32>();
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(1)
            .success_threshold(1)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    handle.force_open();
    handle.reset();
    for i in 0..10 {
        let fut = svc.ready().await.unwrap().call(i);
        let (_, send) = dep.next_request().await.unwrap();
        send.send_error("down");
        let _ = fut.await;
    }
    sleep(Duration::from_secs(10)).await;
    // Many clones become ready and never call (idle keep-alive connections).
    let mut idle: Vec<_> = (0..10).map(|_| svc.clone()).collect();
    for s in &mut idle {
        let _ = s.ready().await.unwrap();
    }
    let fut = svc.ready().await.unwrap().call(42);
    let (req, send) = dep.next_request().await.unwrap();
    assert_eq!(req, 42);
    send.send_response(req);
    assert_eq!(fut.await.unwrap(), 42);
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn late_outcomes_from_before_a_trip_are_ignored() {
    let (mock, mut dep) = mock::pair::<u32, u32>();
    let layer = CircuitBreakLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    let slow = svc.ready().await.unwrap().call(999);
    let (_, slow_send) = dep.next_request().await.unwrap();
    for i in 0..10 {
        let fut = svc.ready().await.unwrap().call(i);
        let (_, send) = dep.next_request().await.unwrap();
        send.send_error("down");
        let _ = fut.await;
    }
    assert_eq!(handle.state(), BreakerState::Open);
    handle.reset();
    // The call admitted before the trip fails now: it belongs to a window that is gone.
    slow_send.send_error("late");
    assert!(slow.await.is_err());
    assert_eq!(handle.snapshot().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn operator_overrides() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    handle.force_open();
    let err = call(&mut svc, 0).await.unwrap_err();
    assert_eq!(rejected(&err).retry_after(), None);
    assert_eq!(handle.pressure_source().sample(), Some(1.0));
    handle.force_closed();
    trip(&mut svc, &flaky, 50).await;
    assert_eq!(handle.state(), BreakerState::ForcedClosed);
    assert_eq!(flaky.calls(), 50);
    handle.reset();
    assert_eq!(handle.state(), BreakerState::Closed);
    trip(&mut svc, &flaky, 10).await;
    assert_eq!(handle.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn inner_brownout_refusals_do_not_trip() {
    let inner = service_fn(|_: u32| async {
        Err::<u32, BoxError>(Rejected::new(RejectReason::Shed, LoadLevel::High).into())
    });
    let layer = CircuitBreakLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(inner);
    for i in 0..50 {
        let err = call(&mut svc, i).await.unwrap_err();
        assert_eq!(rejected(&err).reason(), RejectReason::Shed);
    }
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[test]
fn rel_14_racing_clones_let_exactly_n_probes_through() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let reached = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (r, g) = (reached.clone(), gate.clone());
        let inner = service_fn(move |fail: bool| {
            let (r, g) = (r.clone(), g.clone());
            async move {
                if fail {
                    return Err::<(), BoxError>("down".into());
                }
                r.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
                Ok(())
            }
        });
        let config = config()
            .open_duration(Duration::from_millis(20))
            .half_open_probes(3)
            .success_threshold(3)
            .build()
            .unwrap();
        let layer = CircuitBreakLayer::new(config);
        let handle = layer.handle();
        let svc = layer.layer(inner);
        for _ in 0..10 {
            let _ = svc.clone().oneshot(true).await;
        }
        assert_eq!(handle.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(svc.oneshot(false))
            })
            .collect();
        // Every task is decided (3 probes waiting, 997 refused) before the probes end; a
        // task decided after the breaker closed would be a normal call.
        while reached.load(Ordering::SeqCst) < 3
            || tasks.iter().filter(|t| t.is_finished()).count() < 997
        {
            tokio::task::yield_now().await;
        }
        let mut refused = 0;
        let mut pending = Vec::new();
        for t in tasks {
            if t.is_finished() {
                let r = t.await.unwrap();
                assert_eq!(
                    rejected(&r.unwrap_err()).reason(),
                    RejectReason::CircuitOpen
                );
                refused += 1;
            } else {
                pending.push(t);
            }
        }
        gate.add_permits(3);
        let mut ok = 0;
        for t in pending {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => {
                    assert_eq!(rejected(&e).reason(), RejectReason::CircuitOpen);
                    refused += 1;
                }
            }
        }
        assert_eq!(reached.load(Ordering::SeqCst), 3);
        assert_eq!((ok, refused), (3, 997));
        assert_eq!(handle.state(), BreakerState::Closed);
    });
}

/// Records the `brownout_breaker_state` gauges of the breakers built while it is installed.
#[derive(Default)]
struct GaugeRecorder {
    gauges: Mutex<Vec<(String, Arc<TestGauge>)>>,
}

#[derive(Default)]
struct TestGauge(Mutex<f64>);

impl metrics::GaugeFn for TestGauge {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
    }
}

impl metrics::Recorder for GaugeRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let gauge = Arc::new(TestGauge::default());
        self.gauges.lock().unwrap().push((
            format!("{}{{{}}}", key.name(), labels.join(",")),
            gauge.clone(),
        ));
        metrics::Gauge::from_arc(gauge)
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn state_gauge_follows_transitions() {
    let recorder = GaugeRecorder::default();
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(1)
            .success_threshold(1)
            .build()
            .unwrap(),
    )
    .with_name("payments");
    let handle = metrics::with_local_recorder(&recorder, || layer.handle());
    let gauge = {
        let gauges = recorder.gauges.lock().unwrap();
        assert_eq!(gauges.len(), 1);
        assert_eq!(gauges[0].0, "brownout_breaker_state{breaker=payments}");
        gauges[0].1.clone()
    };
    let value = || *gauge.0.lock().unwrap();
    let mut svc = layer.layer(flaky.service());
    assert_eq!(value(), 0.0);
    trip(&mut svc, &flaky, 10).await;
    assert_eq!(value(), 2.0);
    sleep(Duration::from_secs(10)).await;
    let probe = svc.ready().await.unwrap().call(1);
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    assert_eq!(value(), 1.0);
    probe.await.unwrap();
    assert_eq!(value(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn keyed_callbacks_name_the_key() {
    let flaky = Flaky::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = CircuitBreakLayer::new(config().build().unwrap())
        .with_key(|req: &u32| format!("host-{}", req % 2))
        .on_state_change(move |c| log.lock().unwrap().push((format!("{:?}", c.key), c.to)));
    let mut svc = layer.layer(flaky.service());
    flaky.set_failing(true);
    for _ in 0..10 {
        let _ = call(&mut svc, 1).await;
        let _ = call(&mut svc, 2).await.unwrap_err();
    }
    // Both hosts fail: each breaker opens once, and the callback names its key.
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("\"host-0\"".to_owned(), BreakerState::Open),
            ("\"host-1\"".to_owned(), BreakerState::Open),
        ]
    );
}

#[test]
fn concurrent_outcomes_keep_the_window_consistent() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let inner = service_fn(|n: u32| async move {
            tokio::task::yield_now().await;
            if n.is_multiple_of(10) {
                Err::<u32, BoxError>("one in ten".into())
            } else {
                Ok(n)
            }
        });
        let config = config()
            .window(Window::Count(50))
            .minimum_calls(10)
            .build()
            .unwrap();
        let layer = CircuitBreakLayer::new(config);
        let handle = layer.handle();
        let svc = layer.layer(inner);
        let tasks: Vec<_> = (0..4000u32)
            .map(|n| tokio::spawn(svc.clone().oneshot(n)))
            .collect();
        for t in tasks {
            let _ = t.await.unwrap();
        }
        // 10 % failures never reach the 50 % threshold; the ring holds exactly its size.
        let snap = handle.snapshot();
        assert_eq!(handle.state(), BreakerState::Closed);
        assert_eq!(snap.calls, 50);
        assert!(snap.failures <= 50 && snap.failure_rate < 0.5, "{snap:?}");
    });
}

#[tokio::test(start_paused = true)]
async fn rel_04_panicking_probe_gives_its_slot_back() {
    let panic_next = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (p, c) = (panic_next.clone(), calls.clone());
    let inner = service_fn(move |fail: bool| {
        c.fetch_add(1, Ordering::SeqCst);
        let panic = p.swap(false, Ordering::SeqCst);
        async move {
            assert!(!panic, "handler panicked");
            if fail {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        }
    });
    let layer = CircuitBreakLayer::new(
        config()
            .half_open_probes(1)
            .success_threshold(1)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let svc = layer.layer(inner);
    for _ in 0..10 {
        let _ = svc.clone().oneshot(true).await;
    }
    sleep(Duration::from_secs(10)).await;
    panic_next.store(true, Ordering::SeqCst);
    let joined = tokio::spawn(svc.clone().oneshot(false)).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    // The panicked probe's slot is free again: the next request is let through and closes.
    svc.clone().oneshot(false).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_larger_than_the_ring_is_capped() {
    let flaky = Flaky::new();
    let config = config()
        .window(Window::Count(5))
        .minimum_calls(50)
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    trip(&mut svc, &flaky, 4).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    trip(&mut svc, &flaky, 1).await;
    assert_eq!(handle.state(), BreakerState::Open);
}

/// Successes recorded into a full window of successes skip the window lock; the window must
/// still count exactly as a ring of the last N calls: a failure ages out after exactly N
/// more calls, and the trip happens on the same call as with every success recorded.
#[tokio::test(start_paused = true)]
async fn lock_free_success_path_keeps_the_count_window_exact() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(
        config()
            .window(Window::Count(4))
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    // Far more successes than the window holds: most of them take the lock-free path.
    for i in 0..50 {
        call(&mut svc, i).await.unwrap();
    }
    let snap = handle.snapshot();
    assert_eq!((snap.calls, snap.failures), (4, 0));
    // One failure stays in the window for exactly 4 calls (itself and 3 successes).
    trip(&mut svc, &flaky, 1).await;
    for expected in [1, 1, 1] {
        call(&mut svc, 0).await.unwrap();
        assert_eq!(handle.snapshot().failures, expected);
    }
    call(&mut svc, 0).await.unwrap();
    assert_eq!(handle.snapshot().failures, 0);
    assert_eq!(handle.snapshot().calls, 4);
    // Back on the lock-free path; then F, S, F: the last 4 calls hold 2 failures = 50 %.
    for i in 0..10 {
        call(&mut svc, i).await.unwrap();
    }
    trip(&mut svc, &flaky, 1).await;
    call(&mut svc, 0).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    trip(&mut svc, &flaky, 1).await;
    assert_eq!(handle.state(), BreakerState::Open);
    let snap = handle.snapshot();
    assert_eq!(snap.state, BreakerState::Open);
}

/// After a reset the window is empty again: successes are recorded (not skipped) until the
/// window is full, so `minimum_calls` still counts them.
#[tokio::test(start_paused = true)]
async fn reset_empties_the_window_and_successes_count_again() {
    let flaky = Flaky::new();
    let layer = CircuitBreakLayer::new(
        config()
            .window(Window::Count(4))
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(flaky.service());
    for i in 0..10 {
        call(&mut svc, i).await.unwrap();
    }
    assert_eq!(handle.snapshot().calls, 4);
    handle.reset();
    assert_eq!(handle.snapshot().calls, 0);
    for expected in 1..=4u64 {
        call(&mut svc, 0).await.unwrap();
        assert_eq!(handle.snapshot().calls, expected);
    }
    // 2 failures in the last 4 calls trip it.
    trip(&mut svc, &flaky, 2).await;
    assert_eq!(handle.state(), BreakerState::Open);
}
