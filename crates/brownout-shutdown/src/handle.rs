//! The [`Shutdown`] handle: phases, readiness, trigger, drain, hooks and report.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use brownout_core::telemetry::{DecisionMetrics, SHUTDOWN_PHASE};
use brownout_core::{BoxError, LoadSignal, RejectReason, Rejected};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::ShutdownGuardLayer;
use crate::config::{ShutdownBuilder, ShutdownConfig};
use crate::report::{Counts, HookOutcome, HookReport, ShutdownReport};

/// The phase of a shutdown. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Phase {
    /// Serving normally.
    Running = 0,
    /// Triggered: readiness is false; after the readiness delay new requests are refused
    /// while in-flight ones finish (up to the drain deadline); then hooks run.
    Draining = 1,
    /// Drain and hooks are done; the [`ShutdownReport`] is available.
    Terminated = 2,
}

impl Phase {
    /// `running`, `draining` or `terminated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Terminated => "terminated",
        }
    }

    const fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Terminated,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a readiness probe should answer; false from the trigger on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readiness {
    /// Serving: answer 200 / `SERVING`.
    Ready,
    /// Shutting down: answer 503 / `NOT_SERVING` so balancers stop sending.
    ShuttingDown,
}

impl Readiness {
    /// Whether it is [`Readiness::Ready`].
    pub const fn is_ready(self) -> bool {
        matches!(self, Readiness::Ready)
    }

