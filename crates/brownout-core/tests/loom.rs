//! loom model tests of the load-level atomics behind `LoadSignal` / `LoadPublisher`
//! (RELIABILITY case 22). Run with `scripts/loom.sh` (`RUSTFLAGS="--cfg brownout_loom"`).
#![cfg(brownout_loom)]

use brownout_core::{LoadLevel, LoadSignal};
use loom::thread;

#[test]
fn a_reader_sees_the_old_or_the_new_level_never_anything_else() {
    loom::model(|| {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let reader = thread::spawn(move || {
            let first = signal.level();
            let second = signal.level();
            assert!(matches!(first, LoadLevel::Normal | LoadLevel::High));
            // One writer: once the new level is seen, it stays.
            assert!(first <= second, "went back from {first} to {second}");
            assert!(matches!(second, LoadLevel::Normal | LoadLevel::High));
        });
        publisher.publish(LoadLevel::High);
        reader.join().unwrap();
        assert_eq!(publisher.level(), LoadLevel::High);
    });
}

#[test]
fn racing_publishers_leave_readers_on_the_last_published_level() {
    loom::model(|| {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let other = publisher.clone();
        let t = thread::spawn(move || other.publish(LoadLevel::Critical));
        publisher.publish(LoadLevel::Elevated);
        t.join().unwrap();
        // Writers are serialized: the effective level is whichever publish came last.
        assert_eq!(signal.level(), publisher.published());
        assert!(matches!(
            signal.level(),
            LoadLevel::Elevated | LoadLevel::Critical
        ));
    });
}

#[test]
fn force_and_release_racing_a_publish_end_on_the_published_level() {
    loom::model(|| {
        let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
        let operator = publisher.clone();
        let reader_signal = signal.clone();
        let op = thread::spawn(move || {
            operator.force(LoadLevel::Emergency);
            operator.release();
        });
        let reader = thread::spawn(move || {
            let seen = reader_signal.level();
            assert!(
                matches!(
                    seen,
                    LoadLevel::Normal | LoadLevel::High | LoadLevel::Emergency
                ),
                "saw {seen}"
            );
        });
        publisher.publish(LoadLevel::High);
        op.join().unwrap();
        reader.join().unwrap();
        // The override is gone and the detector's level was not lost behind it.
        assert!(!signal.is_forced());
        assert_eq!(signal.level(), LoadLevel::High);
        assert_eq!(publisher.published(), LoadLevel::High);
    });
}
