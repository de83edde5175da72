//! The shared state of one fleet rate limit: token pools leased from Redis, one per key, and
//! the local GCRA each pool falls back to.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{LevelTable, LoadLevel, RejectReason, Rejected};

use crate::config::FleetRateLimitConfig;
use crate::fleet::{FleetInner, TickHook};
use crate::gcra::{LocalGcra, interval_and_tau_us};

/// Leased tokens of one key, plus its local fallback limiter.
pub(crate) struct Pool {
    redis_key: String,
    /// Tokens leased and not yet used.
    tokens: AtomicU64,
    /// The level whose rate the tokens were leased at.
    level: AtomicU8,
    /// One lease in flight at most.
    refilling: AtomicBool,
    /// The next lease is not sent before this (ns, fleet clock): the shared state said the
    /// bucket would be empty until then.
    not_before_ns: AtomicU64,
    /// When one more token conforms in the shared bucket (ns): the `retry_after` of refusals.
    retry_at_ns: AtomicU64,
    /// When the last lease succeeded (ns).
    leased_at_ns: AtomicU64,
    /// Shared-bucket time (ns) of tokens leased at a level no longer in force, given back
    /// at the next tick at the cost they were leased at.
    stale_ns: AtomicU64,
    local: LocalGcra,
}

impl Pool {
    fn new(redis_key: String, level: LoadLevel) -> Pool {
        Pool {
            redis_key,
            tokens: AtomicU64::new(0),
            level: AtomicU8::new(level.as_u8()),
            refilling: AtomicBool::new(false),
            not_before_ns: AtomicU64::new(0),
            retry_at_ns: AtomicU64::new(0),
            leased_at_ns: AtomicU64::new(0),
            stale_ns: AtomicU64::new(0),
            local: LocalGcra::default(),
        }
    }

    /// Takes one leased token; returns the tokens left, or `None` when the pool is empty.
    #[inline]
    pub(crate) fn take(&self) -> Option<u64> {
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
            .ok()
            .map(|before| before - 1)
    }

    /// Tokens available now.
    pub(crate) fn available(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }
}

/// Local fallback limits of one level: emission interval and tolerance (ns).
#[derive(Debug, Default)]
struct LocalLimit {
    interval_ns: AtomicU64,
    tau_ns: AtomicU64,
}

pub(crate) struct Limiter<K> {
    pub(crate) fleet: Arc<FleetInner>,
    pub(crate) config: FleetRateLimitConfig,
    pub(crate) metrics: DecisionMetrics,
    /// Batch per level (scaled like the rate, at least 1).
    batch: LevelTable<u64>,
    /// Time one fleet token takes at each level (ns): the floor of `retry_after`.
    fleet_interval_ns: LevelTable<u64>,
    local: LevelTable<LocalLimit>,
    local_divisor: AtomicUsize,
    lease_ttl_ns: u64,
    single: Option<Arc<Pool>>,
    pools: RwLock<HashMap<K, Arc<Pool>>>,
}

impl<K> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config)
            .field("shared", &self.fleet.shared())
            .finish_non_exhaustive()
    }
}

