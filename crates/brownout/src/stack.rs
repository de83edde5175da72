//! One builder that creates a monitor and wires its load signal into every layer.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_admission::{
    AdmissionHandle, PriorityAdmission, PriorityAdmissionBuilder, PriorityAdmissionLayer,
};
use brownout_core::{
    ClassifyLayer, ClassifyService, ConfigError, LevelTable, LoadPublisher, LoadSignal, Policy,
    WorkMode,
};
use brownout_monitor::{HttpOutcome, Monitor, MonitorBuilder, MonitorLayer, MonitorService};
use brownout_shed::{LoadShed, LoadShedBuilder, LoadShedConfig, LoadShedLayer};
use brownout_shutdown::{Shutdown, ShutdownGuard, ShutdownGuardLayer};
use brownout_timeout::{
    AdaptiveTimeout, AdaptiveTimeoutBuilder, AdaptiveTimeoutConfig, AdaptiveTimeoutLayer,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::Optional;
use crate::health::{Health, HealthBuilder};
use crate::http::{
    DeadlineLayer, DeadlineService, DegradationLayer, DegradationService, FeatureToggles,
    HttpClassifier, RejectionResponse, RejectionResponseLayer,
};

/// The whole server-side stack, configured in one place.
///
/// `Brownout::builder().build()` creates one [`Monitor`] and wires its [`LoadSignal`] (and
/// the admission layer's queueing-delay probe) into every layer, in this order:
///
/// ```text
/// RejectionResponse ─► ShutdownGuard ─► Classify ─► Deadline ─► LoadShed ─► PriorityAdmission
///     ─► Monitor (measures) ─► AdaptiveTimeout ─► Degradation ─► your service
/// ```
///
/// The monitor *measures* inside admission, so latency and error rate describe the work the
/// service actually did — not the microsecond rejections around it, which would otherwise
/// drag the latency quantiles down and push the error rate up in a feedback loop; queueing
/// delay reaches the monitor through the admission layer's probe. The stack's error type is
/// `Infallible`: rejections become 503 / 429 / 504 responses with `Retry-After`.
///
/// Keep the [`Brownout`] (or any service it built) alive: the monitor's detector task
/// ends when the monitor is dropped, and every service built by the layer holds it.
///
/// ```
/// use std::convert::Infallible;
/// use brownout::{Brownout, LoadLevel, Priority};
/// use brownout::admission::Limit;
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let brownout = Brownout::builder()
///     .admission(|a| a.limit(Limit::fixed(64)).queue_capacity(256))
///     .build()?;
/// let mut svc = brownout.layer().layer(service_fn(|_req: http::Request<()>| async {
///     Ok::<_, Infallible>(http::Response::new(String::from("hello")))
/// }));
///
/// // An operator (or the monitor, under load) raises the level: Low requests are shed.
/// brownout.publisher().force(LoadLevel::High);
/// let low = http::Request::get("/").header("x-priority", "low").body(())?;
/// let response = svc.ready().await?.call(low).await?;
/// assert_eq!(response.status(), 503);
/// assert!(response.headers().contains_key("retry-after"));
///
/// let high = http::Request::get("/").header("x-priority", "high").body(())?;
/// assert_eq!(svc.ready().await?.call(high).await?.status(), 200);
/// # Ok(()) }
/// ```
pub struct Brownout {
    layer: BrownoutLayer,
    admission: Option<AdmissionHandle>,
    shutdown: Option<Shutdown>,
}

impl Brownout {
    /// A builder with every default: monitor, shed, priority admission (adaptive limit),
    /// adaptive timeout, http classification from `x-priority` / `priority`.
    pub fn builder() -> BrownoutBuilder {
        BrownoutBuilder::default()
    }

    /// The layer to put in a `ServiceBuilder`, axum `Router::layer` / `route_layer`, or a
    /// tonic server. Every service it builds shares the same monitor, limits and queues.
    pub fn layer(&self) -> BrownoutLayer {
        self.layer.clone()
    }

    /// The monitor (snapshot for health and metrics endpoints).
    pub fn monitor(&self) -> &Monitor {
        &self.layer.monitor
    }

    /// A reader of the load level.
    pub fn signal(&self) -> LoadSignal {
        self.layer.monitor.signal()
    }

    /// The publisher, for operator overrides (`force` / `release`).
    pub fn publisher(&self) -> LoadPublisher {
        self.layer.monitor.publisher()
    }

    /// The admission layer's handle (limit, in-flight, queue lengths), when admission is on.
    pub fn admission(&self) -> Option<&AdmissionHandle> {
        self.admission.as_ref()
    }

    /// The shutdown handle, when one was given to the builder.
    pub fn shutdown(&self) -> Option<&Shutdown> {
        self.shutdown.as_ref()
    }

    /// A health registry already fed by this stack's monitor (level and signals) and
    /// shutdown (readiness); add breakers and component checks, then `build()`.
    pub fn health(&self) -> HealthBuilder {
        let builder = Health::builder().monitor(self.layer.monitor.clone());
        match &self.shutdown {
            Some(shutdown) => builder.shutdown(shutdown),
            None => builder,
        }
    }
}

impl fmt::Debug for Brownout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brownout")
            .field("level", &self.signal().level())
            .field("admission", &self.admission.is_some())
            .field("shutdown", &self.shutdown.is_some())
            .finish()
    }
}

