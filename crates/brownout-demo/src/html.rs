//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, nothing
//! fetched) with the summary charts, and per phase the side-by-side table, goodput over
//! time, the brownout server's goodput per class and its level.

use std::fmt::Write;

use brownout::{BoxError, Priority};

use crate::plot;
use crate::report::{Demo, PhaseRuns};
use crate::servers::StackKind;
use crate::table::{class_cell, levels_cell, reasons_cell};

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG document as an inline element (any XML prologue dropped).
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1500px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:12px}\
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}\
th{background:#f3f3f3}td.stack,td.text{text-align:left}\
.scroll{overflow-x:auto}\
.charts{display:flex;flex-wrap:wrap;gap:8px}\
.charts figure{flex:1 1 600px;max-width:760px;margin:0;min-width:0}\
#goodput{flex-basis:100%;max-width:1520px}\
svg{width:100%;height:auto}code{background:#f3f3f3;padding:0 3px}";

/// Renders the whole report.
///
/// # Errors
///
/// When a chart cannot be drawn.
pub fn render(demo: &Demo) -> Result<String, BoxError> {
    let s = &demo.settings;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>brownout overload demo</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(h, "<h1>brownout overload demo</h1>");
    let _ = writeln!(
        h,
        "<p>Real HTTP/2 (h2c) load on loopback. Each stack runs an axum server over its own \
         backend of <b>{} workers</b>, exponential service time of mean <b>{:.0} ms</b> \
         (capacity <b>{:.0} req/s</b>). Open-loop Poisson arrivals (seed {}), class mix \
         critical/high/medium/low/background 10/30/30/20/10 %, client deadline {:.0} ms \
         (sent as <code>grpc-timeout</code>; the client gives up then). Latency counts from \
         each request's intended send time. Wall time {:.1} s.</p>",
        s.workers,
        s.service.as_secs_f64() * 1000.0,
        s.capacity(),
        s.seed,
        s.deadline.as_secs_f64() * 1000.0,
        demo.wall.as_secs_f64()
    );
    let _ = writeln!(h, "<ul>");
    for kind in StackKind::ALL {
        let _ = writeln!(
            h,
            "<li><b>{}</b>: {}</li>",
            kind.name(),
            escape(kind.description())
        );
    }
    let _ = writeln!(h, "</ul>");
    let _ = writeln!(
        h,
        "<p><b>Goodput</b> is the worker time spent on requests answered 2xx within the \
         deadline, as a share of the backend's capacity over the phase. Per class: success \
         rate and p99 latency of the successful answers.</p>"
    );
    let _ = writeln!(h, "<h2>Summary</h2><div class=\"charts\">");
    let _ = writeln!(
        h,
        "<figure id=\"goodput\">{}</figure>",
        inline_svg(&plot::goodput_by_load(demo)?)
    );
    let _ = writeln!(
        h,
        "<figure id=\"latency\">{}</figure>",
        inline_svg(&plot::latency_by_phase(demo)?)
    );
    let _ = writeln!(h, "</div>");
    for (i, p) in demo.phases.iter().enumerate() {
        phase_section(&mut h, demo, i, p)?;
    }
    let _ = writeln!(h, "</body></html>");
    Ok(h)
}

fn phase_section(h: &mut String, demo: &Demo, i: usize, p: &PhaseRuns) -> Result<(), BoxError> {
    let s = &demo.settings;
    let _ = writeln!(
        h,
        "<h2 id=\"phase-{i}\">{}</h2><p>{:.0} req/s offered for {:.1} s{}</p>",
        escape(&p.phase.name),
        p.phase.load * s.capacity(),
        p.phase.duration.as_secs_f64(),
        p.phase.slowdown.map_or_else(String::new, |sd| format!(
            "; the backend is {}× slower from {:.1} s to {:.1} s",
            crate::fmt_num(sd.factor),
            sd.start.as_secs_f64(),
            sd.end.as_secs_f64()
        ))
    );
    let _ = write!(
        h,
        "<div class=\"scroll\"><table class=\"summary\"><tr><th>stack</th><th>sent</th><th>goodput</th>\
         <th>ok</th><th>rejected</th><th>failed</th>"
    );
    for class in Priority::ALL {
        let _ = write!(h, "<th>{}</th>", class.as_str());
    }
    let _ = writeln!(
        h,
        "<th>p50 / p99</th><th>rejected by reason</th><th>failed by kind</th>\
         <th>levels</th><th>send lateness p99 / max</th></tr>"
    );
    for run in &p.runs {
        let sum = run.summary(&p.phase, s);
        let _ = write!(
            h,
            "<tr data-stack=\"{0}\"><td class=\"stack\">{0}</td><td>{1}</td><td>{2:.1}%</td>\
             <td>{3}</td><td>{4}</td><td>{5}</td>",
            sum.stack.name(),
            sum.sent,
            sum.goodput_pct,
            sum.ok,
            sum.rejected,
            sum.failed
        );
        for c in &sum.classes {
            let _ = write!(h, "<td>{}</td>", escape(&class_cell(c)));
        }
        let lat = sum.latency.map_or_else(
            || "-".to_owned(),
            |l| format!("{:.0} / {:.0} ms", l.p50, l.p99),
        );
        let _ = writeln!(
            h,
            "<td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>\
             <td class=\"text\">{}</td><td>{:.1} / {:.1} ms</td></tr>",
            lat,
            escape(&reasons_cell(&sum.rejections)),
            escape(&reasons_cell(&sum.failures)),
            escape(&levels_cell(&sum)),
            sum.lateness.p99,
            sum.lateness_max
        );
    }
    let _ = writeln!(h, "</table></div><div class=\"charts\">");
    let _ = writeln!(
        h,
        "<figure>{}</figure>",
        inline_svg(&plot::goodput_over_time(p, s)?)
    );
    if let Some(run) = p.runs.iter().find(|r| r.stack == StackKind::Brownout) {
        let _ = writeln!(
            h,
            "<figure>{}</figure>",
            inline_svg(&plot::class_goodput_over_time(p, run, s)?)
        );
        let _ = writeln!(
            h,
            "<figure>{}</figure>",
            inline_svg(&plot::level_timeline(p, run, s)?)
        );
        let _ = writeln!(h, "</div>");
        if !run.changes.is_empty() {
            let _ = write!(
                h,
                "<details><summary>{} level changes</summary><table><tr><th>at</th>\
                 <th>from</th><th>to</th><th>cause</th></tr>",
                run.changes.len()
            );
            for c in &run.changes {
                let _ = write!(
                    h,
                    "<tr><td>{:.2} s</td><td class=\"text\">{}</td><td class=\"text\">{}</td>\
                     <td class=\"text\">{}</td></tr>",
                    c.at.as_secs_f64(),
                    c.from.as_str(),
                    c.to.as_str(),
                    escape(&c.cause)
                );
            }
            let _ = writeln!(h, "</table></details>");
        }
    } else {
        let _ = writeln!(h, "</div>");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            inline_svg("<?xml version=\"1.0\"?>\n<svg></svg>"),
            "<svg></svg>"
        );
    }
}
