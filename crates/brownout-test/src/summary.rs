//! [`Summary`]: what a [`LoadDriver`](crate::LoadDriver) run measured, per class and in total.

use std::fmt;
use std::time::Duration;

use brownout_core::{LoadLevel, Priority, RejectReason};

use crate::driver::{Judged, Verdict};

const REASONS: usize = RejectReason::ALL.len();

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Answered successfully.
    Ok {
        /// From sending to the answer.
        latency: Duration,
        /// The backend's service time, when the response said ([`Served`](crate::Served)).
        service_time: Option<Duration>,
    },
    /// Refused by a brownout layer.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// From sending to the refusal.
        latency: Duration,
    },
    /// Refused by tower's `LoadShed`.
    Overloaded {
        /// From sending to the refusal.
        latency: Duration,
    },
    /// Failed with any other error or an error response.
    Failed {
        /// From sending to the failure.
        latency: Duration,
    },
    /// No answer by the deadline: the client gave up (dropped the response future).
    TimedOut,
    /// The service panicked while serving it.
    Panicked,
    /// Still running when the run ended (a judge that never finished).
    Unfinished,
}

impl Outcome {
    pub(crate) fn from_verdict(judged: Judged, latency: Duration) -> Outcome {
        match judged.verdict {
            Verdict::Ok => Outcome::Ok {
                latency,
                service_time: judged.service_time,
            },
            Verdict::Rejected(reason) => Outcome::Rejected { reason, latency },
            Verdict::Overloaded => Outcome::Overloaded { latency },
            Verdict::Failed => Outcome::Failed { latency },
        }
    }

    /// Whether it was answered successfully.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
}

/// One request of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When it was sent, from the start of the run.
    pub at: Duration,
    /// Its class.
    pub priority: Priority,
    /// How it ended.
    pub outcome: Outcome,
}

/// A change of a watched load level ([`LoadDriverBuilder::watch`](crate::LoadDriverBuilder::watch)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelChange {
    /// When, from the start of the run.
    pub at: Duration,
    /// The new level.
    pub level: LoadLevel,
}

/// The figures of one class, or of every class together ([`Summary::total`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSummary {
    /// The class; `None` for the total.
    pub priority: Option<Priority>,
    /// Requests sent.
    pub sent: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Failed (an error that is not a rejection, or a `5xx` that is not one).
    pub failed: u64,
    /// Refused by tower's `LoadShed`.
    pub overloaded: u64,
    /// Not answered by the deadline (the client gave up), or still unfinished at the end.
    pub timed_out: u64,
    /// Lost to a panic in the service.
    pub panicked: u64,
    rejected: [u64; REASONS],
    /// Median latency of the successful answers (zero when none).
    pub p50: Duration,
    /// 99th-percentile latency of the successful answers (zero when none).
    pub p99: Duration,
    /// Slowest successful answer.
    pub max: Duration,
}

impl ClassSummary {
    fn new(priority: Option<Priority>, records: &[&Record]) -> ClassSummary {
        let mut summary = ClassSummary {
            priority,
            sent: 0,
            ok: 0,
            failed: 0,
            overloaded: 0,
            timed_out: 0,
            panicked: 0,
            rejected: [0; REASONS],
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
        };
        let mut latencies = Vec::new();
        for record in records {
            summary.sent += 1;
            match record.outcome {
                Outcome::Ok { latency, .. } => {
                    summary.ok += 1;
                    latencies.push(latency);
                }
                Outcome::Rejected { reason, .. } => {
                    if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
                        summary.rejected[i] += 1;
                    }
                }
                Outcome::Overloaded { .. } => summary.overloaded += 1,
                Outcome::Failed { .. } => summary.failed += 1,
                Outcome::TimedOut | Outcome::Unfinished => summary.timed_out += 1,
                Outcome::Panicked => summary.panicked += 1,
            }
        }
        latencies.sort_unstable();
        summary.p50 = percentile(&latencies, 0.50);
        summary.p99 = percentile(&latencies, 0.99);
        summary.max = latencies.last().copied().unwrap_or_default();
        summary
    }

    /// Refused for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.rejected[i])
    }

    /// Refused by brownout layers, every reason together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Each reason that refused at least one request, with its count, most first.
    pub fn rejections(&self) -> Vec<(RejectReason, u64)> {
        let mut out: Vec<(RejectReason, u64)> = RejectReason::ALL
            .into_iter()
            .zip(self.rejected)
            .filter(|(_, n)| *n > 0)
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.1));
        out
    }

    /// Refused by any layer: brownout rejections plus tower's `Overloaded`.
    pub fn refused(&self) -> u64 {
        self.rejected_total() + self.overloaded
    }

    /// The share answered successfully (1.0 when none was sent).
    pub fn success_rate(&self) -> f64 {
        ratio(self.ok, self.sent)
    }

    /// The share refused by a layer ([`refused`](Self::refused); 0.0 when none was sent).
    pub fn rejection_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.refused() as f64 / self.sent as f64
        }
    }

    /// The share that failed, timed out or panicked (0.0 when none was sent).
    pub fn failure_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.failed + self.timed_out + self.panicked) as f64 / self.sent as f64
        }
    }

    /// The class's name (`total` for the total).
    pub fn name(&self) -> &'static str {
        self.priority.map_or("total", Priority::as_str)
    }
}

