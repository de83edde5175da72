//! The mock backend: `N` workers serving a FIFO queue, work that cannot be cancelled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::{BoxError, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::Scenario;

/// The request every simulated stack serves: an `http::Request` whose extensions hold the
/// [`Priority`](brownout_core::Priority), the client's [`Deadline`] and the [`Work`] it needs.
pub type SimRequest = http::Request<()>;

/// The response of the mock backend.
pub type SimResponse = http::Response<()>;

/// How long a request occupies a backend worker at normal speed (request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work(pub Duration);

/// How long the request actually occupied its worker, slowdown included (response extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worked(pub Duration);

#[derive(Debug)]
struct State {
    /// When each worker is next free, earliest first.
    free_at: BinaryHeap<Reverse<Instant>>,
    origin: Instant,
    scenario_slowdown: Option<crate::Slowdown>,
    calls: u64,
    /// Work that finished after its caller's deadline: the caller had already given up.
    wasted: u64,
    /// The longest time a request waited for a worker inside the backend.
    max_backend_wait: Duration,
}

/// What the backend saw during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendStats {
    /// Requests that reached the backend (each occupied a worker until done).
    pub calls: u64,
    /// Of those, how many finished after their caller's deadline: wasted work.
    pub wasted: u64,
    /// The longest wait for a free worker inside the backend (its own FIFO queue).
    pub max_backend_wait: Duration,
}

/// A mock server with `workers` workers and a FIFO queue in front of them, like a thread
/// pool behind an always-ready router.
///
/// A request that reaches it is committed: it waits for the first free worker and holds it
/// for its [`Work`] (× the scenario's slowdown factor at the moment it starts), even if the
/// caller drops the response future. Dropping only stops the caller from waiting. This is
/// what makes an unprotected server collapse: it keeps serving requests nobody waits for.
///
/// `poll_ready` is always ready; all clones share the same workers.
#[derive(Debug, Clone)]
pub struct Backend {
    state: Arc<Mutex<State>>,
}

impl Backend {
    /// A backend for `scenario`, whose clock starts at `origin`.
    pub fn new(scenario: &Scenario, origin: Instant) -> Backend {
        let free_at = (0..scenario.workers.max(1))
            .map(|_| Reverse(origin))
            .collect();
        Backend {
            state: Arc::new(Mutex::new(State {
                free_at,
                origin,
                scenario_slowdown: scenario.slowdown,
                calls: 0,
                wasted: 0,
                max_backend_wait: Duration::ZERO,
            })),
        }
    }

    /// What the backend saw so far.
    pub fn stats(&self) -> BackendStats {
        let state = self.lock();
        BackendStats {
            calls: state.calls,
            wasted: state.wasted,
            max_backend_wait: state.max_backend_wait,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits `work` to the first free worker; returns when it will be done and how long
    /// it occupies the worker.
    fn schedule(&self, work: Duration, deadline: Option<Deadline>) -> (Instant, Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        let Reverse(free) = state.free_at.pop().unwrap_or(Reverse(now));
        let start = free.max(now);
        let factor = match state.scenario_slowdown {
            Some(s) => {
                let t = start - state.origin;
                if t >= s.start && t < s.end {
                    s.factor
                } else {
                    1.0
                }
            }
            None => 1.0,
        };
        let worked = brownout_core::config::duration::mul_f64_saturating(work, factor);
        let done = start + worked;
        state.free_at.push(Reverse(done));
        state.calls += 1;
        if deadline.is_some_and(|d| done > d.instant()) {
            state.wasted += 1;
        }
        state.max_backend_wait = state.max_backend_wait.max(start - now);
        (done, worked)
    }
}

impl tower_service::Service<SimRequest> for Backend {
    type Response = SimResponse;
    type Error = BoxError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: SimRequest) -> Self::Future {
        let work = req
            .extensions()
            .get::<Work>()
            .map_or(Duration::from_millis(1), |w| w.0);
        let (done, worked) = self.schedule(work, Deadline::of(req.extensions()));
        BackendFuture {
            sleep: tokio::time::sleep_until(done),
            worked,
        }
    }
}

pin_project! {
    /// The response future of [`Backend`]: resolves when the worker finishes.
    /// Dropping it does not free the worker.
    #[derive(Debug)]
    pub struct BackendFuture {
        #[pin]
        sleep: Sleep,
        worked: Duration,
    }
}

impl Future for BackendFuture {
    type Output = Result<SimResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                let mut response = SimResponse::new(());
                response.extensions_mut().insert(Worked(*this.worked));
                Poll::Ready(Ok(response))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;
    use tower_service::Service;

    fn req(ms: u64) -> SimRequest {
        let mut r = SimRequest::new(());
        r.extensions_mut().insert(Work(Duration::from_millis(ms)));
        r
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_workers_and_uncancellable_work() {
        let scenario = Scenario::default().with_workers(2);
        let origin = Instant::now();
        let backend = Backend::new(&scenario, origin);
        // Three 10 ms jobs on two workers: the third waits for the first free worker.
        let mut svc = backend.clone();
        let a = svc.call(req(10));
        let b = svc.call(req(10));
        drop(b); // the caller gives up; the worker stays busy anyway
        let c = svc.call(req(10));
        a.await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_millis(10));
        c.await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_millis(20));
        let stats = backend.stats();
        assert_eq!(stats.calls, 3);
        assert_eq!(stats.max_backend_wait, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn slowdown_applies_to_work_starting_inside_it() {
        let scenario = Scenario::slowdown(1.0).with_duration(Duration::from_secs(3));
        let origin = Instant::now();
        let backend = Backend::new(&scenario, origin);
        backend.clone().oneshot(req(10)).await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_millis(10));
        tokio::time::sleep_until(origin + Duration::from_secs(1)).await;
        backend.clone().oneshot(req(10)).await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_millis(1030));
    }
}
