//! Load shedding by priority: refuse the least important requests first as the load level rises.
//!
//! ```
//! use brownout_core::{LoadLevel, LoadSignal, Priority, Rejected};
//! use brownout_shed::LoadShedLayer;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
//! let mut svc = LoadShedLayer::default()
//!     .with_signal(signal)
//!     .classifier(|job: &&'static str| if *job == "report" { Priority::Low } else { Priority::High })
//!     .layer(service_fn(|job: &'static str| async move { Ok::<_, std::convert::Infallible>(job.len()) }));
//!
//! publisher.publish(LoadLevel::High); // High sheds Low and Background
//! assert_eq!(svc.ready().await.unwrap().call("query").await.unwrap(), 5);
//! let err = svc.ready().await.unwrap().call("report").await.unwrap_err();
//! assert_eq!(Rejected::find(&*err).unwrap().priority(), Some(Priority::Low));
//! # }
//! ```
//!
//! # Why, and how it differs from `tower::load_shed`
//!
//! `tower::load_shed::LoadShed` rejects a request when the inner service is not ready: it
//! knows nothing about the request, so under overload it refuses health checks and payments
//! as readily as analytics. Behind an axum `Router` (always ready) it never sheds at all.
//!
//! [`LoadShed`] decides in `call`, where the request is known: it reads the current
//! [`LoadLevel`] from a [`LoadSignal`] (one atomic load), classifies the request (by
//! default the [`Priority`] stored in an http request's extensions, see
//! [`FromExtensions`]), and rejects it if its class is in the level's entry of the shed
//! table ([`Policy::shed`](brownout_core::Policy::shed), configurable). With the default
//! table, `Elevated` sheds Background, `High` Low and below, `Critical` Medium and below,
//! `Emergency` everything but Critical.
//!
//! The rejection is a [`Rejected`] with reason [`RejectReason::Shed`], the level, the class
//! and a `retry_after` hint (default 1 s), boxed into [`BoxError`] (the inner service's
//! errors are boxed with `.into()`), so it can be found with [`Rejected::find`] and turned
//! into a 503 + `Retry-After` by the http integration.
//!
//! # Smooth mode
//!
//! With [`LoadShedBuilder::smooth(ramp)`](LoadShedBuilder::smooth), the *boundary class*
//! (the most important class the current level sheds, `PrioritySet::highest`) is not shed
//! all at once when the level rises: a fraction `f` of its requests is shed, with `f`
//! growing linearly from 0 to 1 over `ramp` from the moment the layer first sees the new
//! level. Classes below the boundary are shed at once, classes above it never.
//! When the level falls, the new boundary was already shed at the level above, so it stays
//! fully shed (no burst of re-admitted work); a change that keeps the same boundary class
//! keeps its ramp.
//!
//! Each request of the boundary class draws `u` in `[0, 1)` from a xorshift64* generator
//! owned by the service clone (seeded from [`LoadShedBuilder::seed`] and a per-clone stream
//! number), and is shed when `u < f`: no lock, no shared atomic per request, reproducible
//! for a given seed and order of requests. The ramp state (last level, ramp end) is one
//! shared `AtomicU64`, read with one relaxed load per request and updated by one CAS on a
//! level change.
//!
//! # Not-ready mode
//!
//! With [`LoadShedBuilder::shed_when_not_ready(true)`](LoadShedBuilder::shed_when_not_ready)
//! the layer also behaves like `tower::load_shed`: `poll_ready` polls the inner service,
//! records whether it was ready and always returns ready (inner errors are returned); `call`
//! sheds the request if the inner service was not ready. Nothing is reserved by this layer
//! in `poll_ready`; a `poll_ready` without `call` holds nothing here.
//!
//! # Cancel safety
//!
//! The layer takes no permit or slot: dropping a [`ResponseFuture`] releases only what the
//! inner future holds.
//!
//! # Errors
//!
//! `Error = BoxError`: either a boxed [`Rejected`] (reason `Shed`) or the inner service's
//! error, boxed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
pub mod future;
mod layer;
mod smooth;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{
    BoxError, Classify, FromExtensions, LevelTable, LoadLevel, LoadSignal, Priority, PrioritySet,
    RejectReason, Rejected,
};
use tower_service::Service;

pub use crate::config::{DEFAULT_RETRY_AFTER, LoadShedBuilder, LoadShedConfig};
pub use crate::future::ResponseFuture;
pub use crate::layer::LoadShedLayer;
use crate::smooth::{Rng, Smooth};

/// State shared by every service of one layer and all their clones.
#[derive(Debug)]
pub(crate) struct Shared {
    config: LoadShedConfig,
    smooth: Option<Smooth>,
    metrics: DecisionMetrics,
    /// Hands out generator streams to service clones.
    streams: AtomicU64,
}

impl Shared {
    fn new(config: LoadShedConfig) -> Shared {
        Shared {
            config,
            smooth: config.smooth.map(Smooth::new),
            metrics: DecisionMetrics::new("shed"),
            streams: AtomicU64::new(0),
        }
    }

