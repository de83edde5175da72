//! Fleet tests against a real `redis-server` each test starts on a free loopback port.
//!
//! These run on the real clock (Redis's `TIME` drives the shared buckets), so they assert
//! ranges, never exact counts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::{BoxError, LoadLevel, LoadSignal, RejectReason, Rejected};
use brownout_redis::{
    Fleet, FleetAggregate, FleetConfig, FleetMode, FleetRateLimitConfig, FleetRateLimitLayer,
};
use common::RedisServer;
use tower::{Layer, Service, ServiceExt, service_fn};

fn fleet(url: &str, id: &str, tick_ms: u64) -> Fleet {
    fleet_with(url, id, tick_ms, FleetAggregate::Max, 50)
}

fn fleet_with(
    url: &str,
    id: &str,
    tick_ms: u64,
    aggregate: FleetAggregate,
    bound_ms: u64,
) -> Fleet {
    let config = FleetConfig::builder(url)
        .instance_id(id)
        .tick(Duration::from_millis(tick_ms))
        .instance_ttl(Duration::from_millis(tick_ms * 3))
        .call_timeout(Duration::from_millis(bound_ms))
        .open_for(Duration::from_millis(tick_ms))
        .aggregate(aggregate)
        .build()
        .unwrap();
    Fleet::start(config).unwrap()
}

type Echo = tower::util::BoxCloneSyncService<&'static str, (), BoxError>;

fn echo()
-> impl Service<&'static str, Response = (), Error = std::convert::Infallible, Future: Send>
+ Clone
+ Send
+ Sync {
    service_fn(|_: &'static str| async { Ok::<_, std::convert::Infallible>(()) })
}

/// Sends `per_ms` requests every millisecond for `duration`; counts admissions and records
/// the longest time one decision took.
async fn drive(
    mut svc: Echo,
    tenant: &'static str,
    per_ms: u32,
    duration: Duration,
    admitted: Arc<AtomicU64>,
    slowest_ns: Arc<AtomicU64>,
) {
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        interval.tick().await;
        for _ in 0..per_ms {
            let started = std::time::Instant::now();
            let result = svc.ready().await.unwrap().call(tenant).await;
            let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            slowest_ns.fetch_max(took, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    let rejected = Rejected::find_in_box(&*err).expect("only rate-limit refusals");
                    assert_eq!(rejected.reason(), RejectReason::RateLimited);
                    assert!(rejected.retry_after().is_some_and(|d| d > Duration::ZERO));
                }
            }
        }
    }
}

fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_admit_within_5_percent_of_the_global_rate() {
    let Some(redis) =
        RedisServer::start("four_instances_admit_within_5_percent_of_the_global_rate")
    else {
        return;
    };
    let rate = 2_000.0;
    let config = FleetRateLimitConfig::builder("global", rate)
        .burst(50)
        .build()
        .unwrap();
    let fleets: Vec<Fleet> = (0..4)
        .map(|i| fleet(&redis.url(), &format!("i{i}"), 100))
        .collect();
    let admitted = counter();
    let slowest = counter();
    let run = Duration::from_secs(10);
    let mut tasks = Vec::new();
    for f in &fleets {
        let layer = FleetRateLimitLayer::new(f, config.clone());
        let svc = Echo::new(layer.layer(echo()));
        // Each instance offers 1000/s: the fleet offers twice its limit.
        tasks.push(tokio::spawn(drive(
            svc,
            "t",
            1,
            run,
            admitted.clone(),
            slowest.clone(),
        )));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let expected = rate * run.as_secs_f64();
    let error = (admitted - expected).abs() / expected;
    eprintln!(
        "4 instances, {rate}/s for {run:?}: admitted {admitted} (expected {expected}, error {:.2} %)",
        error * 100.0
    );
    for f in &fleets {
        let s = f.status();
        eprintln!(
            "  {}: {} redis calls, {} failures",
            f.config().instance_id(),
            s.redis_calls,
            s.redis_failures
        );
        assert_eq!(s.mode, FleetMode::Shared);
    }
    assert!(
        error <= 0.05,
        "admitted {admitted}, expected {expected} ± 5 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_limit_holds_across_instances() {
    let Some(redis) = RedisServer::start("a_tenants_limit_holds_across_instances") else {
        return;
    };
    let config = FleetRateLimitConfig::builder("tenant", 200.0)
        .burst(10)
        .build()
        .unwrap();
    let run = Duration::from_secs(3);
    let (busy, quiet) = (counter(), counter());
    let slowest = counter();
    let mut tasks = Vec::new();
    let fleets: Vec<Fleet> = (0..2)
        .map(|i| fleet(&redis.url(), &format!("t{i}"), 100))
        .collect();
    for f in &fleets {
        let layer =
            FleetRateLimitLayer::keyed(f, config.clone(), |tenant: &&'static str| Some(*tenant));
        let svc = Echo::new(layer.layer(echo()));
        // Tenant "busy" offers 1000/s per instance; tenant "quiet" 50/s per instance.
        tasks.push(tokio::spawn(drive(
            svc.clone(),
            "busy",
            1,
            run,
            busy.clone(),
            slowest.clone(),
        )));
        let quiet = quiet.clone();
        tasks.push(tokio::spawn(async move {
            let mut svc = svc;
            let mut interval = tokio::time::interval(Duration::from_millis(20));
            let end = tokio::time::Instant::now() + run;
            while tokio::time::Instant::now() < end {
                interval.tick().await;
                if svc.ready().await.unwrap().call("quiet").await.is_ok() {
                    quiet.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let busy = busy.load(Ordering::Relaxed) as f64;
    let quiet = quiet.load(Ordering::Relaxed) as f64;
    eprintln!("tenant busy admitted {busy} (limit 600 over 3 s), quiet admitted {quiet} of ~300");
    assert!(
        (busy - 600.0).abs() / 600.0 <= 0.10,
        "busy tenant admitted {busy}, limit 600 ± 10 %"
    );
    // The quiet tenant is under its own limit: every request passes, its first ones under
    // the local share while the first lease is in flight.
    assert!(quiet >= 285.0, "quiet tenant admitted {quiet} of ~300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_falls_back_to_local_limits_and_resumes_after_restart() {
    let Some(mut redis) = RedisServer::start(
        "redis_killed_mid_run_falls_back_to_local_limits_and_resumes_after_restart",
    ) else {
        return;
    };
    let bound = Duration::from_millis(50);
    let rate = 1_000.0;
    let fleets: Vec<Fleet> = (0..2)
        .map(|i| {
            fleet_with(
                &redis.url(),
                &format!("k{i}"),
                100,
                FleetAggregate::Max,
                bound.as_millis() as u64,
            )
        })
        .collect();
    for f in &fleets {
        f.tick_now().await; // both registered: the fallback share is rate / 2
    }
    let config = FleetRateLimitConfig::builder("kill", rate)
        .burst(20)
        .build()
        .unwrap();
    let svcs: Vec<Echo> = fleets
        .iter()
        .map(|f| Echo::new(FleetRateLimitLayer::new(f, config.clone()).layer(echo())))
        .collect();
    let phase = |secs: f64| {
        let svcs = svcs.clone();
        async move {
            let admitted = counter();
            let slowest = counter();
            let tasks: Vec<_> = svcs
                .into_iter()
                .map(|svc| {
                    tokio::spawn(drive(
                        svc,
                        "t",
                        1,
                        Duration::from_secs_f64(secs),
                        admitted.clone(),
                        slowest.clone(),
                    ))
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            (
                admitted.load(Ordering::Relaxed) as f64 / secs,
                Duration::from_nanos(slowest.load(Ordering::Relaxed)),
            )
        }
    };
    let (shared_rate, slow) = phase(1.0).await;
    eprintln!("shared: {shared_rate:.0}/s, slowest decision {slow:?}");
    assert!(fleets.iter().all(|f| f.status().mode == FleetMode::Shared));

    redis.kill();
    let (outage_rate, slow) = phase(1.5).await;
    let status = fleets[0].status();
    eprintln!("redis killed: {outage_rate:.0}/s, slowest decision {slow:?}, status {status:?}");
    assert!(
        status.is_fallback(),
        "fallback while redis is down: {status:?}"
    );
    assert!(status.check().is_err());
    assert!(slow < bound, "a request waited {slow:?} (bound {bound:?})");
    // Local shares (rate / 2 live instances each) keep requests flowing near the fleet rate.
    assert!(
        outage_rate > rate * 0.7 && outage_rate < rate * 1.3,
        "outage rate {outage_rate}"
    );

    redis.restart();
    // Back to shared within the breaker's open period plus a tick or two.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while fleets.iter().any(|f| f.status().mode != FleetMode::Shared) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still in fallback: {:?}",
            fleets[0].status()
        );
        // Traffic or ticks probe; either brings the breaker back.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (resumed_rate, slow) = phase(1.5).await;
    eprintln!("redis restarted: {resumed_rate:.0}/s, slowest decision {slow:?}");
    assert!(fleets.iter().all(|f| f.status().mode == FleetMode::Shared));
    assert!(fleets.iter().all(|f| f.status().check().is_ok()));
    assert!(
        (resumed_rate - rate).abs() / rate < 0.1,
        "shared rate after restart {resumed_rate}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_critical_and_three_normal_give_the_configured_fleet_level_within_one_tick() {
    let Some(redis) = RedisServer::start(
        "one_critical_and_three_normal_give_the_configured_fleet_level_within_one_tick",
    ) else {
        return;
    };
    let tick = 100;
    let fleets: Vec<Fleet> = (0..4)
        .map(|i| {
            fleet_with(
                &redis.url(),
                &format!("l{i}"),
                tick,
                FleetAggregate::Share(0.25),
                10,
            )
        })
        .collect();
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    fleets[0].report_signal(signal);
    for f in &fleets {
        f.tick_now().await;
    }
    publisher.publish(LoadLevel::Critical);
    // Instance 0 publishes on its next tick; every reader sees it on theirs: at most one
    // tick after the publish for the publisher, one more for the readers.
    tokio::time::sleep(Duration::from_millis(2 * tick + tick / 2)).await;
    for f in &fleets {
        assert_eq!(
            f.fleet_level(),
            Some(LoadLevel::Critical),
            "{:?}",
            f.status()
        );
        assert_eq!(f.live_instances(), 4);
        use brownout_core::PressureSource;
        assert_eq!(f.level_source().sample(), Some(3.0));
    }
    // A median would not move for one instance of four.
    let median = fleet_with(
        &redis.url(),
        "median-reader",
        tick,
        FleetAggregate::Quantile(0.5),
        10,
    );
    median.tick_now().await;
    assert_eq!(median.fleet_level(), Some(LoadLevel::Normal));
    assert_eq!(median.instances().len(), 5);
    publisher.publish(LoadLevel::Normal);
    tokio::time::sleep(Duration::from_millis(2 * tick + tick / 2)).await;
    assert_eq!(fleets[3].fleet_level(), Some(LoadLevel::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_disappears_stops_counting_after_its_ttl() {
    let Some(redis) =
        RedisServer::start("an_instance_that_disappears_stops_counting_after_its_ttl")
    else {
        return;
    };
    let tick = 100;
    let reader = fleet(&redis.url(), "reader", tick);
    let stays = fleet(&redis.url(), "stays", tick);
    let vanishes = fleet(&redis.url(), "vanishes", tick);
    vanishes.report_signal(LoadSignal::fixed(LoadLevel::Emergency));
    for f in [&vanishes, &stays, &reader] {
        f.tick_now().await;
    }
    assert_eq!(reader.live_instances(), 3);
    assert_eq!(reader.fleet_level(), Some(LoadLevel::Emergency));
    drop(vanishes); // its tick task ends: it stops publishing without saying goodbye
    let ttl = reader.config().instance_ttl();
    tokio::time::sleep(ttl + Duration::from_millis(2 * tick)).await;
    assert_eq!(reader.live_instances(), 2, "{:?}", reader.instances());
    assert_eq!(reader.fleet_level(), Some(LoadLevel::Normal));
    // A graceful leave removes the instance at once.
    assert!(stays.leave().await);
    reader.tick_now().await;
    assert_eq!(reader.live_instances(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_level_scales_the_shared_rate_and_refusals_carry_the_shared_retry_after() {
    let Some(redis) = RedisServer::start("the_level_scales_the_shared_rate") else {
        return;
    };
    let f = fleet(&redis.url(), "scaled", 100);
    let config = FleetRateLimitConfig::builder("scaled", 1_000.0)
        .burst(10)
        .build()
        .unwrap();
    // Critical: 40 % of the rate by the default table.
    let layer =
        FleetRateLimitLayer::new(&f, config).with_signal(LoadSignal::fixed(LoadLevel::Critical));
    let mut svc = Echo::new(layer.layer(echo()));
    let (admitted, slowest) = (counter(), counter());
    drive(
        svc.clone(),
        "t",
        1,
        Duration::from_secs(2),
        admitted.clone(),
        slowest,
    )
    .await;
    let rate = admitted.load(Ordering::Relaxed) as f64 / 2.0;
    eprintln!("at critical: {rate}/s of 1000/s × 0.4");
    assert!(
        (rate - 400.0).abs() / 400.0 <= 0.1,
        "rate at critical {rate}"
    );
    // Drain, then a refusal says when the shared bucket has the next token: soon, and
    // never more than a batch's worth at 400/s.
    let mut refused = None;
    for _ in 0..100 {
        if let Err(err) = svc.ready().await.unwrap().call("t").await {
            refused = Rejected::find_in_box(&*err).copied();
            break;
        }
    }
    let refused = refused.expect("a refusal once the pool is drained");
    assert_eq!(refused.level(), LoadLevel::Critical);
    let after = refused.retry_after().unwrap();
    assert!(
        after > Duration::ZERO && after <= Duration::from_millis(50),
        "retry_after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_counts_as_down_and_no_request_waits_for_it() {
    let Some(redis) =
        RedisServer::start("a_paused_redis_counts_as_down_and_no_request_waits_for_it")
    else {
        return;
    };
    let bound = Duration::from_millis(20);
    let f = fleet_with(
        &redis.url(),
        "paused",
        100,
        FleetAggregate::Max,
        bound.as_millis() as u64,
    );
    f.tick_now().await;
    let config = FleetRateLimitConfig::builder("paused", 500.0)
        .burst(10)
        .build()
        .unwrap();
    let svc = Echo::new(FleetRateLimitLayer::new(&f, config).layer(echo()));
    let (admitted, slowest) = (counter(), counter());
    let run = Duration::from_millis(2500);
    let load = tokio::spawn(drive(svc, "t", 1, run, admitted.clone(), slowest.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Redis stops answering every client for 1 s (it is slow, not gone).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let during = f.status();
    load.await.unwrap();
    let after = f.status();
    let slow = Duration::from_nanos(slowest.load(Ordering::Relaxed));
    let rate = admitted.load(Ordering::Relaxed) as f64 / run.as_secs_f64();
    eprintln!("paused redis: {rate:.0}/s of 500/s, slowest decision {slow:?}; during {during:?}");
    assert!(during.is_fallback(), "{during:?}");
    assert!(
        during
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no answer within"))
    );
    assert_eq!(after.mode, FleetMode::Shared, "{after:?}");
    assert!(slow < bound, "a request waited {slow:?} (bound {bound:?})");
    assert!((rate - 500.0).abs() / 500.0 <= 0.15, "rate {rate}");
}

/// Seconds the shared bucket's TAT is ahead of the server clock (0 when full).
async fn bucket_ahead(url: &str, key: &str) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let tat: Option<f64> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let now = secs as f64 * 1e6 + micros as f64;
    tat.map_or(0.0, |t| ((t - now) / 1e6).max(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_leased_tokens_go_back_to_the_shared_bucket_after_the_lease_ttl() {
    let Some(redis) = RedisServer::start("unused_leased_tokens_go_back") else {
        return;
    };
    let f = fleet(&redis.url(), "idle", 100);
    let config = FleetRateLimitConfig::builder("idle", 10.0)
        .burst(50)
        .batch(50)
        .lease_ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    // The layer leases its first batch at once: 50 tokens at 10/s put the TAT 5 s ahead.
    let _layer = FleetRateLimitLayer::new(&f, config);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let key = "brownout:rl:idle:global";
    let ahead = bucket_ahead(&redis.url(), key).await;
    assert!(
        (4.5..=5.1).contains(&ahead),
        "after the first lease the TAT is {ahead} s ahead"
    );
    // Nobody uses them: after the lease TTL (and a tick) they are given back.
    tokio::time::sleep(Duration::from_millis(300 + 250)).await;
    let ahead = bucket_ahead(&redis.url(), key).await;
    assert!(
        ahead < 0.2,
        "after the lease TTL the TAT is still {ahead} s ahead"
    );
}
