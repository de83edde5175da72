//! Drives one stack with a scenario's arrivals on a paused clock.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use brownout_core::{BoxError, Deadline, LoadSignal, Rejected};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::report::{Builder, LevelChange, LimitSample, Outcome};
use crate::{Backend, Report, Scenario, SimRequest, SimResponse, Work, Worked};

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
pub async fn simulate<S, F>(scenario: &Scenario, label: &str, build: F) -> Report
where
    F: FnOnce(Backend) -> Instrumented<S>,
    S: tower_service::Service<SimRequest, Response = SimResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let origin = Instant::now();
    let arrivals = scenario.arrivals();
    let backend = Backend::new(scenario, origin);
    let Instrumented {
        service,
        signal,
        limit,
        keep_alive,
    } = build(backend.clone());
    let end = origin + scenario.duration + scenario.deadline + Duration::from_millis(1);

    let levels = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut signal) = signal {
        let levels = levels.clone();
        tokio::spawn(async move {
            while let Some(level) = signal.changed().await {
                lock(&levels).push(LevelChange {
                    at: origin.elapsed(),
                    level,
                });
            }
        });
    }
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

    let outcomes = Arc::new(Mutex::new(vec![Outcome::Pending; arrivals.len()]));
    for (index, arrival) in arrivals.iter().enumerate() {
        let at = origin + Duration::from_millis(arrival.at_ms);
        if Instant::now() < at {
            tokio::time::sleep_until(at).await;
        }
        let deadline = at + scenario.deadline;
        let mut req = SimRequest::new(());
        req.extensions_mut().insert(arrival.priority);
        req.extensions_mut().insert(Deadline::at(deadline));
        req.extensions_mut()
            .insert(Work(Duration::from_millis(arrival.service_ms)));
        let work = Duration::from_millis(arrival.service_ms);
        let mut svc = service.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let answer = tokio::time::timeout_at(deadline, async {
                svc.ready().await.map_err(Into::into)?;
                svc.call(req).await.map_err(Into::into)
            })
            .await;
            let outcome = match answer {
                Ok(Ok(response)) => Outcome::Good {
                    latency: at.elapsed(),
                    worked: response.extensions().get::<Worked>().map_or(work, |w| w.0),
                },
                Ok(Err(err)) => Outcome::Refused(reason_of(&err)),
                Err(_) => Outcome::GaveUp,
            };
            lock(&outcomes)[index] = outcome;
        });
    }
    // Every request ends by its deadline.
    tokio::time::sleep_until(end).await;
    drop(service);
    drop(keep_alive);

    let outcomes = lock(&outcomes).clone();
    let levels = lock(&levels).clone();
    let limits = lock(&limits).clone();
    Builder {
        scenario,
        stack: label.to_owned(),
        arrivals: &arrivals,
        outcomes: &outcomes,
        levels,
        limits,
        backend: backend.stats(),
    }
    .build()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The name of why a request failed: a brownout [`Rejected`] reason, tower's `overloaded`,
/// or `error`.
pub fn reason_of(err: &BoxError) -> &'static str {
    if let Some(rejected) = Rejected::find_in_box(&**err) {
        rejected.reason().as_str()
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        "overloaded"
    } else {
        "error"
    }
}