    /// `200 OK` when ready, `503 Service Unavailable` when shutting down.
    #[cfg(feature = "http")]
    pub const fn status_code(self) -> http::StatusCode {
        match self {
            Readiness::Ready => http::StatusCode::OK,
            Readiness::ShuttingDown => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Number of `Notify` shards response futures register with for the abort notification,
/// so that many pending requests do not all queue on one waiter-list lock.
pub(crate) const ABORT_SHARDS: usize = 16;

/// Keeps hot counters on their own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

type HookFn =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send>;

struct Hook {
    name: Cow<'static, str>,
    timeout: Duration,
    run: HookFn,
}

#[derive(Default)]
struct Registry {
    /// Set at the trigger: callbacks registered later run at once.
    fired: bool,
    callbacks: Vec<Box<dyn FnOnce() + Send>>,
    /// Set when the hooks start: hooks registered later are refused.
    hooks_started: bool,
    hooks: Vec<Hook>,
}

#[derive(Debug, Clone, Copy)]
struct TriggerInfo {
    completed_before: u64,
    in_flight: u64,
}

/// State shared by the handle, its clones, every guard and the driver task.
pub(crate) struct Shared {
    // --- request path -------------------------------------------------------------------
    /// Requests counted in flight so far (incremented by `call`); in flight = `started −
    /// finished`. Two counters that only grow, so that a request costs two increments
    /// and completed ones are counted without a third (see [`Shared::counts`]).
    pub(crate) started: Padded<AtomicU64>,
    /// Requests whose in-flight slot was released (incremented when the slot is dropped).
    pub(crate) finished: Padded<AtomicU64>,
    /// Requests refused after being counted in flight (lost the race with the trigger).
    pub(crate) late_refused: AtomicU64,
    /// False once new requests are refused (trigger + readiness delay).
    pub(crate) accepting: AtomicBool,
    /// True once the trigger fired (read when `in_flight` drops to zero).
    pub(crate) triggered: AtomicBool,
    /// True at the drain deadline: pending response futures resolve to `Aborted`.
    pub(crate) aborting: AtomicBool,
    pub(crate) abort: [Arc<Notify>; ABORT_SHARDS],
    pub(crate) rejected: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) signal: LoadSignal,
    pub(crate) metrics: DecisionMetrics,
    pub(crate) config: ShutdownConfig,
    // --- shutdown path ------------------------------------------------------------------
    ready: AtomicBool,
    phase: AtomicU8,
    phase_tx: watch::Sender<Phase>,
    /// `brownout_shutdown_phase`, registered once and set on each phase change.
    phase_gauge: metrics::Gauge,
    /// Woken when `in_flight` reaches zero after the trigger.
    drained: Notify,
    drain_done: AtomicBool,
    driver_started: AtomicBool,
    trigger_info: OnceLock<TriggerInfo>,
    /// When the trigger happened, on the runtime's clock (pausable): set by `trigger` inside
    /// a runtime, else when a runtime first sees the trigger.
    trigger_at: OnceLock<Instant>,
    registry: Mutex<Registry>,
    report: OnceLock<ShutdownReport>,
}

impl Shared {
    /// The rejection returned to refused (and, wrapped, aborted) requests.
    #[inline]
    pub(crate) fn rejection(&self) -> Rejected {
        let rejected = Rejected::new(RejectReason::ShuttingDown, self.signal.level());
        match self.config.retry_after {
            Some(after) => rejected.with_retry_after(after),
            None => rejected,
        }
    }

    /// One fewer request in flight; wakes the drain when it was the last one.
    ///
    /// The last one to finish sees `started == finished`: a request counted after its
    /// `started` read is one that then finds `accepting` false and releases its slot, seeing
    /// the equality itself (every access here is `SeqCst`).
    #[inline]
    pub(crate) fn release(&self) {
        let finished = self.finished.0.fetch_add(1, Ordering::SeqCst) + 1;
        if self.triggered.load(Ordering::SeqCst)
            && self.started.0.load(Ordering::SeqCst) == finished
        {
            self.drained.notify_one();
        }
    }

    /// Requests in flight now. `finished` is read first: both only grow and a request
    /// starts before it finishes, so the difference is never negative and reads 0 only when
    /// nothing was in flight at that read.
    pub(crate) fn in_flight(&self) -> usize {
        let finished = self.finished.0.load(Ordering::SeqCst);
        let started = self.started.0.load(Ordering::SeqCst);
        started.saturating_sub(finished) as usize
    }

    /// Requests completed so far: finished, neither cancelled nor aborted nor refused late.
    fn completed(&self) -> u64 {
        let finished = self.finished.0.load(Ordering::SeqCst);
        finished
            .saturating_sub(self.cancelled.load(Ordering::SeqCst))
            .saturating_sub(self.aborted.load(Ordering::SeqCst))
            .saturating_sub(self.late_refused.load(Ordering::SeqCst))
    }

    pub(crate) fn counts(&self) -> Counts {
        let in_flight = self.in_flight() as u64;
        let completed = self.completed();
        let aborted = self.aborted.load(Ordering::SeqCst);
        let cancelled = self.cancelled.load(Ordering::SeqCst);
        Counts {
            admitted: completed + aborted + cancelled + in_flight,
            completed,
            rejected: self.rejected.load(Ordering::SeqCst),
            aborted,
            cancelled,
            in_flight,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Only registration and the trigger take this lock, never a request; a panic while
        // it was held left a consistent registry (each field is updated in one step).
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
        self.phase_gauge.set(f64::from(phase as u8));
        self.phase_tx.send_replace(phase);
    }

    fn stop_accepting(&self) {
        if self.accepting.swap(false, Ordering::SeqCst) {
            tracing::info!(
                in_flight = self.in_flight(),
                "shutdown: refusing new requests, draining in-flight ones"
            );
        }
    }

    /// Spawns the task that runs the delay, the drain and the hooks, once, when triggered
    /// and inside a runtime.
    fn ensure_driver(self: &Arc<Self>) {
        if !self.triggered.load(Ordering::SeqCst) || self.driver_started.load(Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Triggered outside any runtime: the runtime's clock starts counting from here.
        let _ = self.trigger_at.get_or_init(Instant::now);
        if self
            .driver_started
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            handle.spawn(drive(self.clone()));
        }
    }

    /// Waits until no request is in flight, or until `deadline`. True when none is.
    async fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        loop {
            let mut notified = pin!(self.drained.notified());
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            match deadline {
                None => notified.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return self.in_flight() == 0;
                    }
                }
            }
        }
    }
}

