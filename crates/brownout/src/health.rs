//! A health endpoint that knows about overload: healthy, degraded or unhealthy, from the
//! load level, the shutdown phase, circuit breakers and your own component checks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use brownout_core::{ConfigError, LoadLevel, LoadSignal};
use brownout_monitor::Monitor;
use brownout_shutdown::Shutdown;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;
type BreakerProbe = Arc<dyn Fn() -> BreakerHealth + Send + Sync>;

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// Everything is fine: 200.
    Healthy,
    /// Serving, but under load (level ≥ Elevated), with a breaker open, or with a
    /// non-essential component down: still 200, so balancers keep sending.
    Degraded,
    /// Not serving: Emergency level, shutting down, or an essential component down: 503.
    Unhealthy,
}

impl HealthStatus {
    /// `healthy`, `degraded` or `unhealthy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// 200 for healthy and degraded, 503 for unhealthy.
    pub const fn status_code(self) -> StatusCode {
        match self {
            HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A circuit breaker's state as the health endpoint sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerHealth {
    /// The state's name (`closed`, `open`, `half_open`…).
    pub state: &'static str,
    /// Whether calls through it fail fast now.
    pub open: bool,
}

struct Component {
    name: String,
    essential: bool,
    timeout: Duration,
    check: Check,
}

/// The result of one component check.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// Whether it is essential (its failure makes the service unhealthy).
    pub essential: bool,
    /// `None` when healthy, else what went wrong (including `timed out after …`).
    pub error: Option<String>,
    /// How long the check took.
    pub took: Duration,
}

/// What the health endpoint answers.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// The load level.
    pub level: LoadLevel,
    /// Why the verdict is not `healthy`, one line each.
    pub reasons: Vec<String>,
    /// The monitor's signals (name, value, level), when a monitor is attached.
    pub signals: Vec<(String, Option<f64>, LoadLevel)>,
    /// Each breaker's name and state.
    pub breakers: Vec<(String, BreakerHealth)>,
    /// Each component check.
    pub components: Vec<ComponentReport>,
    /// Whether the service still accepts traffic (false once shutdown triggered).
    pub ready: bool,
}

impl HealthReport {
    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status.as_str(),
            "level": self.level.as_str(),
            "ready": self.ready,
            "reasons": self.reasons,
            "signals": self.signals.iter().map(|(name, value, level)| json!({
                "name": name, "value": value, "level": level.as_str(),
            })).collect::<Vec<_>>(),
            "breakers": self.breakers.iter().map(|(name, b)| json!({
                "name": name, "state": b.state, "open": b.open,
            })).collect::<Vec<_>>(),
            "components": self.components.iter().map(|c| json!({
                "name": c.name, "essential": c.essential, "healthy": c.error.is_none(),
                "error": c.error, "took_ms": c.took.as_secs_f64() * 1e3,
            })).collect::<Vec<_>>(),
        })
    }

    /// The http response: 200 or 503 with the JSON body, never cached.
    pub fn into_response<B: From<String>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.to_json().to_string()));
        *response.status_mut() = self.status.status_code();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A registry of health inputs, cheap to clone into a handler.
///
/// ```
/// use std::time::Duration;
/// use brownout::health::{Health, HealthStatus};
/// use brownout::{LoadLevel, LoadSignal};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
/// let health = Health::builder()
///     .signal(signal)
///     .component("database", true, Duration::from_millis(200), || async { Ok(()) })
///     .component("recommendations", false, Duration::from_millis(200), || async {
///         Err("connection refused".to_owned())
///     })
///     .build()
///     .unwrap();
///
/// let report = health.check().await;
/// assert_eq!(report.status, HealthStatus::Degraded); // a non-essential component is down
/// publisher.publish(LoadLevel::Emergency);
/// let response: http::Response<String> = health.check().await.into_response();
/// assert_eq!(response.status(), 503);
/// assert!(response.body().contains(r#""status":"unhealthy""#));
/// # }
/// ```
#[derive(Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

struct HealthInner {
    signal: Option<LoadSignal>,
    monitor: Option<Arc<Monitor>>,
    shutdown: Option<Shutdown>,
    breakers: Vec<(String, BreakerProbe)>,
    components: Vec<Component>,
    degraded_at: LoadLevel,
    unhealthy_at: LoadLevel,
}

/// Builds a [`Health`].
pub struct HealthBuilder {
    inner: HealthInner,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("components", &self.inner.components.len())
            .field("breakers", &self.inner.breakers.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for HealthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthBuilder").finish_non_exhaustive()
    }
}

impl Health {
    /// A builder with no inputs: healthy until told otherwise.
    pub fn builder() -> HealthBuilder {
        HealthBuilder {
            inner: HealthInner {
                signal: None,
                monitor: None,
                shutdown: None,
                breakers: Vec::new(),
                components: Vec::new(),
                degraded_at: LoadLevel::Elevated,
                unhealthy_at: LoadLevel::Emergency,
            },
        }
    }

