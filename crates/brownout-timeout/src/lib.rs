//! Adaptive timeouts: deadlines from observed latency, tightened as the load level rises and
//! never longer than the caller is willing to wait.
//!
//! ```
//! use std::time::Duration;
//! use brownout_core::{LoadLevel, LoadSignal, RejectReason, Rejected};
//! use brownout_timeout::{AdaptiveTimeoutConfig, AdaptiveTimeoutLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let config = AdaptiveTimeoutConfig::builder().initial(Duration::from_millis(100)).build().unwrap();
//! let mut svc = AdaptiveTimeoutLayer::new(config)
//!     .with_signal(LoadSignal::fixed(LoadLevel::Normal))
//!     .without_caller_deadline()
//!     .layer(service_fn(|ms: u64| async move {
//!         tokio::time::sleep(Duration::from_millis(ms)).await;
//!         Ok::<_, std::convert::Infallible>(ms)
//!     }));
//!
//! assert_eq!(svc.ready().await.unwrap().call(20).await.unwrap(), 20);
//! let err = svc.ready().await.unwrap().call(500).await.unwrap_err();
//! assert_eq!(Rejected::find(&*err).unwrap().reason(), RejectReason::Timeout);
//! # }
//! ```
//!
//! # Why, and how it differs from `tower::timeout`
//!
//! `tower::timeout::Timeout` applies one fixed duration. Set it long and a slow dependency
//! holds connections, memory and concurrency slots for the whole duration while the caller
//! has long given up; set it short and it cuts healthy slow requests. [`AdaptiveTimeout`]
//! derives the timeout from what the service actually does:
//!
//! ```text
//! timeout(level) = clamp(multiplier × p(percentile), min, max) × timeout_scale[level]
//! effective      = min(arrival + timeout(level), caller's deadline)
//! ```
//!
//! - `p(percentile)` is the chosen percentile (default p99) of the latencies of the last
//!   completed window (default 1 s) — `initial` until a window holds `min_samples`.
//!   Sampling adapts to the request rate: every request is timed on a quiet service, one
//!   in up to [`max_sample_every`](AdaptiveTimeoutBuilder::max_sample_every) (default 64) on
//!   a busy one, aiming at `4 × min_samples` samples per window.
//!   Samples go into a lock-free log-bucketed histogram (16 sub-buckets per power of two,
//!   ≤ 6.25 % error, reported at the bucket's upper bound); the first completion after a
//!   window ends sweeps it, recomputes the estimate and caches the per-level timeouts in
//!   atomics. A request reads its timeout with one atomic load, never recomputes.
//! - The timeout is scaled by [`Policy::timeout_scale`](brownout_core::Policy) at the
//!   current level (1.0 / 0.75 / 0.5 / 0.33 / 0.17 by default): under load, give up sooner.
//!   The `[min, max]` clamp bounds the estimate before scaling.
//! - The caller's own deadline caps it ([`CallerDeadline`]; for http, a
//!   [`Deadline`] in extensions or a `grpc-timeout` header, malformed
//!   values ignored). The effective deadline is written back into the request's extensions
//!   (`Deadline::tighten`) so the handler and downstream calls see the remaining budget.
//!
//! ## What is learned
//!
//! Successful responses are samples. A request cut by the adaptive timer is a *censored*
//! sample at its elapsed time (a lower bound), so when latency rises above the timeout the
//! estimate grows by up to `multiplier` per window instead of staying stuck. Errors, caller
//! deadlines and dropped futures teach nothing. Samples are only taken at levels whose scale
//! is 1.0 (Normal by default): while the level shrinks the timeout, only the fastest
//! requests finish, and learning from them would ratchet the estimate down to `min`.
//!
//! ## Edge cases
//!
//! - A caller deadline already passed, or a timeout of zero: immediate rejection, the inner
//!   service is not called.
//! - A timeout too large to add to `now` (e.g. `Duration::MAX` as `max` and `initial`) and no
//!   caller deadline: no timer at all. No arithmetic here can overflow or panic.
//! - The inner future ready at the same instant as the deadline: the response wins (the
//!   inner future is polled first on every poll).
//!
//! # Cost
//!
//! The clock is read only when its value is used (see [`brownout_core::clock`]): at `call`
//! when the request is a latency sample or carries a caller deadline (or, for
//! [`HttpDeadline`], always: `grpc-timeout` is relative and the effective deadline is
//! written into the request). Otherwise the layer's own timer starts when the response
//! future is **first found pending**, not at `call` — in hyper, axum and tonic the first poll
//! follows `call` at once, so the two differ by nanoseconds; a caller that builds the future
//! and polls it much later gets the full timeout from the first poll. A response ready at
//! once then costs no clock read and no timer; one that is pending costs one clock read and
//! one `Sleep`, created inline in the [`ResponseFuture`] (no `Box`), as tower's `Timeout`
//! does at every `call`. Sampled requests clone one `Arc` (the layer's estimator), read the
//! clock again at completion and add one atomic increment; the others hold no reference to
//! the layer (decision counters are one process-wide set, `layer="timeout"`).
//!
//! # Metrics
//!
//! Decisions are counted in `brownout_requests_total` / `brownout_rejections_total` with
//! `layer="timeout"` (admitted at completion, rejected at expiry or at once). The estimate
//! before level scaling is the gauge `brownout_timeout_seconds{layer="timeout"}`
//! ([`telemetry::TIMEOUT_SECONDS`](brownout_core::telemetry::TIMEOUT_SECONDS); `+Inf` when
//! unbounded), registered when the layer is built and set only when a window publishes a new
//! estimate, never per request.
//!
//! # Cancel safety
//!
//! Dropping the response future drops the inner future and deregisters the timer; nothing
//! else is held.
//!
//! # Errors
//!
//! `Error = BoxError`: a boxed [`Rejected`] with reason `Timeout`
//! (expired, deadline passed, or zero timeout), or the inner service's error, boxed.
//!
//! # Runtime
//!
//! Pending requests need a tokio runtime with the time driver enabled (as `tower::timeout`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod deadline;
mod estimator;
pub mod future;
mod layer;

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::clock::{LazyNow, Sampler};
use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{BoxError, Deadline, LoadLevel, LoadSignal, RejectReason, Rejected};
use tower_service::Service;

