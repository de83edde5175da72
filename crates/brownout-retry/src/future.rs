//! The response future of [`Retry`](crate::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brownout_core::Deadline;
use pin_project_lite::pin_project;
use rand::rngs::SmallRng;
use tokio::time::Sleep;
use tower_service::Service;

use crate::budget::BudgetToken;
use crate::classify::RetryClassifier;
use crate::request::CloneRequest;
use crate::shared::{Attempt, NoCopy, Shared};

pin_project! {
    /// The future of one request through [`Retry`](crate::Retry): an attempt, a back-off,
    /// the next attempt, … until an outcome is returned.
    ///
    /// What only a retried request needs (the back-off timer, the jitter generator, the
    /// budget token, the attempt count) is allocated at its first retry, once, and reused by
    /// the next ones: a request answered at the first attempt carries none of it (the future
    /// is smaller, and so is every future that wraps it).
    ///
    /// # Cancel safety
    ///
    /// Dropping it at any point drops the attempt in flight and, during a back-off, gives
    /// the withdrawn retry back to the budget (the retry was never made).
    pub struct ResponseFuture<S, Req, K, C, I>
    where
        S: Service<Req>,
    {
        // The attempt in flight; `None` between attempts.
        #[pin]
        attempt: Option<S::Future>,
        service: S,
        copy: Option<Req>,
        no_copy: NoCopy,
        shared: Arc<Shared<K, C, I>>,
        deadline: Option<Deadline>,
        retrying: Option<Pin<Box<Retrying>>>,
    }
}

pin_project! {
    /// The state of a request after its first retry was scheduled.
    struct Retrying {
        #[pin]
        sleep: Sleep,
        // Sleeping until the next attempt (else: waiting for the service to be ready).
        backing_off: bool,
        retries: u32,
        previous: Duration,
        rng: Option<SmallRng>,
        token: Option<BudgetToken>,
    }
}

impl<S, Req, K, C, I> ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
{
    #[inline(always)]
    pub(crate) fn new(
        future: S::Future,
        service: S,
        copy: Result<Req, NoCopy>,
        deadline: Option<Deadline>,
        shared: Arc<Shared<K, C, I>>,
    ) -> Self {
        let (copy, no_copy) = match copy {
            Ok(req) => (Some(req), NoCopy::Held),
            Err(why) => (None, why),
        };
        ResponseFuture {
            attempt: Some(future),
            service,
            copy,
            no_copy,
            shared,
            deadline,
            retrying: None,
        }
    }
}

impl<S, Req, K, C, I> Future for ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
    K: RetryClassifier<S::Response, S::Error>,
    C: CloneRequest<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            if let Some(future) = this.attempt.as_mut().as_pin_mut() {
                let result = ready!(future.poll(cx));
                let mut first_rng = None;
                let (retries, previous, rng) = match this.retrying.as_mut() {
                    None => (0, Duration::ZERO, &mut first_rng),
                    Some(retrying) => {
                        let r = retrying.as_mut().project();
                        (*r.retries, *r.previous, r.rng)
                    }
                };
                let attempt = Attempt {
                    retries,
                    copy: *this.no_copy,
                    deadline: *this.deadline,
                    previous,
                    rng,
                };
                let Some(scheduled) = this.shared.decide(&result, attempt) else {
                    return Poll::Ready(result);
                };
                // The finished attempt goes now, not at the end of the back-off.
                this.attempt.set(None);
                match this.retrying.as_mut() {
                    None => {
                        *this.retrying = Some(Box::pin(Retrying {
                            sleep: tokio::time::sleep(scheduled.delay),
                            backing_off: true,
                            retries: 1,
                            previous: scheduled.delay,
                            rng: first_rng,
                            token: scheduled.token,
                        }));
                    }
                    Some(retrying) => {
                        let r = retrying.as_mut().project();
                        *r.retries += 1;
                        *r.previous = scheduled.delay;
                        *r.token = scheduled.token;
                        *r.backing_off = true;
                        r.sleep.reset(tokio::time::Instant::now() + scheduled.delay);
                    }
                }
                continue;
            }
            let Some(retrying) = this.retrying.as_mut() else {
                unreachable!("between attempts only after a retry was scheduled")
            };
            let r = retrying.as_mut().project();
            if *r.backing_off {
                ready!(r.sleep.poll(cx));
                *r.backing_off = false;
            }
            if let Err(e) = ready!(this.service.poll_ready(cx)) {
                // The retry is not made: its budget goes back with the token.
                *r.token = None;
                return Poll::Ready(Err(e));
            }
            let Some(request) = this.copy.take() else {
                unreachable!("a retry is scheduled only while a request copy is held")
            };
            if *r.retries + 1 < this.shared.config.max_attempts {
                match this.shared.cloner.clone_request(&request) {
                    Some(copy) => *this.copy = Some(copy),
                    None => *this.no_copy = NoCopy::NotCloneable,
                }
            } else {
                *this.no_copy = NoCopy::LastAttempt;
            }
            if let Some(token) = r.token.take() {
                token.spend();
            }
            let future = this.service.call(request);
            this.attempt.set(Some(future));
        }
    }
}

impl<S, Req, K, C, I> fmt::Debug for ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let retrying = self.retrying.as_ref();
        let state = match (&self.attempt, retrying) {
            (Some(_), _) => "calling",
            (None, Some(r)) if r.backing_off => "backoff",
            (None, _) => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("retries", &retrying.map_or(0, |r| r.retries))
            .finish_non_exhaustive()
    }
}
