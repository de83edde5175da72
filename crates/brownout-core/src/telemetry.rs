//! Metric names, their descriptions, and pre-registered decision counters shared by every
//! layer.
//!
//! Every admit/reject decision is counted through the [`metrics`] facade. Counters are
//! registered lazily, once per (outcome, reason, class, level) combination, so the hot path
//! is an atomic load and an increment: no key building, no allocation.
//!
//! | metric | kind | unit | labels |
//! |---|---|---|---|
//! | `brownout_requests_total` | counter | count | `layer`, \[`name`\], `outcome` (`admitted`/`rejected`), `priority`, `level` |
//! | `brownout_rejections_total` | counter | count | `layer`, \[`name`\], `reason`, `priority`, `level` |
//! | `brownout_level` | gauge | — | — (0 Normal … 4 Emergency) |
//! | `brownout_level_changes_total` | counter | count | `from`, `to` |
//! | `brownout_in_flight` | gauge | count | `layer`, \[`name`\] |
//! | `brownout_queue_depth` | gauge | count | `layer`, \[`name`\] |
//! | `brownout_queue_delay_seconds` | histogram | seconds | `layer`, \[`name`\] |
//! | `brownout_latency_seconds` | histogram | seconds | `layer`, \[`name`\] |
//! | `brownout_latency_quantile_seconds` | gauge | seconds | `layer`, `quantile` (`0.5`, `0.95`, `0.99`) |
//! | `brownout_latency_sample_every` | gauge | — | `layer` (one request in this many is timed) |
//! | `brownout_breaker_state` | gauge | — | `breaker` (0 closed, 1 half-open, 2 open) |
//! | `brownout_concurrency_limit` | gauge | count | `layer`, \[`name`\] |
//! | `brownout_timeout_seconds` | gauge | seconds | `layer`, \[`name`\] |
//! | `brownout_retry_budget` | gauge | count | `layer`, \[`name`\] |
//! | `brownout_shutdown_phase` | gauge | — | — (0 running, 1 draining, 2 terminated) |
//!
//! `name` is present only for a layer instance built with a name
//! ([`DecisionMetrics::named`]), so two instances of one layer type (per-route limits, two
//! breakers) can be told apart; unnamed instances carry only `layer`, as before.
//!
//! Call [`describe`] once, after installing a recorder, to give every metric its `# HELP`
//! text and unit:
//!
//! ```
//! // let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! brownout_core::telemetry::describe();
//! ```

use std::fmt;
use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, Label, SharedString, Unit, counter, describe_counter,
    describe_gauge, describe_histogram, gauge, histogram,
};

use crate::{LoadLevel, Priority, RejectReason, Rejected};

/// `brownout_requests_total{layer, [name], outcome, priority, level}`.
pub const REQUESTS_TOTAL: &str = "brownout_requests_total";
/// `brownout_rejections_total{layer, [name], reason, priority, level}`.
pub const REJECTIONS_TOTAL: &str = "brownout_rejections_total";
/// `brownout_level`: the current level as a number.
pub const LEVEL: &str = "brownout_level";
/// `brownout_level_changes_total{from, to}`.
pub const LEVEL_CHANGES_TOTAL: &str = "brownout_level_changes_total";
/// `brownout_in_flight{layer, [name]}`.
pub const IN_FLIGHT: &str = "brownout_in_flight";
/// `brownout_queue_depth{layer, [name]}`.
pub const QUEUE_DEPTH: &str = "brownout_queue_depth";
/// `brownout_queue_delay_seconds{layer, [name]}`.
pub const QUEUE_DELAY_SECONDS: &str = "brownout_queue_delay_seconds";
/// `brownout_latency_seconds{layer, [name]}`.
pub const LATENCY_SECONDS: &str = "brownout_latency_seconds";
/// `brownout_latency_quantile_seconds{layer, quantile}`: p50 / p95 / p99 of the last
/// interval's latency, set at each monitor tick.
pub const LATENCY_QUANTILE_SECONDS: &str = "brownout_latency_quantile_seconds";
/// `brownout_latency_sample_every{layer}`: one request in this many is timed.
pub const LATENCY_SAMPLE_EVERY: &str = "brownout_latency_sample_every";
/// `brownout_breaker_state{breaker}`: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "brownout_breaker_state";
/// `brownout_concurrency_limit{layer, [name]}`: the (adaptive) concurrency limit now.
pub const CONCURRENCY_LIMIT: &str = "brownout_concurrency_limit";
/// `brownout_timeout_seconds{layer, [name]}`: the (adaptive) timeout applied now.
pub const TIMEOUT_SECONDS: &str = "brownout_timeout_seconds";
/// `brownout_retry_budget{layer}`: retries the budget would allow now (set at each bucket step).
pub const RETRY_BUDGET: &str = "brownout_retry_budget";
/// `brownout_shutdown_phase{layer}`: 0 running, 1 draining, 2 terminated.
pub const SHUTDOWN_PHASE: &str = "brownout_shutdown_phase";