pub use crate::config::{AdaptiveTimeoutBuilder, AdaptiveTimeoutConfig};
pub use crate::deadline::{CallerDeadline, HttpDeadline, NoDeadline};
use crate::estimator::{Estimator, NO_TIMER};
pub use crate::future::ResponseFuture;
use crate::future::{Ctx, Sample, Start, Timer};
pub use crate::layer::AdaptiveTimeoutLayer;

/// State shared by every service of one layer and all their clones.
#[derive(Debug)]
pub(crate) struct Shared {
    config: AdaptiveTimeoutConfig,
    estimator: Estimator,
}

impl Shared {
    fn new(config: AdaptiveTimeoutConfig) -> Shared {
        Shared {
            config,
            estimator: Estimator::new(config),
        }
    }
}

/// The decision counters of every `AdaptiveTimeout` (`layer="timeout"`).
///
/// One per process rather than one per layer: every layer's counters carry the same labels,
/// so they are the same series anyway, and a response future that needs no latency sample
/// then holds no reference to its layer (no `Arc` clone per request).
#[inline]
pub(crate) fn decision_metrics() -> &'static DecisionMetrics {
    static METRICS: LazyLock<DecisionMetrics> = LazyLock::new(|| DecisionMetrics::new("timeout"));
    &METRICS
}

/// Times requests out after an adaptive, level-scaled timeout capped by the caller's
/// deadline; see the [crate docs](crate).
pub struct AdaptiveTimeout<S, D = HttpDeadline> {
    inner: S,
    shared: Arc<Shared>,
    signal: LoadSignal,
    deadline: D,
    /// Picks the latency samples of this clone (see `max_sample_every`).
    sampler: Sampler,
    /// A latency sample's reference to the shared state, cloned before the inner `call` and
    /// parked here while it runs (see `call`); `None` otherwise. Left here only if the
    /// inner `call` panics: then dropped with the service or at its next sample.
    parked: Option<Arc<Shared>>,
}

brownout_core::impl_inner_access!(AdaptiveTimeout<S, D>);

impl<S> AdaptiveTimeout<S, HttpDeadline> {
    /// Wraps `inner` with `config`, a level fixed at `Normal` and [`HttpDeadline`]; see
    /// [`AdaptiveTimeoutLayer`] for the other options.
    pub fn new(inner: S, config: AdaptiveTimeoutConfig) -> Self {
        AdaptiveTimeout {
            inner,
            shared: Arc::new(Shared::new(config)),
            signal: LoadSignal::default(),
            deadline: HttpDeadline::new(),
            sampler: Sampler::new(),
            parked: None,
        }
    }
}

impl<S, D> AdaptiveTimeout<S, D> {
    /// Reads the load level from `signal`.
    #[must_use]
    pub fn with_signal(mut self, signal: LoadSignal) -> Self {
        self.signal = signal;
        self
    }

