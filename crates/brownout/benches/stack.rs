//! The whole brownout stack against tower's four-layer stack, in the same criterion groups.
//!
//! - `stack_admit`: one request through the seven brownout layers in DESIGN.md order
//!   (ShutdownGuard ─► Monitor ─► LoadShed ─► PriorityAdmission ─► AdaptiveTimeout ─►
//!   CircuitBreak ─► Retry ─► a ready inner service) vs tower's LoadShed ─► ConcurrencyLimit
//!   ─► Timeout ─► Retry (trivial policy) over the same inner service, plus the bare service.
//!   The goal rows of issue #7: `brownout_6_layers` (the six layers the issue names, no
//!   monitor, one published level) and `brownout_4_comparable` (LoadShed, PriorityAdmission,
//!   AdaptiveTimeout, Retry: the layers that correspond to tower's four).
//! - `stack_reject`: a Low request at Emergency (shed by LoadShed after the guard and the
//!   monitor) vs tower's LoadShed over a ConcurrencyLimit whose only permit is taken; the
//!   six-layer and comparable stacks shed the same request.
//! - `stack_per_layer`: the brownout stack grown one layer at a time, to see which dominates.
//! - `facade_http`: `Brownout::builder()`'s http stack (classification from `x-priority`,
//!   deadline, shed, admission, monitor, timeout, degradation, rejection responses) vs the
//!   tower equivalent with errors mapped to 503 responses (what tower-http users write).
//! - `stack_threads_N`: N tasks on an N-worker multi-thread runtime, all calling clones of
//!   one shared stack; the time is per request over all tasks (throughput, not latency).
//!
//! Allocations per request are counted with a counting global allocator and printed to
//! stderr before the groups run.
//!
//! ```sh
//! cargo bench -p brownout --bench stack -- --warm-up-time 1 --measurement-time 3
//! # on a loaded machine: CPU time per request, in rounds (see `cpu_time`)
//! BROWNOUT_BENCH_CPU=7 cargo bench -p brownout --bench stack -- cpu_only
//! # only some rows (name contains the text), e.g. the facade's http stack:
//! BROWNOUT_BENCH_CPU=7 BROWNOUT_BENCH_ROWS=http/ cargo bench -p brownout --bench stack -- cpu_only
//! ```
#![allow(missing_docs)]
use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use brownout::admission::{Limit, NoDeadline, PriorityAdmissionLayer};
use brownout::monitor::Monitor;
use brownout::shed::LoadShedLayer;
use brownout::shutdown::Shutdown;
use brownout::timeout::{AdaptiveTimeoutConfig, AdaptiveTimeoutLayer};
use brownout::{BoxError, Brownout, LoadLevel, LoadSignal, Priority};
use brownout_breaker::{CircuitBreakConfig, CircuitBreakLayer};
use brownout_retry::{RetryConfig, RetryLayer};
use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::retry::Policy;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[path = "../../../benches/support/cpu.rs"]
mod cpu;
use cpu::{CpuRow, cpu_row, cpu_row_with, once};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Always ready, answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// An always-ready http handler.
#[derive(Clone, Copy)]
struct Hello;

impl Service<http::Request<()>> for Hello {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<String>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        ready(Ok(http::Response::new(String::new())))
    }
}

/// tower's `Retry` with a policy that clones requests and retries only errors.
#[derive(Clone, Copy)]
struct Trivial;

