//! The report's pictures: SVG line charts drawn with `plotters`' SVG backend, returned as
//! strings to inline in the HTML (or write as `.svg` files).

use std::ops::Range;
use std::time::Duration;

use brownout::{BoxError, LoadLevel, Priority};
use plotters::prelude::*;

use crate::report::{Demo, PhaseRuns, Run, Settings, Summary};
use crate::servers::StackKind;

/// The width and height of every chart, in pixels.
pub const SIZE: (u32, u32) = (760, 320);

/// How wide one bin of the goodput-over-time chart is.
pub const BIN: Duration = Duration::from_millis(250);

/// How wide one bin of the per-class chart is (wider: each class is a fraction of the
/// traffic, and exponential work makes short bins noisy).
pub const CLASS_BIN: Duration = Duration::from_millis(500);

/// The colour of a stack in every chart.
pub const fn stack_color(stack: StackKind) -> RGBColor {
    match stack {
        StackKind::Unprotected => RGBColor(214, 39, 40),
        StackKind::Tower => RGBColor(255, 127, 14),
        StackKind::Brownout => RGBColor(44, 160, 44),
    }
}

/// The colour of a class in every chart.
pub const fn class_color(class: Priority) -> RGBColor {
    match class {
        Priority::Critical => RGBColor(31, 119, 180),
        Priority::High => RGBColor(44, 160, 44),
        Priority::Medium => RGBColor(255, 127, 14),
        Priority::Low => RGBColor(214, 39, 40),
        Priority::Background => RGBColor(127, 127, 127),
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    /// Its legend entry.
    pub name: String,
    /// Its colour.
    pub color: RGBColor,
    /// Stroke width in pixels.
    pub width: u32,
    /// Draw a dot at each point.
    pub markers: bool,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// Axis descriptions and tick labels of a chart.
pub struct Axes<'a> {
    /// The chart's title.
    pub title: &'a str,
    /// The x axis' description.
    pub x_desc: &'a str,
    /// The y axis' description.
    pub y_desc: &'a str,
    /// The x range.
    pub x: Range<f64>,
    /// The y range.
    pub y: Range<f64>,
    /// How many x tick labels (at most).
    pub x_labels: usize,
    /// How many y tick labels (at most).
    pub y_labels: usize,
    /// The x tick label of a value.
    pub x_fmt: &'a dyn Fn(&f64) -> String,
    /// The y tick label of a value.
    pub y_fmt: &'a dyn Fn(&f64) -> String,
    /// Where the legend goes (`None`: no legend).
    pub legend: Option<SeriesLabelPosition>,
}

impl std::fmt::Debug for Axes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Axes")
            .field("title", &self.title)
            .field("x", &self.x)
            .field("y", &self.y)
            .finish_non_exhaustive()
    }
}

fn err<E: std::fmt::Display>(e: E) -> BoxError {
    format!("drawing a chart: {e}").into()
}

/// Draws `lines` on `axes` as an SVG document.
///
/// # Errors
///
/// When plotters fails to draw (it should not with finite points).
pub fn chart(axes: &Axes<'_>, lines: &[Line]) -> Result<String, BoxError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root, axes, lines)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Draws `lines` on `axes` into one drawing area.
fn draw(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    axes: &Axes<'_>,
    lines: &[Line],
) -> Result<(), BoxError> {
    {
        let mut chart = ChartBuilder::on(area)
            .caption(axes.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(axes.x.clone(), axes.y.clone())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .x_labels(axes.x_labels)
            .y_labels(axes.y_labels)
            .x_label_formatter(axes.x_fmt)
            .y_label_formatter(axes.y_fmt)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        for line in lines {
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let color = line.color;
            let width = line.width;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))
                .map_err(err)?
                .label(line.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width.max(2)))
                });
            if line.markers {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(err)?;
            }
        }
        if let Some(position) = axes.legend.clone() {
            chart
                .configure_series_labels()
                .position(position)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}

fn phase_label(demo: &Demo) -> impl Fn(&f64) -> String + '_ {
    move |x: &f64| {
        let i = x.round();
        if (x - i).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        demo.phases
            .get(i as usize)
            .map(|p| p.phase.name.clone())
            .unwrap_or_default()
    }
}

