//! The response future of [`Hedge`](super::Hedge).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brownout_core::{RejectReason, Rejected};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::shared::HedgeShared;
use crate::classify::{RetryClassifier, RetryDecision};

pin_project! {
    /// The future of [`Hedge`]: the first attempt, maybe a hedge, the first success wins.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops both attempts.
    pub struct ResponseFuture<S, Req, K, C, I>
    where
        S: Service<Req>,
    {
        #[pin]
        primary: Option<S::Future>,
        #[pin]
        hedge: Option<S::Future>,
        #[pin]
        sleep: Option<Sleep>,
        // The hedge delay, turned into `sleep` only once the primary is pending (a primary
        // that answers at once costs no timer).
        delay: Option<Duration>,
        service: S,
        copy: Option<Req>,
        start: Instant,
        hedge_start: Option<Instant>,
        shared: Arc<HedgeShared<K, C, I>>,
    }
}

impl<S, Req, K, C, I> ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
{
    pub(super) fn new(
        primary: S::Future,
        delay: Option<Duration>,
        service: S,
        copy: Option<Req>,
        shared: Arc<HedgeShared<K, C, I>>,
    ) -> Self {
        ResponseFuture {
            primary: Some(primary),
            hedge: None,
            sleep: None,
            delay,
            service,
            copy,
            start: Instant::now(),
            hedge_start: None,
            shared,
        }
    }
}

impl<S, Req, K, C, I> Future for ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
    K: RetryClassifier<S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;

        if let Some(future) = this.primary.as_mut().as_pin_mut()
            && let Poll::Ready(result) = future.poll(cx)
        {
            this.primary.set(None);
            let success = shared.classifier.classify(&result) == RetryDecision::Success;
            if success {
                shared.record(this.start.elapsed());
            }
            // A success wins; a failure wins only when no hedge runs (the hedge may succeed).
            if success || this.hedge.is_none() {
                return Poll::Ready(result);
            }
            // The primary failed while the hedge runs: do not hedge again, wait for it.
            this.sleep.set(None);
            *this.delay = None;
        }

        if let Some(future) = this.hedge.as_mut().as_pin_mut()
            && let Poll::Ready(result) = future.poll(cx)
        {
            this.hedge.set(None);
            let success = shared.classifier.classify(&result) == RetryDecision::Success;
            if success {
                shared.hedge_wins.fetch_add(1, Ordering::Relaxed);
                if let Some(started) = this.hedge_start {
                    shared.record(started.elapsed());
                }
            }
            if success || this.primary.is_none() {
                return Poll::Ready(result);
            }
        }

        if let Some(delay) = this.delay.take()
            && this.primary.is_some()
        {
            // A delay too large to represent means "never hedge".
            if let Some(at) = this.start.checked_add(delay) {
                this.sleep.set(Some(tokio::time::sleep_until(at)));
            }
        }

        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
            let level = shared.config.signal.level();
            if level >= shared.config.suppress_at {
                shared
                    .metrics
                    .rejected(&Rejected::new(RejectReason::Shed, level));
                this.sleep.set(None);
                *this.copy = None;
                return Poll::Pending;
            }
            // Readiness before withdrawing, so a pending inner service holds no budget.
            match this.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    // The hedge cannot be sent; the primary attempt decides.
                    this.sleep.set(None);
                    *this.copy = None;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {}
            }
            this.sleep.set(None);
            let token = match &shared.config.budget {
                None => None,
                Some(budget) => match budget.try_withdraw() {
                    Some(token) => Some(token),
                    None => {
                        shared
                            .metrics
                            .rejected(&Rejected::new(RejectReason::BudgetExhausted, level));
                        *this.copy = None;
                        return Poll::Pending;
                    }
                },
            };
            if let Some(request) = this.copy.take() {
                if let Some(token) = token {
                    token.spend();
                }
                shared.hedges.fetch_add(1, Ordering::Relaxed);
                shared.metrics.admitted(None, level);
                *this.hedge_start = Some(Instant::now());
                this.hedge.set(Some(this.service.call(request)));
                // Poll the new attempt once so it registers its wake-up.
                if let Some(future) = this.hedge.as_mut().as_pin_mut()
                    && let Poll::Ready(result) = future.poll(cx)
                {
                    this.hedge.set(None);
                    let success = shared.classifier.classify(&result) == RetryDecision::Success;
                    if success {
                        shared.hedge_wins.fetch_add(1, Ordering::Relaxed);
                        return Poll::Ready(result);
                    }
                }
            }
        }
        Poll::Pending
    }
}

impl<S, Req, K, C, I> fmt::Debug for ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("primary", &self.primary.is_some())
            .field("hedge", &self.hedge.is_some())
            .finish_non_exhaustive()
    }
}
