//! Circuit breakers for tower services: stop calling a dependency that is failing, give it
//! time to recover, probe it carefully, and answer from a fallback meanwhile.
//!
//! ```
//! use std::time::Duration;
//! use brownout_breaker::{CircuitBreakConfig, CircuitBreakLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let config = CircuitBreakConfig::builder().consecutive_failures(3).build().unwrap();
//! let layer = CircuitBreakLayer::new(config);
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_: ()| async { Err::<(), _>("dependency down") }));
//! for _ in 0..3 {
//!     assert!(svc.ready().await.unwrap().call(()).await.is_err());
//! }
//! let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//! let rejected = brownout_core::Rejected::find(&*err).unwrap();
//! assert_eq!(rejected.reason(), brownout_core::RejectReason::CircuitOpen);
//! assert!(handle.state().is_open());
//! # }
//! ```
//!
//! # Why, and how it differs from tower
//!
//! tower has no circuit breaker. Load shedding and concurrency limits protect a service
//! from too much work; a breaker protects it (and the dependency) from a *broken*
//! dependency: once failures or slow calls dominate a window, calls fail fast for an open
//! duration instead of piling up in timeouts, and the dependency is not hammered while it
//! recovers. It works on any `Service<Req>`, server side (around a handler) as well as
//! client side (around a client to an upstream).
//!
//! # Behaviour (resilience4j-style)
//!
//! - **Closed**: calls pass. Outcomes go into a [`Window`]: the last N calls
//!   ([`Window::Count`]) or the last T in about one-second buckets ([`Window::Time`], an O(1)
//!   snapshot subtracting the bucket that ages out). Once the window holds `minimum_calls`,
//!   it trips when the failure rate reaches `failure_rate` or the share of calls lasting at
//!   least `slow_call_duration` reaches `slow_call_rate`; `consecutive_failures` trips on
//!   a run of failures regardless of the window.
//! - **Open**: calls are refused for the open duration, which grows by `open_growth` on
//!   each trip that follows a failed recovery, up to `max_open_duration`.
//! - **HalfOpen**: exactly `half_open_probes` calls are let through; the rest fail fast.
//!   `success_threshold` successful probes close the breaker (with an empty window); any
//!   failed (or slow) probe reopens it.
//! - What counts as a failure is decided by a [`ClassifyOutcome`]: by default every error
//!   except a brownout refusal that never reached the dependency ([`ErrIsFailure`];
//!   `Rejected { Timeout }` counts); for http, [`HttpOutcome`] (5xx counts, 4xx does not,
//!   nor does a brownout refusal answer from the dependency). An [`Outcome::Rejected`] is
//!   not recorded, and a half-open probe ending so gives its slot back. The classifiers are
//!   brownout-core's, shared with the monitor: one value configures both.
//! - Refused calls get `Rejected { reason: CircuitOpen, retry_after: time until half-open }`
//!   boxed into `BoxError`, or a fallback: [`StaticFallback`], [`LastGood`] or
//!   [`Failover`] to a secondary service.
//! - Per-key breakers ([`CircuitBreakLayer::with_key`], e.g. by upstream host) live in a
//!   map bounded by `max_keys` (least recently used evicted, closed ones first) that forgets
//!   keys idle for `idle_timeout`.
//! - The breaker does not depend on the load level (a broken dependency is broken at any
//!   load); the level is only stamped on rejections.
//!
//! # Errors
//!
//! `Error = BoxError`. The inner service's errors pass through unchanged (boxed). A refused
//! call without a fallback fails with [`Rejected`](brownout_core::Rejected) (reason
//! `CircuitOpen`, `retry_after` = time until half-open, or until the current probes time
//! out); a half-open probe that runs past `probe_timeout` fails with `Rejected { Timeout }`.
//!
//! # Runtime
//!
//! Time comes from `tokio::time::Instant` (pausable in tests). Half-open probes arm a
//! `tokio::time::Sleep` for their timeout, so calls must run inside a tokio runtime with the
//! time driver enabled (any `#[tokio::main]` runtime is).
//!
//! # Cancel safety
//!
//! A half-open probe whose response future is dropped gives its permit back at once. A
//! probe that hangs answers `Rejected { Timeout }` after `probe_timeout` and counts as a
//! failure; if its future is not even polled, the next request after `probe_timeout`
//! finds the round stuck and reopens the breaker. The breaker is never stuck half-open.
//!
//! # Hot path
//!
//! Admitting a call while closed is one atomic load of the state (plus the decision
//! counter); no lock, no allocation, no clock read unless a slow-call rate is set. Refusing
//! a call while open is one atomic load and one clock read. Outcomes are recorded after
//! the call in a short, uncontended critical section — except a success while a count
//! window is full of successes, which would change nothing and takes no lock (the
//! steady-state closed path: an `Arc` clone and a few atomic loads). `poll_ready` forwards
//! to the inner service and takes no permit.
//!
//! # Telemetry
//!
//! Decisions are counted by [`brownout_core::telemetry::DecisionMetrics`] (layer
//! `breaker`); the gauge `brownout_breaker_state{breaker}` shows 0 closed, 1 half-open,
//! 2 open (for a per-key layer, the worst state over keys); every transition is a
//! `tracing` event (target `brownout::breaker`) and runs the `on_state_change` callbacks.
//! [`CircuitBreakHandle::pressure_source`] feeds the number of open breakers to the
//! monitor.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod breaker;
mod config;
mod fallback;
pub mod future;
mod handle;
mod key;
mod layer;
mod window;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_core::BoxError;
use tower_service::Service;

