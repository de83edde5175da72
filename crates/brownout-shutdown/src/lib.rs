//! Graceful shutdown for tower services: readiness first, refuse new work, drain in-flight
//! work with a deadline, run ordered async hooks, and report what happened.
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use brownout_shutdown::Shutdown;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let shutdown = Shutdown::builder().drain_timeout(Duration::from_secs(10)).build()?;
//! shutdown.hook("flush", Duration::from_secs(2), || async { Ok(()) });
//! let svc = ServiceBuilder::new()
//!     .layer(shutdown.layer())
//!     .service_fn(|req: &'static str| async move { Ok::<_, Infallible>(req.len()) });
//!
//! assert_eq!(svc.clone().oneshot("hello").await?, 5);
//! let report = shutdown.shutdown().await; // trigger, drain, hooks
//! assert!(svc.oneshot("late").await.is_err()); // refused: ShuttingDown
//! assert_eq!((report.completed, report.rejected), (1, 0));
//! # Ok(()) }
//! ```
//!
//! # Why, and how it differs from what exists
//!
//! tower has no shutdown layer. hyper / axum's `with_graceful_shutdown` and tonic's
//! `serve_with_shutdown` stop accepting connections and wait for open ones, but without a
//! deadline on in-flight requests, without a readiness phase for load balancers, without
//! hooks and without telling you what was lost. This crate adds those, generic over any
//! `Service<Req>`:
//!
//! 1. **Readiness first.** At [`Shutdown::trigger`] (programmatic, or SIGTERM / SIGINT via
//!    `Shutdown::listen_for_signals` with the default `signal` feature),
//!    [`Shutdown::is_ready`] turns false before anything else, so a health endpoint answers
//!    503 ([`Readiness`]). The phase becomes [`Phase::Draining`] and the
//!    [`on_trigger`](Shutdown::on_trigger) callbacks run (e.g. an admission queue rejects
//!    its waiting requests at once).
//! 2. **Refuse new requests** after the optional `readiness_delay` (default 0): the
//!    [`ShutdownGuard`] answers them with a `brownout_core::Rejected` (reason
//!    `ShuttingDown`, a `Retry-After` hint) boxed into `BoxError`. The http / tonic
//!    integrations turn it into `503` + `Connection: close` / `UNAVAILABLE`.
//! 3. **Drain.** Requests in flight keep running up to `drain_timeout`. At the deadline the
//!    rest are aborted: each pending [`ResponseFuture`] is woken and
//!    resolves to an [`Aborted`] error (its source is the `ShuttingDown` rejection) and
//!    drops its inner future, so nothing hangs; they are counted as aborted.
//! 4. **Hooks** ([`Shutdown::hook`]: flush, save state, close pools) run in registration
//!    order, each under its own timeout; one that fails, panics or times out is reported
//!    and the next still runs.
//! 5. **Report.** [`Shutdown::wait`] returns a [`ShutdownReport`]: completed (in total and
//!    during the drain), rejected, aborted, cancelled, drain duration, each hook's outcome
//!    and duration; the phase becomes [`Phase::Terminated`].
//!
//! Triggering twice, from several places, or before serving starts is idempotent.
//!
//! # Wiring with axum and tonic
//!
//! The server stops accepting connections when the future you hand it resolves. Use
//! [`Shutdown::refusing`] (trigger + readiness delay) so the listener stays open while
//! balancers move away; use [`Shutdown::triggered`] when there is no readiness delay.
//! Put the guard outermost, so it sees every request first:
//!
//! ```text
//! let shutdown = Shutdown::builder()
//!     .readiness_delay(Duration::from_secs(5))
//!     .drain_timeout(Duration::from_secs(20))
//!     .build()?;
//! shutdown.listen_for_signals();                       // SIGTERM / Ctrl-C
//! shutdown.hook("flush metrics", Duration::from_secs(2), || async { flush().await });
//! shutdown.hook("close db pool", Duration::from_secs(3), move || async move { pool.close().await; Ok(()) });
//!
//! // axum (the facade maps Rejected / Aborted to 503 + Connection: close)
//! let health = shutdown.clone();
//! let app = Router::new()
//!     .route("/ready", get(move || async move { health.readiness().status_code() }))
//!     .layer(brownout::http::rejections()) // facade: BoxError -> response
//!     .layer(shutdown.layer());                     // or shutdown.body_layer() for SSE / streams
//! axum::serve(listener, app).with_graceful_shutdown(shutdown.refusing()).await?;
//! let report = shutdown.wait().await;               // drained + hooks
//! tracing::info!(%report);
//!
//! // tonic
//! Server::builder()
//!     .layer(shutdown.layer())
//!     .add_service(svc)
//!     .serve_with_shutdown(addr, shutdown.refusing())
//!     .await?;
//! let report = shutdown.wait().await;
//! ```
//!
//! With Kubernetes, keep `readiness_delay + drain_timeout + hooks` under
//! `terminationGracePeriodSeconds` (30 s by default): the defaults (0 + 20 s) leave room
//! for a 5 s readiness delay and a few seconds of hooks.
//!
//! # Streaming responses and long requests
//!
//! [`ShutdownGuard`] tracks a request until its *response future* resolves (the response
//! head, for http). For http services whose bodies stream (server-sent events, long
//! downloads, gRPC server streams), use `Shutdown::body_layer` (feature `http`) instead:
//! its `ShutdownBodyGuard` keeps the request in flight until the response **body** ends or is
//! dropped, the drain waits for it, and at the deadline a body still streaming yields one
//! [`Aborted`] error frame and ends, so the server closes that connection and its own
//! graceful shutdown can finish (an endless SSE stream would otherwise hold it forever).
//! Long-running requests whose futures are still pending are drained and, past the
//! deadline, aborted like any other. Idle connections (`poll_ready` without `call`) hold
//! nothing.
//!
//! # Cost on the request path
//!
//! While running, `call` reads one atomic flag, calls the inner service, then increments
//! the `started` counter and reads the flag again; the response future increments the
//! `finished` counter when it resolves or is dropped (in flight = started − finished,
//! completed = finished − cancelled − aborted, so a request costs two counter increments
//! and one `Arc` clone). No lock and no allocation on that path. A response future that returns
//! `Pending` registers once (again only if its waker changes) with one of 16 sharded
//! `tokio::sync::Notify`s so that the drain deadline can wake it.
//!
//! # Errors
//!
//! `ShutdownGuard`'s error is `BoxError`: the inner service's error, a
//! `brownout_core::Rejected` (`ShuttingDown`) for a refused request, or an [`Aborted`]
//! for a request aborted at the drain deadline.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "http")]
mod body;
mod config;
mod error;
pub mod future;
mod handle;
mod layer;
mod report;
#[cfg(feature = "signal")]
mod signal;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use brownout_core::BoxError;
use tower_service::Service;

