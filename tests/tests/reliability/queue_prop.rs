//! Queue invariants of the public `PriorityAdmission` layer under random arrivals,
//! cancellations, completions and time (proptest; complements cases 2, 8, 22 and 24).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use brownout::admission::{Limit, NoDeadline, PriorityAdmissionLayer, QueueTimeout};
use brownout::{BoxError, Priority, RejectReason, Rejected};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tokio_test::task::{Spawn, spawn};
use tower::{Layer, Service, ServiceExt};

#[derive(Debug, Clone, Copy)]
struct Job {
    id: usize,
    class: Priority,
}

/// An inner service whose calls run until the test completes them.
#[derive(Clone, Default)]
struct Work {
    running: Arc<Mutex<HashMap<usize, oneshot::Sender<()>>>>,
}

impl Service<Job> for Work {
    type Response = usize;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<usize, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        self.running.lock().unwrap().insert(job.id, tx);
        let running = self.running.clone();
        Box::pin(async move {
            // Dropped before completion: the entry goes with the future.
            struct Leave(Arc<Mutex<HashMap<usize, oneshot::Sender<()>>>>, usize);
            impl Drop for Leave {
                fn drop(&mut self) {
                    self.0.lock().unwrap().remove(&self.1);
                }
            }
            let _leave = Leave(running, job.id);
            rx.await
                .map_err(|_| BoxError::from("completion sender dropped"))?;
            Ok(job.id)
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Arrive(u8),
    Complete(usize),
    Cancel(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5).prop_map(Op::Arrive),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (1u64..80).prop_map(Op::Advance),
    ]
}

type Pending = Spawn<
    tower::util::Oneshot<
        brownout::admission::PriorityAdmission<Work, fn(&Job) -> Priority, NoDeadline>,
        Job,
    >,
>;

#[derive(Default, Debug)]
struct Outcomes {
    completed: usize,
    queue_full: usize,
    queue_timeout: usize,
    cancelled: usize,
}

/// Polls every live request once; removes and records the finished ones.
fn poll_all(
    live: &mut Vec<(usize, Pending)>,
    outcomes: &mut Outcomes,
) -> Result<(), TestCaseError> {
    let mut i = 0;
    while i < live.len() {
        match live[i].1.poll() {
            Poll::Pending => i += 1,
            Poll::Ready(result) => {
                let (id, _) = live.remove(i);
                match result {
                    Ok(done) => {
                        prop_assert_eq!(done, id);
                        outcomes.completed += 1;
                    }
                    Err(err) => {
                        let rejected = Rejected::find(&*err);
                        prop_assert!(rejected.is_some(), "untyped error {err}");
                        match rejected.unwrap().reason() {
                            RejectReason::QueueFull => outcomes.queue_full += 1,
                            RejectReason::QueueTimeout => outcomes.queue_timeout += 1,
                            other => prop_assert!(false, "unexpected reason {other:?}"),
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn classify(job: &Job) -> Priority {
    job.class
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Through the public layer, after every step: in flight ≤ limit and equal to the calls
    /// running in the inner service, queued ≤ capacity and equal to the requests waiting;
    /// every request ends completed, rejected with a reason (queue full / queue timeout) or
    /// dropped. At the end, with everything done, all permits are back: a fresh request
    /// is admitted at once.
    #[test]
    fn queue_invariants_under_random_arrivals_cancels_and_completions(
        limit in 1usize..4,
        capacity in 0usize..6,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let layer = PriorityAdmissionLayer::builder()
                .limit(Limit::fixed(limit))
                .queue_capacity(capacity)
                .queue_timeout(QueueTimeout::fixed(Duration::from_millis(50)))
                .classifier(classify as fn(&Job) -> Priority)
                .deadline(NoDeadline)
                .build()
                .unwrap();
            let handle = layer.handle();
            let work = Work::default();
            let svc = layer.layer(work.clone());
            let mut live: Vec<(usize, Pending)> = Vec::new();
            let mut outcomes = Outcomes::default();
            let mut next_id = 0;
            let mut arrived = 0;
            for op in ops {
                match op {
                    Op::Arrive(class) => {
                        let job = Job { id: next_id, class: Priority::ALL[usize::from(class)] };
                        next_id += 1;
                        arrived += 1;
                        live.push((job.id, spawn(svc.clone().oneshot(job))));
                    }
                    Op::Complete(k) => {
                        let mut running = work.running.lock().unwrap();
                        let mut ids: Vec<usize> = running.keys().copied().collect();
                        ids.sort_unstable();
                        if !ids.is_empty() {
                            let id = ids[k % ids.len()];
                            let _ = running.remove(&id).unwrap().send(());
                        }
                    }
                    Op::Cancel(k) => {
                        if !live.is_empty() {
                            drop(live.remove(k % live.len()));
                            outcomes.cancelled += 1;
                        }
                    }
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                }
                // Poll to a fixed point: a permit handed over is taken by its waiter's poll.
                for _ in 0..3 {
                    poll_all(&mut live, &mut outcomes)?;
                }
                let running = work.running.lock().unwrap().len();
                let in_flight = handle.in_flight();
                prop_assert!(in_flight <= limit, "in flight {in_flight} > limit {limit}");
                prop_assert!(running <= in_flight, "inner running {running} > in flight {in_flight}");
                prop_assert!(handle.queued() <= capacity, "queued {} > {capacity}", handle.queued());
                prop_assert_eq!(handle.queued() + in_flight, live.len(), "every live request is queued or holds a permit");
            }
            prop_assert_eq!(
                outcomes.completed + outcomes.queue_full + outcomes.queue_timeout + outcomes.cancelled + live.len(),
                arrived,
                "{:?}", outcomes
            );

            // Finish everything: complete what runs, let waiters in or time them out.
            for _ in 0..200 {
                if live.is_empty() {
                    break;
                }
                let senders: Vec<_> = work.running.lock().unwrap().drain().collect();
                for (_, tx) in senders {
                    let _ = tx.send(());
                }
                poll_all(&mut live, &mut outcomes)?;
                tokio::time::advance(Duration::from_millis(10)).await;
            }
            prop_assert!(live.is_empty(), "{} requests never finished", live.len());
            prop_assert_eq!(handle.in_flight(), 0);
            prop_assert_eq!(handle.queued(), 0);
            // Every permit is back: `limit` fresh requests all start at their first poll.
            let mut fresh = Vec::new();
            for i in 0..limit {
                let mut call = spawn(svc.clone().oneshot(Job { id: 1_000_000 + i, class: Priority::Background }));
                prop_assert!(call.poll().is_pending());
                prop_assert!(work.running.lock().unwrap().contains_key(&(1_000_000 + i)), "admitted at once");
                fresh.push(call);
            }
            prop_assert_eq!(handle.in_flight(), limit);
            drop(fresh);
            prop_assert_eq!(handle.in_flight(), 0);
            Ok(())
        })?;
    }
}
