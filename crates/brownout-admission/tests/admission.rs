//! Integration tests of the admission layer: queue order, timeouts, limits, cancellation.

mod support;

use std::time::Duration;

use brownout_admission::{Limit, Promotion, QueueTimeout, RateLimit};
use brownout_core::{Deadline, LoadLevel, LoadSignal, Priority, QueueProbe, RejectReason};
use support::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

type Svc = brownout_admission::PriorityAdmission<Backend, Classifier, DeadlineFn>;

async fn submit(svc: &mut Svc, job: Job) -> JoinHandle<Result<u32, brownout_admission::BoxError>> {
    let fut = svc.ready().await.unwrap().call(job);
    let handle = tokio::spawn(fut);
    settle().await;
    handle
}

fn fixed_layer(limit: usize) -> support::BuilderAlias {
    builder()
        .limit(Limit::fixed(limit))
        .queue_timeout(QueueTimeout::fixed(LONG))
        .starvation_bound(LONG)
}

#[tokio::test(start_paused = true)]
async fn serves_highest_class_first_and_fifo_within_class() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let first = submit(&mut svc, job(0, Priority::Low)).await;
    let mut waiting = Vec::new();
    for (id, class) in [
        (1, Priority::Low),
        (2, Priority::High),
        (3, Priority::Background),
        (4, Priority::High),
        (5, Priority::Critical),
        (6, Priority::Low),
    ] {
        waiting.push(submit(&mut svc, job(id, class)).await);
    }
    assert_eq!(layer.handle().queued(), 6);
    assert_eq!(layer.handle().queued_of(Priority::High), 2);
    assert!(backend.complete(0));
    first.await.unwrap().unwrap();
    for expected in [5, 2, 4, 1, 6, 3] {
        settle().await;
        assert_eq!(*backend.served().last().unwrap(), expected);
        assert!(backend.complete(expected));
    }
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(backend.served(), vec![0, 5, 2, 4, 1, 6, 3]);
    assert_eq!(layer.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_08_lower_class_served_after_starvation_bound() {
    let backend = Backend::default();
    let layer = fixed_layer(1)
        .starvation_bound(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let low = submit(&mut svc, job(1, Priority::Background)).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let _high = submit(&mut svc, job(2, Priority::High)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Background has waited 60 ms ≥ 50 ms; High only 20 ms: Background goes first.
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0, 1]);
    assert!(backend.complete(1));
    low.await.unwrap().unwrap();
    settle().await;
    assert_eq!(backend.served(), vec![0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn rel_08_full_queue_evicts_newest_of_lowest_class() {
    let backend = Backend::default();
    let layer = fixed_layer(1).queue_capacity(3).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::Medium)).await;
    let low_old = submit(&mut svc, job(1, Priority::Low)).await;
    let low_new = submit(&mut svc, job(2, Priority::Low)).await;
    let medium = submit(&mut svc, job(3, Priority::Medium)).await;
    // Full: a High newcomer evicts the newest Low.
    let high = submit(&mut svc, job(4, Priority::High)).await;
    assert!(low_new.is_finished());
    let err = low_new.await.unwrap().unwrap_err();
    assert_eq!(reason(&err), RejectReason::QueueFull);
    assert_eq!(rejected(&err).priority(), Some(Priority::Low));
    // Full again: a Background newcomer has nobody below it and is refused itself.
    let bg = submit(&mut svc, job(5, Priority::Background)).await;
    assert_eq!(
        reason(&bg.await.unwrap().unwrap_err()),
        RejectReason::QueueFull
    );
    // A Low newcomer: nobody strictly below Low is queued → refused.
    let low = submit(&mut svc, job(6, Priority::Low)).await;
    assert_eq!(
        reason(&low.await.unwrap().unwrap_err()),
        RejectReason::QueueFull
    );
    let stats = layer.handle().stats();
    assert_eq!(stats.evicted, 1);
    assert_eq!(stats.rejected_queue_full, 3);
    assert_eq!(stats.queued(), 3);
    assert!(!low_old.is_finished() && !medium.is_finished() && !high.is_finished());
}

#[tokio::test(start_paused = true)]
async fn queue_capacity_scales_with_level() {
    let backend = Backend::default();
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let layer = fixed_layer(1)
        .queue_capacity(10)
        .signal(signal)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    publisher.publish(LoadLevel::High); // 60 % → 6 places
    let _running = submit(&mut svc, job(0, Priority::Medium)).await;
    let mut queued = Vec::new();
    for id in 1..=6 {
        queued.push(submit(&mut svc, job(id, Priority::Medium)).await);
    }
    assert_eq!(handle.stats().queue_capacity, 6);
    let refused = submit(&mut svc, job(7, Priority::Medium)).await;
    let err = refused.await.unwrap().unwrap_err();
    assert_eq!(reason(&err), RejectReason::QueueFull);
    assert_eq!(rejected(&err).level(), LoadLevel::High);
    assert_eq!(handle.queued(), 6);
}

#[tokio::test(start_paused = true)]
async fn fixed_queue_timeout_rejects_after_max_wait() {
    let backend = Backend::default();
    let layer = fixed_layer(1)
        .queue_timeout(QueueTimeout::fixed(Duration::from_millis(30)))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::Medium)).await;
    let start = Instant::now();
    let waiting = submit(&mut svc, job(1, Priority::Critical)).await;
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(reason(&err), RejectReason::QueueTimeout);
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(layer.handle().queued(), 0);
    assert_eq!(backend.served(), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn codel_allows_interval_then_target_once_the_queue_did_not_empty_for_an_interval() {
    let backend = Backend::default();
    let layer = builder()
        .limit(Limit::fixed(1))
        .queue_timeout(QueueTimeout::codel(
            Duration::from_millis(5),
            Duration::from_millis(100),
        ))
        .starvation_bound(LONG)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::Medium)).await;
    let start = Instant::now();
    let at = |ms| start + Duration::from_millis(ms);
    // The queue empties now and then: a waiter may wait the whole interval (100 ms).
    let w1 = submit(&mut svc, job(1, Priority::Medium)).await;
    tokio::time::sleep_until(at(50)).await;
    let w2 = submit(&mut svc, job(2, Priority::Medium)).await;
    assert_eq!(
        reason(&w1.await.unwrap().unwrap_err()),
        RejectReason::QueueTimeout
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert!(!handle.standing_queue());
    // From 100 ms on, someone always waits: w2 until 150 ms, w3 from 120 ms, w4 from 180 ms.
    tokio::time::sleep_until(at(120)).await;
    let w3 = submit(&mut svc, job(3, Priority::Medium)).await;
    assert_eq!(
        reason(&w2.await.unwrap().unwrap_err()),
        RejectReason::QueueTimeout
    );
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    tokio::time::sleep_until(at(180)).await;
    let w4 = submit(&mut svc, job(4, Priority::Medium)).await;
    assert_eq!(
        reason(&w3.await.unwrap().unwrap_err()),
        RejectReason::QueueTimeout
    );
    // The queue did not empty during [100 ms, 200 ms): it stands, and w4, which has waited
    // 40 ms, is over the 5 ms target: refused with w3 rather than after 100 ms.
    assert_eq!(
        reason(&w4.await.unwrap().unwrap_err()),
        RejectReason::QueueTimeout
    );
    assert!(handle.standing_queue());
    assert_eq!(start.elapsed(), Duration::from_millis(220));
    // The queue emptied again: the next interval does not stand.
    tokio::time::sleep_until(at(420)).await;
    let w5 = submit(&mut svc, job(5, Priority::Medium)).await;
    let before = Instant::now();
    assert_eq!(
        reason(&w5.await.unwrap().unwrap_err()),
        RejectReason::QueueTimeout
    );
    assert_eq!(before.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn deadline_passed_while_queued_is_rejected_not_served() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::Medium)).await;
    let start = Instant::now();
    let mut j = job(1, Priority::Critical);
    j.deadline = Some(Deadline::after(Duration::from_millis(25)));
    let w = submit(&mut svc, j).await;
    let err = w.await.unwrap().unwrap_err();
    assert_eq!(reason(&err), RejectReason::QueueTimeout);
    assert_eq!(start.elapsed(), Duration::from_millis(25));
    // Freed after the deadline: nothing late is served.
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0]);
}

