//! [`CircuitBreakLayer`]: builds [`CircuitBreak`] services that share one set of breakers.

use std::fmt;
use std::sync::{Arc, OnceLock};

use brownout_core::{LoadLevel, LoadSignal};
use tower_layer::Layer;

use crate::CircuitBreak;
use crate::ErrIsFailure;
use crate::breaker::{Callback, Core, StateChange};
use crate::config::CircuitBreakConfig;
use crate::fallback::{Failover, FallbackKind, LastGood, NoFallback, StaticFallback};
use crate::handle::CircuitBreakHandle;
use crate::key::{Global, KeyExtractor, KeyFn, LazyRegistry, Registry};

/// Wraps services in a [`CircuitBreak`].
///
/// Every service made by one layer (and by its clones) shares the same breakers, so
/// [`handle`](CircuitBreakLayer::handle) sees and controls all of them. Call the `with_*`
/// methods first: each returns a new layer with fresh breakers.
///
/// ```
/// use std::time::Duration;
/// use brownout_breaker::{CircuitBreakConfig, CircuitBreakLayer, HttpOutcome};
///
/// let config = CircuitBreakConfig::builder()
///     .failure_rate(0.5)
///     .open_duration(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// let layer = CircuitBreakLayer::new(config)
///     .with_name("upstream")
///     .with_classifier(HttpOutcome)
///     .with_key(|req: &http::Request<()>| req.uri().host().unwrap_or("").to_owned())
///     .on_state_change(|change| println!("{:?}: {} -> {}", change.key, change.from, change.to));
/// let handle = layer.handle();
/// assert!(handle.is_empty());
/// ```
pub struct CircuitBreakLayer<K = Global, C = ErrIsFailure, F = NoFallback>
where
    K: KeyExtractor,
    F: FallbackKind,
{
    config: CircuitBreakConfig,
    name: &'static str,
    signal: LoadSignal,
    callbacks: Vec<Callback>,
    key: K,
    classifier: C,
    fallback: F,
    registry: LazyRegistry<K::Key, F::Memo>,
}

impl CircuitBreakLayer {
    /// One breaker for all requests, errors counting as failures, no fallback.
    pub fn new(config: CircuitBreakConfig) -> CircuitBreakLayer {
        CircuitBreakLayer {
            config,
            name: "breaker",
            signal: LoadSignal::fixed(LoadLevel::Normal),
            callbacks: Vec::new(),
            key: Global,
            classifier: ErrIsFailure,
            fallback: NoFallback,
            registry: Arc::new(OnceLock::new()),
        }
    }
}

impl<K, C, F> CircuitBreakLayer<K, C, F>
where
    K: KeyExtractor,
    F: FallbackKind,
{
    fn rebuild<K2: KeyExtractor, C2, F2: FallbackKind>(
        self,
        parts: impl FnOnce(K, C, F) -> (K2, C2, F2),
    ) -> CircuitBreakLayer<K2, C2, F2> {
        let (key, classifier, fallback) = parts(self.key, self.classifier, self.fallback);
        CircuitBreakLayer {
            config: self.config,
            name: self.name,
            signal: self.signal,
            callbacks: self.callbacks,
            key,
            classifier,
            fallback,
            registry: Arc::new(OnceLock::new()),
        }
    }

    /// Names the breaker (the `breaker` label of `brownout_breaker_state`, tracing field).
    pub fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self.registry = Arc::new(OnceLock::new());
        self
    }

    /// The load signal whose level is stamped on rejections. The breaker's decisions do
    /// not depend on the level: a broken dependency is broken at any load.
    pub fn with_signal(mut self, signal: LoadSignal) -> Self {
        self.signal = signal;
        self.registry = Arc::new(OnceLock::new());
        self
    }

    /// Runs `callback` on every state transition of every breaker, once per transition.
    ///
    /// Callbacks run while the breaker's transition lock is held (so they see transitions
    /// in order); they may read the handle's state and snapshots but must not call its
    /// `force_*` / `reset` methods.
    pub fn on_state_change(
        mut self,
        callback: impl Fn(&StateChange<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.push(Arc::new(callback));
        self.registry = Arc::new(OnceLock::new());
        self
    }

    /// Decides what counts as a failure (a [`ClassifyOutcome`](crate::ClassifyOutcome),
    /// e.g. [`HttpOutcome`](crate::HttpOutcome) or a closure).
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakLayer<K, C2, F> {
        self.rebuild(|key, _, fallback| (key, classifier, fallback))
    }

    /// One breaker per key `f(&request)` (e.g. upstream host or route), in a map bounded by
    /// `max_keys` that forgets keys idle for `idle_timeout`.
    pub fn with_key<Req, Key, Fk>(self, f: Fk) -> CircuitBreakLayer<KeyFn<Fk, Key>, C, F>
    where
        Fk: Fn(&Req) -> Key,
        Key: std::hash::Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        self.rebuild(|_, classifier, fallback| (KeyFn::new(f), classifier, fallback))
    }

    /// Answers refused calls with `f(request, &rejected)` instead of an error.
    pub fn with_static_fallback<Fs>(self, f: Fs) -> CircuitBreakLayer<K, C, StaticFallback<Fs>> {
        self.with_fallback(StaticFallback::new(f))
    }

    /// Answers refused calls with the last successful response of the same breaker (per
    /// key), or the `Rejected` error when there is none yet.
    pub fn with_last_good<Res: Send + 'static>(self) -> CircuitBreakLayer<K, C, LastGood<Res>> {
        self.with_fallback(LastGood::new())
    }

    /// Sends refused calls to `secondary` (failover: the primary is skipped while open).
    pub fn with_failover<S2>(self, secondary: S2) -> CircuitBreakLayer<K, C, Failover<S2>> {
        self.with_fallback(Failover::new(secondary))
    }

    /// Any [`Fallback`](crate::Fallback).
    pub fn with_fallback<F2: FallbackKind>(self, fallback: F2) -> CircuitBreakLayer<K, C, F2> {
        self.rebuild(|key, classifier, _| (key, classifier, fallback))
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreakConfig {
        &self.config
    }

    pub(crate) fn registry(&self) -> Arc<Registry<K::Key, F::Memo>> {
        self.registry
            .get_or_init(|| {
                let core = Core::new(
                    self.config.clone(),
                    self.name,
                    self.signal.clone(),
                    self.callbacks.clone(),
                );
                let single = K::single_key();
                Arc::new(Registry::new(core, single))
            })
            .clone()
    }

    /// A handle on the breakers of every service this layer makes.
    pub fn handle(&self) -> CircuitBreakHandle<K::Key> {
        CircuitBreakHandle::new(self.registry())
    }
}

impl<K, C, F> Clone for CircuitBreakLayer<K, C, F>
where
    K: KeyExtractor + Clone,
    C: Clone,
    F: FallbackKind + Clone,
{
    fn clone(&self) -> Self {
        CircuitBreakLayer {
            config: self.config.clone(),
            name: self.name,
            signal: self.signal.clone(),
            callbacks: self.callbacks.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
            fallback: self.fallback.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl<K, C, F> fmt::Debug for CircuitBreakLayer<K, C, F>
where
    K: KeyExtractor,
    F: FallbackKind,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakLayer")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, F> Layer<S> for CircuitBreakLayer<K, C, F>
where
    K: KeyExtractor + Clone,
    C: Clone,
    F: FallbackKind + Clone,
{
    type Service = CircuitBreak<S, K, C, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreak::from_parts(
            inner,
            self.registry(),
            self.key.clone(),
            self.classifier.clone(),
            self.fallback.clone(),
        )
    }
}
