//! What a run measured: goodput, the priority score, per-class figures, rejections, levels.

use std::time::Duration;

use brownout_core::{LoadLevel, Priority};

use crate::Scenario;
use crate::backend::BackendStats;
use crate::json::Json;
use crate::reference::Reference;
use crate::scenario::Arrival;

/// The importance weight of each class in the [priority score](Report::priority_score),
/// Critical first: 16 / 8 / 4 / 2 / 1.
///
/// Each class weighs more than every class below it together (16 > 8 + 4 + 2 + 1), so
/// serving one more request of a class is always worth more than serving one more of
/// each lower class.
pub const WEIGHTS: [f64; Priority::COUNT] = [16.0, 8.0, 4.0, 2.0, 1.0];

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Still running when the run ended (never happens: every request ends by its deadline).
    Pending,
    /// Answered successfully (always within the deadline).
    Good {
        /// From arrival to answer.
        latency: Duration,
        /// How long it occupied a backend worker.
        worked: Duration,
    },
    /// Refused or failed, with the reason's name (`shed`, `queue_timeout`, `overloaded`…).
    Refused(&'static str),
    /// The client's deadline passed before an answer came: it gave up.
    GaveUp,
}

/// The name under which requests whose client gave up at the deadline are counted.
pub const GAVE_UP: &str = "deadline";

/// Figures for one request class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassStats {
    /// The class.
    pub priority: Priority,
    /// Requests of this class that arrived.
    pub offered: u64,
    /// Of those, answered successfully within their deadline.
    pub good: u64,
    /// Refused by a layer (any reason).
    pub refused: u64,
    /// Not answered by their deadline (the client gave up).
    pub gave_up: u64,
    /// How many of this class the [reference scheduler](Report#the-reference-scheduler)
    /// answers in time: the best a scheduler can do, the denominator of the
    /// [priority score](Report::priority_score).
    pub reference: u64,
    /// The fluid bound for this class: classes served in priority order until each
    /// phase's capacity is used (water-filling, [`water_fill`]), summed over the phases. An
    /// upper bound no real scheduler reaches when a class's load is near the capacity left.
    pub fluid: f64,
    /// Median latency of the good answers (zero when none).
    pub p50: Duration,
    /// 99th-percentile latency of the good answers (zero when none).
    pub p99: Duration,
    /// Slowest good answer.
    pub max: Duration,
}

impl ClassStats {
    /// The share of this class answered within its deadline (1.0 when none arrived).
    pub fn success(&self) -> f64 {
        if self.offered == 0 {
            1.0
        } else {
            self.good as f64 / self.offered as f64
        }
    }
}

/// Figures for the requests that arrived in one time window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// What the window is (`"whole run"`, `"slow"`, `"slow, settled"` …).
    pub label: String,
    /// Start, from the beginning of the run.
    pub from: Duration,
    /// End (exclusive).
    pub to: Duration,
    /// How many requests the backend can serve in the window (slowdown included).
    pub capacity: f64,
    /// Worker time available in the window: workers × its length.
    pub worker_time: Duration,
    /// Worker time spent inside the window on requests answered within their deadline (the
    /// part of each answer's work done between `from` and `to`).
    pub good_work: Duration,
    /// Worker time the requests that arrived in the window would need (their service time,
    /// times the slowdown factor at their arrival).
    pub offered_work: Duration,
    /// Arrivals per class, Critical first.
    pub offered: [u64; Priority::COUNT],
    /// Good answers per class.
    pub good: [u64; Priority::COUNT],
    /// Per class, how many of the requests that arrived in the window the
    /// [reference scheduler](Report#the-reference-scheduler) answers in time.
    pub reference: [u64; Priority::COUNT],
    /// The fluid bound per class: classes served in priority order until the window's
    /// capacity is used ([`water_fill`]).
    pub fluid: [f64; Priority::COUNT],
    /// The queue timeout the reference scheduler chose for the phase the window lies in.
    pub reference_timeout: Duration,
    /// Median of the sampled concurrency limit in the window, when the stack has one.
    pub limit_median: Option<f64>,
}

impl Window {
    /// Good answers of every class.
    pub fn total_good(&self) -> u64 {
        self.good.iter().sum()
    }

    /// Arrivals of every class.
    pub fn total_offered(&self) -> u64 {
        self.offered.iter().sum()
    }

    /// The share of the backend's worker time spent on good answers (see [`Report`]).
    pub fn goodput(&self) -> f64 {
        ratio(self.good_work.as_secs_f64(), self.worker_time.as_secs_f64())
    }

