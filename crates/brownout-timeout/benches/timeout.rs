//! Cost per request of `AdaptiveTimeout` against tower's `Timeout` and a bare service, for
//! an inner service that answers at once and one whose future is pending once.
#![allow(missing_docs)]
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brownout_core::{LoadLevel, LoadSignal};
use brownout_timeout::{AdaptiveTimeoutConfig, AdaptiveTimeoutLayer};
use criterion::{Criterion, criterion_group};
use tower::{Layer, Service};

/// A response future that is pending `pending` times (waking itself), then ready.
struct Answer {
    pending: u8,
    value: u64,
}

impl Future for Answer {
    type Output = Result<u64, Infallible>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pending > 0 {
            self.pending -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        } else {
            Poll::Ready(Ok(self.value))
        }
    }
}

/// Always ready; its futures are pending `pending` times.
#[derive(Clone, Copy)]
struct Inner {
    pending: u8,
}

impl Service<u64> for Inner {
    type Response = u64;
    type Error = Infallible;
    type Future = Answer;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, value: u64) -> Answer {
        Answer {
            pending: self.pending,
            value,
        }
    }
}

/// One request: poll_ready, call, poll until ready.
#[inline]
fn one<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> bool
where
    S: Service<u64>,
{
    let _ = svc.poll_ready(cx);
    let mut fut = pin!(svc.call(req));
    loop {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return r.is_ok();
        }
    }
}

fn group(c: &mut Criterion, name: &str, pending: u8) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group(name);
    let inner = Inner { pending };

    let mut bare = inner;
    group.bench_function("bare_service", |b| {
        b.iter(|| one(&mut bare, &mut cx, black_box(7)))
    });

    let mut tower_timeout = tower::timeout::Timeout::new(inner, Duration::from_secs(1));
    group.bench_function("tower_Timeout", |b| {
        b.iter(|| one(&mut tower_timeout, &mut cx, black_box(7)))
    });

    let config = AdaptiveTimeoutConfig::builder()
        .initial(Duration::from_secs(1))
        // Keep the learned timeout at tower's 1 s (the inner service answers in
        // nanoseconds, which would teach the 1 ms floor): same timer-wheel level, so the
        // rows compare the layers, not the deadlines.
        .min(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut adaptive = AdaptiveTimeoutLayer::new(config)
        .with_signal(LoadSignal::fixed(LoadLevel::Normal))
        .without_caller_deadline()
        .layer(inner);
    group.bench_function("brownout_AdaptiveTimeout", |b| {
        b.iter(|| one(&mut adaptive, &mut cx, black_box(7)))
    });
    let every = AdaptiveTimeoutConfig::builder()
        .initial(Duration::from_secs(1))
        // Keep the learned timeout at tower's 1 s (the inner service answers in
        // nanoseconds, which would teach the 1 ms floor): same timer-wheel level, so the
        // rows compare the layers, not the deadlines.
        .min(Duration::from_secs(1))
        .max_sample_every(1)
        .build()
        .unwrap();
    let mut adaptive_every = AdaptiveTimeoutLayer::new(every)
        .with_signal(LoadSignal::fixed(LoadLevel::Normal))
        .without_caller_deadline()
        .layer(inner);
    group.bench_function("brownout_AdaptiveTimeout_every_request_timed", |b| {
        b.iter(|| one(&mut adaptive_every, &mut cx, black_box(7)))
    });
    group.bench_function("reference_tokio_Instant_now", |b| {
        b.iter(tokio::time::Instant::now)
    });
    group.finish();
}

fn timeouts(c: &mut Criterion) {
    group(c, "timeout_ready", 0);
    group(c, "timeout_pending_then_ready", 1);
}

/// CPU time of this thread so far (Linux `/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

/// `BROWNOUT_BENCH_ONE=<group>/<service> BROWNOUT_BENCH_N=<n>`: warms one service up, then
/// runs `n` requests through it and prints the thread's CPU time per request. Unlike wall
/// time, CPU time does not count the time the thread waits for a core, so it stays usable
/// on a loaded machine (Linux only).
fn fixed_iterations(name: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let (group, service) = name.split_once('/').expect("group/service");
    let pending = match group {
        "timeout_ready" => 0,
        "timeout_pending_then_ready" => 1,
        other => panic!("unknown group {other}"),
    };
    let inner = Inner { pending };
    let config = AdaptiveTimeoutConfig::builder()
        .initial(Duration::from_secs(1))
        // Keep the learned timeout at tower's 1 s (the inner service answers in
        // nanoseconds, which would teach the 1 ms floor): same timer-wheel level, so the
        // rows compare the layers, not the deadlines.
        .min(Duration::from_secs(1))
        .build()
        .unwrap();
    // Warm up for 1.2 s (longer than the estimator's 1 s window, so its sampling rate has
    // adapted as it has in the criterion run), then run `n` requests.
    fn run<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, n: u64) {
        let warm = std::time::Instant::now();
        while warm.elapsed() < Duration::from_millis(1200) {
            for _ in 0..1000 {
                one(svc, cx, black_box(7));
            }
        }
        let cpu = thread_cpu_ns();
        let mut ok = 0u64;
        for _ in 0..n {
            ok += u64::from(one(svc, cx, black_box(7)));
        }
        let cpu = thread_cpu_ns() - cpu;
        assert_eq!(ok, n);
        println!("{:.2} ns CPU/request", cpu as f64 / n as f64);
    }
    match service {
        "tower_Timeout" => run(
            &mut tower::timeout::Timeout::new(inner, Duration::from_secs(1)),
            &mut cx,
            n,
        ),
        "brownout_AdaptiveTimeout" => run(
            &mut AdaptiveTimeoutLayer::new(config)
                .with_signal(LoadSignal::fixed(LoadLevel::Normal))
                .without_caller_deadline()
                .layer(inner),
            &mut cx,
            n,
        ),
        "bare_service" => run(&mut { inner }, &mut cx, n),
        other => panic!("unknown service {other}"),
    }
}

criterion_group!(benches, timeouts);

fn main() {
    if let Ok(name) = std::env::var("BROWNOUT_BENCH_ONE") {
        let n = std::env::var("BROWNOUT_BENCH_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        fixed_iterations(&name, n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
