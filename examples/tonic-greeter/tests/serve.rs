//! End to end over loopback: the brownout stack in a tonic server, called with the
//! generated client. Every wait is bounded, so the test ends by itself.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use brownout::admission::RateLimit;
use brownout::monitor::Monitor;
use brownout::shed::LoadShedLayer;
use brownout::shutdown::{Shutdown, ShutdownReport};
use brownout::{BoxError, LoadLevel, LoadPublisher, LoadSignal, Priority};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_greeter::proto::greeter_server::GreeterServer;
use tonic_greeter::{GreeterService, ServerConfig, connect, hello};

const BOUND: Duration = Duration::from_secs(10);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {BOUND:?}"))
}

struct Running {
    addr: SocketAddr,
    publisher: LoadPublisher,
    shutdown: Shutdown,
    server: JoinHandle<Result<ShutdownReport, BoxError>>,
}

async fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Running {
    // Manual ticks: the detector never moves the level by itself; the test forces it.
    let monitor = Monitor::builder().manual_ticks().build().unwrap();
    let publisher = monitor.publisher();
    let shutdown = Shutdown::builder()
        .drain_timeout(Duration::from_secs(2))
        .load_signal(monitor.signal())
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = configure(ServerConfig::new(monitor).work(Duration::from_millis(1)));
    let server = tokio::spawn(tonic_greeter::serve(listener, shutdown.clone(), config));
    Running {
        addr,
        publisher,
        shutdown,
        server,
    }
}

fn metadata<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

// RELIABILITY #7 end to end: overload in a tonic server reaches a tonic client as
// UNAVAILABLE with pushback (not INTERNAL, not a reset stream), by class; then a shutdown
// refuses new calls and the server exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rel_07_shed_by_metadata_priority_then_graceful_shutdown() {
    let server = start(|config| config).await;
    let mut client = bounded("connect", connect(server.addr)).await.unwrap();

    let reply = bounded(
        "normal call",
        client.say_hello(hello("ada", Priority::Medium, None)),
    )
    .await
    .expect("a normal call is served");
    assert_eq!(
        reply.into_inner().message,
        "Hello, ada! (class medium, level normal)"
    );

    // Critical sheds Medium and below (default policy).
    server.publisher.force(LoadLevel::Critical);
    let status = bounded(
        "low call",
        client.say_hello(hello("low", Priority::Low, Some(Duration::from_secs(5)))),
    )
    .await
    .expect_err("a Low call is shed at Critical");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().starts_with("shed: "), "{status:?}");
    let pushback: u64 = metadata(&status, "grpc-retry-pushback-ms")
        .expect("shed rejections carry pushback")
        .parse()
        .unwrap();
    assert!(pushback > 0);
    assert_eq!(metadata(&status, "x-load-level"), Some("critical"));
    assert_eq!(metadata(&status, "x-reject-reason"), Some("shed"));

    let reply = bounded(
        "critical call",
        client.say_hello(hello("ops", Priority::Critical, None)),
    )
    .await
    .expect("a Critical call is served at Critical");
    assert_eq!(
        reply.into_inner().message,
        "Hello, ops! (class critical, level critical)"
    );
    assert_eq!(reply_level(&mut client).await, "critical");

    // A handler's own status passes through untouched.
    server.publisher.release();
    let status = bounded(
        "empty name",
        client.say_hello(hello("", Priority::High, None)),
    )
    .await
    .expect_err("an empty name is invalid");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Shutdown: new calls are refused, and the server ends by itself. On a connection the
    // server has not closed yet the guard answers (UNAVAILABLE "shutting_down: ..."); once
    // tonic has sent GOAWAY the client fails to reconnect, also UNAVAILABLE.
    assert!(server.shutdown.trigger());
    let status = bounded(
        "call after shutdown",
        client.say_hello(hello("late", Priority::Critical, None)),
    )
    .await
    .expect_err("calls after the trigger are refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let report = bounded("server exit", server.server)
        .await
        .expect("the server task does not panic")
        .expect("the server stops cleanly");
    assert_eq!(report.aborted, 0, "{report:?}");
}

/// The level a successful call reports in its `x-load-level` metadata.
async fn reply_level(
    client: &mut tonic_greeter::proto::greeter_client::GreeterClient<tonic::transport::Channel>,
) -> String {
    let reply = bounded(
        "level call",
        client.say_hello(hello("level", Priority::Critical, None)),
    )
    .await
    .unwrap();
    reply
        .metadata()
        .get("x-load-level")
        .expect("every response carries the level")
        .to_str()
        .unwrap()
        .to_owned()
}

