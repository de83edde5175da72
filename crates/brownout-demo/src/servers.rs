//! The three servers: the same axum handler over the same kind of [`Backend`], unprotected,
//! behind plain tower layers, and behind the brownout stack.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brownout::admission::{Limit, QueueTimeout};
use brownout::{
    BoxError, Brownout, ConfigError, LevelTable, LoadLevel, Policy, Priority, PrioritySet,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;

use crate::backend::Backend;

/// The request header carrying a request's work in milliseconds (drawn by the client).
pub const WORK_HEADER: &str = "x-work-ms";
/// The response header carrying the worker time a request used, in microseconds.
pub const WORKED_HEADER: &str = "x-worked-us";
/// The route that does work.
pub const WORK_PATH: &str = "/work";
/// A route outside every protection layer, to open connections before a run.
pub const PING_PATH: &str = "/ping";

/// The stacks the demo compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackKind {
    /// The handler alone: every request queues for a worker.
    Unprotected,
    /// tower's `LoadShedLayer` + `ConcurrencyLimitLayer(workers)` + `TimeoutLayer(deadline)`,
    /// errors mapped to 503 / 504 by axum's `HandleErrorLayer`.
    Tower,
    /// The `brownout` facade's stack (`Brownout::builder()`), tuned by [`BrownoutSettings`].
    Brownout,
}

impl StackKind {
    /// Every stack, in the order reports list them.
    pub const ALL: [StackKind; 3] = [
        StackKind::Unprotected,
        StackKind::Tower,
        StackKind::Brownout,
    ];

    /// The short name used in tables, JSON and plots.
    pub const fn name(self) -> &'static str {
        match self {
            StackKind::Unprotected => "unprotected",
            StackKind::Tower => "tower",
            StackKind::Brownout => "brownout",
        }
    }

    /// One line saying what the stack is.
    pub const fn description(self) -> &'static str {
        match self {
            StackKind::Unprotected => "axum handler alone: every request queues for a worker",
            StackKind::Tower => {
                "tower LoadShed + ConcurrencyLimit(workers) + Timeout(deadline), 503/504 via HandleErrorLayer"
            }
            StackKind::Brownout => {
                "brownout::Brownout::builder(): shed, priority admission, monitor, adaptive timeout"
            }
        }
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StackKind {
    type Err = String;

    fn from_str(s: &str) -> Result<StackKind, String> {
        StackKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown stack {s:?}: expected unprotected, tower or brownout"))
    }
}

/// How the demo configures the brownout stack for a backend of `workers` workers with a
/// mean service time `service` and a client deadline `deadline`.
///
/// The values follow `brownout-sim`'s tuned configuration (see its `BrownoutSettings`),
/// scaled to this backend, and were checked on real HTTP runs:
///
/// - **Fixed concurrency limit = workers.** The backend's concurrency is known (a pool of
///   `workers`), the case `docs/tuning.md` gives for `Limit::fixed`.
/// - **Queue of 8 × workers, fixed queue timeout of 3 × the mean service time** (CoDel's
///   standing-queue test rarely fires when the important classes wait little): an admitted
///   request waits at most that long, so its p99 stays well inside the deadline.
/// - **Starvation bound 10 s** (off in practice): under overload the lower classes must wait,
///   not overtake Critical.
/// - **Shed table one level behind the default policy**: the admission queue already serves
///   classes in priority order; shedding starts only once the queue itself is in trouble.
/// - **Monitor queueing-delay thresholds of 5/8, 5/4, 15/8 and 5/2 × the mean service time
///   (25 / 50 / 75 / 100 ms for 40 ms), all below the queue timeout, and a 250 ms cooldown**:
///   the defaults (5 / 20 / 50 / 100 ms, 2 s) escalate on the ordinary queueing of a busy
///   backend and step down too slowly after a slowdown; thresholds above the queue timeout
///   could never be reached, so the level would stop at High and the overload would be
///   refused by queue timeouts (after waiting) instead of shed at the door.
/// - **Adaptive timeout without per-level scaling, at most the deadline**: the default scale
///   (0.33 at level Critical) would time out the long tail of Critical work.
#[derive(Debug, Clone, PartialEq)]
pub struct BrownoutSettings {
    /// The admission layer's concurrency limit.
    pub limit: usize,
    /// The admission queue's capacity at level Normal.
    pub queue_capacity: usize,
    /// How long a request may wait in the admission queue.
    pub queue_timeout: Duration,
    /// A queued request that waited this long is served before more important ones.
    pub starvation_bound: Duration,
    /// Which classes the shed layer refuses at each level (Normal … Emergency).
    pub shed: LevelTable<PrioritySet>,
    /// The monitor's mean queueing-delay thresholds (Elevated … Emergency).
    pub queue_delay: [Duration; 4],
    /// The monitor's cooldown before each step down.
    pub cooldown: Duration,
    /// The adaptive timeout's upper bound (and its value until it has samples).
    pub timeout_max: Duration,
}

impl BrownoutSettings {
    /// The shed table the demo uses: the default policy's, one level later.
    pub const LAGGING_SHED: LevelTable<PrioritySet> = LevelTable::new([
        PrioritySet::EMPTY,
        PrioritySet::EMPTY,
        PrioritySet::at_or_below(Priority::Background),
        PrioritySet::at_or_below(Priority::Low),
        PrioritySet::at_or_below(Priority::Medium),
    ]);

