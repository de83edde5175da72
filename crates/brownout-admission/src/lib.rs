//! Priority admission: a concurrency limit (fixed or adaptive) with a bounded priority
//! queue, queueing-delay control, anti-starvation and rate limits scaled by the load level.
//!
//! ```
//! use std::time::Duration;
//! use brownout_admission::{Limit, NoDeadline, PriorityAdmissionLayer, QueueTimeout};
//! use brownout_core::Priority;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = PriorityAdmissionLayer::builder()
//!     .limit(Limit::fixed(16))
//!     .queue_capacity(64)
//!     .queue_timeout(QueueTimeout::fixed(Duration::from_millis(50)))
//!     .classifier(|job: &&str| if job.starts_with("health") { Priority::Critical } else { Priority::Low })
//!     .deadline(NoDeadline)
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//! let mut svc = layer.layer(service_fn(|job: &'static str| async move { Ok::<_, std::convert::Infallible>(job.len()) }));
//! assert_eq!(svc.ready().await.unwrap().call("health").await.unwrap(), 6);
//! assert_eq!(handle.limit(), 16);
//! assert_eq!(handle.in_flight(), 0);
//! # }
//! ```
//!
//! # Why, and how it differs from `tower::limit::ConcurrencyLimit`
//!
//! tower's `ConcurrencyLimit` takes its permit in `poll_ready`, before the request is known:
//! under overload every request waits in one FIFO (the semaphore), health checks behind
//! analytics, each for as long as it takes, and a keep-alive connection that calls
//! `poll_ready` without `call` holds a permit. Its limit is fixed, and each clone made by
//! `Layer::layer` (axum builds one per route) has its own semaphore unless shared by hand.
//!
//! [`PriorityAdmission`] decides in `call`, where the request and its [`Priority`] are known:
//!
//! * **Limit** — [`Limit::fixed`], [`Limit::gradient`] (latency gradient against a probed
//!   no-load latency, Gradient2 / Envoy style) or [`Limit::aimd`]. The limit never drops
//!   below `min_limit ≥ 1`. Samples are the latency of admitted requests that *completed*;
//!   dropped futures are not samples; errors are drops for AIMD and ignored by the gradient.
//! * **Queue** — when no permit is free, the request waits: highest class first, FIFO within
//!   a class, except that a head that waited past [`starvation_bound`] (default 1 s) is
//!   served first — at most every other permit, so important classes keep half or more.
//!   While the server keeps up (the queue less than half full, no more important request
//!   waiting past its patience), a request that waited [`Promotion::after`] (default 50 ms)
//!   is served the same way: at 100 % utilization strict priority would otherwise leave the
//!   lowest classes to time out in the queue's random walk, idling workers later
//!   ([`Promotion`]; [`no_promotion`] for strict order).
//!   Capacity is `queue_capacity × Policy::queue[level]`. When full, a newcomer evicts the
//!   newest request of the lowest class below its own (that one gets
//!   `Rejected { QueueFull }`), or is refused with `QueueFull`.
//! * **Queueing delay** — [`QueueTimeout::codel`] (default 40 ms / 120 ms; standing = the queue did not empty for an interval) or
//!   [`QueueTimeout::fixed`]: a request that waited past its allowance, or past its own
//!   [`Deadline`], gets `Rejected { QueueTimeout }` and is never served late. A request
//!   whose deadline has already passed is refused on arrival.
//! * **Hand-off** — a released permit goes straight to the best waiter under the queue lock;
//!   newcomers cannot overtake waiters.
//! * **Rate limits** — GCRA on tokio's clock: global ([`rate_limit`], through `governor`)
//!   and per key ([`keyed_rate_limit`], governor's algorithm in a sharded per-key store;
//!   checked first, so what a key refuses spends none of the global rate); `RateLimited`
//!   carries the `retry_after`. Rate and burst are scaled by `Policy::rate`
//!   (100/80/60/40/20 %) with one state per level, exact for any burst (charging `1 / scale`
//!   cells per request in one limiter would keep state across level changes, but cannot
//!   keep a small burst exact). During a flood most refusals, global or per key, are
//!   decided without a clock read. Keys idle at every level are forgotten every
//!   [`key_idle_sweep`].
//! * **Reserved shares** — [`reserve`] holds a share of the limit for one class.
//! * **Shared state** — every clone of the layer and of the service shares one `Arc`.
//!
//! The limit, in-flight and queue lengths per class are readable from an
//! [`AdmissionHandle`] ([`PriorityAdmissionLayer::handle`]), which also [`close`]s the queue
//! at shutdown. Queueing delay and depth go to a [`QueueProbe`] when one is set.
//! The delay reported is the one that measures overload rather than priority order: a
//! request served from the queue reports the wait of the most important request waiting
//! at that moment (its own, unless it was promoted), and a request refused for lack of room
//! (`QueueFull`, newcomer or evicted) reports the longest wait allowed, as if it had timed
//! out. Immediate admissions report zero.
//!
//! # Metrics
//!
//! Decisions are counted by [`DecisionMetrics`](brownout_core::telemetry::DecisionMetrics)
//! (`layer="admission"`). Besides: `brownout_in_flight` and `brownout_queue_depth` gauges and a
//! `brownout_queue_delay_seconds` histogram (zero for requests admitted at once), each per
//! `priority`, and `brownout_concurrency_limit` when the limit changes. Name an instance with
//! [`PriorityAdmissionBuilder::name`] to tell several apart (a `name` label). Handles are
//! registered once per class, lazily, so a recorder installed after the layer still sees them.
//!
//! # Readiness
//!
//! No permit is taken in `poll_ready`: it forwards the inner service's readiness. A request
//! admitted at once is passed to the inner service that `poll_ready` prepared. A request
//! that must wait takes that prepared inner service with it (a clone stays behind), so the
//! inner service must be `Clone` — as with tower's `Buffer`-style patterns, the readiness
//! obtained by `poll_ready` is used by the call it was obtained for.
//!
//! # Response bodies and runtime
//!
//! The permit is returned when the inner service's response future resolves (for http:
//! when the response headers are ready), not when a streamed body ends — like tower's
//! `ConcurrencyLimit`. To hold it for the body, wrap the body in the inner service.
//! Queued requests wait on a tokio timer, so the layer needs a tokio runtime with the time
//! driver enabled (any `#[tokio::main]` runtime).
//!
//! # Cost
//!
//! With a free permit and an empty queue, admission is one level load, one queue-length load
//! and one CAS on the in-flight counter; no lock, no allocation (with a fixed limit not even a
//! clock read). The gradient limit times one request in up to 64 at high rates (two clock
//! reads and a lock at completion for a timed one). Waiting allocates one small slot and takes
//! the queue lock.
//!
//! # Cancel safety
//!
//! Dropping the response future at any point gives everything back (see
//! [`future::ResponseFuture`]). A panic in the inner service's future unwinds through the
//! response future and returns the permit. A panic in the inner service's `call` itself
//! leaves the permit with the service (it is held there while the inner `call` runs, so
//! that the inner future can be built in place): it is returned when the unwinding drops
//! the service (as a connection task or `oneshot` does), or at the service's next `call`
//! when the panic is caught and the service kept.
//!
//! # Errors
//!
//! Refusals are [`Rejected`] boxed into [`BoxError`], with reason `QueueFull`,
//! `QueueTimeout`, `RateLimited` or `ShuttingDown`, the level, the class and a
//! `retry_after`. The inner service's errors are boxed with `.into()`.
//!
//! [`starvation_bound`]: PriorityAdmissionBuilder::starvation_bound
//! [`no_promotion`]: PriorityAdmissionBuilder::no_promotion
//! [`rate_limit`]: PriorityAdmissionBuilder::rate_limit
//! [`keyed_rate_limit`]: PriorityAdmissionBuilder::keyed_rate_limit
//! [`key_idle_sweep`]: PriorityAdmissionBuilder::key_idle_sweep
//! [`reserve`]: PriorityAdmissionBuilder::reserve
//! [`close`]: AdmissionHandle::close
//! [`Deadline`]: brownout_core::Deadline
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod extract;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod limit;
#[cfg(brownout_loom)]
#[doc(hidden)]
pub mod model;
mod rate;
mod shared;
mod telemetry;

