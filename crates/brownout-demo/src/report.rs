//! What a demo run measured, and the figures computed from it (goodput, success and latency
//! per class, rejections by reason, level changes, the generator's lateness), as Rust
//! values and as the JSON summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use brownout::{LoadLevel, Priority};
use serde_json::{Value, json};

use crate::backend::{BackendStats, Slowdown};
use crate::loadgen::{Outcome, Record};
use crate::servers::StackKind;

/// The demo's fixed settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Backend workers.
    pub workers: usize,
    /// Mean service time.
    pub service: Duration,
    /// Client deadline.
    pub deadline: Duration,
    /// h2c connections per server.
    pub connections: usize,
    /// Seed.
    pub seed: u64,
}

impl Settings {
    /// Nominal capacity in requests per second.
    pub fn capacity(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }
}

/// One phase: the same traffic through every stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// A label (`load 4x`, `slowdown 3x at load 0.8x`).
    pub name: String,
    /// Offered load as a multiple of nominal capacity.
    pub load: f64,
    /// How long requests are sent.
    pub duration: Duration,
    /// The backend slowdown, if any.
    pub slowdown: Option<Slowdown>,
}

/// One level change of the brownout server, from its monitor's transitions.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelChange {
    /// When, from the start of the run.
    pub at: Duration,
    /// The level before.
    pub from: LoadLevel,
    /// The level after.
    pub to: LoadLevel,
    /// Why (the signal and its value, or `cooldown`).
    pub cause: String,
}

/// One stack through one phase.
#[derive(Debug, Clone)]
pub struct Run {
    /// The stack.
    pub stack: StackKind,
    /// One record per request sent.
    pub records: Vec<Record>,
    /// The brownout server's level, sampled every 50 ms (empty for the others).
    pub levels: Vec<(Duration, LoadLevel)>,
    /// The brownout server's level changes during the run.
    pub changes: Vec<LevelChange>,
    /// What the backend did.
    pub backend: BackendStats,
}

/// Every stack through one phase.
#[derive(Debug, Clone)]
pub struct PhaseRuns {
    /// The phase.
    pub phase: Phase,
    /// One run per stack, in [`StackKind::ALL`] order.
    pub runs: Vec<Run>,
}

/// A whole demo run.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The settings.
    pub settings: Settings,
    /// Every phase.
    pub phases: Vec<PhaseRuns>,
    /// Wall time of the whole run.
    pub wall: Duration,
}

/// p50 / p90 / p99 in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One class of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSummary {
    /// The class.
    pub class: Priority,
    /// Requests sent.
    pub sent: u64,
    /// Answered 2xx within the deadline.
    pub ok: u64,
    /// Latency of the successful answers (`None` when there were none).
    pub latency: Option<Percentiles>,
}

