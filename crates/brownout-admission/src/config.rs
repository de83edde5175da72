//! The builder of [`PriorityAdmissionLayer`](crate::PriorityAdmissionLayer).

use brownout_core::sync::Arc;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use brownout_core::config::{ConfigError, check};
use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{
    FromExtensions, LevelTable, LoadLevel, LoadSignal, Policy, Priority, QueueProbe,
};
use metrics::SharedString;

use crate::extract::{DeadlineFromExtensions, KeyedBy, NoKey};
use crate::keyed::KeyedRate;
use crate::layer::PriorityAdmissionLayer;
use crate::limit::{Algorithm, Limit};
use crate::rate::{GlobalRate, RateLimit};
use crate::shared::{Settings, Shared};

/// How long a request may wait in the queue (its own deadline always applies too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueTimeout {
    /// CoDel for request queues: if the queue did not empty once during the last
    /// `interval`, it is standing and queued requests time out after `target`; otherwise
    /// they may wait up to `interval`.
    ///
    /// (CoDel proper tests whether the *minimum* queueing delay over the interval exceeded
    /// `target`. With priority classes the most important requests pass the queue within a
    /// millisecond or two even when the lower ones stand in it, so that test hardly ever
    /// fires; "never empty for a whole interval" does.)
    ///
    /// `target` should allow the most important class its ordinary wait for a permit under
    /// overload (a couple of service times); `interval` is the longest wait while the queue
    /// keeps draining.
    Codel {
        /// Queueing delay tolerated under a standing queue (default 40 ms).
        target: Duration,
        /// Observation interval, and the longest wait without a standing queue (default 120 ms).
        interval: Duration,
    },
    /// A fixed maximum wait.
    Fixed(Duration),
}

impl QueueTimeout {
    /// CoDel with `target` and `interval`.
    pub const fn codel(target: Duration, interval: Duration) -> QueueTimeout {
        QueueTimeout::Codel { target, interval }
    }

    /// A fixed maximum wait.
    pub const fn fixed(max_wait: Duration) -> QueueTimeout {
        QueueTimeout::Fixed(max_wait)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            QueueTimeout::Codel { target, interval } => {
                check::non_zero("queue_timeout.target", target)?;
                check::non_zero("queue_timeout.interval", interval)?;
                check::ordered(
                    "queue_timeout.target",
                    target,
                    "queue_timeout.interval",
                    interval,
                )
            }
            QueueTimeout::Fixed(d) => check::non_zero("queue_timeout", d).map(|_| ()),
        }
    }
}

impl Default for QueueTimeout {
    /// CoDel with a 40 ms target and a 120 ms interval.
    ///
    /// In the overload simulation (16 workers × 20 ms, priority mix 10/30/30/20/10 %, 2×–8×
    /// load, seeds 1, 2, 3, 7, 42) a 5 ms target under a standing queue times out Critical
    /// requests while they wait behind each other (Critical answered 81 % at 8×); 40 ms keeps
    /// Critical ≥ 99.9 % and every admitted class's p99 under 160 ms.
    fn default() -> QueueTimeout {
        QueueTimeout::codel(Duration::from_millis(40), Duration::from_millis(120))
    }
}

