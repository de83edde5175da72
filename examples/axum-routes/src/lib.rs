//! Per-route classes, limits and a runtime switch on one axum router, all driven by one
//! shared load level.
//!
//! ```text
//!                       router-wide (Brownout::builder(), one Monitor)
//! request ─► RejectionResponse ─► ShutdownGuard ─► Classify ─► LoadShed ─► Monitor ─► AdaptiveTimeout ─► Router
//!                                     │ /health   Critical (never shed)
//!                                     │ /search   High     ─► PriorityAdmission (limit 64)                 ─► handler
//!                                     │ /reports  Low      ─► Toggle(PriorityAdmission (limit 4, 20 req/s)) ─► handler
//!                                     │ /admin/…  Critical (flip the /reports limiter at run time)
//!                                     └ /metrics  outside the stack (Prometheus text)
//! ```
//!
//! * **One load level.** The router-wide stack owns the only [`Monitor`](brownout::monitor::Monitor);
//!   both per-route admission layers read its [`LoadSignal`](brownout::LoadSignal)
//!   (`.signal(brownout.signal())`) and report their queueing delay and depth through one
//!   shared [`QueueProbe`], so a queue building up behind `/reports` raises the level for
//!   the whole service. The router-wide admission layer is left out: the per-route layers
//!   are the concurrency limits here.
//! * **Classes per route.** The router-wide classifier maps paths to classes before routing;
//!   the per-route admission layers read that class back from the request extensions. At
//!   `High`, `/reports` (Low) is shed with 503 + `Retry-After`, `/search` (High) and
//!   `/health` (Critical) are served.
//! * **Limits per route.** Each admission layer keeps its state behind one `Arc`, so the
//!   limit holds however many clones axum makes of the route's service (one per request).
//! * **A runtime switch.** `/reports`' limiter sits in a [`ToggleLayer`]; the admin route
//!   `POST /admin/toggle/reports?enabled=false` bypasses it, `?enabled=true` turns it back
//!   on. **A real service must protect that route** (authentication, a separate admin
//!   listener bound to localhost, or a network policy): anyone who can reach it can lift the
//!   limit. It is classified Critical so an operator can still reach it under load.
//!
//! `src/main.rs` binds 127.0.0.1:3000 and listens for Ctrl-C.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! use brownout::shutdown::Shutdown;
//! use axum_routes::{Routes, RouteLimits};
//!
//! // Install the recorder first: the stack's counters bind to the recorder installed at
//! // the moment they are first used.
//! let metrics = axum_routes::install_metrics().map_err(std::io::Error::other)?;
//! let shutdown = Shutdown::builder().build().map_err(std::io::Error::other)?;
//! let routes = Routes::build(RouteLimits::default(), Some(&shutdown)).map_err(std::io::Error::other)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum_routes::serve(listener, &routes, Some(metrics), shutdown).await
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use brownout::admission::{
    AdmissionHandle, Limit, PriorityAdmissionLayer, QueueTimeout, RateLimit,
};
use brownout::http::{Degradation, HttpClassifier, RejectionResponseLayer};
use brownout::shutdown::Shutdown;
use brownout::{Brownout, ConfigError, Policy, Priority, QueueProbe, ToggleHandle, ToggleLayer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// The per-route limits of this service (every field public; start from `default()`).
#[derive(Debug, Clone)]
pub struct RouteLimits {
    /// Concurrent `/search` requests (default 64).
    pub search_concurrency: usize,
    /// Concurrent `/reports` requests (default 4).
    pub reports_concurrency: usize,
    /// `/reports` requests that may wait for a slot (default 16, scaled per level).
    pub reports_queue: usize,
    /// How long a `/reports` request may wait for a slot (default: CoDel 40 ms / 120 ms).
    pub reports_queue_timeout: QueueTimeout,
    /// `/reports` rate limit at `Normal`, scaled down per level (default 20/s, burst 10).
    pub reports_rate: RateLimit,
    /// How long `/search` and `/reports` pretend to work per request (default 5 ms).
    pub work: Duration,
}

impl Default for RouteLimits {
    fn default() -> Self {
        RouteLimits {
            search_concurrency: 64,
            reports_concurrency: 4,
            reports_queue: 16,
            reports_queue_timeout: QueueTimeout::default(),
            reports_rate: RateLimit::per_second(20.0).burst(10),
            work: Duration::from_millis(5),
        }
    }
}

/// How many requests a handler is running now, and the most it ever ran at once.
///
/// The example's handlers count themselves, so the tests can check from the handler's side
/// that a route's limit held. A real service would export this as a gauge.
#[derive(Debug, Default)]
pub struct HandlerConcurrency {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl HandlerConcurrency {
    /// Requests inside the handler now.
    pub fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    /// The most requests that were inside the handler at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn enter(self: &Arc<Self>) -> Inside {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Inside(self.clone())
    }
}

/// Counts one request inside a handler until dropped (also when the request is cancelled).
struct Inside(Arc<HandlerConcurrency>);

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router-wide stack, the per-route admission layers and the switch on `/reports`'
/// limiter, built once and shared by every router made from them.
pub struct Routes {
    brownout: Brownout,
    search: PriorityAdmissionLayer,
    reports: ToggleLayer<PriorityAdmissionLayer>,
    reports_switch: ToggleHandle,
    search_handle: AdmissionHandle,
    reports_handle: AdmissionHandle,
    search_handler: Arc<HandlerConcurrency>,
    reports_handler: Arc<HandlerConcurrency>,
    work: Duration,
}

impl Routes {
    /// Builds the monitor, the router-wide stack and the per-route admission layers. Must
    /// run inside a tokio runtime (the monitor spawns its detector task).
    ///
    /// With a `shutdown`, new requests are refused once it triggers and both routes' queues
    /// are closed (queued requests get 503 at once).
    ///
    /// # Errors
    ///
    /// The first invalid setting, naming its route and field (e.g. `reports.queue_capacity`).
    pub fn build(limits: RouteLimits, shutdown: Option<&Shutdown>) -> Result<Routes, ConfigError> {
        let policy = Policy::default();
        // One probe for both routes' queues, read by the one monitor.
        let probe = QueueProbe::new();
        let builder = Brownout::builder()
            .policy(policy)
            .classifier(
                HttpClassifier::new()
                    .route("/health", Priority::Critical)
                    .route_prefix("/admin/", Priority::Critical)
                    .route_prefix("/search", Priority::High)
                    .route_prefix("/reports", Priority::Low)
                    .default_priority(Priority::Medium),
            )
            .monitor({
                let probe = probe.clone();
                move |m| m.queue_probe(probe)
            })
            // The per-route layers below are the concurrency limits of this service.
            .without_admission();
        let brownout = match shutdown {
            Some(shutdown) => builder.shutdown(shutdown),
            None => builder,
        }
        .build()?;

        let search = PriorityAdmissionLayer::builder()
            .limit(Limit::fixed(limits.search_concurrency))
            .signal(brownout.signal())
            .policy(policy)
            .probe(probe.clone())
            .build()
            .map_err(|e| e.within("search"))?;
        let reports = PriorityAdmissionLayer::builder()
            .limit(Limit::fixed(limits.reports_concurrency))
            .queue_capacity(limits.reports_queue)
            .queue_timeout(limits.reports_queue_timeout)
            .rate_limit(limits.reports_rate)
            .signal(brownout.signal())
            .policy(policy)
            .probe(probe)
            .build()
            .map_err(|e| e.within("reports"))?;
        let search_handle = search.handle();
        let reports_handle = reports.handle();
        if let Some(shutdown) = shutdown {
            let (search, reports) = (search_handle.clone(), reports_handle.clone());
            shutdown.on_trigger(move || {
                search.close();
                reports.close();
            });
        }
        let (reports, reports_switch) = ToggleLayer::new(reports, true);
        Ok(Routes {
            brownout,
            search,
            reports,
            reports_switch,
            search_handle,
            reports_handle,
            search_handler: Arc::default(),
            reports_handler: Arc::default(),
            work: limits.work,
        })
    }

    /// The router-wide stack (its signal, publisher for `force`/`release`, monitor).
    pub fn brownout(&self) -> &Brownout {
        &self.brownout
    }

    /// The switch on `/reports`' limiter (what `POST /admin/toggle/reports` flips).
    pub fn reports_switch(&self) -> &ToggleHandle {
        &self.reports_switch
    }

    /// `/search`'s admission state (limit, in-flight, queue).
    pub fn search_admission(&self) -> &AdmissionHandle {
        &self.search_handle
    }

    /// `/reports`' admission state (limit, in-flight, queue).
    pub fn reports_admission(&self) -> &AdmissionHandle {
        &self.reports_handle
    }

    /// How many `/search` handlers run now and at most ran at once.
    pub fn search_handler(&self) -> &HandlerConcurrency {
        &self.search_handler
    }

    /// How many `/reports` handlers run now and at most ran at once.
    pub fn reports_handler(&self) -> &HandlerConcurrency {
        &self.reports_handler
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("brownout", &self.brownout)
            .field("reports_limiter_enabled", &self.reports_switch.is_enabled())
            .field("search_limit", &self.search_handle.limit())
            .field("reports_limit", &self.reports_handle.limit())
            .finish_non_exhaustive()
    }
}

/// Installs the process-wide Prometheus recorder once and returns its handle (the same
/// handle on later calls).
///
/// Call it **before** [`Routes::build`]: brownout's decision counters and gauges bind to the
/// recorder installed when they are first used, and stay on the no-op recorder otherwise.
///
/// # Errors
///
/// When another `metrics` recorder was installed in this process first.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
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

/// The router with per-route layers and the router-wide stack applied; with `metrics`,
/// `GET /metrics` answers the Prometheus text format (outside the stack, so a scrape is
/// neither counted nor shed).
///
/// # Errors
///
/// An invalid health configuration.
pub fn app(routes: &Routes, metrics: Option<PrometheusHandle>) -> Result<Router, ConfigError> {
    let health = routes.brownout.health().build()?;
    // Each route's limiter answers its own refusals (503/429 + Retry-After), so the route
    // keeps axum's `Infallible` error type.
    let respond = RejectionResponseLayer::new();
    let search = {
        let (handler, work) = (routes.search_handler.clone(), routes.work);
        get(move |degradation: Degradation, uri: Uri| search(handler, work, degradation, uri))
            .route_layer((respond.clone(), routes.search.clone()))
    };
    let reports = {
        let (handler, work) = (routes.reports_handler.clone(), routes.work);
        get(move || report(handler, work)).route_layer((respond, routes.reports.clone()))
    };
    let switch = routes.reports_switch.clone();
    let router = Router::new()
        .route("/search", search)
        .route("/reports", reports)
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                async move { health.check().await }
            }),
        )
        .route(
            "/admin/toggle/reports",
            post(move |uri: Uri| toggle(switch.clone(), uri)),
        )
        .layer(routes.brownout.layer());
    Ok(match metrics {
        // Added after `.layer(..)`: not wrapped by the stack.
        Some(handle) => router.route("/metrics", get(move || async move { handle.render() })),
        None => router,
    })
}

