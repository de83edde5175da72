//! [`FleetRateLimitLayer`]: wraps services in [`FleetRateLimit`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use brownout_core::LoadSignal;
use tower_layer::Layer;

use crate::config::FleetRateLimitConfig;
use crate::key::{ByKey, Global, KeySpace};
use crate::limiter::Limiter;
use crate::{Fleet, FleetRateLimit};

/// Applies a fleet-wide rate limit ([`FleetRateLimit`]) to services.
///
/// Every service made by one layer (and every clone) shares one set of leased token pools
/// and one set of decision counters (`layer = "fleet_rate"`).
///
/// ```no_run
/// use brownout_redis::{Fleet, FleetConfig, FleetRateLimitConfig, FleetRateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let fleet = Fleet::start(FleetConfig::builder("redis://127.0.0.1:6379").build().unwrap()).unwrap();
/// // 100 requests per second per tenant, across the whole fleet.
/// let per_tenant = FleetRateLimitLayer::keyed(
///     &fleet,
///     FleetRateLimitConfig::builder("tenant", 100.0).build().unwrap(),
///     |req: &http::Request<()>| req.headers().get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned),
/// );
/// # let _ = per_tenant;
/// # }
/// ```
pub struct FleetRateLimitLayer<X: KeySpace = Global> {
    pub(crate) limiter: Arc<Limiter<X::Key>>,
    pub(crate) signal: LoadSignal,
    pub(crate) key: X,
}

impl FleetRateLimitLayer<Global> {
    /// One limit for every request, shared by the fleet; reads a level fixed at `Normal`
    /// until [`with_signal`](Self::with_signal). Leases the first batch at once.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (leases run as tasks).
    pub fn new(fleet: &Fleet, config: FleetRateLimitConfig) -> Self {
        FleetRateLimitLayer {
            limiter: Limiter::new(fleet.inner.clone(), config, true),
            signal: LoadSignal::default(),
            key: Global,
        }
    }
}

impl<F, K> FleetRateLimitLayer<ByKey<F, K>>
where
    K: std::hash::Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// One limit per key (tenant, route, user…) that `key` extracts from the request;
    /// requests for which it returns `None` pass unlimited. Keys idle for ten lease TTLs
    /// are forgotten.
    pub fn keyed<Req>(fleet: &Fleet, config: FleetRateLimitConfig, key: F) -> Self
    where
        F: Fn(&Req) -> Option<K>,
    {
        FleetRateLimitLayer {
            limiter: Limiter::new(fleet.inner.clone(), config, false),
            signal: LoadSignal::default(),
            key: ByKey {
                f: key,
                _key: PhantomData,
            },
        }
    }
}

impl<X: KeySpace> FleetRateLimitLayer<X> {
    /// Scales the limit by the level read from `signal` (usually the monitor's, which may
    /// itself follow the fleet level).
    #[must_use]
    pub fn with_signal(mut self, signal: LoadSignal) -> Self {
        self.signal = signal;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &FleetRateLimitConfig {
        &self.limiter.config
    }
}

impl<X: KeySpace + Clone> Clone for FleetRateLimitLayer<X> {
    fn clone(&self) -> Self {
        FleetRateLimitLayer {
            limiter: self.limiter.clone(),
            signal: self.signal.clone(),
            key: self.key.clone(),
        }
    }
}

impl<X: KeySpace> fmt::Debug for FleetRateLimitLayer<X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetRateLimitLayer")
            .field("limiter", &self.limiter)
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

impl<S, X: KeySpace + Clone> Layer<S> for FleetRateLimitLayer<X> {
    type Service = FleetRateLimit<S, X>;

    fn layer(&self, inner: S) -> Self::Service {
        FleetRateLimit {
            inner,
            limiter: self.limiter.clone(),
            signal: self.signal.clone(),
            key: self.key.clone(),
        }
    }
}
