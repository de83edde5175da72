//! Fleet-wide overload control through Redis: rate limits shared by every instance of a
//! service, and a fleet load level every instance can shed for.
//!
//! ```no_run
//! use brownout_core::{LoadLevel, LoadSignal};
//! use brownout_redis::{Fleet, FleetConfig, FleetRateLimitConfig, FleetRateLimitLayer};
//! use tower::{ServiceBuilder, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let fleet = Fleet::start(FleetConfig::builder("redis://127.0.0.1:6379").build().unwrap()).unwrap();
//! fleet.report_signal(LoadSignal::fixed(LoadLevel::Normal)); // this instance's own level
//! let limit = FleetRateLimitConfig::builder("api", 1_000.0).build().unwrap(); // 1000/s fleet-wide
//! let svc = ServiceBuilder::new()
//!     .layer(FleetRateLimitLayer::new(&fleet, limit))
//!     .service(service_fn(|req: &'static str| async move { Ok::<_, std::convert::Infallible>(req) }));
//! # let _ = svc;
//! # }
//! ```
//!
//! # Why
//!
//! A per-instance limit of `R` is a fleet limit of `N × R` that drifts as instances come and
//! go, and one instance cannot see that the fleet is drowning. tower's `RateLimit` (and the
//! local limits of `brownout-admission`) count on one instance only. This crate keeps the
//! state in Redis, which such teams already run:
//!
//! - **[`FleetRateLimitLayer`]**: GCRA executed atomically in Redis (a Lua script loaded once
//!   and called by its hash, `EVALSHA`, reloaded on `NOSCRIPT`), one bucket per limit and
//!   key (tenant, route), using the server's clock. Requests never wait on Redis: each
//!   instance *leases* small batches of tokens in the background and admits from its local
//!   pool with one atomic decrement; it leases the next batch when half of the last is used.
//!   Rate and burst scale per level through a `LevelTable` like the local limits. Refusals
//!   are [`Rejected`](brownout_core::Rejected) `RateLimited` with a `retry_after` taken from
//!   the shared bucket (when its next token conforms).
//! - **[`Fleet`]**: each tick, every instance publishes its level and signals with a TTL and
//!   reads every live instance's report; [`FleetAggregate`] derives the fleet level (max,
//!   quantile, or the share of instances at or above a level), and [`FleetLevelSource`]
//!   feeds it to the local monitor as a [`PressureSource`](brownout_core::PressureSource).
//!   Instances that stop publishing fall out after the TTL.
//!
//! # When Redis is slow or gone
//!
//! Every Redis call is bounded ([`FleetBuilder::call_timeout`], milliseconds) and goes
//! through a small breaker. When it opens (consecutive failures), limits become local at
//! once — the fleet limit divided by the live instances last seen, per level — and the fleet
//! level source samples nothing after the TTL, so the local signals decide. After
//! `open_for`, one probe; when it succeeds, leases resume. The connection is re-made
//! automatically. The fallback is visible in the `brownout_fleet_fallback` gauge, in
//! [`Fleet::status`] ([`FleetStatus::check`] fits a health registry) and in `tracing`
//! warnings.
//!
//! # Consistency
//!
//! The fleet admits at most the shared GCRA's rate plus what instances hold in their pools
//! (at most 1.5 batches each, given back after the lease TTL). Leases are the unit of
//! sharing: an instance that takes a batch and goes idle keeps it until the TTL. See
//! `docs/fleet.md` for measured figures.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod breaker;
mod config;
mod fleet;
pub mod future;
pub mod gcra;
mod key;
mod layer;
mod limiter;

use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_core::{BoxError, LoadSignal};
use tower_service::Service;

pub use breaker::BreakerState;
pub use config::{
    FleetAggregate, FleetBuilder, FleetConfig, FleetRateLimitBuilder, FleetRateLimitConfig,
};
pub use fleet::{
    FALLBACK_GAUGE, FLEET_LEVEL_GAUGE, Fleet, FleetLevelSource, FleetMode, FleetStatus,
    INSTANCES_GAUGE, InstanceReport, REDIS_CALLS_TOTAL,
};
pub use future::ResponseFuture;
pub use key::{ByKey, FleetKey, Global, KeySpace};
pub use layer::FleetRateLimitLayer;

use limiter::Limiter;

