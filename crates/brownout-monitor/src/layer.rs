//! [`MonitorLayer`]: wraps services so that a [`Monitor`](crate::Monitor) sees their traffic.

use std::fmt;
use std::sync::Arc;

use brownout_core::ErrIsFailure;
use brownout_core::clock::Sampler;
use tower_layer::Layer;

use crate::MonitorService;
use crate::recorder::Recorder;

/// A layer whose services record latency, outcome and in-flight count into one
/// [`Monitor`](crate::Monitor). Get it from [`Monitor::layer`](crate::Monitor::layer).
///
/// Every service it builds (and every clone of them) feeds the same monitor. It does not keep
/// the monitor alive: once the monitor is dropped the services still work, and their
/// measurements are simply no longer read.
pub struct MonitorLayer<C = ErrIsFailure> {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) classifier: C,
}

impl<C> MonitorLayer<C> {
    /// The same layer classifying outcomes with `classifier`
    /// (e.g. [`HttpOutcome`](crate::HttpOutcome) for http services).
    pub fn with_classifier<C2>(self, classifier: C2) -> MonitorLayer<C2> {
        MonitorLayer {
            recorder: self.recorder,
            classifier,
        }
    }
}

impl<C: Clone> Clone for MonitorLayer<C> {
    fn clone(&self) -> Self {
        MonitorLayer {
            recorder: self.recorder.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for MonitorLayer<C> {
    type Service = MonitorService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        MonitorService {
            inner,
            recorder: self.recorder.clone(),
            classifier: self.classifier.clone(),
            sampler: Sampler::new(),
        }
    }
}

impl<C> fmt::Debug for MonitorLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorLayer")
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}
