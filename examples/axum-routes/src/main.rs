//! Runs the axum-routes example on 127.0.0.1:3000 (or `$BIND`) until Ctrl-C / SIGTERM.
//!
//! ```sh
//! curl -i 'localhost:3000/search?q=rust'
//! curl -i localhost:3000/reports
//! curl -i localhost:3000/health
//! curl -i -X POST 'localhost:3000/admin/toggle/reports?enabled=false'
//! curl -s localhost:3000/metrics | grep brownout_
//! ```

use axum_routes::{RouteLimits, Routes};
use brownout::shutdown::Shutdown;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // First, so that every counter the stack registers lands in this recorder.
    let metrics = axum_routes::install_metrics().map_err(std::io::Error::other)?;
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = Shutdown::builder().build().map_err(std::io::Error::other)?;
    shutdown.listen_for_signals();
    let routes =
        Routes::build(RouteLimits::default(), Some(&shutdown)).map_err(std::io::Error::other)?;
    axum_routes::serve(listener, &routes, Some(metrics), shutdown).await
}