fn pct(y: &f64) -> String {
    format!("{y:.0}%")
}

fn millis(y: &f64) -> String {
    format!("{y:.0} ms")
}

fn secs(x: &f64) -> String {
    format!("{x:.1} s")
}

/// One line per stack through the phases, of the figure `pick` takes from a summary.
fn per_phase_lines(demo: &Demo, pick: impl Fn(&Summary) -> Option<f64>) -> Vec<Line> {
    StackKind::ALL
        .into_iter()
        .map(|stack| Line {
            name: stack.name().to_owned(),
            color: stack_color(stack),
            width: 3,
            markers: true,
            points: demo
                .phases
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let run = p.runs.iter().find(|r| r.stack == stack)?;
                    Some((i as f64, pick(&run.summary(&p.phase, &demo.settings))?))
                })
                .collect(),
        })
        .collect()
}

/// The headline picture (also written as `goodput.svg`): goodput per stack and phase on
/// the left, Critical requests answered in time on the right.
///
/// # Errors
///
/// See [`chart`].
pub fn goodput_by_load(demo: &Demo) -> Result<String, BoxError> {
    let n = demo.phases.len().max(1) as f64;
    let label = phase_label(demo);
    let x_labels = demo.phases.len().max(2) * 2 + 1;
    let goodput = per_phase_lines(demo, |s| Some(s.goodput_pct));
    let critical = per_phase_lines(demo, |s| s.classes.first()?.success_pct());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0 * 2, SIZE.1 + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(SIZE.0);
        draw(
            &left,
            &Axes {
                title: "Goodput: worker time answered in time, % of capacity",
                x_desc: "phase",
                y_desc: "goodput",
                x: -0.5..(n - 0.5),
                y: 0.0..110.0,
                x_labels,
                y_labels: 12,
                x_fmt: &label,
                y_fmt: &pct,
                legend: Some(SeriesLabelPosition::LowerLeft),
            },
            &goodput,
        )?;
        draw(
            &right,
            &Axes {
                title: "Critical requests answered in time",
                x_desc: "phase",
                y_desc: "success",
                x: -0.5..(n - 0.5),
                y: 0.0..110.0,
                x_labels,
                y_labels: 12,
                x_fmt: &label,
                y_fmt: &pct,
                legend: Some(SeriesLabelPosition::LowerLeft),
            },
            &critical,
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// p50 and p99 latency of successful answers, per stack and phase.
///
/// # Errors
///
/// See [`chart`].
pub fn latency_by_phase(demo: &Demo) -> Result<String, BoxError> {
    let n = demo.phases.len().max(1) as f64;
    let mut lines = Vec::new();
    for stack in StackKind::ALL {
        for (name, width, pick) in [
            (
                "p99",
                3u32,
                (|p: &crate::report::Percentiles| p.p99) as fn(&_) -> f64,
            ),
            ("p50", 1u32, |p: &crate::report::Percentiles| p.p50),
        ] {
            lines.push(Line {
                name: format!("{} {name}", stack.name()),
                color: stack_color(stack),
                width,
                markers: true,
                points: demo
                    .phases
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let run = p.runs.iter().find(|r| r.stack == stack)?;
                        let lat = run.summary(&p.phase, &demo.settings).latency?;
                        Some((i as f64, pick(&lat)))
                    })
                    .collect(),
            });
        }
    }
    let label = phase_label(demo);
    let top = demo.settings.deadline.as_secs_f64() * 1000.0 * 1.5;
    chart(
        &Axes {
            title: "Latency of successful answers (p50 thin, p99 thick)",
            x_desc: "phase",
            y_desc: "latency",
            x: -0.5..(n - 0.5),
            y: 0.0..top,
            x_labels: demo.phases.len().max(2) * 2 + 1,
            y_labels: 12,
            x_fmt: &label,
            y_fmt: &millis,
            legend: Some(SeriesLabelPosition::UpperLeft),
        },
        &lines,
    )
}