/// The task that carries a triggered shutdown to its end.
async fn drive(shared: Arc<Shared>) {
    let Some(info) = shared.trigger_info.get().copied() else {
        return;
    };
    let at = *shared.trigger_at.get_or_init(Instant::now);
    let config = shared.config;

    // 1. Readiness first: balancers see 503 for `readiness_delay` before refusals start.
    if shared.accepting.load(Ordering::SeqCst) {
        match at.checked_add(config.readiness_delay) {
            Some(until) => tokio::time::sleep_until(until).await,
            None => std::future::pending::<()>().await,
        }
        shared.stop_accepting();
    }
    let drain_start = Instant::now();
    let in_flight_at_drain_start = shared.in_flight() as u64;

    // 2. Drain up to the deadline, then abort what is left.
    let deadline = if config.drain_timeout == Duration::MAX {
        None
    } else {
        drain_start.checked_add(config.drain_timeout)
    };
    let drained = shared.wait_idle(deadline).await;
    if !drained {
        let left = shared.in_flight();
        tracing::warn!(
            in_flight = left,
            drain_timeout = ?config.drain_timeout,
            "shutdown: drain deadline reached, aborting the requests still in flight"
        );
        shared.aborting.store(true, Ordering::SeqCst);
        for notify in &shared.abort {
            notify.notify_waiters();
        }
        // An abort grace too large to add waits without a bound, as asked.
        let grace_end = Instant::now().checked_add(config.abort_grace);
        shared.wait_idle(grace_end).await;
    } else {
        tracing::info!("shutdown: every in-flight request finished");
    }
    let drain_duration = drain_start.elapsed();
    shared.drain_done.store(true, Ordering::SeqCst);
    shared.phase_tx.send_modify(|_| {}); // wakes `drained()` waiters

    // 3. Hooks, in registration order, each under its own timeout.
    let hooks = {
        let mut registry = shared.registry();
        registry.hooks_started = true;
        std::mem::take(&mut registry.hooks)
    };
    let mut reports = Vec::with_capacity(hooks.len());
    for hook in hooks {
        reports.push(run_hook(hook).await);
    }

    // 4. Report, then Terminated.
    let counts = shared.counts();
    let report = ShutdownReport {
        admitted: counts.admitted,
        completed: counts.completed,
        completed_during_drain: counts.completed.saturating_sub(info.completed_before),
        in_flight_at_trigger: info.in_flight,
        in_flight_at_drain_start,
        rejected: counts.rejected,
        aborted: counts.aborted,
        cancelled: counts.cancelled,
        unfinished: counts.in_flight,
        drained,
        readiness_delay: drain_start.saturating_duration_since(at),
        drain_duration,
        hooks: reports,
        total_duration: at.elapsed(),
    };
    tracing::info!(%report, "shutdown: terminated");
    let _ = shared.report.set(report);
    shared.set_phase(Phase::Terminated);
}

async fn run_hook(hook: Hook) -> HookReport {
    let started = Instant::now();
    tracing::debug!(hook = %hook.name, "shutdown: running hook");
    // Its own task, so that a panic is caught and a timeout can cancel it.
    let run = hook.run;
    let mut task = tokio::spawn(async move { run().await });
    let outcome = match tokio::time::timeout(hook.timeout, &mut task).await {
        Ok(Ok(Ok(()))) => HookOutcome::Completed,
        Ok(Ok(Err(err))) => HookOutcome::Failed(err.to_string()),
        Ok(Err(join)) if join.is_panic() => {
            let payload = join.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            HookOutcome::Panicked(message)
        }
        Ok(Err(_)) => HookOutcome::Failed("hook task cancelled".to_owned()),
        Err(_) => {
            task.abort();
            HookOutcome::TimedOut(hook.timeout)
        }
    };
    let duration = started.elapsed();
    if outcome.is_ok() {
        tracing::info!(hook = %hook.name, ?duration, "shutdown: hook completed");
    } else {
        tracing::warn!(hook = %hook.name, ?duration, %outcome, "shutdown: hook did not complete");
    }
    HookReport {
        name: hook.name,
        outcome,
        duration,
    }
}

/// The shutdown handle: one `Arc`, cheap to clone; every clone and every guard built from
/// it share one state.
///
/// See the [crate docs](crate) for the sequence and the axum / tonic wiring.
///
/// ```
/// use std::time::Duration;
/// use brownout_shutdown::{Phase, Shutdown};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let shutdown = Shutdown::new();
/// shutdown.on_trigger(|| println!("stop accepting jobs"));
/// shutdown.hook("flush", Duration::from_secs(1), || async { Ok(()) });
/// assert!(shutdown.is_ready());
///
/// assert!(shutdown.trigger());
/// assert!(!shutdown.trigger(), "idempotent");
/// assert!(!shutdown.is_ready());
///
/// let report = shutdown.wait().await;
/// assert_eq!(shutdown.phase(), Phase::Terminated);
/// assert!(report.is_clean());
/// # }
/// ```
#[derive(Clone)]
pub struct Shutdown {
    shared: Arc<Shared>,
}

impl Shutdown {
    /// A handle with the default configuration ([`ShutdownConfig::default`]).
    pub fn new() -> Shutdown {
        Shutdown::from_parts(ShutdownConfig::default(), LoadSignal::default())
    }

    /// A builder for a handle with other settings.
    pub fn builder() -> ShutdownBuilder {
        ShutdownBuilder::new()
    }

