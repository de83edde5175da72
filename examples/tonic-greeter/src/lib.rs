//! A tonic gRPC greeter behind the brownout stack.
//!
//! [`serve`] runs the `greeter.v1.Greeter` service and the standard `grpc.health.v1.Health`
//! service on a listener behind `Brownout::grpc_builder()`'s layer, outermost first:
//!
//! ```text
//! GrpcRejection ─► ShutdownGuard ─► Classify (x-priority metadata) ─► Deadline (grpc-timeout)
//!     ─► LoadShed ─► PriorityAdmission ─► Monitor (measures) ─► AdaptiveTimeout
//!     ─► Degradation ─► Greeter / Health
//! ```
//!
//! ```text
//! let brownout = Brownout::grpc_builder().with_monitor(monitor).shutdown(&shutdown).build()?;
//! Server::builder().layer(brownout.layer()).add_service(GreeterServer::new(greeter))
//! ```
//!
//! - The class comes from the `x-priority` metadata (gRPC metadata are HTTP/2 headers); the
//!   health-check methods are always Critical.
//! - The caller's `grpc-timeout` becomes a `Deadline` the admission queue honours.
//! - Shed, queued-too-long, rate-limited and shutting-down calls are answered by
//!   `GrpcRejectionLayer` with `UNAVAILABLE` / `RESOURCE_EXHAUSTED` /
//!   `DEADLINE_EXCEEDED` and `grpc-retry-pushback-ms`, never `INTERNAL`.
//! - The monitor sits inside admission, so it measures the work the greeter did, not the
//!   microsecond rejections around it; it counts gRPC failures from `grpc-status` through
//!   `brownout::grpc::GrpcOutcome` (the classifier a `CircuitBreak` around a tonic client
//!   takes too).
//! - At the shutdown trigger the guard refuses new calls, the admission queue is closed and
//!   tonic stops accepting connections; [`serve`] returns the shutdown report once in-flight
//!   calls are drained.
//! - `grpc.health.v1.Health` (tonic-health) answers from brownout's `Health` through
//!   `brownout::grpc::health::GrpcHealth` (`Brownout::grpc_health`): `SERVING` while healthy or degraded,
//!   `NOT_SERVING` at Emergency or once shutdown triggers.
//!
//! `src/main.rs` is the server binary, `src/bin/client.rs` a client; see the README.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use brownout::admission::{Limit, RateLimit};
use brownout::http::DeadlineLayer;
use brownout::monitor::Monitor;
use brownout::shutdown::{Shutdown, ShutdownReport};
use brownout::{BoxError, Brownout, Deadline, LoadSignal, Priority};
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

/// The code generated from `proto/greeter.proto` (messages, client, server).
#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod proto {
    tonic::include_proto!("greeter.v1");
}

use proto::greeter_client::GreeterClient;
use proto::greeter_server::{Greeter, GreeterServer};
use proto::{HelloReply, HelloRequest};

/// The gRPC path of the standard health check, always served as Critical.
pub const HEALTH_CHECK_PATH: &str = brownout::grpc::HEALTH_PATHS[0];

/// How the server is protected; every field has a default but the monitor, which the
/// caller creates so it can keep the monitor's publisher (operator overrides, tests).
pub struct ServerConfig {
    monitor: Monitor,
    work: Duration,
    max_timeout: Duration,
    limit: usize,
    queue_capacity: usize,
    rate: Option<RateLimit>,
}

impl ServerConfig {
    /// The defaults: 2 ms of simulated work per call, callers' `grpc-timeout` capped at
    /// 30 s, 64 calls in flight, 256 waiting, no rate limit.
    pub fn new(monitor: Monitor) -> ServerConfig {
        ServerConfig {
            monitor,
            work: Duration::from_millis(2),
            max_timeout: Duration::from_secs(30),
            limit: 64,
            queue_capacity: 256,
            rate: None,
        }
    }

    /// How long the greeter pretends to work on each call.
    #[must_use]
    pub fn work(mut self, work: Duration) -> Self {
        self.work = work;
        self
    }

    /// The most a caller's `grpc-timeout` may ask for.
    #[must_use]
    pub fn max_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = max;
        self
    }

    /// Calls served at once (a fixed admission limit).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Calls that may wait for a slot, most important first.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// A global rate limit (scaled down as the load level rises).
    #[must_use]
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    /// The load level the server's layers read.
    pub fn signal(&self) -> LoadSignal {
        self.monitor.signal()
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("level", &self.monitor.signal().level())
            .field("work", &self.work)
            .field("max_timeout", &self.max_timeout)
            .field("limit", &self.limit)
            .field("queue_capacity", &self.queue_capacity)
            .field("rate", &self.rate)
            .finish()
    }
}

