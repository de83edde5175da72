//! Each server on loopback answers as its stack should: work is done and timed, tower
//! refuses with `overloaded` when every worker is busy, brownout sheds by class at a forced
//! level and stamps `x-load-level`, and the client gives up at its deadline.
//!
//! Timings leave hundreds of milliseconds of margin, so the outcomes do not depend on the
//! machine's speed.

use std::time::Duration;

use brownout::{LoadLevel, Priority};
use brownout_demo::backend::Backend;
use brownout_demo::loadgen::{Arrival, Client, Failure, Outcome, Record, drive};
use brownout_demo::{BrownoutSettings, StackKind, servers::Server};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_millis(600);

fn arrival(at_ms: u64, class: Priority, work_ms: u32) -> Arrival {
    Arrival {
        at: Duration::from_millis(at_ms),
        class,
        work_ms,
    }
}

async fn run(
    kind: StackKind,
    workers: usize,
    arrivals: &[Arrival],
    level: Option<LoadLevel>,
) -> Vec<Record> {
    let backend = Backend::new(workers, None);
    let settings = BrownoutSettings::tuned(workers, Duration::from_millis(40), DEADLINE);
    let server = Server::start(kind, backend.clone(), DEADLINE, &settings)
        .await
        .unwrap();
    assert_eq!(server.kind(), kind);
    assert!(server.addr().ip().is_loopback());
    if let (Some(level), Some(brownout)) = (level, server.brownout()) {
        brownout.publisher().force(level);
    }
    let client = Client::connect(server.addr(), 2).await.unwrap();
    let t0 = Instant::now();
    backend.set_start(t0);
    let mut records = drive(&client, arrivals, t0, DEADLINE, &|_| {}).await;
    records.sort_by_key(|r| r.at);
    drop(client);
    server.stop().await;
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprotected_does_the_work_and_reports_worker_time() {
    let records = run(
        StackKind::Unprotected,
        2,
        &[
            arrival(0, Priority::Low, 30),
            arrival(0, Priority::High, 30),
        ],
        None,
    )
    .await;
    assert_eq!(records.len(), 2);
    for r in &records {
        match r.outcome {
            Outcome::Ok { worked } => assert!(worked >= Duration::from_millis(30), "{worked:?}"),
            ref other => panic!("expected an answer, got {other:?}"),
        }
        assert!(r.latency >= Duration::from_millis(30));
        assert_eq!(r.level, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_refuses_when_every_worker_is_busy() {
    // One worker busy for 400 ms; the second request arrives 100 ms later and is refused.
    let records = run(
        StackKind::Tower,
        1,
        &[
            arrival(0, Priority::Critical, 400),
            arrival(100, Priority::Critical, 10),
        ],
        None,
    )
    .await;
    assert!(
        matches!(records[0].outcome, Outcome::Ok { .. }),
        "{:?}",
        records[0]
    );
    assert_eq!(
        records[1].outcome,
        Outcome::Rejected {
            status: 503,
            reason: "overloaded".to_owned()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brownout_sheds_by_class_at_a_forced_level() {
    let records = run(
        StackKind::Brownout,
        4,
        &[
            arrival(0, Priority::Critical, 20),
            arrival(0, Priority::Medium, 20),
            arrival(0, Priority::Background, 20),
        ],
        Some(LoadLevel::Emergency),
    )
    .await;
    let by_class = |class| records.iter().find(|r| r.class == class).unwrap();
    // The demo's shed table is one level behind the default: Emergency sheds Medium and
    // below, and Critical is always served.
    assert!(matches!(
        by_class(Priority::Critical).outcome,
        Outcome::Ok { .. }
    ));
    for class in [Priority::Medium, Priority::Background] {
        let r = by_class(class);
        assert_eq!(
            r.outcome,
            Outcome::Rejected {
                status: 503,
                reason: "shed".to_owned()
            },
            "{class:?}"
        );
        assert_eq!(r.level, Some(LoadLevel::Emergency));
    }
    assert_eq!(
        by_class(Priority::Critical).level,
        Some(LoadLevel::Emergency)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gives_up_at_its_deadline() {
    let records = run(
        StackKind::Unprotected,
        1,
        &[arrival(0, Priority::High, 2_000)],
        None,
    )
    .await;
    let r = &records[0];
    assert_eq!(r.outcome, Outcome::Failed(Failure::GaveUp));
    assert!(r.latency >= DEADLINE && r.latency < DEADLINE + Duration::from_millis(400));
}