use brownout_core::sync::Arc;
use std::fmt;
use std::task::{Context, Poll};

pub use brownout_core::{BoxError, Priority, QueueProbe, Rejected};
use brownout_core::{Classify, FromExtensions, RejectReason};
pub use config::{PriorityAdmissionBuilder, Promotion, QueueTimeout};
pub use extract::{CheckKey, DeadlineFromExtensions, ExtractDeadline, KeyedBy, NoDeadline, NoKey};
pub use handle::{AdmissionHandle, AdmissionStats};
pub use layer::PriorityAdmissionLayer;
pub use limit::{AimdConfig, GradientConfig, Limit};
pub use rate::RateLimit;
use tokio::time::Instant;
use tower_service::Service;

use crate::future::{ResponseFuture, Waiter};
use crate::shared::{Permit, Shared, Slow};

/// The service built by [`PriorityAdmissionLayer`].
pub struct PriorityAdmission<S, C = FromExtensions, D = DeadlineFromExtensions, K = NoKey> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    deadline: D,
    keyed: K,
    /// The permit of the request whose inner `call` is running, parked here during that
    /// call (see `admitted`); `None` otherwise. A panic in the inner `call` leaves it
    /// here, and it is given back when this service is dropped (as the unwinding that
    /// owns it does) or at its next call.
    pending: Option<Permit>,
}

