//! The overload demo with real HTTP load: unprotected vs plain tower vs brownout, on
//! loopback.
//!
//! [`run`] starts, for each phase and stack in turn, an axum server on `127.0.0.1:0` over
//! its own simulated [`Backend`] (`workers` workers, exponential service
//! times), opens h2c keep-alive connections to it, and sends the phase's open-loop Poisson
//! traffic ([`loadgen`]): five classes in `x-priority`, a `grpc-timeout` deadline, latency
//! timed from each request's intended send time. Phases step through load multiples
//! (0.5×, 1×, 2×, 4× by default) and a backend slowdown (service time × 3 in the middle
//! third). The three stacks ([`StackKind`]):
//!
//! - **unprotected**: the handler alone; requests queue for a worker without bound;
//! - **tower**: `LoadShedLayer` + `ConcurrencyLimitLayer(workers)` + `TimeoutLayer`, errors
//!   mapped to 503 / 504 by axum's `HandleErrorLayer`;
//! - **brownout**: `brownout::Brownout::builder()` configured by
//!   [`BrownoutSettings::tuned`].
//!
//! It prints a side-by-side table ([`table`]) or a JSON summary, and writes a
//! self-contained HTML report with inline SVG plots ([`html`], [`plot`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), brownout::BoxError> {
//! let args = brownout_demo::cli::Args::parse(["--quick", "--out", "/tmp/demo"])?;
//! let finished = brownout_demo::run(&args).await?;
//! println!("{}\nreport: {}", finished.table, finished.report.display());
//! # Ok(()) }
//! ```
//!
//! Everything is bounded: each phase sends a fixed timeline, every request ends by its
//! deadline, servers and backends are closed after each run.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backend;
pub mod cli;
pub mod html;
pub mod loadgen;
pub mod plot;
pub mod report;
pub mod servers;
pub mod table;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout::BoxError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::backend::{Backend, Slowdown};
use crate::cli::Args;
use crate::loadgen::{Client, MIX};
use crate::report::{Demo, LevelChange, Phase, PhaseRuns, Run, Settings};
use crate::servers::Server;
pub use crate::servers::{BrownoutSettings, StackKind};

/// How often the brownout server's level is sampled during a run.
pub const LEVEL_SAMPLE: Duration = Duration::from_millis(50);

/// What [`run`] produced.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Everything measured.
    pub demo: Demo,
    /// The side-by-side text table.
    pub table: String,
    /// The JSON summary.
    pub json: serde_json::Value,
    /// The HTML report's path (absolute when it could be resolved).
    pub report: PathBuf,
}

/// The phases `args` asks for: one per load, then the slowdown.
pub fn phases(args: &Args) -> Vec<Phase> {
    let d = args.phase_duration();
    let mut out: Vec<Phase> = args
        .loads
        .iter()
        .map(|&load| Phase {
            name: format!("load {}x", fmt_num(load)),
            load,
            duration: d,
            slowdown: None,
        })
        .collect();
    if let Some(load) = args.slowdown_load {
        let duration = d.mul_f64(1.5);
        out.push(Phase {
            name: format!(
                "slowdown {}x at load {}x",
                fmt_num(args.slowdown_factor),
                fmt_num(load)
            ),
            load,
            duration,
            slowdown: Some(Slowdown {
                start: duration / 3,
                end: duration * 2 / 3,
                factor: args.slowdown_factor,
            }),
        });
    }
    out
}

