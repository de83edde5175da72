//! [`HedgeLayer`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use brownout_core::telemetry::DecisionMetrics;
use tower_layer::Layer;

use super::shared::{HedgeShared, Latencies};
use super::{Hedge, HedgeConfig, HedgeStats};
use crate::classify::DefaultClassifier;
use crate::request::{AnyRequest, ByClone};

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
