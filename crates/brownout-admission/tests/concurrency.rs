//! Shared limits under real concurrency, and random arrival / cancel / complete sequences.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brownout_admission::{
    BoxError, Limit, NoDeadline, PriorityAdmissionLayer, Promotion, QueueTimeout,
};
use brownout_core::Priority;
use proptest::prelude::*;
use support::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rel_03_thousand_clones_never_exceed_the_limit_together() {
    const LIMIT: usize = 8;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let backend = {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        tower::service_fn(move |id: u32| {
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(id)
            }
        })
    };
    let layer = PriorityAdmissionLayer::builder()
        .limit(Limit::fixed(LIMIT))
        .queue_capacity(100_000)
        .queue_timeout(QueueTimeout::fixed(Duration::from_secs(600)))
        .classifier(|id: &u32| Priority::ALL[*id as usize % 5])
        .deadline(NoDeadline)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend);
    let mut tasks = Vec::new();
    for clone_id in 0..1000u32 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10u32 {
                let id = clone_id * 10 + i;
                assert_eq!(svc.ready().await.unwrap().call(id).await.unwrap(), id);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        peak.load(Ordering::SeqCst) <= LIMIT,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
    assert_eq!(handle.stats().admitted, 10_000);
}

#[derive(Debug, Clone)]
enum Op {
    Submit(u8),
    Complete(usize),
    Cancel(usize),
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5).prop_map(Op::Submit),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (1u8..80).prop_map(Op::Advance),
    ]
}

const LIMIT: usize = 3;
const BOUND: Duration = Duration::from_millis(50);

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let backend = Backend::default();
        let layer = builder()
            .limit(Limit::fixed(LIMIT))
            .queue_capacity(6)
            .queue_timeout(QueueTimeout::fixed(Duration::from_millis(200)))
            .starvation_bound(BOUND)
            // Promotion after the same wait: every out-of-order grant, starved or promoted,
            // went to a request that waited at least BOUND.
            .promotion(Promotion::after(BOUND))
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(backend.clone());
        let mut tasks = Vec::new();
        let mut submitted: HashMap<u32, (Priority, Instant)> = HashMap::new();
        let mut seen_served = 0;
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Submit(class) => {
                    let id = n as u32;
                    let class = Priority::ALL[class as usize];
                    submitted.insert(id, (class, Instant::now()));
                    let fut = svc.ready().await.unwrap().call(job(id, class));
                    tasks.push((id, tokio::spawn(fut)));
                }
                Op::Complete(i) => {
                    let served = backend.served();
                    if !served.is_empty() {
                        backend.complete(served[i % served.len()]);
                    }
                }
                Op::Cancel(i) => {
                    if !tasks.is_empty() {
                        let (_, t) = &tasks[i % tasks.len()];
                        t.abort();
                    }
                }
                Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
            }
            settle().await;
            prop_assert!(handle.in_flight() <= LIMIT);
            prop_assert!(backend.peak() <= LIMIT);
            prop_assert_eq!(
                backend.running(),
                handle.in_flight(),
                "permits match running work"
            );
            // Served since the last step, while more important requests still wait?
            let served = backend.served();
            let waiting: Vec<u32> = tasks
                .iter()
                .filter(|(id, t)| !t.is_finished() && !served.contains(id))
                .map(|(id, _)| *id)
                .collect();
            let served_at = backend.served_at();
            for &(r, served_time) in &served_at[seen_served..] {
                let (class, submitted_at) = submitted[&r];
                for q in &waiting {
                    let (q_class, q_at) = submitted[q];
                    if q_class > class && q_at <= served_time {
                        // A more important request waited while r was served: r must have
                        // waited at least the starvation bound.
                        prop_assert!(
                            served_time.saturating_duration_since(submitted_at) >= BOUND,
                            "request {} ({}) served while {} ({}) waited",
                            r,
                            class,
                            q,
                            q_class
                        );
                    }
                }
            }
            seen_served = served.len();
            prop_assert!(handle.queued() <= 6);
        }
        for (_, t) in &tasks {
            t.abort();
        }
        settle().await;
        prop_assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
        prop_assert_eq!(backend.running(), 0);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_arrivals_cancels_and_completions_keep_the_invariants(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        run(ops)?;
    }
}
