//! Hedged requests: a second attempt when the first is slower than usual.
//!
//! Tail latency often comes from one slow replica or one lost packet. A [`Hedge`] sends the
//! request, and if no answer came within a delay — a fixed one, or a percentile (say p95) of
//! the latencies of recent successes — sends a copy; the first successful answer wins and
//! the other attempt is dropped (cancelled). Hedges are extra load, so they draw from a
//! [`RetryBudget`] (share the retry layer's with
//! [`HedgeBuilder::shared_budget`]) and stop at or above a load level (default `High`),
//! exactly like retries.
//!
//! tower's `hedge` middleware (feature `hedge`) uses a rotating latency histogram and no
//! budget or load level; it also hedges non-idempotent requests if its policy lets it.
//!
//! ```
//! use std::time::Duration;
//! use brownout_retry::hedge::{HedgeConfig, HedgeLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = calls.clone();
//! // The first attempt hangs for 10 s; the hedge answers in 1 ms.
//! let svc = service_fn(move |_: ()| {
//!     let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let wait = if n == 0 { 10_000 } else { 1 };
//!         tokio::time::sleep(Duration::from_millis(wait)).await;
//!         Ok::<_, brownout_core::BoxError>(n)
//!     }
//! });
//! let config = HedgeConfig::builder().fixed_delay(Duration::from_millis(50)).build().unwrap();
//! let mut svc = HedgeLayer::new(config).layer(svc);
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 1, "the hedge won");
//! assert!(start.elapsed() < Duration::from_millis(100));
//! # }
//! ```
//!
//! # Cancel safety
//!
//! Dropping the response future drops both attempts; a hedge budget withdrawn for a hedge
//! that was not sent is given back.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use brownout_core::config::check;
use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{ConfigError, LoadLevel, LoadSignal, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::RetryBudget;
use crate::classify::{DefaultClassifier, RetryClassifier, RetryDecision};
use crate::request::{AnyRequest, ByClone, CloneRequest, RequestInfo};

/// The number of recent success latencies kept for the percentile.
const SAMPLES: usize = 256;
/// The percentile is recomputed every this many samples.
const RECOMPUTE_EVERY: u64 = 128;
const NONE: u64 = u64::MAX;

/// When the hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// After a fixed delay.
    Fixed(Duration),
    /// After this percentile (in `(0, 1]`) of the latencies of the last 256 successes;
    /// no hedge before `min_samples` successes were seen.
    Percentile {
        /// E.g. `0.95`.
        percentile: f64,
        /// Successes needed before hedging starts.
        min_samples: usize,
    },
}

/// A validated hedging configuration. Defaults: p95 after 20 samples, a budget of 10 % of
/// requests + 1 per second over 10 s, no hedge at `High` or above.
#[derive(Debug, Clone)]
pub struct HedgeConfig {
    delay: HedgeDelay,
    budget: Option<RetryBudget>,
    deposit: bool,
    suppress_at: LoadLevel,
    signal: LoadSignal,
}

impl HedgeConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder::default()
    }

    /// The budget hedges draw from.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

/// Builds a [`HedgeConfig`].
#[derive(Debug, Clone)]
pub struct HedgeBuilder {
    delay: HedgeDelay,
    budget: Result<RetryBudget, (Duration, f64, f64)>,
    unlimited: bool,
    suppress_at: LoadLevel,
    signal: Option<LoadSignal>,
}

impl Default for HedgeBuilder {
    fn default() -> Self {
        HedgeBuilder {
            delay: HedgeDelay::Percentile {
                percentile: 0.95,
                min_samples: 20,
            },
            budget: Err((Duration::from_secs(10), 1.0, 0.1)),
            unlimited: false,
            suppress_at: LoadLevel::High,
            signal: None,
        }
    }
}

impl HedgeBuilder {
    /// Hedge after a fixed delay.
    #[must_use]
    pub fn fixed_delay(mut self, delay: Duration) -> Self {
        self.delay = HedgeDelay::Fixed(delay);
        self
    }

    /// Hedge after `percentile` of recent success latencies, once `min_samples` were seen.
    #[must_use]
    pub fn percentile(mut self, percentile: f64, min_samples: usize) -> Self {
        self.delay = HedgeDelay::Percentile {
            percentile,
            min_samples,
        };
        self
    }