/// A fleet-wide rate limit in front of `S` (see the [crate docs](crate)).
///
/// `poll_ready` forwards to the inner service; the decision is made in `call`, from the
/// local pool of leased tokens (one atomic operation) or, while Redis is unreachable, from
/// the local share (one CAS). No request ever waits on Redis.
///
/// # Errors
///
/// Refused requests fail with [`Rejected`](brownout_core::Rejected) (`RateLimited`, with
/// `retry_after`) boxed into [`BoxError`]; the inner service's errors are boxed too.
pub struct FleetRateLimit<S, X: KeySpace = Global> {
    inner: S,
    limiter: Arc<Limiter<X::Key>>,
    signal: LoadSignal,
    key: X,
}

brownout_core::impl_inner_access!(FleetRateLimit<S, X> where X: KeySpace);

impl<S: Clone, X: KeySpace + Clone> Clone for FleetRateLimit<S, X> {
    fn clone(&self) -> Self {
        FleetRateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            signal: self.signal.clone(),
            key: self.key.clone(),
        }
    }
}

impl<S, X: KeySpace> std::fmt::Debug for FleetRateLimit<S, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetRateLimit")
            .field("limiter", &self.limiter)
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

impl<S, X, Req> Service<Req> for FleetRateLimit<S, X>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: FleetKey<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let level = self.signal.level();
        let decision = if X::GLOBAL {
            match self.limiter.single() {
                Some(pool) => self.limiter.check(pool, level),
                None => Ok(()),
            }
        } else {
            match self.key.key(&req) {
                Some(key) => self.limiter.check_key(&key, level),
                None => Ok(()),
            }
        };
        match decision {
            Ok(()) => {
                self.limiter.metrics.admitted(None, level);
                ResponseFuture::called(self.inner.call(req))
            }
            Err(rejected) => {
                self.limiter.metrics.rejected(&rejected);
                ResponseFuture::rejected(rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use brownout_core::{LoadLevel, LoadSignal, RejectReason, Rejected};
    use tower::{Layer, Service, ServiceExt};

    use crate::{Fleet, FleetConfig, FleetRateLimitConfig, FleetRateLimitLayer};

    /// A fleet whose Redis refuses connections: limits are the local share at once.
    async fn fallback_fleet() -> Fleet {
        let config = FleetConfig::builder("redis://127.0.0.1:1")
            .tick(Duration::from_secs(10))
            .failures_to_open(1)
            .build()
            .unwrap();
        let fleet = Fleet::start(config).unwrap();
        fleet.tick_now().await;
        assert!(fleet.status().is_fallback());
        fleet
    }

    #[tokio::test]
    async fn rel_01_poll_ready_takes_no_token() {
        let fleet = fallback_fleet().await;
        let limit = FleetRateLimitConfig::builder("one", 1.0)
            .burst(1)
            .build()
            .unwrap();
        let mut svc =
            FleetRateLimitLayer::new(&fleet, limit).layer(tower::service_fn(|_: ()| async {
                Ok::<_, std::convert::Infallible>(())
            }));
        for _ in 0..10 {
            svc.ready().await.unwrap();
        }
        assert!(svc.call(()).await.is_ok(), "the only token is still there");
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        let rejected = Rejected::find_in_box(&*err).unwrap();
        assert_eq!(rejected.reason(), RejectReason::RateLimited);
        assert!(rejected.retry_after().unwrap() > Duration::from_millis(900));
    }

    #[tokio::test]
    async fn keyed_limits_are_separate_and_unkeyed_requests_pass() {
        let fleet = fallback_fleet().await;
        let limit = FleetRateLimitConfig::builder("tenant", 1.0)
            .burst(1)
            .build()
            .unwrap();
        let layer = FleetRateLimitLayer::keyed(&fleet, limit, |t: &Option<&'static str>| *t)
            .with_signal(LoadSignal::fixed(LoadLevel::Normal));
        let mut svc = layer.layer(tower::service_fn(|_: Option<&'static str>| async {
            Ok::<_, std::convert::Infallible>(())
        }));
        let mut call = async |t| svc.ready().await.unwrap().call(t).await.is_ok();
        assert!(call(Some("a")).await);
        assert!(!call(Some("a")).await, "tenant a spent its burst");
        assert!(call(Some("b")).await, "tenant b has its own bucket");
        for _ in 0..5 {
            assert!(call(None).await, "no key, no limit");
        }
    }
}