    /// Good work / `min(worker time, offered work)`: the share of what could have been
    /// served (see [`Report::efficiency`]).
    pub fn efficiency(&self) -> f64 {
        ratio(
            self.good_work.as_secs_f64(),
            self.worker_time.min(self.offered_work).as_secs_f64(),
        )
    }

    /// The [priority score](Report::priority_score) of the window, against the reference
    /// scheduler.
    pub fn priority_score(&self) -> f64 {
        weighted_score(&self.good, &self.reference.map(|n| n as f64))
    }

    /// The [score against the fluid bound](Report::fluid_score) of the window.
    pub fn fluid_score(&self) -> f64 {
        weighted_score(&self.good, &self.fluid)
    }
}

/// A change of the published load level (recorded by the load driver).
pub use brownout_test::LevelChange;

/// One sample of a stack's concurrency limit (every 100 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSample {
    /// When, from the start of the run.
    pub at: Duration,
    /// The limit then.
    pub limit: usize,
}

/// Everything one run of one stack measured.
///
/// # Definitions
///
/// - **capacity**: `workers / mean service time` requests per second (800 by default);
///   during a slowdown, the capacity left (`/ factor`). `capacity_requests` is its integral
///   over the arrival period.
/// - **goodput**: the share of the backend's worker time (workers × duration) spent on
///   requests answered successfully within their deadline, counting the part of each
///   answer's work done during the arrival period (or the window). With requests of mean
///   size this is good answers per second / capacity, but it is not blurred by the random
///   sizes of the requests served (±1 % over 10 s at 800 req/s) and never exceeds 100 %.
///   Lost goodput is idle workers plus work whose caller had given up. During a slowdown a
///   worker is as busy as before for a third of the answers, so this is goodput "against
///   the capacity left". (Counting each answer's whole work in the window it finished in,
///   as the harness did until 2026-11-23, moved a 3-second slow window by ±1–3 %: the 16
///   requests running at each edge take 120 ms each on average there, and up to a second.
///   With seed 6 the fixed-limit stack kept every worker busy, yet read 96.9 %; the work
///   actually done on good answers in the window is 98.0 %, the rest is two requests
///   abandoned by their clients while they ran.)
/// - **efficiency**: good work / `min(worker time, offered work)`, where the offered work is
///   the service time of every request that arrived (× the slowdown factor): 100 % is the
///   best any scheduler can do with the arrivals it got. Counting work rather than requests
///   keeps the figure from drifting with the random count and sizes of the arrivals (±2 %
///   over a few seconds); it can exceed 100 % by the work done in the window for requests
///   that arrived before it.
/// - **priority score**: `Σ_c w_c · good_c / Σ_c w_c · reference_c` with the [`WEIGHTS`]
///   16/8/4/2/1, where `reference_c` is what the [reference
///   scheduler](#the-reference-scheduler) answers of class `c` on the same arrivals: the
///   best a strict-priority scheduler does without seeing service times, its queue timeout
///   tuned in hindsight. 100 % means the stack served as much important work as that
///   scheduler; a priority-blind stack scores about 50 % at 4× load and 40 % at 8×. It can
///   exceed 100 % by a point or two (see below).
/// - **fluid score**: the same sum against the **fluid bound** `fluid_c` ([`water_fill`]):
///   classes served in priority order, each fully before the next, until the capacity is
///   used, as if work were a fluid. Computed per phase (before/while/after a slowdown) and
///   summed. An upper bound, not reachable when the classes above some class offer about
///   the capacity left (see below).
///
/// # The reference scheduler
///
/// A non-preemptive strict-priority scheduler run on the same arrivals (times, classes,
/// service times, client deadlines) and the same backend (workers, slowdown): whenever a
/// worker is free it starts the oldest waiting request of the most important class, and it
/// drops a request that waited longer than its queue timeout. Like any real server it does
/// not know a service time before the work is done, so work that ends after the client's
/// deadline is wasted. What it has that no real scheduler has is hindsight: its queue
/// timeout is chosen per phase, among 25 values up to the deadline, as the one that maximizes the
/// phase's weighted answers (the chosen value is [`Window::reference_timeout`]). An answer
/// counts for the phase its request arrived in when its work started before that phase
/// ended, so that the reference has the phase's capacity, as the fluid bound does; the
/// stacks' answers count whenever they come in time, which is why a stack whose queue
/// still drains after a phase can score a point or two above 100 %.
///
/// Why not the fluid bound: when the classes above a class offer about the capacity left,
/// their queue does a random walk (load ρ = 1 has no steady state), and no non-preemptive
/// scheduler serves all of them in time: when it runs long, requests of the class time out;
/// when it empties, the workers take lower classes (or idle), and that work cannot be handed
/// back to the next burst. The fluid bound counts every such request as served. Slowdown at
/// 0.8× with seed 2: in the settled slow window Critical and High offer 194 + 606 requests,
/// exactly the 800 the slow backend can serve. The fluid bound is 194 / 606 / 0 / 0 / 0;
/// the best timeout (260 ms) answers 194 / 545 / 8 / 0 / 0. The fixed-limit stack answers
/// 194 / 525 / 61 / 0 / 0: 94.9 % of the fluid bound and 100.7 % of the reference.
/// Elsewhere the two scores differ by less than a point (constant loads 1×–8×, 10 s, seed
/// 42: 100.0 / 100.2 / 100.5 / 99.6 % against the reference, 99.7 / 100.8 / 101.3 / 99.8 %
/// against the fluid bound, fixed limit).
///
/// Why not a clairvoyant scheduler that knows every service time and starts only requests
/// that will finish in time: skipping the requests too long to fit picks the short ones,
/// and the score counts requests, so it answers far more requests than the capacity holds
/// at the mean service time (7,858 High at 4× over 10 s where the fluid bound has 4,759).
/// Against it the stacks score 77–79 % at 4× and 8×: it measures what knowing service
/// times is worth, which no scheduler in front of a real server has.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The stack's name.
    pub stack: String,
    /// Offered load, × nominal capacity.
    pub load: f64,
    /// Nominal capacity, requests per second.
    pub capacity: f64,
    /// Capacity over the arrival period, in requests (slowdown included).
    pub capacity_requests: f64,
    /// The arrival period.
    pub duration: Duration,
    /// The client deadline.
    pub deadline: Duration,
    /// Per class, Critical first.
    pub classes: [ClassStats; Priority::COUNT],
    /// Requests not answered well, by reason (`deadline` = the client gave up), largest first.
    pub rejections: Vec<(String, u64)>,
    /// Level changes published by the stack's monitor (empty when it has none).
    pub levels: Vec<LevelChange>,
    /// The stack's concurrency limit every 100 ms (empty when it has none or fixed).
    pub limits: Vec<LimitSample>,
    /// The phases of the run (one for a constant load; before, while and after a slowdown).
    pub phases: Vec<Window>,
    /// For a slowdown: each phase after a change, minus its first second.
    pub settled: Vec<Window>,
    /// What the backend saw.
    pub backend: BackendStats,
    /// The 99th percentile of the pure service times drawn for Critical requests: their
    /// latency with no queueing at all ("unloaded p99").
    pub unloaded_p99: Duration,
}

