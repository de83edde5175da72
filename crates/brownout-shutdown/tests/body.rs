//! `ShutdownBodyGuard`: streaming response bodies stay in flight until they end.
#![cfg(feature = "http")]
#![allow(missing_docs)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brownout_core::{BoxError, RejectReason, Rejected};
use brownout_shutdown::{Aborted, GuardedBody, Shutdown, ShutdownBodyGuard};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep, sleep};
use tower::{ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

/// A body yielding one chunk per second, `left` times (`u64::MAX`: an endless SSE stream).
struct Ticks {
    left: u64,
    sleep: Pin<Box<Sleep>>,
}

impl Ticks {
    fn new(left: u64) -> Ticks {
        Ticks {
            left,
            sleep: Box::pin(sleep(SEC)),
        }
    }
}

impl Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.left -= 1;
        let next = Instant::now() + SEC;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"tick")))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

use std::future::Future;

fn streaming(
    shutdown: &Shutdown,
) -> ShutdownBodyGuard<
    impl tower::Service<
        http::Request<u64>,
        Response = http::Response<Ticks>,
        Error = Infallible,
        Future = impl Send,
    > + Clone,
> {
    ShutdownBodyGuard::new(
        service_fn(|req: http::Request<u64>| async move {
            Ok::<_, Infallible>(http::Response::new(Ticks::new(*req.body())))
        }),
        shutdown,
    )
}

/// Reads a body to its end; returns the chunks read and the error that ended it, if any.
async fn drain_body(mut body: GuardedBody<Ticks>) -> (usize, Option<BoxError>) {
    let mut chunks = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(_) => chunks += 1,
            Err(err) => {
                assert!(body.frame().await.is_none(), "ends after the error");
                return (chunks, Some(err));
            }
        }
    }
    (chunks, None)
}

#[tokio::test(start_paused = true)]
async fn rel_05_body_holds_the_slot_until_it_ends_and_the_drain_waits_for_it() {
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let response = streaming(&shutdown)
        .oneshot(http::Request::new(3))
        .await
        .unwrap();
    assert_eq!(shutdown.in_flight(), 1, "head sent, body still streaming");
    let start = Instant::now();
    let reader = tokio::spawn(drain_body(response.into_body()));
    let report = shutdown.shutdown().await;
    let (chunks, err) = reader.await.unwrap();
    assert_eq!((chunks, err.is_none()), (3, true), "whole body delivered");
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!((report.completed_during_drain, report.aborted), (1, 0));
    assert!(report.drained);
}

#[tokio::test(start_paused = true)]
async fn rel_20_endless_sse_body_aborted_at_the_drain_deadline() {
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = streaming(&shutdown)
        .oneshot(http::Request::new(u64::MAX))
        .await
        .unwrap();
    let reader = tokio::spawn(drain_body(response.into_body()));
    sleep(Duration::from_millis(2500)).await;
    let start = Instant::now();
    let report = shutdown.shutdown().await;
    let (chunks, err) = reader.await.unwrap();
    let err = err.expect("cut by the deadline");
    assert!(err.downcast_ref::<Aborted>().is_some());
    assert_eq!(
        Rejected::find(&*err).unwrap().reason(),
        RejectReason::ShuttingDown
    );
    assert_eq!(chunks, 12, "2 before the trigger, 10 during the drain");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(10),
        "done by the deadline"
    );
    assert_eq!(report.aborted, 1);
    assert!(!report.drained);
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rel_02_dropped_body_releases_the_slot_as_cancelled() {
    let shutdown = Shutdown::new();
    let response = streaming(&shutdown)
        .oneshot(http::Request::new(100))
        .await
        .unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    assert_eq!(shutdown.in_flight(), 1);
    drop(body);
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(shutdown.counts().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn refusals_and_head_errors_with_the_body_guard() {
    let shutdown = Shutdown::new();
    let failing = ShutdownBodyGuard::new(
        service_fn(|_: http::Request<()>| async {
            Err::<http::Response<Ticks>, BoxError>("no head".into())
        }),
        &shutdown,
    );
    let err = failing
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no head");
    assert_eq!((shutdown.counts().completed, shutdown.in_flight()), (1, 0));
    shutdown.trigger();
    let err = failing.oneshot(http::Request::new(())).await.unwrap_err();
    assert_eq!(
        Rejected::find(&*err).unwrap().reason(),
        RejectReason::ShuttingDown
    );
    let report = shutdown.wait().await;
    assert_eq!((report.completed, report.rejected), (1, 1));
}
