//! Configuration of the fleet connection ([`FleetConfig`]) and of a shared rate limit
//! ([`FleetRateLimitConfig`]); both are validated when built.

use std::fmt;
use std::time::Duration;

use brownout_core::config::check;
use brownout_core::{ConfigError, LevelTable, LoadLevel};

/// How the fleet level is derived from the levels the live instances publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FleetAggregate {
    /// The highest level of any live instance (one drowning instance raises everyone).
    Max,
    /// The level at quantile `q` (nearest rank, `q` in `(0, 1]`): `Quantile(0.5)` is the median.
    Quantile(f64),
    /// The highest level that at least `share` (in `(0, 1]`) of the live instances are at or
    /// above: `Share(0.25)` with one instance of four at Critical gives Critical.
    Share(f64),
}

impl FleetAggregate {
    /// The fleet level of `levels` (any order); `None` when there is no live instance.
    pub fn aggregate(&self, levels: &[LoadLevel]) -> Option<LoadLevel> {
        if levels.is_empty() {
            return None;
        }
        let n = levels.len();
        match *self {
            FleetAggregate::Max => levels.iter().copied().max(),
            FleetAggregate::Quantile(q) => {
                let mut sorted = levels.to_vec();
                sorted.sort_unstable();
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                Some(sorted[rank - 1])
            }
            FleetAggregate::Share(share) => {
                let mut best = LoadLevel::Normal;
                for level in LoadLevel::ALL {
                    let at_or_above = levels.iter().filter(|l| **l >= level).count();
                    // Compare in integers where possible so 1/4 ≥ 0.25 holds exactly.
                    if at_or_above as f64 >= share * n as f64 - 1e-9 {
                        best = level;
                    }
                }
                Some(best)
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            FleetAggregate::Max => Ok(()),
            FleetAggregate::Quantile(q) => check::fraction("aggregate.quantile", q).map(drop),
            FleetAggregate::Share(s) => check::fraction("aggregate.share", s).map(drop),
        }
    }
}

impl Default for FleetAggregate {
    /// `Share(0.5)`: the level at least half the fleet has reached.
    fn default() -> Self {
        FleetAggregate::Share(0.5)
    }
}

/// The validated configuration of a [`Fleet`](crate::Fleet).
///
/// ```
/// use std::time::Duration;
/// use brownout_redis::{FleetAggregate, FleetConfig};
///
/// let config = FleetConfig::builder("redis://127.0.0.1:6379")
///     .prefix("checkout")
///     .tick(Duration::from_millis(100))
///     .call_timeout(Duration::from_millis(5))
///     .aggregate(FleetAggregate::Share(0.25))
///     .build()
///     .unwrap();
/// assert_eq!(config.instance_ttl(), Duration::from_millis(500));
/// assert!(FleetConfig::builder("redis://x").tick(Duration::ZERO).build().is_err());
/// ```
#[derive(Clone, PartialEq)]
pub struct FleetConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) instance_id: String,
    pub(crate) tick: Duration,
    pub(crate) instance_ttl: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) failures_to_open: u32,
    pub(crate) open_for: Duration,
    pub(crate) aggregate: FleetAggregate,
    pub(crate) expected_instances: usize,
}

impl FleetConfig {
    /// A builder for a fleet on the Redis at `url` (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> FleetBuilder {
        FleetBuilder {
            url: url.into(),
            prefix: "brownout".to_owned(),
            instance_id: None,
            tick: Duration::from_millis(200),
            instance_ttl: None,
            call_timeout: Duration::from_millis(5),
            failures_to_open: 2,
            open_for: None,
            aggregate: FleetAggregate::default(),
            expected_instances: 1,
        }
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The prefix of every key this fleet writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// This instance's id in the fleet registry.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }
    /// How often the instance publishes its report, reads the fleet and checks Redis.
    pub fn tick(&self) -> Duration {
        self.tick
    }
    /// How long a report counts after it was published.
    pub fn instance_ttl(&self) -> Duration {
        self.instance_ttl
    }
    /// The most any Redis call may take before it counts as failed.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }
    /// How the fleet level is derived.
    pub fn aggregate(&self) -> FleetAggregate {
        self.aggregate
    }
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: show only host and port.
        let url = self.url.rsplit('@').next().unwrap_or("");
        f.debug_struct("FleetConfig")
            .field("url", &url)
            .field("prefix", &self.prefix)
            .field("instance_id", &self.instance_id)
            .field("tick", &self.tick)
            .field("instance_ttl", &self.instance_ttl)
            .field("call_timeout", &self.call_timeout)
            .field("failures_to_open", &self.failures_to_open)
            .field("open_for", &self.open_for)
            .field("aggregate", &self.aggregate)
            .field("expected_instances", &self.expected_instances)
            .finish()
    }
}

