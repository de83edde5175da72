//! One builder that creates a monitor and wires its load signal into every layer.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use brownout_admission::{
    AdmissionHandle, PriorityAdmission, PriorityAdmissionBuilder, PriorityAdmissionLayer,
};
use brownout_core::{
    ClassifyLayer, ClassifyService, ConfigError, HttpOutcome, LevelTable, LoadPublisher,
    LoadSignal, Policy, WorkMode,
};
use brownout_monitor::{Monitor, MonitorBuilder, MonitorLayer, MonitorService};
use brownout_shed::{LoadShed, LoadShedBuilder, LoadShedConfig, LoadShedLayer};
use brownout_shutdown::{Shutdown, ShutdownGuard, ShutdownGuardLayer};
use brownout_timeout::{
    AdaptiveTimeout, AdaptiveTimeoutBuilder, AdaptiveTimeoutConfig, AdaptiveTimeoutLayer,
    HttpDeadline,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::Optional;
#[cfg(feature = "grpc")]
use crate::grpc::{GrpcAnswer, GrpcOutcome};
use crate::health::{Health, HealthBuilder};
use crate::http::{
    Answering, AnsweringLayer, DeadlineLayer, DeadlineService, DegradationLayer,
    DegradationService, FeatureToggles, HttpAnswer, HttpClassifier,
};

/// The http stack's default classifier: the class from header `name`, then RFC 9218
/// `priority`, else Medium.
fn http_classifier(name: &str) -> HttpClassifier {
    HttpClassifier::new().header(name).rfc9218()
}

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
///
/// The type parameters name the protocol: `A` answers rejections (http status codes, or
/// gRPC statuses for `Brownout::grpc_builder`, feature `grpc`), `O` tells the monitor which responses are
/// failures.
pub struct Brownout<A = HttpAnswer, O = HttpOutcome> {
    layer: BrownoutLayer<A, O>,
    admission: Option<AdmissionHandle>,
    shutdown: Option<Shutdown>,
}

impl Brownout {
    /// A builder with every default: monitor, shed, priority admission (adaptive limit),
    /// adaptive timeout, http classification from `x-priority` / `priority`.
    pub fn builder() -> BrownoutBuilder {
        BrownoutBuilder::default()
    }

    /// A builder for a tonic (gRPC) server: the same layers, but the class is read from the
    /// `x-priority` metadata (the gRPC health-checking methods are always Critical), the
    /// monitor counts failures from `grpc-status` ([`GrpcOutcome`]), and rejections are
    /// answered as gRPC statuses with `grpc-retry-pushback-ms` ([`GrpcAnswer`]):
    /// `UNAVAILABLE`, `RESOURCE_EXHAUSTED` or `DEADLINE_EXCEEDED`, never `INTERNAL`.
    /// Same as `Brownout::builder().grpc()`.
    ///
    /// The layer goes straight into `tonic::transport::Server::builder().layer(..)`; its
    /// error type is `Infallible`.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use brownout::{Brownout, LoadLevel};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let brownout = Brownout::grpc_builder().build()?;
    /// let mut svc = brownout.layer().layer(service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, Infallible>(http::Response::new(()))
    /// }));
    ///
    /// brownout.publisher().force(LoadLevel::Emergency);
    /// let low = http::Request::post("/greeter.v1.Greeter/SayHello")
    ///     .header("x-priority", "low")
    ///     .body(())?;
    /// let response = svc.ready().await?.call(low).await?;
    /// assert_eq!(response.status(), 200); // gRPC errors travel in a 200
    /// assert_eq!(response.headers()["grpc-status"], "14"); // UNAVAILABLE
    /// assert!(response.headers().contains_key("grpc-retry-pushback-ms"));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "grpc")]
    pub fn grpc_builder() -> BrownoutBuilder<GrpcAnswer, GrpcOutcome> {
        BrownoutBuilder::default().grpc()
    }
}

impl<A, O> Brownout<A, O> {
    /// The layer to put in a `ServiceBuilder`, axum `Router::layer` / `route_layer`, or a
    /// tonic server. Every service it builds shares the same monitor, limits and queues.
    pub fn layer(&self) -> BrownoutLayer<A, O>
    where
        A: Clone,
        O: Clone,
    {
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

#[cfg(feature = "grpc-health")]
impl<A, O> Brownout<A, O> {
    /// A [`GrpcHealth`](crate::grpc::health::GrpcHealth) reporting this stack's health
    /// (level, signals, shutdown; see [`health`](Self::health)) through tonic-health's
    /// `reporter` for the whole server; add services with `.service(name)`, then spawn
    /// its `run()`.
    ///
    /// ```
    /// use brownout::{Brownout, LoadLevel};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let brownout = Brownout::grpc_builder().build()?;
    /// let (reporter, _health_server) = tonic_health::server::health_reporter();
    /// let mut grpc_health = brownout.grpc_health(reporter)?.service("greeter.v1.Greeter");
    /// assert_eq!(grpc_health.sync().await, tonic_health::ServingStatus::Serving);
    /// brownout.publisher().force(LoadLevel::Emergency);
    /// assert_eq!(grpc_health.sync().await, tonic_health::ServingStatus::NotServing);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// None in practice: the health registry it builds has no component checks to refuse.
    pub fn grpc_health(
        &self,
        reporter: tonic_health::server::HealthReporter,
    ) -> Result<crate::grpc::health::GrpcHealth, ConfigError> {
        let health = self.health().build()?;
        Ok(crate::grpc::health::GrpcHealth::new(health, reporter))
    }
}

impl<A, O> fmt::Debug for Brownout<A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brownout")
            .field("level", &self.signal().level())
            .field("admission", &self.admission.is_some())
            .field("shutdown", &self.shutdown.is_some())
            .finish()
    }
}

/// A layer's settings, kept until `build` applies them after the stack-wide policy.
type Configurator<B> = Box<dyn FnOnce(B) -> B>;
type AdmissionConfigurator = Configurator<PriorityAdmissionBuilder>;
type ShedConfigurator = Configurator<LoadShedBuilder>;
type TimeoutConfigurator = Configurator<AdaptiveTimeoutBuilder>;

/// `earlier`'s settings, then `next`'s (which win where both set the same field).
fn then<B>(earlier: Option<Configurator<B>>, next: impl FnOnce(B) -> B + 'static) -> Configurator<B>
where
    B: 'static,
{
    match earlier {
        Some(earlier) => Box::new(move |builder| next(earlier(builder))),
        None => Box::new(next),
    }
}

/// Configures a [`Brownout`] stack; every layer can be configured or left out.
pub struct BrownoutBuilder<A = HttpAnswer, O = HttpOutcome> {
    policy: Policy,
    monitor: MonitorBuilder,
    given_monitor: Option<Monitor>,
    // Layer settings are kept as closures and applied at `build`, after the policy, so a
    // layer's own settings win over the policy whichever order they were given in.
    shed: Option<ShedConfigurator>,
    admission: Option<AdmissionConfigurator>,
    timeout: Option<TimeoutConfigurator>,
    shutdown: Option<Shutdown>,
    classifier: Option<HttpClassifier>,
    priority_header: String,
    default_classifier: fn(&str) -> HttpClassifier,
    deadline: DeadlineLayer,
    work: LevelTable<WorkMode>,
    toggles: FeatureToggles,
    protocol: PhantomData<fn() -> (A, O)>,
}

impl Default for BrownoutBuilder {
    fn default() -> Self {
        BrownoutBuilder {
            policy: Policy::default(),
            monitor: Monitor::builder(),
            given_monitor: None,
            shed: Some(Box::new(|s| s)),
            admission: Some(Box::new(|a| a)),
            timeout: Some(Box::new(|t| t)),
            shutdown: None,
            classifier: None,
            priority_header: brownout_core::headers::PRIORITY.as_str().to_owned(),
            default_classifier: http_classifier,
            deadline: DeadlineLayer::grpc_timeout(),
            work: LevelTable::default_work(),
            toggles: FeatureToggles::default(),
            protocol: PhantomData,
        }
    }
}

impl BrownoutBuilder {
    /// Turns this into the builder of a tonic (gRPC) stack; see [`Brownout::grpc_builder`].
    /// Settings made before are kept.
    #[cfg(feature = "grpc")]
    #[must_use]
    pub fn grpc(self) -> BrownoutBuilder<GrpcAnswer, GrpcOutcome> {
        BrownoutBuilder {
            policy: self.policy,
            monitor: self.monitor,
            given_monitor: self.given_monitor,
            shed: self.shed,
            admission: self.admission,
            timeout: self.timeout,
            shutdown: self.shutdown,
            classifier: self.classifier,
            priority_header: self.priority_header,
            default_classifier: crate::grpc::classifier,
            deadline: self.deadline,
            work: self.work,
            toggles: self.toggles,
            protocol: PhantomData,
        }
    }
}

impl<A, O> fmt::Debug for BrownoutBuilder<A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrownoutBuilder")
            .field("policy", &self.policy)
            .field("given_monitor", &self.given_monitor.is_some())
            .field("shed", &self.shed.is_some())
            .field("admission", &self.admission.is_some())
            .field("timeout", &self.timeout.is_some())
            .field("shutdown", &self.shutdown.is_some())
            .field("classifier", &self.classifier)
            .field("priority_header", &self.priority_header)
            .finish_non_exhaustive()
    }
}

