//! Admission benchmarks: admit path and reject paths against tower's `ConcurrencyLimit`,
//! `LoadShed` and `RateLimit`, allocations per request, and a 2-thread contention case.
//!
//! `cargo bench -p brownout-admission --bench admission -- --warm-up-time 1 --measurement-time 3`

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
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
fn once<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> bool {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

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

fn reject(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("reject");

    // tower: LoadShed over a saturated ConcurrencyLimit(1).
    let mut shed = LoadShed::new(ConcurrencyLimit::new(Never, 1));
    assert!(matches!(shed.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut held = Box::pin(shed.call(0));
    let _ = held.as_mut().poll(&mut cx);
    group.bench_function("tower_LoadShed_ConcurrencyLimit_full", |b| {
        b.iter(|| once(&mut shed, &mut cx, black_box(1)))
    });

    // brownout: limit 1 held, no queue → QueueFull.
    let layer = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1))
        .queue_capacity(0)
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let mut full = layer.layer(HoldFirst);
    assert!(matches!(full.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut held2 = Box::pin(full.call(0));
    let _ = held2.as_mut().poll(&mut cx);
    assert_eq!(layer.handle().in_flight(), 1);
    group.bench_function("brownout_PriorityAdmission_queue_full", |b| {
        b.iter(|| once(&mut full, &mut cx, black_box(1)))
    });

    // brownout: a full queue of Critical, a Low newcomer → QueueFull (with the lock).
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
    let _ = qfull.poll_ready(&mut cx);
    let mut h0 = Box::pin(qfull.call(0));
    let _ = h0.as_mut().poll(&mut cx);
    let _ = qfull.poll_ready(&mut cx);
    let mut h1 = Box::pin(qfull.call(1));
    let _ = h1.as_mut().poll(&mut cx);
    assert_eq!(layer_q.handle().queued(), 1);
    group.bench_function("brownout_PriorityAdmission_queue_full_locked", |b| {
        b.iter(|| once(&mut qfull, &mut cx, black_box(2)))
    });

    // brownout: rate limited (governor), bucket empty.
    let mut limited = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .rate_limit(RateLimit::per_second(0.001).burst(1))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .build()
        .unwrap()
        .layer(Echo);
    once(&mut limited, &mut cx, 0);
    group.bench_function("brownout_PriorityAdmission_rate_limited", |b| {
        b.iter(|| once(&mut limited, &mut cx, black_box(1)))
    });

    // brownout: per-key rate limit (governor's keyed limiter, one key), bucket empty.
    let mut keyed = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1024))
        .classifier(Fixed(Priority::High))
        .deadline(NoDeadline)
        .keyed_rate_limit(|_: &u64| Some(7u32), RateLimit::per_second(0.001).burst(1))
        .build()
        .unwrap()
        .layer(Echo);
    once(&mut keyed, &mut cx, 0);
    group.bench_function("brownout_PriorityAdmission_keyed_rate_limited", |b| {
        b.iter(|| once(&mut keyed, &mut cx, black_box(1)))
    });

    // tower: RateLimit with an exhausted budget (poll_ready is Pending; no rejection).
    let mut tower_rate = TowerRateLimit::new(
        Echo,
        tower::limit::rate::Rate::new(1, Duration::from_secs(3600)),
    );
    once(&mut tower_rate, &mut cx, 0);
    group.bench_function("tower_RateLimit_exhausted_poll_ready", |b| {
        b.iter(|| once(&mut tower_rate, &mut cx, black_box(1)))
    });
    group.finish();

    allocations_per_request("tower LoadShed(ConcurrencyLimit) full", &mut shed);
    allocations_per_request("PriorityAdmission queue full (no queue)", &mut full);
    allocations_per_request("PriorityAdmission queue full (locked)", &mut qfull);
    allocations_per_request("PriorityAdmission rate limited", &mut limited);
    allocations_per_request("PriorityAdmission keyed rate limited", &mut keyed);
    drop((held, held2, h0, h1));
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
    group.bench_function("brownout_PriorityAdmission_rate_limited", |b| {
        b.iter_custom(|iters| run(|| layer.layer(Echo), iters))
    });
    group.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, admit, reject, contention);
}
use group::benches;
criterion_main!(benches);