/// Builds a [`FleetConfig`]; [`build`](FleetBuilder::build) refuses invalid values.
#[derive(Debug, Clone)]
pub struct FleetBuilder {
    url: String,
    prefix: String,
    instance_id: Option<String>,
    tick: Duration,
    instance_ttl: Option<Duration>,
    call_timeout: Duration,
    failures_to_open: u32,
    open_for: Option<Duration>,
    aggregate: FleetAggregate,
    expected_instances: usize,
}

impl FleetBuilder {
    /// Prefix of every key (default `brownout`); fleets with different prefixes share nothing.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This instance's id (default: random). Must be unique in the fleet.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The tick (default 200 ms): reports, fleet reads, health probes and the fallback
    /// switch all happen at this pace.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// How long a published report counts (default 5 ticks, at least 2 ticks).
    pub fn instance_ttl(mut self, ttl: Duration) -> Self {
        self.instance_ttl = Some(ttl);
        self
    }

    /// The bound on every Redis call (default 5 ms); a slower call counts as failed.
    /// Requests never wait on Redis at all: this bounds the background calls.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Consecutive failed calls that open the breaker and switch to local limits (default 2).
    pub fn failures_to_open(mut self, failures: u32) -> Self {
        self.failures_to_open = failures;
        self
    }

    /// How long the breaker stays open before one probe (default 2 ticks).
    pub fn open_for(mut self, open_for: Duration) -> Self {
        self.open_for = Some(open_for);
        self
    }

    /// How the fleet level is derived (default [`FleetAggregate::Share(0.5)`](FleetAggregate::Share)).
    pub fn aggregate(mut self, aggregate: FleetAggregate) -> Self {
        self.aggregate = aggregate;
        self
    }

    /// Instances assumed live until the registry has been read once (default 1): the
    /// divisor of the local fallback limits when Redis is down from the start.
    pub fn expected_instances(mut self, instances: usize) -> Self {
        self.expected_instances = instances;
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: an empty URL or prefix, a prefix or id with
    /// spaces, a zero tick or call timeout, a call timeout not below the tick, a TTL under
    /// two ticks, zero `failures_to_open` or `expected_instances`, a quantile or share
    /// outside `(0, 1]`.
    pub fn build(self) -> Result<FleetConfig, ConfigError> {
        if self.url.trim().is_empty() {
            return Err(ConfigError::new("url", "must not be empty"));
        }
        check_name("prefix", &self.prefix)?;
        let instance_id = match self.instance_id {
            Some(id) => id,
            None => {
                use rand::{Rng, SeedableRng};
                format!(
                    "{:016x}",
                    rand::rngs::SmallRng::from_os_rng().random::<u64>()
                )
            }
        };
        check_name("instance_id", &instance_id)?;
        check::non_zero("tick", self.tick)?;
        check::non_zero("call_timeout", self.call_timeout)?;
        if self.call_timeout >= self.tick {
            return Err(ConfigError::new(
                "call_timeout",
                format!(
                    "must be below `tick` ({:?} >= {:?})",
                    self.call_timeout, self.tick
                ),
            ));
        }
        let instance_ttl = self.instance_ttl.unwrap_or(self.tick.saturating_mul(5));
        if instance_ttl < self.tick.saturating_mul(2) {
            return Err(ConfigError::new(
                "instance_ttl",
                format!(
                    "must be at least two ticks ({instance_ttl:?} < 2 × {:?})",
                    self.tick
                ),
            ));
        }
        check::at_least("failures_to_open", self.failures_to_open as usize, 1)?;
        let open_for = self.open_for.unwrap_or(self.tick.saturating_mul(2));
        check::non_zero("open_for", open_for)?;
        check::at_least("expected_instances", self.expected_instances, 1)?;
        self.aggregate.validate()?;
        Ok(FleetConfig {
            url: self.url,
            prefix: self.prefix,
            instance_id,
            tick: self.tick,
            instance_ttl,
            call_timeout: self.call_timeout,
            failures_to_open: self.failures_to_open,
            open_for,
            aggregate: self.aggregate,
            expected_instances: self.expected_instances,
        })
    }
}

fn check_name(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| c.is_whitespace() || *c == '|' || c.is_control())
    {
        return Err(ConfigError::new(
            field,
            format!("must not contain whitespace, control characters or `|` (got {bad:?})"),
        ));
    }
    Ok(())
}

