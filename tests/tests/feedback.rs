//! Shedding must not feed back into the monitor that drives it.

use std::convert::Infallible;

use brownout::monitor::Monitor;
use brownout::shed::{LoadShedConfig, LoadShedLayer};
use brownout::{Fixed, LoadLevel, LoadSignal, Priority};
use tower::{Layer, Service, ServiceExt, service_fn};

/// With the monitor outside the shed layer (the order of DESIGN.md's picture), requests
/// refused by brownout count neither as failures nor as latency samples, so shedding cannot
/// raise the error rate and escalate the level in a loop.
#[tokio::test(start_paused = true)]
async fn rejections_do_not_raise_the_monitors_error_rate() {
    let monitor = Monitor::builder().manual_ticks().build().unwrap();
    let shed = LoadShedLayer::new(LoadShedConfig::builder().build().unwrap())
        .with_signal(LoadSignal::fixed(LoadLevel::Critical))
        .classifier(Fixed(Priority::Low));
    let mut svc = monitor
        .layer()
        .layer(shed.layer(service_fn(|n: u32| async move { Ok::<_, Infallible>(n) })));
    for n in 0..200 {
        let result = svc.ready().await.unwrap().call(n).await;
        assert!(result.is_err(), "Low is shed at Critical");
    }
    assert_eq!(monitor.tick_now(), LoadLevel::Normal);
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.failures, 0, "{snapshot:?}");
    assert_eq!(snapshot.latency.samples, 0, "{snapshot:?}");
    assert_eq!(snapshot.in_flight, 0);
}
