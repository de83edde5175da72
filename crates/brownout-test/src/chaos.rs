//! [`ChaosLayer`]: seeded fault injection (added latency, errors, panics, hangs) in front of
//! any service, per class or per route.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use brownout_core::config::check;
use brownout_core::{BoxError, Classify, ConfigError, Fixed, Priority};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::draw::{Draw, Latency};

/// Which requests a [`ChaosLayer`] may touch: every request ([`Everything`]) or those a
/// closure `Fn(&Req) -> bool` selects (a route, a method, a tenant).
pub trait Target<Req> {
    /// Whether faults may be injected into `req`.
    fn applies(&self, req: &Req) -> bool;
}

impl<Req, F> Target<Req> for F
where
    F: Fn(&Req) -> bool,
{
    #[inline]
    fn applies(&self, req: &Req) -> bool {
        self(req)
    }
}

/// Every request is a target (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Everything;

impl<Req> Target<Req> for Everything {
    #[inline]
    fn applies(&self, _: &Req) -> bool {
        true
    }
}

/// The faults injected into one request class (or every class): each with its probability.
/// [`Faults::none`] (the default) injects nothing.
///
/// Draw order per request: hang, panic, error, then added latency; a request gets at most
/// one of the first three.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    delay_rate: f64,
    delay: Option<Latency>,
    error_rate: f64,
    panic_rate: f64,
    hang_rate: f64,
}

impl Faults {
    /// No fault.
    pub const fn none() -> Faults {
        Faults {
            delay_rate: 0.0,
            delay: None,
            error_rate: 0.0,
            panic_rate: 0.0,
            hang_rate: 0.0,
        }
    }

    /// Delays this share of the requests by a draw from `delay` before the inner service
    /// sees them.
    #[must_use]
    pub fn delay(mut self, rate: f64, delay: Latency) -> Faults {
        self.delay_rate = rate;
        self.delay = Some(delay);
        self
    }

    /// Refuses this share of the requests with a [`ChaosError`] (the inner service never
    /// sees them).
    #[must_use]
    pub fn error_rate(mut self, rate: f64) -> Faults {
        self.error_rate = rate;
        self
    }

    /// Panics (when the response future is first polled) on this share of the requests.
    #[must_use]
    pub fn panic_rate(mut self, rate: f64) -> Faults {
        self.panic_rate = rate;
        self
    }

    /// Never answers this share of the requests (the inner service never sees them).
    #[must_use]
    pub fn hang_rate(mut self, rate: f64) -> Faults {
        self.hang_rate = rate;
        self
    }

    /// Whether any fault is on.
    pub fn is_active(&self) -> bool {
        self.delay_rate > 0.0
            || self.error_rate > 0.0
            || self.panic_rate > 0.0
            || self.hang_rate > 0.0
    }

    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        check::unit_interval(&format!("{prefix}delay_rate"), self.delay_rate)?;
        check::unit_interval(&format!("{prefix}error_rate"), self.error_rate)?;
        check::unit_interval(&format!("{prefix}panic_rate"), self.panic_rate)?;
        check::unit_interval(&format!("{prefix}hang_rate"), self.hang_rate)?;
        if let Some(delay) = &self.delay {
            delay.validate(&format!("{prefix}delay"))?;
        }
        Ok(())
    }
}

/// A fault [`ChaosLayer`] injects instead of calling the inner service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// An injected error ([`ChaosError`]).
    Error,
    /// A panic when the response future is polled.
    Panic,
    /// No answer, ever.
    Hang,
}

/// The error of a request refused by [`ChaosLayer`]'s error fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChaosError {
    fault: Fault,
}

impl ChaosError {
    /// The injected fault.
    pub fn fault(&self) -> Fault {
        self.fault
    }
}

impl fmt::Display for ChaosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("injected fault: error")
    }
}

impl std::error::Error for ChaosError {}