/// The validated configuration of one shared rate limit.
///
/// The rate and burst are fleet-wide: four instances sharing a 1000/s limit admit 1000/s
/// together. Both are scaled per level by `rate_table` (default 100/80/60/40/20 %), like the
/// local rate limits of `brownout-admission`.
///
/// ```
/// use brownout_redis::FleetRateLimitConfig;
///
/// let config = FleetRateLimitConfig::builder("search", 2_000.0).burst(100).build().unwrap();
/// assert_eq!(config.batch(), 20); // 10 ms of the fleet rate
/// assert!(FleetRateLimitConfig::builder("search", f64::NAN).build().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRateLimitConfig {
    pub(crate) name: String,
    pub(crate) rate: f64,
    pub(crate) burst: u32,
    pub(crate) batch: u32,
    pub(crate) lease_ttl: Duration,
    pub(crate) rate_table: LevelTable<f64>,
}

impl FleetRateLimitConfig {
    /// A builder for the limit `name` (part of the Redis key) at `rate` requests per second
    /// across the fleet.
    pub fn builder(name: impl Into<String>, rate: f64) -> FleetRateLimitBuilder {
        FleetRateLimitBuilder {
            name: name.into(),
            rate,
            burst: None,
            batch: None,
            lease_ttl: Duration::from_secs(1),
            rate_table: LevelTable::default_rate(),
        }
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Fleet-wide requests per second at Normal.
    pub fn rate(&self) -> f64 {
        self.rate
    }
    /// Fleet-wide burst at Normal.
    pub fn burst(&self) -> u32 {
        self.burst
    }
    /// The most tokens one lease takes.
    pub fn batch(&self) -> u32 {
        self.batch
    }
    /// How long leased tokens stay usable before they are given back.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }
    /// The per-level scale of rate and burst.
    pub fn rate_table(&self) -> &LevelTable<f64> {
        &self.rate_table
    }

    /// Rate and burst in force at `level`.
    pub(crate) fn scaled(&self, level: LoadLevel) -> (f64, f64) {
        let scale = self.rate_table[level];
        (self.rate * scale, (f64::from(self.burst) * scale).max(1.0))
    }
}

/// Builds a [`FleetRateLimitConfig`].
#[derive(Debug, Clone)]
pub struct FleetRateLimitBuilder {
    name: String,
    rate: f64,
    burst: Option<u32>,
    batch: Option<u32>,
    lease_ttl: Duration,
    rate_table: LevelTable<f64>,
}

impl FleetRateLimitBuilder {
    /// Fleet-wide burst (default: 100 ms of the rate, at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The most tokens one lease takes (default: 10 ms of the fleet rate, 8 to 1000, at
    /// most the burst). Larger batches mean fewer Redis calls and a coarser fleet share.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = Some(batch);
        self
    }

