//! Telling handlers how much work to do: the level, a work mode and feature toggles.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use brownout_core::config::check;
use brownout_core::{ConfigError, LevelTable, LoadLevel, LoadSignal, WorkMode};
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

/// One named feature and its rollout per level.
type Feature = (String, LevelTable<f64>);

/// Named optional features, each enabled for a fraction of requests at each level
/// (a rollout percentage that shrinks as the load grows).
///
/// ```
/// use brownout::http::FeatureToggles;
/// use brownout_core::{LevelTable, LoadLevel};
///
/// let toggles = FeatureToggles::builder()
///     // Recommendations: everyone at Normal, half the requests at Elevated, nobody above.
///     .feature("recommendations", LevelTable::new([1.0, 0.5, 0.0, 0.0, 0.0]))
///     // Spell-check: on up to High, off from Critical.
///     .until("spellcheck", LoadLevel::High)
///     .build()
///     .unwrap();
/// assert_eq!(toggles.rollout("spellcheck", LoadLevel::Critical), Some(0.0));
/// assert!(FeatureToggles::builder().feature("x", LevelTable::new([1.5, 1.0, 1.0, 1.0, 1.0])).build().is_err());
/// ```
#[derive(Clone, Default)]
pub struct FeatureToggles {
    /// `None` when there are no features, so cloning per request touches no shared counter.
    features: Option<Arc<[Feature]>>,
}

/// Builds [`FeatureToggles`].
#[derive(Debug, Default)]
pub struct FeatureTogglesBuilder {
    features: Vec<(String, LevelTable<f64>)>,
}

impl FeatureTogglesBuilder {
    /// A feature enabled for `rollout[level]` of the requests (each in `[0, 1]`).
    #[must_use]
    pub fn feature(mut self, name: impl Into<String>, rollout: LevelTable<f64>) -> Self {
        self.features.push((name.into(), rollout));
        self
    }

    /// A feature fully on at levels up to `last_level`, off above.
    #[must_use]
    pub fn until(self, name: impl Into<String>, last_level: LoadLevel) -> Self {
        let table = LevelTable::from_fn(|level| if level <= last_level { 1.0 } else { 0.0 });
        self.feature(name, table)
    }

    /// Validates every rollout (in `[0, 1]`) and name (unique, non-empty).
    pub fn build(self) -> Result<FeatureToggles, ConfigError> {
        for (i, (name, table)) in self.features.iter().enumerate() {
            if name.is_empty() {
                return Err(ConfigError::new("features", "names must not be empty"));
            }
            if self.features[..i].iter().any(|(other, _)| other == name) {
                return Err(ConfigError::new(
                    format!("features.{name}"),
                    "is defined twice",
                ));
            }
            for (level, &value) in table.iter() {
                check::unit_interval(&format!("features.{name}[{level}]"), value)?;
            }
        }
        let features = (!self.features.is_empty()).then(|| Arc::from(self.features));
        Ok(FeatureToggles { features })
    }
}

impl FeatureToggles {
    /// A builder with no features.
    pub fn builder() -> FeatureTogglesBuilder {
        FeatureTogglesBuilder::default()
    }

    /// The rollout fraction of `feature` at `level`, or `None` for an unknown feature.
    pub fn rollout(&self, feature: &str, level: LoadLevel) -> Option<f64> {
        self.features()
            .iter()
            .find(|(name, _)| name == feature)
            .map(|(_, table)| table[level])
    }

    /// Whether no feature is defined.
    pub fn is_empty(&self) -> bool {
        self.features.is_none()
    }

    fn features(&self) -> &[Feature] {
        self.features.as_deref().unwrap_or(&[])
    }
}

impl fmt::Debug for FeatureToggles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.features().iter().map(|(name, _)| name))
            .finish()
    }
}

/// What a handler should do for this request, put in its extensions by [`DegradationLayer`].
///
/// With the `axum` feature it is an extractor: `async fn handler(degradation: Degradation)`.
#[derive(Clone, Debug)]
pub struct Degradation {
    level: LoadLevel,
    mode: WorkMode,
    /// This request's rollout position in `[0, 1)`.
    position: f64,
    toggles: FeatureToggles,
}

impl Degradation {
    /// A degradation at `level` doing `mode` work with no optional features: what handlers
    /// see when no [`DegradationLayer`] runs (use in tests).
    pub fn new(level: LoadLevel, mode: WorkMode) -> Degradation {
        Degradation {
            level,
            mode,
            position: 0.0,
            toggles: FeatureToggles::default(),
        }
    }

    /// The load level when the request arrived.
    pub fn level(&self) -> LoadLevel {
        self.level
    }

    /// How much work to do.
    pub fn mode(&self) -> WorkMode {
        self.mode
    }

    /// Whether the handler should do full work (`WorkMode::Full`).
    pub fn is_full(&self) -> bool {
        self.mode == WorkMode::Full
    }

    /// Whether the optional feature `name` is enabled for this request. Unknown features are
    /// disabled.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.toggles
            .rollout(name, self.level)
            .is_some_and(|rollout| self.position < rollout)
    }
}

