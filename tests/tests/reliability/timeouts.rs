//! Deadlines and timeouts through the stack: cases 16, 17, 18.

use std::time::Duration;

use brownout::admission::{Limit, QueueTimeout};
use brownout::{Brownout, Deadline, LoadLevel};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::support::{Backend, reason, with_mode};

/// A stack whose adaptive timeout starts at `initial` and is clamped to `[min, max]`.
fn timed(initial: Duration, min: Duration, max: Duration) -> Brownout {
    // The monitor ticks rarely: its level is pinned, and paused time jumps hours ahead.
    let brownout = Brownout::builder()
        .monitor(|m| m.interval(Duration::from_secs(3600)))
        .admission(|a| {
            a.limit(Limit::fixed(64))
                .queue_capacity(64)
                .queue_timeout(QueueTimeout::fixed(Duration::from_secs(60)))
        })
        .timeout(move |t| {
            t.initial(initial)
                .min(min)
                .max(max)
                .percentile(0.99)
                .min_samples(10)
                .max_sample_every(1)
        })
        .build()
        .unwrap();
    brownout.publisher().force(LoadLevel::Normal);
    brownout
}

/// RELIABILITY #16: a handler whose response is ready at the very instant its timeout
/// expires wins (documented: the inner future is polled before the timer), every time;
/// one millisecond later the timeout wins with 504.
#[tokio::test(start_paused = true)]
async fn rel_16_response_ready_at_the_deadline_wins_deterministically() {
    let ms = Duration::from_millis;
    let brownout = timed(ms(100), ms(100), ms(100));
    let svc = brownout.layer().layer(Backend::default());
    for _ in 0..20 {
        let started = Instant::now();
        let response = svc
            .clone()
            .oneshot(with_mode("high", "sleep-100"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.body());
        assert_eq!(started.elapsed(), ms(100));
    }
    let response = svc.oneshot(with_mode("high", "sleep-101")).await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(reason(&response), "timeout");
}

/// RELIABILITY #17: a caller's deadline that has already passed (`grpc-timeout: 0n`, or a
/// `Deadline` in the past) is refused at once without calling the handler; a timeout of
/// `Duration::MAX` means no timer, and the longest `grpc-timeout` does not overflow.
#[tokio::test(start_paused = true)]
async fn rel_17_past_deadline_refused_at_once_and_duration_max_means_no_timer() {
    let secs = Duration::from_secs;
    let brownout = timed(secs(1), Duration::from_millis(10), secs(10));
    let backend = Backend::default();
    let svc = brownout.layer().layer(backend.clone());
    let started = Instant::now();
    let mut req = with_mode("high", "ok");
    req.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("0n"));
    let response = svc.clone().oneshot(req).await.unwrap();
    assert!(
        matches!(response.status().as_u16(), 503 | 504),
        "{response:?}"
    );
    assert!(
        ["timeout", "queue_timeout"].contains(&reason(&response)),
        "{:?}",
        response.body()
    );
    let mut req = with_mode("high", "ok");
    Deadline::after(Duration::ZERO).tighten(req.extensions_mut());
    let response = svc.clone().oneshot(req).await.unwrap();
    assert!(matches!(response.status().as_u16(), 503 | 504));
    assert_eq!(started.elapsed(), Duration::ZERO, "refused at once");
    assert_eq!(backend.calls(), 0, "the handler never ran");

    // No timeout at all: a day-long request completes, at every level.
    let forever = timed(Duration::MAX, Duration::from_millis(1), Duration::MAX);
    let svc = forever.layer().layer(backend.clone());
    for level in [LoadLevel::Normal, LoadLevel::Critical] {
        forever.publisher().force(level);
        let day = with_mode("critical", "sleep-86400000");
        assert_eq!(svc.clone().oneshot(day).await.unwrap().status(), 200);
    }
    forever.publisher().force(LoadLevel::Normal);
    let mut req = with_mode("high", "sleep-5");
    req.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("99999999H"));
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
    let mut req = with_mode("high", "sleep-50");
    req.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("10m"));
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(
        response.status(),
        504,
        "the caller's deadline still applies"
    );
}

/// RELIABILITY #18: with no samples the initial timeout applies; after windows holding one
/// huge outlier among fast requests the timeout stays within `[min, max]`: a request longer
/// than `max` is always cut, one shorter than `min` never is.
#[tokio::test(start_paused = true)]
async fn rel_18_no_samples_use_the_initial_timeout_and_an_outlier_stays_within_bounds() {
    let ms = Duration::from_millis;
    let brownout = timed(ms(300), ms(50), ms(2000));
    let svc = brownout.layer().layer(Backend::default());
    let started = Instant::now();
    let response = svc
        .clone()
        .oneshot(with_mode("high", "sleep-1000"))
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(
        started.elapsed(),
        ms(300),
        "no samples: the initial timeout"
    );

    for window in 0..5 {
        let mut calls = Vec::new();
        for i in 0..30 {
            let mode = if i == 0 && window % 2 == 0 {
                "sleep-100000" // one huge outlier (censored at the timeout)
            } else {
                "sleep-5"
            };
            calls.push(tokio::spawn(svc.clone().oneshot(with_mode("high", mode))));
        }
        for call in calls {
            let status = call.await.unwrap().unwrap().status();
            assert!(status == 200 || status == 504);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let started = Instant::now();
    let response = svc
        .clone()
        .oneshot(with_mode("high", "sleep-2001"))
        .await
        .unwrap();
    assert_eq!(response.status(), 504, "longer than max: cut");
    let cut_after = started.elapsed();
    assert!(
        cut_after >= ms(50) && cut_after <= ms(2000),
        "{cut_after:?}"
    );
    let response = svc.oneshot(with_mode("high", "sleep-49")).await.unwrap();
    assert_eq!(response.status(), 200, "shorter than min: never cut");
}
