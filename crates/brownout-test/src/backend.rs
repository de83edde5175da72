//! [`MockBackend`]: a scriptable server with `N` workers, a FIFO queue, a latency
//! distribution and injected failures, hangs and panics.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::config::check;
use brownout_core::config::duration::mul_f64_saturating;
use brownout_core::{BoxError, ConfigError, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::draw::{Draw, Latency};

/// How long a request occupies a worker at normal speed, overriding the backend's latency
/// distribution (an `http::Request` extension read by the [`HttpBackend`] flavour).
///
/// Lets a caller draw service times itself, e.g. from the same random stream as its
/// arrivals (the `brownout-sim` harness does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work(pub Duration);

/// What the backend did for one request: the response of the generic flavour, and an
/// extension of every response of the [`HttpBackend`] flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// How long it waited for a free worker.
    pub queued: Duration,
    /// How long it occupied its worker (latency factor included).
    pub service_time: Duration,
}

/// The error of a request the backend failed on purpose (its failure rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockFailure;

impl fmt::Display for MockFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock backend failure")
    }
}

impl std::error::Error for MockFailure {}

/// A change of the backend's behaviour at a moment of its script (see
/// [`MockBackendBuilder::phase`]). Each setting stays in force until a later phase changes it.
///
/// ```
/// use std::time::Duration;
/// use brownout_test::Phase;
///
/// // From t = 5 s the backend is three times slower and fails 10 % of requests.
/// let phase = Phase::at(Duration::from_secs(5)).latency_factor(3.0).failure_rate(0.1);
/// assert_eq!(phase.start(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Phase {
    at: Duration,
    settings: Settings,
}

/// Optional settings: `None` leaves the value in force.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Settings {
    latency_factor: Option<f64>,
    failure_rate: Option<f64>,
    hang_rate: Option<f64>,
    panic_rate: Option<f64>,
}

impl Settings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(f) = self.latency_factor {
            check::positive(&format!("{prefix}latency_factor"), f)?;
        }
        for (name, rate) in [
            ("failure_rate", self.failure_rate),
            ("hang_rate", self.hang_rate),
            ("panic_rate", self.panic_rate),
        ] {
            if let Some(p) = rate {
                check::unit_interval(&format!("{prefix}{name}"), p)?;
            }
        }
        Ok(())
    }

    /// `self` with every value `later` sets.
    fn then(self, later: &Settings) -> Settings {
        Settings {
            latency_factor: later.latency_factor.or(self.latency_factor),
            failure_rate: later.failure_rate.or(self.failure_rate),
            hang_rate: later.hang_rate.or(self.hang_rate),
            panic_rate: later.panic_rate.or(self.panic_rate),
        }
    }
}

impl Phase {
    /// A phase starting `at` after the backend was built.
    pub fn at(at: Duration) -> Phase {
        Phase {
            at,
            settings: Settings::default(),
        }
    }

    /// When the phase starts, from the backend's build.
    pub fn start(&self) -> Duration {
        self.at
    }

    /// Multiplies every service time by `factor` (`3.0`: three times slower). It applies to
    /// work that *starts* in this phase, as a slower CPU or disk would.
    #[must_use]
    pub fn latency_factor(mut self, factor: f64) -> Phase {
        self.settings.latency_factor = Some(factor);
        self
    }

    /// The share of requests answered with an error (after their service time).
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Phase {
        self.settings.failure_rate = Some(rate);
        self
    }

    /// The share of requests that are never answered (they occupy no worker).
    #[must_use]
    pub fn hang_rate(mut self, rate: f64) -> Phase {
        self.settings.hang_rate = Some(rate);
        self
    }

    /// The share of requests whose response future panics when its work ends.
    #[must_use]
    pub fn panic_rate(mut self, rate: f64) -> Phase {
        self.settings.panic_rate = Some(rate);
        self
    }
}