/// When a queued request may be served before more important ones although it has not
/// waited the [starvation bound](PriorityAdmissionBuilder::starvation_bound): while the
/// server keeps up.
///
/// Strict priority pushes all the queueing of a fully used server onto the lowest classes.
/// At a load of exactly 1× (an M/M/16 at 100 % utilization) the total backlog is small most
/// of the time, yet a Background request waits until no more important request is queued,
/// which during the queue's random walk takes longer than its queue timeout: it is refused,
/// and the worker time it would have used is idle later. A FIFO queue refuses only when the
/// whole backlog exceeds the timeout. Promotion serves such a request out of priority order
/// once it waited `after`, but only while
///
/// - the load level is at most `up_to` (default `Elevated`; above it the server is
///   overloaded and strict priority applies),
/// - the queue is less than half full at the current level (a filling queue means
///   overload too, also when no load signal is set), and
/// - no more important class has a request that waited its `patience` (index = class,
///   Critical first): a promotion never makes Critical wait much longer than `patience[0]`.
///
/// Like starved requests, promoted ones take at most every other permit, oldest first.
/// Under overload the more important classes are backlogged (their oldest requests wait
/// past their patience, the queue fills, the level rises), so strict priority holds. Turn
/// it off with [`no_promotion`](PriorityAdmissionBuilder::no_promotion).
///
/// In the overload simulation (`docs/benchmarks/brownout-sim.md`: 16 workers × 20 ms,
/// deadline 500 ms, 10 s at 1×, seed 42, the tuned fixed-limit stack) the stack used
/// 96.2 % of the capacity at 1× in strict order and 98.4 % with promotion when promotion
/// was added (98.6 % since, the priority-blind FIFO bulkhead 99.0 %); from 2× to 8× goodput
/// stays ≥ 99 %, the priority score ≥ 99 % of a reference strict-priority scheduler run on
/// the same arrivals, and Critical's p99 at 4× within 1.1× of its unloaded p99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    /// How long a request waits before it may be promoted (default 50 ms).
    pub after: Duration,
    /// For each class (Critical first), how long its oldest waiting request may wait before
    /// it blocks the promotion of less important requests (default 25 / 60 / 100 / 100 /
    /// 100 ms; Background's entry is unused: no class is below it).
    pub patience: [Duration; Priority::COUNT],
    /// The highest load level at which requests are promoted (default `Elevated`): above
    /// it the server is overloaded and strict priority applies.
    pub up_to: LoadLevel,
}

impl Promotion {
    /// A promotion after `after`, with the default patience.
    pub fn after(after: Duration) -> Promotion {
        Promotion {
            after,
            ..Promotion::default()
        }
    }

    /// With `patience` per class, Critical first.
    #[must_use]
    pub fn with_patience(mut self, patience: [Duration; Priority::COUNT]) -> Promotion {
        self.patience = patience;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check::non_zero("promotion.after", self.after)?;
        for p in Priority::ALL {
            check::non_zero(
                &format!("promotion.patience[{p}]"),
                self.patience[p.index()],
            )?;
        }
        Ok(())
    }
}

impl Default for Promotion {
    /// After 50 ms, patience 25 ms for Critical, 60 ms for High, 100 ms below.
    fn default() -> Promotion {
        let ms = Duration::from_millis;
        Promotion {
            after: ms(50),
            patience: [ms(25), ms(60), ms(100), ms(100), ms(100)],
            up_to: LoadLevel::Elevated,
        }
    }
}

/// Largest accepted queue capacity.
const MAX_QUEUE: usize = 1 << 20;

/// Builds a [`PriorityAdmissionLayer`]; see the [crate docs](crate) for the behaviour.
///
/// `C` classifies requests ([`FromExtensions`] by default, for `http::Request`), `D` reads
/// their deadline ([`DeadlineFromExtensions`] by default; [`NoDeadline`](crate::NoDeadline)
/// or a closure for other request types), `K` is the per-key rate limit ([`NoKey`] or
/// [`KeyedBy`]).
#[derive(Debug, Clone)]
pub struct PriorityAdmissionBuilder<C = FromExtensions, D = DeadlineFromExtensions, K = NoKey> {
    limit: Limit,
    queue_capacity: usize,
    queue_timeout: QueueTimeout,
    starvation_bound: Duration,
    promotion: Option<Promotion>,
    rate: Option<RateLimit>,
    keyed: K,
    keyed_rate: Option<RateLimit>,
    key_idle_sweep: Duration,
    reserved: [f64; Priority::COUNT],
    signal: Option<LoadSignal>,
    policy: Policy,
    probe: Option<QueueProbe>,
    classifier: C,
    deadline: D,
    retry_after: Duration,
    shutdown_retry_after: Duration,
    name: Option<SharedString>,
}