    fn rng(&self) -> Rng {
        Rng::new(
            self.config.seed,
            self.streams.fetch_add(1, Ordering::Relaxed),
        )
    }
}

/// Sheds requests whose class the current load level sheds; see the [crate docs](crate).
///
/// Built by [`LoadShedLayer`] or [`LoadShed::new`].
pub struct LoadShed<S, C = FromExtensions> {
    inner: S,
    shared: Arc<Shared>,
    signal: LoadSignal,
    classifier: C,
    rng: Rng,
    /// Copied from the configuration so the hot path does not chase the `Arc`.
    shed: LevelTable<PrioritySet>,
    /// Copied from the configuration: not-ready mode is on.
    not_ready_mode: bool,
    /// Copied from the configuration: smooth mode is on.
    smooth_mode: bool,
    /// Not-ready mode: whether the inner service was ready at the last `poll_ready`.
    is_ready: bool,
}

brownout_core::impl_inner_access!(LoadShed<S, C>);

impl<S> LoadShed<S, FromExtensions> {
    /// Wraps `inner` with `config`, a level fixed at `Normal` and the
    /// [`FromExtensions`] classifier; see [`LoadShedLayer`] for the other options.
    pub fn new(inner: S, config: LoadShedConfig) -> Self {
        LoadShed::from_parts(
            inner,
            Arc::new(Shared::new(config)),
            LoadSignal::default(),
            FromExtensions::default(),
        )
    }
}

impl<S, C> LoadShed<S, C> {
    pub(crate) fn from_parts(
        inner: S,
        shared: Arc<Shared>,
        signal: LoadSignal,
        classifier: C,
    ) -> Self {
        LoadShed {
            inner,
            rng: shared.rng(),
            shed: shared.config.shed,
            not_ready_mode: shared.config.shed_when_not_ready,
            smooth_mode: shared.smooth.is_some(),
            shared,
            signal,
            classifier,
            is_ready: false,
        }
    }

    /// Reads the level from `signal`.
    #[must_use]
    pub fn with_signal(self, signal: LoadSignal) -> Self {
        LoadShed::from_parts(
            self.inner,
            Arc::new(Shared::new(self.shared.config)),
            signal,
            self.classifier,
        )
    }

    /// Classifies requests with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> LoadShed<S, C2> {
        LoadShed {
            inner: self.inner,
            shared: self.shared,
            signal: self.signal,
            classifier,
            rng: self.rng,
            shed: self.shed,
            not_ready_mode: self.not_ready_mode,
            smooth_mode: self.smooth_mode,
            is_ready: self.is_ready,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LoadShedConfig {
        &self.shared.config
    }

    /// The load level as this service reads it now.
    pub fn level(&self) -> LoadLevel {
        self.signal.level()
    }

    /// The fraction of the boundary class shed now: `1.0` without smooth mode, else where
    /// the ramp stands (as of the last request seen).
    pub fn boundary_fraction(&self) -> f64 {
        self.shared.smooth.as_ref().map_or(1.0, Smooth::fraction)
    }

    #[inline]
    fn reject(&self, level: LoadLevel, priority: Priority) -> Rejected {
        let rejected = Rejected::new(RejectReason::Shed, level)
            .with_priority(priority)
            .with_retry_after(self.shared.config.retry_after);
        self.shared.metrics.rejected(&rejected);
        rejected
    }
}

impl<S, C: Clone> Clone for LoadShed<S, C>
where
    S: Clone,
{
    fn clone(&self) -> Self {
        LoadShed::from_parts(
            self.inner.clone(),
            self.shared.clone(),
            self.signal.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for LoadShed<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .field("level", &self.signal.level())
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for LoadShed<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.not_ready_mode {
            // Like tower's LoadShed: remember readiness, always report ready.
            self.is_ready = match self.inner.poll_ready(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                r => r.is_ready(),
            };
            Poll::Ready(Ok(()))
        } else {
            self.inner.poll_ready(cx).map_err(Into::into)
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let level = self.signal.level();
        let priority = self.classifier.classify(&req);
        let set = self.shed[level];
        let mut shed = set.contains(priority);
        if self.smooth_mode
            && let Some(smooth) = &self.shared.smooth
        {
            smooth.observe(level, &self.shed);
            if shed && set.highest() == Some(priority) {
                shed = self.rng.next_unit() < smooth.fraction();
            }
        }
        if self.not_ready_mode {
            // Readiness is consumed by every call, admitted or not.
            let was_ready = std::mem::take(&mut self.is_ready);
            if !shed && !was_ready {
                tracing::trace!(target: "brownout::shed", "inner service not ready: shedding");
                shed = true;
            }
        }
        if shed {
            return ResponseFuture::rejected(self.reject(level, priority));
        }
        self.shared.metrics.admitted(Some(priority), level);
        ResponseFuture::called(self.inner.call(req))
    }
}
