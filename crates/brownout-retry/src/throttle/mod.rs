//! Client-side adaptive throttling (Google SRE book, "Handling Overload").
//!
//! When a server refuses a growing share of requests, each refused request still costs it
//! something (a connection, a parse, a rejection). An [`AdaptiveThrottle`] tracks, over a
//! sliding window (two minutes by default, in buckets, on tokio's pausable clock), how many
//! requests it sent and how many the server *accepted*, and refuses locally with probability
//!
//! ```text
//! p_reject = max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! With K = 2 nothing is refused until the server refuses more than half; past that the
//! client sheds just enough to keep sending about K times what the server accepts, so it
//! notices recovery. Requests it refuses count as requests, as in the book (requests dropped
//! for the reported level below do not count: the server never refused them).
//!
//! When answers carry the server's load level (`x-load-level`, which the brownout http
//! integration sets: a level name or digit), the throttle remembers it for a TTL and drops
//! locally the classes that server would shed at that level (`Policy::shed[level]`).
//!
//! Refusals are [`Rejected`](brownout_core::Rejected) boxed into `BoxError`:
//! `BudgetExhausted` for the probabilistic throttle, `Shed` (with the remaining TTL as
//! `retry_after`) for the level case. tower has no equivalent; tower's `RateLimit` and
//! `ConcurrencyLimit` refuse by local capacity, not by what the server answers.
//!
//! Put it *outside* the retry layer so that retries are also throttled, or inside it so that
//! a throttled attempt ends the retries at once (`BudgetExhausted` is never retried).
//!
//! ```
//! use brownout_core::{BoxError, Priority, Rejected, RejectReason};
//! use brownout_retry::throttle::{AdaptiveThrottleConfig, AdaptiveThrottleLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A server that has stopped accepting anything.
//! let refusing = service_fn(|_: ()| async { Err::<(), BoxError>("503".into()) });
//! let layer = AdaptiveThrottleLayer::new(AdaptiveThrottleConfig::builder().seed(1).build().unwrap());
//! let mut svc = layer.layer(refusing);
//! let mut local = 0;
//! for _ in 0..1000 {
//!     if let Err(e) = svc.ready().await.unwrap().call(()).await {
//!         if Rejected::find_in_box(&*e).is_some_and(|r| r.reason() == RejectReason::BudgetExhausted) {
//!             local += 1;
//!         }
//!     }
//! }
//! assert!(local > 900, "almost everything refused locally: {local}");
//! # }
//! ```

mod accept;
mod config;
mod future;
mod layer;
mod state;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use brownout_core::BoxError;
use brownout_core::Classify;
use tower_service::Service;

pub use accept::{AcceptClassifier, DefaultAccept, HttpAccept, Verdict};
pub use config::{AdaptiveThrottleBuilder, AdaptiveThrottleConfig};
pub use future::ResponseFuture;
pub use layer::AdaptiveThrottleLayer;

use state::ThrottleState;

/// What a throttle saw and did over its window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct ThrottleStats {
    /// Requests over the window (sent or refused locally).
    pub requests: u64,
    /// Requests the server accepted over the window.
    pub accepts: u64,
    /// The current local rejection probability.
    pub reject_probability: f64,
    /// Requests refused by the probabilistic throttle since start.
    pub rejected_locally: u64,
    /// Requests refused because the server's reported level sheds their class, since start.
    pub shed_by_level: u64,
}

/// The adaptive throttle service (see the [module docs](self)).
///
/// `A` decides what counts as accepted ([`AcceptClassifier`]), `P` gives each request its
/// class (a [`Classify`]) for the level-based drop.
pub struct AdaptiveThrottle<S, A = DefaultAccept, P = brownout_core::Fixed> {
    inner: S,
    accept: A,
    classify: P,
    state: Arc<ThrottleState>,
}

brownout_core::impl_inner_access!(AdaptiveThrottle<S, A, P>);

impl<S, A, P> AdaptiveThrottle<S, A, P> {
    /// What the throttle saw and did (shared by every clone).
    pub fn stats(&self) -> ThrottleStats {
        stats(&self.state)
    }
}

pub(crate) fn stats(state: &ThrottleState) -> ThrottleStats {
    let (requests, accepts) = state.totals();
    ThrottleStats {
        requests,
        accepts,
        reject_probability: state.reject_probability(),
        rejected_locally: state.rejected_locally.load(Ordering::Relaxed),
        shed_by_level: state.shed_by_level.load(Ordering::Relaxed),
    }
}

impl<S: Clone, A: Clone, P: Clone> Clone for AdaptiveThrottle<S, A, P> {
    fn clone(&self) -> Self {
        AdaptiveThrottle {
            inner: self.inner.clone(),
            accept: self.accept.clone(),
            classify: self.classify.clone(),
            state: self.state.clone(),
        }
    }
}

impl<S: fmt::Debug, A, P> fmt::Debug for AdaptiveThrottle<S, A, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("inner", &self.inner)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S, A, P, Req> Service<Req> for AdaptiveThrottle<S, A, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: AcceptClassifier<S::Response, S::Error> + Clone,
    P: Classify<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, A>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.classify.classify(&req);
        match self.state.admit(priority) {
            Err(rejected) => ResponseFuture::rejected(rejected),
            Ok(()) => {
                // The metrics label is the last level the server reported (Normal if none).
                let level = self
                    .state
                    .last_level()
                    .unwrap_or(brownout_core::LoadLevel::Normal);
                self.state.metrics.admitted(Some(priority), level);
                ResponseFuture::called(
                    self.inner.call(req),
                    self.accept.clone(),
                    self.state.clone(),
                )
            }
        }
    }
}
