//! A service that is either wrapped by a layer or not, with both paths' errors boxed.
//!
//! tower 0.5's `util::Either` requires both sides to have the same error type; brownout's
//! layers box theirs while the bypassed service may keep its own, so the stack and the
//! runtime toggle use this instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use brownout_core::BoxError;
use pin_project_lite::pin_project;
use tower_service::Service;

/// A service going through a layer (`Layered`) or around it (`Bypassed`).
#[derive(Clone, Debug)]
pub enum Optional<L, S> {
    /// The layer's service.
    Layered(L),
    /// The bare inner service.
    Bypassed(S),
}

impl<L, S, Req> Service<Req> for Optional<L, S>
where
    L: Service<Req>,
    S: Service<Req, Response = L::Response>,
    L::Error: Into<BoxError>,
    S::Error: Into<BoxError>,
{
    type Response = L::Response;
    type Error = BoxError;
    type Future = OptionalFuture<L::Future, S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Optional::Layered(svc) => svc.poll_ready(cx).map_err(Into::into),
            Optional::Bypassed(svc) => svc.poll_ready(cx).map_err(Into::into),
        }
    }

    // Out of line, so that a layer calling an `Optional` (LoadShed over the optional
    // admission) sees one call writing one future:
    // inlined, the two arms below wrote into a temporary from two blocks, which LLVM cannot
    // build in place, and the layer copied it into its own future (488 bytes in LoadShed).
    #[inline(never)]
    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Optional::Layered(svc) => OptionalFuture::layered(call_out_of_line(svc, req)),
            Optional::Bypassed(svc) => OptionalFuture::bypassed(call_out_of_line(svc, req)),
        }
    }
}

/// The wrapped service's `call`, kept out of line. Inlined, the layer's own `call` writes
/// its future into a temporary on one of several paths that LLVM cannot merge, and it is
/// copied into ours (hundreds of bytes per layer per request); called, it writes straight
/// into the `OptionalFuture` (see "Facade http and gRPC stacks" in
/// docs/benchmarks/brownout.md).
#[inline(never)]
pub(crate) fn call_out_of_line<S: Service<Req>, Req>(svc: &mut S, req: Req) -> S::Future {
    svc.call(req)
}

pin_project! {
    /// The response future of [`Optional`] (and of [`Toggle`](crate::Toggle)).
    #[derive(Debug)]
    pub struct OptionalFuture<A, B> {
        #[pin]
        path: Path<A, B>,
    }
}

pin_project! {
    #[project = PathProj]
    #[derive(Debug)]
    enum Path<A, B> {
        Layered { #[pin] future: A },
        Bypassed { #[pin] future: B },
    }
}

impl<A, B> OptionalFuture<A, B> {
    pub(crate) fn layered(future: A) -> Self {
        OptionalFuture {
            path: Path::Layered { future },
        }
    }

    pub(crate) fn bypassed(future: B) -> Self {
        OptionalFuture {
            path: Path::Bypassed { future },
        }
    }
}

impl<A, B, R, EA, EB> Future for OptionalFuture<A, B>
where
    A: Future<Output = Result<R, EA>>,
    B: Future<Output = Result<R, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().path.project() {
            PathProj::Layered { future } => future.poll(cx).map_err(Into::into),
            PathProj::Bypassed { future } => future.poll(cx).map_err(Into::into),
        }
    }
}