impl fmt::Display for ClassSummary {
    /// `low: sent 640, ok 12 (1.9 %), refused 628 (shed 600, queue_full 28), failed 0,
    /// timed out 0, p50/p99/max 12/40/41 ms`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: sent {}, ok {} ({:.1} %), refused {}",
            self.name(),
            self.sent,
            self.ok,
            self.success_rate() * 100.0,
            self.refused()
        )?;
        let mut reasons: Vec<String> = self
            .rejections()
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        if self.overloaded > 0 {
            reasons.push(format!("overloaded {}", self.overloaded));
        }
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        write!(f, ", failed {}, timed out {}", self.failed, self.timed_out)?;
        if self.panicked > 0 {
            write!(f, ", panicked {}", self.panicked)?;
        }
        write!(
            f,
            ", p50/p99/max {}/{}/{} ms",
            self.p50.as_millis(),
            self.p99.as_millis(),
            self.max.as_millis()
        )
    }
}

/// What a [`LoadDriver`](crate::LoadDriver) run measured.
///
/// Its `Display` is one line per class and a total, which the [assertions](crate::assert)
/// print when they fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    classes: [ClassSummary; Priority::COUNT],
    total: ClassSummary,
    records: Vec<Record>,
    levels: Vec<LevelChange>,
    duration: Duration,
    deadline: Duration,
}

impl Summary {
    /// A summary of `records` (a run of `duration` with client deadline `deadline`).
    pub fn new(
        records: Vec<Record>,
        levels: Vec<LevelChange>,
        duration: Duration,
        deadline: Duration,
    ) -> Summary {
        let classes = Priority::ALL.map(|p| {
            let of_class: Vec<&Record> = records.iter().filter(|r| r.priority == p).collect();
            ClassSummary::new(Some(p), &of_class)
        });
        let all: Vec<&Record> = records.iter().collect();
        Summary {
            classes,
            total: ClassSummary::new(None, &all),
            records,
            levels,
            duration,
            deadline,
        }
    }

    /// The figures of one class.
    pub fn class(&self, priority: Priority) -> &ClassSummary {
        &self.classes[priority.index()]
    }

    /// Every class, Critical first.
    pub fn classes(&self) -> &[ClassSummary; Priority::COUNT] {
        &self.classes
    }

    /// Every class together.
    pub fn total(&self) -> &ClassSummary {
        &self.total
    }

    /// Successful answers per second of arrivals.
    pub fn goodput(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.total.ok as f64 / secs
        }
    }

    /// Every request, in sending order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The level changes of the watched signal, in order (empty when none was watched).
    pub fn levels(&self) -> &[LevelChange] {
        &self.levels
    }

    /// The highest level the watched signal published (Normal when none).
    pub fn max_level(&self) -> LoadLevel {
        crate::driver::max_level(&self.levels)
    }

    /// How long requests arrived.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The client deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for class in self.classes.iter().filter(|c| c.sent > 0) {
            writeln!(f, "  {class}")?;
        }
        write!(
            f,
            "  {} ({:.1} answers/s over {:?})",
            self.total,
            self.goodput(),
            self.duration
        )?;
        if !self.levels.is_empty() {
            write!(f, "; max level {}", self.max_level())?;
        }
        Ok(())
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// The `q` quantile of sorted samples, nearest rank (zero when empty).
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(priority: Priority, outcome: Outcome) -> Record {
        Record {
            at: Duration::ZERO,
            priority,
            outcome,
        }
    }

    #[test]
    fn counts_and_rates_per_class_and_in_total() {
        let ms = Duration::from_millis;
        let ok = |n| Outcome::Ok {
            latency: ms(n),
            service_time: None,
        };
        let records = vec![
            record(Priority::High, ok(10)),
            record(Priority::High, ok(30)),
            record(Priority::Low, ok(20)),
            record(
                Priority::Low,
                Outcome::Rejected {
                    reason: RejectReason::Shed,
                    latency: ms(0),
                },
            ),
            record(Priority::Low, Outcome::Overloaded { latency: ms(0) }),
            record(Priority::Low, Outcome::TimedOut),
        ];
        let s = Summary::new(records, Vec::new(), Duration::from_secs(2), ms(500));
        let low = s.class(Priority::Low);
        assert_eq!(
            (low.sent, low.ok, low.refused(), low.timed_out),
            (4, 1, 2, 1)
        );
        assert_eq!(low.rejected(RejectReason::Shed), 1);
        assert_eq!(low.rejected(RejectReason::QueueFull), 0);
        assert_eq!(low.success_rate(), 0.25);
        assert_eq!(low.rejection_rate(), 0.5);
        assert_eq!(low.failure_rate(), 0.25);
        let high = s.class(Priority::High);
        assert_eq!((high.p50, high.p99, high.max), (ms(10), ms(30), ms(30)));
        assert_eq!(s.total().sent, 6);
        assert_eq!(s.total().ok, 3);
        assert_eq!(s.goodput(), 1.5);
        assert_eq!(s.class(Priority::Critical).success_rate(), 1.0);
        assert_eq!(s.max_level(), LoadLevel::Normal);
        let text = s.to_string();
        assert!(
            text.contains("low: sent 4, ok 1 (25.0 %), refused 2 (shed 1, overloaded 1)"),
            "{text}"
        );
    }
}