    /// Runs every component check (concurrently, each bounded by its timeout) and combines
    /// them with the level, the shutdown phase and the breakers.
    pub async fn check(&self) -> HealthReport {
        let inner = &*self.inner;
        let mut checks = tokio::task::JoinSet::new();
        for (index, component) in inner.components.iter().enumerate() {
            let check = (component.check)();
            let timeout = component.timeout;
            checks.spawn(async move {
                let start = Instant::now();
                let result = match tokio::time::timeout(timeout, check).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("timed out after {timeout:?}")),
                };
                (index, result.err(), start.elapsed())
            });
        }
        let mut components: Vec<ComponentReport> = inner
            .components
            .iter()
            .map(|c| ComponentReport {
                name: c.name.clone(),
                essential: c.essential,
                error: Some("check did not finish".to_owned()),
                took: Duration::ZERO,
            })
            .collect();
        while let Some(joined) = checks.join_next().await {
            match joined {
                Ok((index, error, took)) => {
                    components[index].error = error;
                    components[index].took = took;
                }
                Err(panic) => {
                    // A panicking check is a failed check; which one is lost with the task,
                    // so it keeps its "did not finish" error.
                    tracing::warn!(%panic, "health check panicked");
                }
            }
        }

        let (level, signals) = match (&inner.monitor, &inner.signal) {
            (Some(monitor), _) => {
                let snapshot = monitor.snapshot();
                let signals = snapshot
                    .signals
                    .iter()
                    .map(|s| (s.name.to_string(), s.value, s.level))
                    .collect();
                (snapshot.level, signals)
            }
            (None, Some(signal)) => (signal.level(), Vec::new()),
            (None, None) => (LoadLevel::Normal, Vec::new()),
        };
        let breakers: Vec<(String, BreakerHealth)> = inner
            .breakers
            .iter()
            .map(|(name, probe)| (name.clone(), probe()))
            .collect();
        let ready = inner.shutdown.as_ref().is_none_or(Shutdown::is_ready);

        let mut status = HealthStatus::Healthy;
        let mut reasons = Vec::new();
        let mut verdict = |s: HealthStatus, reason: String| {
            status = status.max(s);
            reasons.push(reason);
        };
        if !ready {
            verdict(HealthStatus::Unhealthy, "shutting down".to_owned());
        }
        if level >= inner.unhealthy_at {
            verdict(HealthStatus::Unhealthy, format!("load level {level}"));
        } else if level >= inner.degraded_at {
            verdict(HealthStatus::Degraded, format!("load level {level}"));
        }
        for c in &components {
            if let Some(error) = &c.error {
                let s = if c.essential {
                    HealthStatus::Unhealthy
                } else {
                    HealthStatus::Degraded
                };
                verdict(s, format!("{} down: {error}", c.name));
            }
        }
        for (name, b) in &breakers {
            if b.open {
                verdict(
                    HealthStatus::Degraded,
                    format!("circuit {name} {}", b.state),
                );
            }
        }
        HealthReport {
            status,
            level,
            reasons,
            signals,
            breakers,
            components,
            ready,
        }
    }
}

/// Wakes when an input of the [`Health`] verdict changes: the load level or the shutdown
/// phase. Made by [`Health::watch`]; component checks and breakers are not watched (poll
/// them on a timer).
pub struct HealthWatch {
    level: Option<tokio::sync::watch::Receiver<LoadLevel>>,
    phase: Option<tokio::sync::watch::Receiver<brownout_shutdown::Phase>>,
}

impl fmt::Debug for HealthWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthWatch")
            .field("level", &self.level.is_some())
            .field("phase", &self.phase.is_some())
            .finish()
    }
}

