//! Where the caller's own deadline comes from, and where the effective one goes.

use brownout_core::clock::LazyNow;
use brownout_core::headers::GRPC_TIMEOUT;
use brownout_core::{Deadline, parse_grpc_timeout};
use tokio::time::Instant;

/// Finds the caller's own deadline in a request, and records the effective deadline in it
/// for the handler and downstream calls.
///
/// Implemented by [`HttpDeadline`] (the default, for `http::Request`), [`NoDeadline`] (any
/// request) and closures `Fn(&Req) -> Option<Deadline>` (any request; nothing recorded).
///
/// ```
/// use std::time::Duration;
/// use brownout_core::Deadline;
/// use brownout_timeout::CallerDeadline;
///
/// struct Job { budget: Option<Duration> }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let by_budget = |job: &Job| job.budget.map(Deadline::after);
/// let now = tokio::time::Instant::now();
/// let d = by_budget.caller_deadline(&Job { budget: Some(Duration::from_secs(1)) }, now);
/// assert_eq!(d, Some(now + Duration::from_secs(1)));
/// # }
/// ```
pub trait CallerDeadline<Req> {
    /// The instant by which the caller stops waiting, if the request says; `now` is the
    /// time the request arrived (for relative forms such as `grpc-timeout`).
    fn caller_deadline(&self, req: &Req, now: Instant) -> Option<Instant>;

    /// Like [`caller_deadline`](CallerDeadline::caller_deadline), reading the clock only if
    /// needed. The default reads it and calls `caller_deadline`.
    ///
    /// When this returns `None` without reading `now`, the layer reads no clock at `call` for
    /// an unsampled request: its own timer then starts when the response future is first
    /// found pending (a request answered at once needs no deadline), and
    /// [`propagate`](CallerDeadline::propagate) is not called. Override it only when
    /// `propagate` records nothing, as [`NoDeadline`] and closures do.
    #[inline]
    fn caller_deadline_lazy(&self, req: &Req, now: &mut LazyNow) -> Option<Instant> {
        self.caller_deadline(req, now.get())
    }

    /// Records the effective deadline (the earlier of the caller's and the layer's) in the
    /// request. The default does nothing.
    fn propagate(&self, req: &mut Req, deadline: Deadline) {
        let _ = (req, deadline);
    }
}

impl<Req, F> CallerDeadline<Req> for F
where
    F: Fn(&Req) -> Option<Deadline>,
{
    #[inline]
    fn caller_deadline(&self, req: &Req, _now: Instant) -> Option<Instant> {
        self(req).map(Deadline::instant)
    }

    #[inline]
    fn caller_deadline_lazy(&self, req: &Req, _now: &mut LazyNow) -> Option<Instant> {
        self(req).map(Deadline::instant)
    }
}

/// No caller deadline: only the adaptive timeout applies. Works for any request type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoDeadline;

impl<Req> CallerDeadline<Req> for NoDeadline {
    #[inline]
    fn caller_deadline(&self, _req: &Req, _now: Instant) -> Option<Instant> {
        None
    }

    #[inline]
    fn caller_deadline_lazy(&self, _req: &Req, _now: &mut LazyNow) -> Option<Instant> {
        None
    }
}

/// The caller's deadline of an `http::Request`: a [`Deadline`] in its extensions and/or a
/// `grpc-timeout` header (the earlier wins; malformed headers are ignored). The effective
/// deadline is stored back with [`Deadline::tighten`], so handlers and downstream clients
/// see the remaining budget.
///
/// The default of [`AdaptiveTimeoutLayer`](crate::AdaptiveTimeoutLayer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDeadline {
    grpc_timeout: bool,
}

impl HttpDeadline {
    /// Reads extensions and the `grpc-timeout` header.
    pub const fn new() -> HttpDeadline {
        HttpDeadline { grpc_timeout: true }
    }

    /// Reads only the [`Deadline`] in extensions (skips the header lookup).
    pub const fn extensions_only() -> HttpDeadline {
        HttpDeadline {
            grpc_timeout: false,
        }
    }
}

impl Default for HttpDeadline {
    fn default() -> Self {
        HttpDeadline::new()
    }
}

impl<B> CallerDeadline<http::Request<B>> for HttpDeadline {
    fn caller_deadline(&self, req: &http::Request<B>, now: Instant) -> Option<Instant> {
        let from_extensions = Deadline::of(req.extensions()).map(Deadline::instant);
        let from_header = if self.grpc_timeout {
            req.headers()
                .get(&GRPC_TIMEOUT)
                .and_then(|value| parse_grpc_timeout(value.as_bytes()))
                // A timeout too large to represent is no deadline at all.
                .and_then(|timeout| now.checked_add(timeout))
        } else {
            None
        };
        match (from_extensions, from_header) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn propagate(&self, req: &mut http::Request<B>, deadline: Deadline) {
        deadline.tighten(req.extensions_mut());
    }
}