#[tokio::test(start_paused = true)]
async fn rel_17_deadline_already_passed_is_rejected_on_arrival() {
    let backend = Backend::default();
    let layer = fixed_layer(4).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let mut j = job(1, Priority::Critical);
    j.deadline = Some(Deadline::at(Instant::now()));
    let err = svc.ready().await.unwrap().call(j).await.unwrap_err();
    assert_eq!(reason(&err), RejectReason::QueueTimeout);
    assert!(backend.served().is_empty());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_refuses_with_retry_after_and_scales_per_level() {
    let backend = Backend::default();
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let layer = fixed_layer(100)
        .rate_limit(RateLimit::per_second(10.0).burst(5))
        .signal(signal)
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    for id in 0..5 {
        submit(&mut svc, job(id, Priority::High)).await;
    }
    let err = submit(&mut svc, job(5, Priority::High))
        .await
        .await
        .unwrap()
        .unwrap_err();
    let r = rejected(&err);
    assert_eq!(r.reason(), RejectReason::RateLimited);
    assert_eq!(r.retry_after(), Some(Duration::from_millis(100)));
    // At Emergency the rate is 20 %: 2 per second, one request costs 500 ms.
    publisher.publish(LoadLevel::Emergency);
    tokio::time::sleep(Duration::from_secs(2)).await;
    submit(&mut svc, job(6, Priority::High)).await;
    let err = submit(&mut svc, job(7, Priority::High))
        .await
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        rejected(&err).retry_after(),
        Some(Duration::from_millis(500))
    );
    assert_eq!(layer.handle().stats().rejected_rate_limited, 2);
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_limit_is_per_key() {
    let backend = Backend::default();
    let layer = fixed_layer(100)
        .keyed_rate_limit(|j: &Job| j.tenant, RateLimit::per_second(1.0).burst(1))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let ok_a = svc.ready().await.unwrap().call(tenant_job(0, Some("a")));
    let limited_a = svc.ready().await.unwrap().call(tenant_job(1, Some("a")));
    let ok_b = svc.ready().await.unwrap().call(tenant_job(2, Some("b")));
    let unkeyed = svc.ready().await.unwrap().call(tenant_job(3, None));
    let limited = limited_a.await.unwrap_err();
    assert_eq!(reason(&limited), RejectReason::RateLimited);
    assert_eq!(
        rejected(&limited).retry_after(),
        Some(Duration::from_secs(1))
    );
    let (a, b, u) = (
        tokio::spawn(ok_a),
        tokio::spawn(ok_b),
        tokio::spawn(unkeyed),
    );
    settle().await;
    assert_eq!(backend.served(), vec![0, 2, 3]);
    for id in [0, 2, 3] {
        backend.complete(id);
    }
    for t in [a, b, u] {
        t.await.unwrap().unwrap();
    }
}

/// A tenant's flood refused by its own key's limit spends none of the global rate: the
/// other tenants still get the global tokens.
#[tokio::test(start_paused = true)]
async fn requests_a_key_refuses_do_not_spend_the_global_rate() {
    let backend = Backend::default();
    let layer = fixed_layer(100)
        .rate_limit(RateLimit::per_second(1.0).burst(4))
        .keyed_rate_limit(|j: &Job| j.tenant, RateLimit::per_second(1.0).burst(2))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let mut admitted = Vec::new();
    let mut refused = 0;
    for id in 0..20 {
        let fut = svc
            .ready()
            .await
            .unwrap()
            .call(tenant_job(id, Some("flood")));
        let fut = tokio::spawn(fut);
        settle().await;
        if fut.is_finished() {
            let err = fut.await.unwrap().unwrap_err();
            assert_eq!(reason(&err), RejectReason::RateLimited);
            refused += 1;
        } else {
            admitted.push(fut);
        }
    }
    assert_eq!((admitted.len(), refused), (2, 18));
    // Two global tokens left for the quiet tenant.
    let mut quiet = Vec::new();
    for id in 20..22 {
        let fut = svc
            .ready()
            .await
            .unwrap()
            .call(tenant_job(id, Some("quiet")));
        quiet.push(tokio::spawn(fut));
    }
    settle().await;
    assert_eq!(backend.served(), vec![0, 1, 20, 21]);
    for id in [0, 1, 20, 21] {
        backend.complete(id);
    }
    for t in admitted.into_iter().chain(quiet) {
        t.await.unwrap().unwrap();
    }
    assert_eq!(layer.handle().stats().rejected_rate_limited, 18);
}

#[tokio::test(start_paused = true)]
async fn reserved_share_keeps_permits_for_its_class() {
    let backend = Backend::default();
    let layer = fixed_layer(10)
        .reserve(Priority::Critical, 0.2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let mut tasks = Vec::new();
    for id in 0..12 {
        tasks.push(submit(&mut svc, job(id, Priority::Low)).await);
    }
    assert_eq!(
        handle.in_flight_of(Priority::Low),
        8,
        "two permits held for Critical"
    );
    assert_eq!(handle.queued_of(Priority::Low), 4);
    for id in 100..102 {
        tasks.push(submit(&mut svc, job(id, Priority::Critical)).await);
    }
    assert_eq!(handle.in_flight_of(Priority::Critical), 2);
    assert_eq!(handle.in_flight(), 10);
    let third = submit(&mut svc, job(102, Priority::Critical)).await;
    assert_eq!(handle.queued_of(Priority::Critical), 1);
    // A Critical completion goes to the queued Critical (best class), not to Low.
    assert!(backend.complete(100));
    settle().await;
    assert_eq!(*backend.served().last().unwrap(), 102);
    assert!(!third.is_finished());
}

#[tokio::test(start_paused = true)]
async fn rel_01_poll_ready_without_call_holds_nothing() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let mut idle = layer.layer(backend.clone());
    let mut busy = layer.layer(backend.clone());
    for _ in 0..10 {
        idle.ready().await.unwrap();
    }
    assert_eq!(layer.handle().in_flight(), 0);
    let t = submit(&mut busy, job(1, Priority::Low)).await;
    assert_eq!(backend.served(), vec![1], "admitted at once");
    backend.complete(1);
    t.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn rel_02_dropping_queued_frees_its_place_at_once() {
    let backend = Backend::default();
    let probe = QueueProbe::new();
    let layer = fixed_layer(1)
        .queue_capacity(1)
        .probe(probe.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::Medium)).await;
    let queued = submit(&mut svc, job(1, Priority::Medium)).await;
    assert_eq!((handle.queued(), probe.depth()), (1, 1));
    queued.abort();
    settle().await;
    assert_eq!((handle.queued(), probe.depth()), (0, 0));
    // The place is free again.
    let again = submit(&mut svc, job(2, Priority::Medium)).await;
    assert_eq!(handle.queued(), 1);
    backend.complete(0);
    settle().await;
    assert_eq!(backend.served(), vec![0, 2]);
    backend.complete(2);
    again.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_02_dropping_running_returns_permit_to_next_waiter() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let running = submit(&mut svc, job(0, Priority::Medium)).await;
    let waiting = submit(&mut svc, job(1, Priority::Medium)).await;
    running.abort();
    settle().await;
    assert_eq!(backend.served(), vec![0, 1]);
    assert_eq!(handle.in_flight(), 1);
    backend.complete(1);
    waiting.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_02_permit_granted_to_dropped_waiter_passes_on() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let running = submit(&mut svc, job(0, Priority::Medium)).await;
    // Polled by hand, so that it is granted but never polled again.
    let mut granted =
        tokio_test::task::spawn(svc.ready().await.unwrap().call(job(1, Priority::High)));
    tokio_test::assert_pending!(granted.poll());
    let next = submit(&mut svc, job(2, Priority::Medium)).await;
    backend.complete(0);
    running.await.unwrap().unwrap();
    assert!(granted.is_woken(), "granted waiter woken");
    assert_eq!(handle.in_flight(), 1, "permit handed to job 1");
    drop(granted);
    settle().await;
    assert_eq!(backend.served(), vec![0, 2], "permit passed on to job 2");
    backend.complete(2);
    next.await.unwrap().unwrap();
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn rel_24_waiter_woken_once_without_self_wake() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let running = submit(&mut svc, job(0, Priority::Medium)).await;
    let mut waiter =
        tokio_test::task::spawn(svc.ready().await.unwrap().call(job(1, Priority::High)));
    tokio_test::assert_pending!(waiter.poll());
    let wakers = waiter.waker_ref_count();
    tokio_test::assert_pending!(waiter.poll());
    settle().await;
    assert_eq!(
        waiter.waker_ref_count(),
        wakers,
        "waker stored once, not per poll"
    );
    assert!(!waiter.is_woken(), "no self-wake");
    backend.complete(0);
    running.await.unwrap().unwrap();
    assert!(waiter.is_woken());
    tokio_test::assert_pending!(waiter.poll()); // now running in the backend
    assert_eq!(backend.served(), vec![0, 1]);
    backend.complete(1);
    settle().await;
    assert!(waiter.is_woken());
    assert_eq!(tokio_test::assert_ready!(waiter.poll()).unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn rel_04_inner_error_returns_permit() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let t = submit(&mut svc, job(0, Priority::Medium)).await;
    backend.fail(0);
    let err = t.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "backend failed");
    assert_eq!(layer.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_04_inner_panic_returns_permit() {
    let layer = builder().limit(Limit::fixed(1)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(|job: Job| async move {
        if job.id == 0 {
            panic!("handler panicked");
        }
        Ok::<_, brownout_admission::BoxError>(job.id)
    }));
    let fut = svc.ready().await.unwrap().call(job(0, Priority::Medium));
    let waiting = svc.ready().await.unwrap().call(job(1, Priority::Medium));
    let waiting = tokio::spawn(waiting);
    settle().await;
    assert_eq!(handle.queued(), 1);
    let panicked = tokio::spawn(fut).await.unwrap_err();
    assert!(panicked.is_panic());
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        1,
        "permit passed on after the panic"
    );
    assert_eq!(handle.in_flight(), 0);
}

/// RELIABILITY #4, a panic in the inner `call` itself (not in its future): the permit taken
/// for it is given back when the unwinding drops the service (as a connection task or a
/// `oneshot` does), or, when the panic is caught and the service kept, at its next call.
#[tokio::test(start_paused = true)]
async fn rel_04_panic_in_inner_call_returns_permit() {
    let layer = builder().limit(Limit::fixed(1)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(|job: Job| {
        if job.id == 0 {
            panic!("handler panicked in call");
        }
        std::future::ready(Ok::<_, brownout_admission::BoxError>(job.id))
    }));
    let owned = svc.clone();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut owned = owned;
        drop(owned.call(job(0, Priority::Medium)));
    }));
    assert!(unwound.is_err());
    assert_eq!(handle.in_flight(), 0, "dropped with the service");

    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(job(0, Priority::Medium)));
    }));
    assert!(caught.is_err());
    assert_eq!(handle.in_flight(), 1, "kept by the service that panicked");
    let answer = svc.ready().await.unwrap().call(job(1, Priority::Medium));
    assert_eq!(handle.in_flight(), 1, "the parked permit went back first");
    assert_eq!(answer.await.unwrap(), 1);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_20_close_rejects_queued_at_once_and_refuses_new() {
    let backend = Backend::default();
    let layer = fixed_layer(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let running = submit(&mut svc, job(0, Priority::Medium)).await;
    let queued = submit(&mut svc, job(1, Priority::Critical)).await;
    handle.close_with_retry_after(Duration::from_secs(3));
    handle.close(); // idempotent
    settle().await;
    let err = queued.await.unwrap().unwrap_err();
    let r = rejected(&err);
    assert_eq!(r.reason(), RejectReason::ShuttingDown);
    assert!(r.retry_after().is_some());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(job(2, Priority::Critical))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), RejectReason::ShuttingDown);
    // The running request finishes normally.
    backend.complete(0);
    assert_eq!(running.await.unwrap().unwrap(), 0);
    assert!(handle.stats().closed);
}

