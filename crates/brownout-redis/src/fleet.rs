//! The fleet: one Redis connection per instance, a tick that publishes this instance's
//! report and reads everyone else's, the breaker in front of Redis, and the fleet level.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use brownout_core::{ConfigError, LoadLevel, LoadSignal, PressureSource};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};
use tokio::runtime::Handle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::breaker::{Breaker, BreakerState};
use crate::config::FleetConfig;
use crate::gcra::LEASE_SCRIPT;

/// Publishes one instance's report and returns every live report, dropping expired ones.
///
/// `KEYS`: the reports hash, the expiry sorted set. `ARGV`: id, report, TTL (ms), `1` to
/// publish (`0`: read only, after the instance left).
const HEARTBEAT_SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(stale) do redis.call('HDEL', KEYS[1], id) end
if #stale > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
redis.call('PEXPIRE', KEYS[1], ttl * 10)
redis.call('PEXPIRE', KEYS[2], ttl * 10)
return redis.call('HGETALL', KEYS[1])
";

/// `brownout_fleet_fallback{fleet}`: 1 while limits are local because Redis is unreachable
/// (`fleet` is the configured key prefix, as on every fleet metric).
pub const FALLBACK_GAUGE: &str = "brownout_fleet_fallback";
/// `brownout_fleet_instances{fleet}`: live instances in the last fleet read.
pub const INSTANCES_GAUGE: &str = "brownout_fleet_instances";
/// `brownout_fleet_level{fleet}`: the fleet level of the last read (0 Normal … 4 Emergency).
pub const FLEET_LEVEL_GAUGE: &str = "brownout_fleet_level";
/// `brownout_fleet_redis_calls_total{fleet, op, outcome}`: Redis calls (`ok`, `error`, `timeout`, `refused`).
pub const REDIS_CALLS_TOTAL: &str = "brownout_fleet_redis_calls_total";

const NO_LEVEL: u8 = u8::MAX;

/// What one instance tells the fleet each tick: its own level and any named signals.
///
/// Publish the level the instance derives from its *own* signals. If the published level
/// already includes the fleet level (a monitor fed by [`FleetLevelSource`]), one busy
/// instance can latch the whole fleet high: every instance would keep re-publishing the
/// fleet's level.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReport {
    /// The instance's id.
    pub id: String,
    /// Its own load level.
    pub level: LoadLevel,
    /// Named values (`cpu`, `in_flight`, …) for dashboards; names lose `|`, `=` and spaces.
    pub signals: Vec<(String, f64)>,
}

impl InstanceReport {
    /// `level|name=value|…`.
    pub(crate) fn encode(level: LoadLevel, signals: &[(String, f64)]) -> String {
        let mut out = level.as_u8().to_string();
        for (name, value) in signals {
            let name: String = name
                .chars()
                .map(|c| {
                    if c == '|' || c == '=' || c.is_whitespace() {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            out.push('|');
            out.push_str(&name);
            out.push('=');
            out.push_str(&value.to_string());
        }
        out
    }

    /// Parses what [`encode`](Self::encode) wrote; `None` for anything malformed.
    pub(crate) fn decode(id: String, text: &str) -> Option<InstanceReport> {
        let mut parts = text.split('|');
        let level = LoadLevel::from_u8(parts.next()?.parse().ok()?)?;
        let signals = parts
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Some(InstanceReport { id, level, signals })
    }
}

/// Whether limits are shared through Redis or local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FleetMode {
    /// Limits are shared through Redis.
    Shared,
    /// Redis is unreachable (or its breaker is open): limits are local shares of the fleet
    /// limits (global rate / live instances last seen).
    Fallback,
}

/// A point-in-time view of the fleet connection, for health checks and dashboards.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FleetStatus {
    /// Shared or fallback limits.
    pub mode: FleetMode,
    /// The breaker in front of Redis.
    pub breaker: BreakerState,
    /// Live instances in the last successful fleet read (the fallback divisor).
    pub live_instances: usize,
    /// The fleet level, while the last read is younger than the instance TTL.
    pub fleet_level: Option<LoadLevel>,
    /// How long ago the last Redis call succeeded.
    pub last_success: Option<Duration>,
    /// The last Redis error.
    pub last_error: Option<String>,
    /// Redis calls sent by this instance.
    pub redis_calls: u64,
    /// Of which failed or ran past the bound.
    pub redis_failures: u64,
}

impl FleetStatus {
    /// Whether limits are local because Redis is unreachable.
    pub fn is_fallback(&self) -> bool {
        self.mode == FleetMode::Fallback
    }