    pub(crate) fn from_parts(config: ShutdownConfig, signal: LoadSignal) -> Shutdown {
        let (phase_tx, _) = watch::channel(Phase::Running);
        let metrics = DecisionMetrics::new("shutdown");
        let phase_gauge = metrics.gauge(SHUTDOWN_PHASE);
        phase_gauge.set(f64::from(Phase::Running as u8));
        Shutdown {
            shared: Arc::new(Shared {
                started: Padded(AtomicU64::new(0)),
                finished: Padded(AtomicU64::new(0)),
                late_refused: AtomicU64::new(0),
                accepting: AtomicBool::new(true),
                triggered: AtomicBool::new(false),
                aborting: AtomicBool::new(false),
                abort: std::array::from_fn(|_| Arc::new(Notify::new())),
                rejected: AtomicU64::new(0),
                aborted: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                signal,
                metrics,
                config,
                ready: AtomicBool::new(true),
                phase: AtomicU8::new(Phase::Running as u8),
                phase_tx,
                phase_gauge,
                drained: Notify::new(),
                drain_done: AtomicBool::new(false),
                driver_started: AtomicBool::new(false),
                trigger_info: OnceLock::new(),
                trigger_at: OnceLock::new(),
                registry: Mutex::new(Registry::default()),
                report: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The settings it was built with.
    pub fn config(&self) -> &ShutdownConfig {
        &self.shared.config
    }

    /// A layer guarding services with this handle.
    pub fn layer(&self) -> ShutdownGuardLayer {
        ShutdownGuardLayer::new(self)
    }

    /// A layer for http services that keeps each request in flight until its response
    /// body ends (streaming responses; feature `http`).
    #[cfg(feature = "http")]
    pub fn body_layer(&self) -> crate::ShutdownBodyGuardLayer {
        crate::ShutdownBodyGuardLayer::new(self)
    }

    /// Starts the shutdown; returns `true` for the call that started it and `false` for
    /// every later one (idempotent, from any thread, before or after serving starts).
    ///
    /// In this order, at once: readiness turns false; with no readiness delay, new
    /// requests are refused from here on; the phase becomes [`Phase::Draining`];
    /// the [`on_trigger`](Self::on_trigger) callbacks run (on this thread). Then a task
    /// waits out the readiness delay, drains, runs the hooks and writes the report.
    /// Called outside a tokio runtime (a plain thread), that task starts when a
    /// [`triggered`](Self::triggered), [`refusing`](Self::refusing),
    /// [`drained`](Self::drained) or [`wait`](Self::wait) future inside a runtime sees the
    /// trigger.
    pub fn trigger(&self) -> bool {
        let shared = &self.shared;
        shared.ready.store(false, Ordering::SeqCst);
        if shared.triggered.swap(true, Ordering::SeqCst) {
            return false;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = shared.trigger_at.set(Instant::now());
        }
        let info = TriggerInfo {
            completed_before: shared.completed(),
            in_flight: shared.in_flight() as u64,
        };
        let _ = shared.trigger_info.set(info);
        if shared.config.readiness_delay.is_zero() {
            shared.stop_accepting();
        }
        tracing::info!(
            in_flight = info.in_flight,
            readiness_delay = ?shared.config.readiness_delay,
            drain_timeout = ?shared.config.drain_timeout,
            "shutdown: triggered, readiness is now false"
        );
        shared.set_phase(Phase::Draining);
        let callbacks = {
            let mut registry = shared.registry();
            registry.fired = true;
            std::mem::take(&mut registry.callbacks)
        };
        for callback in callbacks {
            run_callback(callback);
        }
        shared.ensure_driver();
        true
    }

    /// Triggers the shutdown (if not yet) and waits for its report.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.trigger();
        self.wait().await
    }

    /// Waits until the shutdown is over (drained, hooks run) and returns its report.
    /// Before the trigger it waits for the trigger first. Every caller gets the same report.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the shutdown runs in its own task; dropping this future only stops
    /// waiting for it.
    pub async fn wait(&self) -> ShutdownReport {
        let mut rx = self.shared.phase_tx.subscribe();
        loop {
            self.shared.ensure_driver();
            if let Some(report) = self.shared.report.get() {
                return report.clone();
            }
            // The sender lives in `shared`, which `self` keeps alive: never closed.
            let _ = rx.changed().await;
        }
    }

    /// The report, once the shutdown is [`Phase::Terminated`].
    pub fn report(&self) -> Option<&ShutdownReport> {
        self.shared.report.get()
    }

    /// A future resolving at the trigger (at once if already triggered).
    ///
    /// `'static` and `Send`: pass it to `axum::serve(..).with_graceful_shutdown(..)` or
    /// tonic's `serve_with_shutdown(addr, ..)` (see the crate docs for which to pick).
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            let mut rx = shared.phase_tx.subscribe();
            let _ = rx.wait_for(|phase| *phase != Phase::Running).await;
            // Triggered from a thread outside the runtime: start the drain from here.
            shared.ensure_driver();
        }
    }

    /// A future resolving once new requests are refused: at the trigger plus the readiness
    /// delay. With a readiness delay, this is the one to hand to the server's graceful
    /// shutdown, so that it keeps accepting connections while balancers move away.
    pub fn refusing(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            let mut rx = shared.phase_tx.subscribe();
            let _ = rx.wait_for(|phase| *phase != Phase::Running).await;
            shared.ensure_driver();
            if let Some(at) = shared.trigger_at.get()
                && let Some(until) = at.checked_add(shared.config.readiness_delay)
            {
                tokio::time::sleep_until(until).await;
            }
        }
    }

