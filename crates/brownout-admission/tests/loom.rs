//! loom model tests of the admit / release / cancel interleavings (RELIABILITY case 22):
//! permits are conserved and no waiter misses its wake-up.
//!
//! Run with `scripts/loom.sh` (`RUSTFLAGS="--cfg brownout_loom"`, `LOOM_MAX_PREEMPTIONS=2`).
//! A lost wake-up shows up as a loom deadlock: `block_on` parks a waiter that nothing unparks.
#![cfg(brownout_loom)]

use brownout_admission::model::{Admission, Gate, Running, Waiting};
use brownout_core::{Priority, RejectReason};
use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;

fn running(a: Admission) -> Running {
    match a {
        Admission::Running(r) => r,
        other => panic!("expected a permit at once, got {other:?}"),
    }
}

fn waiting(a: Admission) -> Waiting {
    match a {
        Admission::Waiting(w) => w,
        other => panic!("expected to wait, got {other:?}"),
    }
}

/// Admits and, when queued, waits for the permit: every request ends with a permit.
fn admit_and_wait(gate: &Gate, class: Priority) -> Running {
    match gate.admit(class) {
        Admission::Running(r) => r,
        Admission::Waiting(w) => block_on(w).expect("granted, never refused"),
        Admission::Rejected(reason) => panic!("refused: {reason:?}"),
    }
}

fn assert_idle(gate: &Gate) {
    assert_eq!(gate.in_flight(), 0, "every permit returned");
    assert_eq!(gate.queued(), 0, "no queue place left behind");
    assert_eq!(gate.queue_len(), 0, "the queue itself is empty");
}

#[test]
fn rel_22_release_racing_admit_wakes_the_newcomer() {
    // The Dekker pair: the releaser decrements in-flight then reads `queued`; the newcomer
    // either takes the freed permit on the fast path or queues and must be woken.
    loom::model(|| {
        let gate = Arc::new(Gate::new(1, 4));
        let held = running(gate.admit(Priority::Medium));
        let g = Arc::clone(&gate);
        let newcomer = thread::spawn(move || {
            let permit = admit_and_wait(&g, Priority::Low);
            assert_eq!(g.in_flight(), 1, "the limit holds");
            drop(permit);
        });
        drop(held);
        newcomer.join().unwrap();
        assert_idle(&gate);
    });
}

#[test]
fn rel_22_two_newcomers_never_exceed_the_limit_and_both_are_served() {
    loom::model(|| {
        let gate = Arc::new(Gate::new(1, 4));
        let held = running(gate.admit(Priority::High));
        let threads: Vec<_> = [Priority::Critical, Priority::Low]
            .into_iter()
            .map(|class| {
                let g = Arc::clone(&gate);
                thread::spawn(move || {
                    let permit = admit_and_wait(&g, class);
                    assert!(g.in_flight() <= 1, "limit 1 exceeded");
                    drop(permit);
                })
            })
            .collect();
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        assert_idle(&gate);
    });
}

#[test]
fn rel_22_cancel_racing_grant_passes_the_permit_on() {
    // Two waiters; the first is dropped while the permit is released. Whether the permit
    // went to it before or after its cancellation, the second waiter gets it.
    loom::model(|| {
        let gate = Arc::new(Gate::new(1, 4));
        let held = running(gate.admit(Priority::Medium));
        let first = waiting(gate.admit(Priority::High));
        let second = waiting(gate.admit(Priority::Low));
        let canceller = thread::spawn(move || drop(first));
        let releaser = thread::spawn(move || drop(held));
        let permit = block_on(second).expect("the permit reaches the second waiter");
        assert_eq!(gate.in_flight(), 1);
        drop(permit);
        canceller.join().unwrap();
        releaser.join().unwrap();
        assert_idle(&gate);
    });
}

#[test]
fn rel_22_without_a_queue_exactly_one_of_two_racers_is_admitted() {
    loom::model(|| {
        let gate = Arc::new(Gate::new(1, 0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let g = Arc::clone(&gate);
                thread::spawn(move || match g.admit(Priority::Medium) {
                    Admission::Running(r) => {
                        assert_eq!(g.in_flight(), 1);
                        // Keep the permit until both decided, so the other one is refused.
                        Some(r)
                    }
                    Admission::Rejected(reason) => {
                        assert_eq!(reason, RejectReason::QueueFull);
                        None
                    }
                    Admission::Waiting(_) => panic!("no queue to wait in"),
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
        drop(results);
        assert_idle(&gate);
    });
}

#[test]
fn rel_22_cancelled_waiter_and_release_leave_nothing_behind() {
    // A waiter dropped while the only permit is released concurrently and a newcomer
    // arrives: the permit ends with the newcomer, the queue empty.
    loom::model(|| {
        let gate = Arc::new(Gate::new(1, 4));
        let held = running(gate.admit(Priority::Medium));
        let queued = waiting(gate.admit(Priority::Low));
        let g = Arc::clone(&gate);
        let newcomer = thread::spawn(move || drop(admit_and_wait(&g, Priority::High)));
        let canceller = thread::spawn(move || drop(queued));
        drop(held);
        newcomer.join().unwrap();
        canceller.join().unwrap();
        assert_idle(&gate);
    });
}

#[test]
fn rel_22_raised_limit_wakes_a_waiter_without_any_release() {
    // The adaptive limit grows while a newcomer queues: the newcomer either takes the new
    // permit itself or is handed it by the raise (the limit/queued Dekker pair).
    loom::model(|| {
        let gate = Arc::new(Gate::new(1, 4));
        let held = running(gate.admit(Priority::Medium));
        let g = Arc::clone(&gate);
        let newcomer = thread::spawn(move || {
            let permit = admit_and_wait(&g, Priority::Low);
            assert_eq!(g.in_flight(), 2);
            drop(permit);
        });
        gate.set_limit(2);
        newcomer.join().unwrap();
        drop(held);
        assert_idle(&gate);
    });
}