impl Policy<u64, u64, BoxError> for Trivial {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Ready<()>> {
        result.is_err().then(|| ready(()))
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// Request 1 is High, request 3 is Low (the class is read from the request itself).
fn class(req: &u64) -> Priority {
    if *req == 3 {
        Priority::Low
    } else {
        Priority::High
    }
}

/// Everything the brownout stack's layers share (keeps the monitor's task alive).
struct Parts {
    monitor: Monitor,
    shutdown: Shutdown,
}

fn parts() -> Parts {
    let monitor = Monitor::builder()
        .manual_ticks()
        .build()
        .expect("valid monitor");
    let shutdown = Shutdown::new();
    Parts { monitor, shutdown }
}

macro_rules! shed {
    ($signal:expr) => {
        LoadShedLayer::default()
            .with_signal($signal.clone())
            .classifier(class)
    };
}

macro_rules! admission {
    ($signal:expr) => {
        PriorityAdmissionLayer::builder()
            .limit(Limit::fixed(1 << 20))
            .signal($signal.clone())
            .classifier(class)
            .deadline(NoDeadline)
            .build()
            .expect("valid admission")
    };
}

macro_rules! timeout {
    ($signal:expr) => {
        AdaptiveTimeoutLayer::new(
            AdaptiveTimeoutConfig::builder()
                .initial(Duration::from_secs(1))
                .build()
                .expect("valid timeout"),
        )
        .with_signal($signal.clone())
        .without_caller_deadline()
    };
}

macro_rules! breaker {
    ($signal:expr) => {
        CircuitBreakLayer::new(CircuitBreakConfig::default()).with_signal($signal.clone())
    };
}

macro_rules! retry {
    ($signal:expr) => {
        RetryLayer::new(
            RetryConfig::builder()
                .signal($signal.clone())
                .seed(1)
                .build()
                .expect("valid retry"),
        )
    };
}

/// The seven brownout layers over `inner`, in DESIGN.md order: ShutdownGuard, Monitor,
/// LoadShed, PriorityAdmission, AdaptiveTimeout, CircuitBreak, Retry.
macro_rules! brownout_stack {
    ($parts:expr, $inner:expr) => {{
        let p: &Parts = $parts;
        let signal = p.monitor.signal();
        ServiceBuilder::new()
            .layer(p.shutdown.layer())
            .layer(p.monitor.layer())
            .layer(shed!(signal))
            .layer(admission!(signal))
            .layer(timeout!(signal))
            .layer(breaker!(signal))
            .layer(retry!(signal))
            .service($inner)
    }};
}

/// The same seven layers in the order `Brownout::builder()` stacks them: the monitor
/// measures inside admission, so shed and queued-out requests never reach it.
macro_rules! facade_order_stack {
    ($parts:expr, $inner:expr) => {{
        let p: &Parts = $parts;
        let signal = p.monitor.signal();
        ServiceBuilder::new()
            .layer(p.shutdown.layer())
            .layer(shed!(signal))
            .layer(admission!(signal))
            .layer(p.monitor.layer())
            .layer(timeout!(signal))
            .layer(breaker!(signal))
            .layer(retry!(signal))
            .service($inner)
    }};
}

/// The six layers issue #7 names, without a monitor: ShutdownGuard, LoadShed,
/// PriorityAdmission, AdaptiveTimeout, CircuitBreak, Retry, all reading `signal` (a
/// published level, as a monitor would publish it).
macro_rules! six_layer_stack {
    ($shutdown:expr, $signal:expr, $inner:expr) => {{
        let signal: &LoadSignal = $signal;
        ServiceBuilder::new()
            .layer($shutdown.layer())
            .layer(shed!(signal))
            .layer(admission!(signal))
            .layer(timeout!(signal))
            .layer(breaker!(signal))
            .layer(retry!(signal))
            .service($inner)
    }};
}

/// The brownout layers that correspond to tower's four (LoadShed ─► ConcurrencyLimit ─►
/// Timeout ─► Retry): LoadShed, PriorityAdmission (the concurrency limit), AdaptiveTimeout,
/// Retry, all reading `signal`.
macro_rules! comparable_stack {
    ($signal:expr, $inner:expr) => {{
        let signal: &LoadSignal = $signal;
        ServiceBuilder::new()
            .layer(shed!(signal))
            .layer(admission!(signal))
            .layer(timeout!(signal))
            .layer(retry!(signal))
            .service($inner)
    }};
}

fn tower_stack()
-> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send + 'static {
    ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1 << 20)
        .timeout(Duration::from_secs(1))
        .layer(tower::retry::RetryLayer::new(Trivial))
        .service(Echo)
}

fn allocations_per_request<S: Service<R>, R: Clone>(name: &str, svc: &mut S, req: R) -> f64 {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        once(svc, &mut cx, req.clone());
    }
    const N: u64 = 10_000;
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        black_box(once(svc, &mut cx, req.clone()));
    }
    let per_request = region.change().allocations as f64 / N as f64;
    let _ = svc.poll_ready(&mut cx);
    let future_bytes = std::mem::size_of_val(&svc.call(req));
    eprintln!(
        "allocations per request: {name}: {per_request:.2} (response future: {future_bytes} bytes)"
    );
    per_request
}