/// How many faults a [`ChaosLayer`] injected ([`ChaosLayer::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChaosStats {
    /// Requests that reached the layer.
    pub requests: u64,
    /// Delayed.
    pub delayed: u64,
    /// Refused with a [`ChaosError`].
    pub errors: u64,
    /// Panicked.
    pub panics: u64,
    /// Hung.
    pub hangs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    delayed: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    hangs: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    all: Faults,
    classes: [Option<Faults>; Priority::COUNT],
    /// Whether any fault is on anywhere (else the layer does nothing at all).
    active: bool,
    draw: Mutex<Draw>,
    counters: Counters,
}

impl Shared {
    fn faults(&self, priority: Priority) -> &Faults {
        self.classes[priority.index()].as_ref().unwrap_or(&self.all)
    }
}

/// Seeded fault injection for tests: added latency, errors, panics and hangs, each with a
/// probability, for every request or per class (through a [`Classify`]) or per route
/// (a [`Target`] closure).
///
/// It does nothing until faults are enabled through its builder: `ChaosLayer::new()` is a
/// pass-through, so a chaos layer can stay in a test stack and be switched on per test. The
/// draws come from one seeded stream shared by every clone, so a single-threaded test
/// (paused clock) sees the same faults on every run. Invalid probabilities (outside
/// `[0, 1]`, NaN) are refused at [`build`](ChaosBuilder::build).
///
/// Unlike the [`MockBackend`](crate::MockBackend)'s own faults, which model a failing
/// server, the chaos layer goes anywhere in a stack: in front of a real handler, between
/// two layers, or on the client side of a dependency.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::Priority;
/// use brownout_test::{ChaosLayer, Faults, Latency};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let chaos = ChaosLayer::builder()
///     .seed(7)
///     .classify(|req: &(Priority, u32)| req.0)
///     .class(Priority::Low, Faults::none().error_rate(1.0))
///     .all(Faults::none().delay(1.0, Latency::Fixed(Duration::from_millis(50))))
///     .build()
///     .unwrap();
/// let svc = chaos.layer(service_fn(|req: (Priority, u32)| async move {
///     Ok::<_, std::convert::Infallible>(req.1)
/// }));
/// assert!(svc.clone().oneshot((Priority::Low, 1)).await.is_err());
/// let start = tokio::time::Instant::now();
/// assert_eq!(svc.clone().oneshot((Priority::High, 2)).await.unwrap(), 2);
/// assert_eq!(start.elapsed(), Duration::from_millis(50));
/// assert_eq!(chaos.stats().errors, 1);
/// # }
/// ```
pub struct ChaosLayer<C = Fixed, P = Everything> {
    shared: Arc<Shared>,
    classify: C,
    target: P,
}

impl<C: Clone, P: Clone> Clone for ChaosLayer<C, P> {
    fn clone(&self) -> Self {
        ChaosLayer {
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            target: self.target.clone(),
        }
    }
}

impl<C, P> fmt::Debug for ChaosLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("all", &self.shared.all)
            .field("classes", &self.shared.classes)
            .field("active", &self.shared.active)
            .finish_non_exhaustive()
    }
}

impl Default for ChaosLayer {
    fn default() -> Self {
        ChaosLayer::new()
    }
}

impl ChaosLayer {
    /// A layer that injects nothing (until built otherwise through [`builder`](Self::builder)).
    pub fn new() -> ChaosLayer {
        ChaosLayer::builder()
            .build()
            .expect("no faults is a valid configuration")
    }

    /// A builder with no faults, seed 0, every request a target, every request `Medium`.
    pub fn builder() -> ChaosBuilder {
        ChaosBuilder {
            all: Faults::none(),
            classes: [None; Priority::COUNT],
            seed: 0,
            classify: Fixed(Priority::Medium),
            target: Everything,
        }
    }
}

