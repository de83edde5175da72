//! Assertions over a [`Summary`] and over a monitor's [`Snapshot`]; each panics with a
//! message naming the numbers (and printing the whole summary), so a failing test says
//! what happened, not only that something did.
//!
//! ```
//! use brownout_core::{Priority, RejectReason};
//! use brownout_test::{Outcome, Record, Summary, assert_sheds_before, assert_success_at_least};
//! use std::time::Duration;
//!
//! let ms = Duration::from_millis;
//! let record = |priority, outcome| Record { at: ms(0), priority, outcome };
//! let ok = Outcome::Ok { latency: ms(20), service_time: None };
//! let shed = Outcome::Rejected { reason: RejectReason::Shed, latency: ms(0) };
//! let summary = Summary::new(
//!     vec![record(Priority::High, ok), record(Priority::Low, shed), record(Priority::Low, ok)],
//!     Vec::new(),
//!     Duration::from_secs(1),
//!     ms(500),
//! );
//! assert_sheds_before(&summary, Priority::Low, Priority::High);
//! assert_success_at_least(&summary, Priority::High, 1.0);
//! let failure = std::panic::catch_unwind(|| assert_success_at_least(&summary, Priority::Low, 0.9));
//! let message = *failure.unwrap_err().downcast::<String>().unwrap();
//! assert!(message.starts_with("expected at least 90.0 % of low answered, got 50.0 % (1 of 2)"));
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use brownout_core::{LoadLevel, Priority, RejectReason};
use brownout_monitor::Snapshot;

use crate::Summary;

/// Asserts that at least `min` (a share: `0.99` for 99 %) of `class` was answered.
///
/// # Panics
///
/// When fewer were, naming the share, the counts and the whole summary.
#[track_caller]
pub fn assert_success_at_least(summary: &Summary, class: Priority, min: f64) {
    let c = summary.class(class);
    assert!(
        c.success_rate() >= min,
        "expected at least {:.1} % of {class} answered, got {:.1} % ({} of {})\n{summary}",
        min * 100.0,
        c.success_rate() * 100.0,
        c.ok,
        c.sent
    );
}

/// Asserts that at most `max` (a share) of `class` was answered: it was shed or refused.
///
/// # Panics
///
/// When more were.
#[track_caller]
pub fn assert_success_at_most(summary: &Summary, class: Priority, max: f64) {
    let c = summary.class(class);
    assert!(
        c.success_rate() <= max,
        "expected at most {:.1} % of {class} answered, got {:.1} % ({} of {})\n{summary}",
        max * 100.0,
        c.success_rate() * 100.0,
        c.ok,
        c.sent
    );
}

/// Asserts that the stack shed `first` before `then`: `first` was refused by a layer
/// (any [`RejectReason`], or tower's `Overloaded`), a larger share of it than of `then`, and
/// a smaller share of it was answered.
///
/// # Panics
///
/// When nothing of `first` was refused, or `then` was refused as much or answered as
/// little, naming both classes' figures.
#[track_caller]
pub fn assert_sheds_before(summary: &Summary, first: Priority, then: Priority) {
    let a = summary.class(first);
    let b = summary.class(then);
    let holds = a.refused() > 0
        && a.rejection_rate() > b.rejection_rate()
        && a.success_rate() < b.success_rate();
    assert!(
        holds,
        "expected {first} to be shed before {then}: {first} refused {:.1} % and answered {:.1} %, \
         {then} refused {:.1} % and answered {:.1} %\n{summary}",
        a.rejection_rate() * 100.0,
        a.success_rate() * 100.0,
        b.rejection_rate() * 100.0,
        b.success_rate() * 100.0,
    );
}

/// Asserts that more important classes were answered at least as well as less important
/// ones (each class's success rate ≥ the next lower sent class's − `tolerance`).
///
/// # Panics
///
/// At the first pair out of order, naming both rates.
#[track_caller]
pub fn assert_priority_order(summary: &Summary, tolerance: f64) {
    let sent: Vec<_> = summary.classes().iter().filter(|c| c.sent > 0).collect();
    for pair in sent.windows(2) {
        let (upper, lower) = (pair[0], pair[1]);
        assert!(
            upper.success_rate() + tolerance >= lower.success_rate(),
            "expected {} answered at least as well as {} (tolerance {:.1} points): {:.1} % < {:.1} %\n{summary}",
            upper.name(),
            lower.name(),
            tolerance * 100.0,
            upper.success_rate() * 100.0,
            lower.success_rate() * 100.0,
        );
    }
}

