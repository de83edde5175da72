//! Admission benchmarks: admit path and reject paths against tower's `ConcurrencyLimit`,
//! `LoadShed` and `RateLimit`, allocations per request, and a 2-thread contention case.
//!
//! `cargo bench -p brownout-admission --bench admission -- --warm-up-time 1 --measurement-time 3`
//!
//! On a loaded machine, CPU time per request in interleaved rounds (see `cpu_time`):
//! `BROWNOUT_BENCH_CPU=7 cargo bench -p brownout-admission --bench admission -- cpu_only`

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use brownout_admission::{
    GradientConfig, Limit, NoDeadline, PriorityAdmissionLayer, QueueTimeout, RateLimit,
};
use brownout_core::{Fixed, Priority};
use criterion::{Criterion, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::limit::{ConcurrencyLimit, RateLimit as TowerRateLimit};
use tower::load_shed::LoadShed;
use tower::{Layer, Service};

#[path = "../../../benches/support/cpu.rs"]
mod cpu;
use cpu::{CpuRow, cpu_row, once};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The cheapest possible inner service.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// One request through `svc`: poll_ready, call, poll the future once; true if it succeeded.
#[inline]
fn admission(limit: Limit) -> PriorityAdmissionLayer<Fixed, NoDeadline> {
    PriorityAdmissionLayer::builder()
        .limit(limit)
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap()
}

fn allocations_per_request<S: Service<u64>>(name: &str, svc: &mut S) {
    let mut cx = Context::from_waker(Waker::noop());
    for i in 0..1000 {
        once(svc, &mut cx, i);
    }
    const N: u64 = 10_000;
    let region = Region::new(GLOBAL);
    for i in 0..N {
        black_box(once(svc, &mut cx, i));
    }
    let stats = region.change();
    eprintln!(
        "allocations per request: {name}: {:.2}",
        stats.allocations as f64 / N as f64
    );
}

fn admit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("admit");

    let mut bare = Echo;
    group.bench_function("bare_service", |b| {
        b.iter(|| once(&mut bare, &mut cx, black_box(1)))
    });
    let mut tower_limit = ConcurrencyLimit::new(Echo, 1024);
    group.bench_function("tower_ConcurrencyLimit", |b| {
        b.iter(|| once(&mut tower_limit, &mut cx, black_box(1)))
    });
    let mut fixed = admission(Limit::fixed(1024)).layer(Echo);
    group.bench_function("brownout_PriorityAdmission_fixed", |b| {
        b.iter(|| once(&mut fixed, &mut cx, black_box(1)))
    });
    let mut gradient = admission(Limit::gradient(GradientConfig::default())).layer(Echo);
    group.bench_function("brownout_PriorityAdmission_gradient", |b| {
        b.iter(|| once(&mut gradient, &mut cx, black_box(1)))
    });
    let mut keyed = keyed_admit();
    group.bench_function("brownout_PriorityAdmission_keyed_rate", |b| {
        b.iter(|| once(&mut keyed, &mut cx, black_box(1)))
    });
    group.finish();

    allocations_per_request("bare", &mut Echo);
    allocations_per_request(
        "tower ConcurrencyLimit",
        &mut ConcurrencyLimit::new(Echo, 1024),
    );
    allocations_per_request(
        "PriorityAdmission fixed (admit)",
        &mut admission(Limit::fixed(1024)).layer(Echo),
    );
    allocations_per_request(
        "PriorityAdmission gradient (admit)",
        &mut admission(Limit::gradient(GradientConfig::default())).layer(Echo),
    );
    allocations_per_request("PriorityAdmission keyed rate (admit)", &mut keyed_admit());
}

/// A service that never finishes, to hold permits.
#[derive(Clone, Copy)]
struct Never;

impl Service<u64> for Never {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Pending<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        std::future::pending()
    }
}

/// Routes request 0 to `Never` (to hold the only permit), the others to `Echo`.
#[derive(Clone, Copy)]
struct HoldFirst;

impl Service<u64> for HoldFirst {
    type Response = u64;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        if req == 0 {
            Box::pin(std::future::pending())
        } else {
            Box::pin(ready(Ok(req)))
        }
    }
}

