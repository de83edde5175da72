//! [`PriorityAdmissionLayer`]: wraps services in [`PriorityAdmission`].

use brownout_core::sync::Arc;
use std::fmt;

use brownout_core::FromExtensions;
use tower_layer::Layer;

use crate::PriorityAdmission;
use crate::config::PriorityAdmissionBuilder;
use crate::extract::{DeadlineFromExtensions, NoKey};
use crate::handle::AdmissionHandle;
use crate::shared::Shared;

/// Applies priority admission to a service. Every service this layer builds, and every
/// clone of them, shares one set of permits, one queue, one limit and one rate limiter.
///
/// Build it with [`PriorityAdmissionLayer::builder`].
pub struct PriorityAdmissionLayer<C = FromExtensions, D = DeadlineFromExtensions, K = NoKey> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) classifier: C,
    pub(crate) deadline: D,
    pub(crate) keyed: K,
}

impl PriorityAdmissionLayer {
    /// A builder with the defaults (gradient limit, queue of 128, CoDel 40 ms / 120 ms).
    pub fn builder() -> PriorityAdmissionBuilder {
        PriorityAdmissionBuilder::default()
    }
}

impl Default for PriorityAdmissionLayer {
    /// The builder's defaults (always valid): gradient limit, queue of 128 scaled per level,
    /// CoDel 40 ms / 120 ms, starvation bound 1 s, no rate limit, level fixed at `Normal`,
    /// classes and deadlines read from `http::Request` extensions.
    fn default() -> Self {
        match PriorityAdmissionBuilder::default().build() {
            Ok(layer) => layer,
            Err(e) => unreachable!("default admission configuration is valid: {e}"),
        }
    }
}

impl<C, D, K> PriorityAdmissionLayer<C, D, K> {
    pub(crate) fn from_parts(shared: Arc<Shared>, classifier: C, deadline: D, keyed: K) -> Self {
        PriorityAdmissionLayer {
            shared,
            classifier,
            deadline,
            keyed,
        }
    }

    /// A handle to observe the shared state and to [`close`](AdmissionHandle::close) it.
    pub fn handle(&self) -> AdmissionHandle {
        AdmissionHandle::new(Arc::clone(&self.shared))
    }
}

impl<C: Clone, D: Clone, K: Clone> Clone for PriorityAdmissionLayer<C, D, K> {
    fn clone(&self) -> Self {
        PriorityAdmissionLayer {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            deadline: self.deadline.clone(),
            keyed: self.keyed.clone(),
        }
    }
}

impl<C, D, K> fmt::Debug for PriorityAdmissionLayer<C, D, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityAdmissionLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone, D: Clone, K: Clone> Layer<S> for PriorityAdmissionLayer<C, D, K> {
    type Service = PriorityAdmission<S, C, D, K>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityAdmission {
            inner,
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            deadline: self.deadline.clone(),
            keyed: self.keyed.clone(),
            pending: None,
        }
    }
}
