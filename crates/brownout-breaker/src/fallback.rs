//! What to answer while a breaker refuses a call: a [`Rejected`] error (the default), a
//! static response, the last good response for the key, or a secondary service.

use std::fmt;
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use brownout_core::{BoxError, Rejected};
use pin_project_lite::pin_project;
use tower_service::Service;

/// Names the per-breaker memory of a fallback (independent of the request type).
pub trait FallbackKind {
    /// Kept per breaker (per key); `()` for fallbacks that remember nothing.
    type Memo: Default + Send + Sync + 'static;
}

/// Remembers successful responses for a fallback (e.g. [`LastGood`]).
pub trait Remember<Res> {
    /// Called with every response classified as a success.
    fn remember(&self, response: &Res);
}

impl<Res> Remember<Res> for () {
    #[inline]
    fn remember(&self, _: &Res) {}
}

/// Answers a request the breaker refused.
pub trait Fallback<Req, Res>: FallbackKind {
    /// The fallback's response future.
    type Future: Future<Output = Result<Res, BoxError>>;

    /// Answers `req`, refused as `rejected`, using the breaker's memory `memo`.
    fn fallback(&mut self, memo: &Self::Memo, req: Req, rejected: Rejected) -> Self::Future;
}

/// No fallback: a refused call fails with the [`Rejected`] error (reason `CircuitOpen`,
/// `retry_after` = time until half-open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoFallback;

impl FallbackKind for NoFallback {
    type Memo = ();
}

impl<Req, Res> Fallback<Req, Res> for NoFallback {
    type Future = Ready<Result<Res, BoxError>>;

    #[inline]
    fn fallback(&mut self, _: &(), _: Req, rejected: Rejected) -> Self::Future {
        ready(Err(Box::new(rejected)))
    }
}

/// Answers refused calls with a response built by a closure `Fn(Req, &Rejected) -> Res`
/// (e.g. a cached page, an empty result, a 503 with `Retry-After`).
#[derive(Clone, Copy)]
pub struct StaticFallback<F> {
    f: F,
}

impl<F> StaticFallback<F> {
    /// Answers with `f(request, &rejected)`.
    pub const fn new(f: F) -> StaticFallback<F> {
        StaticFallback { f }
    }
}

impl<F> fmt::Debug for StaticFallback<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticFallback").finish_non_exhaustive()
    }
}

impl<F> FallbackKind for StaticFallback<F> {
    type Memo = ();
}

impl<F, Req, Res> Fallback<Req, Res> for StaticFallback<F>
where
    F: Fn(Req, &Rejected) -> Res,
{
    type Future = Ready<Result<Res, BoxError>>;

    fn fallback(&mut self, _: &(), req: Req, rejected: Rejected) -> Self::Future {
        ready(Ok((self.f)(req, &rejected)))
    }
}

/// Answers refused calls with a clone of the last successful response of the same breaker
/// (per key); fails with [`Rejected`] when there has been none. Opt-in: every success
/// stores a clone under a short lock.
pub struct LastGood<Res> {
    _res: PhantomData<fn() -> Res>,
}

impl<Res> LastGood<Res> {
    /// A last-good-response fallback.
    pub const fn new() -> LastGood<Res> {
        LastGood { _res: PhantomData }
    }
}

impl<Res> Default for LastGood<Res> {
    fn default() -> Self {
        LastGood::new()
    }
}

impl<Res> Clone for LastGood<Res> {
    fn clone(&self) -> Self {
        LastGood::new()
    }
}

impl<Res> fmt::Debug for LastGood<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGood").finish()
    }
}

/// The memory of [`LastGood`]: the last successful response.
pub struct LastGoodMemo<Res> {
    last: Mutex<Option<Res>>,
}

impl<Res> Default for LastGoodMemo<Res> {
    fn default() -> Self {
        LastGoodMemo {
            last: Mutex::new(None),
        }
    }
}

impl<Res> fmt::Debug for LastGoodMemo<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGoodMemo").finish_non_exhaustive()
    }
}

impl<Res: Clone> Remember<Res> for LastGoodMemo<Res> {
    fn remember(&self, response: &Res) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(response.clone());
    }
}

impl<Res: Clone> LastGoodMemo<Res> {
    fn recall(&self) -> Option<Res> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<Res: Send + 'static> FallbackKind for LastGood<Res> {
    type Memo = LastGoodMemo<Res>;
}

impl<Req, Res: Clone + Send + 'static> Fallback<Req, Res> for LastGood<Res> {
    type Future = Ready<Result<Res, BoxError>>;

    fn fallback(&mut self, memo: &LastGoodMemo<Res>, _: Req, rejected: Rejected) -> Self::Future {
        ready(memo.recall().ok_or_else(|| BoxError::from(rejected)))
    }
}

/// Failover: while the primary's breaker refuses calls (for the whole open duration), they
/// go to a secondary service instead (`S2: Clone`; each refused call drives its own clone
/// to readiness, like tower's `Oneshot`).
///
/// `poll_ready` of the breaker still forwards to the primary (the call may be let through
/// at any moment, e.g. as a probe), so a primary that never becomes ready blocks the
/// failover too; put a `tower::load_shed` or a timeout under the breaker for such clients.
#[derive(Clone, Debug)]
pub struct Failover<S2> {
    secondary: S2,
}

impl<S2> Failover<S2> {
    /// Sends refused calls to `secondary`.
    pub const fn new(secondary: S2) -> Failover<S2> {
        Failover { secondary }
    }

    /// The secondary service.
    pub fn secondary(&self) -> &S2 {
        &self.secondary
    }
}

impl<S2> FallbackKind for Failover<S2> {
    type Memo = ();
}

impl<S2, Req> Fallback<Req, S2::Response> for Failover<S2>
where
    S2: Service<Req> + Clone,
    S2::Error: Into<BoxError>,
{
    type Future = FailoverFuture<S2, Req>;

    fn fallback(&mut self, _: &(), req: Req, _: Rejected) -> Self::Future {
        FailoverFuture {
            state: FailoverState::NotReady {
                svc: self.secondary.clone(),
                req: Some(req),
            },
        }
    }
}

pin_project! {
    /// Drives a clone of the secondary service to readiness, then calls it.
    pub struct FailoverFuture<S2, Req>
    where
        S2: Service<Req>,
    {
        #[pin]
        state: FailoverState<S2, Req>,
    }
}

pin_project! {
    #[project = FailoverProj]
    enum FailoverState<S2, Req>
    where
        S2: Service<Req>,
    {
        NotReady { svc: S2, req: Option<Req> },
        Called { #[pin] fut: S2::Future },
    }
}

impl<S2, Req> fmt::Debug for FailoverFuture<S2, Req>
where
    S2: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverFuture").finish_non_exhaustive()
    }
}

impl<S2, Req> Future for FailoverFuture<S2, Req>
where
    S2: Service<Req>,
    S2::Error: Into<BoxError>,
{
    type Output = Result<S2::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                FailoverProj::NotReady { svc, req } => {
                    ready!(svc.poll_ready(cx)).map_err(Into::into)?;
                    let Some(req) = req.take() else {
                        return Poll::Ready(Err("failover future polled after completion".into()));
                    };
                    let fut = svc.call(req);
                    state.set(FailoverState::Called { fut });
                }
                FailoverProj::Called { fut } => return fut.poll(cx).map_err(Into::into),
            }
        }
    }
}