impl<C, P> ChaosLayer<C, P> {
    /// How many faults were injected so far (all clones together).
    pub fn stats(&self) -> ChaosStats {
        let c = &self.shared.counters;
        ChaosStats {
            requests: c.requests.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            panics: c.panics.load(Ordering::Relaxed),
            hangs: c.hangs.load(Ordering::Relaxed),
        }
    }
}

impl<S, C: Clone, P: Clone> tower_layer::Layer<S> for ChaosLayer<C, P> {
    type Service = Chaos<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos {
            inner,
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            target: self.target.clone(),
        }
    }
}

/// Configures a [`ChaosLayer`]; [`build`](ChaosBuilder::build) validates.
#[derive(Debug, Clone)]
pub struct ChaosBuilder<C = Fixed, P = Everything> {
    all: Faults,
    classes: [Option<Faults>; Priority::COUNT],
    seed: u64,
    classify: C,
    target: P,
}

impl<C, P> ChaosBuilder<C, P> {
    /// The faults of every class that has none of its own.
    #[must_use]
    pub fn all(mut self, faults: Faults) -> Self {
        self.all = faults;
        self
    }

    /// The faults of one class (instead of [`all`](Self::all)'s); needs a
    /// [`classify`](Self::classify)er that tells the classes apart.
    #[must_use]
    pub fn class(mut self, priority: Priority, faults: Faults) -> Self {
        self.classes[priority.index()] = Some(faults);
        self
    }

    /// The seed of the fault draws.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How a request's class is decided (a closure `Fn(&Req) -> Priority`,
    /// `brownout_core::FromExtensions` for http requests classified upstream, …).
    /// Default: every request is `Medium`.
    #[must_use]
    pub fn classify<D>(self, classify: D) -> ChaosBuilder<D, P> {
        ChaosBuilder {
            all: self.all,
            classes: self.classes,
            seed: self.seed,
            classify,
            target: self.target,
        }
    }

    /// Only requests `target` selects get faults (a closure `Fn(&Req) -> bool`, e.g. one
    /// route); the rest pass untouched.
    #[must_use]
    pub fn only<Q>(self, target: Q) -> ChaosBuilder<C, Q> {
        ChaosBuilder {
            all: self.all,
            classes: self.classes,
            seed: self.seed,
            classify: self.classify,
            target,
        }
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A probability outside `[0, 1]` (NaN included) or an invalid delay distribution,
    /// naming the field (`all.error_rate`, `class[low].hang_rate`).
    pub fn build(self) -> Result<ChaosLayer<C, P>, ConfigError> {
        self.all.validate("all.")?;
        for (priority, faults) in Priority::ALL.into_iter().zip(&self.classes) {
            if let Some(faults) = faults {
                faults.validate(&format!("class[{priority}]."))?;
            }
        }
        let active = self.all.is_active() || self.classes.iter().flatten().any(Faults::is_active);
        Ok(ChaosLayer {
            shared: Arc::new(Shared {
                all: self.all,
                classes: self.classes,
                active,
                draw: Mutex::new(Draw::seeded(self.seed)),
                counters: Counters::default(),
            }),
            classify: self.classify,
            target: self.target,
        })
    }
}

/// The service of [`ChaosLayer`].
pub struct Chaos<S, C = Fixed, P = Everything> {
    inner: S,
    shared: Arc<Shared>,
    classify: C,
    target: P,
}

brownout_core::impl_inner_access!(Chaos<S, C, P>);

impl<S: Clone, C: Clone, P: Clone> Clone for Chaos<S, C, P> {
    fn clone(&self) -> Self {
        Chaos {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            target: self.target.clone(),
        }
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for Chaos<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What one request gets.
enum Decision {
    Pass(Option<std::time::Duration>),
    Error,
    Panic,
    Hang,
}

impl<S, C, P, Req> tower_service::Service<Req> for Chaos<S, C, P>
where
    S: tower_service::Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req>,
    P: Target<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ChaosFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        if !shared.active || !self.target.applies(&req) {
            return ChaosFuture::pass(self.inner.call(req), None);
        }
        let faults = shared.faults(self.classify.classify(&req));
        let counters = &shared.counters;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        if !faults.is_active() {
            // No fault for this class: no lock, no draw (the other classes' draws stay the
            // same whether or not this class's requests come).
            return ChaosFuture::pass(self.inner.call(req), None);
        }
        let decision = {
            let mut draw = shared.draw.lock().unwrap_or_else(PoisonError::into_inner);
            if draw.chance(faults.hang_rate) {
                Decision::Hang
            } else if draw.chance(faults.panic_rate) {
                Decision::Panic
            } else if draw.chance(faults.error_rate) {
                Decision::Error
            } else if draw.chance(faults.delay_rate) {
                Decision::Pass(faults.delay.as_ref().map(|d| draw.latency(d)))
            } else {
                Decision::Pass(None)
            }
        };
        match decision {
            Decision::Hang => {
                counters.hangs.fetch_add(1, Ordering::Relaxed);
                ChaosFuture::fault(Fault::Hang)
            }
            Decision::Panic => {
                counters.panics.fetch_add(1, Ordering::Relaxed);
                ChaosFuture::fault(Fault::Panic)
            }
            Decision::Error => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                ChaosFuture::fault(Fault::Error)
            }
            Decision::Pass(delay) => {
                if delay.is_some() {
                    counters.delayed.fetch_add(1, Ordering::Relaxed);
                }
                ChaosFuture::pass(self.inner.call(req), delay)
            }
        }
    }
}