/// The label naming the layer type (`shed`, `admission`, …).
pub const LAYER_LABEL: &str = "layer";
/// The label naming one instance of a layer (only on named instances).
pub const NAME_LABEL: &str = "name";
/// The label `admitted` / `rejected` on [`REQUESTS_TOTAL`].
pub const OUTCOME_LABEL: &str = "outcome";
/// The label holding the request class (`critical` … `background`, `unknown`).
pub const PRIORITY_LABEL: &str = "priority";
/// The label holding the level the layer read when it decided.
pub const LEVEL_LABEL: &str = "level";
/// The label holding the [`RejectReason`] on [`REJECTIONS_TOTAL`].
pub const REASON_LABEL: &str = "reason";
/// The label naming a breaker on [`BREAKER_STATE`].
pub const BREAKER_LABEL: &str = "breaker";

/// Every metric name this module defines, in table order.
pub const ALL: [&str; 15] = [
    REQUESTS_TOTAL,
    REJECTIONS_TOTAL,
    LEVEL,
    LEVEL_CHANGES_TOTAL,
    IN_FLIGHT,
    QUEUE_DEPTH,
    QUEUE_DELAY_SECONDS,
    LATENCY_SECONDS,
    LATENCY_QUANTILE_SECONDS,
    LATENCY_SAMPLE_EVERY,
    BREAKER_STATE,
    CONCURRENCY_LIMIT,
    TIMEOUT_SECONDS,
    RETRY_BUDGET,
    SHUTDOWN_PHASE,
];

/// Registers the help text and unit of every brownout metric with the installed recorder
/// (the `# HELP` lines of a Prometheus exposition).
///
/// Call it once, after installing the recorder (descriptions go to the recorder installed
/// at the time of the call); calling it again is harmless. Without a recorder it does
/// nothing.
pub fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests decided by a brownout layer, by layer, outcome (admitted/rejected), priority class and the load level the layer read."
    );
    describe_counter!(
        REJECTIONS_TOTAL,
        Unit::Count,
        "Requests refused by a brownout layer, by layer, reason, priority class and load level."
    );
    describe_gauge!(
        LEVEL,
        "Current load level: 0 normal, 1 elevated, 2 high, 3 critical, 4 emergency."
    );
    describe_counter!(
        LEVEL_CHANGES_TOTAL,
        Unit::Count,
        "Load level transitions of the detector, by from and to level."
    );
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Requests inside a layer (started, not finished)."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Requests waiting in an admission queue."
    );
    describe_histogram!(
        QUEUE_DELAY_SECONDS,
        Unit::Seconds,
        "Time requests waited in an admission queue before they were served."
    );
    describe_histogram!(
        LATENCY_SECONDS,
        Unit::Seconds,
        "Latency of the requests a layer measured."
    );
    describe_gauge!(
        LATENCY_QUANTILE_SECONDS,
        Unit::Seconds,
        "Latency quantile (0.5, 0.95, 0.99) of the requests the monitor timed in its last interval."
    );
    describe_gauge!(
        LATENCY_SAMPLE_EVERY,
        "One request in this many is timed by the monitor (adapts to the request rate)."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        Unit::Count,
        "Current (adaptive) concurrency limit of an admission layer."
    );
    describe_gauge!(
        TIMEOUT_SECONDS,
        Unit::Seconds,
        "Current (adaptive) timeout applied by a timeout layer."
    );
    describe_gauge!(
        RETRY_BUDGET,
        Unit::Count,
        "Retries the retry budget would allow now."
    );
    describe_gauge!(
        SHUTDOWN_PHASE,
        "Shutdown phase: 0 running, 1 draining, 2 terminated."
    );
}

