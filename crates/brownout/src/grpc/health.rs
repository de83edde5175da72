//! `grpc.health.v1` from brownout's [`Health`]: a tonic-health [`HealthReporter`] kept in
//! step with the load level, the shutdown phase and the component checks.
//!
//! # Why
//!
//! gRPC load balancers and Kubernetes' gRPC probes ask `grpc.health.v1.Health/Check` (or
//! `Watch`), not an http endpoint. tonic-health serves that protocol, but its status only
//! changes when someone calls `set_serving` / `set_not_serving`. [`GrpcHealth`] makes that
//! call from the same verdict as the http health endpoint:
//!
//! | [`HealthStatus`] | `ServingStatus` |
//! |---|---|
//! | healthy | `SERVING` |
//! | degraded (level ≥ Elevated, a breaker open, a non-essential component down) | `SERVING`: balancers keep sending, brownout sheds by class |
//! | unhealthy (Emergency, shutting down, an essential component down) | `NOT_SERVING` |
//!
//! [`GrpcHealth::run`] re-evaluates at once when the level or the shutdown phase changes
//! (so `NOT_SERVING` reaches probers at the shutdown trigger, before requests are refused),
//! and every [`interval`](GrpcHealth::interval) for the component checks. It reports the
//! overall server (`""`) and every service named with [`service`](GrpcHealth::service),
//! and writes a status only when it changes, so `Watch` streams see transitions only.
//!
//! ```
//! use brownout::grpc::health::GrpcHealth;
//! use brownout::health::Health;
//! use brownout::{LoadLevel, LoadSignal};
//! use tonic_health::ServingStatus;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
//! let health = Health::builder().signal(signal).build().unwrap();
//! let (reporter, _server) = tonic_health::server::health_reporter();
//! // With tonic: Server::builder().add_service(_server) and tokio::spawn(grpc_health.run()).
//! let mut grpc_health = GrpcHealth::new(health, reporter).service("greeter.v1.Greeter");
//!
//! assert_eq!(grpc_health.sync().await, ServingStatus::Serving);
//! publisher.publish(LoadLevel::High); // degraded: still serving
//! assert_eq!(grpc_health.sync().await, ServingStatus::Serving);
//! publisher.publish(LoadLevel::Emergency);
//! assert_eq!(grpc_health.sync().await, ServingStatus::NotServing);
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::health::{Health, HealthStatus};

/// The `grpc.health.v1` status for a health verdict: `SERVING` unless unhealthy.
pub const fn serving_status(status: HealthStatus) -> ServingStatus {
    match status {
        HealthStatus::Healthy | HealthStatus::Degraded => ServingStatus::Serving,
        HealthStatus::Unhealthy => ServingStatus::NotServing,
    }
}

/// Keeps a tonic-health [`HealthReporter`] in step with a [`Health`] (see the
/// [module docs](self)).
pub struct GrpcHealth {
    health: Health,
    reporter: HealthReporter,
    services: Vec<String>,
    interval: Duration,
    last: Option<ServingStatus>,
}