    /// `Ok` while limits are shared; the reason otherwise. Fits a health registry's
    /// component check (e.g. the facade's `HealthBuilder::component`, as a non-essential
    /// component: the service still serves under local limits).
    ///
    /// # Errors
    ///
    /// A description of the fallback, with the last Redis error.
    pub fn check(&self) -> Result<(), String> {
        match self.mode {
            FleetMode::Shared => Ok(()),
            FleetMode::Fallback => Err(format!(
                "redis unreachable (breaker {}), local limits in force: {}",
                self.breaker.as_str(),
                self.last_error
                    .as_deref()
                    .unwrap_or("no successful call yet")
            )),
        }
    }
}

type Reporter = Box<dyn Fn() -> (LoadLevel, Vec<(String, f64)>) + Send + Sync>;

/// Called once per tick by the fleet for each rate limiter built on it.
pub(crate) trait TickHook: Send + Sync {
    fn on_tick(&self, shared: bool, live: usize);
}

pub(crate) struct FleetInner {
    pub(crate) config: FleetConfig,
    origin: Instant,
    pub(crate) handle: Handle,
    pub(crate) conn: ConnectionManager,
    pub(crate) breaker: Breaker,
    pub(crate) lease_script: Script,
    heartbeat_script: Script,
    reports_key: String,
    expiry_key: String,
    live_instances: AtomicUsize,
    fleet_level: AtomicU8,
    fleet_read_ns: AtomicU64,
    last_success_ns: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    instances: Mutex<Vec<InstanceReport>>,
    reporter: Mutex<Reporter>,
    hooks: Mutex<Vec<Weak<dyn TickHook>>>,
    /// Set by `leave`: ticks read the fleet but no longer publish.
    left: AtomicBool,
    /// Held by each tick, so `leave` cannot race a heartbeat already in flight.
    ticking: tokio::sync::Mutex<()>,
}

impl FleetInner {
    /// Nanoseconds since the fleet started, on tokio's clock.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.origin)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    /// Whether limits are shared now (one atomic load).
    #[inline]
    pub(crate) fn shared(&self) -> bool {
        self.breaker.state() == BreakerState::Closed
    }

    pub(crate) fn live_instances(&self) -> usize {
        self.live_instances.load(Ordering::Relaxed).max(1)
    }

    /// Runs one Redis call through the breaker, bounded by `call_timeout`.
    /// `None` when the breaker refused it, it failed, or it ran past the bound.
    pub(crate) async fn guarded<T, F>(&self, op: &'static str, call: F) -> Option<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.allow(self.now_ns()) {
            metrics::counter!(REDIS_CALLS_TOTAL, "fleet" => self.config.prefix.clone(), "op" => op, "outcome" => "refused").increment(1);
            return None;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.config.call_timeout, call).await {
            Ok(Ok(value)) => {
                metrics::counter!(REDIS_CALLS_TOTAL, "fleet" => self.config.prefix.clone(), "op" => op, "outcome" => "ok").increment(1);
                self.last_success_ns
                    .store(self.now_ns().max(1), Ordering::Relaxed);
                if self.breaker.success() != BreakerState::Closed {
                    metrics::gauge!(FALLBACK_GAUGE, "fleet" => self.config.prefix.clone()).set(0.0);
                    tracing::info!(
                        instance = %self.config.instance_id,
                        "redis reachable again: fleet limits shared through redis"
                    );
                }
                Some(value)
            }
            Ok(Err(err)) => {
                metrics::counter!(REDIS_CALLS_TOTAL, "fleet" => self.config.prefix.clone(), "op" => op, "outcome" => "error").increment(1);
                self.failed(op, err.to_string());
                None
            }
            Err(_) => {
                metrics::counter!(REDIS_CALLS_TOTAL, "fleet" => self.config.prefix.clone(), "op" => op, "outcome" => "timeout")
                    .increment(1);
                self.failed(
                    op,
                    format!("no answer within {:?}", self.config.call_timeout),
                );
                None
            }
        }
    }

