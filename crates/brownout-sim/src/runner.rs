//! Drives one stack with a scenario's arrivals on a paused clock.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use brownout_core::{BoxError, Deadline, LoadSignal};
use brownout_test::{HttpJudge, Outcome as TestOutcome, Planned, Summary, Verdict};
use tokio::time::Instant;

use crate::report::{Builder, LimitSample, Outcome};
use crate::{Backend, Report, Scenario, SimRequest, SimResponse, Work, backend_for};

/// A service under test, with what the harness should watch besides its answers.
pub struct Instrumented<S> {
    /// The stack, ending in the [`Backend`] it was given.
    pub service: S,
    /// The load signal its monitor publishes, to record level changes.
    pub signal: Option<LoadSignal>,
    /// Reads its current concurrency limit; sampled every 100 ms.
    pub limit: Option<Box<dyn Fn() -> usize + Send>>,
    /// Anything that must live as long as the run (a `Monitor`, whose drop stops its ticks).
    pub keep_alive: Vec<Box<dyn std::any::Any + Send>>,
}

impl<S> Instrumented<S> {
    /// A service with nothing else to watch.
    pub fn new(service: S) -> Instrumented<S> {
        Instrumented {
            service,
            signal: None,
            limit: None,
            keep_alive: Vec::new(),
        }
    }

    /// Keeps `value` alive until the run ends.
    #[must_use]
    pub fn keep_alive(mut self, value: impl std::any::Any + Send) -> Instrumented<S> {
        self.keep_alive.push(Box::new(value));
        self
    }

    /// Records the level changes of `signal`.
    #[must_use]
    pub fn with_signal(mut self, signal: LoadSignal) -> Instrumented<S> {
        self.signal = Some(signal);
        self
    }

    /// Samples a concurrency limit every 100 ms.
    #[must_use]
    pub fn with_limit(mut self, limit: impl Fn() -> usize + Send + 'static) -> Instrumented<S> {
        self.limit = Some(Box::new(limit));
        self
    }
}

impl<S> fmt::Debug for Instrumented<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("signal", &self.signal)
            .field("limit", &self.limit.as_ref().map(|l| l()))
            .finish_non_exhaustive()
    }
}

/// Runs `scenario` through the stack `build` makes around the backend, on a fresh
/// current-thread runtime with a paused clock, and reports what happened.
///
/// Use this to compare a stack of your own with the built-in [`Stack`](crate::Stack)s.
///
/// # Panics
///
/// When called from inside a tokio runtime (use [`simulate`] there) or when the runtime
/// cannot be built.
///
/// ```
/// use std::time::Duration;
/// use brownout_sim::{Instrumented, Scenario, run_with};
///
/// let scenario = Scenario::load(0.5).with_duration(Duration::from_millis(500));
/// let report = run_with(&scenario, "bare backend", Instrumented::new);
/// assert!(report.class(brownout_core::Priority::Critical).success() > 0.99);
/// ```
pub fn run_with<S, F>(scenario: &Scenario, label: &str, build: F) -> Report
where
    F: FnOnce(Backend) -> Instrumented<S>,
    S: tower_service::Service<SimRequest, Response = SimResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime with a paused clock");
    runtime.block_on(simulate(scenario, label, build))
}

/// The async form of [`run_with`], for callers already on a current-thread runtime whose
/// clock is paused (`#[tokio::test(start_paused = true)]`). With a real clock it works but
/// takes the scenario's duration in real time.
///
/// The engine is `brownout_test`'s: the scenario's [`LoadDriver`](brownout_test::LoadDriver)
/// plans the arrivals and drives the stack (one task per request, dropped at its deadline),
/// [`HttpJudge`] judges the answers, and the backend is its
/// [`MockBackend`](brownout_test::MockBackend) ([`backend_for`](crate::backend_for)). This
/// function adds what the report needs: the service time of every arrival, the stack's
/// concurrency limit every 100 ms, and the scoring.
pub async fn simulate<S, F>(scenario: &Scenario, label: &str, build: F) -> Report
where
    F: FnOnce(Backend) -> Instrumented<S>,
    S: tower_service::Service<SimRequest, Response = SimResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let origin = Instant::now();
    let arrivals = scenario.arrivals();
    let backend = backend_for(scenario);
    let Instrumented {
        service,
        signal,
        limit,
        keep_alive,
    } = build(backend.clone());
    let end = origin + scenario.duration + scenario.deadline + Duration::from_millis(1);

    let limits = Arc::new(Mutex::new(Vec::new()));
    if let Some(limit) = limit {
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut at = origin;
            while at < end {
                lock(&limits).push(LimitSample {
                    at: at - origin,
                    limit: limit(),
                });
                at += Duration::from_millis(100);
                tokio::time::sleep_until(at).await;
            }
        });
    }

    let mut driver = scenario.driver().judge(HttpJudge);
    if let Some(signal) = signal {
        driver = driver.watch(signal);
    }
    let plan: Vec<Planned<Duration>> = arrivals
        .iter()
        .map(|a| Planned {
            at: Duration::from_millis(a.at_ms),
            priority: a.priority,
            data: Duration::from_millis(a.service_ms),
        })
        .collect();
    let summary = match driver.build() {
        Ok(driver) => {
            driver
                .run_plan(service, &plan, |arrival, &work| {
                    let mut req = SimRequest::new(());
                    req.extensions_mut().insert(arrival.priority);
                    req.extensions_mut().insert(Deadline::at(arrival.deadline));
                    req.extensions_mut().insert(Work(work));
                    req
                })
                .await
        }
        // `Scenario::driver` sanitizes the rate and mix; nothing to run otherwise.
        Err(_) => Summary::new(Vec::new(), Vec::new(), scenario.duration, scenario.deadline),
    };
    drop(keep_alive);

    let outcomes: Vec<Outcome> = summary
        .records()
        .iter()
        .zip(&plan)
        .map(|(record, planned)| match record.outcome {
            TestOutcome::Ok {
                latency,
                service_time,
            } => Outcome::Good {
                latency,
                worked: service_time.unwrap_or(planned.data),
            },
            TestOutcome::Rejected { reason, .. } => Outcome::Refused(reason.as_str()),
            TestOutcome::Overloaded { .. } => Outcome::Refused("overloaded"),
            TestOutcome::Failed { .. } => Outcome::Refused("error"),
            TestOutcome::Panicked => Outcome::Refused("panic"),
            TestOutcome::TimedOut => Outcome::GaveUp,
            _ => Outcome::Pending,
        })
        .collect();
    let limits = lock(&limits).clone();
    Builder {
        scenario,
        stack: label.to_owned(),
        arrivals: &arrivals,
        outcomes: &outcomes,
        levels: summary.levels().to_vec(),
        limits,
        backend: backend.stats().into(),
        reference: crate::reference::reference(scenario, &arrivals),
    }
    .build()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The name of why a request failed: a brownout [`Rejected`](brownout_core::Rejected)
/// reason, tower's `overloaded`, or `error` ([`Verdict::of_error`]).
pub fn reason_of(err: &BoxError) -> &'static str {
    match Verdict::of_error(err) {
        Verdict::Rejected(reason) => reason.as_str(),
        Verdict::Overloaded => "overloaded",
        _ => "error",
    }
}