brownout_core::impl_inner_access!(PriorityAdmission<S, C, D, K>);

impl<S, C, D, K> PriorityAdmission<S, C, D, K> {
    /// A handle on the shared state (the same as the layer's).
    pub fn handle(&self) -> AdmissionHandle {
        AdmissionHandle::new(Arc::clone(&self.shared))
    }
}

impl<S: Clone, C: Clone, D: Clone, K: Clone> Clone for PriorityAdmission<S, C, D, K> {
    fn clone(&self) -> Self {
        PriorityAdmission {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            deadline: self.deadline.clone(),
            keyed: self.keyed.clone(),
            pending: None,
        }
    }
}

impl<S: fmt::Debug, C, D, K> fmt::Debug for PriorityAdmission<S, C, D, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityAdmission")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, C, D, K, Req> Service<Req> for PriorityAdmission<S, C, D, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req>,
    D: ExtractDeadline<Req>,
    K: CheckKey<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Req>;

    /// Forwards the inner service's readiness; takes no permit.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if self.pending.is_some() {
            // The previous inner `call` panicked and the panic was caught: its permit first.
            self.release_pending();
        }
        let shared = &self.shared;
        let class = self.classifier.classify(&req);
        let level = shared.signal.level();
        if shared.is_closed() {
            let r = shared.rejection(RejectReason::ShuttingDown, level, class);
            return ResponseFuture::rejected(r);
        }
        let deadline = self.deadline.deadline(&req).map(|d| d.instant());
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            let r = shared.rejection(RejectReason::QueueTimeout, level, class);
            return ResponseFuture::rejected(r);
        }
        // The key's own limit first: a request its key refuses must not spend a token of
        // the global limit, or one tenant's flood would use up everyone's rate.
        if let Err(retry) = self.keyed.check_key(&req, level) {
            let r = shared.reject_with(RejectReason::RateLimited, level, class, retry);
            return ResponseFuture::rejected(r);
        }
        if let Some(rate) = &shared.rate
            && let Err(retry) = rate.check(level)
        {
            let r = shared.reject_with(RejectReason::RateLimited, level, class, retry);
            return ResponseFuture::rejected(r);
        }
        match shared.admit(class, level, deadline) {
            Slow::Admitted => self.admitted(class, level, req),
            Slow::Rejected(reason) => {
                ResponseFuture::rejected(shared.rejection(reason, level, class))
            }
            Slow::Queued { slot, id } => {
                let waiter = Waiter::new(Arc::clone(shared), slot, id, class, level);
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(waiter, ready, req)
            }
        }
    }
}

impl<S, C, D, K> PriorityAdmission<S, C, D, K> {
    /// Gives back the permit parked by an inner `call` that panicked.
    #[cold]
    #[inline(never)]
    fn release_pending(&mut self) {
        self.pending = None;
    }

    #[inline]
    fn admitted<Req>(
        &mut self,
        class: Priority,
        level: brownout_core::LoadLevel,
        req: Req,
    ) -> ResponseFuture<S::Future, S, Req>
    where
        S: Service<Req>,
    {
        // The permit (and its `Arc` clone) is made before the inner `call` and parked in
        // `self` while it runs, so that no local with a destructor is alive across the call
        // and nothing atomic runs between the call and building our future: LLVM then
        // builds the inner future in place, in our own, instead of copying it (a 232-byte
        // `memcpy` per request in a four-layer stack). A panic in the inner `call` leaves
        // the permit parked: it is given back when the unwinding drops this service, or at
        // this service's next call. Parked first: the counters' atomic instructions below
        // then drain the stores, so reading the permit back after the call does not stall
        // on store forwarding (it would over an inner service that answers at once).
        self.pending = Some(Permit::new(Arc::clone(&self.shared), class));
        let shared = &self.shared;
        shared.metrics.admitted(Some(class), level);
        shared
            .totals
            .admitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared.record_immediate(class);
        ResponseFuture::running(self.inner.call(req), self.pending.take())
    }
}