    fn failed(&self, op: &'static str, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let opened = self.breaker.failure(self.now_ns());
        if opened {
            metrics::gauge!(FALLBACK_GAUGE, "fleet" => self.config.prefix.clone()).set(1.0);
            tracing::warn!(
                instance = %self.config.instance_id,
                op,
                error = %error,
                live_instances = self.live_instances(),
                "redis unreachable: fleet limits fall back to local shares"
            );
        } else {
            tracing::debug!(op, error = %error, "redis call failed");
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    pub(crate) fn register(&self, hook: Weak<dyn TickHook>) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hook);
    }

    async fn tick(&self) {
        let _ticking = self.ticking.lock().await;
        let publish = if self.left.load(Ordering::Acquire) {
            "0"
        } else {
            "1"
        };
        let (level, signals) = (self.reporter.lock().unwrap_or_else(PoisonError::into_inner))();
        let report = InstanceReport::encode(level, &signals);
        let ttl_ms = u64::try_from(self.config.instance_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let mut invocation = self.heartbeat_script.prepare_invoke();
        invocation
            .key(&self.reports_key)
            .key(&self.expiry_key)
            .arg(&self.config.instance_id)
            .arg(report)
            .arg(ttl_ms)
            .arg(publish);
        let read: Option<Vec<String>> = self
            .guarded("heartbeat", invocation.invoke_async(&mut conn))
            .await;
        if let Some(flat) = read {
            let mut reports = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(id), Some(text)) = (it.next(), it.next()) {
                if let Some(report) = InstanceReport::decode(id, &text) {
                    reports.push(report);
                }
            }
            let levels: Vec<LoadLevel> = reports.iter().map(|r| r.level).collect();
            let fleet = self.config.aggregate.aggregate(&levels);
            let live = reports.len().max(1);
            let previous = self.live_instances.swap(live, Ordering::Relaxed);
            if previous != live {
                tracing::info!(live, previous, "fleet size changed");
            }
            let code = fleet.map_or(NO_LEVEL, LoadLevel::as_u8);
            let old = self.fleet_level.swap(code, Ordering::Relaxed);
            if old != code {
                tracing::info!(
                    fleet_level = fleet.map_or("none", LoadLevel::as_str),
                    "fleet level changed"
                );
            }
            self.fleet_read_ns
                .store(self.now_ns().max(1), Ordering::Relaxed);
            metrics::gauge!(INSTANCES_GAUGE, "fleet" => self.config.prefix.clone())
                .set(live as f64);
            metrics::gauge!(FLEET_LEVEL_GAUGE, "fleet" => self.config.prefix.clone())
                .set(f64::from(fleet.unwrap_or_default().as_u8()));
            *self
                .instances
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = reports;
        }
        let shared = self.shared();
        metrics::gauge!(FALLBACK_GAUGE, "fleet" => self.config.prefix.clone()).set(if shared {
            0.0
        } else {
            1.0
        });
        let live = self.live_instances();
        let hooks: Vec<_> = {
            let mut hooks = self.hooks.lock().unwrap_or_else(PoisonError::into_inner);
            hooks.retain(|h| h.strong_count() > 0);
            hooks.iter().filter_map(Weak::upgrade).collect()
        };
        for hook in hooks {
            hook.on_tick(shared, live);
        }
    }

