//! The admission layer's gauges and queueing-delay histogram (issue #6), read back through a
//! capturing `metrics` recorder installed for the test's thread.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brownout_admission::{Limit, QueueTimeout};
use brownout_core::Priority;
use brownout_core::telemetry::{IN_FLIGHT, QUEUE_DELAY_SECONDS, QUEUE_DEPTH};
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use support::*;
use tower::{Layer, Service, ServiceExt};

type Series = Arc<Mutex<HashMap<String, Vec<f64>>>>;

/// Keeps every value each gauge was set to and every histogram sample, by series.
#[derive(Clone, Default)]
struct Capture {
    series: Series,
}

fn series_name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

struct Values(String, Series);

impl Values {
    fn push(&self, value: f64) {
        let mut series = self.1.lock().unwrap();
        series.entry(self.0.clone()).or_default().push(value);
    }
}

impl GaugeFn for Values {
    fn increment(&self, _: f64) {
        unreachable!("the admission gauges are set, never incremented");
    }
    fn decrement(&self, _: f64) {
        unreachable!("the admission gauges are set, never decremented");
    }
    fn set(&self, value: f64) {
        self.push(value);
    }
}

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.push(value);
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Values(series_name(key), Arc::clone(&self.series))))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Values(series_name(key), Arc::clone(&self.series))))
    }
}

impl Capture {
    fn values(&self, metric: &str, labels: &str) -> Vec<f64> {
        let name = format!("{metric}{{{labels}}}");
        let series = self.series.lock().unwrap();
        series.get(&name).cloned().unwrap_or_default()
    }

    fn last(&self, metric: &str, labels: &str) -> Option<f64> {
        self.values(metric, labels).last().copied()
    }
}

#[tokio::test(start_paused = true)]
async fn gauges_and_queue_delay_follow_admit_queue_and_release() {
    let capture = Capture::default();
    let _guard = metrics::set_default_local_recorder(&capture);
    let backend = Backend::default();
    let layer = builder()
        .limit(Limit::fixed(1))
        .queue_timeout(QueueTimeout::fixed(Duration::from_secs(10)))
        .name("reports")
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let high = "layer=admission,name=reports,priority=high";
    let low = "layer=admission,name=reports,priority=low";

    let first = tokio::spawn(svc.ready().await.unwrap().call(job(1, Priority::High)));
    settle().await;
    assert_eq!(capture.last(IN_FLIGHT, high), Some(1.0));
    assert_eq!(capture.values(QUEUE_DELAY_SECONDS, high), [0.0]);

    let second = tokio::spawn(svc.ready().await.unwrap().call(job(2, Priority::Low)));
    settle().await;
    assert_eq!(capture.last(QUEUE_DEPTH, low), Some(1.0));
    assert_eq!(capture.last(IN_FLIGHT, low), None, "not admitted yet");

    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(backend.complete(1));
    assert_eq!(first.await.unwrap().unwrap(), 1);
    settle().await;
    assert_eq!(capture.last(IN_FLIGHT, high), Some(0.0));
    assert_eq!(capture.last(QUEUE_DEPTH, low), Some(0.0));
    assert_eq!(capture.last(IN_FLIGHT, low), Some(1.0));
    assert_eq!(capture.values(QUEUE_DELAY_SECONDS, low), [0.030]);

    assert!(backend.complete(2));
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(capture.last(IN_FLIGHT, low), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn unnamed_layer_is_labelled_by_layer_and_priority_and_timeouts_record_their_wait() {
    let capture = Capture::default();
    let _guard = metrics::set_default_local_recorder(&capture);
    let backend = Backend::default();
    let layer = builder()
        .limit(Limit::fixed(1))
        .queue_timeout(QueueTimeout::fixed(Duration::from_millis(50)))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let _running = tokio::spawn(svc.ready().await.unwrap().call(job(1, Priority::Medium)));
    settle().await;
    let waiting = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(job(2, Priority::Background)),
    );
    settle().await;
    assert!(waiting.await.unwrap().is_err(), "timed out in the queue");
    let background = "layer=admission,priority=background";
    assert_eq!(capture.values(QUEUE_DEPTH, background), [1.0, 0.0]);
    assert_eq!(capture.values(QUEUE_DELAY_SECONDS, background), [0.050]);
    assert_eq!(
        capture.last(IN_FLIGHT, "layer=admission,priority=medium"),
        Some(1.0)
    );
}