impl<A, O> BrownoutBuilder<A, O> {
    /// The per-level policy every layer follows (shed sets, rate and queue scales, timeout
    /// scales, handler work). A layer's own settings (e.g. `shed(|s| s.shed_table(..))`)
    /// win over the policy, whether given before or after it.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.work = policy.work;
        self.policy = policy;
        self
    }

    /// Configures the monitor (interval, thresholds, latency objective, pressure sources).
    /// Ignored when a monitor is given with [`with_monitor`](Self::with_monitor).
    #[must_use]
    pub fn monitor(mut self, configure: impl FnOnce(MonitorBuilder) -> MonitorBuilder) -> Self {
        self.monitor = configure(self.monitor);
        self
    }

    /// Uses a monitor built beforehand instead of building one, e.g. to hand its signal to
    /// a [`Shutdown`] (`ShutdownBuilder::load_signal`) that the stack then guards. The
    /// admission layer feeds that monitor's own [`queue_probe`](Monitor::queue_probe).
    #[must_use]
    pub fn with_monitor(mut self, monitor: Monitor) -> Self {
        self.given_monitor = Some(monitor);
        self
    }

    /// Configures the load-shed layer (turning it on if it was off). Calls add up, a later
    /// call's settings winning over an earlier one's; all win over [`policy`](Self::policy).
    #[must_use]
    pub fn shed(
        mut self,
        configure: impl FnOnce(LoadShedBuilder) -> LoadShedBuilder + 'static,
    ) -> Self {
        self.shed = Some(then(self.shed.take(), configure));
        self
    }

    /// Leaves the load-shed layer out.
    #[must_use]
    pub fn without_shed(mut self) -> Self {
        self.shed = None;
        self
    }

    /// Configures the priority admission layer (limit, queue, rate limits, reserved shares);
    /// the builder's signal, policy and queue probe are set for you. Calls add up, a later
    /// call's settings winning over an earlier one's (turning the layer on if it was off).
    #[must_use]
    pub fn admission(
        mut self,
        configure: impl FnOnce(PriorityAdmissionBuilder) -> PriorityAdmissionBuilder + 'static,
    ) -> Self {
        self.admission = Some(then(self.admission.take(), configure));
        self
    }

    /// Leaves the priority admission layer out.
    #[must_use]
    pub fn without_admission(mut self) -> Self {
        self.admission = None;
        self
    }

    /// Configures the adaptive timeout layer (turning it on if it was off). Calls add up, a
    /// later call's settings winning over an earlier one's; all win over
    /// [`policy`](Self::policy).
    #[must_use]
    pub fn timeout(
        mut self,
        configure: impl FnOnce(AdaptiveTimeoutBuilder) -> AdaptiveTimeoutBuilder + 'static,
    ) -> Self {
        self.timeout = Some(then(self.timeout.take(), configure));
        self
    }

    /// Leaves the adaptive timeout layer out.
    #[must_use]
    pub fn without_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Adds the shutdown guard for `shutdown`: new requests are refused once it triggers
    /// (after its readiness delay, if it has one, while health already reports 503), and
    /// requests still queued in admission are then rejected at once with `Retry-After`.
    #[must_use]
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self
    }

    /// How requests are classified. The default reads [`priority_header`]
    /// (`x-priority` unless changed): for http then the RFC 9218 `priority` header; for
    /// gRPC after making the health-checking methods
    /// (`grpc::HEALTH_PATHS`, feature `grpc`) Critical. Anything else is Medium.
    ///
    /// [`priority_header`]: Self::priority_header
    #[must_use]
    pub fn classifier(mut self, classifier: HttpClassifier) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// The header (gRPC: metadata key) the default classifier reads the class from
    /// (`critical|high|medium|low|background|0-4`); default `x-priority`. Ignored when a
    /// [`classifier`](Self::classifier) is given.
    ///
    /// # Panics
    ///
    /// At [`build`](Self::build), when `name` is not a valid header name.
    #[must_use]
    pub fn priority_header(mut self, name: impl Into<String>) -> Self {
        self.priority_header = name.into();
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
    pub fn build(self) -> Result<Brownout<A, O>, ConfigError>
    where
        A: Default,
        O: Default + Clone,
    {
        self.policy.validate().map_err(|e| e.within("policy"))?;
        let (monitor, probe) = match self.given_monitor {
            Some(monitor) => {
                let probe = monitor.queue_probe();
                (monitor, probe)
            }
            None => {
                let mut monitor = self.monitor;
                let probe = brownout_core::QueueProbe::new();
                if self.admission.is_some() {
                    monitor = monitor.queue_probe(probe.clone());
                }
                let monitor = monitor.build().map_err(|e| e.within("monitor"))?;
                (monitor, probe)
            }
        };
        let signal = monitor.signal();

        let shed = match self.shed {
            Some(configure) => {
                let config = configure(LoadShedConfig::builder().policy(&self.policy))
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
            Some(configure) => {
                let config = configure(AdaptiveTimeoutConfig::builder().policy(&self.policy))
                    .build()
                    .map_err(|e| e.within("timeout"))?;
                let layer = AdaptiveTimeoutLayer::new(config).with_signal(signal.clone());
                // The deadline layer runs first and stores the caller's deadline: when it
                // reads `grpc-timeout`, reading that header again here (by name, parsed per
                // request) could only find a later deadline, never change the earlier one.
                Some(if self.deadline.reads_grpc_timeout() {
                    layer.caller_deadline(HttpDeadline::extensions_only())
                } else {
                    layer
                })
            }
            None => None,
        };
        let degradation = DegradationLayer::with_config(signal.clone(), self.work, self.toggles)?;
        let admission_handle = admission.as_ref().map(PriorityAdmissionLayer::handle);
        if let (Some(shutdown), Some(handle)) = (&self.shutdown, &admission_handle) {
            close_admission_when_refusing(shutdown, handle.clone());
        }
        if self.priority_header.is_empty()
            || http::HeaderName::try_from(self.priority_header.as_str()).is_err()
        {
            return Err(ConfigError::new(
                "priority_header",
                "must be a valid header name",
            ));
        }
        let classifier = self
            .classifier
            .unwrap_or_else(|| (self.default_classifier)(&self.priority_header));
        let layer = BrownoutLayer {
            response: AnsweringLayer::<A>::new().with_level_header(signal.clone()),
            guard: self.shutdown.as_ref().map(Shutdown::layer),
            classify: ClassifyLayer::new(classifier),
            deadline: self.deadline,
            shed,
            admission,
            measure: monitor.layer().with_classifier(O::default()),
            timeout,
            degradation,
            monitor: Arc::new(monitor),
            extensions: sized_extensions(),
        };
        Ok(Brownout {
            layer,
            admission: admission_handle,
            shutdown: self.shutdown,
        })
    }
}

/// Closes the admission queue when the shutdown guard starts refusing: at the trigger, or
/// after the shutdown's readiness delay, during which requests are still served (balancers
/// see readiness turn 503 first and move away). Queued requests are then rejected at once.
fn close_admission_when_refusing(shutdown: &Shutdown, handle: AdmissionHandle) {
    if shutdown.config().readiness_delay().is_zero() {
        shutdown.on_trigger(move || handle.close());
        return;
    }
    let refusing = shutdown.refusing();
    shutdown.on_trigger(move || match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                refusing.await;
                handle.close();
            });
        }
        // Triggered off any runtime (a plain thread): refuse queued work now rather than
        // leave it queued with nothing to close the queue later.
        Err(_) => handle.close(),
    });
}

