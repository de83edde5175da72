//! `ShutdownGuard` pass-through while running, against a bare service and tower's
//! `ConcurrencyLimit` (the closest tower layer that also tracks requests in flight).
//!
//! Futures are polled by hand with a no-op waker, so the figures are the layers' own cost
//! (no runtime, no task wake-ups).
#![allow(missing_docs)]
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use brownout_shutdown::{Shutdown, ShutdownGuard};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::Service;
use tower::limit::ConcurrencyLimit;

/// A service whose futures are ready at once.
#[derive(Clone, Copy)]
struct Instant;

impl Service<u64> for Instant {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req.wrapping_add(1)))
    }
}

/// A service whose futures return `Pending` once (waking themselves), then the response:
/// the path where the guard registers for the abort notification.
#[derive(Clone, Copy)]
struct YieldOnce;

struct YieldOnceFuture {
    value: u64,
    yielded: bool,
}

impl Future for YieldOnceFuture {
    type Output = Result<u64, Infallible>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.yielded {
            Poll::Ready(Ok(self.value))
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl Service<u64> for YieldOnce {
    type Response = u64;
    type Error = Infallible;
    type Future = YieldOnceFuture;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        YieldOnceFuture {
            value: req.wrapping_add(1),
            yielded: false,
        }
    }
}

/// `poll_ready`, `call`, then poll the response to completion with a no-op waker.
fn round_trip<S>(svc: &mut S, req: u64) -> Option<u64>
where
    S: Service<u64, Response = u64>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return None,
    }
    let mut fut = pin!(svc.call(req));
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out.ok();
        }
    }
}

fn pass_through(c: &mut Criterion) {
    let mut group = c.benchmark_group("pass_through_ready");
    let shutdown = Shutdown::new();
    let mut bare = Instant;
    group.bench_function("baseline_bare_service", |b| {
        b.iter(|| round_trip(&mut bare, black_box(7)))
    });
    let mut guard = ShutdownGuard::new(Instant, &shutdown);
    group.bench_function("brownout_ShutdownGuard", |b| {
        b.iter(|| round_trip(&mut guard, black_box(7)))
    });
    let mut limit = ConcurrencyLimit::new(Instant, 1 << 20);
    group.bench_function("tower_ConcurrencyLimit", |b| {
        b.iter(|| round_trip(&mut limit, black_box(7)))
    });
    group.finish();

    let mut group = c.benchmark_group("pass_through_pending_once");
    let mut bare = YieldOnce;
    group.bench_function("baseline_bare_service", |b| {
        b.iter(|| round_trip(&mut bare, black_box(7)))
    });
    let mut guard = ShutdownGuard::new(YieldOnce, &shutdown);
    group.bench_function("brownout_ShutdownGuard", |b| {
        b.iter(|| round_trip(&mut guard, black_box(7)))
    });
    let mut limit = ConcurrencyLimit::new(YieldOnce, 1 << 20);
    group.bench_function("tower_ConcurrencyLimit", |b| {
        b.iter(|| round_trip(&mut limit, black_box(7)))
    });
    group.finish();
    assert_eq!(shutdown.in_flight(), 0);

    // After the trigger: every request is refused with a boxed `Rejected`.
    let mut group = c.benchmark_group("refused_after_trigger");
    let mut bare = Instant;
    group.bench_function("baseline_bare_service", |b| {
        b.iter(|| round_trip(&mut bare, black_box(7)))
    });
    let stopped = Shutdown::new();
    stopped.trigger();
    let mut refused = ShutdownGuard::new(Instant, &stopped);
    group.bench_function("brownout_ShutdownGuard_refused", |b| {
        b.iter(|| round_trip(&mut refused, black_box(7)))
    });
    group.finish();
}

criterion_group!(benches, pass_through);
criterion_main!(benches);