    /// A budget of its own (see [`RetryBudget::new`]); each request deposits into it.
    #[must_use]
    pub fn budget(mut self, ttl: Duration, min_per_sec: f64, ratio: f64) -> Self {
        self.budget = Err((ttl, min_per_sec, ratio));
        self.unlimited = false;
        self
    }

    /// Draw from a budget shared with a retry layer, which makes the deposits (the hedge
    /// layer does not deposit into it, so requests are not counted twice).
    #[must_use]
    pub fn shared_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Ok(budget);
        self.unlimited = false;
        self
    }

    /// No budget: every slow request is hedged.
    #[must_use]
    pub fn unlimited_budget(mut self) -> Self {
        self.unlimited = true;
        self
    }

    /// No hedge at or above this level.
    #[must_use]
    pub fn suppress_at(mut self, level: LoadLevel) -> Self {
        self.suppress_at = level;
        self
    }

    /// The load signal read before each hedge.
    #[must_use]
    pub fn signal(mut self, signal: LoadSignal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `delay.percentile` (outside `(0, 1]`),
    /// `delay.min_samples` (0 or above 256) or a `budget.*` field.
    pub fn build(self) -> Result<HedgeConfig, ConfigError> {
        if let HedgeDelay::Percentile {
            percentile,
            min_samples,
        } = self.delay
        {
            check::fraction("delay.percentile", percentile)?;
            check::at_least("delay.min_samples", min_samples, 1)?;
            if min_samples > SAMPLES {
                return Err(ConfigError::new(
                    "delay.min_samples",
                    format!("must be at most {SAMPLES} (got {min_samples})"),
                ));
            }
        }
        let (budget, deposit) = match (self.unlimited, self.budget) {
            (true, _) => (None, false),
            (false, Ok(shared)) => (Some(shared), false),
            (false, Err((ttl, min, ratio))) => (Some(RetryBudget::new(ttl, min, ratio)?), true),
        };
        Ok(HedgeConfig {
            delay: self.delay,
            budget,
            deposit,
            suppress_at: self.suppress_at,
            signal: self.signal.unwrap_or_default(),
        })
    }
}