impl Default for PriorityAdmissionBuilder {
    fn default() -> Self {
        PriorityAdmissionBuilder {
            limit: Limit::default(),
            queue_capacity: 128,
            queue_timeout: QueueTimeout::default(),
            starvation_bound: Duration::from_secs(1),
            promotion: Some(Promotion::default()),
            rate: None,
            keyed: NoKey,
            keyed_rate: None,
            key_idle_sweep: Duration::from_secs(60),
            reserved: [0.0; Priority::COUNT],
            signal: None,
            policy: Policy::default(),
            probe: None,
            classifier: FromExtensions::default(),
            deadline: DeadlineFromExtensions,
            retry_after: Duration::from_secs(1),
            shutdown_retry_after: Duration::from_secs(1),
            name: None,
        }
    }
}

impl<C, D, K> PriorityAdmissionBuilder<C, D, K> {
    /// The concurrency limit (default: [`Limit::gradient`] with its defaults).
    #[must_use]
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limit = limit;
        self
    }

    /// Requests that may wait at `Normal` (default 128); scaled per level by `Policy::queue`.
    /// `0` means no queue: a request that finds no free permit is refused at once.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// How long a request may wait (default CoDel 40 ms / 120 ms).
    #[must_use]
    pub fn queue_timeout(mut self, timeout: QueueTimeout) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// A queued request that waited at least this long is served before more important
    /// ones that waited less (default 1 s).
    ///
    /// At most every other permit goes to a starved request out of priority order, so under
    /// sustained overload the more important classes keep at least half the permits. With
    /// the defaults a lower-class request times out (CoDel allows at most 120 ms) before it
    /// counts as starved, so strict priority holds; the bound matters with a long fixed
    /// queue timeout. A short bound under sustained overload trades priority for fairness.
    #[must_use]
    pub fn starvation_bound(mut self, bound: Duration) -> Self {
        self.starvation_bound = bound;
        self
    }

    /// Lets a request that waited [`Promotion::after`] be served before more important ones
    /// while those are not backlogged (default [`Promotion::default`]); see [`Promotion`].
    #[must_use]
    pub fn promotion(mut self, promotion: Promotion) -> Self {
        self.promotion = Some(promotion);
        self
    }

    /// Strict priority order (only the [starvation bound](Self::starvation_bound) breaks it):
    /// no [`Promotion`].
    #[must_use]
    pub fn no_promotion(mut self) -> Self {
        self.promotion = None;
        self
    }

    /// A global rate limit, scaled by `Policy::rate` at each level.
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate = Some(limit);
        self
    }

    /// How often idle keys of the keyed rate limit are forgotten (default 60 s).
    #[must_use]
    pub fn key_idle_sweep(mut self, period: Duration) -> Self {
        self.key_idle_sweep = period;
        self
    }

    /// Holds `share` of the limit back for `priority`: other classes cannot take those
    /// permits even when they are free. Shares are fractions in `[0, 1]` summing to at most 1.
    #[must_use]
    pub fn reserve(mut self, priority: Priority, share: f64) -> Self {
        self.reserved[priority.index()] = share;
        self
    }

    /// The load signal to read the level from (default: `Normal`, fixed).
    #[must_use]
    pub fn signal(mut self, signal: LoadSignal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// The per-level policy (`queue` and `rate` tables are used).
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Reports queueing delay and depth to `probe`, for the monitor: zero for immediate
    /// admissions; for a request served from the queue, the wait of the most important
    /// request waiting at that moment (its own unless it was promoted); for a refusal for
    /// lack of room (`QueueFull`), the longest wait allowed. So the signal reads overload,
    /// not the wait that priority order itself imposes on the lowest classes.
    #[must_use]
    pub fn probe(mut self, probe: QueueProbe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// `retry_after` of `QueueFull` / `QueueTimeout` rejections (default 1 s).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Default `retry_after` of rejections after [`close`](crate::AdmissionHandle::close)
    /// (default 1 s).
    #[must_use]
    pub fn shutdown_retry_after(mut self, retry_after: Duration) -> Self {
        self.shutdown_retry_after = retry_after;
        self
    }

    /// Names this instance in its metrics (a `name` label beside `layer="admission"`), so
    /// the series of several admission layers (e.g. one per route) are not summed together.
    #[must_use]
    pub fn name(mut self, name: impl Into<SharedString>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How requests are classified.
    pub fn classifier<C2>(self, classifier: C2) -> PriorityAdmissionBuilder<C2, D, K> {
        PriorityAdmissionBuilder {
            limit: self.limit,
            queue_capacity: self.queue_capacity,
            queue_timeout: self.queue_timeout,
            starvation_bound: self.starvation_bound,
            promotion: self.promotion,
            rate: self.rate,
            keyed: self.keyed,
            keyed_rate: self.keyed_rate,
            key_idle_sweep: self.key_idle_sweep,
            reserved: self.reserved,
            signal: self.signal,
            policy: self.policy,
            probe: self.probe,
            classifier,
            deadline: self.deadline,
            retry_after: self.retry_after,
            shutdown_retry_after: self.shutdown_retry_after,
            name: self.name,
        }
    }

    /// How a request's deadline is read (a closure `Fn(&Req) -> Option<Deadline>`,
    /// [`NoDeadline`](crate::NoDeadline) or [`DeadlineFromExtensions`]).
    pub fn deadline<D2>(self, deadline: D2) -> PriorityAdmissionBuilder<C, D2, K> {
        PriorityAdmissionBuilder {
            limit: self.limit,
            queue_capacity: self.queue_capacity,
            queue_timeout: self.queue_timeout,
            starvation_bound: self.starvation_bound,
            promotion: self.promotion,
            rate: self.rate,
            keyed: self.keyed,
            keyed_rate: self.keyed_rate,
            key_idle_sweep: self.key_idle_sweep,
            reserved: self.reserved,
            signal: self.signal,
            policy: self.policy,
            probe: self.probe,
            classifier: self.classifier,
            deadline,
            retry_after: self.retry_after,
            shutdown_retry_after: self.shutdown_retry_after,
            name: self.name,
        }
    }

    /// A rate limit per key (tenant, user, client address): `extract` gives a request's
    /// key, or `None` for requests that are not limited per key. Scaled per level like the
    /// global limit; idle keys are forgotten every [`key_idle_sweep`](Self::key_idle_sweep).
    /// The key's limit is checked before the global one, so requests a key refuses spend
    /// none of the global rate (one tenant's flood cannot use up the others' share).
    pub fn keyed_rate_limit<Req, Key, F>(
        self,
        extract: F,
        limit: RateLimit,
    ) -> PriorityAdmissionBuilder<C, D, KeyedBy<F, Key>>
    where
        F: Fn(&Req) -> Option<Key>,
        Key: Hash + Eq + Clone,
    {
        PriorityAdmissionBuilder {
            limit: self.limit,
            queue_capacity: self.queue_capacity,
            queue_timeout: self.queue_timeout,
            starvation_bound: self.starvation_bound,
            promotion: self.promotion,
            rate: self.rate,
            keyed: KeyedBy {
                extract,
                limiter: None,
                _key: PhantomData,
            },
            keyed_rate: Some(limit),
            key_idle_sweep: self.key_idle_sweep,
            reserved: self.reserved,
            signal: self.signal,
            policy: self.policy,
            probe: self.probe,
            classifier: self.classifier,
            deadline: self.deadline,
            retry_after: self.retry_after,
            shutdown_retry_after: self.shutdown_retry_after,
            name: self.name,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.limit.validate()?;
        if self.queue_capacity > MAX_QUEUE {
            return Err(ConfigError::new(
                "queue_capacity",
                format!("must be at most {MAX_QUEUE} (got {})", self.queue_capacity),
            ));
        }
        self.queue_timeout.validate()?;
        check::non_zero("starvation_bound", self.starvation_bound)?;
        if let Some(promotion) = &self.promotion {
            promotion.validate()?;
        }
        if let Some(rate) = &self.rate {
            rate.validate("rate_limit")?;
        }
        if let Some(rate) = &self.keyed_rate {
            rate.validate("keyed_rate_limit")?;
        }
        check::non_zero("key_idle_sweep", self.key_idle_sweep)?;
        let mut sum = 0.0;
        for p in Priority::ALL {
            check::unit_interval(&format!("reserve[{p}]"), self.reserved[p.index()])?;
            sum += self.reserved[p.index()];
        }
        if sum > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "reserve",
                format!("shares must sum to at most 1 (got {sum})"),
            ));
        }
        self.policy.validate().map_err(|e| e.within("policy"))?;
        Ok(())
    }

    fn shared(&self) -> Shared {
        let now = tokio::time::Instant::now();
        let caps = LevelTable::from_fn(|level: LoadLevel| {
            (self.queue_capacity as f64 * self.policy.queue[level]).round() as usize
        });
        let reserved = self
            .reserved
            .iter()
            .any(|s| *s > 0.0)
            .then_some(self.reserved);
        Shared::new(
            self.limit.initial(),
            Algorithm::new(&self.limit, now),
            Settings {
                queue_caps: caps,
                timeout: self.queue_timeout,
                starvation_bound: self.starvation_bound,
                promotion: self.promotion,
                reserved,
                retry_after: self.retry_after,
                shutdown_retry_after: self.shutdown_retry_after,
            },
            self.signal
                .clone()
                .unwrap_or_else(|| LoadSignal::fixed(LoadLevel::Normal)),
            self.probe.clone(),
            self.rate.map(|r| GlobalRate::new(r, &self.policy.rate)),
            match &self.name {
                Some(name) => DecisionMetrics::named("admission", name.clone()),
                None => DecisionMetrics::new("admission"),
            },
        )
    }
}

