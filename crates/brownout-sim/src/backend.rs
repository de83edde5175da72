//! The simulated server: `brownout_test`'s [`MockBackend`] (its `http` flavour), with the
//! scenario's workers and slowdown.

use std::time::Duration;

use brownout_test::{Latency, MockBackend, Phase};

use crate::Scenario;

pub use brownout_test::{HttpBackend as Backend, Served, Work};

/// The request every simulated stack serves: an `http::Request` whose extensions hold the
/// [`Priority`](brownout_core::Priority), the client's
/// [`Deadline`](brownout_core::Deadline) and the [`Work`] it needs.
pub type SimRequest = http::Request<()>;

/// The response of the mock backend; its [`Served`] extension says how long the request
/// occupied its worker.
pub type SimResponse = http::Response<String>;

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

impl From<brownout_test::BackendStats> for BackendStats {
    fn from(stats: brownout_test::BackendStats) -> BackendStats {
        BackendStats {
            calls: stats.calls,
            wasted: stats.late,
            max_backend_wait: stats.max_wait,
        }
    }
}

/// The backend of `scenario`: a [`MockBackend`] of `workers` workers behind a FIFO queue,
/// like a thread pool behind an always-ready router, whose clock starts now.
///
/// A request that reaches it is committed: it waits for the first free worker and holds it
/// for its [`Work`] (× the scenario's slowdown factor at the moment it starts), even if the
/// caller drops the response future. Dropping only stops the caller from waiting. This is
/// what makes an unprotected server collapse: it keeps serving requests nobody waits for.
/// The slowdown is a script of two [`Phase`]s (factor at its start, 1 at its end). A request
/// without a [`Work`] extension draws its service time from the scenario's distribution.
///
/// `poll_ready` is always ready; all clones share the same workers.
pub fn backend_for(scenario: &Scenario) -> Backend {
    let mut builder = MockBackend::builder()
        .workers(scenario.workers.max(1))
        .latency(scenario.service_dist.latency(scenario.service))
        .seed(scenario.seed);
    if let Some(slowdown) = scenario.slowdown {
        builder = builder
            .phase(Phase::at(slowdown.start).latency_factor(slowdown.factor))
            .phase(Phase::at(slowdown.end).latency_factor(1.0));
    }
    builder
        .build()
        .unwrap_or_else(|_| {
            // Only an invalid slowdown factor gets here (NaN, ≤ 0): run without it.
            MockBackend::builder()
                .workers(scenario.workers.max(1))
                .latency(Latency::Fixed(scenario.service))
                .build()
                .expect("workers ≥ 1 and a fixed latency are always valid")
        })
        .http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;
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
        let backend = backend_for(&scenario);
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
        let stats = BackendStats::from(backend.stats());
        assert_eq!(stats.calls, 3);
        assert_eq!(stats.max_backend_wait, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn slowdown_applies_to_work_starting_inside_it() {
        let scenario = Scenario::slowdown(1.0).with_duration(Duration::from_secs(3));
        let origin = Instant::now();
        let backend = backend_for(&scenario);
        backend.clone().oneshot(req(10)).await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_millis(10));
        tokio::time::sleep_until(origin + Duration::from_secs(1)).await;
        backend.clone().oneshot(req(10)).await.unwrap();
        assert_eq!(origin.elapsed(), Duration::from_millis(1030));
    }
}