/// The greeter: answers after `work`, naming the class and load level it was served at;
/// refuses at once with `DEADLINE_EXCEEDED` a call whose deadline is nearer than `work`.
#[derive(Debug, Clone)]
pub struct GreeterService {
    signal: LoadSignal,
    work: Duration,
}

impl GreeterService {
    /// A greeter that reports the level of `signal` and works `work` per call.
    pub fn new(signal: LoadSignal, work: Duration) -> GreeterService {
        GreeterService { signal, work }
    }
}

#[tonic::async_trait]
impl Greeter for GreeterService {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        // tonic copies the http request's extensions, so the class stored by the
        // ClassifyLayer is visible here.
        let priority = request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default();
        // The DeadlineLayer turned the caller's `grpc-timeout` into a Deadline: don't start
        // work that cannot finish before the caller gives up.
        if let Some(deadline) = Deadline::of(request.extensions())
            && deadline.remaining() < self.work
        {
            return Err(Status::deadline_exceeded(
                "not enough time left before the caller's deadline",
            ));
        }
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        tokio::time::sleep(self.work).await;
        Ok(Response::new(HelloReply {
            message: format!(
                "Hello, {name}! (class {priority}, level {})",
                self.signal.level()
            ),
        }))
    }
}

/// Serves the greeter on `listener` behind the brownout stack until `shutdown` triggers,
/// then waits for the drain and hooks and returns the shutdown report.
///
/// # Errors
///
/// An invalid configuration (e.g. a zero limit), or a transport error of the server.
pub async fn serve(
    listener: TcpListener,
    shutdown: Shutdown,
    config: ServerConfig,
) -> Result<ShutdownReport, BoxError> {
    let ServerConfig {
        monitor,
        work,
        max_timeout,
        limit,
        queue_capacity,
        rate,
    } = config;
    let signal = monitor.signal();

    // One builder wires the monitor's signal into every layer, answers rejections as gRPC
    // statuses with pushback, reads the class from `x-priority` metadata (health checks are
    // Critical) and the deadline from `grpc-timeout`. At the shutdown trigger, calls waiting
    // for a slot are refused at once instead of being served late.
    let brownout = Brownout::grpc_builder()
        .with_monitor(monitor)
        .shutdown(&shutdown)
        .deadline(DeadlineLayer::grpc_timeout().max(max_timeout))
        .admission(move |admission| {
            let admission = admission
                .limit(Limit::fixed(limit))
                .queue_capacity(queue_capacity);
            match rate {
                Some(rate) => admission.rate_limit(rate),
                None => admission,
            }
        })
        .build()?;

    // grpc.health.v1 from the same verdict as an http health endpoint.
    let (reporter, health_server) = tonic_health::server::health_reporter();
    let health = brownout
        .grpc_health(reporter)?
        .service(<GreeterServer<GreeterService> as NamedService>::NAME)
        .interval(Duration::from_secs(1));
    let health_task = tokio::spawn(health.run());

    let greeter = GreeterService::new(signal, work);
    let served = Server::builder()
        .layer(brownout.layer())
        .add_service(health_server)
        .add_service(GreeterServer::new(greeter))
        // `refusing` resolves at the trigger plus the shutdown's readiness delay (none by
        // default): the listener stays open while balancers move away, then tonic stops
        // accepting and sends GOAWAY.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.refusing())
        .await;
    health_task.abort();
    served?;
    let report = shutdown.wait().await;
    drop(brownout);
    Ok(report)
}

/// Connects a greeter client to `addr` (plain-text HTTP/2).
///
/// # Errors
///
/// When the connection cannot be made.
pub async fn connect(addr: SocketAddr) -> Result<GreeterClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(GreeterClient::new(channel))
}

/// A `SayHello` request for `name` carrying `x-priority: priority` metadata and, when given,
/// a `grpc-timeout`.
pub fn hello(name: &str, priority: Priority, timeout: Option<Duration>) -> Request<HelloRequest> {
    let mut request = Request::new(HelloRequest {
        name: name.to_owned(),
    });
    request.metadata_mut().insert(
        "x-priority",
        tonic::metadata::MetadataValue::from_static(priority.as_str()),
    );
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}