pin_project! {
    /// The response future of [`Chaos`]: the inner future (maybe after a delay) or an
    /// injected fault.
    pub struct ChaosFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Pass {
            #[pin]
            delay: Option<Sleep>,
            #[pin]
            inner: F,
        },
        Fault {
            fault: Fault,
        },
    }
}

impl<F> fmt::Debug for ChaosFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Pass { delay, .. } => f
                .debug_struct("ChaosFuture::Pass")
                .field("delayed", &delay.is_some())
                .finish_non_exhaustive(),
            State::Fault { fault } => f
                .debug_struct("ChaosFuture::Fault")
                .field("fault", fault)
                .finish(),
        }
    }
}

impl<F> ChaosFuture<F> {
    fn pass(inner: F, delay: Option<std::time::Duration>) -> ChaosFuture<F> {
        ChaosFuture {
            state: State::Pass {
                delay: delay.map(tokio::time::sleep),
                inner,
            },
        }
    }

    fn fault(fault: Fault) -> ChaosFuture<F> {
        ChaosFuture {
            state: State::Fault { fault },
        }
    }
}

impl<F, T, E> Future for ChaosFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Pass { mut delay, inner } => {
                if let Some(sleep) = delay.as_mut().as_pin_mut() {
                    if sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    delay.set(None);
                }
                inner.poll(cx).map_err(Into::into)
            }
            StateProj::Fault { fault } => match fault {
                Fault::Error => Poll::Ready(Err(ChaosError {
                    fault: Fault::Error,
                }
                .into())),
                Fault::Panic => panic!("chaos layer: injected panic"),
                Fault::Hang => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use tower::{Layer, ServiceExt, service_fn};

    fn echo() -> impl tower_service::Service<
        u32,
        Response = u32,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<u32, std::convert::Infallible>>,
    > + Clone {
        service_fn(|n: u32| std::future::ready(Ok(n)))
    }

    #[tokio::test(start_paused = true)]
    async fn off_by_default() {
        let chaos = ChaosLayer::new();
        let svc = chaos.layer(echo());
        for n in 0..100 {
            assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
        }
        assert_eq!(chaos.stats(), ChaosStats::default());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_hangs_and_panics_follow_their_probability() {
        let chaos = ChaosLayer::builder()
            .seed(1)
            .all(Faults::none().error_rate(0.2).hang_rate(0.1))
            .build()
            .unwrap();
        let svc = chaos.layer(echo());
        let (mut ok, mut errors, mut hangs) = (0, 0, 0);
        for n in 0..1000 {
            match tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(n)).await {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(err)) => {
                    assert!(err.is::<ChaosError>());
                    errors += 1;
                }
                Err(_) => hangs += 1,
            }
        }
        let stats = chaos.stats();
        assert_eq!((stats.errors, stats.hangs), (errors, hangs));
        assert_eq!(ok + errors + hangs, 1000);
        assert!((80..=120).contains(&hangs), "hangs {hangs}");
        // The error draw happens for the 90 % that did not hang: 0.9 × 0.2 = 18 %.
        assert!((150..=210).contains(&errors), "errors {errors}");

        let panicky = ChaosLayer::builder()
            .all(Faults::none().panic_rate(1.0))
            .build()
            .unwrap()
            .layer(echo());
        let task = tokio::spawn(panicky.oneshot(1));
        assert!(task.await.unwrap_err().is_panic());
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_faults() {
        let run = |seed| async move {
            let svc = ChaosLayer::builder()
                .seed(seed)
                .all(Faults::none().error_rate(0.5))
                .build()
                .unwrap()
                .layer(echo());
            let mut out = Vec::new();
            for n in 0..64 {
                out.push(svc.clone().oneshot(n).await.is_ok());
            }
            out
        };
        assert_eq!(run(1).await, run(1).await);
        assert_ne!(run(1).await, run(2).await);
    }

    #[tokio::test(start_paused = true)]
    async fn per_class_and_per_route() {
        let chaos = ChaosLayer::builder()
            .classify(|n: &u32| {
                if *n >= 100 {
                    Priority::Low
                } else {
                    Priority::High
                }
            })
            .class(Priority::Low, Faults::none().error_rate(1.0))
            .only(|n: &u32| n.is_multiple_of(2))
            .build()
            .unwrap();
        let svc = chaos.layer(echo());
        assert!(svc.clone().oneshot(100).await.is_err(), "low, targeted");
        assert!(svc.clone().oneshot(101).await.is_ok(), "low, not targeted");
        assert!(
            svc.clone().oneshot(2).await.is_ok(),
            "high: no faults of its own"
        );
        assert_eq!(chaos.stats().requests, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_the_request_back() {
        let start = tokio::time::Instant::now();
        let svc = ChaosLayer::builder()
            .all(Faults::none().delay(1.0, Latency::Fixed(Duration::from_millis(250))))
            .build()
            .unwrap()
            .layer(echo());
        assert_eq!(svc.oneshot(5).await.unwrap(), 5);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[test]
    fn build_names_the_refused_field() {
        let err = ChaosLayer::builder()
            .class(Priority::Low, Faults::none().hang_rate(1.5))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "class[low].hang_rate");
        let err = ChaosLayer::builder()
            .all(Faults::none().delay(
                0.5,
                Latency::Exponential {
                    mean: Duration::ZERO,
                },
            ))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "all.delay.mean");
    }

    proptest! {
        #[test]
        fn rel_10_probabilities_accepted_exactly_in_the_unit_interval(
            p in proptest::num::f64::ANY,
            which in 0usize..4,
        ) {
            let faults = match which {
                0 => Faults::none().error_rate(p),
                1 => Faults::none().panic_rate(p),
                2 => Faults::none().hang_rate(p),
                _ => Faults::none().delay(p, Latency::Fixed(Duration::from_millis(1))),
            };
            let valid = (0.0..=1.0).contains(&p);
            prop_assert_eq!(ChaosLayer::builder().all(faults).build().is_ok(), valid);
            prop_assert_eq!(
                ChaosLayer::builder().class(Priority::Background, faults).build().is_ok(),
                valid
            );
        }
    }
}
