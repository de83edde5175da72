//! The greeter server: `tonic-greeter [ADDR]` (default `127.0.0.1:50051`); Ctrl-C or
//! SIGTERM shuts it down gracefully and prints the shutdown report, then the brownout
//! metrics it recorded (Prometheus text format, with `# HELP` lines from
//! `brownout::telemetry::describe()`).

use std::time::Duration;

use brownout::BoxError;
use brownout::monitor::Monitor;
use brownout::shutdown::Shutdown;
use tokio::net::TcpListener;
use tonic_greeter::{ServerConfig, serve};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    // The recorder first, then the descriptions, then the stack (whose counters bind to the
    // recorder installed when they are first used).
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    brownout::telemetry::describe();
    let monitor = Monitor::builder()
        .latency_objective(Duration::from_millis(50))
        .build()?;
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(10))
        .load_signal(monitor.signal())
        .build()?;
    shutdown.listen_for_signals();

    let listener = TcpListener::bind(&addr).await?;
    println!("greeter listening on {}", listener.local_addr()?);
    let report = serve(listener, shutdown, ServerConfig::new(monitor)).await?;
    println!("{report}");
    println!("{}", metrics.render());
    Ok(())
}