/// What a [`MockBackend`] saw (see [`MockBackend::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BackendStats {
    /// Requests received (`call`s).
    pub calls: u64,
    /// Requests whose work has ended with an answer (success).
    pub served: u64,
    /// Requests whose work has ended with an injected failure.
    pub failed: u64,
    /// Requests whose work has ended in an injected panic.
    pub panicked: u64,
    /// Requests that hang: never answered.
    pub hung: u64,
    /// Work scheduled to end after its request's [`Deadline`] (http flavour): its caller
    /// had given up, the worker served nobody.
    pub late: u64,
    /// The most requests served at once (at most the workers).
    pub peak_concurrency: usize,
    /// The most requests inside the backend at once, served or waiting for a worker.
    pub peak_in_flight: usize,
    /// The longest wait for a free worker (the backend's own FIFO queue).
    pub max_wait: Duration,
}

/// How one request ends, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Answer,
    Failure,
    Panic,
}

#[derive(Debug)]
struct State {
    workers: usize,
    /// When each worker is next free, earliest first.
    free_at: BinaryHeap<Reverse<Instant>>,
    /// When each accepted (not hung) request's work ends, earliest first.
    pending: BinaryHeap<Reverse<(Instant, u8)>>,
    origin: Instant,
    latency: Latency,
    base: Settings,
    /// Phases, sorted by start (stable: the later of two equal starts wins).
    script: Vec<Phase>,
    /// Set through the handle; wins over the script from the moment it is set.
    overrides: Settings,
    draw: Draw,
    stats: BackendStats,
}

impl State {
    /// The settings in force `t` after the origin.
    fn settings_at(&self, t: Duration) -> Settings {
        let mut settings = self.base;
        for phase in self.script.iter().take_while(|p| p.at <= t) {
            settings = settings.then(&phase.settings);
        }
        settings
    }

    /// Counts the work that ended by `now`.
    fn settle(&mut self, now: Instant) {
        while let Some(&Reverse((done, ending))) = self.pending.peek() {
            if done > now {
                break;
            }
            self.pending.pop();
            match ending {
                0 => self.stats.served += 1,
                1 => self.stats.failed += 1,
                _ => self.stats.panicked += 1,
            }
        }
    }
}

/// A ticket for one request: when it ends and how.
#[derive(Debug, Clone, Copy)]
enum Ticket {
    Hang,
    Run {
        done: Instant,
        served: Served,
        ending: Ending,
    },
}

/// A mock server for tests: `workers` workers behind a FIFO queue, like a thread pool
/// behind an always-ready router, with a seeded latency distribution, injected failures,
/// hangs and panics, and a script of timed [`Phase`]s (or a [`BackendHandle`]) to change them
/// mid-test.
///
/// - A request that reaches it is committed: it waits for the first free worker and holds
///   it for its service time (× the latency factor in force when it starts), even when the
///   caller drops the response future — as in a real server, where work nobody waits for
///   still costs. Dropping only stops the caller from waiting.
/// - `poll_ready` is always ready; every clone (and every [`http`](MockBackend::http)
///   flavour) shares the workers, the script and the statistics.
/// - It works for any request type: the response is [`Served`], an injected failure is a
///   [`MockFailure`] boxed into `BoxError`. [`MockBackend::http`] gives the `http` flavour.
/// - Time is tokio's: under a paused clock (`#[tokio::test(start_paused = true)]`) a test
///   of ten virtual seconds takes milliseconds and is deterministic for its seed.
///
/// ```
/// use std::time::Duration;
/// use brownout_test::{Latency, MockBackend, Phase};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let backend = MockBackend::builder()
///     .workers(2)
///     .latency(Latency::Fixed(Duration::from_millis(20)))
///     .phase(Phase::at(Duration::from_secs(5)).latency_factor(3.0))
///     .build()
///     .unwrap();
/// assert_eq!(backend.capacity(), 100.0); // requests per second
/// let served = backend.clone().oneshot("any request").await.unwrap();
/// assert_eq!(served.service_time, Duration::from_millis(20));
///
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// let served = backend.clone().oneshot("later").await.unwrap();
/// assert_eq!(served.service_time, Duration::from_millis(60));
/// assert_eq!(backend.stats().served, 2);
/// # }
/// ```
#[derive(Clone)]
pub struct MockBackend {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MockBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MockBackend")
            .field("workers", &state.workers)
            .field("latency", &state.latency)
            .field("stats", &state.stats)
            .finish_non_exhaustive()
    }
}

