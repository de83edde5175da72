//! Configuration refused at build, and a load signal that outlives its publisher:
//! cases 10 and 19.

use std::time::Duration;

use brownout::admission::{Limit, PriorityAdmissionLayer, QueueTimeout, RateLimit};
use brownout::breaker::CircuitBreakConfig;
use brownout::health::Health;
use brownout::retry::RetryConfig;
use brownout::shed::{LoadShedConfig, LoadShedLayer};
use brownout::shutdown::Shutdown;
use brownout::{Brownout, BrownoutBuilder, ConfigError, LoadLevel, LoadSignal, Priority};
use tokio::time::{sleep, timeout};
use tower::{Layer, ServiceBuilder, ServiceExt};

use crate::support::{Backend, get, reason};

fn refused(builder: BrownoutBuilder) -> ConfigError {
    match builder.build() {
        Ok(_) => panic!("accepted an invalid configuration"),
        Err(err) => err,
    }
}

/// RELIABILITY #10: zero capacities, NaN, ±infinity, negative values, fractions above
/// 100 % and inverted thresholds are refused when the stack (or a layer used beside it) is
/// built, with an error naming the layer and the field — never at the first request.
#[tokio::test(start_paused = true)]
async fn rel_10_bad_configuration_refused_at_build_naming_the_field() {
    let cases: Vec<(BrownoutBuilder, &str)> = vec![
        (
            Brownout::builder().admission(|a| a.limit(Limit::fixed(0))),
            "admission.limit",
        ),
        (
            Brownout::builder().admission(|a| a.queue_timeout(QueueTimeout::fixed(Duration::ZERO))),
            "admission.queue_timeout",
        ),
        (
            Brownout::builder().admission(|a| a.reserve(Priority::Critical, f64::NAN)),
            "admission.reserve",
        ),
        (
            Brownout::builder().admission(|a| a.reserve(Priority::Critical, 1.5)),
            "admission.reserve",
        ),
        (
            Brownout::builder().admission(|a| a.rate_limit(RateLimit::per_second(-5.0))),
            "admission.rate",
        ),
        (
            Brownout::builder().admission(|a| a.rate_limit(RateLimit::per_second(f64::INFINITY))),
            "admission.rate",
        ),
        (
            Brownout::builder().monitor(|m| m.interval(Duration::ZERO)),
            "monitor.interval",
        ),
        (
            Brownout::builder().monitor(|m| m.hysteresis(f64::NAN)),
            "monitor.hysteresis",
        ),
        (
            Brownout::builder().monitor(|m| m.error_rate_thresholds([0.5, 0.4, 0.3, 0.2])),
            "monitor.error_rate_thresholds",
        ),
        (
            Brownout::builder().monitor(|m| m.error_rate_thresholds([0.1, 0.2, 0.3, 1.5])),
            "monitor.error_rate_thresholds",
        ),
        (
            Brownout::builder().timeout(|t| t.percentile(f64::NAN)),
            "timeout.percentile",
        ),
        (
            Brownout::builder().timeout(|t| t.multiplier(f64::NEG_INFINITY)),
            "timeout.multiplier",
        ),
        (
            Brownout::builder()
                .timeout(|t| t.min(Duration::from_secs(2)).max(Duration::from_secs(1))),
            "timeout.",
        ),
    ];
    for (builder, field) in cases {
        let err = refused(builder);
        assert!(
            err.field().starts_with(field),
            "expected a field under `{field}`, got `{}`: {err}",
            err.field()
        );
        assert!(!err.rule().is_empty(), "{err}");
    }

    // The layers used beside the stack refuse theirs too.
    let err = Shutdown::builder()
        .drain_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "drain_timeout");
    let err = RetryConfig::builder()
        .backoff(Duration::from_millis(1), Duration::from_secs(1), f64::NAN)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "backoff.multiplier");
    let err = RetryConfig::builder()
        .budget(Duration::from_secs(10), 1.0, -0.1)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "budget.ratio");
    let err = CircuitBreakConfig::builder()
        .failure_rate(1.5)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "failure_rate");
    let err = CircuitBreakConfig::builder()
        .open_duration(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "open_duration");
    let err = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "limit");
    let err = Health::builder()
        .levels(LoadLevel::Critical, LoadLevel::Elevated)
        .build()
        .unwrap_err();
    assert!(!err.field().is_empty(), "{err}");
}

/// RELIABILITY #19: when the publisher of a load signal is gone — the monitor dropped with
/// the last service of the stack, or a hand-made channel — readers keep the last level
/// (shedding goes on at it), `changed()` reports the end instead of waking in a loop, and
/// the monitor's detector task is gone.
#[tokio::test(start_paused = true)]
async fn rel_19_publisher_dropped_readers_keep_the_last_level_without_busy_loop() {
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let baseline = alive();
    let brownout = Brownout::builder().build().unwrap();
    assert!(alive() > baseline, "the monitor's detector task runs");
    let mut signal = brownout.signal();
    brownout.publisher().force(LoadLevel::Critical);
    assert_eq!(signal.changed().await, Some(LoadLevel::Critical));
    let svc = brownout.layer().layer(Backend::default());
    drop(brownout);
    // The service keeps the monitor alive.
    let response = svc.clone().oneshot(get("low")).await.unwrap();
    assert_eq!(response.status(), 503);
    drop(svc);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(signal.level(), LoadLevel::Critical, "the last level stays");
    let ended = timeout(Duration::from_secs(1), signal.changed())
        .await
        .expect("changed() returns instead of waiting forever");
    assert_eq!(ended, None, "no publisher: no more changes");
    for _ in 0..100 {
        assert_eq!(signal.changed().await, None, "returns at once, no spin");
    }
    assert_eq!(alive(), baseline, "the detector task ended");

    // A hand-made channel shared by layers used beside the stack.
    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let svc = ServiceBuilder::new()
        .layer(brownout::http::RejectionResponseLayer::new().with_level_header(signal.clone()))
        .layer(brownout::ClassifyLayer::new(
            brownout::http::HttpClassifier::default(),
        ))
        .layer(
            LoadShedLayer::new(LoadShedConfig::builder().no_smooth().build().unwrap())
                .with_signal(signal.clone()),
        )
        .service(Backend::default());
    publisher.publish(LoadLevel::High);
    drop(publisher);
    for _ in 0..3 {
        let response = svc.clone().oneshot(get("low")).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(reason(&response), "shed");
        assert_eq!(response.headers()["x-load-level"], "high");
        let response = svc.clone().oneshot(get("high")).await.unwrap();
        assert_eq!(response.status(), 200);
    }
}
