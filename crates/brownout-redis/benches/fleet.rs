//! Hot-path cost of the fleet rate limit beside a bare service and a local `governor`
//! limiter (same criterion group, same run), and Redis commands per second per instance at
//! 10 000 requests per second.
//!
//! Starts its own `redis-server` on a free loopback port (skips with a message when it is
//! not installed: run `scripts/redis.sh`).
//!
//! `cargo bench -p brownout-redis --bench fleet -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brownout_redis::{Fleet, FleetConfig, FleetRateLimitConfig, FleetRateLimitLayer};
use criterion::Criterion;
use governor::{Quota, RateLimiter};
use tower::{Layer, Service, service_fn};

/// Calls `svc` once and polls the (immediately ready) future once.
#[inline]
fn call_once<S>(svc: &mut S) -> bool
where
    S: Service<u32>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let _ = svc.poll_ready(&mut cx);
    let fut = pin!(svc.call(black_box(1)));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn bare() -> impl Service<
    u32,
    Response = u32,
    Error = Infallible,
    Future = std::future::Ready<Result<u32, Infallible>>,
> + Clone {
    service_fn(|x: u32| std::future::ready(Ok::<_, Infallible>(x)))
}

fn fleet_config(url: &str, id: &str) -> FleetConfig {
    FleetConfig::builder(url)
        .instance_id(id)
        .tick(Duration::from_millis(100))
        .call_timeout(Duration::from_millis(20))
        .build()
        .unwrap()
}

fn hot_path(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str) {
    let _guard = rt.enter();
    // A limit high enough never to refuse: the admit path is measured.
    let high = FleetRateLimitConfig::builder("bench", 1e9)
        .burst(10_000_000)
        .batch(100_000)
        .build()
        .unwrap();
    let shared_fleet = Fleet::start(fleet_config(url, "bench-shared")).unwrap();
    rt.block_on(shared_fleet.tick_now());
    let mut shared = FleetRateLimitLayer::new(&shared_fleet, high.clone()).layer(bare());
    // Let the first lease land.
    rt.block_on(tokio::time::sleep(Duration::from_millis(50)));

    // Redis unreachable (port 1 refuses): the local-share fallback path.
    let down = FleetConfig::builder("redis://127.0.0.1:1")
        .tick(Duration::from_millis(100))
        .call_timeout(Duration::from_millis(5))
        .failures_to_open(1)
        .build()
        .unwrap();
    let down_fleet = Fleet::start(down).unwrap();
    rt.block_on(down_fleet.tick_now());
    assert!(down_fleet.status().is_fallback());
    let mut fallback = FleetRateLimitLayer::new(&down_fleet, high).layer(bare());

    // tower's RateLimit: a budget of 10⁹ per second, so it never waits.
    let mut tower_rate = tower::limit::RateLimit::new(
        bare(),
        tower::limit::rate::Rate::new(1_000_000_000, Duration::from_secs(1)),
    );
    let governor = RateLimiter::direct(Quota::per_second(NonZeroU32::MAX));
    let mut inner = bare();

    let mut group = c.benchmark_group("fleet_rate/admit");
    group.bench_function("bare service (baseline)", |b| {
        b.iter(|| call_once(&mut inner));
    });
    group.bench_function("tower RateLimit (local)", |b| {
        b.iter(|| call_once(&mut tower_rate));
    });
    group.bench_function("governor direct check + service", |b| {
        b.iter(|| {
            if governor.check().is_ok() {
                call_once(&mut inner)
            } else {
                false
            }
        });
    });
    let mut admitted = 0u64;
    let mut calls = 0u64;
    group.bench_function("FleetRateLimit shared (leased tokens)", |b| {
        b.iter(|| {
            calls += 1;
            admitted += u64::from(call_once(&mut shared));
        });
    });
    group.bench_function("FleetRateLimit fallback (local share)", |b| {
        b.iter(|| call_once(&mut fallback));
    });
    group.finish();
    println!(
        "shared path: {admitted} of {calls} calls admitted ({:.3} %), {} redis calls",
        admitted as f64 * 100.0 / calls.max(1) as f64,
        shared_fleet.status().redis_calls
    );
}

