//! [`Monitor`]: the handle that owns the detector, its tick task and the published level.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use brownout_core::clock::SampleRate;
use brownout_core::telemetry;
use brownout_core::{
    ConfigError, ErrIsFailure, HttpOutcome, LoadLevel, LoadPublisher, LoadSignal, PressureSource,
    QueueProbe, QueueWindow,
};
use metrics::{Gauge, Histogram};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{MonitorBuilder, Validated};
use crate::detector::{Detector, Signals, Transition};
use crate::histogram::{HistogramCounts, Quantiles};
use crate::layer::MonitorLayer;
use crate::recorder::Recorder;
use crate::snapshot::Snapshot;

/// The `layer` label of the monitor's metrics.
const LAYER: &str = "monitor";

/// The names of the monitor's own gauges (defined with the others in
/// [`brownout_core::telemetry`]).
pub use brownout_core::telemetry::{LATENCY_QUANTILE_SECONDS, LATENCY_SAMPLE_EVERY};

/// The monitor's metric handles, registered once (at the first tick, so a recorder
/// installed after the monitor was built is still used) and reused at every tick.
struct MonitorMetrics {
    level: Gauge,
    in_flight: Gauge,
    queue_depth: Gauge,
    queue_delay: Histogram,
    latency: Histogram,
    quantiles: [Gauge; 3],
    sample_every: Gauge,
}

impl MonitorMetrics {
    fn register() -> MonitorMetrics {
        MonitorMetrics {
            level: metrics::gauge!(telemetry::LEVEL),
            in_flight: metrics::gauge!(telemetry::IN_FLIGHT, "layer" => LAYER),
            queue_depth: metrics::gauge!(telemetry::QUEUE_DEPTH, "layer" => LAYER),
            queue_delay: metrics::histogram!(telemetry::QUEUE_DELAY_SECONDS, "layer" => LAYER),
            latency: metrics::histogram!(telemetry::LATENCY_SECONDS, "layer" => LAYER),
            quantiles: ["0.5", "0.95", "0.99"].map(|quantile| {
                metrics::gauge!(LATENCY_QUANTILE_SECONDS, "layer" => LAYER, "quantile" => quantile)
            }),
            sample_every: metrics::gauge!(LATENCY_SAMPLE_EVERY, "layer" => LAYER),
        }
    }
}

/// Measures the traffic of the services built by its [`layer`](Monitor::layer), turns it into
/// a [`LoadLevel`] once per interval and publishes it through a [`LoadSignal`].
///
/// Built with [`Monitor::builder`]. Unless built with
/// [`manual_ticks`](MonitorBuilder::manual_ticks), it runs one tokio task that ticks every
/// `interval`; the task holds only a weak reference and ends when the monitor is dropped.
/// Readers of the signal then keep the last level.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::{LoadLevel, QueueProbe};
/// use brownout_monitor::Monitor;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let probe = QueueProbe::new();
/// let monitor = Monitor::builder()
///     .queue_probe(probe.clone())
///     .manual_ticks()
///     .build()
///     .unwrap();
/// let signal = monitor.signal();
///
/// // The admission layer reports a standing queue: 60 ms mean queueing delay.
/// probe.dequeued(Duration::from_millis(60));
/// monitor.tick_now();
/// assert_eq!(signal.level(), LoadLevel::High);
///
/// // Operators can override the detector.
/// monitor.publisher().force(LoadLevel::Emergency);
/// assert_eq!(monitor.snapshot().forced, Some(LoadLevel::Emergency));
/// # }
/// ```
pub struct Monitor {
    control: Arc<Control>,
    signal: LoadSignal,
    task: Option<JoinHandle<()>>,
}

/// Everything the tick needs; owned by the [`Monitor`], weakly referenced by its task.
struct Control {
    recorder: Arc<Recorder>,
    publisher: LoadPublisher,
    probe: QueueProbe,
    sources: Vec<Box<dyn PressureSource>>,
    latency_objective: Option<Duration>,
    min_latency_samples: u64,
    min_error_samples: u64,
    interval: Duration,
    state: Mutex<TickState>,
    metrics: OnceLock<MonitorMetrics>,
}