const CLASSES: usize = Priority::COUNT + 1; // + "unknown"
const LEVELS: usize = LoadLevel::COUNT;
const REASONS: usize = RejectReason::ALL.len();

fn priority_label(index: usize) -> &'static str {
    Priority::from_rank(index as u8).map_or("unknown", Priority::as_str)
}

#[inline]
fn priority_index(priority: Option<Priority>) -> usize {
    priority.map_or(Priority::COUNT, Priority::index)
}

#[inline]
fn reason_index(reason: RejectReason) -> usize {
    RejectReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
}

/// The decision counters of one layer (`layer` label), shared by all its clones.
///
/// ```
/// use brownout_core::{telemetry::DecisionMetrics, LoadLevel, Priority, RejectReason, Rejected};
///
/// let metrics = DecisionMetrics::new("shed");
/// metrics.admitted(Some(Priority::High), LoadLevel::Normal);
/// metrics.rejected(&Rejected::new(RejectReason::Shed, LoadLevel::High).with_priority(Priority::Low));
/// ```
pub struct DecisionMetrics {
    layer: &'static str,
    name: Option<SharedString>,
    admitted: [OnceLock<Counter>; CLASSES * LEVELS],
    rejected_requests: [OnceLock<Counter>; CLASSES * LEVELS],
    rejections: [OnceLock<Counter>; REASONS * CLASSES * LEVELS],
}

impl DecisionMetrics {
    /// Counters labelled `layer = layer`.
    pub fn new(layer: &'static str) -> DecisionMetrics {
        DecisionMetrics::with_name(layer, None)
    }

    /// Counters labelled `layer = layer` and `name = name`, for one named instance of a
    /// layer (e.g. the admission layer of one route), so its series are not summed with the
    /// other instances of the same layer type.
    ///
    /// The name is copied into each series once, when it is first registered; counting
    /// stays allocation-free.
    ///
    /// ```
    /// use brownout_core::telemetry::DecisionMetrics;
    ///
    /// let reports = DecisionMetrics::named("admission", "reports");
    /// assert_eq!(reports.name(), Some("reports"));
    /// assert_eq!(reports.labels().len(), 2);
    /// ```
    pub fn named(layer: &'static str, name: impl Into<SharedString>) -> DecisionMetrics {
        DecisionMetrics::with_name(layer, Some(name.into()))
    }

