//! The adaptive limits against a simulated backend with a latency knee (RELIABILITY #23).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_admission::{
    AdmissionHandle, AimdConfig, BoxError, GradientConfig, Limit, NoDeadline,
};
use brownout_core::{Fixed, Priority};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

/// K workers behind a FIFO queue: latency is flat up to K concurrent requests, then grows
/// linearly (the knee at K).
#[derive(Clone)]
struct KneeBackend {
    workers: Arc<Semaphore>,
    service_us: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
}

impl KneeBackend {
    fn new(k: usize, service: Duration) -> KneeBackend {
        KneeBackend {
            workers: Arc::new(Semaphore::new(k)),
            service_us: Arc::new(AtomicU64::new(service.as_micros() as u64)),
            done: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Service<u32> for KneeBackend {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u32) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let _worker = this
                .workers
                .acquire()
                .await
                .map_err(|e| Box::new(e) as BoxError)?;
            let us = this.service_us.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_micros(us)).await;
            this.done.fetch_add(1, Ordering::Relaxed);
            Ok(id)
        })
    }
}

/// Offers `rate` requests per second for `duration`, sampling the limit every 10 ms.
async fn drive<S>(
    svc: &mut S,
    handle: &AdmissionHandle,
    rate: f64,
    duration: Duration,
) -> Vec<usize>
where
    S: Service<u32, Response = u32, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut next_sample = start;
    let mut samples = Vec::new();
    let mut id = 0u32;
    let mut at = start;
    while at.duration_since(start) < duration {
        at += gap;
        tokio::time::sleep_until(at).await;
        if at >= next_sample {
            samples.push(handle.limit());
            next_sample += Duration::from_millis(10);
        }
        let fut = svc.ready().await.unwrap().call(id);
        tokio::spawn(async move {
            let _ = fut.await;
        });
        id = id.wrapping_add(1);
    }
    samples
}

fn share_within(samples: &[usize], low: f64, high: f64) -> f64 {
    let inside = samples
        .iter()
        .filter(|&&l| (l as f64) >= low && (l as f64) <= high)
        .count();
    inside as f64 / samples.len() as f64
}

fn median(samples: &[usize]) -> usize {
    let mut s = samples.to_vec();
    s.sort_unstable();
    s[s.len() / 2]
}

#[tokio::test(start_paused = true)]
async fn rel_23_gradient_settles_near_the_knee_and_follows_a_slowdown() {
    const K: usize = 16;
    let backend = KneeBackend::new(K, Duration::from_millis(20));
    let layer = brownout_admission::PriorityAdmissionLayer::builder()
        .limit(Limit::gradient(GradientConfig::default()))
        .classifier(Fixed(Priority::Medium))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    // Twice the backend's capacity (K / 20 ms = 800/s).
    let warmup = drive(&mut svc, &handle, 1600.0, Duration::from_secs(3)).await;
    let settled = drive(&mut svc, &handle, 1600.0, Duration::from_secs(2)).await;
    let (lo, hi) = (0.7 * K as f64, 1.3 * K as f64);
    eprintln!("warmup {warmup:?}\nsettled {settled:?}");
    assert!(share_within(&settled, lo, hi) >= 0.9, "settled {settled:?}");
    let m = median(&settled) as f64;
    assert!(m >= lo && m <= hi, "median {m}");

    // The backend becomes three times slower: same K, 60 ms per request.
    backend.service_us.store(60_000, Ordering::Relaxed);
    let transition = drive(&mut svc, &handle, 1600.0, Duration::from_secs(1)).await;
    let after = drive(&mut svc, &handle, 1600.0, Duration::from_secs(2)).await;
    eprintln!("transition {transition:?}\nafter {after:?}");
    assert!(share_within(&after, lo, hi) >= 0.9, "after {after:?}");
    assert!(after.iter().all(|&l| l >= 1));
}