/// Redis commands per second per instance while it serves 10 000 requests per second.
fn commands_per_second(rt: &tokio::runtime::Runtime, url: &str) {
    for (label, fleet_rate, instances) in [
        (
            "1 instance, limit 20 000/s (not limiting)",
            20_000.0,
            1usize,
        ),
        ("1 instance, limit 5 000/s (limiting)", 5_000.0, 1),
        ("4 instances, limit 20 000/s shared (limiting)", 20_000.0, 4),
    ] {
        let admitted = rt.block_on(async {
            let config = FleetRateLimitConfig::builder(
                format!("cps{}", fleet_rate as u64 * instances as u64),
                fleet_rate,
            )
            .build()
            .unwrap();
            let fleets: Vec<Fleet> = (0..instances)
                .map(|i| {
                    Fleet::start(fleet_config(
                        url,
                        &format!("cps-{label}-{i}")
                            .replace(' ', "_")
                            .replace(['(', ')', ',', '/'], ""),
                    ))
                    .unwrap()
                })
                .collect();
            let server_before = server_commands(url).await;
            let before: Vec<u64> = fleets.iter().map(|f| f.status().redis_calls).collect();
            let run = Duration::from_secs(3);
            let mut tasks = Vec::new();
            for f in &fleets {
                let mut svc = FleetRateLimitLayer::new(f, config.clone()).layer(bare());
                tasks.push(tokio::spawn(async move {
                    // 10 requests per millisecond = 10 000/s per instance.
                    let mut interval = tokio::time::interval(Duration::from_millis(1));
                    let end = tokio::time::Instant::now() + run;
                    let mut admitted = 0u64;
                    while tokio::time::Instant::now() < end {
                        interval.tick().await;
                        for _ in 0..10 {
                            admitted += u64::from(call_once(&mut svc));
                        }
                    }
                    admitted
                }));
            }
            let mut admitted = 0;
            for t in tasks {
                admitted += t.await.unwrap();
            }
            let calls: Vec<f64> = fleets
                .iter()
                .zip(before)
                .map(|(f, b)| (f.status().redis_calls - b) as f64 / run.as_secs_f64())
                .collect();
            let per_instance = calls.iter().sum::<f64>() / calls.len() as f64;
            // Cross-check with the server's own counts: EVALSHA calls are the round trips;
            // the total also counts the commands the scripts run inside Redis.
            let server_after = server_commands(url).await;
            let per_second = |n: u64| n as f64 / run.as_secs_f64() / instances as f64;
            let evalsha = per_second(server_after.0 - server_before.0);
            let executed = per_second(server_after.1 - server_before.1);
            println!(
                "redis commands/s per instance at 10k req/s/instance, {label}: {per_instance:.0} \
                 counted by the fleet, {evalsha:.0} EVALSHA by INFO commandstats, {executed:.0} \
                 commands executed incl. those inside the scripts \
                 (admitted {:.0}/s fleet-wide, batch {})",
                admitted as f64 / run.as_secs_f64(),
                config.batch()
            );
            admitted
        });
        black_box(admitted);
    }
}

/// `(EVALSHA calls, every command executed)` per INFO commandstats, except INFO itself.
/// Commands a script runs (`redis.call`) count in the second figure.
async fn server_commands(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let calls =
        |l: &str| -> Option<u64> { l.split("calls=").nth(1)?.split(',').next()?.parse().ok() };
    let stats: Vec<&str> = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .collect();
    let evalsha = stats
        .iter()
        .filter(|l| l.starts_with("cmdstat_evalsha:"))
        .filter_map(|l| calls(l))
        .sum();
    (evalsha, stats.iter().filter_map(|l| calls(l)).sum())
}

fn main() {
    let Some(redis) = common::RedisServer::start("bench fleet") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    commands_per_second(&rt, &redis.url());
    let mut c = Criterion::default().configure_from_args();
    hot_path(&mut c, &rt, &redis.url());
    c.final_summary();
    drop(redis);
}
