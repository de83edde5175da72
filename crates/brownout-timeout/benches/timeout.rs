//! Cost per request of `AdaptiveTimeout` against tower's `Timeout` and a bare service, for
//! an inner service that answers at once and one whose future is pending once.
#![allow(missing_docs)]
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{LoadLevel, LoadSignal};
use brownout_timeout::{AdaptiveTimeoutConfig, AdaptiveTimeoutLayer};
use criterion::{Criterion, criterion_group};
use tower::{Layer, Service};

#[path = "../../../benches/support/cpu.rs"]
mod cpu;
use cpu::thread_cpu_ns;

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

pin_project_lite::pin_project! {
    /// The response future of [`Counted`].
    struct CountedFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = Result<T, E>>, T, E> Future for CountedFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let result = std::task::ready!(self.project().inner.poll(cx));
        if result.is_ok() {
            counted_metrics().admitted(None, LoadLevel::Normal);
        }
        Poll::Ready(result)
    }
}

fn counted_metrics() -> &'static DecisionMetrics {
    static METRICS: LazyLock<DecisionMetrics> = LazyLock::new(|| DecisionMetrics::new("bench"));
    &METRICS
}

/// tower's `Timeout` plus what DESIGN.md asks of every brownout layer and tower does not do:
/// one decision counter per completed request (`DecisionMetrics::admitted`, as
/// `AdaptiveTimeout` counts). The baseline of `BROWNOUT_BENCH_AB_BASE=counted`: the same
/// observability, so the A/B ratio shows what the adaptive timeout costs beyond it.
struct Counted<S>(S);

impl<S: Service<u64>> Service<u64> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        CountedFuture {
            inner: self.0.call(req),
        }
    }
}

impl Inner {
    /// The inner service of a bench group.
    fn for_group(group: &str) -> Inner {
        match group {
            "timeout_ready" => Inner { pending: 0 },
            "timeout_pending_then_ready" => Inner { pending: 1 },
            other => panic!("unknown group {other}"),
        }
    }
}

/// A current-thread runtime with the time driver, entered by each bench.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// `AdaptiveTimeout` as every row measures it: the defaults (or `max_sample_every`), no
/// caller deadline, a fixed Normal level, and the learned timeout kept at tower's 1 s (the
/// inner service answers in nanoseconds, which would teach the 1 ms floor): same
/// timer-wheel level, so the rows compare the layers, not the deadlines.
fn adaptive_timeout(inner: Inner, max_sample_every: Option<u32>) -> impl Service<u64> {
    let mut config = AdaptiveTimeoutConfig::builder()
        .initial(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    if let Some(every) = max_sample_every {
        config = config.max_sample_every(every);
    }
    AdaptiveTimeoutLayer::new(config.build().unwrap())
        .with_signal(LoadSignal::fixed(LoadLevel::Normal))
        .without_caller_deadline()
        .layer(inner)
}

fn group(c: &mut Criterion, name: &str) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group(name);
    let inner = Inner::for_group(name);

    let mut bare = inner;
    group.bench_function("bare_service", |b| {
        b.iter(|| one(&mut bare, &mut cx, black_box(7)))
    });

    let mut tower_timeout = tower::timeout::Timeout::new(inner, Duration::from_secs(1));
    group.bench_function("tower_Timeout", |b| {
        b.iter(|| one(&mut tower_timeout, &mut cx, black_box(7)))
    });

    let mut adaptive = adaptive_timeout(inner, None);
    group.bench_function("brownout_AdaptiveTimeout", |b| {
        b.iter(|| one(&mut adaptive, &mut cx, black_box(7)))
    });
    let mut adaptive_every = adaptive_timeout(inner, Some(1));
    group.bench_function("brownout_AdaptiveTimeout_every_request_timed", |b| {
        b.iter(|| one(&mut adaptive_every, &mut cx, black_box(7)))
    });
    group.bench_function("reference_tokio_Instant_now", |b| {
        b.iter(tokio::time::Instant::now)
    });
    group.finish();
}

fn timeouts(c: &mut Criterion) {
    group(c, "timeout_ready");
    group(c, "timeout_pending_then_ready");
}

