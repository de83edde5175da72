//! [`LoadShedLayer`]: wraps services in [`LoadShed`].

use std::fmt;
use std::sync::Arc;

use brownout_core::{FromExtensions, LoadSignal};
use tower_layer::Layer;

use crate::{LoadShed, LoadShedConfig, Shared};

/// Applies [`LoadShed`] to services: sheds requests whose class the current load level
/// sheds (and, optionally, requests arriving while the inner service is not ready).
///
/// Every service made by one layer (and every clone of them) shares one configuration,
/// one set of decision counters and one smooth-mode ramp.
///
/// ```
/// use brownout_core::{LoadLevel, LoadSignal, Priority};
/// use brownout_shed::{LoadShedConfig, LoadShedLayer};
///
/// let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
/// let layer = LoadShedLayer::new(LoadShedConfig::default())
///     .with_signal(signal)
///     .classifier(|path: &&str| if path.starts_with("/health") { Priority::Critical } else { Priority::Low });
/// # let _ = (layer, publisher);
/// ```
pub struct LoadShedLayer<C = FromExtensions> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) signal: LoadSignal,
    pub(crate) classifier: C,
}

impl LoadShedLayer<FromExtensions> {
    /// A layer with `config`, reading a level fixed at `Normal` (until
    /// [`with_signal`](LoadShedLayer::with_signal)) and classifying http requests by the
    /// [`Priority`](brownout_core::Priority) in their extensions.
    pub fn new(config: LoadShedConfig) -> Self {
        LoadShedLayer {
            shared: Arc::new(Shared::new(config)),
            signal: LoadSignal::default(),
            classifier: FromExtensions::default(),
        }
    }
}

impl Default for LoadShedLayer<FromExtensions> {
    fn default() -> Self {
        LoadShedLayer::new(LoadShedConfig::default())
    }
}

impl<C> LoadShedLayer<C> {
    /// Reads the load level from `signal` (usually the monitor's).
    #[must_use]
    pub fn with_signal(self, signal: LoadSignal) -> Self {
        LoadShedLayer {
            // A new signal starts a new smooth-mode history.
            shared: Arc::new(Shared::new(self.shared.config)),
            signal,
            classifier: self.classifier,
        }
    }

    /// Classifies requests with `classifier` (a closure `Fn(&Req) -> Priority`,
    /// [`Fixed`](brownout_core::Fixed), or any [`Classify`](brownout_core::Classify)).
    pub fn classifier<C2>(self, classifier: C2) -> LoadShedLayer<C2> {
        LoadShedLayer {
            shared: self.shared,
            signal: self.signal,
            classifier,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LoadShedConfig {
        &self.shared.config
    }

    /// The signal the layer reads.
    pub fn signal(&self) -> &LoadSignal {
        &self.signal
    }
}

impl<C: Clone> Clone for LoadShedLayer<C> {
    fn clone(&self) -> Self {
        LoadShedLayer {
            shared: self.shared.clone(),
            signal: self.signal.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for LoadShedLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("config", &self.shared.config)
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for LoadShedLayer<C> {
    type Service = LoadShed<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed::from_parts(
            inner,
            self.shared.clone(),
            self.signal.clone(),
            self.classifier.clone(),
        )
    }
}
