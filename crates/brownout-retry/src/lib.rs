//! Retries that do not turn an overload into an outage, and client-side throttling.
//!
//! ```
//! use std::time::Duration;
//! use brownout_retry::{RetryConfig, RetryLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = calls.clone();
//! let flaky = service_fn(move |req: u32| {
//!     let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move { if n == 0 { Err::<u32, brownout_core::BoxError>("reset".into()) } else { Ok(req * 2) } }
//! });
//! let config = RetryConfig::builder().max_attempts(3).seed(7).build().unwrap();
//! let mut svc = RetryLayer::new(config).layer(flaky);
//! assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
//! assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
//! # }
//! ```
//!
//! # Why another retry layer
//!
//! tower's `Retry` leaves every decision to a `Policy`. During an overload the retries a
//! naive policy makes are what keeps the server down: a backend failing every request
//! receives `max_attempts ×` its normal traffic. [`Retry`] adds what the published systems
//! learned (see `ALGORITHMS.md`):
//!
//! - a [`RetryBudget`] shared by all clones: retries are at most a fraction of requests plus
//!   a small floor per second (Finagle, tower's `TpsBudget`); when spent, the original
//!   outcome returns;
//! - exponential [`Backoff`] with full, equal or decorrelated [`Jitter`], in saturating
//!   arithmetic, seedable for reproducible tests;
//! - no retry at or above a load level (default `High`) read from the shared
//!   [`LoadSignal`](brownout_core::LoadSignal) when a request is sent (no copy of it is made
//!   then) and again when it fails: a loaded process does not add retries;
//! - no retry of rejections that say the server is overloaded ([`classify_error`]), and the
//!   server's `Retry-After` / `grpc-retry-pushback-ms` / [`Rejected::retry_after`] waited for
//!   (a negative pushback means never);
//! - idempotent requests only ([`RequestInfo`], [`Idempotent`]), copied per attempt
//!   ([`CloneRequest`]; streaming http bodies are buffered up to a cap by
//!   [`body::BufferBodyLayer`], larger ones are sent once);
//! - no back-off past the caller's [`Deadline`](brownout_core::Deadline);
//! - optional [`hedge`]: a second attempt after a latency percentile, the first answer wins.
//!
//! The [`throttle`] module holds [`AdaptiveThrottleLayer`](throttle::AdaptiveThrottleLayer),
//! Google SRE's client-side adaptive throttling, which refuses requests locally when the
//! server has been refusing them.
//!
//! [`Retry`] keeps the inner service's error type: it adds no failure of its own and returns
//! the last attempt's outcome (response or error) unchanged when it stops retrying. It never
//! invents a `Rejected { BudgetExhausted }`; the throttle does, because it refuses requests
//! that were never sent.
//!
//! [`Rejected::retry_after`]: brownout_core::Rejected::retry_after
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backoff;
pub mod body;
mod budget;
mod classify;
mod config;
pub mod future;
pub mod hedge;
mod layer;
mod pushback;
mod request;
mod shared;
pub mod throttle;
mod window;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_core::clock::Sampler;
use tower_service::Service;

pub use backoff::{Backoff, Jitter};
pub use budget::{BudgetToken, RetryBudget};
pub use classify::{
    AsError, DefaultClassifier, GRPC_PUSHBACK_HEADER, HttpClassifier, LOAD_LEVEL_HEADER,
    RetryClassifier, RetryDecision, classify_error, classify_rejected, classify_response,
    server_level,
};
pub use config::{RetryBuilder, RetryConfig};
pub use layer::RetryLayer;
pub use pushback::{Pushback, parse_grpc_pushback, parse_retry_after};
pub use request::{
    AnyRequest, ByClone, CloneRequest, HttpClone, HttpRequests, Idempotent, NoClone, RequestInfo,
    TryCloneBody, idempotent_method,
};
pub use shared::RetryStats;

use crate::future::ResponseFuture;
use crate::shared::{NoCopy, Shared};

/// Retries failed requests within a budget, with jittered back-off, never at a high load
/// level and never past the caller's deadline. See the [crate docs](crate).
///
/// Built by [`RetryLayer`] (or [`Retry::new`] for the defaults). `poll_ready` forwards to
/// the inner service; the decision to retry is made when an attempt fails. The response
/// future holds a clone of the inner service for the retries (as tower's `Retry` does).
///
/// ```
/// use brownout_core::{BoxError, LoadLevel, LoadSignal};
/// use brownout_retry::{Retry, RetryConfig};
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // At level High retries are suppressed: the error of the first attempt returns.
/// let config = RetryConfig::builder().signal(LoadSignal::fixed(LoadLevel::High)).build().unwrap();
/// let failing = service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) });
/// let mut svc = Retry::new(failing, config);
/// assert!(svc.ready().await.unwrap().call(()).await.is_err());
/// assert_eq!(svc.stats().retries, 0);
/// assert_eq!(svc.stats().suppressed_by_level, 1);
/// # }
/// ```
pub struct Retry<S, K = DefaultClassifier, C = ByClone, I = AnyRequest> {
    inner: S,
    shared: Arc<Shared<K, C, I>>,
    /// Which of this clone's budget deposits read the clock.
    sampler: Sampler,
}

impl<S> Retry<S> {
    /// Wraps `inner` with the default strategies ([`RetryLayer::new`]).
    pub fn new(inner: S, config: RetryConfig) -> Retry<S> {
        tower_layer::Layer::layer(&RetryLayer::new(config), inner)
    }
}

impl<S, K, C, I> Retry<S, K, C, I> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<K, C, I>>) -> Self {
        Retry {
            inner,
            shared,
            sampler: Sampler::new(),
        }
    }

    /// What this service (and every service of its layer) did so far.
    pub fn stats(&self) -> RetryStats {
        self.shared.state.stats()
    }

    /// The budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.config.budget.as_ref()
    }
}

brownout_core::impl_inner_access!(Retry<S, K, C, I>);

impl<S: Clone, K, C, I> Clone for Retry<S, K, C, I> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            sampler: Sampler::new(),
        }
    }
}

impl<S: fmt::Debug, K, C, I> fmt::Debug for Retry<S, K, C, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, I, Req> Service<Req> for Retry<S, K, C, I>
where
    S: Service<Req> + Clone,
    K: RetryClassifier<S::Response, S::Error>,
    C: CloneRequest<Req>,
    I: RequestInfo<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, K, C, I>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        if let Some(budget) = &shared.config.budget {
            budget.deposit_sampled(&mut self.sampler);
        }
        let copy = if shared.config.max_attempts <= 1 {
            Err(NoCopy::LastAttempt)
        } else if !shared.requests.is_idempotent(&req) {
            Err(NoCopy::NotIdempotent)
        } else if shared.config.signal.level() >= shared.config.suppress_at {
            // Loaded now: no retry would be made if this attempt failed soon, so the copy
            // (for http, a header map and a buffered body) is not made either.
            Err(NoCopy::SuppressedByLevel)
        } else {
            shared
                .cloner
                .clone_request(&req)
                .ok_or(NoCopy::NotCloneable)
        };
        let deadline = shared.requests.deadline(&req);
        let future = self.inner.call(req);
        // Cloned after the call (as tower's `Retry` does): one value fewer alive across it.
        let service = self.inner.clone();
        ResponseFuture::new(future, service, copy, deadline, self.shared.clone())
    }
}