/// `BROWNOUT_BENCH_ONE=<group>/<service> BROWNOUT_BENCH_N=<n>`: warms one service up, then
/// runs `n` requests through it and prints the thread's CPU time per request. Unlike wall
/// time, CPU time does not count the time the thread waits for a core, so it stays usable
/// on a loaded machine (Linux only).
fn fixed_iterations(name: &str, n: u64) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let (group, service) = name.split_once('/').expect("group/service");
    let inner = Inner::for_group(group);
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
        "brownout_AdaptiveTimeout" => run(&mut adaptive_timeout(inner, None), &mut cx, n),
        "bare_service" => run(&mut { inner }, &mut cx, n),
        other => panic!("unknown service {other}"),
    }
}

/// `BROWNOUT_BENCH_AB=<group> BROWNOUT_BENCH_N=<n> BROWNOUT_BENCH_ROUNDS=<r>`: warms both
/// tower's `Timeout` and `AdaptiveTimeout` up, then alternates batches of `n` requests
/// through each, `r` rounds, and prints the wall time per request of each (min and median)
/// and the median of the per-round ratios. Neighbouring batches see the same machine load,
/// so the median ratio stays stable on a noisy machine where separate runs do not (the
/// thread CPU time of `/proc/thread-self/schedstat` is only updated at scheduler ticks, too
/// coarse for batches of a few milliseconds).
///
/// `BROWNOUT_BENCH_AB_BASE=counted` puts [`Counted`] tower `Timeout` (one decision counter per
/// request, as every brownout layer keeps) in tower's place.
fn alternating(group: &str, n: u64, rounds: usize) {
    let inner = Inner::for_group(group);
    let tower_timeout = tower::timeout::Timeout::new(inner, Duration::from_secs(1));
    match std::env::var("BROWNOUT_BENCH_AB_BASE").as_deref() {
        Ok("counted") => alternate(
            group,
            "tower_Timeout+counter",
            Counted(tower_timeout),
            n,
            rounds,
        ),
        _ => alternate(group, "tower_Timeout", tower_timeout, n, rounds),
    }
}

fn alternate<B: Service<u64>>(
    group: &str,
    base: &str,
    mut tower_timeout: B,
    n: u64,
    rounds: usize,
) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut adaptive = adaptive_timeout(Inner::for_group(group), None);
    fn batch<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, n: u64) -> f64 {
        let start = std::time::Instant::now();
        let mut ok = 0u64;
        for _ in 0..n {
            ok += u64::from(one(svc, cx, black_box(7)));
        }
        let elapsed = start.elapsed();
        assert_eq!(ok, n);
        elapsed.as_nanos() as f64 / n as f64
    }
    // Warm-up: longer than the estimator's 1 s window, so its sampling rate has adapted.
    let warm = std::time::Instant::now();
    while warm.elapsed() < Duration::from_millis(1200) {
        batch(&mut tower_timeout, &mut cx, 1000);
        batch(&mut adaptive, &mut cx, 1000);
    }
    let (mut towers, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        let (t, a) = if round % 2 == 0 {
            let t = batch(&mut tower_timeout, &mut cx, n);
            (t, batch(&mut adaptive, &mut cx, n))
        } else {
            let a = batch(&mut adaptive, &mut cx, n);
            (batch(&mut tower_timeout, &mut cx, n), a)
        };
        towers.push(t);
        ours.push(a);
        ratios.push(a / t);
    }
    fn min_median(v: &mut [f64]) -> (f64, f64) {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    }
    let (t_min, t_med) = min_median(&mut towers);
    let (a_min, a_med) = min_median(&mut ours);
    let (r_min, r_med) = min_median(&mut ratios);
    println!(
        "{group}: {base} {t_min:.2} / {t_med:.2} ns, brownout_AdaptiveTimeout \
         {a_min:.2} / {a_med:.2} ns/request (min / median of {rounds} rounds of {n}); \
         ratio median {r_med:.3} (min {r_min:.3}), ratio of mins {:.3}",
        a_min / t_min
    );
}

criterion_group!(benches, timeouts);

fn main() {
    if let Ok(group) = std::env::var("BROWNOUT_BENCH_AB") {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        alternating(
            &group,
            var("BROWNOUT_BENCH_N", 200_000),
            var("BROWNOUT_BENCH_ROUNDS", 30) as usize,
        );
        return;
    }
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