/// Puts a [`Degradation`] (and the bare [`LoadLevel`]) into every http request's extensions.
///
/// Requests are spread over the rollout range by a shared counter scrambled with a
/// multiplicative hash, so a 50 % rollout enables the feature for every other request on
/// average, deterministically.
///
/// ```
/// use brownout::http::{Degradation, DegradationLayer, FeatureToggles};
/// use brownout_core::{LevelTable, LoadLevel, LoadSignal, WorkMode};
/// use tower_layer::Layer;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # #[derive(Clone)] struct Handler;
/// # impl Service<http::Request<()>> for Handler {
/// #     type Response = WorkMode; type Error = std::convert::Infallible;
/// #     type Future = std::future::Ready<Result<WorkMode, std::convert::Infallible>>;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, req: http::Request<()>) -> Self::Future {
/// #         std::future::ready(Ok(req.extensions().get::<Degradation>().unwrap().mode()))
/// #     }
/// # }
/// let layer = DegradationLayer::new(LoadSignal::fixed(LoadLevel::High));
/// let mut svc = layer.layer(Handler);
/// assert_eq!(svc.call(http::Request::new(())).await.unwrap(), WorkMode::Limited);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DegradationLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    signal: LoadSignal,
    work: LevelTable<WorkMode>,
    toggles: FeatureToggles,
    counter: AtomicU64,
}

impl DegradationLayer {
    /// Work modes from the default table (full, full, limited, simple, minimal), no toggles.
    pub fn new(signal: LoadSignal) -> DegradationLayer {
        DegradationLayer::with_config(
            signal,
            LevelTable::default_work(),
            FeatureToggles::default(),
        )
        .expect("the default work table is valid")
    }

    /// A layer with a custom work table and feature toggles.
    pub fn with_config(
        signal: LoadSignal,
        work: LevelTable<WorkMode>,
        toggles: FeatureToggles,
    ) -> Result<DegradationLayer, ConfigError> {
        work.validate_work("work")?;
        Ok(DegradationLayer {
            shared: Arc::new(Shared {
                signal,
                work,
                toggles,
                counter: AtomicU64::new(0),
            }),
        })
    }
}

impl<S> Layer<S> for DegradationLayer {
    type Service = DegradationService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DegradationService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`DegradationLayer`].
#[derive(Clone, Debug)]
pub struct DegradationService<S> {
    inner: S,
    shared: Arc<Shared>,
}

brownout_core::impl_inner_access!(DegradationService<S>);

impl<S, B> Service<Request<B>> for DegradationService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let level = shared.signal.level();
        // Without toggles the rollout position is never read: skip the shared counter, a
        // contended cache line when many threads serve requests.
        let position = if shared.toggles.is_empty() {
            0.0
        } else {
            rollout_position(shared.counter.fetch_add(1, Ordering::Relaxed))
        };
        let degradation = Degradation {
            level,
            mode: shared.work[level],
            position,
            toggles: shared.toggles.clone(),
        };
        req.extensions_mut().insert(level);
        req.extensions_mut().insert(degradation);
        self.inner.call(req)
    }
}

/// Spreads consecutive request numbers over `[0, 1)` (Fibonacci hashing), so a rollout of
/// `r` enables a feature for a fraction `r` of any run of requests.
fn rollout_position(n: u64) -> f64 {
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_fraction_is_respected() {
        let toggles = FeatureToggles::builder()
            .feature("recs", LevelTable::new([1.0, 0.5, 0.0, 0.0, 0.0]))
            .build()
            .unwrap();
        let layer = DegradationLayer::with_config(
            LoadSignal::fixed(LoadLevel::Elevated),
            LevelTable::default_work(),
            toggles,
        )
        .unwrap();
        let mut enabled = 0;
        for _ in 0..10_000 {
            let n = layer.shared.counter.fetch_add(1, Ordering::Relaxed);
            let d = Degradation {
                level: LoadLevel::Elevated,
                mode: WorkMode::Full,
                position: rollout_position(n),
                toggles: layer.shared.toggles.clone(),
            };
            enabled += usize::from(d.is_enabled("recs"));
            assert!(!d.is_enabled("unknown"));
        }
        assert!((4_800..=5_200).contains(&enabled), "{enabled}");
    }

    #[test]
    fn bad_toggles_refused() {
        let err = FeatureToggles::builder()
            .until("a", LoadLevel::High)
            .until("a", LoadLevel::Normal)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "features.a");
        let err = FeatureToggles::builder()
            .feature("b", LevelTable::new([1.0, f64::NAN, 0.0, 0.0, 0.0]))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "features.b[elevated]");
        let bad_work = LevelTable::new([
            WorkMode::Minimal,
            WorkMode::Full,
            WorkMode::Full,
            WorkMode::Full,
            WorkMode::Full,
        ]);
        assert!(
            DegradationLayer::with_config(
                LoadSignal::default(),
                bad_work,
                FeatureToggles::default()
            )
            .is_err()
        );
    }
}
