//! Sustained overload, simulated on a paused clock: cases 23 and 26 (the real-socket soak of
//! case 26 is `tests/soak.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout::admission::{GradientConfig, Limit, QueueTimeout};
use brownout::{BoxError, Brownout, LoadLevel, Priority};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::support::get;

/// K workers behind a FIFO: latency is flat up to K concurrent requests, then grows
/// linearly — a backend with its knee at K.
#[derive(Clone)]
struct Knee {
    workers: Arc<Semaphore>,
    service: Duration,
    inside: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Knee {
    fn new(k: usize, service: Duration) -> Knee {
        Knee {
            workers: Arc::new(Semaphore::new(k)),
            service,
            inside: Arc::default(),
            peak: Arc::default(),
        }
    }
}

impl Service<http::Request<String>> for Knee {
    type Response = http::Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<String>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let now = this.inside.fetch_add(1, Ordering::SeqCst) + 1;
            this.peak.fetch_max(now, Ordering::SeqCst);
            let worker = this.workers.acquire().await;
            tokio::time::sleep(this.service).await;
            drop(worker);
            this.inside.fetch_sub(1, Ordering::SeqCst);
            Ok(http::Response::new("ok".to_owned()))
        })
    }
}

/// RELIABILITY #23, integrated: the facade's default gradient limit in front of a backend
/// whose latency knee is at K = 16, offered twice its capacity, settles within
/// [0.7 K, 1.3 K] (90 % of the samples after warm-up), and the backend never sees more
/// requests in flight than the limit allows.
#[tokio::test(start_paused = true)]
async fn rel_23_gradient_limit_of_the_stack_settles_near_the_backend_knee() {
    const K: usize = 16;
    let brownout = Brownout::builder()
        .admission(|a| a.limit(Limit::gradient(GradientConfig::default())))
        .without_timeout()
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    let backend = Knee::new(K, Duration::from_millis(20));
    let svc = brownout.layer().layer(backend.clone());
    let admission = brownout.admission().unwrap().clone();
    let max_limit = GradientConfig::default().max_limit;

    // K / 20 ms = 800 requests/s; offer 1600/s for 5 s, sample the limit every 10 ms.
    let gap = Duration::from_micros(625);
    let start = Instant::now();
    let mut at = start;
    let mut samples = Vec::new();
    let mut next_sample = start;
    while at.duration_since(start) < Duration::from_secs(5) {
        at += gap;
        tokio::time::sleep_until(at).await;
        if at >= next_sample {
            if at.duration_since(start) >= Duration::from_secs(3) {
                samples.push(admission.limit());
            }
            next_sample += Duration::from_millis(10);
        }
        let call = svc.clone().oneshot(get("critical"));
        tokio::spawn(async move {
            let _ = call.await;
        });
    }
    let (lo, hi) = (0.7 * K as f64, 1.3 * K as f64);
    let inside = samples
        .iter()
        .filter(|&&l| (l as f64) >= lo && (l as f64) <= hi)
        .count();
    assert!(
        inside * 10 >= samples.len() * 9,
        "{inside} of {} samples in [{lo}, {hi}]: {samples:?}",
        samples.len()
    );
    assert!(backend.peak.load(Ordering::SeqCst) <= max_limit);
    assert!(samples.iter().all(|&l| l >= 1));
}

/// RELIABILITY #26, simulated: ten times the stack's capacity (4 permits × 20 ms = 200/s,
/// offered 2000/s with a seeded mix of classes) for 30 s on a paused clock. The queue stays
/// within its capacity, the number of live tasks stays bounded, every request is answered
/// 200 or rejected with a typed reason and the level header, the monitor raises the level,
/// Critical work keeps being served, and afterwards nothing is left behind.
#[tokio::test(start_paused = true)]
async fn rel_26_ten_times_overload_for_30s_bounded_and_every_request_answered() {
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let brownout = Brownout::builder()
        .admission(|a| {
            a.limit(Limit::fixed(4))
                .queue_capacity(64)
                .queue_timeout(QueueTimeout::fixed(Duration::from_millis(200)))
        })
        .build()
        .unwrap();
    let svc = brownout
        .layer()
        .layer(Knee::new(4, Duration::from_millis(20)));
    let admission = brownout.admission().unwrap().clone();
    let baseline = alive();
    let mut rng = SmallRng::seed_from_u64(26);
    let answered: Arc<[AtomicUsize; 8]> = Arc::new(Default::default());
    let critical = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut peak_tasks = 0;
    let mut peak_queue = 0;
    let mut highest = LoadLevel::Normal;
    let gap = Duration::from_micros(500);
    let start = Instant::now();
    let mut at = start;
    let mut sent = 0usize;
    while at.duration_since(start) < Duration::from_secs(30) {
        at += gap;
        tokio::time::sleep_until(at).await;
        let class = match rng.random_range(0..100) {
            0..5 => Priority::Critical,
            5..20 => Priority::High,
            20..50 => Priority::Medium,
            50..80 => Priority::Low,
            _ => Priority::Background,
        };
        let call = svc.clone().oneshot(get(class.as_str()));
        let answered = answered.clone();
        let critical = critical.clone();
        sent += 1;
        tokio::spawn(async move {
            let response = call.await.unwrap();
            let slot = match (
                response.status().as_u16(),
                response.body().split(':').next(),
            ) {
                (200, _) => 0,
                (503, Some("shed")) => 1,
                (503, Some("queue_full")) => 2,
                (503, Some("queue_timeout")) => 3,
                (429, Some("rate_limited")) => 4,
                (504, Some("timeout")) => 5,
                _ => 7,
            };
            if slot != 0 {
                assert!(
                    response.headers().contains_key("x-load-level"),
                    "{response:?}"
                );
            }
            answered[slot].fetch_add(1, Ordering::SeqCst);
            if class == Priority::Critical {
                critical[usize::from(slot != 0)].fetch_add(1, Ordering::SeqCst);
            }
        });
        if sent.is_multiple_of(100) {
            peak_tasks = peak_tasks.max(alive());
            peak_queue = peak_queue.max(admission.queued());
            highest = highest.max(brownout.signal().level());
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts: Vec<usize> = answered.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    eprintln!(
        "sent {sent}, answered {counts:?}, peak tasks {peak_tasks}, peak queue {peak_queue}, highest {highest}"
    );
    assert_eq!(counts.iter().sum::<usize>(), sent, "every request answered");
    assert_eq!(counts[7], 0, "no untyped answer: {counts:?}");
    assert!(
        counts[0] > 0 && counts[0] < sent / 5,
        "served about capacity: {counts:?}"
    );
    assert!(peak_queue <= 64, "queue bounded: {peak_queue}");
    assert!(
        peak_tasks <= baseline + 64 + 4 + 50,
        "live tasks bounded by queue + permits + arrivals in flight: {peak_tasks} (baseline {baseline})"
    );
    assert!(highest > LoadLevel::Normal, "the monitor saw the overload");
    let (crit_ok, crit_refused) = (
        critical[0].load(Ordering::SeqCst),
        critical[1].load(Ordering::SeqCst),
    );
    assert!(
        crit_ok >= 9 * (crit_ok + crit_refused) / 10,
        "Critical served: {crit_ok} ok, {crit_refused} refused"
    );
    assert_eq!(admission.in_flight(), 0);
    assert_eq!(admission.queued(), 0);
    assert_eq!(alive(), baseline, "every request task ended");
}
