//! `AdaptiveThrottle`: the SRE formula against a server accepting half the requests, and
//! local drops of the classes a server reports it sheds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use brownout_core::{BoxError, Priority, RejectReason, Rejected};
use brownout_retry::throttle::{AdaptiveThrottleConfig, AdaptiveThrottleLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn reason(err: &BoxError) -> Option<RejectReason> {
    Rejected::find_in_box(&**err).map(Rejected::reason)
}

/// A server with capacity for 100 requests/s, offered 200 requests/s: it accepts 50 % of
/// the offered load. The SRE throttle lets through about K × accepts, so the local rejection
/// share should settle at `max(0, 1 − K × 100/200)`: 0 for K = 2, 0.25 for K = 1.5, 0.45 for
/// K = 1.1; and at every moment the throttle's probability is the formula on its window.
#[tokio::test(start_paused = true)]
async fn figure_reject_probability_converges_to_the_sre_formula() {
    const CAPACITY_PER_SEC: f64 = 100.0;
    const INTERVAL: Duration = Duration::from_millis(5); // 200 requests/s offered
    const SECONDS: u32 = 360;
    for k in [2.0, 1.5, 1.1] {
        let accepted = Arc::new(AtomicU32::new(0));
        let counter = accepted.clone();
        let start = tokio::time::Instant::now();
        // Accepts while its running total stays under capacity × elapsed time.
        let server = service_fn(move |_: ()| {
            let allowed = start.elapsed().as_secs_f64() * CAPACITY_PER_SEC + 1.0;
            let ok = f64::from(counter.load(Ordering::SeqCst)) < allowed;
            if ok {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                if ok {
                    Ok::<(), BoxError>(())
                } else {
                    Err("503".into())
                }
            }
        });
        let layer = AdaptiveThrottleLayer::new(
            AdaptiveThrottleConfig::builder()
                .k(k)
                .seed(5)
                .build()
                .unwrap(),
        );
        let mut svc = layer.layer(server);
        let total = SECONDS * 200;
        let (mut local, mut measured_from) = (0u32, 0u32);
        let mut max_gap = 0.0f64;
        for i in 0..total {
            // Measure once the 2-minute window holds only steady-state traffic.
            let measuring = i >= total / 2;
            if measuring {
                measured_from += 1;
                let s = layer.stats();
                let formula = ((s.requests as f64 - k * s.accepts as f64)
                    / (s.requests as f64 + 1.0))
                    .max(0.0);
                max_gap = max_gap.max((formula - s.reject_probability).abs());
            }
            if let Err(e) = svc.ready().await.unwrap().call(()).await
                && reason(&e) == Some(RejectReason::BudgetExhausted)
                && measuring
            {
                local += 1;
            }
            tokio::time::sleep(INTERVAL).await;
        }
        let measured = f64::from(local) / f64::from(measured_from);
        let expected = (1.0 - k * 0.5f64).max(0.0);
        let stats = layer.stats();
        println!(
            "server accepting 50 % of 200 req/s, K = {k}: local rejection share {measured:.3}, \
             SRE steady state {expected:.3}, window p {:.3} (requests {}, accepts {})",
            stats.reject_probability, stats.requests, stats.accepts
        );
        assert!(
            max_gap < 1e-9,
            "the probability is the formula on the window"
        );
        assert!(
            (measured - expected).abs() < 0.03,
            "K {k}: {measured} vs {expected}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn healthy_server_is_never_throttled() {
    let ok = service_fn(|_: ()| async { Ok::<(), BoxError>(()) });
    let layer =
        AdaptiveThrottleLayer::new(AdaptiveThrottleConfig::builder().seed(1).build().unwrap());
    let mut svc = layer.layer(ok);
    for _ in 0..1000 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(layer.stats().rejected_locally, 0);
    assert_eq!(layer.stats().reject_probability, 0.0);
}

#[tokio::test(start_paused = true)]
async fn recovers_when_the_window_forgets_the_outage() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let svc = service_fn(move |_: ()| {
        let fail = flag.load(Ordering::SeqCst);
        async move {
            if fail {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        }
    });
    let layer = AdaptiveThrottleLayer::new(
        AdaptiveThrottleConfig::builder()
            .window(Duration::from_secs(60), 6)
            .seed(2)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(svc);
    for _ in 0..500 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    assert!(layer.stats().reject_probability > 0.9);
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(layer.stats().reject_probability, 0.0);
    svc.ready().await.unwrap().call(()).await.unwrap();
}

fn leveled(
    level: &'static str,
) -> impl Service<http::Request<()>, Response = http::Response<()>, Error = BoxError, Future: Send> + Clone
{
    service_fn(move |_: http::Request<()>| async move {
        Ok::<_, BoxError>(
            http::Response::builder()
                .header("x-load-level", level)
                .body(())
                .unwrap(),
        )
    })
}

fn request(priority: Priority) -> http::Request<()> {
    let mut req = http::Request::get("/").body(()).unwrap();
    req.extensions_mut().insert(priority);
    req
}

#[tokio::test(start_paused = true)]
async fn classes_shed_at_the_reported_level_are_dropped_locally() {
    let layer = AdaptiveThrottleLayer::http(
        AdaptiveThrottleConfig::builder()
            .level_ttl(Duration::from_secs(5))
            .seed(3)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(leveled("high"));
    // The first answer tells the client the server is at High.
    svc.ready()
        .await
        .unwrap()
        .call(request(Priority::Medium))
        .await
        .unwrap();

    // High sheds Low and Background: those never leave the client while the level is fresh.
    for priority in [Priority::Low, Priority::Background] {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(request(priority))
            .await
            .unwrap_err();
        let rejected = *Rejected::find_in_box(&*err).unwrap();
        assert_eq!(rejected.reason(), RejectReason::Shed);
        assert_eq!(rejected.priority(), Some(priority));
        assert!(rejected.retry_after().unwrap() <= Duration::from_secs(5));
    }
    for priority in [Priority::Critical, Priority::High, Priority::Medium] {
        svc.ready()
            .await
            .unwrap()
            .call(request(priority))
            .await
            .unwrap();
    }
    assert_eq!(layer.stats().shed_by_level, 2);

    // After the TTL without news, the level is forgotten.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut quiet = layer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, BoxError>(http::Response::new(()))
    }));
    quiet
        .ready()
        .await
        .unwrap()
        .call(request(Priority::Low))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn digit_levels_and_http_refusals() {
    let layer =
        AdaptiveThrottleLayer::http(AdaptiveThrottleConfig::builder().seed(4).build().unwrap());
    let mut svc = layer.layer(leveled("3"));
    svc.ready()
        .await
        .unwrap()
        .call(request(Priority::High))
        .await
        .unwrap();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request(Priority::Medium))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        Some(RejectReason::Shed),
        "Critical sheds Medium"
    );

    let unavailable = service_fn(|_: http::Request<()>| async {
        Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap())
    });
    let layer =
        AdaptiveThrottleLayer::http(AdaptiveThrottleConfig::builder().seed(4).build().unwrap());
    let mut svc = layer.layer(unavailable);
    for _ in 0..100 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(request(Priority::High))
            .await;
    }
    assert_eq!(layer.stats().accepts, 0, "503 is not an accept");
    assert!(layer.stats().rejected_locally > 50);
}

#[tokio::test(start_paused = true)]
async fn cancelled_requests_are_not_counted() {
    let slow = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<(), BoxError>(())
    });
    let layer =
        AdaptiveThrottleLayer::new(AdaptiveThrottleConfig::builder().seed(1).build().unwrap());
    let mut svc = layer.layer(slow);
    for _ in 0..10 {
        let fut = svc.ready().await.unwrap().call(());
        drop(fut);
    }
    assert_eq!(layer.stats().requests, 0);
}
