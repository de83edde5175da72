//! The whole brownout stack in front of an axum router.
//!
//! `app` builds the router; `serve` runs it on a listener until the shutdown handle
//! triggers, then drains. `src/main.rs` binds 127.0.0.1:3000 and listens for Ctrl-C.
//!
//! Metrics: call [`install_metrics`] before [`stack`]; `app` then serves `GET /metrics` in
//! the Prometheus text format (see `docs/metrics.md` for what each metric means).

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use brownout::http::{Degradation, HttpClassifier};
use brownout::shutdown::Shutdown;
use brownout::{Brownout, ConfigError, Priority};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

static METRICS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle (the same one
/// on later calls).
///
/// Call it **before** [`stack`]: brownout's counters and gauges bind to the recorder
/// installed when they are first used (the monitor's gauges when the stack is built), and
/// stay on the no-op recorder otherwise.
///
/// # Errors
///
/// When another `metrics` recorder was installed in this process first.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    METRICS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("installing the Prometheus recorder: {e}"))?;
            // HELP and unit lines for every brownout metric in the exposition.
            brownout::telemetry::describe();
            Ok(handle)
        })
        .clone()
}

/// The brownout stack for this service: `/health` is Critical, everything else is
/// classified from `x-priority` / `priority` headers (Medium by default).
pub fn stack(shutdown: &Shutdown) -> Result<Brownout, ConfigError> {
    Brownout::builder()
        .classifier(
            HttpClassifier::new()
                .route("/health", Priority::Critical)
                .header("x-priority")
                .rfc9218(),
        )
        .shutdown(shutdown)
        .build()
}

/// The router with the stack applied. `/health` answers JSON: 200 `healthy` or
/// `degraded`, 503 `unhealthy` (Emergency level, or shutting down). Once
/// [`install_metrics`] has run, `/metrics` answers the Prometheus text format; it is added
/// outside the stack, so a scrape is never shed nor counted as traffic.
pub fn app(brownout: &Brownout) -> Result<Router, ConfigError> {
    let health = brownout.health().build()?;
    let router = Router::new()
        .route("/", get(hello))
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                async move { health.check().await }
            }),
        )
        .layer(brownout.layer());
    Ok(match METRICS.get() {
        Some(Ok(handle)) => {
            let handle = handle.clone();
            router.route("/metrics", get(move || async move { handle.render() }))
        }
        _ => router,
    })
}

/// A handler that does less work when the server is loaded.
async fn hello(degradation: Degradation) -> String {
    if degradation.is_full() {
        // Pretend to do the expensive, optional part of the answer.
        tokio::time::sleep(Duration::from_millis(5)).await;
        "hello, with everything\n".to_owned()
    } else {
        format!(
            "hello ({} mode at level {})\n",
            degradation.mode(),
            degradation.level()
        )
    }
}

/// Serves `app` on `listener` until `shutdown` triggers, then waits for in-flight requests
/// to drain (bounded by the shutdown's drain timeout).
pub async fn serve(
    listener: TcpListener,
    brownout: &Brownout,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let router = app(brownout).map_err(std::io::Error::other)?;
    // Without an HTTP listener feature the exporter has no task of its own: run its upkeep
    // (draining histogram buffers) here, so memory stays bounded between scrapes.
    let upkeep = match METRICS.get() {
        Some(Ok(handle)) => {
            let handle = handle.clone();
            Some(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    handle.run_upkeep();
                }
            }))
        }
        _ => None,
    };
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.triggered())
        .await;
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    served?;
    let report = shutdown.wait().await;
    println!("shutdown: {report:?}");
    Ok(())
}