#[cfg(feature = "http")]
pub use body::{BodyResponseFuture, GuardedBody, ShutdownBodyGuard, ShutdownBodyGuardLayer};
pub use config::{ShutdownBuilder, ShutdownConfig};
pub use error::Aborted;
pub use handle::{Phase, Readiness, Shutdown};
pub use layer::ShutdownGuardLayer;
pub use report::{Counts, HookOutcome, HookReport, ShutdownReport};

use future::{InFlight, ResponseFuture};
use handle::Shared;

/// Passes requests through while the [`Shutdown`] is running, tracking them in flight;
/// refuses new ones once it stops admitting; aborts the ones left at the drain deadline.
///
/// Built by [`ShutdownGuardLayer`] or [`ShutdownGuard::new`]. `poll_ready` forwards to the
/// inner service and takes nothing.
///
/// ```
/// use std::convert::Infallible;
/// use brownout_core::{RejectReason, Rejected};
/// use brownout_shutdown::{Shutdown, ShutdownGuard};
/// use tower::{ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let shutdown = Shutdown::new();
/// let svc = ShutdownGuard::new(service_fn(|n: u32| async move { Ok::<_, Infallible>(n * 2) }), &shutdown);
/// assert_eq!(svc.clone().oneshot(21).await.unwrap(), 42);
///
/// shutdown.trigger();
/// let err = svc.oneshot(1).await.unwrap_err();
/// assert_eq!(Rejected::find(&*err).unwrap().reason(), RejectReason::ShuttingDown);
/// # }
/// ```
pub struct ShutdownGuard<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The in-flight slot of the request whose inner `call` is running (see `call`).
    pending: Option<InFlight>,
}