    /// A future resolving once the drain is over: no request in flight, or the deadline
    /// passed and the rest were aborted. Hooks run after it.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            let mut rx = shared.phase_tx.subscribe();
            loop {
                shared.ensure_driver();
                if shared.drain_done.load(Ordering::SeqCst) {
                    return;
                }
                let _ = rx.changed().await;
            }
        }
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.shared.triggered.load(Ordering::SeqCst)
    }

    /// Whether a readiness probe should answer "ready": true until the trigger, false from
    /// the trigger on, before anything else happens.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// [`is_ready`](Self::is_ready) as a [`Readiness`].
    pub fn readiness(&self) -> Readiness {
        if self.is_ready() {
            Readiness::Ready
        } else {
            Readiness::ShuttingDown
        }
    }

    /// Whether guards still pass new requests through (false from the trigger plus the
    /// readiness delay).
    pub fn is_accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::SeqCst)
    }

    /// The current phase (one atomic load).
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.shared.phase.load(Ordering::SeqCst))
    }

    /// Waits until the phase differs from the one current when called and returns the new
    /// one; returns [`Phase::Terminated`] at once when already terminated.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a call made after the change waits for the next one: compare with
    /// [`phase`](Self::phase) or use [`subscribe`](Self::subscribe) to miss nothing.
    pub async fn phase_changed(&self) -> Phase {
        let mut rx = self.shared.phase_tx.subscribe();
        let start = *rx.borrow_and_update();
        if start == Phase::Terminated {
            return start;
        }
        match rx.wait_for(|phase| *phase != start).await {
            Ok(phase) => *phase,
            Err(_) => self.phase(),
        }
    }

    /// A `watch` receiver of the phase, for code that wants tokio's own API.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.shared.phase_tx.subscribe()
    }

    /// Live counters: admitted, completed, rejected, aborted, cancelled, in flight.
    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Runs `callback` once at the trigger, on the triggering thread, before the drain
    /// starts, e.g. to make an admission queue reject its waiting requests at once.
    /// Registered after the trigger, it runs at once on this thread. A panicking callback
    /// is logged and does not stop the others.
    pub fn on_trigger(&self, callback: impl FnOnce() + Send + 'static) {
        let mut registry = self.shared.registry();
        if registry.fired {
            drop(registry);
            run_callback(Box::new(callback));
        } else {
            registry.callbacks.push(Box::new(callback));
        }
    }

    /// Registers an async hook (flush, save state, close pools) to run after the drain,
    /// in registration order, each under its own `timeout`. A hook that fails, panics or
    /// times out is reported and the next one still runs.
    ///
    /// Returns `false` (and drops the hook) when the hooks have already started.
    pub fn hook<F, Fut>(
        &self,
        name: impl Into<Cow<'static, str>>,
        timeout: Duration,
        hook: F,
    ) -> bool
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let name = name.into();
        let mut registry = self.shared.registry();
        if registry.hooks_started {
            drop(registry);
            tracing::warn!(hook = %name, "shutdown: hook registered after hooks ran; not run");
            return false;
        }
        registry.hooks.push(Hook {
            name,
            timeout,
            run: Box::new(move || Box::pin(hook())),
        });
        true
    }
}

fn run_callback(callback: Box<dyn FnOnce() + Send>) {
    if catch_unwind(AssertUnwindSafe(callback)).is_err() {
        tracing::error!("shutdown: an on_trigger callback panicked");
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("phase", &self.phase())
            .field("ready", &self.is_ready())
            .field("accepting", &self.is_accepting())
            .field("counts", &self.counts())
            .field("config", &self.shared.config)
            .finish()
    }
}
