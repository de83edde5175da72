//! [`RetryLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::classify::{DefaultClassifier, HttpClassifier};
use crate::config::RetryConfig;
use crate::request::{AnyRequest, ByClone, HttpClone, HttpRequests};
use crate::shared::{RetryStats, Shared, State};
use crate::{Retry, RetryBudget};

/// Wraps services in [`Retry`]. Every service it builds, and their clones, share one budget
/// and one set of counters.
///
/// `K` decides what is retried ([`RetryClassifier`](crate::RetryClassifier)), `C` copies
/// requests ([`CloneRequest`](crate::CloneRequest)), `I` says which requests are idempotent
/// and their deadline ([`RequestInfo`](crate::RequestInfo)).
#[derive(Clone)]
pub struct RetryLayer<K = DefaultClassifier, C = ByClone, I = AnyRequest> {
    config: RetryConfig,
    classifier: K,
    cloner: C,
    requests: I,
    state: Arc<State>,
}

impl RetryLayer {
    /// A layer for any `Service<Req>` with `Req: Clone`: errors are retried (except
    /// rejections that say not to), every request counts as idempotent.
    pub fn new(config: RetryConfig) -> RetryLayer {
        RetryLayer {
            config,
            classifier: DefaultClassifier,
            cloner: ByClone,
            requests: AnyRequest,
            state: Arc::new(State::new()),
        }
    }
}

impl RetryLayer<HttpClassifier, HttpClone, HttpRequests> {
    /// A layer for http clients (`Service<http::Request<B>>` returning `http::Response`):
    /// [`HttpClassifier`], idempotent methods only, the [`Deadline`](brownout_core::Deadline)
    /// extension respected, bodies copied when [`TryCloneBody`](crate::TryCloneBody)
    /// (buffer streaming bodies with [`BufferBodyLayer`](crate::body::BufferBodyLayer)).
    ///
    /// The classifier looks into errors through [`AsError`](crate::AsError) (`BoxError`,
    /// `io::Error`, …). For a client whose error type is its own (hyper-util's
    /// `legacy::Error`, tonic's `transport::Error`), box it first with tower's
    /// `ServiceBuilder::map_err(BoxError::from)` below this layer.
    pub fn http(config: RetryConfig) -> Self {
        RetryLayer {
            config,
            classifier: HttpClassifier,
            cloner: HttpClone,
            requests: HttpRequests,
            state: Arc::new(State::new()),
        }
    }
}

impl<K, C, I> RetryLayer<K, C, I> {
    /// Decides what is retried with `classifier`.
    pub fn with_classifier<K2>(self, classifier: K2) -> RetryLayer<K2, C, I> {
        RetryLayer {
            config: self.config,
            classifier,
            cloner: self.cloner,
            requests: self.requests,
            state: self.state,
        }
    }

    /// Copies requests with `cloner`.
    pub fn with_cloner<C2>(self, cloner: C2) -> RetryLayer<K, C2, I> {
        RetryLayer {
            config: self.config,
            classifier: self.classifier,
            cloner,
            requests: self.requests,
            state: self.state,
        }
    }

    /// Decides idempotency (and finds deadlines) with `requests`.
    pub fn with_requests<I2>(self, requests: I2) -> RetryLayer<K, C, I2> {
        RetryLayer {
            config: self.config,
            classifier: self.classifier,
            cloner: self.cloner,
            requests,
            state: self.state,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The budget shared by every service of this layer, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.config.budget.as_ref()
    }

    /// What the services of this layer did so far.
    pub fn stats(&self) -> RetryStats {
        self.state.stats()
    }
}

impl<S, K: Clone, C: Clone, I: Clone> Layer<S> for RetryLayer<K, C, I> {
    type Service = Retry<S, K, C, I>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(
            inner,
            Arc::new(Shared {
                config: self.config.clone(),
                classifier: self.classifier.clone(),
                cloner: self.cloner.clone(),
                requests: self.requests.clone(),
                state: self.state.clone(),
            }),
        )
    }
}

impl<K, C, I> fmt::Debug for RetryLayer<K, C, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
