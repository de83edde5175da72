//! Switching a layer on and off at run time, without a restart.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use brownout_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::OptionalFuture;

/// A switch shared by every service a [`ToggleLayer`] builds; flip it from an admin endpoint
/// or a config watcher.
#[derive(Clone, Debug)]
pub struct ToggleHandle {
    enabled: Arc<AtomicBool>,
}

impl ToggleHandle {
    /// Turns the wrapped layer on for requests that start from now on.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Bypasses the wrapped layer for requests that start from now on; requests already
    /// inside it finish there.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// Sets the switch.
    pub fn set(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether the wrapped layer is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}

/// Wraps a layer so it can be bypassed at run time through a [`ToggleHandle`].
///
/// The inner service must be `Clone`: one copy sits behind the layer, one beside it. The
/// choice is made in `poll_ready` and kept for the following `call`, so readiness always
/// refers to the service that is called. Errors of both paths are boxed.
///
/// ```
/// use brownout::ToggleLayer;
/// use brownout_core::{BoxError, LoadLevel, LoadSignal};
/// use tower_layer::{Layer, layer_fn};
/// use tower_service::Service;
/// # use std::task::{Context, Poll};
/// # #[derive(Clone)] struct Ok_;
/// # impl Service<()> for Ok_ {
/// #     type Response = &'static str; type Error = BoxError;
/// #     type Future = std::future::Ready<Result<&'static str, BoxError>>;
/// #     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> { Poll::Ready(Ok(())) }
/// #     fn call(&mut self, _: ()) -> Self::Future { std::future::ready(Ok("served")) }
/// # }
/// # #[derive(Clone)] struct Refuse<S>(S);
/// # impl<S> Service<()> for Refuse<S> {
/// #     type Response = &'static str; type Error = BoxError;
/// #     type Future = std::future::Ready<Result<&'static str, BoxError>>;
/// #     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> { Poll::Ready(Ok(())) }
/// #     fn call(&mut self, _: ()) -> Self::Future { std::future::ready(Err("refused".into())) }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (layer, handle) = ToggleLayer::new(layer_fn(Refuse), true);
/// let mut svc = layer.layer(Ok_);
/// # std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
/// assert!(svc.call(()).await.is_err());
/// handle.disable();
/// # std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
/// assert_eq!(svc.call(()).await.unwrap(), "served");
/// # }
/// ```
#[derive(Clone)]
pub struct ToggleLayer<L> {
    layer: L,
    handle: ToggleHandle,
}

impl<L> ToggleLayer<L> {
    /// Wraps `layer`, initially on or off; returns the layer and its switch.
    pub fn new(layer: L, enabled: bool) -> (ToggleLayer<L>, ToggleHandle) {
        let handle = ToggleHandle {
            enabled: Arc::new(AtomicBool::new(enabled)),
        };
        (
            ToggleLayer {
                layer,
                handle: handle.clone(),
            },
            handle,
        )
    }

    /// The switch.
    pub fn handle(&self) -> ToggleHandle {
        self.handle.clone()
    }
}

impl<L> fmt::Debug for ToggleLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToggleLayer")
            .field("enabled", &self.handle.is_enabled())
            .finish_non_exhaustive()
    }
}

impl<S: Clone, L: Layer<S>> Layer<S> for ToggleLayer<L> {
    type Service = Toggle<L::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Toggle {
            layered: self.layer.layer(inner.clone()),
            bypass: inner,
            handle: self.handle.clone(),
            chosen: None,
        }
    }
}

/// The service of [`ToggleLayer`].
#[derive(Clone)]
pub struct Toggle<T, S> {
    layered: T,
    bypass: S,
    handle: ToggleHandle,
    /// The path `poll_ready` made ready (`true`: through the layer).
    chosen: Option<bool>,
}

impl<T, S> fmt::Debug for Toggle<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Toggle")
            .field("enabled", &self.handle.is_enabled())
            .finish_non_exhaustive()
    }
}

impl<T, S, Req> Service<Req> for Toggle<T, S>
where
    T: Service<Req>,
    S: Service<Req, Response = T::Response>,
    T::Error: Into<BoxError>,
    S::Error: Into<BoxError>,
{
    type Response = T::Response;
    type Error = BoxError;
    type Future = OptionalFuture<T::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let enabled = *self.chosen.get_or_insert_with(|| self.handle.is_enabled());
        let ready = if enabled {
            self.layered.poll_ready(cx).map_err(Into::into)
        } else {
            self.bypass.poll_ready(cx).map_err(Into::into)
        };
        if let Poll::Ready(Err(_)) = &ready {
            self.chosen = None;
        }
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Callers must poll_ready first (tower's contract); default to the current switch.
        match self
            .chosen
            .take()
            .unwrap_or_else(|| self.handle.is_enabled())
        {
            true => OptionalFuture::layered(self.layered.call(req)),
            false => OptionalFuture::bypassed(self.bypass.call(req)),
        }
    }
}
