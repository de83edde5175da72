//! Turning a caller's `grpc-timeout` header into a [`Deadline`] every layer can see.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::{Deadline, parse_grpc_timeout};
use http::{HeaderName, Request};
use tower_layer::Layer;
use tower_service::Service;

/// Sets the request's [`Deadline`] from a timeout header (`grpc-timeout` format: `250m`,
/// `2S`…), capped by an optional server-side maximum; an earlier deadline already in the
/// extensions wins. Malformed values are ignored.
///
/// ```
/// use std::time::Duration;
/// use brownout::http::DeadlineLayer;
/// use brownout_core::Deadline;
/// use tower_layer::Layer;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let echo = tower_service_fn(|req: http::Request<()>| Deadline::of(req.extensions()));
/// let mut svc = DeadlineLayer::grpc_timeout().max(Duration::from_secs(10)).layer(echo);
/// let req = http::Request::get("/").header("grpc-timeout", "250m").body(()).unwrap();
/// let deadline = svc.call(req).await.unwrap().unwrap();
/// assert_eq!(deadline.remaining(), Duration::from_millis(250));
/// # }
/// # #[derive(Clone)] struct Fn_<F>(F);
/// # fn tower_service_fn<F>(f: F) -> Fn_<F> { Fn_(f) }
/// # impl<F: FnMut(http::Request<()>) -> Option<Deadline>> Service<http::Request<()>> for Fn_<F> {
/// #     type Response = Option<Deadline>; type Error = std::convert::Infallible;
/// #     type Future = std::future::Ready<Result<Option<Deadline>, std::convert::Infallible>>;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, req: http::Request<()>) -> Self::Future { std::future::ready(Ok((self.0)(req))) }
/// # }
/// ```
#[derive(Clone)]
pub struct DeadlineLayer {
    header: HeaderName,
    max: Option<Duration>,
    default: Option<Duration>,
}

impl DeadlineLayer {
    /// Reads `grpc-timeout`.
    pub fn grpc_timeout() -> DeadlineLayer {
        DeadlineLayer {
            header: HeaderName::from_static("grpc-timeout"),
            max: None,
            default: None,
        }
    }

    /// Reads header `name` (same value format as `grpc-timeout`).
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name.
    pub fn header(name: &str) -> DeadlineLayer {
        DeadlineLayer {
            header: HeaderName::try_from(name).expect("DeadlineLayer::header: invalid header name"),
            ..DeadlineLayer::grpc_timeout()
        }
    }

    /// Never lets a caller ask for more than `max`.
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = Some(max);
        self
    }

    /// The deadline of requests that carry none.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default = Some(timeout);
        self
    }

    /// Whether this layer reads `grpc-timeout` (then the deadline it stores already holds
    /// everything that header says, capped by [`max`](Self::max)).
    pub(crate) fn reads_grpc_timeout(&self) -> bool {
        self.header == brownout_core::headers::GRPC_TIMEOUT
    }

    fn timeout_of<B>(&self, req: &Request<B>) -> Option<Duration> {
        let asked = req
            .headers()
            .get(&self.header)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
            .or(self.default)?;
        Some(match self.max {
            Some(max) => asked.min(max),
            None => asked,
        })
    }
}

impl fmt::Debug for DeadlineLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineLayer")
            .field("header", &self.header)
            .field("max", &self.max)
            .field("default", &self.default)
            .finish()
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
    layer: DeadlineLayer,
}

brownout_core::impl_inner_access!(DeadlineService<S>);

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(timeout) = self.layer.timeout_of(&req) {
            Deadline::after(timeout).tighten(req.extensions_mut());
        }
        self.inner.call(req)
    }
}
