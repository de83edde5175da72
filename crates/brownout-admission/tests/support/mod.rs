//! A controllable backend for the admission tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_admission::{BoxError, PriorityAdmissionBuilder, Rejected};
use brownout_core::{Deadline, Priority, RejectReason};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::Service;

/// A test request.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u32,
    pub class: Priority,
    pub deadline: Option<Deadline>,
    pub tenant: Option<&'static str>,
}

pub fn job(id: u32, class: Priority) -> Job {
    Job {
        id,
        class,
        deadline: None,
        tenant: None,
    }
}

/// A Medium job of `tenant` (the key of the keyed rate-limit tests).
pub fn tenant_job(id: u32, tenant: Option<&'static str>) -> Job {
    Job {
        tenant,
        ..job(id, Priority::Medium)
    }
}

pub fn classify(job: &Job) -> Priority {
    job.class
}

pub fn deadline_of(job: &Job) -> Option<Deadline> {
    job.deadline
}

pub type Classifier = fn(&Job) -> Priority;
pub type DeadlineFn = fn(&Job) -> Option<Deadline>;

/// A builder for `Job` requests.
pub fn builder() -> PriorityAdmissionBuilder<Classifier, DeadlineFn> {
    brownout_admission::PriorityAdmissionLayer::builder()
        .classifier(classify as Classifier)
        .deadline(deadline_of as DeadlineFn)
}

#[derive(Default)]
struct State {
    pending: HashMap<u32, oneshot::Sender<Result<u32, BoxError>>>,
    served: Vec<(u32, Priority, Instant)>,
    running: usize,
    peak: usize,
}

/// Holds every request until the test completes or fails it.
#[derive(Clone, Default)]
pub struct Backend {
    state: Arc<Mutex<State>>,
}

struct Running(Arc<Mutex<State>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().unwrap().running -= 1;
    }
}

impl Backend {
    pub fn served(&self) -> Vec<u32> {
        self.state
            .lock()
            .unwrap()
            .served
            .iter()
            .map(|s| s.0)
            .collect()
    }

    pub fn running(&self) -> usize {
        self.state.lock().unwrap().running
    }

    pub fn peak(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    /// Answers request `id` (false when it is not running).
    pub fn complete(&self, id: u32) -> bool {
        let tx = self.state.lock().unwrap().pending.remove(&id);
        tx.is_some_and(|tx| tx.send(Ok(id)).is_ok())
    }

    pub fn fail(&self, id: u32) -> bool {
        let tx = self.state.lock().unwrap().pending.remove(&id);
        tx.is_some_and(|tx| tx.send(Err("backend failed".into())).is_ok())
    }
}

impl Service<Job> for Backend {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.state.lock().unwrap();
            s.pending.insert(job.id, tx);
            s.served.push((job.id, job.class, Instant::now()));
            s.running += 1;
            s.peak = s.peak.max(s.running);
        }
        let guard = Running(Arc::clone(&self.state));
        Box::pin(async move {
            let _guard = guard;
            rx.await.unwrap_or_else(|_| Err("dropped".into()))
        })
    }
}

/// Lets spawned tasks run without moving the (paused) clock.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

pub fn reason(err: &BoxError) -> RejectReason {
    Rejected::find(&**err)
        .unwrap_or_else(|| panic!("not a rejection: {err}"))
        .reason()
}

pub fn rejected(err: &BoxError) -> Rejected {
    *Rejected::find(&**err).unwrap_or_else(|| panic!("not a rejection: {err}"))
}

pub const LONG: Duration = Duration::from_secs(3600);

/// The builder type the tests use.
pub type BuilderAlias = PriorityAdmissionBuilder<Classifier, DeadlineFn>;

impl Backend {
    /// Served requests with the instant each reached the backend.
    pub fn served_at(&self) -> Vec<(u32, Instant)> {
        self.state
            .lock()
            .unwrap()
            .served
            .iter()
            .map(|s| (s.0, s.2))
            .collect()
    }
}
