//! Assertions over a [`Summary`](crate::Summary) and a monitor's
//! [`Snapshot`](brownout_monitor::Snapshot); each panics with a message naming the numbers.

use brownout_core::Priority;

use crate::Summary;

/// Asserts that at least `min` (a share, `0.99` for 99 %) of `class` was answered.
///
/// # Panics
///
/// When fewer were, printing the class's figures and the whole summary.
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