impl<K> Limiter<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    pub(crate) fn new(
        fleet: Arc<FleetInner>,
        config: FleetRateLimitConfig,
        global: bool,
    ) -> Arc<Self> {
        let prefix = format!("{}:rl:{}", fleet.config.prefix, config.name);
        let batch = LevelTable::from_fn(|level| {
            (f64::from(config.batch) * config.rate_table[level])
                .round()
                .max(1.0) as u64
        });
        let fleet_interval_ns = LevelTable::from_fn(|level| {
            let (rate, _) = config.scaled(level);
            (1e9 / rate).round().clamp(1.0, 1e18) as u64
        });
        let single =
            global.then(|| Arc::new(Pool::new(format!("{prefix}:global"), LoadLevel::Normal)));
        let limiter = Arc::new(Limiter {
            fleet: fleet.clone(),
            metrics: DecisionMetrics::new("fleet_rate"),
            batch,
            fleet_interval_ns,
            local: LevelTable::from_fn(|_| LocalLimit::default()),
            local_divisor: AtomicUsize::new(0),
            lease_ttl_ns: u64::try_from(config.lease_ttl.as_nanos()).unwrap_or(u64::MAX),
            single,
            pools: RwLock::new(HashMap::new()),
            config,
        });
        limiter.rebalance(fleet.live_instances());
        let hook: Arc<dyn TickHook> = limiter.clone();
        fleet.register(Arc::downgrade(&hook));
        if let Some(pool) = &limiter.single {
            // Lease the first batch now so the first requests find tokens.
            limiter.refill(pool, LoadLevel::Normal);
        }
        limiter
    }

    fn key_prefix(&self) -> String {
        format!("{}:rl:{}", self.fleet.config.prefix, self.config.name)
    }

    /// Sets the local fallback limits to the fleet limits divided by `live` instances.
    fn rebalance(&self, live: usize) {
        let live = live.max(1);
        if self.local_divisor.swap(live, Ordering::Relaxed) == live {
            return;
        }
        for (level, limit) in self.local.iter() {
            let (rate, burst) = self.config.scaled(level);
            let share = rate / live as f64;
            let interval = (1e9 / share).round().clamp(1.0, 1e18) as u64;
            let burst = (burst / live as f64).max(1.0);
            limit.interval_ns.store(interval, Ordering::Relaxed);
            limit.tau_ns.store(
                (interval as f64 * burst).min(1e18) as u64,
                Ordering::Relaxed,
            );
        }
    }

    /// The single pool of a global limit.
    #[inline]
    pub(crate) fn single(&self) -> Option<&Arc<Pool>> {
        self.single.as_ref()
    }

    /// Decides one request for `key` at `level`.
    pub(crate) fn check_key(&self, key: &K, level: LoadLevel) -> Result<(), Rejected> {
        {
            let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(pool) = pools.get(key) {
                return self.check(pool, level);
            }
        }
        let pool = {
            let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
            pools
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Pool::new(format!("{}:{key}", self.key_prefix()), level))
                })
                .clone()
        };
        self.check(&pool, level)
    }

    /// Decides one request against `pool` at `level`: a leased token while Redis answers,
    /// the local share while it does not. Never waits.
    #[inline]
    pub(crate) fn check(&self, pool: &Arc<Pool>, level: LoadLevel) -> Result<(), Rejected> {
        if self.fleet.shared() {
            if pool.level.load(Ordering::Relaxed) != level.as_u8() {
                // Tokens leased at another level's rate: set them aside, lease anew.
                let old = pool.level.swap(level.as_u8(), Ordering::AcqRel);
                if old != level.as_u8() {
                    let stale = pool.tokens.swap(0, Ordering::AcqRel);
                    let cost = self.fleet_interval_ns[LoadLevel::saturating_from_u8(old)];
                    pool.stale_ns
                        .fetch_add(stale.saturating_mul(cost), Ordering::Relaxed);
                }
            }
            if let Some(left) = pool.take() {
                if left <= self.batch[level] / 2 {
                    self.refill(pool, level);
                }
                return Ok(());
            }
            self.refill(pool, level);
            let now = self.fleet.now_ns();
            let leased_at = pool.leased_at_ns.load(Ordering::Relaxed);
            if leased_at == 0 || now.saturating_sub(leased_at) > self.lease_ttl_ns {
                // A cold pool (new key, or idle past the lease TTL): its first lease is in
                // flight. Admit under the local share meanwhile rather than refuse a
                // tenant's first request for a round trip.
                return self.check_local(pool, level, now);
            }
            let wait = pool
                .retry_at_ns
                .load(Ordering::Relaxed)
                .saturating_sub(now)
                .max(self.fleet_interval_ns[level]);
            return Err(Rejected::new(RejectReason::RateLimited, level)
                .with_retry_after(Duration::from_nanos(wait)));
        }
        self.check_local(pool, level, self.fleet.now_ns())
    }

    /// The local share: the fleet limit divided by the live instances last seen.
    #[inline]
    fn check_local(&self, pool: &Pool, level: LoadLevel, now: u64) -> Result<(), Rejected> {
        let limit = &self.local[level];
        pool.local
            .check(
                now,
                limit.interval_ns.load(Ordering::Relaxed),
                limit.tau_ns.load(Ordering::Relaxed),
            )
            .map_err(|wait| Rejected::new(RejectReason::RateLimited, level).with_retry_after(wait))
    }

    /// Starts a lease for `pool` unless one is in flight.
    fn refill(&self, pool: &Arc<Pool>, level: LoadLevel) {
        if pool.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let fleet = self.fleet.clone();
        let pool = pool.clone();
        let (rate, burst) = self.config.scaled(level);
        let batch = self.batch[level];
        let cost_ns = self.fleet_interval_ns[level];
        self.fleet.handle.spawn(async move {
            lease(&fleet, &pool, level, (rate, burst, cost_ns), batch).await;
            pool.refilling.store(false, Ordering::Release);
        });
    }

    /// Moves the shared bucket's TAT back by `ns` (the cost of unused tokens).
    fn give_back(&self, pool: &Arc<Pool>, ns: u64) {
        if ns < 1_000 {
            return;
        }
        let fleet = self.fleet.clone();
        let pool = pool.clone();
        self.fleet.handle.spawn(async move {
            // With an interval of 1 µs, "-n tokens" moves the TAT back by n µs.
            let mut conn = fleet.conn.clone();
            let mut invocation = fleet.lease_script.prepare_invoke();
            invocation
                .key(&pool.redis_key)
                .arg(1.0)
                .arg(0.0)
                .arg(-((ns / 1_000) as f64))
                .arg(1);
            let _: Option<(i64, i64, i64)> = fleet
                .guarded("give_back", invocation.invoke_async(&mut conn))
                .await;
        });
    }

    fn pools_snapshot(&self) -> Vec<Arc<Pool>> {
        let mut all: Vec<Arc<Pool>> = self.single.iter().cloned().collect();
        all.extend(
            self.pools
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned(),
        );
        all
    }
}