type AdmissionConfigurator = Box<dyn FnOnce(PriorityAdmissionBuilder) -> PriorityAdmissionBuilder>;

/// Configures a [`Brownout`] stack; every layer can be configured or left out.
pub struct BrownoutBuilder {
    policy: Policy,
    monitor: MonitorBuilder,
    shed: Option<LoadShedBuilder>,
    admission: Option<AdmissionConfigurator>,
    timeout: Option<AdaptiveTimeoutBuilder>,
    shutdown: Option<Shutdown>,
    classifier: HttpClassifier,
    deadline: DeadlineLayer,
    work: LevelTable<WorkMode>,
    toggles: FeatureToggles,
}

impl Default for BrownoutBuilder {
    fn default() -> Self {
        BrownoutBuilder {
            policy: Policy::default(),
            monitor: Monitor::builder(),
            shed: Some(LoadShedConfig::builder()),
            admission: Some(Box::new(|a| a)),
            timeout: Some(AdaptiveTimeoutConfig::builder()),
            shutdown: None,
            classifier: HttpClassifier::default(),
            deadline: DeadlineLayer::grpc_timeout(),
            work: LevelTable::default_work(),
            toggles: FeatureToggles::default(),
        }
    }
}

impl fmt::Debug for BrownoutBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrownoutBuilder")
            .field("policy", &self.policy)
            .field("shed", &self.shed.is_some())
            .field("admission", &self.admission.is_some())
            .field("timeout", &self.timeout.is_some())
            .field("shutdown", &self.shutdown.is_some())
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl BrownoutBuilder {
    /// The per-level policy every layer follows (shed sets, rate and queue scales, timeout
    /// scales, handler work). Layer-specific settings given later still win.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.work = policy.work;
        self.policy = policy;
        self
    }

    /// Configures the monitor (interval, thresholds, latency objective, pressure sources).
    #[must_use]
    pub fn monitor(mut self, configure: impl FnOnce(MonitorBuilder) -> MonitorBuilder) -> Self {
        self.monitor = configure(self.monitor);
        self
    }

    /// Configures the load-shed layer (turning it on if it was off).
    #[must_use]
    pub fn shed(mut self, configure: impl FnOnce(LoadShedBuilder) -> LoadShedBuilder) -> Self {
        let builder = self.shed.take().unwrap_or_else(LoadShedConfig::builder);
        self.shed = Some(configure(builder));
        self
    }

    /// Leaves the load-shed layer out.
    #[must_use]
    pub fn without_shed(mut self) -> Self {
        self.shed = None;
        self
    }

    /// Configures the priority admission layer (limit, queue, rate limits, reserved shares);
    /// the builder's signal, policy and queue probe are set for you.
    #[must_use]
    pub fn admission(
        mut self,
        configure: impl FnOnce(PriorityAdmissionBuilder) -> PriorityAdmissionBuilder + 'static,
    ) -> Self {
        self.admission = Some(Box::new(configure));
        self
    }

    /// Leaves the priority admission layer out.
    #[must_use]
    pub fn without_admission(mut self) -> Self {
        self.admission = None;
        self
    }

    /// Configures the adaptive timeout layer (turning it on if it was off).
    #[must_use]
    pub fn timeout(
        mut self,
        configure: impl FnOnce(AdaptiveTimeoutBuilder) -> AdaptiveTimeoutBuilder,
    ) -> Self {
        let builder = self
            .timeout
            .take()
            .unwrap_or_else(AdaptiveTimeoutConfig::builder);
        self.timeout = Some(configure(builder));
        self
    }

    /// Leaves the adaptive timeout layer out.
    #[must_use]
    pub fn without_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Adds the shutdown guard for `shutdown`: new requests are refused once it triggers, and
    /// requests still queued in admission are rejected at once with `Retry-After`.
    #[must_use]
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self
    }

    /// How requests are classified (default: `x-priority`, then RFC 9218 `priority`).
    #[must_use]
    pub fn classifier(mut self, classifier: HttpClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// How the caller's deadline is read (default: `grpc-timeout`).
    #[must_use]
    pub fn deadline(mut self, deadline: DeadlineLayer) -> Self {
        self.deadline = deadline;
        self
    }

    /// Optional features handlers may switch off under load (see [`FeatureToggles`]).
    #[must_use]
    pub fn features(mut self, toggles: FeatureToggles) -> Self {
        self.toggles = toggles;
        self
    }

    /// Builds the monitor and every layer. Must run inside a tokio runtime (the monitor
    /// spawns its detector task).
    ///
    /// # Errors
    ///
    /// The first invalid setting, naming its layer and field (e.g. `admission.queue_capacity`).
    pub fn build(self) -> Result<Brownout, ConfigError> {
        self.policy.validate().map_err(|e| e.within("policy"))?;
        let mut monitor = self.monitor;
        let probe = brownout_core::QueueProbe::new();
        if self.admission.is_some() {
            monitor = monitor.queue_probe(probe.clone());
        }
        let monitor = monitor.build().map_err(|e| e.within("monitor"))?;
        let signal = monitor.signal();

        let shed = match self.shed {
            Some(builder) => {
                let config = builder
                    .policy(&self.policy)
                    .build()
                    .map_err(|e| e.within("shed"))?;
                Some(LoadShedLayer::new(config).with_signal(signal.clone()))
            }
            None => None,
        };
        let admission = match self.admission {
            Some(configure) => {
                let builder = PriorityAdmissionLayer::builder()
                    .policy(self.policy)
                    .signal(signal.clone())
                    .probe(probe);
                Some(
                    configure(builder)
                        .build()
                        .map_err(|e| e.within("admission"))?,
                )
            }
            None => None,
        };
        let timeout = match self.timeout {
            Some(builder) => {
                let config = builder
                    .policy(&self.policy)
                    .build()
                    .map_err(|e| e.within("timeout"))?;
                Some(AdaptiveTimeoutLayer::new(config).with_signal(signal.clone()))
            }
            None => None,
        };
        let degradation = DegradationLayer::with_config(signal.clone(), self.work, self.toggles)?;
        let admission_handle = admission.as_ref().map(PriorityAdmissionLayer::handle);
        if let (Some(shutdown), Some(handle)) = (&self.shutdown, &admission_handle) {
            let handle = handle.clone();
            shutdown.on_trigger(move || handle.close());
        }
        let layer = BrownoutLayer {
            response: RejectionResponseLayer::new().with_level_header(signal.clone()),
            guard: self.shutdown.as_ref().map(Shutdown::layer),
            classify: ClassifyLayer::new(self.classifier),
            deadline: self.deadline,
            shed,
            admission,
            measure: monitor.layer().with_classifier(HttpOutcome),
            timeout,
            degradation,
            monitor: Arc::new(monitor),
        };
        Ok(Brownout {
            layer,
            admission: admission_handle,
            shutdown: self.shutdown,
        })
    }
}

