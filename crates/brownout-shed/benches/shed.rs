//! Cost of `LoadShed` on the admitted and the rejected path, against tower's `LoadShed`
//! and a bare service in the same groups.
#![allow(missing_docs)]
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use brownout_core::{Fixed, LoadLevel, LoadSignal, Priority};
use brownout_shed::{LoadShedConfig, LoadShedLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};

/// Always ready, answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// Never ready (for tower's overloaded path).
#[derive(Clone, Copy)]
struct Busy;

impl Service<u64> for Busy {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Pending
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// One request through `svc`: poll_ready, call, poll the future to completion.
#[inline]
fn one<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> bool
where
    S: Service<u64>,
{
    let _ = svc.poll_ready(cx);
    let fut = pin!(svc.call(req));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

fn admit(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("shed_admit");

    let mut bare = Echo;
    group.bench_function("bare_service", |b| {
        b.iter(|| one(&mut bare, &mut cx, black_box(7)))
    });

    let mut tower_shed = tower::load_shed::LoadShed::new(Echo);
    group.bench_function("tower_LoadShed", |b| {
        b.iter(|| one(&mut tower_shed, &mut cx, black_box(7)))
    });

    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    publisher.publish(LoadLevel::High);
    let mut shed = LoadShedLayer::default()
        .with_signal(signal.clone())
        .classifier(Fixed(Priority::High))
        .layer(Echo);
    group.bench_function("brownout_LoadShed", |b| {
        b.iter(|| one(&mut shed, &mut cx, black_box(7)))
    });

    let smooth = LoadShedConfig::builder()
        .smooth(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let mut shed_smooth = LoadShedLayer::new(smooth)
        .with_signal(signal.clone())
        .classifier(Fixed(Priority::High))
        .layer(Echo);
    group.bench_function("brownout_LoadShed_smooth", |b| {
        b.iter(|| one(&mut shed_smooth, &mut cx, black_box(7)))
    });

    let not_ready = LoadShedConfig::builder()
        .shed_when_not_ready(true)
        .build()
        .unwrap();
    let mut shed_not_ready = LoadShedLayer::new(not_ready)
        .with_signal(signal)
        .classifier(Fixed(Priority::High))
        .layer(Echo);
    group.bench_function("brownout_LoadShed_not_ready_mode", |b| {
        b.iter(|| one(&mut shed_not_ready, &mut cx, black_box(7)))
    });
    group.finish();
    drop(publisher);
}

fn reject(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("shed_reject");

    let mut tower_shed = tower::load_shed::LoadShed::new(Busy);
    group.bench_function("tower_LoadShed_overloaded", |b| {
        b.iter(|| one(&mut tower_shed, &mut cx, black_box(7)))
    });

    let mut shed = LoadShedLayer::default()
        .with_signal(LoadSignal::fixed(LoadLevel::High))
        .classifier(Fixed(Priority::Low))
        .layer(Echo);
    group.bench_function("brownout_LoadShed_shed", |b| {
        b.iter(|| one(&mut shed, &mut cx, black_box(7)))
    });
    group.finish();
}

criterion_group!(benches, admit, reject);
criterion_main!(benches);