#[tokio::test(start_paused = true)]
async fn rel_26_burst_of_100x_capacity_keeps_queue_bounded() {
    let backend = Backend::default();
    let layer = fixed_layer(4).queue_capacity(16).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let mut tasks = Vec::new();
    for id in 0..400 {
        let class = Priority::ALL[id as usize % 5];
        let fut = svc.ready().await.unwrap().call(job(id, class));
        tasks.push(tokio::spawn(fut));
        assert!(handle.queued() <= 16);
    }
    settle().await;
    assert_eq!(handle.in_flight(), 4);
    assert_eq!(handle.queued(), 16);
    let stats = handle.stats();
    assert_eq!(stats.rejected_queue_full, 400 - 4 - 16);
    // Everything still queued is Critical (the highest class evicted the others).
    assert_eq!(stats.queued_by_class[0], 16);
    handle.close();
    for id in backend.served() {
        backend.complete(id);
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn probe_records_queueing_delay_and_zero_for_immediate() {
    let backend = Backend::default();
    let probe = QueueProbe::new();
    let layer = fixed_layer(1).probe(probe.clone()).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let first = submit(&mut svc, job(0, Priority::Medium)).await;
    let second = submit(&mut svc, job(1, Priority::Medium)).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    backend.complete(0);
    first.await.unwrap().unwrap();
    settle().await;
    backend.complete(1);
    second.await.unwrap().unwrap();
    let window = probe.drain();
    assert_eq!(window.samples, 2);
    assert_eq!(window.max_delay, Duration::from_millis(40));
    assert_eq!(window.mean_delay, Duration::from_millis(20));
    assert_eq!(window.depth, 0);
}

#[test]
fn rel_10_invalid_configuration_is_refused_naming_the_field() {
    let cases: Vec<(support::BuilderAlias, &str)> = vec![
        (builder().limit(Limit::fixed(0)), "limit"),
        (
            builder().queue_timeout(QueueTimeout::fixed(Duration::ZERO)),
            "queue_timeout",
        ),
        (
            builder().queue_timeout(QueueTimeout::codel(
                Duration::from_secs(1),
                Duration::from_millis(100),
            )),
            "queue_timeout.target",
        ),
        (
            builder().starvation_bound(Duration::ZERO),
            "starvation_bound",
        ),
        (builder().queue_capacity(usize::MAX), "queue_capacity"),
        (
            builder().rate_limit(RateLimit::per_second(f64::NAN)),
            "rate_limit.per_second",
        ),
        (builder().reserve(Priority::High, 1.5), "reserve[high]"),
        (
            builder()
                .reserve(Priority::High, 0.6)
                .reserve(Priority::Critical, 0.6),
            "reserve",
        ),
    ];
    for (b, field) in cases {
        let err = b.build().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
    let mut policy = brownout_core::Policy::default();
    policy.queue[LoadLevel::High] = f64::NAN;
    let err = builder().policy(policy).build().unwrap_err();
    assert!(err.field().starts_with("policy."), "{err}");
}

#[tokio::test(start_paused = true)]
async fn rel_08_starved_requests_take_at_most_every_other_permit() {
    let backend = Backend::default();
    let layer = fixed_layer(1)
        .starvation_bound(Duration::from_millis(10))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let mut tasks = Vec::new();
    for id in 1..=3 {
        tasks.push(submit(&mut svc, job(id, Priority::Low)).await);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for id in 11..=13 {
        tasks.push(submit(&mut svc, job(id, Priority::High)).await);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Everyone is starved now: starved Low and High alternate with priority order.
    let mut last = 0;
    for _ in 0..6 {
        assert!(backend.complete(last));
        settle().await;
        last = *backend.served().last().unwrap();
    }
    assert_eq!(backend.served(), vec![0, 1, 11, 2, 12, 3, 13]);
}

fn promoting_layer(limit: usize) -> support::BuilderAlias {
    fixed_layer(limit).promotion(Promotion::default())
}

#[tokio::test(start_paused = true)]
async fn promotion_serves_a_request_that_waited_before_a_fresh_more_important_one() {
    let backend = Backend::default();
    let layer = promoting_layer(1).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let bg = submit(&mut svc, job(1, Priority::Background)).await;
    tokio::time::sleep(Duration::from_millis(55)).await;
    let high = submit(&mut svc, job(2, Priority::High)).await;
    // Background waited 55 ms ≥ 50 ms; High only just arrived (within its 60 ms patience)
    // and the queue (2 of 128) is far from half full: Background goes first.
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0, 1]);
    assert!(backend.complete(1));
    bg.await.unwrap().unwrap();
    settle().await;
    assert_eq!(backend.served(), vec![0, 1, 2]);
    assert!(backend.complete(2));
    high.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn promotion_waits_while_a_more_important_request_waited_past_its_patience() {
    let backend = Backend::default();
    let layer = promoting_layer(1).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let _bg = submit(&mut svc, job(1, Priority::Background)).await;
    let _critical = submit(&mut svc, job(2, Priority::Critical)).await;
    tokio::time::sleep(Duration::from_millis(55)).await;
    // Critical waited 55 ms, past its 25 ms patience: strict order.
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0, 2]);
}

#[tokio::test(start_paused = true)]
async fn promotion_stops_once_the_queue_is_half_full() {
    let backend = Backend::default();
    let layer = promoting_layer(1).queue_capacity(4).build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let _bg = submit(&mut svc, job(1, Priority::Background)).await;
    tokio::time::sleep(Duration::from_millis(55)).await;
    let _h1 = submit(&mut svc, job(2, Priority::High)).await;
    let _h2 = submit(&mut svc, job(3, Priority::High)).await;
    // 3 waiting of 4 places: overload, strict priority.
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0, 2]);
}