    /// How long leased tokens stay usable (default 1 s); the rest is given back.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The per-level scale of rate and burst (default `LevelTable::default_rate()`).
    pub fn rate_table(mut self, table: LevelTable<f64>) -> Self {
        self.rate_table = table;
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: an empty name or one with spaces, a rate that is
    /// not a finite number above 0 (or above 10⁹/s), a zero burst or batch, a batch above the
    /// burst, a zero lease TTL, or a rate table entry outside `(0, 1]` or growing with the level.
    pub fn build(self) -> Result<FleetRateLimitConfig, ConfigError> {
        check_name("name", &self.name)?;
        check::positive("rate", self.rate)?;
        if self.rate > 1e9 {
            return Err(ConfigError::new(
                "rate",
                format!("must be at most 1e9 per second (got {})", self.rate),
            ));
        }
        let burst = self
            .burst
            .unwrap_or_else(|| (self.rate * 0.1).round().clamp(1.0, f64::from(u32::MAX)) as u32);
        check::at_least("burst", burst as usize, 1)?;
        let batch = self
            .batch
            .unwrap_or_else(|| ((self.rate * 0.01).round().clamp(8.0, 1000.0) as u32).min(burst));
        check::at_least("batch", batch as usize, 1)?;
        check::ordered("batch", batch, "burst", burst)?;
        check::non_zero("lease_ttl", self.lease_ttl)?;
        self.rate_table.validate_fraction("rate_table")?;
        Ok(FleetRateLimitConfig {
            name: self.name,
            rate: self.rate,
            burst,
            batch,
            lease_ttl: self.lease_ttl,
            rate_table: self.rate_table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LoadLevel::*;
    use proptest::prelude::*;

    #[test]
    fn aggregates() {
        let levels = [Critical, Normal, Normal, Normal];
        assert_eq!(FleetAggregate::Max.aggregate(&levels), Some(Critical));
        assert_eq!(
            FleetAggregate::Share(0.25).aggregate(&levels),
            Some(Critical)
        );
        assert_eq!(FleetAggregate::Share(0.5).aggregate(&levels), Some(Normal));
        assert_eq!(
            FleetAggregate::Quantile(0.5).aggregate(&levels),
            Some(Normal)
        );
        assert_eq!(
            FleetAggregate::Quantile(1.0).aggregate(&levels),
            Some(Critical)
        );
        assert_eq!(FleetAggregate::Max.aggregate(&[]), None);
        let mixed = [High, Elevated, Emergency];
        assert_eq!(FleetAggregate::Share(0.6).aggregate(&mixed), Some(High));
    }

    #[test]
    fn fleet_config_errors_name_the_field() {
        let b = || FleetConfig::builder("redis://127.0.0.1:1");
        let cases = [
            (FleetConfig::builder(" ").build(), "url"),
            (b().prefix("a b").build(), "prefix"),
            (b().instance_id("").build(), "instance_id"),
            (b().tick(Duration::ZERO).build(), "tick"),
            (b().call_timeout(Duration::ZERO).build(), "call_timeout"),
            (
                b().call_timeout(Duration::from_secs(1)).build(),
                "call_timeout",
            ),
            (
                b().instance_ttl(Duration::from_millis(300)).build(),
                "instance_ttl",
            ),
            (b().failures_to_open(0).build(), "failures_to_open"),
            (b().open_for(Duration::ZERO).build(), "open_for"),
            (b().expected_instances(0).build(), "expected_instances"),
            (
                b().aggregate(FleetAggregate::Share(0.0)).build(),
                "aggregate.share",
            ),
            (
                b().aggregate(FleetAggregate::Quantile(f64::NAN)).build(),
                "aggregate.quantile",
            ),
        ];
        for (result, field) in cases {
            assert_eq!(result.unwrap_err().field(), field);
        }
        let ok = b().build().unwrap();
        assert_eq!(ok.instance_id().len(), 16);
        assert!(
            !format!(
                "{:?}",
                FleetConfig::builder("redis://:secret@h:1").build().unwrap()
            )
            .contains("secret")
        );
    }

    #[test]
    fn rate_config_errors_name_the_field() {
        let b = |rate| FleetRateLimitConfig::builder("api", rate);
        assert_eq!(b(0.0).build().unwrap_err().field(), "rate");
        assert_eq!(b(f64::INFINITY).build().unwrap_err().field(), "rate");
        assert_eq!(b(2e9).build().unwrap_err().field(), "rate");
        assert_eq!(b(10.0).burst(0).build().unwrap_err().field(), "burst");
        assert_eq!(b(10.0).batch(0).build().unwrap_err().field(), "batch");
        assert_eq!(
            b(10.0).burst(2).batch(3).build().unwrap_err().field(),
            "batch"
        );
        assert_eq!(
            b(10.0)
                .lease_ttl(Duration::ZERO)
                .build()
                .unwrap_err()
                .field(),
            "lease_ttl"
        );
        let table = LevelTable::new([1.0, 1.2, 0.5, 0.4, 0.2]);
        assert_eq!(
            b(10.0).rate_table(table).build().unwrap_err().field(),
            "rate_table[elevated]"
        );
        let c = b(1000.0).build().unwrap();
        assert_eq!((c.burst(), c.batch()), (100, 10));
        assert_eq!(c.scaled(High), (600.0, 60.0));
    }

    proptest! {
        #[test]
        fn any_valid_rate_builds_with_batch_within_burst(rate in 0.001f64..1e9, burst in proptest::option::of(1u32..100_000)) {
            let mut b = FleetRateLimitConfig::builder("k", rate);
            if let Some(burst) = burst { b = b.burst(burst); }
            let c = b.build().unwrap();
            prop_assert!(c.batch() >= 1 && c.batch() <= c.burst() && c.batch() <= 1000);
        }

        #[test]
        fn share_and_quantile_stay_within_the_levels(levels in proptest::collection::vec(0u8..5, 1..50), s in 0.01f64..1.0) {
            let levels: Vec<_> = levels.into_iter().map(LoadLevel::saturating_from_u8).collect();
            let min = *levels.iter().min().unwrap();
            let max = *levels.iter().max().unwrap();
            for agg in [FleetAggregate::Share(s), FleetAggregate::Quantile(s), FleetAggregate::Max] {
                let l = agg.aggregate(&levels).unwrap();
                prop_assert!(l >= min && l <= max);
            }
        }
    }
}
