//! The kit on a few classic scenarios: a backend that slows down mid-test, tower's own load
//! shedding, and chaos in front of a protected service.

use std::time::Duration;

use brownout_core::Priority;
use brownout_test::{
    ChaosLayer, Faults, LoadDriver, MockBackend, Outcome, Phase, Summary, assert_priority_order,
    assert_success_at_least,
};
use tower::{Layer, ServiceBuilder};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The share of the requests sent in `[from, to)` that were answered.
fn answered_between(summary: &Summary, from: Duration, to: Duration) -> f64 {
    let window: Vec<_> = summary
        .records()
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .collect();
    let ok = window.iter().filter(|r| r.outcome.is_ok()).count();
    ok as f64 / window.len() as f64
}

#[tokio::test(start_paused = true)]
async fn an_unprotected_backend_drowns_while_slow_and_for_a_while_after() {
    // 400 req/s at full speed, a third of it from 2 s to 4 s.
    let backend = MockBackend::builder()
        .workers(4)
        .latency(brownout_test::Latency::Fixed(Duration::from_millis(10)))
        .phase(Phase::at(secs(2)).latency_factor(3.0))
        .phase(Phase::at(secs(4)).latency_factor(1.0))
        .build()
        .unwrap();
    let driver = LoadDriver::builder()
        .rate(0.8 * backend.capacity())
        .duration(secs(12))
        .deadline(Duration::from_millis(500))
        .seed(3)
        .build()
        .unwrap();
    let summary = driver.run(backend.clone(), |_: Priority| ()).await;

    let before = answered_between(&summary, secs(0), secs(2));
    let slow = answered_between(&summary, Duration::from_millis(2500), secs(4));
    // Back at full speed, it still serves the backlog of the slow phase (≈ 370 requests,
    // drained at the 80 req/s it has to spare): answers come too late for seconds.
    let after = answered_between(&summary, Duration::from_millis(4500), secs(6));
    let recovered = answered_between(&summary, secs(10), secs(12));
    assert!(before > 0.99, "before {before:.3}\n{summary}");
    assert!(slow < 0.2, "while slow {slow:.3}\n{summary}");
    assert!(after < 0.5, "just after {after:.3}\n{summary}");
    assert!(recovered > 0.99, "recovered {recovered:.3}\n{summary}");
    // The queue the slowdown built is served to callers that left: wasted work.
    assert!(backend.stats().max_wait > Duration::from_millis(500));
    assert!(summary.total().timed_out > 0);
    assert!(
        summary
            .records()
            .iter()
            .any(|r| r.outcome == Outcome::TimedOut)
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_slows_the_backend_mid_test() {
    let backend = MockBackend::new(2, Duration::from_millis(10));
    let handle = backend.handle();
    let driver = LoadDriver::builder()
        .rate(0.5 * backend.capacity())
        .duration(secs(4))
        .deadline(Duration::from_millis(200))
        .build()
        .unwrap();
    let slow_down = tokio::spawn(async move {
        tokio::time::sleep(secs(2)).await;
        handle.set_latency_factor(10.0).unwrap();
    });
    let summary = driver.run(backend, |_: Priority| ()).await;
    slow_down.await.unwrap();
    assert!(
        answered_between(&summary, secs(0), secs(2)) > 0.99,
        "{summary}"
    );
    assert!(
        answered_between(&summary, Duration::from_millis(2500), secs(4)) < 0.3,
        "{summary}"
    );
}

#[tokio::test(start_paused = true)]
async fn tower_load_shed_is_counted_as_overloaded_and_blind_to_classes() {
    let backend = MockBackend::new(8, Duration::from_millis(20)); // 400 req/s
    let stack = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(8)
        .service(backend.clone());
    let driver = LoadDriver::builder()
        .rate(4.0 * backend.capacity())
        .duration(secs(5))
        .seed(11)
        .build()
        .unwrap();
    let summary = driver.run(stack, |_: Priority| ()).await;
    let total = summary.total();
    assert!(total.overloaded > total.sent / 2, "{summary}");
    assert_eq!(total.rejected_total(), 0, "no brownout rejections here");
    // Priority-blind: every class gets about the same share.
    let rates: Vec<f64> = summary.classes().iter().map(|c| c.success_rate()).collect();
    let spread = rates.iter().copied().fold(f64::MIN, f64::max)
        - rates.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread < 0.05, "{rates:?}\n{summary}");
    assert!(backend.stats().peak_concurrency <= 8);
}

#[tokio::test(start_paused = true)]
async fn chaos_errors_for_low_only_leave_the_other_classes_alone() {
    let backend = MockBackend::new(8, Duration::from_millis(10)); // 800 req/s
    let chaos = ChaosLayer::builder()
        .seed(5)
        .classify(|class: &Priority| *class)
        .class(Priority::Low, Faults::none().error_rate(0.5))
        .class(Priority::Background, Faults::none().error_rate(1.0))
        .build()
        .unwrap();
    let driver = LoadDriver::builder()
        .rate(0.5 * backend.capacity())
        .duration(secs(4))
        .seed(2)
        .build()
        .unwrap();
    let summary = driver.run(chaos.layer(backend), |class| class).await;
    assert_success_at_least(&summary, Priority::Critical, 1.0);
    assert_success_at_least(&summary, Priority::Medium, 1.0);
    let low = summary.class(Priority::Low);
    assert!((low.success_rate() - 0.5).abs() < 0.06, "{summary}");
    assert_eq!(summary.class(Priority::Background).ok, 0);
    assert_priority_order(&summary, 0.0);
    assert_eq!(
        chaos.stats().errors,
        low.failed + summary.class(Priority::Background).failed
    );
}
