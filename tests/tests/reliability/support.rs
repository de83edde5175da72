//! Helpers shared by the reliability groups: requests, a controllable backend, a streaming
//! body, a waker that counts its wake-ups, and response inspection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use brownout::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, mpsc};
use tower::Service;

/// A GET request with an `x-priority` header and a `String` body.
pub(crate) fn get(priority: &str) -> http::Request<String> {
    http::Request::get("/")
        .header("x-priority", priority)
        .body(String::new())
        .unwrap()
}

/// The status of every response in `responses`, in order.
pub(crate) fn statuses<B>(responses: &[http::Response<B>]) -> Vec<u16> {
    responses.iter().map(|r| r.status().as_u16()).collect()
}

/// The reason word a brownout rejection body starts with (`shed`, `queue_full`, …).
pub(crate) fn reason(response: &http::Response<String>) -> &str {
    response.body().split(':').next().unwrap_or_default()
}

/// Counts requests inside the handler and remembers the peak.
#[derive(Clone, Default)]
pub(crate) struct Gauge {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Gauge {
    pub(crate) fn enter(&self) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.now.clone())
    }

    pub(crate) fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

pub(crate) struct GaugeGuard(Arc<AtomicUsize>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the [`Backend`] does with a request, chosen by its `x-mode` header.
///
/// - `ok` (or none): answers 200 at once;
/// - `fail`: fails with an error (a broken dependency);
/// - `status-500`: answers 500;
/// - `hold`: waits until [`Backend::release`] is called, then answers 200;
/// - `sleep-N`: answers 200 after N ms;
/// - `panic`: panics.
///
/// The `x-id` header of every call is logged ([`Backend::served`]).
#[derive(Clone, Default)]
pub(crate) struct Backend {
    gauge: Gauge,
    gate: Arc<Notify>,
    held: Arc<AtomicUsize>,
    served: Log<String>,
}

impl Backend {
    /// Lets `n` held requests finish (in arrival order of their wait).
    pub(crate) fn release(&self, n: usize) {
        for _ in 0..n {
            self.gate.notify_one();
        }
    }

    /// Requests waiting on the gate now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub(crate) fn gauge(&self) -> &Gauge {
        &self.gauge
    }

    /// The `x-id` of every request the backend was called with, in call order.
    pub(crate) fn served(&self) -> Vec<String> {
        self.served.items()
    }

    /// Calls of the backend so far.
    pub(crate) fn calls(&self) -> usize {
        self.gauge.total()
    }
}

impl Service<http::Request<String>> for Backend {
    type Response = http::Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<String>) -> Self::Future {
        let mode = req
            .headers()
            .get("x-mode")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("ok")
            .to_owned();
        if let Some(id) = req.headers().get("x-id").and_then(|v| v.to_str().ok()) {
            self.served.push(id.to_owned());
        }
        let this = self.clone();
        Box::pin(async move {
            let _inside = this.gauge.enter();
            match mode.as_str() {
                "fail" => Err::<_, BoxError>("dependency down".into()),
                "status-500" => Ok(http::Response::builder()
                    .status(500)
                    .body("broken".to_owned())
                    .unwrap()),
                "panic" => panic!("handler bug"),
                "hold" => {
                    this.held.fetch_add(1, Ordering::SeqCst);
                    let guard = HeldGuard(this.held.clone());
                    this.gate.notified().await;
                    drop(guard);
                    Ok(http::Response::new("released".to_owned()))
                }
                sleep if sleep.starts_with("sleep-") => {
                    let ms: u64 = sleep["sleep-".len()..].parse().unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    Ok(http::Response::new("slept".to_owned()))
                }
                _ => Ok(http::Response::new("ok".to_owned())),
            }
        })
    }
}

struct HeldGuard(Arc<AtomicUsize>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request whose `x-mode` header selects the [`Backend`]'s behaviour.
pub(crate) fn with_mode(priority: &str, mode: &str) -> http::Request<String> {
    let mut req = get(priority);
    req.headers_mut()
        .insert("x-mode", http::HeaderValue::from_str(mode).unwrap());
    req
}

/// [`with_mode`] with an `x-id` the backend logs when it is called.
pub(crate) fn tagged(priority: &str, mode: &str, id: &str) -> http::Request<String> {
    let mut req = with_mode(priority, mode);
    req.headers_mut()
        .insert("x-id", http::HeaderValue::from_str(id).unwrap());
    req
}

/// A response body that is either whole or streamed from a channel (server-sent events).
#[derive(Debug)]
pub(crate) enum TestBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl From<String> for TestBody {
    fn from(s: String) -> Self {
        TestBody::Full(Some(Bytes::from(s)))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            TestBody::Stream(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, TestBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            TestBody::Full(None) => SizeHint::with_exact(0),
            TestBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A waker that counts how often it was woken.
#[derive(Default)]
pub(crate) struct CountingWaker {
    wakes: AtomicUsize,
}

impl CountingWaker {
    pub(crate) fn new() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        (counter, waker)
    }

    pub(crate) fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// A FIFO log shared between a test and the services it drives.
#[derive(Clone)]
pub(crate) struct Log<T>(Arc<Mutex<VecDeque<T>>>);

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log(Arc::default())
    }
}

impl<T: Clone> Log<T> {
    pub(crate) fn push(&self, item: T) {
        self.0.lock().unwrap().push_back(item);
    }

    pub(crate) fn items(&self) -> Vec<T> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}