impl Report {
    /// The median of the concurrency limit's samples (one every 100 ms) in `[from, to)`;
    /// `None` for a stack without a limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brownout_sim::{Scenario, Stack, run};
    ///
    /// let r = run(&Scenario::load(2.0).with_duration(Duration::from_secs(3)), Stack::BrownoutFixed);
    /// assert_eq!(r.limit_median(Duration::from_secs(1), r.duration), Some(16.0));
    /// ```
    pub fn limit_median(&self, from: Duration, to: Duration) -> Option<f64> {
        median_limit(&self.limits, from, to)
    }

    /// Requests that arrived.
    pub fn offered(&self) -> u64 {
        self.classes.iter().map(|c| c.offered).sum()
    }

    /// Requests answered successfully within their deadline.
    pub fn good(&self) -> u64 {
        self.classes.iter().map(|c| c.good).sum()
    }

    /// The share of the backend's worker time spent on good answers (see the type docs).
    pub fn goodput(&self) -> f64 {
        let good: f64 = self.phases.iter().map(|w| w.good_work.as_secs_f64()).sum();
        let total: f64 = self
            .phases
            .iter()
            .map(|w| w.worker_time.as_secs_f64())
            .sum();
        ratio(good, total)
    }

    /// Good work / `min(worker time, offered work)` per phase: 100 % is the best any
    /// scheduler can do with these arrivals (see the type docs).
    pub fn efficiency(&self) -> f64 {
        let achievable: f64 = self
            .phases
            .iter()
            .map(|w| w.worker_time.min(w.offered_work).as_secs_f64())
            .sum();
        let good: f64 = self.phases.iter().map(|w| w.good_work.as_secs_f64()).sum();
        ratio(good, achievable)
    }

