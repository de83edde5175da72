//! RELIABILITY #26 on real sockets: a soak of ten times the server's capacity.
//!
//! A real axum server with the full brownout stack listens on 127.0.0.1; a client on its own
//! thread and runtime drives it over 64 keep-alive HTTP/1.1 connections at ten times what
//! the server can serve, for `BROWNOUT_SOAK_SECS` seconds (default 20) or at most
//! `10 × capacity × secs × 1.2` requests, whichever comes first. The test then checks that
//!
//! - every request was answered: 200, or a typed rejection (503 / 429 / 504 with
//!   `x-load-level` and a body naming the reason) — no connection error, nothing else;
//! - the admission queue never exceeded its capacity and the server's live tokio tasks
//!   stayed bounded (one per connection plus the stack's own), and came back to the
//!   baseline once the clients left;
//! - the resident memory (Linux `VmRSS`; skipped elsewhere) did not keep growing during the
//!   second half of the soak and came back near the baseline;
//! - Critical requests (5 % of the offer, half the capacity) were served far more often
//!   than the rest.
//!
//! It lives in its own test binary so that its memory and task counts are its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use brownout::admission::{Limit, QueueTimeout};
use brownout::{Brownout, Priority};
use common::{Conn, Sent, TrackedListener, rss_kib};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Permits × 1 / handler time: 2 / 25 ms = 80 requests per second.
const LIMIT: usize = 2;
const HANDLER: Duration = Duration::from_millis(25);
const CAPACITY_PER_SEC: f64 = LIMIT as f64 / 0.025;
const OVERLOAD: f64 = 10.0;
const CONNECTIONS: usize = 64;
const QUEUE: usize = 32;

/// What the client saw.
#[derive(Debug, Default)]
struct Seen {
    sent: u64,
    ok: u64,
    rejected: std::collections::BTreeMap<String, u64>,
    untyped: Vec<String>,
    errors: Vec<String>,
    critical_sent: u64,
    critical_ok: u64,
}

impl Seen {
    fn merge(&mut self, other: Seen) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        self.untyped.extend(other.untyped);
        self.errors.extend(other.errors);
        self.critical_sent += other.critical_sent;
        self.critical_ok += other.critical_ok;
    }
}

fn soak_secs() -> u64 {
    std::env::var("BROWNOUT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(20)
}

fn class(rng: &mut SmallRng) -> Priority {
    match rng.random_range(0..100) {
        0..5 => Priority::Critical,
        5..20 => Priority::High,
        20..50 => Priority::Medium,
        50..80 => Priority::Low,
        _ => Priority::Background,
    }
}

/// Drives the server from its own thread and runtime, so that the server's task count is
/// its own and the client does not compete with it for the server's workers.
fn drive(addr: std::net::SocketAddr, secs: u64, budget: u64) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let rate = CAPACITY_PER_SEC * OVERLOAD;
            let period = Duration::from_secs_f64(CONNECTIONS as f64 / rate);
            let until = tokio::time::Instant::now() + Duration::from_secs(secs);
            let remaining = Arc::new(AtomicU64::new(budget));
            let mut tasks = Vec::new();
            for i in 0..CONNECTIONS {
                let remaining = remaining.clone();
                tasks.push(tokio::spawn(async move {
                    let mut seen = Seen::default();
                    let mut rng = SmallRng::seed_from_u64(26_000 + i as u64);
                    let mut conn = match Conn::open(addr).await {
                        Ok(conn) => conn,
                        Err(err) => {
                            seen.errors.push(format!("connect: {err}"));
                            return seen;
                        }
                    };
                    // Spread the connections over one period.
                    let start =
                        tokio::time::Instant::now() + period.mul_f64(i as f64 / CONNECTIONS as f64);
                    let mut ticks = tokio::time::interval_at(start, period);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        if tokio::time::Instant::now() >= until
                            || remaining
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_err()
                        {
                            break;
                        }
                        let class = class(&mut rng);
                        seen.sent += 1;
                        seen.critical_sent += u64::from(class == Priority::Critical);
                        match conn.get("/", class.as_str()).await {
                            Sent::Answered(answer) if answer.status == 200 => {
                                seen.ok += 1;
                                seen.critical_ok += u64::from(class == Priority::Critical);
                            }
                            Sent::Answered(answer) if answer.is_typed_rejection() => {
                                let key = format!("{} {}", answer.status, answer.reason());
                                *seen.rejected.entry(key).or_default() += 1;
                            }
                            Sent::Answered(answer) => seen.untyped.push(format!("{answer:?}")),
                            Sent::Failed(err) => {
                                seen.errors.push(err.to_string());
                                break;
                            }
                        }
                        if !conn.is_open() {
                            match Conn::open(addr).await {
                                Ok(fresh) => conn = fresh,
                                Err(err) => {
                                    seen.errors.push(format!("reconnect: {err}"));
                                    break;
                                }
                            }
                        }
                    }
                    seen
                }));
            }
            let mut total = Seen::default();
            for task in tasks {
                total.merge(task.await.unwrap());
            }
            total
        })
    })
}