    /// The demo's tuned settings for a backend of `workers` workers, mean service time
    /// `service`, and client deadline `deadline`.
    pub fn tuned(workers: usize, service: Duration, deadline: Duration) -> BrownoutSettings {
        let workers = workers.max(1);
        let service = service.max(Duration::from_millis(1));
        BrownoutSettings {
            limit: workers,
            queue_capacity: 8 * workers,
            queue_timeout: service * 3,
            starvation_bound: Duration::from_secs(10),
            shed: BrownoutSettings::LAGGING_SHED,
            queue_delay: [
                service.mul_f64(0.625),
                service.mul_f64(1.25),
                service.mul_f64(1.875),
                service.mul_f64(2.5),
            ],
            cooldown: Duration::from_millis(250),
            timeout_max: deadline,
        }
    }

    /// Builds the facade's stack with these settings (inside a tokio runtime).
    ///
    /// # Errors
    ///
    /// A setting the layers refuse, naming the layer and field.
    pub fn build(&self) -> Result<Brownout, ConfigError> {
        let policy = Policy {
            shed: self.shed,
            timeout_scale: LevelTable::new([1.0; LoadLevel::COUNT]),
            ..Policy::default()
        };
        let (limit, queue_capacity, queue_timeout, starvation) = (
            self.limit,
            self.queue_capacity,
            self.queue_timeout,
            self.starvation_bound,
        );
        let (queue_delay, cooldown, timeout_max) =
            (self.queue_delay, self.cooldown, self.timeout_max);
        Brownout::builder()
            .policy(policy)
            .monitor(move |m| {
                m.queue_delay_thresholds(queue_delay)
                    .cooldown(cooldown)
                    .transitions_kept(1024)
            })
            .admission(move |a| {
                a.limit(Limit::fixed(limit))
                    .queue_capacity(queue_capacity)
                    .queue_timeout(QueueTimeout::fixed(queue_timeout))
                    .starvation_bound(starvation)
            })
            .timeout(move |t| t.initial(timeout_max).max(timeout_max))
            .build()
    }
}

/// A server running on an ephemeral loopback port.
pub struct Server {
    kind: StackKind,
    addr: SocketAddr,
    backend: Backend,
    brownout: Option<Brownout>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds 127.0.0.1:0 and serves `kind` over `backend` (HTTP/1.1 and h2c).
    ///
    /// # Errors
    ///
    /// Binding the listener, or a brownout setting the layers refuse.
    pub async fn start(
        kind: StackKind,
        backend: Backend,
        deadline: Duration,
        settings: &BrownoutSettings,
    ) -> Result<Server, BoxError> {
        let routes = Router::new().route(WORK_PATH, get(work));
        let workers = backend.workers();
        let (routes, brownout) = match kind {
            StackKind::Unprotected => (routes, None),
            StackKind::Tower => (
                routes.layer(
                    ServiceBuilder::new()
                        .layer(HandleErrorLayer::new(tower_error))
                        .layer(LoadShedLayer::new())
                        .layer(ConcurrencyLimitLayer::new(workers))
                        .layer(TimeoutLayer::new(deadline)),
                ),
                None,
            ),
            StackKind::Brownout => {
                let brownout = settings.build()?;
                (routes.layer(brownout.layer()), Some(brownout))
            }
        };
        let app = routes
            .route(PING_PATH, get(|| async { "pong" }))
            .with_state(backend.clone());
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Server {
            kind,
            addr,
            backend,
            brownout,
            stop: Some(stop),
            task,
        })
    }

    /// Which stack this is.
    pub fn kind(&self) -> StackKind {
        self.kind
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The brownout stack, for the brownout server (level, monitor snapshot).
    pub fn brownout(&self) -> Option<&Brownout> {
        self.brownout.as_ref()
    }

    /// Closes the backend and stops serving; connections still open are cut after a short
    /// grace period.
    pub async fn stop(mut self) {
        self.backend.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// The handler: runs the request's work on the backend.
async fn work(State(backend): State<Backend>, headers: HeaderMap) -> Response {
    let work_ms = headers
        .get(WORK_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1)
        .clamp(1, 60_000);
    match backend.call(Duration::from_millis(work_ms)).await {
        Some(worked) => {
            ([(WORKED_HEADER, worked.as_micros().to_string())], "done\n").into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "closed: the backend is closed\n",
        )
            .into_response(),
    }
}

/// tower's errors as responses: `Overloaded` → 503, `Elapsed` → 504, anything else → 500.
async fn tower_error(error: BoxError) -> (StatusCode, &'static str) {
    if error.is::<Overloaded>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: every worker is busy\n",
        )
    } else if error.is::<Elapsed>() {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout: the request timed out\n",
        )
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "error: internal error\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuned_settings_build_a_valid_stack() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s =
                BrownoutSettings::tuned(16, Duration::from_millis(40), Duration::from_millis(500));
            assert_eq!(s.queue_timeout, Duration::from_millis(120));
            assert_eq!(s.queue_delay, [25, 50, 75, 100].map(Duration::from_millis));
            let brownout = s.build().unwrap();
            assert_eq!(brownout.admission().unwrap().limit(), 16);
        });
    }

    #[test]
    fn stack_names_round_trip() {
        for kind in StackKind::ALL {
            assert_eq!(kind.name().parse::<StackKind>(), Ok(kind));
        }
        assert!("envoy".parse::<StackKind>().is_err());
    }
}