/// What a tick computes and a snapshot reads. Never touched by the request path.
struct TickState {
    detector: Detector,
    counts: HistogramCounts,
    signals: Signals,
    quantiles: Quantiles,
    queue: QueueWindow,
    completed: u64,
    failures: u64,
    cancelled: u64,
    in_flight: usize,
    /// `finished` over all stripes at the previous tick.
    finished_total: u64,
    /// One request in this many was timed during the last interval.
    sample_every: u32,
    transitions: VecDeque<Transition>,
    capacity: usize,
    ticks: u64,
    last_tick: Option<Instant>,
}

impl Monitor {
    /// A builder with the documented defaults.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::new()
    }

    pub(crate) fn from_validated(config: Validated) -> Result<Monitor, ConfigError> {
        let runtime = if config.manual_ticks {
            None
        } else {
            Some(tokio::runtime::Handle::try_current().map_err(|_| {
                ConfigError::new(
                    "runtime",
                    "Monitor::build must run inside a tokio runtime (or use manual_ticks)",
                )
            })?)
        };
        let initial = config.detector.initial;
        let (publisher, signal) = LoadSignal::channel(initial);
        let pressure = vec![None; config.sources.len()];
        let now = Instant::now();
        let control = Arc::new(Control {
            recorder: Arc::new(Recorder::new(
                config.shards,
                config.clock,
                SampleRate::new(config.max_sample_every, config.sample_target),
            )),
            publisher,
            probe: config.probe,
            sources: config.sources,
            latency_objective: config.latency_objective,
            min_latency_samples: config.min_latency_samples,
            min_error_samples: config.min_error_samples,
            interval: config.interval,
            state: Mutex::new(TickState {
                detector: Detector::new(config.detector, now),
                counts: HistogramCounts::new(),
                signals: Signals {
                    pressure,
                    ..Signals::default()
                },
                quantiles: Quantiles::default(),
                queue: QueueWindow::default(),
                completed: 0,
                failures: 0,
                cancelled: 0,
                in_flight: 0,
                finished_total: 0,
                sample_every: 1,
                transitions: VecDeque::with_capacity(config.transitions),
                capacity: config.transitions,
                ticks: 0,
                last_tick: None,
            }),
            metrics: OnceLock::new(),
        });
        metrics::gauge!(telemetry::LEVEL).set(f64::from(initial.as_u8()));
        let task = runtime.map(|handle| {
            let weak = Arc::downgrade(&control);
            handle.spawn(drive(weak, config.interval))
        });
        Ok(Monitor {
            control,
            signal,
            task,
        })
    }

    /// A layer whose services feed this monitor (outcomes classified by
    /// [`ErrIsFailure`]; use [`MonitorLayer::with_classifier`] for others).
    pub fn layer(&self) -> MonitorLayer<ErrIsFailure> {
        MonitorLayer {
            recorder: self.control.recorder.clone(),
            classifier: ErrIsFailure,
        }
    }

    /// A layer for http services: like [`layer`](Monitor::layer), with 5xx responses counted
    /// as failures, 4xx not, and brownout's refusal answers neither ([`HttpOutcome`]).
    pub fn http_layer(&self) -> MonitorLayer<HttpOutcome> {
        self.layer().with_classifier(HttpOutcome)
    }

    /// A reader of the level this monitor publishes.
    pub fn signal(&self) -> LoadSignal {
        self.signal.clone()
    }

    /// The publisher of the level, for operator overrides
    /// ([`force`](LoadPublisher::force) / [`release`](LoadPublisher::release)).
    ///
    /// Holding a clone keeps readers' [`changed`](LoadSignal::changed) open after the
    /// monitor is dropped.
    pub fn publisher(&self) -> LoadPublisher {
        self.control.publisher.clone()
    }

    /// The probe the admission layer feeds with queueing delay and depth.
    pub fn queue_probe(&self) -> QueueProbe {
        self.control.probe.clone()
    }

    /// The tick interval.
    pub fn interval(&self) -> Duration {
        self.control.interval
    }

    /// One request in this many is timed now (1 while the service is quiet; adapted at each
    /// tick, see [`MonitorBuilder::max_sample_every`]).
    pub fn sample_every(&self) -> u32 {
        self.control.recorder.rate.every()
    }

    /// Runs one tick now (drain the measurements, update the detector, publish), in addition
    /// to the background ones, and returns the level the detector settled on (which an
    /// operator override may mask; see [`LoadSignal::level`]).
    ///
    /// Cheap (a few microseconds), synchronous and deterministic under paused tokio time:
    /// meant for simulations and tests, typically with
    /// [`manual_ticks`](MonitorBuilder::manual_ticks).
    pub fn tick_now(&self) -> LoadLevel {
        self.control.tick(Instant::now())
    }

    /// The current state, for health and metrics endpoints.
    pub fn snapshot(&self) -> Snapshot {
        self.control.snapshot(&self.signal)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // The task would also end at its next tick (it holds only a weak reference); abort it
        // so it does not even wake up once more.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("level", &self.signal.level())
            .field("interval", &self.control.interval)
            .field("background_task", &self.task.is_some())
            .field("record_shards", &self.control.recorder.shards())
            .finish_non_exhaustive()
    }
}

