//! Circuit breaker hot paths: closed-state pass-through against a bare service, open-state
//! rejection against tower's `LoadShed` fail-fast (tower has no circuit breaker), and
//! per-key lookup.
#![allow(missing_docs)]

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brownout_breaker::{BreakerState, CircuitBreakConfig, CircuitBreakLayer, Window};
use brownout_core::{BoxError, LoadLevel, RejectReason, Rejected};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, service_fn};

/// Drives one request through `svc` synchronously (every service here is ready at once).
#[inline]
fn drive<S>(svc: &mut S, req: u32) -> Result<u32, BoxError>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("pending"),
    }
}

fn ok_service() -> impl Service<
    u32,
    Response = u32,
    Error = BoxError,
    Future = std::future::Ready<Result<u32, BoxError>>,
> + Clone {
    service_fn(|x: u32| std::future::ready(Ok::<u32, BoxError>(x)))
}

fn err_service() -> impl Service<
    u32,
    Response = u32,
    Error = BoxError,
    Future = std::future::Ready<Result<u32, BoxError>>,
> + Clone {
    service_fn(|_: u32| std::future::ready(Err::<u32, BoxError>("down".into())))
}

/// A service that is never ready, so tower's `LoadShed` rejects every call.
#[derive(Clone)]
struct NeverReady;

impl Service<u32> for NeverReady {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, req: u32) -> Self::Future {
        std::future::ready(Ok(req))
    }
}

fn closed(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_closed_pass_through");
    let mut bare = ok_service();
    group.bench_function("baseline_bare_service", |b| {
        b.iter(|| drive(&mut bare, black_box(1)).unwrap())
    });

    let mut count = CircuitBreakLayer::new(CircuitBreakConfig::default()).layer(ok_service());
    group.bench_function("brownout_CircuitBreak_count_window", |b| {
        b.iter(|| drive(&mut count, black_box(1)).unwrap())
    });

    let config = CircuitBreakConfig::builder()
        .window(Window::Time(Duration::from_secs(10)))
        .build()
        .unwrap();
    let mut time = CircuitBreakLayer::new(config).layer(ok_service());
    group.bench_function("brownout_CircuitBreak_time_window", |b| {
        b.iter(|| drive(&mut time, black_box(1)).unwrap())
    });

    let config = CircuitBreakConfig::builder()
        .slow_call_rate(0.5)
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut slow = CircuitBreakLayer::new(config).layer(ok_service());
    group.bench_function("brownout_CircuitBreak_count_window_slow_rate", |b| {
        b.iter(|| drive(&mut slow, black_box(1)).unwrap())
    });

    let mut keyed = CircuitBreakLayer::new(CircuitBreakConfig::default())
        .with_key(|req: &u32| *req % 64)
        .layer(ok_service());
    let mut n = 0u32;
    group.bench_function("brownout_CircuitBreak_per_key_64_keys", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            drive(&mut keyed, black_box(n)).unwrap()
        })
    });
    group.finish();
}

fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_open_rejection");

    let mut shed = tower::load_shed::LoadShedLayer::new().layer(NeverReady);
    group.bench_function("tower_LoadShed_overloaded", |b| {
        b.iter(|| drive(&mut shed, black_box(1)).unwrap_err())
    });

    group.bench_function("baseline_box_Rejected", |b| {
        b.iter(|| {
            BoxError::from(black_box(
                Rejected::new(RejectReason::CircuitOpen, LoadLevel::Normal)
                    .with_retry_after(Duration::from_secs(1)),
            ))
        })
    });

    let config = CircuitBreakConfig::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(3600))
        .build()
        .unwrap();
    let layer = CircuitBreakLayer::new(config.clone());
    let handle = layer.handle();
    let mut open = layer.layer(err_service());
    let _ = drive(&mut open, 0);
    assert_eq!(handle.state(), BreakerState::Open);
    group.bench_function("brownout_CircuitBreak_open", |b| {
        b.iter(|| drive(&mut open, black_box(1)).unwrap_err())
    });

    let layer = CircuitBreakLayer::new(config.clone());
    layer.handle().force_open();
    let mut forced = layer.layer(err_service());
    group.bench_function("brownout_CircuitBreak_forced_open", |b| {
        b.iter(|| drive(&mut forced, black_box(1)).unwrap_err())
    });

    let layer =
        CircuitBreakLayer::new(config.clone()).with_static_fallback(|req: u32, _: &Rejected| req);
    let mut fallback = layer.layer(err_service());
    let _ = drive(&mut fallback, 0);
    group.bench_function("brownout_CircuitBreak_open_static_fallback", |b| {
        b.iter(|| drive(&mut fallback, black_box(1)).unwrap())
    });

    let layer = CircuitBreakLayer::new(config).with_key(|req: &u32| *req % 64);
    let handle = layer.handle();
    let mut keyed = layer.layer(err_service());
    for k in 0..64 {
        let _ = drive(&mut keyed, k);
    }
    assert_eq!(handle.open_count(), 64);
    let mut n = 0u32;
    group.bench_function("brownout_CircuitBreak_open_per_key_64_keys", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            drive(&mut keyed, black_box(n)).unwrap_err()
        })
    });
    group.finish();
}

criterion_group!(benches, closed, open, primitives);
criterion_main!(benches);

/// What the paths above are made of, on this machine.
fn primitives(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_primitives");
    group.bench_function("std_Instant::now", |b| b.iter(std::time::Instant::now));
    group.bench_function("tokio_Instant::now", |b| b.iter(tokio::time::Instant::now));
    let mutex = std::sync::Mutex::new(0u64);
    group.bench_function("std_Mutex_lock_unlock", |b| {
        b.iter(|| *black_box(&mutex).lock().unwrap() += 1)
    });
    let arc = std::sync::Arc::new(0u64);
    group.bench_function("Arc_clone_drop", |b| b.iter(|| black_box(arc.clone())));
    group.finish();
}