/// Asserts that the 99th-percentile latency of `class`'s answers is at most `max`.
///
/// # Panics
///
/// When it is above, naming p50, p99 and max.
#[track_caller]
pub fn assert_p99_at_most(summary: &Summary, class: Priority, max: Duration) {
    let c = summary.class(class);
    assert!(
        c.p99 <= max,
        "expected {class} p99 at most {max:?}, got {:?} (p50 {:?}, max {:?}, {} answers)\n{summary}",
        c.p99,
        c.p50,
        c.max,
        c.ok
    );
}

/// Asserts that at least `min` requests of `class` were refused for `reason`.
///
/// # Panics
///
/// When fewer were, listing the reasons that did refuse it.
#[track_caller]
pub fn assert_refused_for(summary: &Summary, class: Priority, reason: RejectReason, min: u64) {
    let c = summary.class(class);
    assert!(
        c.rejected(reason) >= min,
        "expected at least {min} {class} requests refused for {reason}, got {} (refusals: {:?})\n{summary}",
        c.rejected(reason),
        c.rejections()
    );
}

/// Asserts that every request was answered or refused with a reason: none timed out,
/// failed or panicked (reliability case #26: overload never turns into silence).
///
/// # Panics
///
/// When some did, naming the counts.
#[track_caller]
pub fn assert_all_answered_or_refused(summary: &Summary) {
    let t = summary.total();
    assert!(
        t.timed_out == 0 && t.failed == 0 && t.panicked == 0,
        "expected every request answered or refused, but {} timed out, {} failed and {} panicked of {}\n{summary}",
        t.timed_out,
        t.failed,
        t.panicked,
        t.sent
    );
}

/// The highest level a monitor reached according to `snapshot`: its current level and
/// every kept transition (the last 32 by default).
pub fn max_level_seen(snapshot: &Snapshot) -> LoadLevel {
    snapshot
        .transitions
        .iter()
        .map(|t| t.to)
        .chain([snapshot.level, snapshot.detected])
        .max()
        .unwrap_or(LoadLevel::Normal)
}

fn transitions(snapshot: &Snapshot) -> String {
    if snapshot.transitions.is_empty() {
        return "none".to_owned();
    }
    let first = snapshot.transitions[0].at;
    let mut out = String::new();
    for t in &snapshot.transitions {
        let _ = write!(
            out,
            "\n  +{:?}: {} -> {} ({})",
            t.at - first,
            t.from,
            t.to,
            t.cause
        );
    }
    out
}

/// Asserts that the monitor reached `level` or above at some point.
///
/// # Panics
///
/// When the highest level seen is lower, listing the transitions.
#[track_caller]
pub fn assert_level_reached(snapshot: &Snapshot, level: LoadLevel) {
    let seen = max_level_seen(snapshot);
    assert!(
        seen >= level,
        "expected the monitor to reach {level}, highest seen {seen} (now {}); transitions: {}",
        snapshot.level,
        transitions(snapshot)
    );
}

/// Asserts that the monitor never went above `level`.
///
/// # Panics
///
/// When it did, listing the transitions.
#[track_caller]
pub fn assert_level_at_most(snapshot: &Snapshot, level: LoadLevel) {
    let seen = max_level_seen(snapshot);
    assert!(
        seen <= level,
        "expected the monitor to stay at or below {level}, but it reached {seen} (now {}); transitions: {}",
        snapshot.level,
        transitions(snapshot)
    );
}

/// Asserts that the monitor changed from `from` to `to` at least once.
///
/// # Panics
///
/// When no kept transition matches, listing them.
#[track_caller]
pub fn assert_transitioned(snapshot: &Snapshot, from: LoadLevel, to: LoadLevel) {
    assert!(
        snapshot
            .transitions
            .iter()
            .any(|t| t.from == from && t.to == to),
        "expected a transition {from} -> {to} (now {}); transitions: {}",
        snapshot.level,
        transitions(snapshot)
    );
}