impl<C, D> PriorityAdmissionBuilder<C, D, NoKey> {
    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: a limit of 0 or above 2²⁴, `min_limit > max_limit`,
    /// NaN / infinite / out-of-range factors, zero durations, a CoDel target above its
    /// interval, a queue above 2²⁰, a rate ≤ 0 or above 10⁷/s, reserved shares outside
    /// `[0, 1]` or summing above 1, an invalid policy.
    pub fn build(self) -> Result<PriorityAdmissionLayer<C, D, NoKey>, ConfigError> {
        self.validate()?;
        let shared = Arc::new(self.shared());
        Ok(PriorityAdmissionLayer::from_parts(
            shared,
            self.classifier,
            self.deadline,
            NoKey,
        ))
    }
}

impl<C, D, F, Key: Hash + Eq + Clone> PriorityAdmissionBuilder<C, D, KeyedBy<F, Key>> {
    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// As for the unkeyed builder, plus an invalid keyed rate.
    pub fn build(self) -> Result<PriorityAdmissionLayer<C, D, KeyedBy<F, Key>>, ConfigError> {
        self.validate()?;
        let shared = Arc::new(self.shared());
        let keyed_rate = self.keyed_rate.unwrap_or(RateLimit::per_second(1.0));
        let limiter = KeyedRate::new(keyed_rate, &self.policy.rate, self.key_idle_sweep);
        let keyed = KeyedBy {
            extract: self.keyed.extract,
            limiter: Some(std::sync::Arc::new(limiter)),
            _key: PhantomData,
        };
        Ok(PriorityAdmissionLayer::from_parts(
            shared,
            self.classifier,
            self.deadline,
            keyed,
        ))
    }
}