impl MockBackend {
    /// A builder: 1 worker, 10 ms fixed latency, no faults, seed 0.
    pub fn builder() -> MockBackendBuilder {
        MockBackendBuilder::default()
    }

    /// A backend of `workers` workers with a fixed `latency` and no faults.
    ///
    /// # Panics
    ///
    /// When `workers` is 0.
    pub fn new(workers: usize, latency: Duration) -> MockBackend {
        MockBackend::builder()
            .workers(workers)
            .latency(Latency::Fixed(latency))
            .build()
            .expect("a mock backend needs at least one worker")
    }

    /// A handle to change the backend's behaviour mid-test and read its statistics.
    pub fn handle(&self) -> BackendHandle {
        BackendHandle {
            state: self.state.clone(),
        }
    }

    /// The `http` flavour: `Service<http::Request<B>>` answering `http::Response<String>`,
    /// sharing this backend's workers, script and statistics.
    pub fn http(&self) -> HttpBackend {
        HttpBackend {
            backend: self.clone(),
        }
    }

    /// What the backend saw so far.
    pub fn stats(&self) -> BackendStats {
        self.handle().stats()
    }

    /// Nominal capacity in requests per second: workers / mean latency (infinite for a zero
    /// latency). Multiply it to drive the backend at a given load (`4.0 * capacity()`).
    pub fn capacity(&self) -> f64 {
        let state = self.lock();
        state.workers as f64 / state.latency.mean().as_secs_f64()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Commits one request: hangs, or takes the first free worker.
    fn schedule(&self, work: Option<Duration>, deadline: Option<Deadline>) -> Ticket {
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        state.settle(now);
        state.stats.calls += 1;
        let at_call = state.settings_at(now - state.origin).then(&state.overrides);
        if state.draw.chance(at_call.hang_rate.unwrap_or(0.0)) {
            state.stats.hung += 1;
            return Ticket::Hang;
        }
        let Reverse(free) = state.free_at.pop().unwrap_or(Reverse(now));
        let start = free.max(now);
        let factor = match state.overrides.latency_factor {
            Some(factor) => factor,
            None => state
                .settings_at(start - state.origin)
                .latency_factor
                .unwrap_or(1.0),
        };
        let work = match work {
            Some(work) => work,
            None => state.latency.sample(&mut state.draw),
        };
        let service_time = mul_f64_saturating(work, factor);
        let done = start + service_time;
        state.free_at.push(Reverse(done));
        let ending = if state.draw.chance(at_call.failure_rate.unwrap_or(0.0)) {
            Ending::Failure
        } else if state.draw.chance(at_call.panic_rate.unwrap_or(0.0)) {
            Ending::Panic
        } else {
            Ending::Answer
        };
        let code = match ending {
            Ending::Answer => 0,
            Ending::Failure => 1,
            Ending::Panic => 2,
        };
        state.pending.push(Reverse((done, code)));
        if deadline.is_some_and(|d| done > d.instant()) {
            state.stats.late += 1;
        }
        let in_flight = state.pending.len();
        state.stats.peak_in_flight = state.stats.peak_in_flight.max(in_flight);
        state.stats.peak_concurrency = state
            .stats
            .peak_concurrency
            .max(in_flight.min(state.workers));
        let queued = start - now;
        state.stats.max_wait = state.stats.max_wait.max(queued);
        Ticket::Run {
            done,
            served: Served {
                queued,
                service_time,
            },
            ending,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<Req> tower_service::Service<Req> for MockBackend {
    type Response = Served;
    type Error = BoxError;
    type Future = MockFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        MockFuture::new(self.schedule(None, None))
    }
}

pin_project! {
    /// The response future of [`MockBackend`]: resolves when the work ends (or never, for a
    /// hung request). Dropping it does not free the worker.
    pub struct MockFuture {
        #[pin]
        sleep: Option<Sleep>,
        served: Served,
        ending: Ending,
    }
}

impl fmt::Debug for MockFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockFuture")
            .field("hung", &self.sleep.is_none())
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl MockFuture {
    fn new(ticket: Ticket) -> MockFuture {
        match ticket {
            Ticket::Hang => MockFuture {
                sleep: None,
                served: Served {
                    queued: Duration::ZERO,
                    service_time: Duration::ZERO,
                },
                ending: Ending::Answer,
            },
            Ticket::Run {
                done,
                served,
                ending,
            } => MockFuture {
                sleep: Some(tokio::time::sleep_until(done)),
                served,
                ending,
            },
        }
    }
}

impl Future for MockFuture {
    type Output = Result<Served, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(sleep) = this.sleep.as_pin_mut() else {
            // A hung request: never answered, and nothing to wake it.
            return Poll::Pending;
        };
        match sleep.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => match this.ending {
                Ending::Answer => Poll::Ready(Ok(*this.served)),
                Ending::Failure => Poll::Ready(Err(MockFailure.into())),
                Ending::Panic => panic!("mock backend: injected panic"),
            },
        }
    }
}

/// The `http` flavour of a [`MockBackend`] ([`MockBackend::http`]).
///
/// Answers `200` with an empty body and a [`Served`] extension; an injected failure is a
/// `500` (so `Error = Infallible`, as axum's `route_service` wants). A request's [`Work`]
/// extension overrides the latency distribution, and its
/// [`Deadline`](brownout_core::Deadline) extension lets the backend count
/// [late](BackendStats::late) work.
///
/// ```
/// use std::time::Duration;
/// use brownout_test::{MockBackend, Served};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let backend = MockBackend::new(4, Duration::from_millis(5));
/// let response = backend.http().oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.extensions().get::<Served>().unwrap().service_time, Duration::from_millis(5));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HttpBackend {
    backend: MockBackend,
}

