//! The whole brownout stack in front of an axum router.
//!
//! `app` builds the router; `serve` runs it on a listener until the shutdown handle
//! triggers, then drains. `src/main.rs` binds 127.0.0.1:3000 and listens for Ctrl-C.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use brownout::http::{Degradation, HttpClassifier};
use brownout::shutdown::Shutdown;
use brownout::{Brownout, ConfigError, Priority};
use tokio::net::TcpListener;

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
/// `degraded`, 503 `unhealthy` (Emergency level, or shutting down).
pub fn app(brownout: &Brownout) -> Result<Router, ConfigError> {
    let health = brownout.health().build()?;
    Ok(Router::new()
        .route("/", get(hello))
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                async move { health.check().await }
            }),
        )
        .layer(brownout.layer()))
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
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.triggered())
        .await?;
    let report = shutdown.wait().await;
    println!("shutdown: {report:?}");
    Ok(())
}
