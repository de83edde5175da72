//! Hedged requests: a second attempt when the first is slower than usual.
//!
//! Tail latency often comes from one slow replica or one lost packet. A [`Hedge`] sends the
//! request, and if no answer came within a delay — a fixed one, or a percentile (say p95) of
//! the latencies of recent successes — sends a copy; the first successful answer wins and
//! the other attempt is dropped (cancelled). Hedges are extra load, so they draw from a
//! [`RetryBudget`](crate::RetryBudget) (share the retry layer's with
//! [`HedgeBuilder::shared_budget`]) and stop at or above a load level (default `High`),
//! exactly like retries.
//!
//! tower's `hedge` middleware (feature `hedge`) uses a rotating latency histogram and no
//! budget or load level; it also hedges non-idempotent requests if its policy lets it.
//!
//! ```
//! use std::time::Duration;
//! use brownout_retry::hedge::{HedgeConfig, HedgeLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = calls.clone();
//! // The first attempt hangs for 10 s; the hedge answers in 1 ms.
//! let svc = service_fn(move |_: ()| {
//!     let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let wait = if n == 0 { 10_000 } else { 1 };
//!         tokio::time::sleep(Duration::from_millis(wait)).await;
//!         Ok::<_, brownout_core::BoxError>(n)
//!     }
//! });
//! let config = HedgeConfig::builder().fixed_delay(Duration::from_millis(50)).build().unwrap();
//! let mut svc = HedgeLayer::new(config).layer(svc);
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 1, "the hedge won");
//! assert!(start.elapsed() < Duration::from_millis(100));
//! # }
//! ```
//!
//! # Cancel safety
//!
//! Dropping the response future drops both attempts; a hedge budget withdrawn for a hedge
//! that was not sent is given back.

mod config;
mod future;
mod layer;
mod shared;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

pub use config::{HedgeBuilder, HedgeConfig, HedgeDelay};
pub use future::ResponseFuture;
pub use layer::HedgeLayer;

use crate::classify::{DefaultClassifier, RetryClassifier};
use crate::request::{AnyRequest, ByClone, CloneRequest, RequestInfo};
use shared::HedgeShared;

/// What a hedge layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Hedges sent.
    pub hedges: u64,
    /// Requests whose hedge answered first.
    pub hedge_wins: u64,
    /// The current hedge delay, if hedging is active.
    pub delay: Option<Duration>,
}

/// The hedging service (see the [module docs](self)).
pub struct Hedge<S, K = DefaultClassifier, C = ByClone, I = AnyRequest> {
    inner: S,
    shared: Arc<HedgeShared<K, C, I>>,
}

brownout_core::impl_inner_access!(Hedge<S, K, C, I>);

impl<S: Clone, K, C, I> Clone for Hedge<S, K, C, I> {
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K, C, I> fmt::Debug for Hedge<S, K, C, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, I, Req> Service<Req> for Hedge<S, K, C, I>
where
    S: Service<Req> + Clone,
    K: RetryClassifier<S::Response, S::Error>,
    C: CloneRequest<Req>,
    I: RequestInfo<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, K, C, I>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        if shared.config.deposit
            && let Some(budget) = &shared.config.budget
        {
            budget.deposit();
        }
        let delay = shared.delay();
        let copy = match delay {
            Some(_) if shared.requests.is_idempotent(&req) => shared.cloner.clone_request(&req),
            _ => None,
        };
        let delay = if copy.is_some() { delay } else { None };
        let service = self.inner.clone();
        let primary = self.inner.call(req);
        ResponseFuture::new(primary, delay, service, copy, self.shared.clone())
    }
}