impl HttpBackend {
    /// The generic backend behind this flavour.
    pub fn backend(&self) -> &MockBackend {
        &self.backend
    }

    /// The backend's handle.
    pub fn handle(&self) -> BackendHandle {
        self.backend.handle()
    }

    /// The backend's statistics.
    pub fn stats(&self) -> BackendStats {
        self.backend.stats()
    }
}

impl<B> tower_service::Service<http::Request<B>> for HttpBackend {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = HttpFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let work = req.extensions().get::<Work>().map(|w| w.0);
        let ticket = self.backend.schedule(work, Deadline::of(req.extensions()));
        HttpFuture {
            inner: MockFuture::new(ticket),
        }
    }
}

pin_project! {
    /// The response future of [`HttpBackend`].
    #[derive(Debug)]
    pub struct HttpFuture {
        #[pin]
        inner: MockFuture,
    }
}

impl Future for HttpFuture {
    type Output = Result<http::Response<String>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = match self.project().inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(answer) => answer,
        };
        let response = match answer {
            Ok(served) => {
                let mut response = http::Response::new(String::new());
                response.extensions_mut().insert(served);
                response
            }
            Err(err) => {
                let mut response = http::Response::new(format!("{err}\n"));
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        };
        Poll::Ready(Ok(response))
    }
}

/// Changes a [`MockBackend`]'s behaviour mid-test and reads its statistics.
///
/// A setting made through the handle wins over the script from the moment it is set, for
/// requests that arrive afterwards (the latency factor applies to requests that *arrive*
/// after the change, even when they start later); [`clear`](BackendHandle::clear) gives
/// control back to the script.
///
/// ```
/// use std::time::Duration;
/// use brownout_test::MockBackend;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let backend = MockBackend::new(1, Duration::from_millis(10));
/// let handle = backend.handle();
/// handle.set_latency_factor(3.0).unwrap();
/// let served = backend.clone().oneshot(()).await.unwrap();
/// assert_eq!(served.service_time, Duration::from_millis(30));
/// handle.set_failure_rate(1.0).unwrap();
/// assert!(backend.clone().oneshot(()).await.is_err());
/// assert!(handle.set_failure_rate(f64::NAN).is_err());
/// assert_eq!(handle.stats().failed, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct BackendHandle {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendHandle").finish_non_exhaustive()
    }
}

