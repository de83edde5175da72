//! The side-by-side text table: one block per phase, one row per stack.

use std::fmt::Write;

use brownout::Priority;

use crate::report::{ClassSummary, Demo, Summary};
use crate::servers::StackKind;

/// A run whose p99 send lateness exceeds this share of the deadline is flagged: the
/// generator, not the server, was the bottleneck for part of it.
pub const LATE_SHARE: f64 = 0.1;

/// `99.9% 123ms`: a class's success rate and p99 latency of its successful answers.
pub fn class_cell(c: &ClassSummary) -> String {
    let success = c
        .success_pct()
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}%"));
    let p99 = c
        .latency
        .map_or_else(|| "-".to_owned(), |p| format!("{:.0}ms", p.p99));
    format!("{success} {p99}")
}

/// Refusals by reason, most frequent first (`shed 812, queue_timeout 40`), or `-`.
pub fn reasons_cell(reasons: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = reasons.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if v.is_empty() {
        return "-".to_owned();
    }
    v.iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The level column: `5 changes, max high`, or `-` for stacks without a level.
pub fn levels_cell(s: &Summary) -> String {
    match s.max_level {
        Some(max) => format!("{} changes, max {}", s.level_changes, max.as_str()),
        None => "-".to_owned(),
    }
}

/// Renders every phase of `demo`.
pub fn render(demo: &Demo) -> String {
    let s = &demo.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backend: {} workers x {:.0} ms mean (exponential) = {:.0} req/s capacity; client deadline {:.0} ms; mix critical/high/medium/low/background 10/30/30/20/10 %",
        s.workers,
        s.service.as_secs_f64() * 1000.0,
        s.capacity(),
        s.deadline.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        out,
        "goodput: worker time spent on requests answered 2xx in time, % of capacity; per class: success % and p99 of successful answers"
    );
    for p in &demo.phases {
        let _ = writeln!(
            out,
            "\n== {}: {:.0} req/s offered for {:.1} s ==",
            p.phase.name,
            p.phase.load * s.capacity(),
            p.phase.duration.as_secs_f64()
        );
        let mut header = format!("{:<12} {:>8} {:>7}", "stack", "goodput", "ok");
        for class in Priority::ALL {
            let _ = write!(header, "  {:<14}", class.as_str());
        }
        let _ = write!(
            header,
            "  {:<34}  {:<14}  levels",
            "rejected by reason", "failed"
        );
        let _ = writeln!(out, "{header}");
        let mut lateness = Vec::new();
        for run in &p.runs {
            let sum = run.summary(&p.phase, s);
            let ok_pct = if sum.sent > 0 {
                100.0 * sum.ok as f64 / sum.sent as f64
            } else {
                0.0
            };
            let mut row = format!(
                "{:<12} {:>7.1}% {:>6.1}%",
                sum.stack.name(),
                sum.goodput_pct,
                ok_pct
            );
            for c in &sum.classes {
                let _ = write!(row, "  {:<14}", class_cell(c));
            }
            let _ = write!(
                row,
                "  {:<34}  {:<14}  {}",
                reasons_cell(&sum.rejections),
                reasons_cell(&sum.failures),
                levels_cell(&sum)
            );
            let _ = writeln!(out, "{}", row.trim_end());
            lateness.push(format!(
                "{} p99 {:.1} / max {:.1}",
                sum.stack.name(),
                sum.lateness.p99,
                sum.lateness_max
            ));
        }
        let _ = writeln!(out, "send lateness (ms): {}", lateness.join("; "));
    }
    let late: Vec<String> = demo
        .phases
        .iter()
        .flat_map(|p| p.runs.iter().map(move |r| (p, r)))
        .filter_map(|(p, r)| {
            let sum = r.summary(&p.phase, s);
            (sum.lateness.p99 > LATE_SHARE * s.deadline.as_secs_f64() * 1000.0).then(|| {
                format!(
                    "{} / {} (p99 {:.0} ms)",
                    p.phase.name, r.stack, sum.lateness.p99
                )
            })
        })
        .collect();
    if !late.is_empty() {
        let _ = writeln!(
            out,
            "\nwarning: the load generator fell behind its schedule in {}; latency counts from the intended send time, so those runs look worse than the server was (is the machine busy?)",
            late.join(", ")
        );
    }
    let _ = writeln!(out, "\nstacks:");
    for kind in StackKind::ALL {
        let _ = writeln!(out, "  {:<12} {}", kind.name(), kind.description());
    }
    let _ = write!(out, "wall time {:.1} s", demo.wall.as_secs_f64());
    out
}