/// Asserts that the monitor's level is `level` now.
///
/// # Panics
///
/// When it is not, listing the transitions.
#[track_caller]
pub fn assert_level(snapshot: &Snapshot, level: LoadLevel) {
    assert!(
        snapshot.level == level,
        "expected the monitor at {level}, it is at {} (detected {}, forced {:?}); transitions: {}",
        snapshot.level,
        snapshot.detected,
        snapshot.forced,
        transitions(snapshot)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, Record};
    use brownout_monitor::Monitor;

    fn summary(outcomes: &[(Priority, Outcome)]) -> Summary {
        let records = outcomes
            .iter()
            .map(|&(priority, outcome)| Record {
                at: Duration::ZERO,
                priority,
                outcome,
            })
            .collect();
        Summary::new(
            records,
            Vec::new(),
            Duration::from_secs(1),
            Duration::from_millis(500),
        )
    }

    fn message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        *std::panic::catch_unwind(f)
            .unwrap_err()
            .downcast::<String>()
            .unwrap()
    }

    const OK: Outcome = Outcome::Ok {
        latency: Duration::from_millis(10),
        service_time: None,
    };
    const SHED: Outcome = Outcome::Rejected {
        reason: RejectReason::Shed,
        latency: Duration::ZERO,
    };

    #[test]
    fn sheds_before_holds_and_fails_with_the_numbers() {
        let s = summary(&[
            (Priority::High, OK),
            (Priority::High, OK),
            (Priority::Low, SHED),
            (Priority::Low, OK),
        ]);
        assert_sheds_before(&s, Priority::Low, Priority::High);
        let text = message(|| assert_sheds_before(&s, Priority::High, Priority::Low));
        assert!(
            text.starts_with(
                "expected high to be shed before low: high refused 0.0 % and answered 100.0 %, \
                 low refused 50.0 % and answered 50.0 %"
            ),
            "{text}"
        );
        assert!(
            text.contains("low: sent 2, ok 1 (50.0 %), refused 1 (shed 1)"),
            "{text}"
        );
    }

    #[test]
    fn nothing_shed_is_not_shedding_before() {
        let s = summary(&[(Priority::High, OK), (Priority::Low, OK)]);
        let text = message(|| assert_sheds_before(&s, Priority::Low, Priority::High));
        assert!(text.contains("low refused 0.0 %"), "{text}");
    }

    #[test]
    fn priority_order_p99_reasons_and_answers() {
        let s = summary(&[
            (Priority::Critical, OK),
            (Priority::Medium, OK),
            (Priority::Medium, SHED),
            (Priority::Background, OK),
        ]);
        let text = message(|| assert_priority_order(&s, 0.1));
        assert!(
            text.contains("expected medium answered at least as well as background"),
            "{text}"
        );
        assert_priority_order(&s, 0.5);
        assert_p99_at_most(&s, Priority::Critical, Duration::from_millis(10));
        let text = message(|| assert_p99_at_most(&s, Priority::Critical, Duration::from_millis(5)));
        assert!(
            text.starts_with("expected critical p99 at most 5ms, got 10ms"),
            "{text}"
        );
        assert_refused_for(&s, Priority::Medium, RejectReason::Shed, 1);
        let text = message(|| assert_refused_for(&s, Priority::Medium, RejectReason::QueueFull, 1));
        assert!(text.contains("got 0 (refusals: [(Shed, 1)])"), "{text}");
        assert_all_answered_or_refused(&s);
        let lost = summary(&[(Priority::High, Outcome::TimedOut)]);
        let text = message(|| assert_all_answered_or_refused(&lost));
        assert!(
            text.contains("1 timed out, 0 failed and 0 panicked of 1"),
            "{text}"
        );
        assert_success_at_most(&s, Priority::Medium, 0.5);
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_levels_and_transitions() {
        let ms = Duration::from_millis;
        let monitor = Monitor::builder()
            .manual_ticks()
            .queue_delay_thresholds([ms(5), ms(20), ms(50), ms(100)])
            .cooldown(ms(100))
            .build()
            .unwrap();
        assert_level(&monitor.snapshot(), LoadLevel::Normal);
        let probe = monitor.queue_probe();
        probe.enqueued();
        probe.dequeued(Duration::from_millis(60)); // above the 50 ms Critical threshold
        monitor.tick_now();
        let snapshot = monitor.snapshot();
        assert_level_reached(&snapshot, LoadLevel::High);
        assert_transitioned(&snapshot, LoadLevel::Normal, LoadLevel::Critical);
        let text = message(|| assert_level_at_most(&snapshot, LoadLevel::Elevated));
        assert!(text.contains("but it reached critical"), "{text}");
        assert!(text.contains("normal -> critical (queue_delay="), "{text}");
        let text = message(|| assert_level_reached(&snapshot, LoadLevel::Emergency));
        assert!(
            text.starts_with("expected the monitor to reach emergency, highest seen critical"),
            "{text}"
        );
        // Calm for two cooldowns: two steps down, the peak stays in the history.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(101)).await;
            monitor.tick_now();
        }
        let snapshot = monitor.snapshot();
        assert_eq!(max_level_seen(&snapshot), LoadLevel::Critical);
        assert!(snapshot.level < LoadLevel::Critical);
    }
}