impl BackendHandle {
    fn set(&self, change: Settings) -> Result<(), ConfigError> {
        change.validate("")?;
        let mut state = lock(&self.state);
        state.overrides = state.overrides.then(&change);
        Ok(())
    }

    /// Multiplies service times by `factor` from now on.
    ///
    /// # Errors
    ///
    /// When `factor` is not a finite number above 0.
    pub fn set_latency_factor(&self, factor: f64) -> Result<(), ConfigError> {
        self.set(Settings {
            latency_factor: Some(factor),
            ..Settings::default()
        })
    }

    /// Fails this share of the requests from now on.
    ///
    /// # Errors
    ///
    /// When `rate` is not in `[0, 1]`.
    pub fn set_failure_rate(&self, rate: f64) -> Result<(), ConfigError> {
        self.set(Settings {
            failure_rate: Some(rate),
            ..Settings::default()
        })
    }

    /// Hangs this share of the requests from now on.
    ///
    /// # Errors
    ///
    /// When `rate` is not in `[0, 1]`.
    pub fn set_hang_rate(&self, rate: f64) -> Result<(), ConfigError> {
        self.set(Settings {
            hang_rate: Some(rate),
            ..Settings::default()
        })
    }

    /// Panics on this share of the requests from now on.
    ///
    /// # Errors
    ///
    /// When `rate` is not in `[0, 1]`.
    pub fn set_panic_rate(&self, rate: f64) -> Result<(), ConfigError> {
        self.set(Settings {
            panic_rate: Some(rate),
            ..Settings::default()
        })
    }

    /// Forgets every setting made through the handle: the script (and the builder's
    /// settings) are in force again.
    pub fn clear(&self) {
        lock(&self.state).overrides = Settings::default();
    }

    /// What the backend saw so far.
    pub fn stats(&self) -> BackendStats {
        let mut state = lock(&self.state);
        state.settle(Instant::now());
        state.stats
    }
}

/// Configures a [`MockBackend`]; [`build`](MockBackendBuilder::build) validates.
#[derive(Debug, Clone)]
pub struct MockBackendBuilder {
    workers: usize,
    latency: Latency,
    base: Settings,
    script: Vec<Phase>,
    seed: u64,
}

impl Default for MockBackendBuilder {
    fn default() -> Self {
        MockBackendBuilder {
            workers: 1,
            latency: Latency::default(),
            base: Settings::default(),
            script: Vec::new(),
            seed: 0,
        }
    }
}