impl ClassSummary {
    /// `ok / sent` in percent (`None` when nothing was sent).
    pub fn success_pct(&self) -> Option<f64> {
        (self.sent > 0).then(|| 100.0 * self.ok as f64 / self.sent as f64)
    }
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The stack.
    pub stack: StackKind,
    /// Requests sent.
    pub sent: u64,
    /// Answered 2xx within the deadline.
    pub ok: u64,
    /// Refused by the server within the deadline (429 / 503 / 504).
    pub rejected: u64,
    /// Given up at the deadline, connection errors, other statuses.
    pub failed: u64,
    /// Refusals by reason.
    pub rejections: BTreeMap<String, u64>,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// Worker time spent on requests answered in time, as a share of the backend's capacity
    /// over the phase, in percent.
    pub goodput_pct: f64,
    /// Successful answers per second.
    pub good_rps: f64,
    /// Per class, Critical first.
    pub classes: Vec<ClassSummary>,
    /// Latency of every successful answer.
    pub latency: Option<Percentiles>,
    /// How late the generator sent (p50 / p90 / p99), and the maximum, in milliseconds.
    pub lateness: Percentiles,
    /// The largest send lateness, in milliseconds.
    pub lateness_max: f64,
    /// Level changes (brownout only).
    pub level_changes: usize,
    /// The highest level reached (brownout only).
    pub max_level: Option<LoadLevel>,
    /// The backend's figures.
    pub backend: BackendStats,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// When the backend worked on a successful request, in milliseconds from the run's start:
/// the `worked` milliseconds that ended when the answer came (the loopback hop is
/// negligible next to the work). `None` for requests that did not succeed.
fn work_interval(r: &Record) -> Option<(f64, f64)> {
    match r.outcome {
        Outcome::Ok { worked } => {
            let done = ms(r.at + r.latency);
            Some((done - ms(worked), done))
        }
        _ => None,
    }
}

/// Worker time, in milliseconds, spent within `[from, to)` on requests answered in time.
///
/// Counting only the part of each request's work inside the window keeps the figure an
/// honest share of the window's capacity: work finishing after the phase (or, in a
/// slowdown, stretched by it) is not counted twice.
pub fn good_work_within(records: &[Record], from: f64, to: f64) -> f64 {
    records
        .iter()
        .filter_map(work_interval)
        .map(|(a, b)| (b.min(to) - a.max(from)).max(0.0))
        .sum()
}

/// The `q` quantile (nearest rank) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50 / p90 / p99 of `values` (sorted here).
pub fn percentiles(mut values: Vec<f64>) -> Option<Percentiles> {
    values.sort_by(f64::total_cmp);
    Some(Percentiles {
        p50: quantile(&values, 0.50)?,
        p90: quantile(&values, 0.90)?,
        p99: quantile(&values, 0.99)?,
    })
}

impl Run {
    /// The figures of this run through `phase`.
    pub fn summary(&self, phase: &Phase, settings: &Settings) -> Summary {
        let mut rejections = BTreeMap::new();
        let mut failures = BTreeMap::new();
        let (mut ok, mut rejected, mut failed) = (0u64, 0u64, 0u64);
        let mut class_sent = [0u64; Priority::COUNT];
        let mut class_lat: [Vec<f64>; Priority::COUNT] = Default::default();
        for r in &self.records {
            let c = r.class.index();
            class_sent[c] += 1;
            match &r.outcome {
                Outcome::Ok { .. } => {
                    ok += 1;
                    class_lat[c].push(ms(r.latency));
                }
                Outcome::Rejected { reason, .. } => {
                    rejected += 1;
                    *rejections.entry(reason.clone()).or_insert(0) += 1;
                }
                Outcome::Failed(f) => {
                    failed += 1;
                    *failures.entry(f.label()).or_insert(0) += 1;
                }
            }
        }
        let all_lat: Vec<f64> = class_lat.iter().flatten().copied().collect();
        let classes = Priority::ALL
            .into_iter()
            .zip(class_sent)
            .zip(class_lat)
            .map(|((class, sent), lat)| ClassSummary {
                class,
                sent,
                ok: lat.len() as u64,
                latency: percentiles(lat),
            })
            .collect();
        let capacity_ms = settings.workers as f64 * ms(phase.duration);
        let goodput_pct = if capacity_ms > 0.0 {
            100.0 * good_work_within(&self.records, 0.0, ms(phase.duration)) / capacity_ms
        } else {
            0.0
        };
        let secs = phase.duration.as_secs_f64();
        let lateness: Vec<f64> = self.records.iter().map(|r| ms(r.lateness)).collect();
        let lateness_max = lateness.iter().copied().fold(0.0, f64::max);
        Summary {
            stack: self.stack,
            sent: self.records.len() as u64,
            ok,
            rejected,
            failed,
            rejections,
            failures,
            goodput_pct,
            good_rps: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            classes,
            latency: percentiles(all_lat),
            lateness: percentiles(lateness).unwrap_or(Percentiles {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
            }),
            lateness_max,
            level_changes: self.changes.len(),
            max_level: self.levels.iter().map(|(_, l)| *l).max(),
            backend: self.backend,
        }
    }

