//! [`AdaptiveTimeoutLayer`]: wraps services in [`AdaptiveTimeout`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use brownout_core::LoadSignal;
use brownout_core::clock::Sampler;
use tower_layer::Layer;

use crate::{AdaptiveTimeout, AdaptiveTimeoutConfig, HttpDeadline, NoDeadline, Shared};

/// Applies [`AdaptiveTimeout`] to services.
///
/// Every service made by one layer (and all their clones) shares one latency estimate, so
/// the timeout follows the whole service's latency, not one connection's.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::{LoadLevel, LoadSignal};
/// use brownout_timeout::{AdaptiveTimeoutConfig, AdaptiveTimeoutLayer};
///
/// let layer = AdaptiveTimeoutLayer::new(AdaptiveTimeoutConfig::default())
///     .with_signal(LoadSignal::fixed(LoadLevel::High));
/// // Before any sample: the initial timeout (1 s) scaled by High's 0.5.
/// assert_eq!(layer.current_timeout(), Some(Duration::from_millis(500)));
/// ```
pub struct AdaptiveTimeoutLayer<D = HttpDeadline> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) signal: LoadSignal,
    pub(crate) deadline: D,
}

impl AdaptiveTimeoutLayer<HttpDeadline> {
    /// A layer with `config`, a level fixed at `Normal` (until
    /// [`with_signal`](AdaptiveTimeoutLayer::with_signal)), reading http callers' deadlines
    /// with [`HttpDeadline`].
    pub fn new(config: AdaptiveTimeoutConfig) -> Self {
        AdaptiveTimeoutLayer {
            shared: Arc::new(Shared::new(config)),
            signal: LoadSignal::default(),
            deadline: HttpDeadline::new(),
        }
    }
}

impl Default for AdaptiveTimeoutLayer<HttpDeadline> {
    fn default() -> Self {
        AdaptiveTimeoutLayer::new(AdaptiveTimeoutConfig::default())
    }
}

impl<D> AdaptiveTimeoutLayer<D> {
    /// Reads the load level from `signal`.
    #[must_use]
    pub fn with_signal(mut self, signal: LoadSignal) -> Self {
        self.signal = signal;
        self
    }

    /// Finds callers' deadlines with `deadline`: a closure `Fn(&Req) -> Option<Deadline>`,
    /// [`NoDeadline`], [`HttpDeadline`] or any [`CallerDeadline`](crate::CallerDeadline).
    pub fn caller_deadline<D2>(self, deadline: D2) -> AdaptiveTimeoutLayer<D2> {
        AdaptiveTimeoutLayer {
            shared: self.shared,
            signal: self.signal,
            deadline,
        }
    }

    /// Ignores callers' deadlines, for request types that carry none.
    pub fn without_caller_deadline(self) -> AdaptiveTimeoutLayer<NoDeadline> {
        self.caller_deadline(NoDeadline)
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveTimeoutConfig {
        &self.shared.config
    }

    /// The timeout a request arriving now would get (before any caller deadline);
    /// `None` means no timer.
    pub fn current_timeout(&self) -> Option<Duration> {
        self.shared.estimator.timeout(self.signal.level())
    }
}

impl<D: Clone> Clone for AdaptiveTimeoutLayer<D> {
    fn clone(&self) -> Self {
        AdaptiveTimeoutLayer {
            shared: self.shared.clone(),
            signal: self.signal.clone(),
            deadline: self.deadline.clone(),
        }
    }
}

impl<D> fmt::Debug for AdaptiveTimeoutLayer<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveTimeoutLayer")
            .field("config", &self.shared.config)
            .field("signal", &self.signal)
            .field("current_timeout", &self.current_timeout())
            .finish_non_exhaustive()
    }
}

impl<S, D: Clone> Layer<S> for AdaptiveTimeoutLayer<D> {
    type Service = AdaptiveTimeout<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveTimeout {
            inner,
            shared: self.shared.clone(),
            signal: self.signal.clone(),
            deadline: self.deadline.clone(),
            sampler: Sampler::new(),
            parked: None,
        }
    }
}