/// Timed completions kept per interval, as a multiple of `min_latency_samples` (at most the
/// sample target): enough that the p95 stays available when the rate is set by rejections.
const COMPLETION_SAMPLE_FLOOR: u64 = 4;

/// The request count [`SampleRate::adapt`] sets the next interval's rate from.
///
/// The monitor pays its clock reads at `call`, before it knows whether the request will be
/// rejected further in, so the rate follows every request it saw finish (`seen`: completed,
/// rejected and cancelled), aiming at `target` timed requests per interval. Latency comes only
/// from *completed* requests, so when most of them are rejections the rate is capped to keep
/// at least `floor = min(target, 4 × min_latency_samples)` timed completions (all of them
/// when fewer complete). Without rejections or cancellations (`seen == completed`) this is
/// exactly `completed`: the rate is unchanged from sampling completions alone.
pub(crate) fn sample_basis(
    seen: u64,
    completed: u64,
    min_latency_samples: u64,
    target: u64,
) -> u64 {
    let target = target.max(1);
    if completed == 0 {
        // Nothing to time for latency: only the clock reads of rejected requests to save.
        return seen;
    }
    let floor = min_latency_samples
        .saturating_mul(COMPLETION_SAMPLE_FLOOR)
        .clamp(1, target);
    let most_every = (completed / floor).max(1);
    seen.min(most_every.saturating_mul(target))
}