/// The layer of a [`Brownout`] stack (see there for the order of its parts).
#[derive(Clone)]
pub struct BrownoutLayer<A = HttpAnswer, O = HttpOutcome> {
    response: AnsweringLayer<A>,
    guard: Option<ShutdownGuardLayer>,
    classify: ClassifyLayer<HttpClassifier>,
    deadline: DeadlineLayer,
    shed: Option<LoadShedLayer>,
    admission: Option<PriorityAdmissionLayer>,
    measure: MonitorLayer<O>,
    timeout: Option<AdaptiveTimeoutLayer>,
    degradation: DegradationLayer,
    monitor: Arc<Monitor>,
    /// An empty extension map with room for what the stack inserts (see [`BrownoutService`]).
    extensions: http::Extensions,
}

impl<A, O> fmt::Debug for BrownoutLayer<A, O> {
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
type Measured<S, O> = MonitorService<Timed<S>, O>;
type Admitted<S, O> = Optional<PriorityAdmission<Measured<S, O>>, Measured<S, O>>;
type Shed<S, O> = Optional<LoadShed<Admitted<S, O>>, Admitted<S, O>>;
type Classified<S, O> = ClassifyService<DeadlineService<Shed<S, O>>, HttpClassifier>;
type Guarded<S, O> = Optional<ShutdownGuard<Classified<S, O>>, Classified<S, O>>;
type Answered<S, A, O> = Answering<Guarded<S, O>, A>;

impl<S, A: Clone, O: Clone> Layer<S> for BrownoutLayer<A, O> {
    type Service = BrownoutService<S, A, O>;

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
            extensions: self.extensions.clone(),
        }
    }
}