#[test]
fn rel_26_soak_ten_times_capacity_on_loopback_bounded_and_answered() {
    let secs = soak_secs();
    let budget = (CAPACITY_PER_SEC * OVERLOAD * secs as f64 * 1.2) as u64;
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = server.handle().clone();
    let alive = || handle.metrics().num_alive_tasks();

    let (brownout, addr, listener_state, stop, served) = server.block_on(async {
        let brownout = Brownout::builder()
            .admission(|a| {
                // CoDel's target must exceed the gap between two completions (here
                // 1 / 80 per second = 12.5 ms); the default 5 ms suits servers doing
                // hundreds of requests per second and would refuse even Critical work here.
                a.limit(Limit::fixed(LIMIT))
                    .queue_capacity(QUEUE)
                    .queue_timeout(QueueTimeout::codel(
                        Duration::from_millis(25),
                        Duration::from_millis(100),
                    ))
            })
            .build()
            .unwrap();
        let router = Router::new()
            .route(
                "/",
                get(|| async {
                    tokio::time::sleep(HANDLER).await;
                    "ok"
                }),
            )
            .layer(brownout.layer());
        let (listener, addr) = TrackedListener::bind().await;
        let state = listener.state.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        (brownout, addr, state, stop, served)
    });
    let admission = brownout.admission().unwrap().clone();

    // Warm up (allocator arenas, lazy statics, the detector's first ticks), then settle.
    let warm = drive(addr, 1, 50).join().unwrap();
    assert!(warm.errors.is_empty(), "{warm:?}");
    let settle = |limit: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() > limit && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        alive()
    };
    std::thread::sleep(Duration::from_millis(300));
    let baseline_tasks = alive();
    let baseline_rss = rss_kib();

    // The soak, sampled once a second from this thread.
    let started = Instant::now();
    let client = drive(addr, secs, budget);
    let mut peak_tasks = baseline_tasks;
    let mut peak_queue = 0;
    let mut rss = Vec::new();
    while !client.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        peak_tasks = peak_tasks.max(alive());
        peak_queue = peak_queue.max(admission.queued());
        if let Some(kib) = rss_kib() {
            rss.push((started.elapsed().as_secs_f64(), kib));
        }
    }
    let elapsed = started.elapsed();
    let seen = client.join().unwrap();
    let after_tasks = settle(baseline_tasks);
    std::thread::sleep(Duration::from_millis(200));
    let after_rss = rss_kib();

    let offered = seen.sent as f64 / elapsed.as_secs_f64();
    eprintln!(
        "soak {secs}s: sent {} ({offered:.0}/s = {:.1}x capacity), ok {}, rejected {:?}, \
         critical {}/{}; tasks baseline {baseline_tasks} peak {peak_tasks} after {after_tasks}; \
         queue peak {peak_queue}; rss baseline {baseline_rss:?} KiB after {after_rss:?} KiB; \
         level now {}",
        seen.sent,
        offered / CAPACITY_PER_SEC,
        seen.ok,
        seen.rejected,
        seen.critical_ok,
        seen.critical_sent,
        brownout.signal().level(),
    );

    // Every request answered or rejected with a reason; nothing lost.
    assert!(
        seen.errors.is_empty(),
        "connection errors: {:?}",
        seen.errors
    );
    assert!(
        seen.untyped.is_empty(),
        "untyped answers: {:?}",
        seen.untyped
    );
    let rejected: u64 = seen.rejected.values().sum();
    assert_eq!(seen.ok + rejected, seen.sent);
    assert!(seen.sent <= budget, "bounded request count");
    // It was an overload (the client kept up), and the server kept serving through it.
    assert!(
        offered >= 3.0 * CAPACITY_PER_SEC,
        "offered only {offered:.0}/s: the client was the bottleneck"
    );
    assert!(
        rejected > seen.ok,
        "most of a 10x offer is refused: {seen:?}"
    );
    assert!(
        seen.ok as f64 >= 0.3 * CAPACITY_PER_SEC * elapsed.as_secs_f64(),
        "goodput collapsed: {} ok in {elapsed:?}",
        seen.ok
    );
    // Critical work (5 % of the offer, half the capacity) is served far more often than the
    // rest: priority holds under sustained overload.
    let critical_rate = seen.critical_ok as f64 / seen.critical_sent.max(1) as f64;
    let overall_rate = seen.ok as f64 / seen.sent.max(1) as f64;
    assert!(
        critical_rate >= 0.5 && critical_rate >= 4.0 * overall_rate,
        "Critical served {}/{} ({critical_rate:.2}) vs all {overall_rate:.2}",
        seen.critical_ok,
        seen.critical_sent
    );
    // Bounded while it lasted, back to the baseline after.
    assert!(peak_queue <= QUEUE, "queue {peak_queue} > {QUEUE}");
    assert!(
        peak_tasks <= baseline_tasks + CONNECTIONS + 16,
        "tasks: peak {peak_tasks}, baseline {baseline_tasks}"
    );
    assert!(
        after_tasks <= baseline_tasks,
        "tasks left behind: {after_tasks} > baseline {baseline_tasks}"
    );
    assert_eq!(admission.in_flight(), 0);
    assert_eq!(admission.queued(), 0);
    if let (Some(base), Some(after)) = (baseline_rss, after_rss) {
        // The second half of the soak must not keep growing (a leak grows with requests),
        // and what is left after the load is within a bound of the baseline.
        let half = elapsed.as_secs_f64() / 2.0;
        let mid = rss
            .iter()
            .filter(|(t, _)| *t <= half)
            .map(|(_, k)| *k)
            .max()
            .unwrap_or(base);
        let late = rss
            .iter()
            .filter(|(t, _)| *t > half)
            .map(|(_, k)| *k)
            .max()
            .unwrap_or(after);
        eprintln!(
            "rss KiB: baseline {base}, first half peak {mid}, second half peak {late}, after {after}"
        );
        assert!(
            late <= mid + 4 * 1024,
            "RSS kept growing in the second half: {mid} KiB → {late} KiB ({rss:?})"
        );
        assert!(
            after <= base + 16 * 1024,
            "RSS after the soak {after} KiB vs baseline {base} KiB"
        );
    }

    let _ = stop.send(());
    server.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    });
    assert!(listener_state.is_closed());
}