impl<S: Clone> Clone for ShutdownGuard<S> {
    fn clone(&self) -> Self {
        ShutdownGuard::from_shared(self.inner.clone(), self.shared.clone())
    }
}

impl<S> ShutdownGuard<S> {
    /// Guards `inner` with `shutdown`.
    pub fn new(inner: S, shutdown: &Shutdown) -> ShutdownGuard<S> {
        ShutdownGuard::from_shared(inner, shutdown.shared().clone())
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> ShutdownGuard<S> {
        ShutdownGuard {
            inner,
            shared,
            pending: None,
        }
    }
}

brownout_core::impl_inner_access!(ShutdownGuard<S>);

impl<S: fmt::Debug> fmt::Debug for ShutdownGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownGuard")
            .field("inner", &self.inner)
            .field("accepting", &self.shared.accepting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for ShutdownGuard<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.pending.is_some() {
            // The previous inner `call` panicked and the panic was caught: its slot first.
            self.release_pending();
        }
        let shared = &self.shared;
        if !shared.accepting.load(Ordering::SeqCst) {
            return refuse(shared);
        }
        // Count, then check again: the drain stops accepting, then reads the counter, so
        // (both sequentially consistent) either it sees this request or this request sees
        // that it stopped — and is refused without calling the inner service.
        shared.started.0.fetch_add(1, Ordering::SeqCst);
        if !shared.accepting.load(Ordering::SeqCst) {
            return refuse_late(shared);
        }
        shared.metrics.admitted(None, shared.signal.level());
        // The slot (and its `Arc` clone) is parked in `self` while the inner `call` runs:
        // no local with a destructor is alive across the call and nothing atomic runs
        // between the call and building our future, so the compiler builds the inner future
        // in place instead of copying it (see docs/benchmarks/brownout.md, "Composition").
        // A panic in the inner `call` leaves the slot parked: it is released (counted
        // cancelled) when the unwinding drops this service, or at this service's next call.
        // The inner future is a temporary of the one expression that builds ours, not a
        // named local: a local lives to the end of the function, whose paths meet in one
        // return block, and when the inner `call` is not inlined (and its definition sits
        // in another codegen unit, as in the facade) LLVM only builds a future in place if
        // the temporary dies in the block of the call (a 496-byte copy per request there).
        self.pending = Some(InFlight::adopt(shared.clone()));
        ResponseFuture::running(self.inner.call(req), self.pending.take())
    }
}

impl<S> ShutdownGuard<S> {
    /// Releases the slot parked by an inner `call` that panicked.
    #[cold]
    #[inline(never)]
    fn release_pending(&mut self) {
        self.pending = None;
    }
}

/// A request refused before the inner service was called (rare: kept out of line).
#[cold]
#[inline(never)]
fn refuse<F>(shared: &Arc<Shared>) -> ResponseFuture<F> {
    let rejected = shared.rejection();
    shared.rejected.fetch_add(1, Ordering::Relaxed);
    shared.metrics.rejected(&rejected);
    ResponseFuture::refused(rejected)
}

/// A request counted in flight just as the trigger stopped admitting (rare: out of line):
/// refused, and its count given back as a late refusal, never as completed.
#[cold]
#[inline(never)]
fn refuse_late<F>(shared: &Arc<Shared>) -> ResponseFuture<F> {
    // Before the release, so that it is never counted as completed.
    shared.late_refused.fetch_add(1, Ordering::SeqCst);
    let future = refuse(shared);
    shared.release();
    future
}