#[tokio::test(start_paused = true)]
async fn rel_23_aimd_with_latency_threshold_stays_bounded_and_positive() {
    const K: usize = 16;
    let backend = KneeBackend::new(K, Duration::from_millis(20));
    let layer = brownout_admission::PriorityAdmissionLayer::builder()
        .limit(Limit::aimd(AimdConfig {
            latency_threshold: Some(Duration::from_millis(30)),
            ..AimdConfig::default()
        }))
        .classifier(Fixed(Priority::Medium))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let _ = drive(&mut svc, &handle, 1600.0, Duration::from_secs(2)).await;
    let settled = drive(&mut svc, &handle, 1600.0, Duration::from_secs(2)).await;
    eprintln!("aimd {settled:?}");
    // A latency threshold of 1.5 × the service time keeps the limit near the knee.
    let m = median(&settled) as f64;
    assert!((0.7 * K as f64..=2.0 * K as f64).contains(&m), "median {m}");
    assert!(settled.iter().all(|&l| l >= 1));
}

/// The simulator's scenario in small: 16 workers × 20 ms, class mix 10/30/30/20/10 %,
/// 4× overload, default configuration (gradient limit, CoDel queue) plus a 10 % share of
/// the limit reserved for Critical. With a deterministic service time the workers complete
/// in synchronised batches every 20 ms; without the reserved share a Critical request
/// arriving just after a batch waits for the next one (p99 ≈ 36 ms = 1.8× unloaded).
#[tokio::test(start_paused = true)]
async fn defaults_keep_goodput_and_critical_latency_under_4x_overload() {
    use std::sync::Mutex;
    const K: usize = 16;
    let backend = KneeBackend::new(K, Duration::from_millis(20));
    let layer = brownout_admission::PriorityAdmissionLayer::builder()
        .classifier(|id: &u32| match id % 10 {
            0 => Priority::Critical,
            1..=3 => Priority::High,
            4..=6 => Priority::Medium,
            7 | 8 => Priority::Low,
            _ => Priority::Background,
        })
        .reserve(Priority::Critical, 0.5)
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let latencies: Arc<Mutex<Vec<(u32, Duration)>>> = Arc::default();
    let rate = 4.0 * 800.0;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let measure_from = start + Duration::from_secs(2);
    let end = start + Duration::from_secs(6);
    let mut at = start;
    let mut id = 0u32;
    let ok_in_window = Arc::new(AtomicU64::new(0));
    while at < end {
        at += gap;
        tokio::time::sleep_until(at).await;
        let fut = svc.ready().await.unwrap().call(id);
        let (latencies, ok) = (Arc::clone(&latencies), Arc::clone(&ok_in_window));
        let sent = tokio::time::Instant::now();
        let measured = sent >= measure_from;
        tokio::spawn(async move {
            if fut.await.is_ok() && measured {
                ok.fetch_add(1, Ordering::Relaxed);
                latencies.lock().unwrap().push((id % 10, sent.elapsed()));
            }
        });
        id = id.wrapping_add(1);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok = ok_in_window.load(Ordering::Relaxed);
    let capacity = 800.0 * 4.0; // 4 s measured
    let goodput = ok as f64 / capacity;
    let mut critical: Vec<Duration> = latencies
        .lock()
        .unwrap()
        .iter()
        .filter(|(c, _)| *c == 0)
        .map(|(_, d)| *d)
        .collect();
    critical.sort_unstable();
    eprintln!(
        "critical p50 {:?} p90 {:?} p95 {:?} max {:?}",
        critical[critical.len() / 2],
        critical[critical.len() * 9 / 10],
        critical[critical.len() * 95 / 100],
        critical.last()
    );
    let p99 = critical[critical.len() * 99 / 100];
    let mut all: Vec<Duration> = latencies.lock().unwrap().iter().map(|(_, d)| *d).collect();
    all.sort_unstable();
    let p99_all = all[all.len() * 99 / 100];
    let critical_sent = 4.0 * 320.0; // 10 % of 3200/s over 4 s
    eprintln!(
        "goodput {goodput:.3} critical answered {:.4} critical p99 {p99:?} all p99 {p99_all:?} limit {}",
        critical.len() as f64 / critical_sent,
        handle.limit()
    );
    assert!(goodput >= 0.95, "goodput {goodput}");
    assert!(critical.len() as f64 >= 0.99 * critical_sent);
    assert!(p99 <= Duration::from_millis(30), "critical p99 {p99:?}");
    assert!(p99_all <= Duration::from_millis(250), "p99 {p99_all:?}");
}
