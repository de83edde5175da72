//! Buffering http request bodies so that they can be sent more than once.
//!
//! A streaming body (hyper's `Incoming`, a client's streaming upload) can be sent once.
//! [`BufferBodyLayer`] reads each request body up to a size cap before calling the inner
//! service: a body that fits becomes [`Buffered::Full`], which [`HttpClone`](crate::HttpClone)
//! copies for retries and hedges; a larger body becomes [`Buffered::Partial`] (the chunks
//! read so far, then the rest of the stream), which is sent once and never retried.
//!
//! Put it outside the retry layer:
//!
//! ```
//! use brownout_retry::body::{BufferBodyLayer, Buffered};
//! use brownout_retry::{RetryConfig, RetryLayer};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let echo = service_fn(|req: http::Request<Buffered<Full<bytes::Bytes>>>| async move {
//!     let bytes = req.into_body().collect().await?.to_bytes();
//!     Ok::<_, brownout_core::BoxError>(http::Response::new(bytes))
//! });
//! let mut client = ServiceBuilder::new()
//!     .layer(BufferBodyLayer::new(64 * 1024))
//!     .layer(RetryLayer::http(RetryConfig::default()))
//!     .service(echo);
//! let req = http::Request::put("/doc").body(Full::new(bytes::Bytes::from_static(b"hello"))).unwrap();
//! let res = client.ready().await.unwrap().call(req).await.unwrap();
//! assert_eq!(res.body(), "hello");
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use brownout_core::BoxError;
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::request::TryCloneBody;

/// A request body after [`BufferBodyLayer`]: whole (copyable) or partly read (sent once).
#[derive(Debug)]
pub enum Buffered<B> {
    /// The whole body, in memory: copyable, so the request can be retried.
    Full {
        /// The data not yet yielded.
        data: Option<Bytes>,
        /// The trailers, if the body had any.
        trailers: Option<HeaderMap>,
    },
    /// The body was larger than the cap: the chunks read so far, then the rest of the stream.
    Partial {
        /// Chunks already read, yielded first.
        read: VecDeque<Bytes>,
        /// The rest of the body.
        rest: B,
    },
}

impl<B> Buffered<B> {
    /// A whole body from `data`.
    pub fn full(data: impl Into<Bytes>) -> Buffered<B> {
        Buffered::Full {
            data: Some(data.into()),
            trailers: None,
        }
    }

    /// Whether the body is whole (and the request may be retried).
    pub fn is_full(&self) -> bool {
        matches!(self, Buffered::Full { .. })
    }
}

impl<B> TryCloneBody for Buffered<B> {
    fn try_clone_body(&self) -> Option<Self> {
        match self {
            Buffered::Full { data, trailers } => Some(Buffered::Full {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            Buffered::Partial { .. } => None,
        }
    }
}

impl<B> Body for Buffered<B>
where
    B: Body + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.get_mut() {
            Buffered::Full { data, trailers } => {
                if let Some(data) = data.take().filter(|d| !d.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Buffered::Partial { read, rest } => {
                if let Some(chunk) = read.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                let frame = ready!(Pin::new(rest).poll_frame(cx));
                Poll::Ready(
                    frame.map(|r| r.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))),
                )
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Buffered::Full { data, trailers } => {
                data.as_ref().is_none_or(Bytes::is_empty) && trailers.is_none()
            }
            Buffered::Partial { read, rest } => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Buffered::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Buffered::Partial { read, rest } => {
                let read: u64 = read.iter().map(|c| c.len() as u64).sum();
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower().saturating_add(read));
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper.saturating_add(read));
                }
                out
            }
        }
    }
}

/// Buffers request bodies up to `cap` bytes so the retry layer can copy them
/// (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct BufferBodyLayer {
    cap: usize,
}

impl BufferBodyLayer {
    /// Buffers bodies of at most `cap` bytes; larger ones stream through once.
    pub const fn new(cap: usize) -> Self {
        BufferBodyLayer { cap }
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferBody {
            inner,
            cap: self.cap,
        }
    }
}

/// The service of [`BufferBodyLayer`].
#[derive(Debug, Clone)]
pub struct BufferBody<S> {
    inner: S,
    cap: usize,
}

impl<S> BufferBody<S> {
    /// Buffers bodies of at most `cap` bytes before calling `inner`.
    pub const fn new(inner: S, cap: usize) -> Self {
        BufferBody { inner, cap }
    }
}

brownout_core::impl_inner_access!(BufferBody<S>);

impl<S, B> Service<http::Request<B>> for BufferBody<S>
where
    S: Service<http::Request<Buffered<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BufferFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The ready service serves this request once its body is read; keep a clone for the next.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        let too_big = body.size_hint().lower() > self.cap as u64;
        BufferFuture {
            state: BufferState::Reading {
                service: Some(service),
                parts: Some(parts),
                body: Some(body),
                read: VecDeque::new(),
                size: 0,
                trailers: None,
                cap: self.cap,
                too_big,
            },
        }
    }
}

pin_project! {
    /// The future of [`BufferBody`]: reads the body, then calls the inner service.
    pub struct BufferFuture<S, B>
    where
        S: Service<http::Request<Buffered<B>>>,
    {
        #[pin]
        state: BufferState<S, B>,
    }
}

pin_project! {
    #[project = BufferStateProj]
    enum BufferState<S, B>
    where
        S: Service<http::Request<Buffered<B>>>,
    {
        Reading {
            service: Option<S>,
            parts: Option<http::request::Parts>,
            body: Option<B>,
            read: VecDeque<Bytes>,
            size: usize,
            trailers: Option<HeaderMap>,
            cap: usize,
            too_big: bool,
        },
        Calling { #[pin] future: S::Future },
    }
}

impl<S, B> Future for BufferFuture<S, B>
where
    S: Service<http::Request<Buffered<B>>>,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                BufferStateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                BufferStateProj::Reading {
                    service,
                    parts,
                    body,
                    read,
                    size,
                    trailers,
                    cap,
                    too_big,
                } => {
                    let Some(stream) = body.as_mut() else {
                        unreachable!("the body is present until the inner call")
                    };
                    let mut whole = false;
                    if !*too_big {
                        match ready!(Pin::new(&mut *stream).poll_frame(cx)) {
                            None => whole = true,
                            Some(Err(e)) => return Poll::Ready(Err(e.into())),
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(mut data) => {
                                    let chunk = data.copy_to_bytes(data.remaining());
                                    *size = size.saturating_add(chunk.len());
                                    read.push_back(chunk);
                                    *too_big = *size > *cap;
                                    continue;
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        *trailers = Some(t);
                                    }
                                    continue;
                                }
                            },
                        }
                    }
                    let (Some(mut service), Some(parts), Some(stream)) =
                        (service.take(), parts.take(), body.take())
                    else {
                        unreachable!("the request parts are present until the inner call")
                    };
                    let buffered = if whole {
                        Buffered::Full {
                            data: Some(concat(std::mem::take(read))),
                            trailers: trailers.take(),
                        }
                    } else {
                        Buffered::Partial {
                            read: std::mem::take(read),
                            rest: stream,
                        }
                    };
                    let future = service.call(http::Request::from_parts(parts, buffered));
                    this.state.set(BufferState::Calling { future });
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for BufferFuture<S, B>
where
    S: Service<http::Request<Buffered<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferFuture").finish_non_exhaustive()
    }
}

fn concat(mut chunks: VecDeque<Bytes>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop_front().unwrap_or_default();
    }
    let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        all.extend_from_slice(&chunk);
    }
    all.freeze()
}
