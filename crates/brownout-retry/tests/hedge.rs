//! Hedging: the first answer wins, the loser is dropped, hedges draw from the budget and
//! stop at a high load level.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use brownout_core::{BoxError, LoadLevel, LoadSignal};
use brownout_retry::RetryBudget;
use brownout_retry::hedge::{HedgeConfig, HedgeLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Counts drops of the attempt futures it is attached to.
struct DropCounter(Arc<AtomicU32>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Attempt `n` (0-based, over all clones) takes `latencies[n]` ms (the last entry after the
/// list ends) and answers `n`. Returns the service, its call counter and its drop counter of
/// unfinished attempts.
fn backend(
    latencies: Vec<u64>,
) -> (
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
    Arc<AtomicU32>,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let cancelled = Arc::new(AtomicU32::new(0));
    let (seen, dropped) = (calls.clone(), cancelled.clone());
    let latencies = Arc::new(latencies);
    let svc = service_fn(move |_: u32| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let ms = *latencies.get(n as usize).or(latencies.last()).unwrap_or(&1);
        let guard = DropCounter(dropped.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            std::mem::forget(guard); // finished: not a cancellation
            Ok::<u32, BoxError>(n)
        }
    });
    (svc, calls, cancelled)
}

#[tokio::test(start_paused = true)]
async fn first_answer_wins_and_the_loser_is_dropped() {
    let (svc, calls, cancelled) = backend(vec![10_000, 5]);
    let layer = HedgeLayer::new(
        HedgeConfig::builder()
            .fixed_delay(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    let start = Instant::now();
    let answer = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(answer, 1, "the hedge (attempt 1) answered first");
    assert_eq!(start.elapsed(), Duration::from_millis(105));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        cancelled.load(Ordering::SeqCst),
        1,
        "the slow primary was dropped"
    );
    assert_eq!(layer.stats().hedges, 1);
    assert_eq!(layer.stats().hedge_wins, 1);
}

#[tokio::test(start_paused = true)]
async fn fast_primary_sends_no_hedge() {
    let (svc, calls, cancelled) = backend(vec![20]);
    let layer = HedgeLayer::new(
        HedgeConfig::builder()
            .fixed_delay(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn primary_wins_when_it_answers_before_the_hedge() {
    let (svc, calls, cancelled) = backend(vec![150, 1000]);
    let layer = HedgeLayer::new(
        HedgeConfig::builder()
            .fixed_delay(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cancelled.load(Ordering::SeqCst), 1, "the hedge was dropped");
    assert_eq!(layer.stats().hedge_wins, 0);
}

#[tokio::test(start_paused = true)]
async fn percentile_delay_learned_from_successes() {
    // 19 answers at 10 ms, then one slow primary: p95 of 20 samples at 10 ms gives a 10 ms
    // hedge delay.
    let mut latencies = vec![10; 20];
    latencies.extend([5_000, 10]);
    let (svc, calls, _) = backend(latencies);
    let layer = HedgeLayer::new(
        HedgeConfig::builder()
            .percentile(0.95, 20)
            .unlimited_budget()
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    for i in 0..20 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        20,
        "no hedge before 20 samples"
    );
    assert_eq!(layer.stats().delay, Some(Duration::from_millis(10)));
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 21);
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn hedges_draw_from_the_budget() {
    let (svc, calls, _) = backend(vec![1_000]);
    let budget = RetryBudget::new(Duration::from_secs(10), 0.0, 0.0).unwrap();
    let layer = HedgeLayer::new(
        HedgeConfig::builder()
            .fixed_delay(Duration::from_millis(10))
            .shared_budget(budget.clone())
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "empty budget: no hedge");
    assert_eq!(budget.exhausted(), 1);
}

#[tokio::test(start_paused = true)]
async fn rel_13_no_hedge_at_high_level() {
    let (svc, calls, _) = backend(vec![1_000]);
    let layer = HedgeLayer::new(
        HedgeConfig::builder()
            .fixed_delay(Duration::from_millis(10))
            .unlimited_budget()
            .signal(LoadSignal::fixed(LoadLevel::High))
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn rel_02_dropping_the_future_drops_both_attempts() {
    let (svc, calls, cancelled) = backend(vec![1_000]);
    let layer = HedgeLayer::new(
        HedgeConfig::builder()
            .fixed_delay(Duration::from_millis(10))
            .unlimited_budget()
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    svc.ready().await.unwrap();
    let fut = svc.call(0);
    let timed_out = tokio::time::timeout(Duration::from_millis(50), fut).await;
    assert!(timed_out.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cancelled.load(Ordering::SeqCst), 2);
}

#[test]
fn rel_10_hedge_config_refused_naming_the_field() {
    let err = HedgeConfig::builder()
        .percentile(1.5, 10)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "delay.percentile");
    let err = HedgeConfig::builder()
        .percentile(0.9, 0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "delay.min_samples");
    let err = HedgeConfig::builder()
        .budget(Duration::from_secs(10), 1.0, f64::NAN)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "budget.ratio");
}
