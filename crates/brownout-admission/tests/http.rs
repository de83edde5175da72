//! The defaults for `http::Request`: class and deadline read from the extensions.

use std::convert::Infallible;
use std::time::Duration;

use brownout_admission::{Limit, PriorityAdmissionLayer, QueueTimeout};
use brownout_core::{Deadline, Priority, RejectReason, Rejected};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

fn request(class: Priority, deadline: Option<Duration>) -> http::Request<()> {
    let mut req = http::Request::new(());
    req.extensions_mut().insert(class);
    if let Some(d) = deadline {
        Deadline::after(d).tighten(req.extensions_mut());
    }
    req
}

#[tokio::test(start_paused = true)]
async fn http_requests_use_extension_class_and_deadline() {
    let layer = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(1))
        .queue_timeout(QueueTimeout::fixed(Duration::from_secs(10)))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|req: http::Request<()>| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, Infallible>(*req.extensions().get::<Priority>().unwrap())
    }));
    let running = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(Priority::Low, None)),
    );
    tokio::task::yield_now().await;
    // Its deadline (30 ms) passes while it waits: refused at 30 ms, never served.
    let start = Instant::now();
    let late = svc
        .ready()
        .await
        .unwrap()
        .call(request(Priority::Critical, Some(Duration::from_millis(30))));
    let queued = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(Priority::High, None)),
    );
    tokio::task::yield_now().await;
    assert_eq!(handle.queued_of(Priority::Critical), 1);
    assert_eq!(handle.queued_of(Priority::High), 1);
    let err = late.await.unwrap_err();
    assert_eq!(
        Rejected::find(&*err).unwrap().reason(),
        RejectReason::QueueTimeout
    );
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(running.await.unwrap().unwrap(), Priority::Low);
    assert_eq!(queued.await.unwrap().unwrap(), Priority::High);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn default_layer_is_usable_alone() {
    let layer = PriorityAdmissionLayer::default();
    let mut svc = layer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>("ok")
    }));
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(answer, "ok");
    assert_eq!(layer.handle().limit(), 20);
}
