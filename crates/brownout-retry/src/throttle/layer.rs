//! [`AdaptiveThrottleLayer`].

use std::fmt;
use std::sync::Arc;

use brownout_core::{Fixed, FromExtensions, Priority};
use tower_layer::Layer;

use super::state::ThrottleState;
use super::{
    AdaptiveThrottle, AdaptiveThrottleConfig, DefaultAccept, HttpAccept, ThrottleStats, stats,
};

/// Wraps services in [`AdaptiveThrottle`]; every service it builds shares one window.
#[derive(Clone)]
pub struct AdaptiveThrottleLayer<A = DefaultAccept, P = Fixed> {
    accept: A,
    classify: P,
    state: Arc<ThrottleState>,
}

impl AdaptiveThrottleLayer {
    /// A throttle for any service: responses are accepts, errors are not; every request is
    /// class Medium (set a classifier with [`with_classifier`](Self::with_classifier)).
    pub fn new(config: AdaptiveThrottleConfig) -> Self {
        AdaptiveThrottleLayer {
            accept: DefaultAccept,
            classify: Fixed(Priority::Medium),
            state: Arc::new(ThrottleState::new(config)),
        }
    }
}

impl AdaptiveThrottleLayer<HttpAccept, FromExtensions> {
    /// A throttle for http clients: [`HttpAccept`] (503/429/gRPC 8 and 14 are refusals,
    /// `x-load-level` read), the class from the request's extensions.
    pub fn http(config: AdaptiveThrottleConfig) -> Self {
        AdaptiveThrottleLayer {
            accept: HttpAccept,
            classify: FromExtensions::default(),
            state: Arc::new(ThrottleState::new(config)),
        }
    }
}

impl<A, P> AdaptiveThrottleLayer<A, P> {
    /// Decides what counts as accepted with `accept`.
    pub fn with_accept<A2>(self, accept: A2) -> AdaptiveThrottleLayer<A2, P> {
        AdaptiveThrottleLayer {
            accept,
            classify: self.classify,
            state: self.state,
        }
    }

    /// Classifies requests with `classify` (for the level-based drop).
    pub fn with_classifier<P2>(self, classify: P2) -> AdaptiveThrottleLayer<A, P2> {
        AdaptiveThrottleLayer {
            accept: self.accept,
            classify,
            state: self.state,
        }
    }

    /// What the throttle saw and did.
    pub fn stats(&self) -> ThrottleStats {
        stats(&self.state)
    }
}

impl<S, A: Clone, P: Clone> Layer<S> for AdaptiveThrottleLayer<A, P> {
    type Service = AdaptiveThrottle<S, A, P>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveThrottle {
            inner,
            accept: self.accept.clone(),
            classify: self.classify.clone(),
            state: self.state.clone(),
        }
    }
}

impl<A, P> fmt::Debug for AdaptiveThrottleLayer<A, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleLayer")
            .field("config", &self.state.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
