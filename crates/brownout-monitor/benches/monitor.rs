//! Cost of the monitor's record path, next to a bare service and tower's `ConcurrencyLimit`
//! around the same service, plus the histogram alone. Also prints allocations per request
//! (counted by a `stats_alloc` global allocator).
//!
//! `cargo bench -p brownout-monitor --bench monitor -- --warm-up-time 1 --measurement-time 3`
//!
//! On a loaded machine, CPU time per request of one service:
//! `BROWNOUT_BENCH_ONE=monitor BROWNOUT_BENCH_N=5000000 target/release/deps/monitor-* --bench`
#![allow(missing_docs)]

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use brownout_monitor::{LatencyClock, LatencyHistogram, Monitor};
use criterion::{Criterion, criterion_group};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, service_fn};

#[path = "../../../benches/support/cpu.rs"]
mod cpu;
use cpu::thread_cpu_ns;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn bare()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>> + Clone
{
    service_fn(|n: u64| ready(Ok::<_, Infallible>(n)))
}

/// One request through `svc`: poll_ready, call, poll the (already ready) future once.
#[inline]
fn one<S: Service<u64, Response = u64>>(svc: &mut S, cx: &mut Context<'_>, n: u64) -> u64 {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("bench service not ready"),
    }
    let fut = pin!(svc.call(n));
    match fut.poll(cx) {
        Poll::Ready(Ok(v)) => v,
        _ => panic!("bench future not ready"),
    }
}

fn allocations_per_request<S: Service<u64, Response = u64>>(name: &str, svc: &mut S) {
    const N: u64 = 100_000;
    let mut cx = Context::from_waker(Waker::noop());
    let region = Region::new(GLOBAL);
    for n in 0..N {
        black_box(one(svc, &mut cx, n));
    }
    let stats = region.change();
    println!(
        "allocations/request {name}: {:.4} ({} allocations in {N} requests)",
        stats.allocations as f64 / N as f64,
        stats.allocations
    );
}

fn record_path(c: &mut Criterion) {
    let monitor = Monitor::builder()
        .latency_objective(Duration::from_millis(50))
        .manual_ticks()
        .build()
        .expect("valid config");
    let mut bare_svc = bare();
    let mut monitored = monitor.layer().layer(bare());
    let mut limited = ConcurrencyLimit::new(bare(), 1_000_000);
    let tsc_monitor = Monitor::builder()
        .latency_clock(LatencyClock::Tsc)
        .manual_ticks()
        .build()
        .expect("valid config");
    let mut monitored_tsc = tsc_monitor.layer().layer(bare());
    let every_monitor = Monitor::builder()
        .latency_objective(Duration::from_millis(50))
        .max_sample_every(1)
        .manual_ticks()
        .build()
        .expect("valid config");
    let mut monitored_every = every_monitor.layer().layer(bare());

    allocations_per_request("bare", &mut bare_svc);
    allocations_per_request("monitor", &mut monitored);
    allocations_per_request("monitor_tsc", &mut monitored_tsc);
    allocations_per_request("monitor_every_request_timed", &mut monitored_every);
    allocations_per_request("tower_concurrency_limit", &mut limited);
    // One tick after those 100 000 requests: the monitors now time one request in 64, as on
    // a busy service (the benches do not tick again, so the rate stays there).
    for m in [&monitor, &tsc_monitor, &every_monitor] {
        m.tick_now();
        println!(
            "timing one request in {} after a busy interval",
            m.sample_every()
        );
    }

    let mut group = c.benchmark_group("record_path");
    let mut cx = Context::from_waker(Waker::noop());
    group.bench_function("bare_service_fn", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            one(&mut bare_svc, &mut cx, n)
        })
    });
    group.bench_function("monitor", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            one(&mut monitored, &mut cx, n)
        })
    });
    group.bench_function("monitor_tsc_clock", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            one(&mut monitored_tsc, &mut cx, n)
        })
    });
    group.bench_function("monitor_every_request_timed", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            one(&mut monitored_every, &mut cx, n)
        })
    });
    group.bench_function("tower_concurrency_limit", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            one(&mut limited, &mut cx, n)
        })
    });
    // Two threads sharing one monitor: counters striped per thread (default) or not.
    let one_shard = Monitor::builder()
        .record_shards(1)
        .manual_ticks()
        .build()
        .expect("valid config");
    let mut unstriped = one_shard.layer().layer(bare());
    allocations_per_request("monitor_1_shard", &mut unstriped);
    one_shard.tick_now();
    let limited_shared = ConcurrencyLimit::new(bare(), 1_000_000);
    two_threads(&mut group, "monitor_2_threads_striped", &monitored);
    two_threads(&mut group, "monitor_2_threads_1_shard", &unstriped);
    two_threads(&mut group, "monitor_tsc_2_threads_striped", &monitored_tsc);
    two_threads(
        &mut group,
        "tower_concurrency_limit_2_threads",
        &limited_shared,
    );
    two_threads(&mut group, "bare_2_threads", &bare_svc);
    group.finish();
    one_shard.tick_now();
    tsc_monitor.tick_now();
    every_monitor.tick_now();
    // Keep the histogram from growing without bound between runs.
    monitor.tick_now();
}

