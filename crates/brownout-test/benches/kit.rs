//! What the kit costs: the chaos layer's pass-through beside a bare service, and the
//! driver's real time per simulated request beside a bare service.
//!
//! `cargo bench -p brownout-test --bench kit -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brownout_core::Priority;
use brownout_test::{ChaosLayer, Faults, Latency, LoadDriver, MockBackend};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower::{Layer, Service, service_fn};

fn bare() -> impl Service<
    u32,
    Response = u32,
    Error = Infallible,
    Future = std::future::Ready<Result<u32, Infallible>>,
> + Clone {
    service_fn(|n: u32| std::future::ready(Ok(n)))
}

/// One `call` and one poll of its future (ready at once).
fn call_once<S: Service<u32>>(svc: &mut S, n: u32) -> bool {
    let fut = pin!(svc.call(n));
    let mut cx = Context::from_waker(Waker::noop());
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn chaos(c: &mut Criterion) {
    let mut group = c.benchmark_group("chaos_pass_through");
    let mut plain = bare();
    group.bench_function("bare service_fn", |b| {
        b.iter(|| call_once(&mut plain, black_box(7)))
    });
    let mut off = ChaosLayer::new().layer(bare());
    group.bench_function("ChaosLayer::new() (off)", |b| {
        b.iter(|| call_once(&mut off, black_box(7)))
    });
    let mut other_class = ChaosLayer::builder()
        .class(Priority::Low, Faults::none().error_rate(0.5))
        .build()
        .unwrap()
        .layer(bare());
    group.bench_function("ChaosLayer on, no fault for this class", |b| {
        b.iter(|| call_once(&mut other_class, black_box(7)))
    });
    let mut drawing = ChaosLayer::builder()
        .all(Faults::none().error_rate(0.01))
        .build()
        .unwrap()
        .layer(bare());
    group.bench_function("ChaosLayer on, 1 % errors (lock + draw)", |b| {
        b.iter(|| call_once(&mut drawing, black_box(7)))
    });
    group.finish();
}

fn driver(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let driver = LoadDriver::builder()
        .rate(2000.0)
        .duration(Duration::from_secs(1))
        .seed(1)
        .build()
        .unwrap();
    let requests = driver.plan(|_, _| ()).len() as u64;
    let mut group = c.benchmark_group("driver_per_request");
    group.throughput(Throughput::Elements(requests));
    group.sample_size(20);
    group.bench_function("bare service_fn", |b| {
        b.iter(|| {
            runtime.block_on(driver.run(
                service_fn(|_: ()| async { Ok::<_, Infallible>(()) }),
                |_| (),
            ))
        })
    });
    group.bench_function("MockBackend 16 workers, exp 5 ms", |b| {
        b.iter(|| {
            let backend = runtime.block_on(async {
                MockBackend::builder()
                    .workers(16)
                    .latency(Latency::Exponential {
                        mean: Duration::from_millis(5),
                    })
                    .build()
                    .unwrap()
            });
            runtime.block_on(driver.run(backend, |_| ()))
        })
    });
    group.finish();
}

criterion_group!(benches, chaos, driver);
criterion_main!(benches);
