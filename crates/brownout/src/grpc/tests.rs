//! Tests of the layer as a service: errors, panics, successes, readiness.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::{BoxError, LoadLevel, LoadSignal, RejectReason, Rejected};
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::GrpcRejectionLayer;

/// What the inner service does with each call.
#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    Reject(Rejected),
    Fail,
    PanicInCall,
    PanicInFuture,
    NotReady,
}

#[derive(Clone)]
struct Inner(Behaviour);

struct PanickingFuture;

impl std::future::Future for PanickingFuture {
    type Output = Result<Response<()>, BoxError>;
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        panic!("handler bug with secret token abc123")
    }
}

enum InnerFuture {
    Ready(Ready<Result<Response<()>, BoxError>>),
    Panics(PanickingFuture),
}

impl std::future::Future for InnerFuture {
    type Output = Result<Response<()>, BoxError>;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            InnerFuture::Ready(f) => std::pin::Pin::new(f).poll(cx),
            InnerFuture::Panics(f) => std::pin::Pin::new(f).poll(cx),
        }
    }
}

impl Service<Request<()>> for Inner {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = InnerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.0 {
            Behaviour::NotReady => Poll::Ready(Err("dependency down".into())),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, _: Request<()>) -> InnerFuture {
        match self.0 {
            Behaviour::Ok => InnerFuture::Ready(ready(Ok(Response::new(())))),
            Behaviour::Reject(r) => InnerFuture::Ready(ready(Err(r.into()))),
            Behaviour::Fail | Behaviour::NotReady => {
                InnerFuture::Ready(ready(Err("db password hunter2".into())))
            }
            Behaviour::PanicInCall => panic!("panic in call with secret abc123"),
            Behaviour::PanicInFuture => InnerFuture::Panics(PanickingFuture),
        }
    }
}

async fn answer(layer: &GrpcRejectionLayer, behaviour: Behaviour) -> Response<()> {
    let mut svc = layer.layer(Inner(behaviour));
    let ready: Result<(), Infallible> =
        std::future::poll_fn(|cx| Service::<Request<()>>::poll_ready(&mut svc, cx)).await;
    let Ok(()) = ready;
    let Ok(response) = svc.call(Request::new(())).await;
    response
}

fn header<'a>(r: &'a Response<()>, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

// RELIABILITY #7: a rejection out of the stack reaches the client as UNAVAILABLE /
// RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED with pushback, never INTERNAL.
#[tokio::test]
async fn rel_07_rejections_become_retryable_statuses_with_pushback() {
    let layer = GrpcRejectionLayer::new();
    for reason in RejectReason::ALL {
        let rejected =
            Rejected::new(reason, LoadLevel::Critical).with_retry_after(Duration::from_secs(2));
        let r = answer(&layer, Behaviour::Reject(rejected)).await;
        let code = header(&r, "grpc-status").unwrap();
        assert!(matches!(code, "14" | "8" | "4"), "{reason}: {code}");
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "grpc-retry-pushback-ms"), Some("2000"));
        assert_eq!(header(&r, "x-load-level"), Some("critical"));
    }
}

#[tokio::test]
async fn errors_are_unknown_and_panics_internal_without_details() {
    let layer = GrpcRejectionLayer::new();
    for (behaviour, code) in [
        (Behaviour::Fail, "2"),
        (Behaviour::NotReady, "2"),
        (Behaviour::PanicInCall, "13"),
        (Behaviour::PanicInFuture, "13"),
    ] {
        let r = answer(&layer, behaviour).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), Some("application/grpc"));
        assert_eq!(header(&r, "grpc-status"), Some(code));
        let message = header(&r, "grpc-message").unwrap();
        assert!(!message.contains("hunter2") && !message.contains("abc123"));
        assert!(r.headers().get("grpc-retry-pushback-ms").is_none());
    }
}

#[tokio::test]
async fn successes_pass_through_with_the_level_when_asked() {
    let plain = answer(&GrpcRejectionLayer::new(), Behaviour::Ok).await;
    assert!(plain.headers().is_empty());

    let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
    let layer = GrpcRejectionLayer::new().with_level_header(signal);
    publisher.publish(LoadLevel::Elevated);
    let stamped = answer(&layer, Behaviour::Ok).await;
    assert_eq!(header(&stamped, "x-load-level"), Some("elevated"));
    assert!(stamped.headers().get("grpc-status").is_none());

    // A rejection keeps the level it was refused at, not the current one.
    let rejected = Rejected::new(RejectReason::Shed, LoadLevel::Emergency);
    let r = answer(&layer, Behaviour::Reject(rejected)).await;
    assert_eq!(header(&r, "x-load-level"), Some("emergency"));
}