/// One lease: waits for the time the shared state said the bucket refills (never on a
/// request's path), asks Redis for up to `batch` tokens, and records what the shared state
/// says about the next token.
async fn lease(
    fleet: &FleetInner,
    pool: &Pool,
    level: LoadLevel,
    (rate, burst, cost_ns): (f64, f64, u64),
    batch: u64,
) {
    let not_before = pool.not_before_ns.load(Ordering::Relaxed);
    let now = fleet.now_ns();
    if not_before > now {
        tokio::time::sleep(Duration::from_nanos(not_before - now)).await;
    }
    if !fleet.shared() {
        return;
    }
    let (interval, tau) = interval_and_tau_us(rate, burst);
    let want = (batch / 2).max(1);
    let mut conn = fleet.conn.clone();
    let mut invocation = fleet.lease_script.prepare_invoke();
    invocation
        .key(&pool.redis_key)
        .arg(interval)
        .arg(tau)
        .arg(batch)
        .arg(want);
    let Some((granted, wait_one_us, wait_want_us)) = fleet
        .guarded::<(i64, i64, i64), _>("lease", invocation.invoke_async(&mut conn))
        .await
    else {
        return;
    };
    let now = fleet.now_ns();
    let granted = u64::try_from(granted).unwrap_or(0);
    if pool.level.load(Ordering::Acquire) == level.as_u8() {
        pool.tokens.fetch_add(granted, Ordering::AcqRel);
    } else {
        // The level changed while the lease was in flight: these tokens cost another rate.
        pool.stale_ns
            .fetch_add(granted.saturating_mul(cost_ns), Ordering::Relaxed);
    }
    pool.leased_at_ns.store(now, Ordering::Relaxed);
    let us = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1000);
    pool.retry_at_ns
        .store(now.saturating_add(us(wait_one_us)), Ordering::Relaxed);
    let next = if granted < batch {
        // The bucket is (nearly) empty: come back when half a batch has accrued, so a
        // contended limit costs one call per half batch, not one per token.
        now.saturating_add(us(wait_want_us))
    } else {
        0
    };
    pool.not_before_ns.store(next, Ordering::Relaxed);
}

impl<K> TickHook for Limiter<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    fn on_tick(&self, shared: bool, live: usize) {
        self.rebalance(live);
        let now = self.fleet.now_ns();
        let ttl = u64::try_from(self.config.lease_ttl.as_nanos()).unwrap_or(u64::MAX);
        for pool in self.pools_snapshot() {
            let level = LoadLevel::saturating_from_u8(pool.level.load(Ordering::Relaxed));
            let stale_ns = pool.stale_ns.swap(0, Ordering::Relaxed);
            if !shared {
                // Leased tokens are not used under local limits; the shared bucket has
                // refilled by the time Redis is back.
                pool.tokens.store(0, Ordering::Relaxed);
                continue;
            }
            let old = now.saturating_sub(pool.leased_at_ns.load(Ordering::Relaxed)) > ttl;
            let expired = if old {
                pool.tokens.swap(0, Ordering::AcqRel)
            } else {
                0
            };
            let expired_ns = expired.saturating_mul(self.fleet_interval_ns[level]);
            self.give_back(&pool, stale_ns.saturating_add(expired_ns));
        }
        // Forget keys idle for ten lease TTLs.
        let idle = ttl.saturating_mul(10);
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|_, p| {
            p.available() > 0
                || p.refilling.load(Ordering::Relaxed)
                || now.saturating_sub(p.leased_at_ns.load(Ordering::Relaxed)) < idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Concurrent takers never take more tokens than were added, and never underflow.
        #[test]
        fn pool_take_conserves_tokens(added in 0u64..500, takers in 1usize..6, attempts in 0usize..200) {
            let pool = Pool::new("k".into(), LoadLevel::Normal);
            pool.tokens.fetch_add(added, Ordering::AcqRel);
            let taken = AtomicU64::new(0);
            std::thread::scope(|s| {
                for _ in 0..takers {
                    s.spawn(|| {
                        for _ in 0..attempts {
                            if pool.take().is_some() {
                                taken.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            let taken = taken.into_inner();
            prop_assert_eq!(taken, added.min((takers * attempts) as u64));
            prop_assert_eq!(pool.available(), added - taken);
        }
    }
}