#[tokio::test(start_paused = true)]
async fn no_promotion_keeps_strict_priority_order() {
    let backend = Backend::default();
    let layer = fixed_layer(1).no_promotion().build().unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let _bg = submit(&mut svc, job(1, Priority::Background)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _high = submit(&mut svc, job(2, Priority::High)).await;
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0, 2]);
}

#[test]
fn promotion_with_zero_durations_is_refused_naming_the_field() {
    let err = builder()
        .promotion(Promotion::after(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "promotion.after", "{err}");
    let mut patience = Promotion::default().patience;
    patience[Priority::High.index()] = Duration::ZERO;
    let err = builder()
        .promotion(Promotion::default().with_patience(patience))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "promotion.patience[high]", "{err}");
}

#[tokio::test(start_paused = true)]
async fn probe_hears_the_wait_of_the_most_important_request_and_full_queue_refusals() {
    let backend = Backend::default();
    let probe = QueueProbe::new();
    let layer = promoting_layer(1)
        .queue_timeout(QueueTimeout::fixed(Duration::from_millis(300)))
        .queue_capacity(5)
        .probe(probe.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let _bg = submit(&mut svc, job(1, Priority::Background)).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let _high = submit(&mut svc, job(2, Priority::High)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    probe.drain();
    // Background (waited 70 ms) is promoted over High (waited 10 ms): the probe hears
    // High's 10 ms, the wait of the most important request, not Background's 70 ms.
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0, 1]);
    let window = probe.drain();
    assert_eq!(window.samples, 1);
    assert_eq!(window.max_delay, Duration::from_millis(10));
    // Fill the queue (High + 4 more High = 5): a Background newcomer is refused for lack of
    // room, and the probe hears the longest wait allowed (300 ms).
    let mut waiting = Vec::new();
    for id in 3..7 {
        waiting.push(submit(&mut svc, job(id, Priority::High)).await);
    }
    let refused = submit(&mut svc, job(9, Priority::Background)).await;
    assert_eq!(
        reason(&refused.await.unwrap().unwrap_err()),
        RejectReason::QueueFull
    );
    let window = probe.drain();
    assert_eq!(window.max_delay, Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn promotion_stops_above_its_level() {
    let backend = Backend::default();
    let layer = promoting_layer(1)
        .signal(LoadSignal::fixed(LoadLevel::High))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = submit(&mut svc, job(0, Priority::High)).await;
    let _bg = submit(&mut svc, job(1, Priority::Background)).await;
    tokio::time::sleep(Duration::from_millis(55)).await;
    let _high = submit(&mut svc, job(2, Priority::High)).await;
    // Level High is above the default `up_to` (Elevated): strict priority.
    assert!(backend.complete(0));
    settle().await;
    assert_eq!(backend.served(), vec![0, 2]);
}