async fn search(
    handler: Arc<HandlerConcurrency>,
    work: Duration,
    degradation: Degradation,
    uri: Uri,
) -> String {
    let _inside = handler.enter();
    let query = uri.query().unwrap_or("");
    if degradation.is_full() {
        pretend_to_work(work).await;
        format!("results for {query:?}, with suggestions\n")
    } else {
        // Less work under load: no suggestions.
        pretend_to_work(work / 2).await;
        format!(
            "results for {query:?} ({} mode at level {})\n",
            degradation.mode(),
            degradation.level()
        )
    }
}

async fn report(handler: Arc<HandlerConcurrency>, work: Duration) -> String {
    let _inside = handler.enter();
    pretend_to_work(work).await;
    "report\n".to_owned()
}

async fn pretend_to_work(work: Duration) {
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
}

/// `POST /admin/toggle/reports?enabled=true|false`: switches `/reports`' limiter.
async fn toggle(switch: ToggleHandle, uri: Uri) -> (StatusCode, String) {
    let value = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("enabled="));
    match value.map(str::parse::<bool>) {
        Some(Ok(enabled)) => {
            switch.set(enabled);
            (
                StatusCode::OK,
                format!("reports limiter enabled={enabled}\n"),
            )
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "expected ?enabled=true or ?enabled=false\n".to_owned(),
        ),
    }
}

/// Serves [`app`] on `listener` until `shutdown` triggers, then waits for in-flight
/// requests to drain (bounded by the shutdown's drain timeout). With `metrics`, runs the
/// recorder's upkeep every 5 s so histograms stay bounded between scrapes.
pub async fn serve(
    listener: TcpListener,
    routes: &Routes,
    metrics: Option<PrometheusHandle>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let router = app(routes, metrics.clone()).map_err(std::io::Error::other)?;
    let upkeep = metrics.map(|handle| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        })
    });
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