// RELIABILITY #7: a rate-limited call is RESOURCE_EXHAUSTED with pushback, not INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rel_07_rate_limited_call_is_resource_exhausted_with_pushback() {
    let server = start(|config| config.rate_limit(RateLimit::per_second(1.0).burst(1))).await;
    let mut client = bounded("connect", connect(server.addr)).await.unwrap();

    // The burst admits a few calls (the admission layer keeps room for one call at every
    // level); within 20 back-to-back calls at 1 call/s, one must be limited.
    let mut served = 0;
    let status = loop {
        match bounded("call", client.say_hello(hello("b", Priority::High, None))).await {
            Ok(_) => served += 1,
            Err(status) => break status,
        }
        assert!(served < 20, "no call was rate limited");
    };
    assert!(served >= 1, "the burst admits the first call");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("rate_limited: "), "{status:?}");
    let pushback: u64 = metadata(&status, "grpc-retry-pushback-ms")
        .expect("rate-limit rejections carry pushback")
        .parse()
        .unwrap();
    assert!(pushback > 0 && pushback <= 1000, "{pushback}");

    server.shutdown.trigger();
    bounded("server exit", server.server)
        .await
        .unwrap()
        .unwrap();
}

// Why GrpcRejectionLayer exists: without it, a brownout rejection is not a tonic `Status`,
// so tonic resets the HTTP/2 stream and the client sees INTERNAL, with no pushback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_rejection_layer_a_shed_call_is_internal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal = LoadSignal::fixed(LoadLevel::Emergency);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(LoadShedLayer::default().with_signal(signal.clone()))
            .add_service(GreeterServer::new(GreeterService::new(
                signal,
                Duration::ZERO,
            )))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let mut client = bounded("connect", connect(addr)).await.unwrap();
    let status = bounded(
        "low call",
        client.say_hello(hello("x", Priority::Low, None)),
    )
    .await
    .expect_err("Low is shed at Emergency");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(metadata(&status, "grpc-retry-pushback-ms").is_none());

    let _ = stop.send(());
    bounded("server exit", server).await.unwrap().unwrap();
}

// The caller's grpc-timeout reaches the handler as a Deadline (tonic's encoding parsed by
// DeadlineLayer): a call that cannot finish in time is refused at once, not worked on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_becomes_the_handlers_deadline() {
    let server = start(|config| config.work(Duration::from_secs(30))).await;
    let mut client = bounded("connect", connect(server.addr)).await.unwrap();

    let status = bounded(
        "call with a 5 s timeout",
        client.say_hello(hello("x", Priority::High, Some(Duration::from_secs(5)))),
    )
    .await
    .expect_err("30 s of work cannot finish within 5 s");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().starts_with("not enough time"),
        "{status:?}"
    );

    server.shutdown.trigger();
    bounded("server exit", server.server)
        .await
        .unwrap()
        .unwrap();
}

// grpc.health.v1 follows brownout's health: SERVING while healthy or degraded (High),
// NOT_SERVING at Emergency, for the server ("") and the greeter service alike; the health
// check itself is Critical, so it is answered while everything else is shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_load_level() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let server = start(|config| config).await;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let channel = bounded("connect", endpoint.connect()).await.unwrap();
    let mut health = HealthClient::new(channel);
    let mut client = bounded("connect", connect(server.addr)).await.unwrap();

    async fn status(
        health: &mut HealthClient<tonic::transport::Channel>,
        service: &str,
    ) -> ServingStatus {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        bounded("health check", health.check(request))
            .await
            .expect("the health check is answered")
            .into_inner()
            .status()
    }
    /// Polls until the reporter has caught up with a level change (bounded).
    async fn until(
        health: &mut HealthClient<tonic::transport::Channel>,
        service: &str,
        want: ServingStatus,
    ) {
        for _ in 0..200 {
            if status(health, service).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{service:?} never became {want:?}");
    }

    assert_eq!(status(&mut health, "").await, ServingStatus::Serving);
    assert_eq!(
        status(&mut health, "greeter.v1.Greeter").await,
        ServingStatus::Serving
    );

    server.publisher.force(LoadLevel::High);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(status(&mut health, "").await, ServingStatus::Serving);

    server.publisher.force(LoadLevel::Emergency);
    until(&mut health, "", ServingStatus::NotServing).await;
    until(&mut health, "greeter.v1.Greeter", ServingStatus::NotServing).await;
    // At Emergency a Low call is shed with UNAVAILABLE and pushback, while health answers.
    let status_low = bounded(
        "low call",
        client.say_hello(hello("low", Priority::Low, None)),
    )
    .await
    .expect_err("Low is shed at Emergency");
    assert_eq!(status_low.code(), Code::Unavailable, "{status_low:?}");
    assert!(metadata(&status_low, "grpc-retry-pushback-ms").is_some());

    server.publisher.release();
    until(&mut health, "", ServingStatus::Serving).await;

    server.shutdown.trigger();
    bounded("server exit", server.server)
        .await
        .unwrap()
        .unwrap();
}
