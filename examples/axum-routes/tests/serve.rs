//! Starts the example on an ephemeral loopback port and talks raw HTTP/1.1 to it: the
//! /reports limit holds over real connections, and /metrics shows the decisions.

use std::net::SocketAddr;
use std::time::Duration;

use axum_routes::{RouteLimits, Routes};
use brownout::LoadLevel;
use brownout::admission::{QueueTimeout, RateLimit};
use brownout::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Bound on any one exchange, so a bug fails the test instead of hanging it.
const EXCHANGE: Duration = Duration::from_secs(10);

/// Sends one request with `Connection: close` and returns the raw response text.
async fn send(addr: SocketAddr, method: &str, path: &str) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    timeout(EXCHANGE, exchange)
        .await
        .expect("the exchange finishes")
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_limit_holds_over_real_connections_and_metrics_show_it() {
    // One recorder per process (this test binary), installed before the stack is built.
    let metrics = axum_routes::install_metrics().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let limits = RouteLimits {
        reports_concurrency: 3,
        reports_queue: 64,
        // Generous, so every request is eventually served: the test is about the limit.
        reports_queue_timeout: QueueTimeout::fixed(Duration::from_secs(5)),
        reports_rate: RateLimit::per_second(1e6).burst(1_000_000),
        work: Duration::from_millis(20),
        ..RouteLimits::default()
    };
    let routes = std::sync::Arc::new(Routes::build(limits, Some(&shutdown)).unwrap());
    routes.brownout().publisher().force(LoadLevel::Normal);
    let server = {
        let (routes, shutdown) = (routes.clone(), shutdown.clone());
        tokio::spawn(
            async move { axum_routes::serve(listener, &routes, Some(metrics), shutdown).await },
        )
    };

    const N: usize = 30;
    let mut calls = JoinSet::new();
    for i in 0..N {
        calls.spawn(async move { ("reports", send(addr, "GET", "/reports").await) });
        calls.spawn(async move { ("search", send(addr, "GET", &format!("/search?q={i}")).await) });
    }
    while let Some(done) = calls.join_next().await {
        let (route, response) = done.unwrap();
        assert_eq!(status(&response), 200, "{route}: {response}");
    }
    let peak = routes.reports_handler().peak();
    assert!((1..=3).contains(&peak), "peak {peak} within the limit of 3");
    // Everything finished and gave its slot back.
    assert_eq!(routes.reports_admission().in_flight(), 0);
    assert_eq!(routes.search_admission().in_flight(), 0);
    assert_eq!(routes.reports_handler().now(), 0);

    // Shed one Low request, then read the counters back.
    routes.brownout().publisher().force(LoadLevel::High);
    assert_eq!(status(&send(addr, "GET", "/reports").await), 503);
    routes.brownout().publisher().force(LoadLevel::Normal);

    let text = send(addr, "GET", "/metrics").await;
    assert_eq!(status(&text), 200, "{text}");
    let has = |name: &str, labels: &[&str]| {
        text.lines().any(|line| {
            line.starts_with(&format!("{name}{{")) && labels.iter().all(|l| line.contains(l))
        })
    };
    let admitted_low = [
        r#"layer="admission""#,
        r#"outcome="admitted""#,
        r#"priority="low""#,
    ];
    assert!(has("brownout_requests_total", &admitted_low), "{text}");
    let admitted_high = [
        r#"layer="admission""#,
        r#"outcome="admitted""#,
        r#"priority="high""#,
    ];
    assert!(has("brownout_requests_total", &admitted_high), "{text}");
    let shed = [
        r#"layer="shed""#,
        r#"reason="shed""#,
        r#"priority="low""#,
        r#"level="high""#,
    ];
    assert!(has("brownout_rejections_total", &shed), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("brownout_level ")),
        "{text}"
    );

    shutdown.trigger();
    timeout(EXCHANGE, server)
        .await
        .expect("the server stops by itself after the trigger")
        .unwrap()
        .unwrap();
    assert!(routes.reports_admission().is_closed());
}