fn timeline_x(p: &PhaseRuns, settings: &Settings) -> Range<f64> {
    0.0..(p.phase.duration + settings.deadline).as_secs_f64()
}

fn bin_points(values: &[f64], bin: Duration) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| ((i as f64 + 0.5) * bin.as_secs_f64(), *v))
        .collect()
}

/// Goodput over time of each stack through one phase.
///
/// # Errors
///
/// See [`chart`].
pub fn goodput_over_time(p: &PhaseRuns, settings: &Settings) -> Result<String, BoxError> {
    let lines: Vec<Line> = p
        .runs
        .iter()
        .map(|run| {
            let per_class = run.goodput_timeline(&p.phase, settings, BIN);
            let total: Vec<f64> = (0..per_class[0].len())
                .map(|i| per_class.iter().map(|c| c[i]).sum())
                .collect();
            Line {
                name: run.stack.name().to_owned(),
                color: stack_color(run.stack),
                width: 2,
                markers: false,
                points: bin_points(&total, BIN),
            }
        })
        .collect();
    let title = format!("{}: goodput over time (250 ms bins)", p.phase.name);
    chart(
        &Axes {
            title: &title,
            x_desc: "time since the phase began",
            y_desc: "goodput, % of capacity",
            x: timeline_x(p, settings),
            y: 0.0..140.0,
            x_labels: 12,
            y_labels: 8,
            x_fmt: &secs,
            y_fmt: &pct,
            legend: Some(SeriesLabelPosition::UpperRight),
        },
        &lines,
    )
}

/// Goodput over time per class of one run (the brownout run in the report).
///
/// # Errors
///
/// See [`chart`].
pub fn class_goodput_over_time(
    p: &PhaseRuns,
    run: &Run,
    settings: &Settings,
) -> Result<String, BoxError> {
    let per_class = run.goodput_timeline(&p.phase, settings, CLASS_BIN);
    let lines: Vec<Line> = Priority::ALL
        .into_iter()
        .map(|class| Line {
            name: class.as_str().to_owned(),
            color: class_color(class),
            width: 2,
            markers: false,
            points: bin_points(&per_class[class.index()], CLASS_BIN),
        })
        .collect();
    let title = format!(
        "{}: {} goodput per class over time (500 ms bins)",
        p.phase.name,
        run.stack.name()
    );
    chart(
        &Axes {
            title: &title,
            x_desc: "time since the phase began",
            y_desc: "goodput, % of capacity",
            x: timeline_x(p, settings),
            y: 0.0..100.0,
            x_labels: 12,
            y_labels: 8,
            x_fmt: &secs,
            y_fmt: &pct,
            legend: Some(SeriesLabelPosition::UpperRight),
        },
        &lines,
    )
}

/// The brownout server's level over time through one phase (a step line).
///
/// # Errors
///
/// See [`chart`].
pub fn level_timeline(p: &PhaseRuns, run: &Run, settings: &Settings) -> Result<String, BoxError> {
    let mut points = Vec::with_capacity(run.levels.len() * 2);
    let mut last: Option<f64> = None;
    for (at, level) in &run.levels {
        let x = at.as_secs_f64();
        let y = f64::from(level.as_u8());
        if let Some(prev) = last {
            points.push((x, prev));
        }
        points.push((x, y));
        last = Some(y);
    }
    let level_name = |y: &f64| {
        let r = y.round();
        if (y - r).abs() > 1e-6 || r < 0.0 {
            return String::new();
        }
        LoadLevel::from_u8(r as u8)
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default()
    };
    let title = format!("{}: {} load level", p.phase.name, run.stack.name());
    chart(
        &Axes {
            title: &title,
            x_desc: "time since the phase began",
            y_desc: "level",
            x: timeline_x(p, settings),
            y: -0.2..4.4,
            x_labels: 12,
            y_labels: 24,
            x_fmt: &secs,
            y_fmt: &level_name,
            legend: None,
        },
        &[Line {
            name: "level".to_owned(),
            color: stack_color(run.stack),
            width: 2,
            markers: false,
            points,
        }],
    )
}