impl fmt::Debug for GrpcHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcHealth")
            .field("services", &self.services)
            .field("interval", &self.interval)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl GrpcHealth {
    /// Reports `health`'s verdict through `reporter` for the whole server (service `""`);
    /// component checks re-run every 5 s.
    pub fn new(health: Health, reporter: HealthReporter) -> GrpcHealth {
        GrpcHealth {
            health,
            reporter,
            services: vec![String::new()],
            interval: Duration::from_secs(5),
            last: None,
        }
    }

    /// Also reports the same verdict for service `name` (its full gRPC name, e.g.
    /// `<GreeterServer<G> as tonic::server::NamedService>::NAME`).
    #[must_use]
    pub fn service(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.services.contains(&name) {
            self.services.push(name);
        }
        self
    }

    /// How often [`run`](Self::run) re-runs the component checks when neither the level
    /// nor the shutdown phase changes (default 5 s; at least 1 ms).
    #[must_use]
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(1));
        self
    }

    /// Runs the health check once and writes the resulting status for every reported
    /// service when it differs from the last one written; returns it.
    pub async fn sync(&mut self) -> ServingStatus {
        let report = self.health.check().await;
        let status = serving_status(report.status);
        if self.last != Some(status) {
            for service in &self.services {
                self.reporter.set_service_status(service, status).await;
            }
            if self.last.is_some() {
                tracing::info!(
                    %status,
                    verdict = %report.status,
                    reasons = ?report.reasons,
                    "grpc health status changed"
                );
            }
            self.last = Some(status);
        }
        status
    }

    /// Keeps the reporter in step for ever: syncs now, then whenever the level or the
    /// shutdown phase changes, and at least every [`interval`](Self::interval). Spawn it
    /// (`tokio::spawn(grpc_health.run())`) and abort the task when the server is done.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it between two syncs loses nothing; the reporter keeps the
    /// last status written.
    pub async fn run(mut self) {
        let mut watch = self.health.watch();
        loop {
            self.sync().await;
            tokio::select! {
                () = watch.changed() => {}
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use brownout_core::{LoadLevel, LoadSignal};
    use brownout_shutdown::Shutdown;
    use tonic_health::pb::health_server::Health as _;
    use tonic_health::pb::{HealthCheckRequest, health_check_response};
    use tonic_health::server::HealthService;

    use super::*;

    /// What a `grpc.health.v1.Health/Check` for `service` answers.
    async fn check(service: &HealthService, name: &str) -> health_check_response::ServingStatus {
        let request = tonic::Request::new(HealthCheckRequest {
            service: name.to_owned(),
        });
        let response = service.check(request).await.expect("service is known");
        response.into_inner().status()
    }

    #[test]
    fn degraded_stays_serving() {
        assert_eq!(
            serving_status(HealthStatus::Healthy),
            ServingStatus::Serving
        );
        assert_eq!(
            serving_status(HealthStatus::Degraded),
            ServingStatus::Serving
        );
        assert_eq!(
            serving_status(HealthStatus::Unhealthy),
            ServingStatus::NotServing
        );
    }

    #[tokio::test(start_paused = true)]
    async fn run_follows_level_shutdown_and_components() {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let shutdown = Shutdown::new();
        let database_up = Arc::new(AtomicBool::new(true));
        let up = database_up.clone();
        let health = Health::builder()
            .signal(signal)
            .shutdown(&shutdown)
            .component("database", true, Duration::from_millis(100), move || {
                let up = up.load(Ordering::SeqCst);
                async move {
                    if up {
                        Ok(())
                    } else {
                        Err("connection refused".to_owned())
                    }
                }
            })
            .build()
            .unwrap();
        let reporter = HealthReporter::new();
        let service = HealthService::from_health_reporter(reporter.clone());
        let task = tokio::spawn(
            GrpcHealth::new(health, reporter)
                .service("greeter.v1.Greeter")
                .interval(Duration::from_secs(1))
                .run(),
        );
        use health_check_response::ServingStatus::{NotServing, Serving};
        let settle = || tokio::time::sleep(Duration::from_millis(10));

        settle().await;
        assert_eq!(check(&service, "").await, Serving);
        assert_eq!(check(&service, "greeter.v1.Greeter").await, Serving);

        // Degraded (High) stays serving; Emergency is not serving, back to Normal serving:
        // each change is seen at once, well before the 1 s interval.
        publisher.publish(LoadLevel::High);
        settle().await;
        assert_eq!(check(&service, "greeter.v1.Greeter").await, Serving);
        publisher.publish(LoadLevel::Emergency);
        settle().await;
        assert_eq!(check(&service, "").await, NotServing);
        assert_eq!(check(&service, "greeter.v1.Greeter").await, NotServing);
        publisher.publish(LoadLevel::Normal);
        settle().await;
        assert_eq!(check(&service, "").await, Serving);

        // An essential component going down is seen at the next interval.
        database_up.store(false, Ordering::SeqCst);
        settle().await;
        assert_eq!(
            check(&service, "").await,
            Serving,
            "not before the interval"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(check(&service, "").await, NotServing);
        database_up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1010)).await;
        assert_eq!(check(&service, "").await, Serving);

        // The shutdown trigger turns it NOT_SERVING at once.
        shutdown.trigger();
        settle().await;
        assert_eq!(check(&service, "").await, NotServing);
        assert_eq!(check(&service, "greeter.v1.Greeter").await, NotServing);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_publisher_does_not_spin() {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Emergency);
        let health = Health::builder().signal(signal).build().unwrap();
        let mut watch = health.watch();
        drop(publisher);
        // With the publisher gone and no shutdown, nothing can change: it waits (no spin),
        // so the timeout wins.
        let waited = tokio::time::timeout(Duration::from_secs(60), watch.changed()).await;
        assert!(waited.is_err());
        let reporter = HealthReporter::new();
        let service = HealthService::from_health_reporter(reporter.clone());
        let mut grpc_health = GrpcHealth::new(health, reporter);
        assert_eq!(grpc_health.sync().await, ServingStatus::NotServing);
        assert_eq!(
            check(&service, "").await,
            health_check_response::ServingStatus::NotServing
        );
    }
}