/// The background task: ticks until the monitor is gone.
async fn drive(control: Weak<Control>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(control) = control.upgrade() else {
            return;
        };
        control.tick(Instant::now());
    }
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, TickState> {
        // A panic inside a tick leaves counters, not invariants, half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tick(&self, now: Instant) -> LoadLevel {
        let mut state = self.lock();
        let state = &mut *state;
        let recorder = &self.recorder;

        let drained = recorder.drain(&mut state.counts);
        let samples = state.counts.count();
        let finished = drained.finished_total.wrapping_sub(state.finished_total);
        state.finished_total = drained.finished_total;
        // A request may finish between the counter reads: never below the samples taken.
        let completed = finished.saturating_sub(drained.cancelled).max(samples);
        let failures = drained.failures;
        state.cancelled = drained.cancelled;
        state.in_flight = drained.in_flight;
        state.completed = completed;
        state.failures = failures;
        state.quantiles = state.counts.quantiles();
        state.queue = self.probe.drain();
        // The rate the samples of this interval were taken at, then the next one: from every
        // request seen (a flood of rejections completes none but is timed all the same),
        // keeping enough timed completions for the latency signal.
        state.sample_every = recorder.rate.every();
        recorder.rate.adapt(sample_basis(
            finished.saturating_add(drained.rejected).max(completed),
            completed,
            self.min_latency_samples,
            recorder.rate.target(),
        ));

        let signals = &mut state.signals;
        signals.latency_p95 = match self.latency_objective {
            Some(_) if samples >= self.min_latency_samples => state.quantiles.p95,
            _ => None,
        };
        signals.queue_delay = (state.queue.samples > 0).then_some(state.queue.mean_delay);
        signals.queue_depth = Some(state.queue.depth);
        signals.error_rate = (completed >= self.min_error_samples)
            // A failure may complete between the histogram drain and the counter swap.
            .then(|| (failures.min(completed) as f64) / completed as f64);
        signals.in_flight = Some(state.in_flight);
        for (slot, source) in signals.pressure.iter_mut().zip(&self.sources) {
            *slot = source.sample();
        }

        let before = state.detector.level();
        let level = state.detector.update(&state.signals, now);
        if level != before {
            self.publisher.publish(level);
            if let Some(transition) = state.detector.last_transition() {
                tracing::info!(
                    from = %transition.from,
                    to = %transition.to,
                    cause = %transition.cause,
                    "brownout level changed"
                );
                metrics::counter!(
                    telemetry::LEVEL_CHANGES_TOTAL,
                    "from" => transition.from.as_str(),
                    "to" => transition.to.as_str(),
                )
                .increment(1);
                if state.transitions.len() == state.capacity {
                    state.transitions.pop_front();
                }
                state.transitions.push_back(transition.clone());
            }
        }
        state.ticks += 1;
        state.last_tick = Some(now);

        let metrics = self.metrics.get_or_init(MonitorMetrics::register);
        metrics.level.set(f64::from(self.publisher.level().as_u8()));
        metrics.in_flight.set(state.in_flight as f64);
        metrics.queue_depth.set(state.queue.depth as f64);
        if state.queue.samples > 0 {
            metrics
                .queue_delay
                .record(state.queue.mean_delay.as_secs_f64());
        }
        // The interval's timed requests, one `record_many` per non-empty bucket (at the
        // bucket's midpoint, within 1.6 %): the request path never touches the recorder.
        for (latency, count) in state.counts.buckets() {
            metrics.latency.record_many(
                latency.as_secs_f64(),
                usize::try_from(count).unwrap_or(usize::MAX),
            );
        }
        let quantiles = [
            state.quantiles.p50,
            state.quantiles.p95,
            state.quantiles.p99,
        ];
        for (gauge, value) in metrics.quantiles.iter().zip(quantiles) {
            if let Some(value) = value {
                gauge.set(value.as_secs_f64());
            }
        }
        metrics.sample_every.set(f64::from(state.sample_every));
        level
    }

    fn snapshot(&self, signal: &LoadSignal) -> Snapshot {
        let state = self.lock();
        Snapshot {
            level: signal.level(),
            detected: state.detector.level(),
            since: state.detector.since(),
            forced: self.publisher.forced(),
            signals: state.detector.readings().to_vec(),
            in_flight: self.recorder.in_flight(),
            latency: state.quantiles,
            completed: state.completed,
            sample_every: state.sample_every,
            failures: state.failures,
            cancelled: state.cancelled,
            queue: state.queue,
            transitions: state.transitions.iter().cloned().collect(),
            ticks: state.ticks,
            last_tick: state.last_tick,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sample_basis;
    use brownout_core::clock::SampleRate;
    use proptest::prelude::*;

    /// The `every` a basis gives with the default rate (at most 1 in 64, 256 per interval).
    fn every(seen: u64, completed: u64) -> u32 {
        SampleRate::default().adapt(sample_basis(seen, completed, 5, 256))
    }

    #[test]
    fn a_rejection_flood_is_sampled_like_completions() {
        // 10 000 requests per interval, none completed: one in 39, as 10 000 completions.
        assert_eq!(every(10_000, 0), 39);
        assert_eq!(every(10_000, 10_000), 39);
        // Mostly rejected, 1 000 completed: about 20 completions stay timed.
        let e = every(11_000, 1_000);
        assert_eq!(e, 42);
        assert!(1_000 / u64::from(e) >= 20);
        // Few completions: all of them timed, rejections included.
        assert_eq!(every(10_000, 30), 1);
    }

    proptest! {
        #[test]
        fn without_rejections_the_rate_is_the_completions_rate(
            completed in 0u64..10_000_000,
            min in 1u64..1_000,
            target in 1u64..10_000,
        ) {
            let rate = SampleRate::new(u32::MAX, target);
            let old = rate.adapt(completed);
            prop_assert_eq!(rate.adapt(sample_basis(completed, completed, min, target)), old);
        }

        #[test]
        fn enough_completions_stay_timed(
            seen_extra in 0u64..10_000_000,
            completed in 1u64..1_000_000,
            min in 1u64..100,
            target in 1u64..10_000,
        ) {
            let rate = SampleRate::new(u32::MAX, target);
            let every = u64::from(rate.adapt(sample_basis(completed + seen_extra, completed, min, target)));
            let floor = (min * 4).min(target);
            // At least `floor` timed completions, or every completion when fewer.
            prop_assert!(completed / every >= floor.min(completed) || every == 1);
        }
    }
}