/// Latencies of recent successes and the hedge delay derived from them.
struct Latencies {
    samples: Box<[AtomicU64]>,
    next: AtomicUsize,
    seen: AtomicU64,
    delay_nanos: AtomicU64,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            samples: (0..SAMPLES).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            seen: AtomicU64::new(0),
            delay_nanos: AtomicU64::new(NONE),
        }
    }

    fn record(&self, latency: Duration, percentile: f64, min_samples: usize) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % SAMPLES;
        self.samples[i].store(nanos, Ordering::Relaxed);
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen >= min_samples as u64
            && (seen.is_multiple_of(RECOMPUTE_EVERY) || seen == min_samples as u64)
        {
            let n = (seen as usize).min(SAMPLES);
            let mut copy = [0u64; SAMPLES];
            for (slot, sample) in copy.iter_mut().zip(self.samples.iter()).take(n) {
                *slot = sample.load(Ordering::Relaxed);
            }
            let copy = &mut copy[..n];
            let rank = ((percentile * n as f64).ceil() as usize).clamp(1, n) - 1;
            let (_, value, _) = copy.select_nth_unstable(rank);
            self.delay_nanos.store(*value, Ordering::Relaxed);
        }
    }

    fn delay(&self) -> Option<Duration> {
        match self.delay_nanos.load(Ordering::Relaxed) {
            NONE => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

struct HedgeShared<K, C, I> {
    config: HedgeConfig,
    classifier: K,
    cloner: C,
    requests: I,
    latencies: Latencies,
    hedges: AtomicU64,
    hedge_wins: AtomicU64,
    metrics: DecisionMetrics,
}

impl<K, C, I> HedgeShared<K, C, I> {
    fn delay(&self) -> Option<Duration> {
        match self.config.delay {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile { .. } => self.latencies.delay(),
        }
    }

    fn record(&self, latency: Duration) {
        if let HedgeDelay::Percentile {
            percentile,
            min_samples,
        } = self.config.delay
        {
            self.latencies.record(latency, percentile, min_samples);
        }
    }
}

/// What a hedge layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Hedges sent.
    pub hedges: u64,
    /// Requests whose hedge answered first.
    pub hedge_wins: u64,
    /// The current hedge delay, if hedging is active.
    pub delay: Option<Duration>,
}

/// Wraps services in [`Hedge`]; every service it builds shares one latency record and budget.
pub struct HedgeLayer<K = DefaultClassifier, C = ByClone, I = AnyRequest> {
    shared: Arc<HedgeShared<K, C, I>>,
}

impl HedgeLayer {
    /// Hedges any `Service<Req>` with `Req: Clone`; every request counts as idempotent.
    pub fn new(config: HedgeConfig) -> Self {
        HedgeLayer::with_strategies(config, DefaultClassifier, ByClone, AnyRequest)
    }
}

impl<K, C, I> HedgeLayer<K, C, I> {
    /// Hedges with the given classifier (what counts as a success), request copier and
    /// idempotency rules (e.g. [`HttpClassifier`](crate::HttpClassifier),
    /// [`HttpClone`](crate::HttpClone), [`HttpRequests`](crate::HttpRequests)).
    pub fn with_strategies(config: HedgeConfig, classifier: K, cloner: C, requests: I) -> Self {
        HedgeLayer {
            shared: Arc::new(HedgeShared {
                config,
                classifier,
                cloner,
                requests,
                latencies: Latencies::new(),
                hedges: AtomicU64::new(0),
                hedge_wins: AtomicU64::new(0),
                metrics: DecisionMetrics::new("hedge"),
            }),
        }
    }

    /// What the services of this layer did.
    pub fn stats(&self) -> HedgeStats {
        HedgeStats {
            hedges: self.shared.hedges.load(Ordering::Relaxed),
            hedge_wins: self.shared.hedge_wins.load(Ordering::Relaxed),
            delay: self.shared.delay(),
        }
    }
}

impl<K, C, I> Clone for HedgeLayer<K, C, I> {
    fn clone(&self) -> Self {
        HedgeLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K, C, I> fmt::Debug for HedgeLayer<K, C, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<S, K, C, I> Layer<S> for HedgeLayer<K, C, I> {
    type Service = Hedge<S, K, C, I>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The hedging service (see the [module docs](self)).
pub struct Hedge<S, K = DefaultClassifier, C = ByClone, I = AnyRequest> {
    inner: S,
    shared: Arc<HedgeShared<K, C, I>>,
}

brownout_core::impl_inner_access!(Hedge<S, K, C, I>);

impl<S: Clone, K, C, I> Clone for Hedge<S, K, C, I> {
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K, C, I> fmt::Debug for Hedge<S, K, C, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, I, Req> Service<Req> for Hedge<S, K, C, I>
where
    S: Service<Req> + Clone,
    K: RetryClassifier<S::Response, S::Error>,
    C: CloneRequest<Req>,
    I: RequestInfo<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = HedgeFuture<S, Req, K, C, I>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        if shared.config.deposit
            && let Some(budget) = &shared.config.budget
        {
            budget.deposit();
        }
        let delay = shared.delay();
        let copy = match delay {
            Some(_) if shared.requests.is_idempotent(&req) => shared.cloner.clone_request(&req),
            _ => None,
        };
        let delay = if copy.is_some() { delay } else { None };
        let service = self.inner.clone();
        let primary = self.inner.call(req);
        HedgeFuture {
            primary: Some(primary),
            hedge: None,
            sleep: None,
            delay,
            service,
            copy,
            start: Instant::now(),
            hedge_start: None,
            shared: self.shared.clone(),
        }
    }
}

pin_project! {
    /// The future of [`Hedge`]: the first attempt, maybe a hedge, the first success wins.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops both attempts.
    pub struct HedgeFuture<S, Req, K, C, I>
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

impl<S, Req, K, C, I> Future for HedgeFuture<S, Req, K, C, I>
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

impl<S, Req, K, C, I> fmt::Debug for HedgeFuture<S, Req, K, C, I>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeFuture")
            .field("primary", &self.primary.is_some())
            .field("hedge", &self.hedge.is_some())
            .finish_non_exhaustive()
    }
}