    /// Good answers per second of arrivals.
    pub fn good_rate(&self) -> f64 {
        ratio(self.good() as f64, self.duration.as_secs_f64())
    }

    /// The priority score against the reference scheduler, the best a scheduler can do
    /// (see the type docs).
    pub fn priority_score(&self) -> f64 {
        let good = self.classes.map(|c| c.good);
        let reference = self.classes.map(|c| c.reference as f64);
        weighted_score(&good, &reference)
    }

    /// The same weighted sum against the fluid bound ([`water_fill`] per phase): an upper
    /// bound, unreachable when a class's load is near the capacity left (see the type docs).
    pub fn fluid_score(&self) -> f64 {
        let good = self.classes.map(|c| c.good);
        let fluid = self.classes.map(|c| c.fluid);
        weighted_score(&good, &fluid)
    }

    /// The figures of one class.
    pub fn class(&self, priority: Priority) -> &ClassStats {
        &self.classes[priority.index()]
    }

    /// The highest level published during the run.
    pub fn max_level(&self) -> LoadLevel {
        self.levels
            .iter()
            .map(|c| c.level)
            .max()
            .unwrap_or(LoadLevel::Normal)
    }

    /// The largest p99 latency among classes that had good answers.
    pub fn worst_p99(&self) -> Duration {
        self.classes
            .iter()
            .filter(|c| c.good > 0)
            .map(|c| c.p99)
            .max()
            .unwrap_or_default()
    }

    /// How many requests were refused or given up on for `reason`.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejections
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        let mut j = Json::object();
        j.str("scenario", &self.scenario)
            .str("stack", &self.stack)
            .num("load", self.load)
            .num("capacity_rps", self.capacity)
            .num("capacity_requests", self.capacity_requests)
            .num("duration_s", self.duration.as_secs_f64())
            .num("deadline_ms", ms(self.deadline))
            .int("offered", self.offered())
            .int("good", self.good())
            .num("goodput", self.goodput())
            .num("good_rps", self.good_rate())
            .num("efficiency", self.efficiency())
            .num("priority_score", self.priority_score())
            .num("fluid_score", self.fluid_score())
            .num("unloaded_p99_ms", ms(self.unloaded_p99));
        let classes = self
            .classes
            .iter()
            .map(|c| {
                let mut o = Json::object();
                o.str("class", c.priority.as_str())
                    .int("offered", c.offered)
                    .int("good", c.good)
                    .int("refused", c.refused)
                    .int("gave_up", c.gave_up)
                    .int("reference", c.reference)
                    .num("fluid", c.fluid)
                    .num("success", c.success())
                    .num("p50_ms", ms(c.p50))
                    .num("p99_ms", ms(c.p99))
                    .num("max_ms", ms(c.max));
                o.finish()
            })
            .collect::<Vec<_>>();
        j.raw("classes", &Json::array(&classes));
        let mut rejections = Json::object();
        for (reason, n) in &self.rejections {
            rejections.int(reason, *n);
        }
        j.raw("rejections", &rejections.finish());
        let levels = self
            .levels
            .iter()
            .map(|c| {
                let mut o = Json::object();
                o.num("at_s", c.at.as_secs_f64())
                    .str("level", c.level.as_str());
                o.finish()
            })
            .collect::<Vec<_>>();
        j.raw("levels", &Json::array(&levels));
        let limits = self
            .limits
            .iter()
            .map(|s| format!("[{},{}]", fmt_num(s.at.as_secs_f64()), s.limit))
            .collect::<Vec<_>>();
        j.raw("limits", &Json::array(&limits));
        for (key, windows) in [("phases", &self.phases), ("settled", &self.settled)] {
            let items = windows.iter().map(window_json).collect::<Vec<_>>();
            j.raw(key, &Json::array(&items));
        }
        let mut b = Json::object();
        b.int("calls", self.backend.calls)
            .int("wasted", self.backend.wasted)
            .num("max_backend_wait_ms", ms(self.backend.max_backend_wait));
        j.raw("backend", &b.finish());
        j.finish()
    }
}