/// Each of two threads sends `iters` requests through its own clone of `svc`; reports wall
/// time per request per thread.
fn two_threads<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    svc: &S,
) where
    S: Service<u64, Response = u64> + Clone + Send,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let mut svc = svc.clone();
                    s.spawn(move || {
                        let mut cx = Context::from_waker(Waker::noop());
                        for n in 0..iters {
                            black_box(one(&mut svc, &mut cx, n));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

fn histogram(c: &mut Criterion) {
    let histogram = LatencyHistogram::new();
    let mut group = c.benchmark_group("histogram");
    group.bench_function("record", |b| {
        let mut ns = 1_000u64;
        b.iter(|| {
            ns = ns.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % 60_000_000_000;
            histogram.record(black_box(Duration::from_nanos(ns)))
        })
    });
    group.bench_function("record_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let histogram = &histogram;
                    s.spawn(move || {
                        for i in 0..iters {
                            histogram
                                .record(black_box(Duration::from_nanos(1_000 + (i + t) % 4096)));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.bench_function("drain_and_quantiles", |b| {
        let mut counts = brownout_monitor::HistogramCounts::new();
        b.iter(|| {
            for i in 0..100u64 {
                histogram.record_nanos(1_000 + i * 997);
            }
            histogram.drain_into(&mut counts);
            black_box(counts.quantiles())
        })
    });
    group.finish();
}

/// What the record path is made of, to explain its cost.
fn components(c: &mut Criterion) {
    let mut group = c.benchmark_group("components");
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    group.bench_function("std_instant_now", |b| b.iter(Instant::now));
    group.bench_function("tokio_instant_now_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(move || {
                        for _ in 0..iters {
                            black_box(tokio::time::Instant::now());
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let clock = quanta::Clock::new();
    group.bench_function("quanta_raw", |b| b.iter(|| clock.raw()));
    let rate = brownout_core::clock::SampleRate::new(64, 1);
    rate.adapt(64);
    let mut sampler = brownout_core::clock::Sampler::new();
    group.bench_function("sampler_decision", |b| {
        b.iter(|| black_box(&mut sampler).sample(&rate))
    });
    let arc = std::sync::Arc::new(0u64);
    group.bench_function("arc_clone_drop", |b| {
        b.iter(|| drop(black_box(std::sync::Arc::clone(&arc))))
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    group.bench_function("atomic_inc_dec", |b| {
        b.iter(|| {
            black_box(&counter).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            black_box(&counter).fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        })
    });
    group.finish();
}

/// tokio's clock once some runtime in the process paused time (`test-util`): must run last,
/// because tokio remembers process-wide that a clock was paused and from then on every
/// `tokio::time::Instant::now()` looks up the current runtime's clock.
fn paused_clock(c: &mut Criterion) {
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let running = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("components_after_a_pause");
    {
        let _guard = paused.enter();
        group.bench_function("tokio_instant_now_in_a_paused_runtime", |b| {
            b.iter(tokio::time::Instant::now)
        });
    }
    {
        let _guard = running.enter();
        group.bench_function("tokio_instant_now_in_a_running_runtime", |b| {
            b.iter(tokio::time::Instant::now)
        });
    }
    group.bench_function("std_instant_now", |b| b.iter(Instant::now));
    group.finish();
}

/// `BROWNOUT_BENCH_ONE=<service> BROWNOUT_BENCH_N=<n>`: runs 100 000 requests, one monitor
/// tick (so sampling has adapted, as in the criterion run), then `n` requests, and prints the
/// thread's CPU time per request. CPU time does not count the time the thread waits for a
/// core, so it stays usable on a loaded machine (Linux only).
fn fixed_iterations(name: &str, n: u64) {
    fn run<S: Service<u64, Response = u64>>(svc: &mut S, monitor: Option<&Monitor>, n: u64) {
        let mut cx = Context::from_waker(Waker::noop());
        for i in 0..100_000 {
            black_box(one(svc, &mut cx, i));
        }
        if let Some(monitor) = monitor {
            monitor.tick_now();
        }
        let cpu = thread_cpu_ns();
        for i in 0..n {
            black_box(one(svc, &mut cx, i));
        }
        let cpu = thread_cpu_ns() - cpu;
        println!("{:.2} ns CPU/request", cpu as f64 / n as f64);
    }
    let build = |builder: brownout_monitor::MonitorBuilder| {
        builder.manual_ticks().build().expect("valid config")
    };
    match name {
        "bare_service_fn" => run(&mut bare(), None, n),
        "tower_concurrency_limit" => run(&mut ConcurrencyLimit::new(bare(), 1_000_000), None, n),
        "monitor" => {
            let m = build(Monitor::builder().latency_objective(Duration::from_millis(50)));
            run(&mut m.layer().layer(bare()), Some(&m), n);
        }
        "monitor_tsc_clock" => {
            let m = build(Monitor::builder().latency_clock(LatencyClock::Tsc));
            run(&mut m.layer().layer(bare()), Some(&m), n);
        }
        "monitor_every_request_timed" => {
            let m = build(Monitor::builder().max_sample_every(1));
            run(&mut m.layer().layer(bare()), Some(&m), n);
        }
        other => panic!("unknown service {other}"),
    }
}

criterion_group!(benches, record_path, histogram, components, paused_clock);

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