    /// The fleet level while the last read is fresh (younger than the instance TTL).
    fn fresh_level(&self) -> Option<LoadLevel> {
        let read = self.fleet_read_ns.load(Ordering::Relaxed);
        if read == 0 {
            return None;
        }
        let ttl = u64::try_from(self.config.instance_ttl.as_nanos()).unwrap_or(u64::MAX);
        if self.now_ns().saturating_sub(read) > ttl {
            return None;
        }
        LoadLevel::from_u8(self.fleet_level.load(Ordering::Relaxed))
    }
}

/// One instance's membership in a fleet sharing rate limits and a load level through Redis.
///
/// Cheap to clone (one `Arc`). [`start`](Fleet::start) spawns the tick task, which runs while
/// any clone, rate limiter or level source of this fleet is alive. The connection is made
/// lazily and re-made automatically after Redis restarts.
///
/// ```no_run
/// use brownout_core::{LoadLevel, LoadSignal, Thresholds};
/// use brownout_redis::{Fleet, FleetConfig, FleetRateLimitConfig, FleetRateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let fleet = Fleet::start(FleetConfig::builder("redis://127.0.0.1:6379").build().unwrap()).unwrap();
/// fleet.report_signal(LoadSignal::fixed(LoadLevel::Normal));
/// let limit = FleetRateLimitConfig::builder("api", 1_000.0).build().unwrap();
/// let layer = FleetRateLimitLayer::new(&fleet, limit);
/// let source = fleet.level_source(); // monitor.pressure_source(source, Thresholds::LEVEL)
/// # let _ = (layer, source, Thresholds::LEVEL);
/// # }
/// ```
#[derive(Clone)]
pub struct Fleet {
    pub(crate) inner: Arc<FleetInner>,
}