fn window_json(w: &Window) -> String {
    let mut o = Json::object();
    o.str("label", &w.label)
        .num("from_s", w.from.as_secs_f64())
        .num("to_s", w.to.as_secs_f64())
        .num("capacity", w.capacity)
        .num("worker_time_s", w.worker_time.as_secs_f64())
        .num("good_work_s", w.good_work.as_secs_f64())
        .num("offered_work_s", w.offered_work.as_secs_f64())
        .raw("offered", &Json::array(&w.offered.map(|n| n.to_string())))
        .raw("good", &Json::array(&w.good.map(|n| n.to_string())))
        .raw(
            "reference",
            &Json::array(&w.reference.map(|n| n.to_string())),
        )
        .raw("fluid", &Json::array(&w.fluid.map(fmt_num)))
        .num("reference_timeout_ms", ms(w.reference_timeout))
        .num("goodput", w.goodput())
        .num("efficiency", w.efficiency())
        .num("priority_score", w.priority_score())
        .num("fluid_score", w.fluid_score());
    match w.limit_median {
        Some(m) => o.num("limit_median", m),
        None => o.raw("limit_median", "null"),
    };
    o.finish()
}

pub(crate) fn fmt_num(x: f64) -> String {
    if x.is_finite() {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".to_owned()
        } else {
            s.to_owned()
        }
    } else {
        "null".to_owned()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b <= 0.0 { 1.0 } else { a / b }
}

fn weighted_score(good: &[u64; Priority::COUNT], best: &[f64; Priority::COUNT]) -> f64 {
    let num: f64 = (0..Priority::COUNT)
        .map(|i| WEIGHTS[i] * good[i] as f64)
        .sum();
    let den: f64 = (0..Priority::COUNT).map(|i| WEIGHTS[i] * best[i]).sum();
    ratio(num, den)
}

/// The fluid bound of strict priority: serve `offered` (Critical first) until `capacity`
/// is used, as if work were a fluid that could be split and served the moment it arrives.
///
/// ```
/// use brownout_sim::water_fill;
///
/// assert_eq!(water_fill(&[10, 30, 30, 20, 10], 50.0), [10.0, 30.0, 10.0, 0.0, 0.0]);
/// assert_eq!(water_fill(&[1, 1, 1, 1, 1], 50.0), [1.0; 5]);
/// ```
pub fn water_fill(offered: &[u64; Priority::COUNT], capacity: f64) -> [f64; Priority::COUNT] {
    let mut left = capacity.max(0.0);
    offered.map(|o| {
        let served = (o as f64).min(left);
        left -= served;
        served
    })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of the limit samples taken in `[from, to)`.
fn median_limit(limits: &[LimitSample], from: Duration, to: Duration) -> Option<f64> {
    let mut limits: Vec<usize> = limits
        .iter()
        .filter(|l| l.at >= from && l.at < to)
        .map(|l| l.limit)
        .collect();
    limits.sort_unstable();
    (!limits.is_empty()).then(|| limits[limits.len() / 2] as f64)
}

/// Turns the raw outcomes of a run into a [`Report`].
pub(crate) struct Builder<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) stack: String,
    pub(crate) arrivals: &'a [Arrival],
    pub(crate) outcomes: &'a [Outcome],
    pub(crate) levels: Vec<LevelChange>,
    pub(crate) limits: Vec<LimitSample>,
    pub(crate) backend: BackendStats,
    /// What the reference scheduler did with the same arrivals.
    pub(crate) reference: std::sync::Arc<Reference>,
}