/// An empty extension map whose table has room for the four entries the stack inserts:
/// `Extensions` has no `with_capacity`, but a cleared map keeps its table, and a clone of
/// it has a table of the same size.
fn sized_extensions() -> http::Extensions {
    #[derive(Clone, Copy)]
    struct Slot<const N: u8>;
    let mut extensions = http::Extensions::new();
    extensions.insert(Slot::<0>);
    extensions.insert(Slot::<1>);
    extensions.insert(Slot::<2>);
    extensions.insert(Slot::<3>);
    extensions.clear();
    extensions
}

/// The service of [`BrownoutLayer`]: `Error = Infallible`, rejections answered as responses.
pub struct BrownoutService<S, A = HttpAnswer, O = HttpOutcome> {
    inner: Answered<S, A, O>,
    /// Keeps the monitor's detector running while any service of the stack exists.
    _monitor: Arc<Monitor>,
    /// Given to requests that arrive with no extensions (see `call`).
    extensions: http::Extensions,
}

impl<S, A, O> Clone for BrownoutService<S, A, O>
where
    Answered<S, A, O>: Clone,
{
    fn clone(&self) -> Self {
        BrownoutService {
            inner: self.inner.clone(),
            _monitor: self._monitor.clone(),
            extensions: self.extensions.clone(),
        }
    }
}

impl<S, A, O> fmt::Debug for BrownoutService<S, A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrownoutService").finish_non_exhaustive()
    }
}

impl<S, A, O, B> Service<http::Request<B>> for BrownoutService<S, A, O>
where
    Answered<S, A, O>: Service<http::Request<B>>,
{
    type Response = <Answered<S, A, O> as Service<http::Request<B>>>::Response;
    type Error = <Answered<S, A, O> as Service<http::Request<B>>>::Error;
    type Future = <Answered<S, A, O> as Service<http::Request<B>>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The stack inserts up to four extensions (Priority, Deadline, LoadLevel,
        // Degradation); into a request that has none, the first insert would make a table
        // for three that the fourth then grows (an allocation, a rehash and a free). A
        // request without extensions gets an empty table with room for them instead.
        if req.extensions().is_empty() {
            *req.extensions_mut() = self.extensions.clone();
        }
        self.inner.call(req)
    }
}