pub use breaker::{BreakerSnapshot, BreakerState, StateChange};
/// The result classifier, shared with the monitor (defined once, in
/// [`brownout_core::outcome`]).
pub use brownout_core::outcome::{
    ClassifyOutcome, ErrIsFailure, HttpOutcome, Outcome, any_error_outcome, error_outcome,
};
pub use config::{CircuitBreakBuilder, CircuitBreakConfig, Window};
pub use fallback::{
    Failover, FailoverFuture, Fallback, FallbackKind, LastGood, LastGoodMemo, NoFallback, Remember,
    StaticFallback,
};
pub use handle::{BreakerPressure, CircuitBreakHandle};
pub use key::{ExtractKey, Global, KeyExtractor, KeyFn};
pub use layer::CircuitBreakLayer;

use breaker::Admit;
use future::{CallGuard, ResponseFuture};
use key::Registry;

/// A service guarded by circuit breakers; see the [crate docs](crate).
///
/// Clones share the breakers (and every service made by the same [`CircuitBreakLayer`]).
pub struct CircuitBreak<S, K = Global, C = ErrIsFailure, F = NoFallback>
where
    K: KeyExtractor,
    F: FallbackKind,
{
    inner: S,
    registry: Arc<Registry<K::Key, F::Memo>>,
    key: K,
    classifier: C,
    fallback: F,
}

impl<S> CircuitBreak<S> {
    /// `inner` behind one breaker with `config`, errors counting as failures, no fallback.
    pub fn new(inner: S, config: CircuitBreakConfig) -> CircuitBreak<S> {
        tower_layer::Layer::layer(&CircuitBreakLayer::new(config), inner)
    }
}

impl<S, K, C, F> CircuitBreak<S, K, C, F>
where
    K: KeyExtractor,
    F: FallbackKind,
{
    pub(crate) fn from_parts(
        inner: S,
        registry: Arc<Registry<K::Key, F::Memo>>,
        key: K,
        classifier: C,
        fallback: F,
    ) -> Self {
        CircuitBreak {
            inner,
            registry,
            key,
            classifier,
            fallback,
        }
    }

    /// A handle on this service's breakers.
    pub fn handle(&self) -> CircuitBreakHandle<K::Key> {
        CircuitBreakHandle::new(self.registry.clone())
    }
}

brownout_core::impl_inner_access!(CircuitBreak<S, K, C, F> where K: KeyExtractor, F: FallbackKind);

impl<S, K, C, F> Clone for CircuitBreak<S, K, C, F>
where
    S: Clone,
    K: KeyExtractor + Clone,
    C: Clone,
    F: FallbackKind + Clone,
{
    fn clone(&self) -> Self {
        CircuitBreak {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<S, K, C, F> fmt::Debug for CircuitBreak<S, K, C, F>
where
    S: fmt::Debug,
    K: KeyExtractor,
    F: FallbackKind,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreak")
            .field("inner", &self.inner)
            .field("breakers", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, C, F> Service<Req> for CircuitBreak<S, K, C, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: ExtractKey<Req>,
    C: ClassifyOutcome<S::Response, S::Error> + Clone,
    F: Fallback<Req, S::Response>,
    F::Memo: Remember<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F::Future, C, K::Key, F::Memo>;

    /// Forwards to the inner service; the breaker takes nothing here.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = &self.key;
        let slot = self.registry.slot(|| key.key(&req));
        let (word, probe) = match slot.admit() {
            Admit::Call { word } => (word, false),
            Admit::Probe { word } => (word, true),
            Admit::Reject(rejected) => {
                slot.core.metrics.rejected(&rejected);
                let fut = self.fallback.fallback(&slot.memo, req, rejected);
                return ResponseFuture::fallback(fut);
            }
        };
        slot.core.metrics.admitted(None, slot.core.signal.level());
        let guard = CallGuard::new(slot.into_owned(), word, probe);
        let fut = self.inner.call(req);
        ResponseFuture::called(fut, guard, self.classifier.clone())
    }
}
