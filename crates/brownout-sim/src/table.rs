//! Plain-text tables of [`Report`]s, grouped by scenario.

use std::fmt::Write as _;
use std::time::Duration;

use brownout_core::Priority;

use crate::Report;

/// What each column of [`render`] means.
pub const LEGEND: &str = "\
Columns
  goodput   share of the backend's capacity (workers x time) spent on requests answered
            successfully within their deadline; during a slowdown, of the capacity left
  effic.    the same as % of min(offered work, capacity): 100 % is the best any scheduler could do
  prio      priority score: good answers weighted 16/8/4/2/1 (critical..background), as % of the
            same sum for a reference scheduler on the same arrivals (strict priority, no
            preemption, the best queue timeout in hindsight); 100 % = as good as the reference
  fluid     the same sum as % of the fluid bound (serve classes in priority order until the
            capacity is used); unreachable when the top classes offer about the capacity left
  crit..bg  % of each class answered within its deadline (offered mix 10/30/30/20/10 %)
  crit p99  99th-percentile latency of critical answers (unloaded: the service time alone)
  worst p99 the largest p99 latency of any class that got answers
  level     highest load level published / number of level changes (stacks with a monitor)
  not answered  requests not answered well, by reason (deadline = the client gave up at its
            deadline; overloaded = tower LoadShed; shed / queue_full / queue_timeout / rate_limited
            = brownout or bulkhead refusals)";

/// Renders reports as tables, one per scenario (in the order scenarios first appear),
/// followed by phase tables for slowdowns and a one-line verdict per scenario.
pub fn render(reports: &[Report]) -> String {
    let mut out = String::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in reports {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    for name in scenarios {
        let group: Vec<&Report> = reports.iter().filter(|r| r.scenario == name).collect();
        render_group(&mut out, &group);
    }
    out
}

fn pct(x: f64) -> String {
    if (0.9995..1.0).contains(&x) {
        // Do not round 99.96 % up to a misleading 100.0.
        format!("{:.2}", x * 100.0)
    } else {
        format!("{:.1}", x * 100.0)
    }
}

fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

fn render_group(out: &mut String, group: &[&Report]) {
    let Some(first) = group.first() else {
        return;
    };
    let _ = writeln!(
        out,
        "\n== {} == offered {:.0} req/s on a capacity of {:.0} req/s, deadline {} ms, {:.1} s virtual; \
         unloaded critical p99 {} ms",
        first.scenario,
        first.load * first.capacity,
        first.capacity,
        first.deadline.as_millis(),
        first.duration.as_secs_f64(),
        ms(first.unloaded_p99),
    );
    let _ = writeln!(
        out,
        "{:<18} {:>7} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>6} | {:>8} {:>9} | {:>11} | not answered",
        "stack",
        "goodput",
        "effic.",
        "prio",
        "fluid",
        "crit",
        "high",
        "medium",
        "low",
        "bg",
        "crit p99",
        "worst p99",
        "level"
    );
    for r in group {
        let classes: Vec<String> = r.classes.iter().map(|c| pct(c.success())).collect();
        let level = if r.levels.is_empty() {
            "-".to_owned()
        } else {
            format!("{}/{}", r.max_level(), r.levels.len())
        };
        let refusals: Vec<String> = r
            .rejections
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<18} {:>6}% {:>6}% {:>6}% {:>6}% | {:>6} {:>6} {:>6} {:>6} {:>6} | {:>8} {:>9} | {:>11} | {}",
            r.stack,
            pct(r.goodput()),
            pct(r.efficiency()),
            pct(r.priority_score()),
            pct(r.fluid_score()),
            classes[0],
            classes[1],
            classes[2],
            classes[3],
            classes[4],
            ms(r.class(Priority::Critical).p99),
            ms(r.worst_p99()),
            level,
            if refusals.is_empty() {
                "-".to_owned()
            } else {
                refusals.join(", ")
            },
        );
    }
    let _ = writeln!(out, "latency of good answers, p50/p99 ms:");
    for r in group {
        let cells: Vec<String> = r
            .classes
            .iter()
            .map(|c| {
                if c.good == 0 {
                    format!("{}: -", c.priority)
                } else {
                    format!("{}: {}/{}", c.priority, ms(c.p50), ms(c.p99))
                }
            })
            .collect();
        let _ = writeln!(out, "  {:<18} {}", r.stack, cells.join("  "));
    }
    if first.phases.len() > 1 {
        let _ = writeln!(
            out,
            "phases: goodput against the capacity left / efficiency, priority score / fluid score, \
             median concurrency limit; 'settled' leaves out the first second after a change:"
        );
        for r in group {
            let cells: Vec<String> = r
                .phases
                .iter()
                .chain(&r.settled)
                .map(|w| {
                    let limit = w
                        .limit_median
                        .map_or(String::new(), |m| format!(" limit {m:.0}"));
                    format!(
                        "{} {}%/{}% prio {}%/{}%{limit}",
                        w.label,
                        pct(w.goodput()),
                        pct(w.efficiency()),
                        pct(w.priority_score()),
                        pct(w.fluid_score())
                    )
                })
                .collect();
            let _ = writeln!(out, "  {:<18} {}", r.stack, cells.join(" | "));
        }
    }
    if let Some(best) = group.iter().max_by(|a, b| {
        (a.priority_score().min(1.0), a.goodput())
            .partial_cmp(&(b.priority_score().min(1.0), b.goodput()))
            .unwrap_or(std::cmp::Ordering::Equal)
    }) {
        let _ = writeln!(
            out,
            "best: {} (priority score {}%, goodput {}%, critical answered {}%)",
            best.stack,
            pct(best.priority_score()),
            pct(best.goodput()),
            pct(best.class(Priority::Critical).success()),
        );
    }
}