/// Futures that hold the permits / queue slots of the reject rows.
type Holds = Vec<Box<dyn std::any::Any>>;

/// Polls `fut` once and keeps it (holding whatever it took) in `holds`.
fn hold<F: Future + 'static>(fut: F, cx: &mut Context<'_>, holds: &mut Holds) {
    let mut fut = Box::pin(fut);
    let _ = fut.as_mut().poll(cx);
    holds.push(Box::new(fut));
}

/// tower: LoadShed over a saturated ConcurrencyLimit(1).
fn tower_shed_full(cx: &mut Context<'_>, holds: &mut Holds) -> impl Service<u64> + 'static {
    let mut shed = LoadShed::new(ConcurrencyLimit::new(Never, 1));
    assert!(matches!(shed.poll_ready(cx), Poll::Ready(Ok(()))));
    hold(shed.call(0), cx, holds);
    shed
}

/// brownout: limit 1 held, no queue → QueueFull.
fn queue_full(cx: &mut Context<'_>, holds: &mut Holds) -> impl Service<u64> + 'static {
    let layer = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1))
        .queue_capacity(0)
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let mut full = layer.layer(HoldFirst);
    assert!(matches!(full.poll_ready(cx), Poll::Ready(Ok(()))));
    hold(full.call(0), cx, holds);
    assert_eq!(layer.handle().in_flight(), 1);
    full
}

/// brownout: a full queue of Critical, a Low newcomer → QueueFull (with the lock). Send 2.
fn queue_full_locked(cx: &mut Context<'_>, holds: &mut Holds) -> impl Service<u64> + 'static {
    let layer_q = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1))
        .queue_capacity(1)
        .queue_timeout(QueueTimeout::fixed(Duration::from_secs(3600)))
        .classifier(|r: &u64| {
            if *r < 2 {
                Priority::Critical
            } else {
                Priority::Low
            }
        })
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let mut qfull = layer_q.layer(HoldFirst);
    let _ = qfull.poll_ready(cx);
    hold(qfull.call(0), cx, holds);
    let _ = qfull.poll_ready(cx);
    hold(qfull.call(1), cx, holds);
    assert_eq!(layer_q.handle().queued(), 1);
    qfull
}