/// The layer of a [`Brownout`] stack (see there for the order of its parts).
#[derive(Clone)]
pub struct BrownoutLayer {
    response: RejectionResponseLayer,
    guard: Option<ShutdownGuardLayer>,
    classify: ClassifyLayer<HttpClassifier>,
    deadline: DeadlineLayer,
    shed: Option<LoadShedLayer>,
    admission: Option<PriorityAdmissionLayer>,
    measure: MonitorLayer<HttpOutcome>,
    timeout: Option<AdaptiveTimeoutLayer>,
    degradation: DegradationLayer,
    monitor: Arc<Monitor>,
}

impl fmt::Debug for BrownoutLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrownoutLayer")
            .field("shutdown_guard", &self.guard.is_some())
            .field("shed", &self.shed.is_some())
            .field("admission", &self.admission.is_some())
            .field("timeout", &self.timeout.is_some())
            .finish_non_exhaustive()
    }
}

fn optional<L: Layer<S>, S>(layer: &Option<L>, inner: S) -> Optional<L::Service, S> {
    match layer {
        Some(layer) => Optional::Layered(layer.layer(inner)),
        None => Optional::Bypassed(inner),
    }
}

type Timed<S> = Optional<AdaptiveTimeout<DegradationService<S>>, DegradationService<S>>;
type Measured<S> = MonitorService<Timed<S>, HttpOutcome>;
type Admitted<S> = Optional<PriorityAdmission<Measured<S>>, Measured<S>>;
type Shed<S> = Optional<LoadShed<Admitted<S>>, Admitted<S>>;
type Classified<S> = ClassifyService<DeadlineService<Shed<S>>, HttpClassifier>;
type Guarded<S> = Optional<ShutdownGuard<Classified<S>>, Classified<S>>;

