//! The baselines reproduce the failure modes that motivate brownout (issue #4): an
//! unprotected server collapses, tower's load shedding is needless at 1× and priority-blind
//! at 4×, a bounded FIFO wait keeps goodput but not priorities.
//!
//! Runs are 4 virtual seconds (a few tenths of a real second each in debug builds).

use std::time::Duration;

use brownout_core::Priority;
use brownout_sim::{Instrumented, Report, Scenario, Stack, run, run_with};

fn scenario(load: f64) -> Scenario {
    Scenario::load(load).with_duration(Duration::from_secs(4))
}

fn spread(report: &Report) -> f64 {
    let success: Vec<f64> = report.classes.iter().map(|c| c.success()).collect();
    let max = success.iter().copied().fold(f64::MIN, f64::max);
    let min = success.iter().copied().fold(f64::MAX, f64::min);
    max - min
}

#[test]
fn unprotected_collapses_at_2x() {
    let r = run(
        &scenario(2.0).with_duration(Duration::from_secs(8)),
        Stack::Unprotected,
    );
    // Only the first few hundred milliseconds are answered in time; afterwards every
    // answer comes after its caller gave up, and the workers serve nobody.
    assert!(r.goodput() < 0.15, "goodput {:.3}", r.goodput());
    let critical = r.class(Priority::Critical).success();
    assert!(critical < 0.15, "critical {critical:.3}");
    assert!(r.backend.wasted > r.good(), "wasted work dominates");
    assert!(r.rejected(brownout_sim::GAVE_UP) > r.offered() / 2);
}

#[test]
fn unprotected_is_fine_below_capacity() {
    let r = run(&scenario(0.5), Stack::Unprotected);
    assert!(r.efficiency() > 0.98, "efficiency {:.3}", r.efficiency());
    assert!(r.class(Priority::Critical).success() > 0.999);
}

#[test]
fn tower_sheds_needlessly_at_1x() {
    let r = run(&scenario(1.0), Stack::Tower);
    // No queue at all: whatever finds the 16 workers busy is refused (Erlang loss ~15 %).
    assert!(r.efficiency() < 0.92, "efficiency {:.3}", r.efficiency());
    assert!(r.rejected("overloaded") > r.offered() / 20);
}

#[test]
fn tower_serves_critical_no_better_than_background_at_4x() {
    let r = run(&scenario(4.0), Stack::Tower);
    let critical = r.class(Priority::Critical).success();
    let background = r.class(Priority::Background).success();
    assert!(critical < 0.35, "critical {critical:.3}");
    assert!(
        (critical - background).abs() < 0.05,
        "{critical:.3} vs {background:.3}"
    );
    assert!(spread(&r) < 0.05);
    assert!(r.priority_score() < 0.6, "score {:.3}", r.priority_score());
    // It keeps the workers busy, though.
    assert!(r.goodput() > 0.95);
}

#[test]
fn bulkhead_is_priority_blind() {
    for load in [2.0, 4.0] {
        let r = run(&scenario(load), Stack::Bulkhead);
        assert!(r.goodput() > 0.95, "{load}x goodput {:.3}", r.goodput());
        assert!(spread(&r) < 0.06, "{load}x spread {:.3}", spread(&r));
        assert!(
            r.priority_score() < 0.75,
            "{load}x score {:.3}",
            r.priority_score()
        );
        // Everyone admitted waited up to the bulkhead's 100 ms.
        assert!(r.class(Priority::Critical).p50 > Duration::from_millis(90));
        assert!(r.rejected("queue_timeout") > 0);
    }
}

#[test]
fn identical_arrivals_give_identical_reports() {
    let s = scenario(2.0).with_duration(Duration::from_secs(2));
    assert_eq!(run(&s, Stack::Bulkhead), run(&s, Stack::Bulkhead));
    let other = run(&s.clone().with_seed(7), Stack::Bulkhead);
    assert_ne!(run(&s, Stack::Bulkhead).classes, other.classes);
    // Every stack sees the same requests.
    let offered: Vec<u64> = Stack::ALL
        .iter()
        .map(|&stack| run(&s, stack).offered())
        .collect();
    assert!(offered.windows(2).all(|w| w[0] == w[1]), "{offered:?}");
}

#[test]
fn custom_stacks_run_through_the_same_harness() {
    let s = scenario(1.0).with_duration(Duration::from_secs(1));
    let bare = run_with(&s, "bare", Instrumented::new);
    assert_eq!(
        bare,
        Report {
            stack: "bare".into(),
            ..run(&s, Stack::Unprotected)
        }
    );
}

#[test]
fn slowdown_hurts_the_unprotected_server_long_after_it_ends() {
    let s = Scenario::slowdown(0.8).with_duration(Duration::from_secs(6));
    let r = run(&s, Stack::Unprotected);
    assert_eq!(r.phases.len(), 3);
    assert!(
        r.phases[0].goodput() > 0.75,
        "before {:.3}",
        r.phases[0].goodput()
    );
    // The backlog built while slow is still being served, too late, after recovery.
    assert!(
        r.phases[2].goodput() < 0.2,
        "after {:.3}",
        r.phases[2].goodput()
    );
    let tower = run(&s, Stack::Tower);
    assert!(
        tower.phases[1].goodput() > 0.9,
        "tower while slow {:.3}",
        tower.phases[1].goodput()
    );
}
