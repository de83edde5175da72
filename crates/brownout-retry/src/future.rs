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
    /// # Cancel safety
    ///
    /// Dropping it at any point drops the attempt in flight and, during a back-off, gives
    /// the withdrawn retry back to the budget (the retry was never made).
    pub struct ResponseFuture<S, Req, K, C, I>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        copy: Option<Req>,
        no_copy: NoCopy,
        shared: Arc<Shared<K, C, I>>,
        deadline: Option<Deadline>,
        retries: u32,
        previous: Duration,
        rng: Option<SmallRng>,
        token: Option<BudgetToken>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Backoff { #[pin] sleep: Sleep },
        Ready,
    }
}

impl<S, Req, K, C, I> ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
{
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
            state: State::Calling { future },
            service,
            copy,
            no_copy,
            shared,
            deadline,
            retries: 0,
            previous: Duration::ZERO,
            rng: None,
            token: None,
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
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let attempt = Attempt {
                        retries: *this.retries,
                        copy: *this.no_copy,
                        deadline: *this.deadline,
                        previous: *this.previous,
                        rng: this.rng,
                    };
                    match this.shared.decide(&result, attempt) {
                        None => return Poll::Ready(result),
                        Some(scheduled) => {
                            *this.retries += 1;
                            *this.previous = scheduled.delay;
                            *this.token = scheduled.token;
                            this.state.set(State::Backoff {
                                sleep: tokio::time::sleep(scheduled.delay),
                            });
                        }
                    }
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        // The retry is not made: its budget goes back with the token.
                        *this.token = None;
                        return Poll::Ready(Err(e));
                    }
                    let Some(request) = this.copy.take() else {
                        unreachable!("a retry is scheduled only while a request copy is held")
                    };
                    if *this.retries + 1 < this.shared.config.max_attempts {
                        match this.shared.cloner.clone_request(&request) {
                            Some(copy) => *this.copy = Some(copy),
                            None => *this.no_copy = NoCopy::NotCloneable,
                        }
                    } else {
                        *this.no_copy = NoCopy::LastAttempt;
                    }
                    if let Some(token) = this.token.take() {
                        token.spend();
                    }
                    let future = this.service.call(request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

impl<S, Req, K, C, I> fmt::Debug for ResponseFuture<S, Req, K, C, I>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Backoff { .. } => "backoff",
            State::Ready => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}
