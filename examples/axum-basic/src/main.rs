//! Runs the axum-basic example on 127.0.0.1:3000 (or `$BIND`) until Ctrl-C / SIGTERM.
//!
//! ```sh
//! curl -i localhost:3000/ -H 'x-priority: low'
//! curl -i localhost:3000/health
//! curl -s localhost:3000/metrics | grep brownout_
//! ```

use brownout::shutdown::Shutdown;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // Before the stack is built, so that its counters land in this recorder.
    axum_basic::install_metrics().map_err(std::io::Error::other)?;
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = Shutdown::builder().build().map_err(std::io::Error::other)?;
    shutdown.listen_for_signals();
    let brownout = axum_basic::stack(&shutdown).map_err(std::io::Error::other)?;
    axum_basic::serve(listener, &brownout, shutdown).await
}
