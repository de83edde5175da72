//! Starts the example on an ephemeral loopback port and talks HTTP/1.1 to it.

use std::time::Duration;

use brownout::LoadLevel;
use brownout::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends one request with `Connection: close` and returns the raw response text.
async fn get(addr: std::net::SocketAddr, path: &str, priority: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nx-priority: {priority}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_sheds_and_drains_on_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One recorder per process (this test binary): installed before the stack is built.
    axum_basic::install_metrics().unwrap();
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let brownout = axum_basic::stack(&shutdown).unwrap();
    let publisher = brownout.publisher();
    let server = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { axum_basic::serve(listener, &brownout, shutdown).await })
    };

    let ok = get(addr, "/", "low").await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.contains("hello, with everything"), "{ok}");
    assert_eq!(header(&ok, "x-load-level"), Some("normal"));

    // Under a Critical level, Low work is shed with 503 + Retry-After; health still answers.
    publisher.force(LoadLevel::Critical);
    let shed = get(addr, "/", "low").await;
    assert_eq!(status(&shed), 503, "{shed}");
    assert!(header(&shed, "retry-after").is_some(), "{shed}");
    assert_eq!(header(&shed, "x-load-level"), Some("critical"));
    assert!(shed.contains("shed"), "{shed}");
    let high = get(addr, "/", "high").await;
    assert_eq!(status(&high), 200, "{high}");
    assert!(high.contains("simple mode"), "handlers degrade: {high}");
    let health = get(addr, "/health", "background").await;
    assert_eq!(status(&health), 200, "{health}");
    assert!(health.contains(r#""status":"degraded""#), "{health}");
    assert!(health.contains(r#""level":"critical""#), "{health}");
    publisher.release();

    // The decisions above are in the Prometheus text: admissions, and the shed of Low work.
    let metrics = get(addr, "/metrics", "low").await;
    assert_eq!(status(&metrics), 200, "{metrics}");
    let samples = |name: &str| -> Vec<&str> {
        metrics
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .collect()
    };
    // install_metrics also described every metric: the exposition carries HELP lines.
    assert!(
        metrics.contains("# HELP brownout_requests_total "),
        "{metrics}"
    );
    let admitted = samples("brownout_requests_total");
    assert!(
        admitted.iter().any(|l| l.contains(r#"layer="shed""#)
            && l.contains(r#"outcome="admitted""#)
            && l.contains(r#"priority="high""#)),
        "{metrics}"
    );
    let shed_low = samples("brownout_rejections_total");
    assert!(
        shed_low.iter().any(|l| l.contains(r#"layer="shed""#)
            && l.contains(r#"reason="shed""#)
            && l.contains(r#"priority="low""#)
            && l.contains(r#"level="critical""#)
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(metrics.contains("brownout_level "), "{metrics}");

    // Shutdown: new requests are refused with Connection: close, and the server exits by itself.
    shutdown.trigger();
    let served = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops by itself after the trigger")
        .unwrap();
    served.unwrap();
    let report = shutdown.wait().await;
    assert_eq!(report.aborted, 0, "{report:?}");
    assert!(report.drained, "{report:?}");
}
