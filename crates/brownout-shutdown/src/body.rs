//! Keeping a request in flight until its response body ends (feature `http`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_core::BoxError;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::{AbortWatch, InFlight, ResponseFuture};
use crate::handle::Shared;
use crate::{Shutdown, ShutdownGuard};

/// Wraps http services in a [`ShutdownBodyGuard`]; get one from [`Shutdown::body_layer`].
#[derive(Clone)]
pub struct ShutdownBodyGuardLayer {
    shared: Arc<Shared>,
}

impl ShutdownBodyGuardLayer {
    /// A layer guarded by `shutdown`.
    pub fn new(shutdown: &Shutdown) -> ShutdownBodyGuardLayer {
        ShutdownBodyGuardLayer {
            shared: shutdown.shared().clone(),
        }
    }
}

impl<S> Layer<S> for ShutdownBodyGuardLayer {
    type Service = ShutdownBodyGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShutdownBodyGuard {
            guard: ShutdownGuard::from_shared(inner, self.shared.clone()),
        }
    }
}

impl fmt::Debug for ShutdownBodyGuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownBodyGuardLayer")
            .finish_non_exhaustive()
    }
}

/// A [`ShutdownGuard`] for http services that keeps each request in flight until its
/// response **body** ends (or is dropped), not only until the response head.
///
/// Use it for streaming responses (server-sent events, long downloads, gRPC server
/// streams): the drain then waits for them, and at the drain deadline a body still
/// streaming ends with an [`Aborted`](crate::Aborted) error frame, so the server closes
/// that connection (the client sees a cut stream and reconnects elsewhere; an
/// `EventSource` does so on its own) and the server's own graceful shutdown can finish.
///
/// Counting: a request is *completed* when its body reaches its end (or yields an error),
/// *cancelled* when the body is dropped before its end, *aborted* at the deadline.
///
/// ```
/// use std::convert::Infallible;
/// use brownout_shutdown::Shutdown;
/// use http_body_util::{BodyExt, Full};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let shutdown = Shutdown::new();
/// let svc = ServiceBuilder::new().layer(shutdown.body_layer()).service_fn(|_req: http::Request<()>| async {
///     Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from_static(b"hello"))))
/// });
/// let response = svc.oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(shutdown.in_flight(), 1, "the body has not been read yet");
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(&body[..], b"hello");
/// assert_eq!(shutdown.in_flight(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct ShutdownBodyGuard<S> {
    guard: ShutdownGuard<S>,
}

impl<S> ShutdownBodyGuard<S> {
    /// Guards `inner` with `shutdown`.
    pub fn new(inner: S, shutdown: &Shutdown) -> ShutdownBodyGuard<S> {
        ShutdownBodyGuard {
            guard: ShutdownGuard::new(inner, shutdown),
        }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        self.guard.get_ref()
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        self.guard.get_mut()
    }

    /// Consumes this service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.guard.into_inner()
    }
}

impl<S: fmt::Debug> fmt::Debug for ShutdownBodyGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownBodyGuard")
            .field("guard", &self.guard)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ShutdownBodyGuard<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<GuardedBody<ResBody>>;
    type Error = BoxError;
    type Future = BodyResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.guard.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        BodyResponseFuture {
            inner: self.guard.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`ShutdownBodyGuard`]: as
    /// [`ResponseFuture`](crate::future::ResponseFuture), but a successful response hands
    /// its in-flight slot to its [`GuardedBody`].
    pub struct BodyResponseFuture<F> {
        #[pin]
        inner: ResponseFuture<F>,
    }
}

impl<F, B, E> Future for BodyResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<GuardedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll_slot(cx, true).map(|result| {
            result.map(|(response, slot)| response.map(|body| GuardedBody::new(body, slot)))
        })
    }
}

impl<F> fmt::Debug for BodyResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}

pin_project! {
    /// A response body that holds its request's in-flight slot until it ends, is dropped,
    /// or is aborted at the drain deadline (then it yields one [`Aborted`](crate::Aborted)
    /// error frame and ends).
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        // Boxed (once, at the first `Pending`) so that the body is `Unpin` when `B` is.
        abort: Option<Pin<Box<AbortWatch>>>,
        slot: Option<InFlight>,
        aborted: bool,
    }
}

impl<B> GuardedBody<B> {
    fn new(inner: B, slot: Option<InFlight>) -> GuardedBody<B> {
        GuardedBody {
            inner,
            abort: None,
            slot,
            aborted: false,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("in_flight", &self.slot.is_some())
            .field("aborted", &self.aborted)
            .finish()
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if *this.aborted {
            return Poll::Ready(None);
        }
        let Some(slot) = this.slot.as_ref() else {
            // Already settled (ended or errored): plain pass-through.
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream()
                    && let Some(slot) = this.slot.take()
                {
                    slot.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                // The end, or an error: the request is over either way.
                if let Some(slot) = this.slot.take() {
                    slot.complete();
                }
                Poll::Ready(other.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let watch = this
                    .abort
                    .get_or_insert_with(|| Box::pin(AbortWatch::new()));
                if watch.as_mut().poll_abort(slot, cx) {
                    *this.aborted = true;
                    let slot = this.slot.take().expect("checked above");
                    Poll::Ready(Some(Err(slot.abort_error())))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.aborted || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.aborted {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}