/// A number without a trailing `.0` (`0.5`, `4`).
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Runs the whole demo and writes the report under `args.out`.
///
/// Shows a progress bar on stderr when it is a terminal and `--json` is off.
///
/// # Errors
///
/// A server that cannot bind, a connection that cannot be opened, or a report that cannot
/// be written.
pub async fn run(args: &Args) -> Result<Finished, BoxError> {
    let started = std::time::Instant::now();
    let settings = Settings {
        workers: args.workers,
        service: args.service,
        deadline: args.deadline,
        connections: args.connections,
        seed: args.seed,
    };
    let brownout = BrownoutSettings::tuned(args.workers, args.service, args.deadline);
    let phases = phases(args);
    let total_ms: u64 = phases
        .iter()
        .map(|p| p.duration.as_millis() as u64 * StackKind::ALL.len() as u64)
        .sum();
    let progress = progress_bar(total_ms, !args.json && std::io::stderr().is_terminal());
    let done_ms = Arc::new(AtomicU64::new(0));

    let mut results = Vec::with_capacity(phases.len());
    for (i, phase) in phases.into_iter().enumerate() {
        let arrivals = loadgen::arrivals(
            phase.load * settings.capacity(),
            phase.duration,
            &MIX,
            settings.service,
            args.seed.wrapping_add(i as u64),
        );
        let mut runs = Vec::with_capacity(StackKind::ALL.len());
        for stack in StackKind::ALL {
            progress.set_message(format!("{} · {}", phase.name, stack));
            let run = run_one(
                stack, &phase, &arrivals, &settings, &brownout, &progress, &done_ms,
            )
            .await?;
            done_ms.fetch_add(phase.duration.as_millis() as u64, Ordering::Relaxed);
            progress.set_position(done_ms.load(Ordering::Relaxed));
            runs.push(run);
        }
        results.push(PhaseRuns { phase, runs });
    }
    progress.finish_and_clear();

    let demo = Demo {
        settings,
        phases: results,
        wall: started.elapsed(),
    };
    std::fs::create_dir_all(&args.out)?;
    let report = args.out.join("report.html");
    std::fs::write(&report, html::render(&demo)?)?;
    // The absolute path, so that the printed line can be opened from anywhere.
    let report = std::fs::canonicalize(&report).unwrap_or(report);
    std::fs::write(args.out.join("goodput.svg"), plot::goodput_by_load(&demo)?)?;
    let json = demo.to_json(&report);
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(Finished {
        table: table::render(&demo),
        json,
        report,
        demo,
    })
}

fn progress_bar(total_ms: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:24}] {percent:>3}% {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn run_one(
    stack: StackKind,
    phase: &Phase,
    arrivals: &[loadgen::Arrival],
    settings: &Settings,
    brownout: &BrownoutSettings,
    progress: &ProgressBar,
    done_ms: &Arc<AtomicU64>,
) -> Result<Run, BoxError> {
    let backend = Backend::new(settings.workers, phase.slowdown);
    let server = Server::start(stack, backend.clone(), settings.deadline, brownout).await?;
    let client = Client::connect(server.addr(), settings.connections).await?;
    let t0 = Instant::now() + Duration::from_millis(20);
    backend.set_start(t0);

    let sampler = server.brownout().map(|b| {
        let signal = b.signal();
        let end = t0 + phase.duration + settings.deadline;
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval_at(t0, LEVEL_SAMPLE);
            loop {
                let now = tick.tick().await;
                if now > end {
                    break;
                }
                samples.push((now.saturating_duration_since(t0), signal.level()));
            }
            samples
        })
    });
    let base = done_ms.load(Ordering::Relaxed);
    let span = phase.duration.as_millis() as u64;
    let on_sent = |_n: usize| {
        let elapsed = Instant::now().saturating_duration_since(t0).as_millis() as u64;
        progress.set_position(base + elapsed.min(span));
    };
    let records = loadgen::drive(&client, arrivals, t0, settings.deadline, &on_sent).await;
    let levels = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let changes = server
        .brownout()
        .map(|b| {
            b.monitor()
                .snapshot()
                .transitions
                .into_iter()
                .filter(|t| t.at >= t0)
                .map(|t| LevelChange {
                    at: t.at.saturating_duration_since(t0),
                    from: t.from,
                    to: t.to,
                    cause: t.cause.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    drop(client);
    let stats = server.backend().stats();
    server.stop().await;
    Ok(Run {
        stack,
        records,
        levels,
        changes,
        backend: stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_loads_then_the_slowdown_in_its_middle_third() {
        let args = Args::parse([]).unwrap();
        let p = phases(&args);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "load 0.5x",
                "load 1x",
                "load 2x",
                "load 4x",
                "slowdown 3x at load 0.8x"
            ]
        );
        assert!(p[..4].iter().all(|p| p.duration == Duration::from_secs(5)));
        let slow = &p[4];
        assert_eq!(slow.duration, Duration::from_millis(7500));
        let sd = slow.slowdown.unwrap();
        assert_eq!(
            (sd.start, sd.end),
            (Duration::from_millis(2500), Duration::from_secs(5))
        );
        let none = phases(&Args::parse(["--slowdown-load", "0", "--loads", "3"]).unwrap());
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].name, "load 3x");
        assert_eq!(fmt_num(0.25), "0.25");
    }
}