impl HealthWatch {
    /// Waits until the level or the shutdown phase changes after the previous call (or
    /// after [`Health::watch`]). Never returns when neither can change any more (no level
    /// source, its publisher dropped, no shutdown): it does not spin.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a change that happens while no call is waiting is seen by the next one.
    pub async fn changed(&mut self) {
        loop {
            let level = async {
                match &mut self.level {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let phase = async {
                match &mut self.phase {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let (level_alive, phase_alive) = tokio::select! {
                alive = level => (alive, true),
                alive = phase => (true, alive),
            };
            if !level_alive {
                self.level = None; // the publisher is gone: the level stays as it is
            }
            if !phase_alive {
                self.phase = None;
            }
            if level_alive && phase_alive {
                return;
            }
        }
    }
}

impl Health {
    /// A watcher that wakes when the level or the shutdown phase changes, to push the
    /// verdict to a prober (e.g. `grpc.health.v1` through `brownout::grpc::health`)
    /// without polling.
    pub fn watch(&self) -> HealthWatch {
        let inner = &*self.inner;
        let level = match (&inner.monitor, &inner.signal) {
            (Some(monitor), _) => Some(monitor.signal().subscribe()),
            (None, Some(signal)) => Some(signal.subscribe()),
            (None, None) => None,
        };
        let mut level = level;
        if let Some(rx) = &mut level {
            rx.borrow_and_update();
        }
        let mut phase = inner.shutdown.as_ref().map(Shutdown::subscribe);
        if let Some(rx) = &mut phase {
            rx.borrow_and_update();
        }
        HealthWatch { level, phase }
    }
}

impl HealthBuilder {
    /// Reads the level from `signal` (use [`monitor`](Self::monitor) to report signals too).
    #[must_use]
    pub fn signal(mut self, signal: LoadSignal) -> Self {
        self.inner.signal = Some(signal);
        self
    }

    /// Reads the level and its signals from the monitor's snapshot.
    #[must_use]
    pub fn monitor(mut self, monitor: Arc<Monitor>) -> Self {
        self.inner.monitor = Some(monitor);
        self
    }

    /// Turns unhealthy (503) as soon as `shutdown` triggers — before requests are refused —
    /// so balancers stop sending first.
    #[must_use]
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.inner.shutdown = Some(shutdown.clone());
        self
    }

    /// A circuit breaker: an open breaker makes the service degraded (still 200).
    #[must_use]
    pub fn breaker(
        mut self,
        name: impl Into<String>,
        probe: impl Fn() -> BreakerHealth + Send + Sync + 'static,
    ) -> Self {
        self.inner.breakers.push((name.into(), Arc::new(probe)));
        self
    }

    /// A component check, run on each health request, bounded by `timeout`. A failing
    /// essential component makes the service unhealthy (503); any other, degraded.
    #[must_use]
    pub fn component<F, Fut>(
        mut self,
        name: impl Into<String>,
        essential: bool,
        timeout: Duration,
        check: F,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.inner.components.push(Component {
            name: name.into(),
            essential,
            timeout,
            check: Arc::new(move || Box::pin(check())),
        });
        self
    }

    /// The levels from which the service reports degraded (default Elevated) and unhealthy
    /// (default Emergency).
    #[must_use]
    pub fn levels(mut self, degraded_at: LoadLevel, unhealthy_at: LoadLevel) -> Self {
        self.inner.degraded_at = degraded_at;
        self.inner.unhealthy_at = unhealthy_at;
        self
    }

    /// Validates the registry: unique non-empty names, non-zero timeouts, degraded level
    /// not above the unhealthy one.
    pub fn build(self) -> Result<Health, ConfigError> {
        let inner = self.inner;
        brownout_core::config::check::ordered(
            "health.degraded_at",
            inner.degraded_at,
            "health.unhealthy_at",
            inner.unhealthy_at,
        )?;
        for (i, c) in inner.components.iter().enumerate() {
            if c.name.is_empty() {
                return Err(ConfigError::new(
                    "health.components",
                    "names must not be empty",
                ));
            }
            if inner.components[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::new(
                    format!("health.components.{}", c.name),
                    "is registered twice",
                ));
            }
            brownout_core::config::check::non_zero(
                &format!("health.components.{}.timeout", c.name),
                c.timeout,
            )?;
        }
        Ok(Health {
            inner: Arc::new(inner),
        })
    }
}

#[cfg(feature = "breaker")]
impl HealthBuilder {
    /// A brownout circuit breaker, through its handle.
    #[must_use]
    pub fn circuit<K>(
        self,
        name: impl Into<String>,
        handle: brownout_breaker::CircuitBreakHandle<K>,
    ) -> Self
    where
        brownout_breaker::CircuitBreakHandle<K>: Send + Sync + 'static,
    {
        self.breaker(name, move || {
            let state = handle.state();
            BreakerHealth {
                state: state.as_str(),
                open: matches!(
                    state,
                    brownout_breaker::BreakerState::Open
                        | brownout_breaker::BreakerState::ForcedOpen
                ),
            }
        })
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for HealthReport {
    fn into_response(self) -> axum::response::Response {
        HealthReport::into_response::<axum::body::Body>(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn verdicts() {
        let shutdown = Shutdown::new();
        let health = Health::builder()
            .shutdown(&shutdown)
            .component("slow", true, Duration::from_millis(50), || async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            })
            .build()
            .unwrap();
        let report = health.check().await;
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report.components[0]
                .error
                .as_deref()
                .unwrap()
                .contains("timed out")
        );

        let healthy = Health::builder()
            .shutdown(&shutdown)
            .breaker("payments", || BreakerHealth {
                state: "open",
                open: true,
            })
            .build()
            .unwrap();
        assert_eq!(healthy.check().await.status, HealthStatus::Degraded);
        shutdown.trigger();
        let report = healthy.check().await;
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(!report.ready);
        let json = report.to_json();
        assert_eq!(json["status"], "unhealthy");
        assert_eq!(json["breakers"][0]["open"], true);
    }

    #[test]
    fn bad_registry_refused() {
        let noop = || async { Ok(()) };
        let err = Health::builder()
            .component("db", true, Duration::ZERO, noop)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "health.components.db.timeout");
        let err = Health::builder()
            .component("db", true, Duration::from_secs(1), noop)
            .component("db", false, Duration::from_secs(1), noop)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "health.components.db");
        assert!(
            Health::builder()
                .levels(LoadLevel::Critical, LoadLevel::High)
                .build()
                .is_err()
        );
    }
}