impl MockBackendBuilder {
    /// How many requests it serves at once; the rest wait in FIFO order.
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The service-time distribution.
    #[must_use]
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// The share of requests answered with an error, from the start.
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.base.failure_rate = Some(rate);
        self
    }

    /// The share of requests never answered, from the start.
    #[must_use]
    pub fn hang_rate(mut self, rate: f64) -> Self {
        self.base.hang_rate = Some(rate);
        self
    }

    /// The share of requests whose future panics, from the start.
    #[must_use]
    pub fn panic_rate(mut self, rate: f64) -> Self {
        self.base.panic_rate = Some(rate);
        self
    }

    /// The service-time multiplier from the start (default 1).
    #[must_use]
    pub fn latency_factor(mut self, factor: f64) -> Self {
        self.base.latency_factor = Some(factor);
        self
    }

    /// Adds a phase to the script (times count from [`build`](Self::build)).
    #[must_use]
    pub fn phase(mut self, phase: Phase) -> Self {
        self.script.push(phase);
        self
    }

    /// The seed of the latency and fault draws (default 0).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Builds the backend; its script's clock starts now (`tokio::time::Instant`).
    ///
    /// # Errors
    ///
    /// No workers, an invalid latency distribution, a probability outside `[0, 1]` (NaN
    /// included) or a latency factor that is not a finite number above 0, naming the field
    /// (`phases[1].failure_rate`).
    pub fn build(self) -> Result<MockBackend, ConfigError> {
        check::at_least("workers", self.workers, 1)?;
        self.latency.validate("latency")?;
        self.base.validate("")?;
        for (i, phase) in self.script.iter().enumerate() {
            phase.settings.validate(&format!("phases[{i}]."))?;
        }
        let mut script = self.script;
        script.sort_by_key(|p| p.at);
        let origin = Instant::now();
        Ok(MockBackend {
            state: Arc::new(Mutex::new(State {
                workers: self.workers,
                free_at: (0..self.workers).map(|_| Reverse(origin)).collect(),
                pending: BinaryHeap::new(),
                origin,
                latency: self.latency,
                base: self.base,
                script,
                overrides: Settings::default(),
                draw: Draw::seeded(self.seed),
                stats: BackendStats::default(),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tower::ServiceExt;
    use tower_service::Service;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn excess_waits_fifo_and_dropped_work_still_runs() {
        let origin = Instant::now();
        let backend = MockBackend::new(2, ms(10));
        let mut svc = backend.clone();
        let a = Service::<()>::call(&mut svc, ());
        let b = Service::<()>::call(&mut svc, ());
        drop(b); // the caller gives up; the worker stays busy anyway
        let c = Service::<()>::call(&mut svc, ());
        let served = a.await.unwrap();
        assert_eq!(served.queued, Duration::ZERO);
        assert_eq!(origin.elapsed(), ms(10));
        let served = c.await.unwrap();
        assert_eq!(served.queued, ms(10));
        assert_eq!(origin.elapsed(), ms(20));
        let stats = backend.stats();
        assert_eq!(stats.calls, 3);
        assert_eq!(stats.served, 3);
        assert_eq!(stats.peak_concurrency, 2);
        assert_eq!(stats.peak_in_flight, 3);
        assert_eq!(stats.max_wait, ms(10));
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_phase_applies_to_work_starting_inside_it() {
        let origin = Instant::now();
        let backend = MockBackend::builder()
            .latency(Latency::Fixed(ms(10)))
            .phase(Phase::at(Duration::from_secs(1)).latency_factor(3.0))
            .phase(Phase::at(Duration::from_secs(2)).latency_factor(1.0))
            .build()
            .unwrap();
        backend.clone().oneshot(()).await.unwrap();
        assert_eq!(origin.elapsed(), ms(10));
        // Arrives at 995 ms, starts at once: normal speed although it ends in the slow phase.
        tokio::time::sleep_until(origin + ms(995)).await;
        let early = backend.clone().oneshot(()).await.unwrap();
        assert_eq!(early.service_time, ms(10));
        tokio::time::sleep_until(origin + Duration::from_secs(1)).await;
        assert_eq!(
            backend.clone().oneshot(()).await.unwrap().service_time,
            ms(30)
        );
        tokio::time::sleep_until(origin + Duration::from_secs(2)).await;
        assert_eq!(
            backend.clone().oneshot(()).await.unwrap().service_time,
            ms(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn queued_work_gets_the_factor_of_the_phase_it_starts_in() {
        let backend = MockBackend::builder()
            .latency(Latency::Fixed(ms(100)))
            .phase(Phase::at(ms(50)).latency_factor(2.0))
            .build()
            .unwrap();
        let first = Service::<()>::call(&mut backend.clone(), ());
        let second = Service::<()>::call(&mut backend.clone(), ());
        assert_eq!(first.await.unwrap().service_time, ms(100));
        // Queued at 0 ms, started at 100 ms, inside the slow phase.
        assert_eq!(second.await.unwrap().service_time, ms(200));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_hangs_and_panics_are_injected_and_counted() {
        let backend = MockBackend::builder().failure_rate(1.0).build().unwrap();
        let err = backend.clone().oneshot(()).await.unwrap_err();
        assert!(err.is::<MockFailure>());
        let handle = backend.handle();
        handle.set_failure_rate(0.0).unwrap();
        handle.set_hang_rate(1.0).unwrap();
        let hung = tokio::time::timeout(Duration::from_secs(60), backend.clone().oneshot(())).await;
        assert!(hung.is_err(), "a hung request is never answered");
        handle.set_hang_rate(0.0).unwrap();
        handle.set_panic_rate(1.0).unwrap();
        let task = tokio::spawn(backend.clone().oneshot(()));
        assert!(task.await.unwrap_err().is_panic());
        handle.clear();
        let response = backend
            .http()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(response.status(), 500, "the builder's failure rate is back");
        let stats = backend.stats();
        assert_eq!(
            (
                stats.calls,
                stats.failed,
                stats.hung,
                stats.panicked,
                stats.served
            ),
            (4, 2, 1, 1, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn random_faults_follow_their_rate_and_seed() {
        let run = |seed| async move {
            let backend = MockBackend::builder()
                .workers(64)
                .latency(Latency::Exponential { mean: ms(5) })
                .failure_rate(0.25)
                .seed(seed)
                .build()
                .unwrap();
            let mut failed = Vec::new();
            for _ in 0..400 {
                failed.push(backend.clone().oneshot(()).await.is_err());
            }
            failed
        };
        let a = run(1).await;
        assert_eq!(a, run(1).await);
        assert_ne!(a, run(2).await);
        let share = a.iter().filter(|f| **f).count() as f64 / a.len() as f64;
        assert!((share - 0.25).abs() < 0.06, "{share}");
    }

    #[tokio::test(start_paused = true)]
    async fn http_flavour_reads_work_and_counts_late_work() {
        let backend = MockBackend::new(1, ms(10));
        let mut req = http::Request::new(());
        req.extensions_mut().insert(Work(ms(40)));
        req.extensions_mut().insert(Deadline::after(ms(30)));
        let response = backend.http().oneshot(req).await.unwrap();
        let served = response.extensions().get::<Served>().copied().unwrap();
        assert_eq!(served.service_time, ms(40));
        assert_eq!(backend.stats().late, 1);
    }

    #[test]
    fn build_refuses_bad_configuration_naming_the_field() {
        let err = MockBackend::builder().workers(0).build().unwrap_err();
        assert_eq!(err.field(), "workers");
        let err = MockBackend::builder()
            .phase(Phase::at(ms(1)))
            .phase(Phase::at(ms(2)).hang_rate(f64::NAN))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "phases[1].hang_rate");
        let err = MockBackend::builder()
            .latency_factor(0.0)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "latency_factor");
    }

    proptest! {
        #[test]
        fn rel_10_probabilities_accepted_exactly_in_the_unit_interval(p in proptest::num::f64::ANY) {
            let built = MockBackend::builder().failure_rate(p).build();
            prop_assert_eq!(built.is_ok(), (0.0..=1.0).contains(&p));
            let built = MockBackend::builder().phase(Phase::at(ms(1)).panic_rate(p)).build();
            prop_assert_eq!(built.is_ok(), (0.0..=1.0).contains(&p));
        }

        #[test]
        fn rel_10_latency_factor_must_be_finite_and_positive(f in proptest::num::f64::ANY) {
            let built = MockBackend::builder().latency_factor(f).build();
            prop_assert_eq!(built.is_ok(), f.is_finite() && f > 0.0);
        }

        #[test]
        fn lognormal_sigma_must_be_finite_and_non_negative(sigma in proptest::num::f64::ANY, mean in 0u64..100) {
            let built = MockBackend::builder()
                .latency(Latency::LogNormal { mean: ms(mean), sigma })
                .build();
            prop_assert_eq!(built.is_ok(), sigma.is_finite() && sigma >= 0.0 && mean > 0);
        }
    }
}