/// brownout: rate limited (governor), bucket empty.
fn rate_limited(cx: &mut Context<'_>) -> impl Service<u64> + 'static {
    let mut limited = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .rate_limit(RateLimit::per_second(0.001).burst(1))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap()
        .layer(Echo);
    assert!(once(&mut limited, cx, 0));
    limited
}

/// brownout: per-key rate limit (one u32 key), bucket empty.
fn keyed_rate_limited(cx: &mut Context<'_>) -> impl Service<u64> + 'static {
    let mut keyed = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .keyed_rate_limit(|_: &u64| Some(7u32), RateLimit::per_second(0.001).burst(1))
        .build()
        .unwrap()
        .layer(Echo);
    assert!(once(&mut keyed, cx, 0));
    keyed
}

/// brownout: per-key rate limit, a ~12-byte tenant name as the key (`&'static str`: the
/// hash and comparison of a string key, without an extractor that allocates), bucket empty.
fn keyed_rate_limited_str(cx: &mut Context<'_>) -> impl Service<u64> + 'static {
    let mut keyed = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .keyed_rate_limit(
            |_: &u64| Some(black_box("tenant-00042")),
            RateLimit::per_second(0.001).burst(1),
        )
        .build()
        .unwrap()
        .layer(Echo);
    assert!(once(&mut keyed, cx, 0));
    keyed
}

/// brownout: per-key rate limit with room (10⁹/s, full burst): the keyed admit (clock read
/// and CAS), key u32.
fn keyed_admit() -> impl Service<u64> + 'static {
    PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .keyed_rate_limit(
            |_: &u64| Some(7u32),
            RateLimit::per_second(1e9).burst(u32::MAX),
        )
        .build()
        .unwrap()
        .layer(Echo)
}

/// tower: RateLimit with an exhausted budget (poll_ready is Pending; no rejection).
fn tower_rate_exhausted(cx: &mut Context<'_>) -> impl Service<u64> + 'static {
    let mut tower_rate = TowerRateLimit::new(
        Echo,
        tower::limit::rate::Rate::new(1, Duration::from_secs(3600)),
    );
    once(&mut tower_rate, cx, 0);
    tower_rate
}

fn reject(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut holds = Holds::new();
    let mut shed = tower_shed_full(&mut cx, &mut holds);
    let mut full = queue_full(&mut cx, &mut holds);
    let mut qfull = queue_full_locked(&mut cx, &mut holds);
    let mut limited = rate_limited(&mut cx);
    let mut keyed = keyed_rate_limited(&mut cx);
    let mut keyed_str = keyed_rate_limited_str(&mut cx);
    let mut tower_rate = tower_rate_exhausted(&mut cx);

    let mut group = c.benchmark_group("reject");
    group.bench_function("tower_LoadShed_ConcurrencyLimit_full", |b| {
        b.iter(|| once(&mut shed, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_PriorityAdmission_queue_full", |b| {
        b.iter(|| once(&mut full, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_PriorityAdmission_queue_full_locked", |b| {
        b.iter(|| once(&mut qfull, &mut cx, black_box(2)))
    });
    group.bench_function("brownout_PriorityAdmission_rate_limited", |b| {
        b.iter(|| once(&mut limited, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_PriorityAdmission_keyed_rate_limited", |b| {
        b.iter(|| once(&mut keyed, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_PriorityAdmission_keyed_rate_limited_str", |b| {
        b.iter(|| once(&mut keyed_str, &mut cx, black_box(1)))
    });
    group.bench_function("tower_RateLimit_exhausted_poll_ready", |b| {
        b.iter(|| once(&mut tower_rate, &mut cx, black_box(1)))
    });
    group.finish();

    allocations_per_request("tower LoadShed(ConcurrencyLimit) full", &mut shed);
    allocations_per_request("PriorityAdmission queue full (no queue)", &mut full);
    allocations_per_request("PriorityAdmission queue full (locked)", &mut qfull);
    allocations_per_request("PriorityAdmission rate limited", &mut limited);
    allocations_per_request("PriorityAdmission keyed rate limited", &mut keyed);
    allocations_per_request("PriorityAdmission keyed rate limited (str)", &mut keyed_str);
    drop(holds);
}

/// `BROWNOUT_BENCH_CPU=<rounds>` (optionally `BROWNOUT_BENCH_N=<requests per round>`): this
/// thread's CPU time per request of the admit and reject rows, in interleaved rounds, min
/// and median printed. CPU time leaves out the time the thread waits for a core, so the rows
/// of one run stay comparable on a loaded machine (Linux only). The criterion groups still
/// run after it unless filtered out (e.g. `-- cpu_only`).
fn cpu_time(_: &mut Criterion) {
    let Some(rounds) = std::env::var("BROWNOUT_BENCH_CPU")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let n: u64 = std::env::var("BROWNOUT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut holds = Holds::new();
    let mut rows: Vec<CpuRow> = vec![
        cpu_row(
            "admit/tower_ConcurrencyLimit",
            ConcurrencyLimit::new(Echo, 1024),
            1,
        ),
        cpu_row(
            "admit/brownout_PriorityAdmission_fixed",
            admission(Limit::fixed(1024)).layer(Echo),
            1,
        ),
        cpu_row(
            "admit/brownout_PriorityAdmission_gradient",
            admission(Limit::gradient(GradientConfig::default())).layer(Echo),
            1,
        ),
        cpu_row(
            "admit/brownout_PriorityAdmission_keyed_rate",
            keyed_admit(),
            1,
        ),
        cpu_row(
            "reject/tower_LoadShed_ConcurrencyLimit_full",
            tower_shed_full(&mut cx, &mut holds),
            1,
        ),
        cpu_row(
            "reject/brownout_PriorityAdmission_queue_full",
            queue_full(&mut cx, &mut holds),
            1,
        ),
        cpu_row(
            "reject/brownout_PriorityAdmission_queue_full_locked",
            queue_full_locked(&mut cx, &mut holds),
            2,
        ),
        cpu_row(
            "reject/brownout_PriorityAdmission_rate_limited",
            rate_limited(&mut cx),
            1,
        ),
        cpu_row(
            "reject/brownout_PriorityAdmission_keyed_rate_limited",
            keyed_rate_limited(&mut cx),
            1,
        ),
        cpu_row(
            "reject/brownout_PriorityAdmission_keyed_rate_limited_str",
            keyed_rate_limited_str(&mut cx),
            1,
        ),
        cpu_row(
            "reject/tower_RateLimit_exhausted_poll_ready",
            tower_rate_exhausted(&mut cx),
            1,
        ),
    ];
    let mut times = vec![Vec::new(); rows.len()];
    // Warm up, and size each row's round to about `n` × 100 ns of CPU (the thread's CPU
    // clock advances in scheduler ticks, so a round must be long against a tick).
    let sizes: Vec<u64> = rows
        .iter_mut()
        .map(|(_, run)| {
            run(n / 10);
            let start = Instant::now();
            run(n / 10);
            let per_request = start.elapsed().as_nanos() as f64 / (n / 10) as f64;
            ((n as f64 * 100.0 / per_request.max(1.0)) as u64).max(n / 10)
        })
        .collect();
    for _ in 0..rounds {
        for (((_, run), times), size) in rows.iter_mut().zip(times.iter_mut()).zip(&sizes) {
            times.push(run(*size));
        }
    }
    println!("CPU ns per request, {rounds} interleaved rounds of ~{n} x 100 ns: min / median");
    for ((name, _), times) in rows.iter().zip(times.iter_mut()) {
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<55} {:>8.1} {:>8.1}",
            times[0],
            times[times.len() / 2]
        );
    }
    drop(holds);
}

/// Two threads admitting and completing through one shared limit.
fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("contention_2_threads");
    fn run<S>(make: impl Fn() -> S + Sync, iters: u64) -> Duration
    where
        S: Service<u64> + Send,
    {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let mut svc = make();
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    let _guard = rt.enter();
                    let mut cx = Context::from_waker(Waker::noop());
                    for i in 0..iters {
                        black_box(once(&mut svc, &mut cx, i));
                    }
                });
            }
        });
        // Per request (two threads ran `iters` each).
        start.elapsed() / 2
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(1024));
    group.bench_function("tower_ConcurrencyLimit_shared", |b| {
        b.iter_custom(|iters| {
            run(
                || ConcurrencyLimit::with_semaphore(Echo, Arc::clone(&semaphore)),
                iters,
            )
        })
    });
    let layer = admission(Limit::fixed(1024));
    group.bench_function("brownout_PriorityAdmission_fixed", |b| {
        b.iter_custom(|iters| run(|| layer.layer(Echo), iters))
    });
    let layer = admission(Limit::gradient(GradientConfig::default()));
    group.bench_function("brownout_PriorityAdmission_gradient", |b| {
        b.iter_custom(|iters| run(|| layer.layer(Echo), iters))
    });
    // Both threads refused by one rate limit whose bucket is empty.
    let layer = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .rate_limit(RateLimit::per_second(0.001).burst(1))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    spend_the_burst(&layer);
    group.bench_function("brownout_PriorityAdmission_rate_limited", |b| {
        b.iter_custom(|iters| run(|| layer.layer(Echo), iters))
    });
    // Both threads refused by one key's rate limit whose bucket is empty.
    let keyed = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .keyed_rate_limit(|_: &u64| Some(7u32), RateLimit::per_second(0.001).burst(1))
        .build()
        .unwrap();
    spend_the_burst(&keyed);
    group.bench_function("brownout_PriorityAdmission_keyed_rate_limited", |b| {
        b.iter_custom(|iters| run(|| keyed.layer(Echo), iters))
    });
    group.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, cpu_time, admit, reject, contention);
}
use group::benches;
criterion_main!(benches);

/// Admits the one request the bucket of `layer`'s (keyed) rate limit holds, so that every
/// later request is refused.
fn spend_the_burst<L: Layer<Echo>>(layer: &L)
where
    L::Service: Service<u64>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    once(
        &mut layer.layer(Echo),
        &mut Context::from_waker(Waker::noop()),
        0,
    );
}
