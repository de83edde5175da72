//! The `brownout_shutdown_phase` gauge follows the phases (0 running, 1 draining,
//! 2 terminated), read back through a Prometheus recorder.

use std::time::Duration;

use brownout_shutdown::{Phase, Shutdown};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

fn phase_value(handle: &PrometheusHandle) -> Option<f64> {
    handle
        .render()
        .lines()
        .find(|line| line.starts_with("brownout_shutdown_phase{"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn the_phase_gauge_follows_running_draining_terminated() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // The gauge binds to the recorder current when the handle is built.
    let shutdown = metrics::with_local_recorder(&recorder, || {
        Shutdown::builder()
            .drain_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    });
    assert_eq!(phase_value(&handle), Some(0.0), "{}", handle.render());
    assert!(
        handle
            .render()
            .contains("brownout_shutdown_phase{layer=\"shutdown\"}")
    );

    // A request in flight keeps the shutdown draining.
    let guard = shutdown.layer();
    let (mut svc, mut backend) = tower_test::mock::spawn_layer::<(), (), _>(guard);
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let in_flight = tokio::spawn(svc.call(()));
    let (_, send) = backend.next_request().await.unwrap();

    shutdown.trigger();
    tokio::task::yield_now().await;
    assert_eq!(shutdown.phase(), Phase::Draining);
    assert_eq!(phase_value(&handle), Some(1.0));

    send.send_response(());
    in_flight.await.unwrap().unwrap();
    shutdown.wait().await;
    assert_eq!(shutdown.phase(), Phase::Terminated);
    assert_eq!(phase_value(&handle), Some(2.0));
}
