//! Deciding a request's class once, so every layer agrees on it.

use std::fmt;

use crate::Priority;

/// Decides the [`Priority`] of a request.
///
/// Implemented for closures `Fn(&Req) -> Priority`, for [`Fixed`] and for [`FromExtensions`].
/// A classifier must never panic on malformed input; it falls back to a default class.
///
/// ```
/// use brownout_core::{Classify, Priority};
///
/// let by_path = |req: &&str| if req.starts_with("/health") { Priority::Critical } else { Priority::Medium };
/// assert_eq!(by_path.classify(&"/health/ready"), Priority::Critical);
/// assert_eq!(by_path.classify(&"/search"), Priority::Medium);
/// ```
pub trait Classify<Req> {
    /// The class of `req`.
    fn classify(&self, req: &Req) -> Priority;
}

impl<Req, F> Classify<Req> for F
where
    F: Fn(&Req) -> Priority,
{
    #[inline]
    fn classify(&self, req: &Req) -> Priority {
        self(req)
    }
}

/// Gives every request the same class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixed(pub Priority);

impl<Req> Classify<Req> for Fixed {
    #[inline]
    fn classify(&self, _: &Req) -> Priority {
        self.0
    }
}

/// Reads the class stored in an `http::Request`'s extensions (by [`ClassifyLayer`]
/// or any earlier layer), falling back to a default class (Medium unless configured).
///
/// This is the default classifier of every brownout layer for http requests, so that all
/// layers of a stack agree on one class computed once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FromExtensions {
    default: Priority,
}

impl FromExtensions {
    /// Falls back to `default` when no class was stored.
    pub const fn with_default(default: Priority) -> FromExtensions {
        FromExtensions { default }
    }
}

impl<B> Classify<http::Request<B>> for FromExtensions {
    #[inline]
    fn classify(&self, req: &http::Request<B>) -> Priority {
        req.extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or(self.default)
    }
}

/// A layer that classifies each http request once and stores the class in its extensions,
/// unless an earlier layer already did.
///
/// ```
/// use brownout_core::{ClassifyLayer, Priority};
/// use tower_layer::Layer;
/// # use tower_service::Service;
/// # #[derive(Clone)] struct Echo;
/// # impl Service<http::Request<()>> for Echo {
/// #     type Response = Priority; type Error = std::convert::Infallible;
/// #     type Future = std::future::Ready<Result<Priority, std::convert::Infallible>>;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, req: http::Request<()>) -> Self::Future { std::future::ready(Ok(*req.extensions().get::<Priority>().unwrap())) }
/// # }
///
/// let layer = ClassifyLayer::new(|req: &http::Request<()>| {
///     if req.uri().path() == "/health" { Priority::Critical } else { Priority::Low }
/// });
/// let mut svc = layer.layer(Echo);
/// # let fut = svc.call(http::Request::get("/health").body(()).unwrap());
/// # assert_eq!(futures_ready(fut), Priority::Critical);
/// # fn futures_ready(f: std::future::Ready<Result<Priority, std::convert::Infallible>>) -> Priority { f.into_inner().unwrap() }
/// ```
#[derive(Clone)]
pub struct ClassifyLayer<C> {
    classifier: C,
}

impl<C> ClassifyLayer<C> {
    /// Classifies with `classifier`.
    pub const fn new(classifier: C) -> ClassifyLayer<C> {
        ClassifyLayer { classifier }
    }
}

impl<C> fmt::Debug for ClassifyLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyLayer").finish_non_exhaustive()
    }
}

impl<S, C: Clone> tower_layer::Layer<S> for ClassifyLayer<C> {
    type Service = ClassifyService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ClassifyService {
            inner,
            classifier: self.classifier.clone(),
        }
    }
}

/// The service of [`ClassifyLayer`].
#[derive(Clone)]
pub struct ClassifyService<S, C> {
    inner: S,
    classifier: C,
}

impl<S, C> fmt::Debug for ClassifyService<S, C>
where
    S: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, B> tower_service::Service<http::Request<B>> for ClassifyService<S, C>
where
    S: tower_service::Service<http::Request<B>>,
    C: Classify<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if req.extensions().get::<Priority>().is_none() {
            let priority = self.classifier.classify(&req);
            req.extensions_mut().insert(priority);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_extensions_falls_back() {
        let mut req = http::Request::new(());
        assert_eq!(FromExtensions::default().classify(&req), Priority::Medium);
        assert_eq!(
            FromExtensions::with_default(Priority::Low).classify(&req),
            Priority::Low
        );
        req.extensions_mut().insert(Priority::High);
        assert_eq!(FromExtensions::default().classify(&req), Priority::High);
        assert_eq!(
            Fixed(Priority::Background).classify(&req),
            Priority::Background
        );
    }
}