    /// Finds callers' deadlines with `deadline`.
    pub fn caller_deadline<D2>(self, deadline: D2) -> AdaptiveTimeout<S, D2> {
        AdaptiveTimeout {
            inner: self.inner,
            shared: self.shared,
            signal: self.signal,
            deadline,
            sampler: self.sampler,
            parked: self.parked,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveTimeoutConfig {
        &self.shared.config
    }

    /// The timeout a request arriving now would get (before any caller deadline);
    /// `None` means no timer.
    pub fn current_timeout(&self) -> Option<Duration> {
        self.shared.estimator.timeout(self.signal.level())
    }

    /// The clamped latency estimate before level scaling (`initial` until enough samples);
    /// `None` when unbounded.
    pub fn estimate(&self) -> Option<Duration> {
        self.shared.estimator.estimate()
    }

    /// One request in this many is timed as a latency sample now (adaptive, between 1 and
    /// `max_sample_every`).
    pub fn sample_every(&self) -> u32 {
        self.shared.estimator.sample_every()
    }

    /// Whether this request is a latency sample.
    #[inline]
    fn take_sample(&mut self) -> bool {
        self.sampler.sample(&self.shared.estimator.rate)
    }

    #[cold]
    fn reject_now(&self, level: LoadLevel) -> Rejected {
        let rejected = Rejected::new(RejectReason::Timeout, level);
        decision_metrics().rejected(&rejected);
        tracing::trace!(target: "brownout::timeout", "deadline already passed: rejected");
        rejected
    }
}

impl<S: Clone, D: Clone> Clone for AdaptiveTimeout<S, D> {
    fn clone(&self) -> Self {
        AdaptiveTimeout {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            signal: self.signal.clone(),
            deadline: self.deadline.clone(),
            sampler: Sampler::new(),
            parked: None,
        }
    }
}

impl<S: fmt::Debug, D> fmt::Debug for AdaptiveTimeout<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveTimeout")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .field("current_timeout", &self.current_timeout())
            .finish_non_exhaustive()
    }
}

impl<S, D, Req> Service<Req> for AdaptiveTimeout<S, D>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    D: CallerDeadline<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Not inlined: a layer above that has nothing alive across this call (admission) then
    // has it write the whole future straight into its own, where an inlined body is built
    // in a stack temporary and copied.
    #[inline(never)]
    fn call(&mut self, mut req: Req) -> Self::Future {
        let level = self.signal.level();
        let estimator = &self.shared.estimator;
        // The timeout at this level in nanoseconds (`NO_TIMER`: no timer), converted to a
        // `Duration` only where it is used.
        let nanos = estimator.timeout_nanos(level);
        let mut now = LazyNow::new();
        let caller = self.deadline.caller_deadline_lazy(&req, &mut now);
        let learn = estimator.learns_at(level) && self.take_sample();
        let (start, sample) = if !learn && caller.is_none() && now.peek().is_none() {
            // Not a sample, no caller deadline: no clock read here. The timer starts when the
            // response is first found pending; one answered at once never reads the clock.
            let start = match nanos {
                NO_TIMER => Start::Never,
                0 => return ResponseFuture::rejected(self.reject_now(level)),
                nanos => Start::Deferred { nanos },
            };
            (start, None)
        } else {
            // The arrival time is known (a sample, or read for the caller's deadline): the
            // deadline counts from it, as tower's `Timeout`.
            let at = now.get();
            // `None`: no own timer (none at this level, or too large to add to `at`).
            let own = (nanos != NO_TIMER)
                .then(|| at.checked_add(Duration::from_nanos(nanos)))
                .flatten();
            let (deadline, by_caller) = match (own, caller) {
                (Some(own), Some(caller)) if caller < own => (Some(caller), true),
                (Some(own), _) => (Some(own), false),
                (None, caller) => (caller, caller.is_some()),
            };
            let start = match deadline {
                Some(deadline) if deadline <= at => {
                    return ResponseFuture::rejected(self.reject_now(level));
                }
                Some(deadline) => {
                    self.deadline.propagate(&mut req, Deadline::at(deadline));
                    Start::Unarmed { deadline }
                }
                None => Start::Never,
            };
            if learn {
                self.parked = Some(Arc::clone(&self.shared));
            }
            let sample = learn.then_some(Sample {
                start: at,
                on_timeout: !by_caller,
            });
            (start, sample)
        };
        // One place builds the future, from plain values and the reference parked above:
        // no local with a destructor is alive across the inner `call` and nothing atomic
        // runs between it and building our future, so LLVM builds the inner future in
        // place instead of copying it.
        ResponseFuture::running(
            self.inner.call(req),
            Timer::Idle { start },
            Ctx {
                level,
                sample,
                shared: self.parked.take(),
            },
        )
    }
}