/// Makes `monitor` see a busy interval: 10 000 requests (100 000 per second at the default
/// 100 ms tick), then one tick, after which it times one request in N as it would under
/// that load. The benches never tick again, so the rate stays there.
fn busy<S: Service<R>, R: Clone>(name: &str, monitor: &Monitor, svc: &mut S, req: R) {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        once(svc, &mut cx, req.clone());
    }
    monitor.tick_now();
    eprintln!(
        "{name}: the monitor times one request in {} after a busy interval",
        monitor.sample_every()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn admit_and_reject(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    // Admit: High requests at Normal.
    let normal = parts();
    let mut ours = brownout_stack!(&normal, Echo);
    let mut ours_facade_order = facade_order_stack!(&normal, Echo);
    let mut theirs = tower_stack();
    let mut bare = Echo;
    // The goal's stacks: no monitor, one published level.
    let (_normal_publisher, normal_signal) = LoadSignal::channel(LoadLevel::Normal);
    let mut six = six_layer_stack!(&normal.shutdown, &normal_signal, Echo);
    let mut comparable = comparable_stack!(&normal_signal, Echo);
    assert!(once(&mut ours, &mut cx, 1), "the brownout stack admits");
    assert!(once(&mut ours_facade_order, &mut cx, 1));
    assert!(once(&mut six, &mut cx, 1));
    assert!(once(&mut comparable, &mut cx, 1));
    assert!(once(&mut theirs, &mut cx, 1), "the tower stack admits");

    busy("admit", &normal.monitor, &mut ours, 1);
    allocations_per_request("bare service", &mut Echo, 1);
    allocations_per_request("brownout 7-layer stack (admit)", &mut ours, 1);
    allocations_per_request("brownout 6-layer stack (admit)", &mut six, 1);
    allocations_per_request("brownout 4 comparable layers (admit)", &mut comparable, 1);
    allocations_per_request("tower 4-layer stack (admit)", &mut theirs, 1);

    let mut group = c.benchmark_group("stack_admit");
    group.bench_function("bare_service", |b| {
        b.iter(|| once(&mut bare, &mut cx, black_box(1)))
    });
    group.bench_function("tower_4_layers", |b| {
        b.iter(|| once(&mut theirs, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_6_layers", |b| {
        b.iter(|| once(&mut six, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_4_comparable", |b| {
        b.iter(|| once(&mut comparable, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_7_layers", |b| {
        b.iter(|| once(&mut ours, &mut cx, black_box(1)))
    });
    group.bench_function("brownout_7_layers_facade_order", |b| {
        b.iter(|| once(&mut ours_facade_order, &mut cx, black_box(1)))
    });
    group.finish();

    // Reject: Low requests at Emergency.
    let emergency = parts();
    emergency.monitor.publisher().force(LoadLevel::Emergency);
    let mut ours = brownout_stack!(&emergency, Echo);
    let mut ours_facade_order = facade_order_stack!(&emergency, Echo);
    assert!(!once(&mut ours, &mut cx, 3), "Low is shed at Emergency");
    assert!(!once(&mut ours_facade_order, &mut cx, 3));
    let (emergency_publisher, emergency_signal) = LoadSignal::channel(LoadLevel::Normal);
    emergency_publisher.publish(LoadLevel::Emergency);
    let mut six = six_layer_stack!(&emergency.shutdown, &emergency_signal, Echo);
    let mut comparable = comparable_stack!(&emergency_signal, Echo);
    assert!(!once(&mut six, &mut cx, 3));
    assert!(!once(&mut comparable, &mut cx, 3));
    // tower: LoadShed over a ConcurrencyLimit whose only permit a clone holds.
    let mut holder = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .timeout(Duration::from_secs(1))
        .layer(tower::retry::RetryLayer::new(Trivial))
        .service(Echo);
    let mut theirs = holder.clone();
    assert!(matches!(holder.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert!(
        !once(&mut theirs, &mut cx, 3),
        "tower sheds when the limit is taken"
    );

    busy("reject", &emergency.monitor, &mut ours, 3);
    allocations_per_request("brownout 7-layer stack (reject)", &mut ours, 3);
    allocations_per_request(
        "brownout 7-layer stack, facade order (reject)",
        &mut ours_facade_order,
        3,
    );
    allocations_per_request("brownout 6-layer stack (reject)", &mut six, 3);
    allocations_per_request("brownout 4 comparable layers (reject)", &mut comparable, 3);
    allocations_per_request("tower 4-layer stack (reject)", &mut theirs, 3);

    let mut group = c.benchmark_group("stack_reject");
    group.bench_function("tower_4_layers_overloaded", |b| {
        b.iter(|| once(&mut theirs, &mut cx, black_box(3)))
    });
    group.bench_function("brownout_6_layers_shed_low_at_emergency", |b| {
        b.iter(|| once(&mut six, &mut cx, black_box(3)))
    });
    group.bench_function("brownout_4_comparable_shed_low_at_emergency", |b| {
        b.iter(|| once(&mut comparable, &mut cx, black_box(3)))
    });
    group.bench_function("brownout_7_layers_shed_low_at_emergency", |b| {
        b.iter(|| once(&mut ours, &mut cx, black_box(3)))
    });
    group.bench_function("brownout_7_layers_facade_order_shed", |b| {
        b.iter(|| once(&mut ours_facade_order, &mut cx, black_box(3)))
    });
    group.finish();
    drop(holder);
}

fn per_layer(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let p = parts();
    let signal = p.monitor.signal();
    let mut group = c.benchmark_group("stack_per_layer");

    // Each variant is the stack from the inside out: Retry alone, then + CircuitBreak, ...
    let retry = || retry!(signal);
    let breaker = || breaker!(signal);
    let timeout = || timeout!(signal);
    let admission = || admission!(signal);
    let shed = || shed!(signal);

    let mut s1 = retry().layer(Echo);
    bench(&mut group, "1_retry_alone", &mut s1, &mut cx);
    let mut s2 = breaker().layer(retry().layer(Echo));
    bench(&mut group, "2_breaker_retry", &mut s2, &mut cx);
    let mut s3 = timeout().layer(breaker().layer(retry().layer(Echo)));
    bench(&mut group, "3_timeout_breaker_retry", &mut s3, &mut cx);
    let mut s4 = admission().layer(timeout().layer(breaker().layer(retry().layer(Echo))));
    bench(&mut group, "4_admission_..", &mut s4, &mut cx);
    let mut s5 =
        shed().layer(admission().layer(timeout().layer(breaker().layer(retry().layer(Echo)))));
    bench(&mut group, "5_shed_..", &mut s5, &mut cx);
    let mut s6 = p.monitor.layer().layer(
        shed().layer(admission().layer(timeout().layer(breaker().layer(retry().layer(Echo))))),
    );
    bench(&mut group, "6_monitor_..", &mut s6, &mut cx);
    let mut s7 = brownout_stack!(&p, Echo);
    busy("per layer", &p.monitor, &mut s7, 1);
    bench(&mut group, "7_shutdown_guard_.._full", &mut s7, &mut cx);

    // Each layer alone over the bare service.
    let mut alone_guard = p.shutdown.layer().layer(Echo);
    bench(
        &mut group,
        "alone_shutdown_guard",
        &mut alone_guard,
        &mut cx,
    );
    let mut alone_monitor = p.monitor.layer().layer(Echo);
    bench(&mut group, "alone_monitor", &mut alone_monitor, &mut cx);
    let mut alone_shed = shed().layer(Echo);
    bench(&mut group, "alone_shed", &mut alone_shed, &mut cx);
    let mut alone_admission = admission().layer(Echo);
    bench(&mut group, "alone_admission", &mut alone_admission, &mut cx);
    let mut alone_timeout = timeout().layer(Echo);
    bench(&mut group, "alone_timeout", &mut alone_timeout, &mut cx);
    let mut alone_breaker = breaker().layer(Echo);
    bench(&mut group, "alone_breaker", &mut alone_breaker, &mut cx);

    // For scale: one clock read (most layers read the clock once or twice per request; the
    // workspace's dev builds compile tokio with `test-util`, whose clock takes a lock).
    group.bench_function("reference_tokio_Instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.bench_function("reference_std_Instant_now", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    group.finish();
}

fn bench<S: Service<u64>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    svc: &mut S,
    cx: &mut Context<'_>,
) {
    assert!(once(svc, cx, 1), "{name} admits");
    let _ = svc.poll_ready(cx);
    eprintln!(
        "{name}: response future {} bytes",
        std::mem::size_of_val(&svc.call(1))
    );
    group.bench_function(name, |b| b.iter(|| once(svc, cx, black_box(1))));
}

fn request() -> http::Request<()> {
    http::Request::get("/search")
        .header("x-priority", "high")
        .body(())
        .expect("valid request")
}

/// What a tower user writes instead: LoadShed, ConcurrencyLimit and Timeout, with every
/// error answered as a 503 (tower-http has no load shedding of its own).
fn tower_http()
-> impl Service<http::Request<()>, Response = http::Response<String>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .map_result(|result: Result<http::Response<String>, BoxError>| {
            Ok::<_, BoxError>(result.unwrap_or_else(|_| {
                let mut response = http::Response::new(String::from("overloaded"));
                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                response
            }))
        })
        .load_shed()
        .concurrency_limit(1 << 20)
        .timeout(Duration::from_secs(1))
        .service(Hello)
}

/// The facade's http stack as the `facade_http` rows measure it: monitor ticked by hand,
/// admission limit out of reach, shutdown guard on.
fn facade(shutdown: &Shutdown) -> Brownout {
    Brownout::builder()
        .monitor(|m| m.manual_ticks())
        .admission(|a| a.limit(Limit::fixed(1 << 20)))
        .shutdown(shutdown)
        .build()
        .expect("valid stack")
}

fn low_request() -> http::Request<()> {
    http::Request::get("/search")
        .header("x-priority", "low")
        .body(())
        .expect("valid request")
}

fn facade_http(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let shutdown = Shutdown::new();
    let brownout = facade(&shutdown);
    let mut ours = brownout.layer().layer(Hello);
    #[cfg(feature = "grpc")]
    let grpc = Brownout::grpc_builder()
        .monitor(|m| m.manual_ticks())
        .admission(|a| a.limit(Limit::fixed(1 << 20)))
        .shutdown(&shutdown)
        .build()
        .expect("valid stack");
    #[cfg(feature = "grpc")]
    let mut ours_grpc = grpc.layer().layer(Hello);
    let mut theirs = tower_http();
    assert!(once(&mut ours, &mut cx, request()));
    assert!(once(&mut theirs, &mut cx, request()));
    #[cfg(feature = "grpc")]
    assert!(once(&mut ours_grpc, &mut cx, request()));

    busy("facade http", brownout.monitor(), &mut ours, request());
    #[cfg(feature = "grpc")]
    busy("facade grpc", grpc.monitor(), &mut ours_grpc, request());
    allocations_per_request("building the request alone", &mut NoopHttp, request());
    allocations_per_request("Brownout::builder() http stack", &mut ours, request());
    allocations_per_request("tower http-equivalent stack", &mut theirs, request());
    #[cfg(feature = "grpc")]
    allocations_per_request("Brownout::grpc_builder() stack", &mut ours_grpc, request());

    let mut group = c.benchmark_group("facade_http");
    group.bench_function("request_construction_only", |b| {
        b.iter(|| black_box(request()))
    });
    group.bench_function("bare_handler", |b| {
        b.iter(|| once(&mut Hello, &mut cx, request()))
    });
    group.bench_function("tower_http_equivalent", |b| {
        b.iter(|| once(&mut theirs, &mut cx, request()))
    });
    group.bench_function("brownout_builder_http", |b| {
        b.iter(|| once(&mut ours, &mut cx, request()))
    });
    #[cfg(feature = "grpc")]
    group.bench_function("brownout_grpc_builder", |b| {
        b.iter(|| once(&mut ours_grpc, &mut cx, request()))
    });
    group.finish();

    // The facade's reject path: a Low request at Emergency answered with a 503 response.
    brownout.publisher().force(LoadLevel::Emergency);
    let mut group = c.benchmark_group("facade_http_reject");
    group.bench_function("brownout_builder_http_503", |b| {
        b.iter(|| once(&mut ours, &mut cx, low_request()))
    });
    group.finish();
}

/// Counts only the request's own allocations (the handler is not called).
struct NoopHttp;

impl Service<http::Request<()>> for NoopHttp {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<()>) -> Self::Future {
        drop(black_box(req));
        ready(Ok(()))
    }
}

/// Throughput of `threads` tasks sharing clones of `svc` on a `threads`-worker runtime:
/// elapsed time per request over all tasks.
fn scaling<S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    svc: S,
    make: fn() -> R,
) where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    R: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_time()
        .build()
        .expect("runtime");
    group.bench_function(format!("{name}_{threads}_tasks"), |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(threads as u64);
            let start_line = Arc::new(tokio::sync::Barrier::new(threads));
            rt.block_on(async {
                let tasks: Vec<_> = (0..threads)
                    .map(|_| {
                        let mut svc = svc.clone();
                        let start_line = start_line.clone();
                        tokio::spawn(async move {
                            start_line.wait().await;
                            let start = Instant::now();
                            for _ in 0..per_task {
                                if let Ok(ready) = svc.ready().await {
                                    black_box(ready.call(make()).await.is_ok());
                                }
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                let mut longest = Duration::ZERO;
                for task in tasks {
                    longest = longest.max(task.await.expect("task"));
                }
                // Wall time of the slowest task for per_task × threads requests, scaled to
                // `iters` requests.
                longest.mul_f64(iters as f64 / (per_task * threads as u64) as f64)
            })
        })
    });
}

fn one() -> u64 {
    black_box(1)
}

fn threads(c: &mut Criterion) {
    let max: usize = std::env::var("BROWNOUT_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for n in [1, 2, 4, 8, 16].into_iter().filter(|n| *n <= max) {
        let mut group = c.benchmark_group(format!("stack_threads_{n}"));
        let rt = runtime();
        let guard = rt.enter();
        let p = parts();
        let mut ours = brownout_stack!(&p, Echo);
        busy("threads", &p.monitor, &mut ours, 1);
        drop(guard);
        scaling(&mut group, "tower_4_layers", n, tower_stack(), one);
        scaling(&mut group, "brownout_7_layers", n, ours, one);
        let (_publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let guard = rt.enter();
        let six = six_layer_stack!(&p.shutdown, &signal, Echo);
        drop(guard);
        scaling(&mut group, "brownout_6_layers", n, six, one);
        group.finish();
        drop(p);

        // The facade's http stack against the tower http equivalent, same shape.
        let mut group = c.benchmark_group(format!("facade_http_threads_{n}"));
        let guard = rt.enter();
        let brownout = Brownout::builder()
            .monitor(|m| m.manual_ticks())
            .admission(|a| a.limit(Limit::fixed(1 << 20)))
            .build()
            .expect("valid stack");
        let mut facade = brownout.layer().layer(Hello);
        busy("facade threads", brownout.monitor(), &mut facade, request());
        drop(guard);
        scaling(
            &mut group,
            "tower_http_equivalent",
            n,
            tower_http(),
            request,
        );
        scaling(&mut group, "brownout_builder_http", n, facade, request);
        group.finish();
    }
}

/// `BROWNOUT_BENCH_CPU=<rounds>` (optionally `BROWNOUT_BENCH_N=<requests per round>`): the
/// thread's CPU time per request of the stack rows, each warmed up then measured in rounds,
/// min and median printed. CPU time does not count the time the thread waits for a core, so rows
/// of one run stay comparable on a loaded machine (Linux only). Criterion groups still run
/// after it unless filtered out.
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
    let rt = runtime();
    let _guard = rt.enter();
    let normal = parts();
    let (_normal_publisher, normal_signal) = LoadSignal::channel(LoadLevel::Normal);
    let mut seven = brownout_stack!(&normal, Echo);
    busy("cpu admit", &normal.monitor, &mut seven, 1);
    let emergency = parts();
    emergency.monitor.publisher().force(LoadLevel::Emergency);
    let (emergency_publisher, emergency_signal) = LoadSignal::channel(LoadLevel::Normal);
    emergency_publisher.publish(LoadLevel::Emergency);
    let mut seven_reject = brownout_stack!(&emergency, Echo);
    busy("cpu reject", &emergency.monitor, &mut seven_reject, 3);
    let mut holder = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .timeout(Duration::from_secs(1))
        .layer(tower::retry::RetryLayer::new(Trivial))
        .service(Echo);
    let tower_overloaded = holder.clone();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(holder.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let signal = &normal_signal;
    let http_shutdown = Shutdown::new();
    let http_normal = facade(&http_shutdown);
    let http_emergency = facade(&http_shutdown);
    http_emergency.publisher().force(LoadLevel::Emergency);
    let mut facade_admit = http_normal.layer().layer(Hello);
    busy(
        "cpu http",
        http_normal.monitor(),
        &mut facade_admit,
        request(),
    );
    let mut facade_reject = http_emergency.layer().layer(Hello);
    busy(
        "cpu http 503",
        http_emergency.monitor(),
        &mut facade_reject,
        low_request(),
    );
    let mut rows: Vec<CpuRow> = vec![
        cpu_row("admit/tower_4_layers", tower_stack(), 1),
        cpu_row(
            "admit/brownout_6_layers",
            six_layer_stack!(&normal.shutdown, &normal_signal, Echo),
            1,
        ),
        cpu_row(
            "admit/brownout_4_comparable",
            comparable_stack!(&normal_signal, Echo),
            1,
        ),
        cpu_row("admit/brownout_7_layers", seven, 1),
        cpu_row(
            "admit/brownout_7_layers_facade_order",
            facade_order_stack!(&normal, Echo),
            1,
        ),
        cpu_row("reject/tower_4_layers_overloaded", tower_overloaded, 3),
        cpu_row(
            "reject/brownout_6_layers",
            six_layer_stack!(&emergency.shutdown, &emergency_signal, Echo),
            3,
        ),
        cpu_row(
            "reject/brownout_4_comparable",
            comparable_stack!(&emergency_signal, Echo),
            3,
        ),
        cpu_row("reject/brownout_7_layers", seven_reject, 3),
        cpu_row(
            "reject/brownout_7_layers_facade_order",
            facade_order_stack!(&emergency, Echo),
            3,
        ),
        cpu_row(
            "alone/shutdown_guard",
            normal.shutdown.layer().layer(Echo),
            1,
        ),
        cpu_row("alone/shed", shed!(signal).layer(Echo), 1),
        cpu_row("alone/admission", admission!(signal).layer(Echo), 1),
        cpu_row("alone/timeout", timeout!(signal).layer(Echo), 1),
        cpu_row("alone/breaker", breaker!(signal).layer(Echo), 1),
        cpu_row("alone/retry", retry!(signal).layer(Echo), 1),
        cpu_row_with("http/request_construction_only", NoopHttp, request),
        cpu_row_with("http/bare_handler", Hello, request),
        cpu_row_with("http/tower_http_equivalent", tower_http(), request),
        cpu_row_with("http/brownout_builder_http", facade_admit, request),
        cpu_row_with("http/brownout_builder_http_503", facade_reject, low_request),
    ];
    // `BROWNOUT_BENCH_ROWS=<text>`: only the rows whose name contains it.
    if let Ok(only) = std::env::var("BROWNOUT_BENCH_ROWS") {
        rows.retain(|(name, _)| name.contains(only.as_str()));
    }
    // Each row in turn: warm up for 2.2 s (the retry budget adapts how often it reads the
    // clock when a 1 s bucket closes after a full bucket of steady traffic; a row that
    // waited for the others would find a gap and read it on every request again), then
    // `rounds` rounds of about `n` × 200 ns of CPU each (the thread's CPU clock advances in
    // scheduler ticks, so a round must be long against a tick).
    let mut times = vec![Vec::new(); rows.len()];
    for ((_, run), times) in rows.iter_mut().zip(times.iter_mut()) {
        let start = Instant::now();
        let mut warm = 0;
        while start.elapsed() < Duration::from_millis(2_200) {
            run(n / 10);
            warm += n / 10;
        }
        let per_request = start.elapsed().as_nanos() as f64 / warm as f64;
        let size = ((n as f64 * 200.0 / per_request.max(1.0)) as u64).max(n);
        for _ in 0..rounds {
            times.push(run(size));
        }
    }
    println!(
        "CPU ns per request, {rounds} rounds of ~{n} x 200 ns after 2.2 s warm-up: min / median"
    );
    for ((name, _), times) in rows.iter().zip(times.iter_mut()) {
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<42} {:>8.1} {:>8.1}",
            times[0],
            times[times.len() / 2]
        );
    }
    drop(holder);
}

criterion_group!(
    benches,
    cpu_time,
    admit_and_reject,
    per_layer,
    facade_http,
    threads
);
criterion_main!(benches);