    /// Goodput over time per class, in percent of capacity, in bins of `bin` by the time
    /// each answer came (covering the phase and one deadline after it).
    pub fn goodput_timeline(
        &self,
        phase: &Phase,
        settings: &Settings,
        bin: Duration,
    ) -> [Vec<f64>; Priority::COUNT] {
        let span = phase.duration + settings.deadline;
        let bins = (span.as_secs_f64() / bin.as_secs_f64()).ceil().max(1.0) as usize;
        let mut out: [Vec<f64>; Priority::COUNT] = Default::default();
        for v in &mut out {
            v.resize(bins, 0.0);
        }
        let width = ms(bin);
        let per_bin = settings.workers as f64 * width;
        for r in &self.records {
            if let Some((from, to)) = work_interval(r) {
                let first = (from.max(0.0) / width) as usize;
                let last = ((to / width) as usize).min(bins - 1);
                let series = &mut out[r.class.index()];
                for (i, value) in series.iter_mut().enumerate().take(last + 1).skip(first) {
                    let (lo, hi) = (i as f64 * width, (i + 1) as f64 * width);
                    let overlap = (to.min(hi) - from.max(lo)).max(0.0);
                    *value += 100.0 * overlap / per_bin;
                }
            }
        }
        out
    }
}

fn opt(x: Option<f64>) -> Value {
    match x {
        Some(v) if v.is_finite() => json!((v * 1000.0).round() / 1000.0),
        _ => Value::Null,
    }
}

fn pct_json(p: Option<Percentiles>) -> Value {
    match p {
        Some(p) => {
            json!({"p50": opt(Some(p.p50)), "p90": opt(Some(p.p90)), "p99": opt(Some(p.p99))})
        }
        None => Value::Null,
    }
}

impl Summary {
    /// This summary as JSON.
    pub fn to_json(&self, run: &Run) -> Value {
        let classes: Vec<Value> = self
            .classes
            .iter()
            .map(|c| {
                json!({
                    "class": c.class.as_str(),
                    "sent": c.sent,
                    "ok": c.ok,
                    "success_pct": opt(c.success_pct()),
                    "latency_ms": pct_json(c.latency),
                })
            })
            .collect();
        let changes: Vec<Value> = run
            .changes
            .iter()
            .map(|c| {
                json!({
                    "at_ms": opt(Some(ms(c.at))),
                    "from": c.from.as_str(),
                    "to": c.to.as_str(),
                    "cause": c.cause,
                })
            })
            .collect();
        json!({
            "stack": self.stack.name(),
            "sent": self.sent,
            "ok": self.ok,
            "rejected": self.rejected,
            "failed": self.failed,
            "rejections": self.rejections,
            "failures": self.failures,
            "goodput_pct": opt(Some(self.goodput_pct)),
            "good_rps": opt(Some(self.good_rps)),
            "classes": classes,
            "latency_ms": pct_json(self.latency),
            "lateness_ms": {
                "p50": opt(Some(self.lateness.p50)),
                "p99": opt(Some(self.lateness.p99)),
                "max": opt(Some(self.lateness_max)),
            },
            "level_changes": self.level_changes,
            "max_level": self.max_level.map(LoadLevel::as_str),
            "transitions": changes,
            "backend": {
                "started": self.backend.started,
                "abandoned": self.backend.abandoned,
                "nominal_busy_ms": opt(Some(self.backend.nominal_busy_ms)),
                "measured_busy_ms": opt(Some(self.backend.measured_busy_ms)),
            },
        })
    }
}

impl Demo {
    /// The machine-readable summary (`--json`): settings, and per phase and stack every
    /// figure of [`Summary`]; `report` is the HTML report's path.
    pub fn to_json(&self, report: &Path) -> Value {
        let s = &self.settings;
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|p| {
                let stacks: Vec<Value> = p
                    .runs
                    .iter()
                    .map(|r| r.summary(&p.phase, s).to_json(r))
                    .collect();
                json!({
                    "name": p.phase.name,
                    "load": p.phase.load,
                    "offered_rps": opt(Some(p.phase.load * s.capacity())),
                    "duration_s": p.phase.duration.as_secs_f64(),
                    "slowdown": p.phase.slowdown.map(|sd| json!({
                        "start_s": sd.start.as_secs_f64(),
                        "end_s": sd.end.as_secs_f64(),
                        "factor": sd.factor,
                    })),
                    "stacks": stacks,
                })
            })
            .collect();
        json!({
            "settings": {
                "workers": s.workers,
                "service_ms": ms(s.service),
                "deadline_ms": ms(s.deadline),
                "capacity_rps": opt(Some(s.capacity())),
                "connections": s.connections,
                "seed": s.seed,
            },
            "phases": phases,
            "wall_s": opt(Some(self.wall.as_secs_f64())),
            "report": report.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::Failure;

    fn record(class: Priority, at_ms: u64, latency_ms: u64, outcome: Outcome) -> Record {
        Record {
            class,
            at: Duration::from_millis(at_ms),
            lateness: Duration::from_millis(1),
            latency: Duration::from_millis(latency_ms),
            outcome,
            level: None,
        }
    }

    #[test]
    fn summary_accounts_for_every_request() {
        let settings = Settings {
            workers: 2,
            service: Duration::from_millis(10),
            deadline: Duration::from_millis(100),
            connections: 1,
            seed: 1,
        };
        let phase = Phase {
            name: "t".into(),
            load: 1.0,
            duration: Duration::from_secs(1),
            slowdown: None,
        };
        let ok = |ms| Outcome::Ok {
            worked: Duration::from_millis(ms),
        };
        let run = Run {
            stack: StackKind::Tower,
            records: vec![
                record(Priority::Critical, 480, 20, ok(500)),
                record(Priority::Critical, 610, 40, ok(500)),
                record(
                    Priority::Low,
                    20,
                    1,
                    Outcome::Rejected {
                        status: 503,
                        reason: "overloaded".into(),
                    },
                ),
                record(Priority::Low, 30, 100, Outcome::Failed(Failure::GaveUp)),
            ],
            levels: vec![],
            changes: vec![],
            backend: BackendStats::default(),
        };
        let s = run.summary(&phase, &settings);
        assert_eq!((s.sent, s.ok, s.rejected, s.failed), (4, 2, 1, 1));
        assert_eq!(s.sent, s.ok + s.rejected + s.failed);
        assert_eq!(s.rejections["overloaded"], 1);
        assert_eq!(s.failures["gave_up"], 1);
        assert!((s.goodput_pct - 50.0).abs() < 1e-9);
        let critical = &s.classes[0];
        assert_eq!(critical.success_pct(), Some(100.0));
        assert_eq!(critical.latency.unwrap().p99, 40.0);
        assert_eq!(s.classes[3].latency, None);
        assert_eq!(s.classes[1].success_pct(), None);
        let timeline = run.goodput_timeline(&phase, &settings, Duration::from_millis(100));
        assert_eq!(timeline[0].len(), 11);
        // [0, 500) and [150, 650) ms: 100 ms of work per bin in [0, 100) … on 2 workers.
        assert!((timeline[0][0] - 50.0).abs() < 1e-9);
        assert!((timeline[0][2] - 100.0).abs() < 1e-9);
        assert!((timeline[0][6] - 25.0).abs() < 1e-9);
        assert_eq!(timeline[0][7], 0.0);
        let json = s.to_json(&run);
        assert_eq!(json["classes"][3]["latency_ms"], Value::Null);
        assert!(!json.to_string().contains("NaN"));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