impl Fleet {
    /// Joins the fleet described by `config`: spawns the tick task on the current tokio
    /// runtime and connects lazily (Redis may be down at start; limits are local until it
    /// answers).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `url` when the URL cannot be parsed.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(config: FleetConfig) -> Result<Fleet, ConfigError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| ConfigError::new("url", format!("must be a redis URL ({e})")))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.tick))
            .set_response_timeout(Some(config.call_timeout.saturating_mul(4)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(config.tick);
        let handle = Handle::current();
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| ConfigError::new("url", format!("must be a usable redis URL ({e})")))?;
        let prefix = config.prefix.clone();
        let expected = config.expected_instances;
        let tick = config.tick;
        let inner = Arc::new(FleetInner {
            origin: Instant::now(),
            handle: handle.clone(),
            conn,
            // Starts closed: the first lease or heartbeat finds out whether Redis answers.
            breaker: Breaker::new(config.failures_to_open, config.open_for),
            lease_script: Script::new(LEASE_SCRIPT),
            heartbeat_script: Script::new(HEARTBEAT_SCRIPT),
            reports_key: format!("{prefix}:fleet:reports"),
            expiry_key: format!("{prefix}:fleet:expiry"),
            live_instances: AtomicUsize::new(expected),
            fleet_level: AtomicU8::new(NO_LEVEL),
            fleet_read_ns: AtomicU64::new(0),
            last_success_ns: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            instances: Mutex::new(Vec::new()),
            reporter: Mutex::new(Box::new(|| (LoadLevel::Normal, Vec::new()))),
            hooks: Mutex::new(Vec::new()),
            left: AtomicBool::new(false),
            ticking: tokio::sync::Mutex::new(()),
            config,
        });
        let weak = Arc::downgrade(&inner);
        handle.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.tick().await;
            }
        });
        Ok(Fleet { inner })
    }

    /// Publishes the level read from `signal` each tick (no named signals).
    ///
    /// Use a signal that does not include the fleet level (see [`InstanceReport`]).
    pub fn report_signal(&self, signal: LoadSignal) {
        self.report_with(move || (signal.level(), Vec::new()));
    }

    /// Publishes what `report` returns each tick: this instance's own level and named values.
    /// Until called, the instance reports `Normal` (it still counts as live).
    pub fn report_with<F>(&self, report: F)
    where
        F: Fn() -> (LoadLevel, Vec<(String, f64)>) + Send + Sync + 'static,
    {
        *self
            .inner
            .reporter
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Box::new(report);
    }

    /// A [`PressureSource`] reading the fleet level, to register on the local monitor with
    /// [`Thresholds::LEVEL`](brownout_core::Thresholds::LEVEL).
    pub fn level_source(&self) -> FleetLevelSource {
        FleetLevelSource {
            inner: self.inner.clone(),
        }
    }

    /// The fleet level of the last read, while fresh (younger than the instance TTL).
    pub fn fleet_level(&self) -> Option<LoadLevel> {
        self.inner.fresh_level()
    }

    /// The live instances' reports from the last read.
    pub fn instances(&self) -> Vec<InstanceReport> {
        self.inner
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Live instances seen in the last read (at least 1).
    pub fn live_instances(&self) -> usize {
        self.inner.live_instances()
    }

    /// Shared or fallback limits, breaker state, fleet size and level, call counts.
    pub fn status(&self) -> FleetStatus {
        let inner = &self.inner;
        let last = inner.last_success_ns.load(Ordering::Relaxed);
        FleetStatus {
            mode: if inner.shared() {
                FleetMode::Shared
            } else {
                FleetMode::Fallback
            },
            breaker: inner.breaker.state(),
            live_instances: inner.live_instances(),
            fleet_level: inner.fresh_level(),
            last_success: (last != 0)
                .then(|| Duration::from_nanos(inner.now_ns().saturating_sub(last))),
            last_error: inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            redis_calls: inner.calls.load(Ordering::Relaxed),
            redis_failures: inner.failures.load(Ordering::Relaxed),
        }
    }

    /// Runs one tick now (publish, read the fleet, rebalance limiters), besides the
    /// periodic ones.
    pub async fn tick_now(&self) {
        self.inner.tick().await;
    }

    /// Stops publishing this instance's report and removes it, so it stops counting at once
    /// rather than after the TTL (call on graceful shutdown). The instance keeps reading the
    /// fleet and its limits keep working. Returns whether Redis confirmed the removal.
    pub async fn leave(&self) -> bool {
        let inner = &self.inner;
        inner.left.store(true, Ordering::Release);
        let _ticking = inner.ticking.lock().await;
        let mut conn = inner.conn.clone();
        let mut pipe = redis::pipe();
        pipe.hdel(&inner.reports_key, &inner.config.instance_id)
            .ignore()
            .zrem(&inner.expiry_key, &inner.config.instance_id)
            .ignore();
        inner
            .guarded("leave", pipe.query_async::<()>(&mut conn))
            .await
            .is_some()
    }

    /// The configuration.
    pub fn config(&self) -> &FleetConfig {
        &self.inner.config
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("instance_id", &self.inner.config.instance_id)
            .field("status", &self.status())
            .finish()
    }
}

/// The fleet level as a [`PressureSource`] (`name() == "fleet"`, value 0 – 4), so the local
/// monitor sheds for the fleet, not only for itself. Register it with
/// [`Thresholds::LEVEL`](brownout_core::Thresholds::LEVEL).
///
/// While the last fleet read is older than the instance TTL (Redis down), it samples `None`
/// and the monitor ignores it: the local signals alone decide, which is the fallback.
#[derive(Clone)]
pub struct FleetLevelSource {
    inner: Arc<FleetInner>,
}

impl PressureSource for FleetLevelSource {
    fn name(&self) -> &str {
        "fleet"
    }

    fn sample(&self) -> Option<f64> {
        self.inner.fresh_level().map(|l| f64::from(l.as_u8()))
    }
}