impl<S> Layer<S> for BrownoutLayer {
    type Service = BrownoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let svc = self.degradation.layer(inner);
        let svc = optional(&self.timeout, svc);
        let svc = self.measure.layer(svc);
        let svc = optional(&self.admission, svc);
        let svc = optional(&self.shed, svc);
        let svc = self.classify.layer(self.deadline.layer(svc));
        let svc = optional(&self.guard, svc);
        BrownoutService {
            inner: self.response.layer(svc),
            _monitor: self.monitor.clone(),
        }
    }
}

/// The service of [`BrownoutLayer`]: `Error = Infallible`, rejections answered as responses.
pub struct BrownoutService<S> {
    inner: RejectionResponse<Guarded<S>>,
    /// Keeps the monitor's detector running while any service of the stack exists.
    _monitor: Arc<Monitor>,
}

impl<S> Clone for BrownoutService<S>
where
    RejectionResponse<Guarded<S>>: Clone,
{
    fn clone(&self) -> Self {
        BrownoutService {
            inner: self.inner.clone(),
            _monitor: self._monitor.clone(),
        }
    }
}

impl<S> fmt::Debug for BrownoutService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrownoutService").finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for BrownoutService<S>
where
    RejectionResponse<Guarded<S>>: Service<Req>,
{
    type Response = <RejectionResponse<Guarded<S>> as Service<Req>>::Response;
    type Error = <RejectionResponse<Guarded<S>> as Service<Req>>::Error;
    type Future = <RejectionResponse<Guarded<S>> as Service<Req>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}