impl Builder<'_> {
    pub(crate) fn build(self) -> Report {
        let s = self.scenario;
        let mut latencies: [Vec<Duration>; Priority::COUNT] = Default::default();
        let mut counts = [(0u64, 0u64, 0u64, 0u64); Priority::COUNT];
        let mut reasons: Vec<(String, u64)> = Vec::new();
        let mut bump = |reason: &str| match reasons.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => reasons.push((reason.to_owned(), 1)),
        };
        let mut critical_service: Vec<Duration> = Vec::new();
        for (a, o) in self.arrivals.iter().zip(self.outcomes) {
            let i = a.priority.index();
            counts[i].0 += 1;
            if a.priority == Priority::Critical {
                critical_service.push(Duration::from_millis(a.service_ms));
            }
            match *o {
                Outcome::Good { latency, .. } => {
                    counts[i].1 += 1;
                    latencies[i].push(latency);
                }
                Outcome::Refused(reason) => {
                    counts[i].2 += 1;
                    bump(reason);
                }
                Outcome::GaveUp | Outcome::Pending => {
                    counts[i].3 += 1;
                    bump(GAVE_UP);
                }
            }
        }
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        critical_service.sort();

        // Phases: split at each change of the backend's speed.
        let mut edges = vec![Duration::ZERO];
        edges.extend(s.changes().into_iter().filter(|&c| c < s.duration));
        edges.push(s.duration);
        edges.dedup();
        let labels = |k: usize, n: usize| match (n, k) {
            (1, _) => "whole run".to_owned(),
            (_, 0) => "before".to_owned(),
            (_, k) if k % 2 == 1 => "slow".to_owned(),
            _ => "recovered".to_owned(),
        };
        let phase_count = edges.len() - 1;
        let timeout = |k: usize| self.reference.timeouts.get(k).copied().unwrap_or_default();
        let phases: Vec<Window> = edges
            .windows(2)
            .enumerate()
            .map(|(k, w)| self.window(labels(k, phase_count), w[0], w[1], timeout(k)))
            .collect();
        let settle = Duration::from_secs(1);
        let settled: Vec<Window> = edges
            .windows(2)
            .enumerate()
            .skip(1)
            .filter(|(_, w)| w[1] > w[0] + settle)
            .map(|(k, w)| {
                self.window(
                    format!("{}, settled", labels(k, phase_count)),
                    w[0] + settle,
                    w[1],
                    timeout(k),
                )
            })
            .collect();

        let mut fluid = [0.0; Priority::COUNT];
        for w in &phases {
            for (total, x) in fluid.iter_mut().zip(w.fluid) {
                *total += x;
            }
        }
        let mut reference = [0u64; Priority::COUNT];
        for (a, _) in self
            .arrivals
            .iter()
            .zip(&self.reference.answered)
            .filter(|(_, r)| **r)
        {
            reference[a.priority.index()] += 1;
        }
        let classes = std::array::from_fn(|i| {
            let lat = &mut latencies[i];
            lat.sort();
            let (offered, good, refused, gave_up) = counts[i];
            ClassStats {
                priority: Priority::ALL[i],
                offered,
                good,
                refused,
                gave_up,
                reference: reference[i],
                fluid: fluid[i],
                p50: percentile(lat, 0.50),
                p99: percentile(lat, 0.99),
                max: lat.last().copied().unwrap_or_default(),
            }
        });
        Report {
            scenario: s.name.clone(),
            stack: self.stack,
            load: s.load,
            capacity: s.capacity(),
            capacity_requests: s.capacity_between(Duration::ZERO, s.duration),
            duration: s.duration,
            deadline: s.deadline,
            classes,
            rejections: reasons,
            levels: self.levels,
            limits: self.limits,
            phases,
            settled,
            backend: self.backend,
            unloaded_p99: percentile(&critical_service, 0.99),
        }
    }

    fn window(
        &self,
        label: String,
        from: Duration,
        to: Duration,
        reference_timeout: Duration,
    ) -> Window {
        let mut offered = [0u64; Priority::COUNT];
        let mut good = [0u64; Priority::COUNT];
        let mut reference = [0u64; Priority::COUNT];
        let mut good_work = Duration::ZERO;
        let mut offered_work = Duration::ZERO;
        let (lo, hi) = (from.as_millis() as u64, to.as_millis() as u64);
        for ((a, o), &answered) in self
            .arrivals
            .iter()
            .zip(self.outcomes)
            .zip(&self.reference.answered)
        {
            let arrived = Duration::from_millis(a.at_ms);
            if a.at_ms >= lo && a.at_ms < hi {
                offered[a.priority.index()] += 1;
                reference[a.priority.index()] += u64::from(answered);
                offered_work += brownout_core::config::duration::mul_f64_saturating(
                    Duration::from_millis(a.service_ms),
                    self.scenario.factor_at(arrived),
                );
                if matches!(o, Outcome::Good { .. }) {
                    good[a.priority.index()] += 1;
                }
            }
            if let Outcome::Good { latency, worked } = *o {
                // The answer's work ran on one worker right before it came back: count the
                // part of it inside the window.
                let done = arrived + latency;
                let start = done.saturating_sub(worked);
                good_work += done.min(to).saturating_sub(start.max(from));
            }
        }
        let worker_time = (to - from) * self.scenario.workers.max(1) as u32;
        let capacity = self.scenario.capacity_between(from, to);
        let limit_median = median_limit(&self.limits, from, to);
        Window {
            label,
            from,
            to,
            capacity,
            worker_time,
            good_work,
            offered_work,
            offered,
            good,
            reference,
            fluid: water_fill(&offered, capacity),
            reference_timeout,
            limit_median,
        }
    }
}