impl fmt::Debug for FleetLevelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLevelSource")
            .field("level", &self.inner.fresh_level())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_refuse_garbage() {
        let text = InstanceReport::encode(
            LoadLevel::Critical,
            &[("cpu".into(), 0.75), ("bad|na=me".into(), 3.0)],
        );
        assert_eq!(text, "3|cpu=0.75|bad_na_me=3");
        let r = InstanceReport::decode("a".into(), &text).unwrap();
        assert_eq!(r.level, LoadLevel::Critical);
        assert_eq!(
            r.signals,
            vec![("cpu".into(), 0.75), ("bad_na_me".into(), 3.0)]
        );
        assert!(InstanceReport::decode("a".into(), "9").is_none());
        assert!(InstanceReport::decode("a".into(), "x|y").is_none());
        let lax = InstanceReport::decode("a".into(), "1|junk|k=notanumber").unwrap();
        assert!(lax.signals.is_empty());
    }

    #[test]
    fn status_check_explains_fallback() {
        let status = FleetStatus {
            mode: FleetMode::Fallback,
            breaker: BreakerState::Open,
            live_instances: 3,
            fleet_level: None,
            last_success: None,
            last_error: Some("connection refused".into()),
            redis_calls: 4,
            redis_failures: 4,
        };
        assert!(status.is_fallback());
        let err = status.check().unwrap_err();
        assert!(
            err.contains("connection refused") && err.contains("open"),
            "{err}"
        );
    }

    /// Records gauge values by name (enough to see the fallback gauge move).
    #[derive(Default)]
    struct Gauges(Arc<Mutex<Vec<(String, f64)>>>);

    struct GaugeCell(String, Arc<Mutex<Vec<(String, f64)>>>);

    impl metrics::GaugeFn for GaugeCell {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            self.1.lock().unwrap().push((self.0.clone(), value));
        }
    }

    impl metrics::Recorder for Gauges {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::from_arc(Arc::new(GaugeCell(key.name().to_owned(), self.0.clone())))
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn fallback_is_visible_in_the_gauge() {
        let recorder = Gauges::default();
        let seen = recorder.0.clone();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let config = FleetConfig::builder("redis://127.0.0.1:1")
                    .tick(Duration::from_secs(10))
                    .failures_to_open(1)
                    .build()
                    .unwrap();
                let fleet = Fleet::start(config).unwrap();
                fleet.tick_now().await;
            });
        });
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|(name, v)| name == FALLBACK_GAUGE && *v == 1.0),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_without_waiting() {
        // Port 1 on loopback refuses connections at once.
        let config = FleetConfig::builder("redis://127.0.0.1:1")
            .tick(Duration::from_millis(50))
            .call_timeout(Duration::from_millis(5))
            .failures_to_open(1)
            .build()
            .unwrap();
        let fleet = Fleet::start(config).unwrap();
        let started = std::time::Instant::now();
        fleet.tick_now().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        let status = fleet.status();
        assert!(status.is_fallback(), "{status:?}");
        assert_eq!(status.redis_failures, 1);
        assert_eq!(fleet.fleet_level(), None);
        assert_eq!(fleet.level_source().sample(), None);
        assert!(Fleet::start(FleetConfig::builder("nope://x").build().unwrap()).is_err());

        // Requests flow under the local share (burst 5 of 10/s on one live instance).
        use crate::{FleetRateLimitConfig, FleetRateLimitLayer};
        use tower::{Layer, Service, ServiceExt};
        let limit = FleetRateLimitConfig::builder("api", 10.0)
            .burst(5)
            .build()
            .unwrap();
        let mut svc =
            FleetRateLimitLayer::new(&fleet, limit).layer(tower::service_fn(|_: ()| async {
                Ok::<_, std::convert::Infallible>(())
            }));
        let mut admitted = 0;
        for _ in 0..8 {
            if svc.ready().await.unwrap().call(()).await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(fleet.status().live_instances, 1);
    }
}