    fn with_name(layer: &'static str, name: Option<SharedString>) -> DecisionMetrics {
        DecisionMetrics {
            layer,
            name,
            admitted: std::array::from_fn(|_| OnceLock::new()),
            rejected_requests: std::array::from_fn(|_| OnceLock::new()),
            rejections: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The `layer` label.
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The `name` label, for a named instance.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The labels that identify this layer instance: `layer`, and `name` when named. Use
    /// them for the layer's own gauges and histograms (or see [`gauge`](Self::gauge) and
    /// [`histogram`](Self::histogram)).
    pub fn labels(&self) -> Vec<Label> {
        let mut labels = Vec::with_capacity(5);
        labels.push(Label::from_static_parts(LAYER_LABEL, self.layer));
        if let Some(name) = &self.name {
            labels.push(Label::new(NAME_LABEL, name.clone()));
        }
        labels
    }

    /// A gauge `metric{layer, [name]}` for this layer instance (e.g. [`IN_FLIGHT`],
    /// [`QUEUE_DEPTH`], [`CONCURRENCY_LIMIT`]). Register it once (at build) and keep the
    /// handle; it binds to the recorder installed at the time of the call.
    pub fn gauge(&self, metric: &'static str) -> Gauge {
        gauge!(metric, self.labels())
    }

    /// A histogram `metric{layer, [name]}` for this layer instance (e.g.
    /// [`QUEUE_DELAY_SECONDS`], [`LATENCY_SECONDS`]). Register it once and keep the handle.
    pub fn histogram(&self, metric: &'static str) -> Histogram {
        histogram!(metric, self.labels())
    }

    /// Counts one admitted request.
    #[inline]
    pub fn admitted(&self, priority: Option<Priority>, level: LoadLevel) {
        let p = priority_index(priority);
        let l = level.index();
        self.admitted[p * LEVELS + l]
            .get_or_init(|| self.request_counter("admitted", p, l))
            .increment(1);
    }

    /// Counts one rejection (in both the requests and the rejections counters).
    #[inline]
    pub fn rejected(&self, rejected: &Rejected) {
        let p = priority_index(rejected.priority());
        let l = rejected.level().index();
        let r = reason_index(rejected.reason());
        self.rejected_requests[p * LEVELS + l]
            .get_or_init(|| self.request_counter("rejected", p, l))
            .increment(1);
        self.rejections[(r * CLASSES + p) * LEVELS + l]
            .get_or_init(|| {
                let mut labels = self.labels();
                labels.push(Label::from_static_parts(
                    REASON_LABEL,
                    RejectReason::ALL[r].as_str(),
                ));
                labels.push(Label::from_static_parts(PRIORITY_LABEL, priority_label(p)));
                labels.push(Label::from_static_parts(
                    LEVEL_LABEL,
                    LoadLevel::ALL[l].as_str(),
                ));
                counter!(REJECTIONS_TOTAL, labels)
            })
            .increment(1);
    }

    fn request_counter(&self, outcome: &'static str, p: usize, l: usize) -> Counter {
        let mut labels = self.labels();
        labels.push(Label::from_static_parts(OUTCOME_LABEL, outcome));
        labels.push(Label::from_static_parts(PRIORITY_LABEL, priority_label(p)));
        labels.push(Label::from_static_parts(
            LEVEL_LABEL,
            LoadLevel::ALL[l].as_str(),
        ));
        counter!(REQUESTS_TOTAL, labels)
    }
}

impl fmt::Debug for DecisionMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionMetrics")
            .field("layer", &self.layer)
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_cover_every_combination() {
        let m = DecisionMetrics::new("test");
        for level in LoadLevel::ALL {
            for p in Priority::ALL.map(Some).into_iter().chain([None]) {
                m.admitted(p, level);
                for reason in RejectReason::ALL {
                    let mut r = Rejected::new(reason, level);
                    if let Some(p) = p {
                        r = r.with_priority(p);
                    }
                    m.rejected(&r);
                }
            }
        }
        assert_eq!(m.layer(), "test");
        assert_eq!(priority_label(Priority::COUNT), "unknown");
    }

    use std::sync::Mutex;

    use metrics::{Key, KeyName, Metadata, Recorder};

    /// Remembers every description and every registered key.
    #[derive(Default)]
    struct Capture {
        described: Mutex<Vec<(String, Option<Unit>, String)>>,
        registered: Mutex<Vec<Key>>,
    }

    impl Capture {
        fn describe(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            let mut described = self.described.lock().unwrap();
            described.push((key.as_str().to_owned(), unit, help.into_owned()));
        }

        fn register(&self, key: &Key) {
            self.registered.lock().unwrap().push(key.clone());
        }

        fn labels_of(&self, metric: &str) -> Vec<Vec<(String, String)>> {
            let registered = self.registered.lock().unwrap();
            registered
                .iter()
                .filter(|k| k.name() == metric)
                .map(|k| {
                    k.labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect()
                })
                .collect()
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(key, unit, help);
        }
        fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(key, unit, help);
        }
        fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
            self.describe(key, unit, help);
        }
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.register(key);
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.register(key);
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.register(key);
            Histogram::noop()
        }
    }

    fn pairs(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn describe_gives_every_metric_help_text_and_seconds_units_where_timed() {
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, describe);
        let described = capture.described.lock().unwrap();
        for name in ALL {
            let (_, unit, help) = described
                .iter()
                .find(|(n, _, _)| n == name)
                .unwrap_or_else(|| panic!("{name} not described"));
            assert!(!help.is_empty(), "{name}");
            if name.ends_with("_seconds") {
                assert_eq!(*unit, Some(Unit::Seconds), "{name}");
            }
            if name.ends_with("_total") {
                assert_eq!(*unit, Some(Unit::Count), "{name}");
            }
        }
        assert_eq!(described.len(), ALL.len());
    }

    #[test]
    fn unnamed_counters_keep_their_labels() {
        let capture = Capture::default();
        let m = DecisionMetrics::new("shed");
        metrics::with_local_recorder(&capture, || {
            m.admitted(Some(Priority::High), LoadLevel::Normal);
            m.rejected(
                &Rejected::new(RejectReason::Shed, LoadLevel::High).with_priority(Priority::Low),
            );
        });
        assert_eq!(m.name(), None);
        assert_eq!(
            capture.labels_of(REQUESTS_TOTAL),
            vec![
                pairs(&[
                    ("layer", "shed"),
                    ("outcome", "admitted"),
                    ("priority", "high"),
                    ("level", "normal"),
                ]),
                pairs(&[
                    ("layer", "shed"),
                    ("outcome", "rejected"),
                    ("priority", "low"),
                    ("level", "high"),
                ]),
            ]
        );
        assert_eq!(
            capture.labels_of(REJECTIONS_TOTAL),
            vec![pairs(&[
                ("layer", "shed"),
                ("reason", "shed"),
                ("priority", "low"),
                ("level", "high"),
            ])]
        );
    }

    #[test]
    fn named_instances_add_a_name_label_to_every_series() {
        let capture = Capture::default();
        let m = DecisionMetrics::named("admission", String::from("reports"));
        metrics::with_local_recorder(&capture, || {
            m.admitted(None, LoadLevel::Critical);
            m.admitted(None, LoadLevel::Critical); // cached: registered once
            m.rejected(&Rejected::new(RejectReason::QueueFull, LoadLevel::Critical));
            let _in_flight = m.gauge(IN_FLIGHT);
            let _delay = m.histogram(QUEUE_DELAY_SECONDS);
        });
        assert_eq!(m.name(), Some("reports"));
        let requests = capture.labels_of(REQUESTS_TOTAL);
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0],
            pairs(&[
                ("layer", "admission"),
                ("name", "reports"),
                ("outcome", "admitted"),
                ("priority", "unknown"),
                ("level", "critical"),
            ])
        );
        assert_eq!(
            capture.labels_of(REJECTIONS_TOTAL)[0],
            pairs(&[
                ("layer", "admission"),
                ("name", "reports"),
                ("reason", "queue_full"),
                ("priority", "unknown"),
                ("level", "critical"),
            ])
        );
        let instance = pairs(&[("layer", "admission"), ("name", "reports")]);
        assert_eq!(capture.labels_of(IN_FLIGHT), vec![instance.clone()]);
        assert_eq!(capture.labels_of(QUEUE_DELAY_SECONDS), vec![instance]);
    }
}
