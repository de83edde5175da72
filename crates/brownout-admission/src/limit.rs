//! Concurrency-limit algorithms: fixed, gradient (RTT-based) and AIMD.

use std::time::Duration;

use brownout_core::config::{ConfigError, check};
use tokio::time::Instant;

/// How many requests may run at once: a fixed number or an adaptive algorithm.
///
/// ```
/// use brownout_admission::{AimdConfig, GradientConfig, Limit};
///
/// let fixed = Limit::fixed(64);
/// let gradient = Limit::gradient(GradientConfig::default());
/// let aimd = Limit::aimd(AimdConfig { max_limit: 200, ..AimdConfig::default() });
/// # let _ = (fixed, gradient, aimd);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// Exactly this many requests at once.
    Fixed(usize),
    /// A gradient algorithm comparing the recent latency to the no-load latency.
    Gradient(GradientConfig),
    /// Additive increase, multiplicative decrease on drops (errors, slow calls).
    Aimd(AimdConfig),
}

impl Limit {
    /// A fixed limit of `n` concurrent requests (`n ≥ 1`, checked at build).
    pub const fn fixed(n: usize) -> Limit {
        Limit::Fixed(n)
    }

    /// An adaptive gradient limit.
    pub const fn gradient(config: GradientConfig) -> Limit {
        Limit::Gradient(config)
    }

    /// An adaptive AIMD limit.
    pub const fn aimd(config: AimdConfig) -> Limit {
        Limit::Aimd(config)
    }

    /// The limit in force before any sample was seen.
    pub(crate) fn initial(&self) -> usize {
        match self {
            Limit::Fixed(n) => *n,
            Limit::Gradient(c) => c.initial_limit,
            Limit::Aimd(c) => c.initial_limit,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Limit::Fixed(n) => {
                check::at_least("limit", *n, 1)?;
                check_absurd("limit", *n)
            }
            Limit::Gradient(c) => c.validate().map_err(|e| e.within("limit.gradient")),
            Limit::Aimd(c) => c.validate().map_err(|e| e.within("limit.aimd")),
        }
    }
}

impl Default for Limit {
    /// The gradient algorithm with its defaults.
    fn default() -> Limit {
        Limit::Gradient(GradientConfig::default())
    }
}

/// Largest accepted limit: a limit above it is a configuration mistake, not a real backend.
pub(crate) const MAX_SANE_LIMIT: usize = 1 << 24;

fn check_absurd(field: &str, n: usize) -> Result<(), ConfigError> {
    if n > MAX_SANE_LIMIT {
        Err(ConfigError::new(
            field,
            format!("must be at most {MAX_SANE_LIMIT} (got {n})"),
        ))
    } else {
        Ok(())
    }
}

fn check_bounds(min: usize, initial: usize, max: usize) -> Result<(), ConfigError> {
    check::at_least("min_limit", min, 1)?;
    check_absurd("max_limit", max)?;
    check::ordered("min_limit", min, "max_limit", max)?;
    check::ordered("min_limit", min, "initial_limit", initial)?;
    check::ordered("initial_limit", initial, "max_limit", max)
}

/// Settings of the gradient limit (Netflix Gradient2 / Envoy adaptive concurrency style).
///
/// Every `window` (and at least `min_samples` completions) the mean latency of the
/// completed requests (`sample`) is compared with the no-load latency (`base`), and so is a
/// smoothed latency (`latency`: the windows in which the limit was the bottleneck, each
/// weighing 0.2):
///
/// ```text
/// sample > tolerance × base                 cut: limit × clamp(tolerance × base / sample, 0.5, 1)
///                                                + headroom, smoothed by `smoothing`
/// latency < (1 + 0.2 (tolerance − 1)) × base grow by smoothing × headroom
/// latency > (1 + 0.3 (tolerance − 1)) × base drift down by half that
///           × (1 + the base's standard error)
/// otherwise                                  hold
/// ```
///
/// Below the backend's knee `K` the latency does not depend on concurrency and the limit
/// grows; above it the latency grows with concurrency (`≈ base × limit / K` for a pool of
/// `K` workers), so with the default tolerance of 1.6 the limit settles between 1.12 and
/// 1.18 × `K` (plus the base's error). Both sides act: a limit that only grew below a
/// threshold and held above it was a ratchet, and the noise of the windows walked it up to
/// the top of its hold band (in `brownout-sim`, 16 workers: medians of 21–23 over 30 s runs,
/// 1.3–1.45 × `K`).
/// The limit grows or drifts only when it was the bottleneck (at least a quarter of the
/// window's completions found it in full use: a limit touched now and then says nothing
/// about the backend); the cut above `tolerance` applies in every window. The drift is
/// widened by the base's own standard error and half as fast as the growth: a base read low
/// holds the limit at the knee rather than walking it below.
///
/// The no-load latency `base` is not a running minimum (which inflates as soon as the limit
/// sits above the knee, as every sample then includes backend queueing). It is measured by
/// **probes**, as Envoy does: the limit is pinned to ¾ of its value; the requests admitted
/// after the pin until `probe_samples` of them completed form the probe's cohort, the pin
/// is lifted, and the probe waits ten of their mean latencies for the cohort's slow
/// requests (the first completions alone are the fastest; waiting five means still left out
/// the longest and read the base 10 % low). The cohort's mean latency is the measurement.
///
/// One probe of 64 exponential samples is ±12.5 % noisy, and the limit settles as far from
/// the knee as the base is off. So probes that agree with the base (within three standard
/// errors) are **pooled** with it, up to eight probes' samples (±4.4 %), and until the pool
/// is full a probe follows the last one after 25 times its pin (the pin costs ¼ of the
/// capacity: refining costs under 1 %). Later probes come every `probe_interval`; older
/// probes fade from the pool, so the base follows a slow drift.
///
/// A window whose latency jumps to twice the base, or falls below 0.6 × base, is not judged:
/// it starts a probe at once. A probe that disagrees with the base replaces it (the
/// backend slowed down or got faster: the limit is not cut for the slower backend); one
/// that agrees shows the jump was queueing, and the window's cut is made then. A due probe
/// that disagrees with the base by less than such a jump is set aside, and replaces it only
/// when the next due probe agrees with it: one odd reading does not move the base. A probe
/// whose early and late halves (by admission) disagree straddled a change of the backend:
/// its mean is neither the old latency nor the new one, and it is repeated once. A limit
/// cut below 0.7 × its peak while it is the bottleneck probes again: its base may be stale.
///
/// The defaults come from the overload simulation (`brownout-sim`, 16 workers with
/// exponential 20 ms service times, seeds 1–60 × loads 0.8–8× over 30 s, and the slowdown
/// scenario for seeds 1–200; see `docs/benchmarks/brownout-sim.md`): windows of 200 ms with
/// at least 32 samples and 64-sample probes keep the noise of the means (±35 % for 8
/// exponential samples) from moving the limit. A backend with almost constant latency has
/// no such noise and may take a lower tolerance, for a shorter backend queue.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientConfig {
    /// Limit before the first samples (default 20).
    pub initial_limit: usize,
    /// The limit never goes below this (default 1, at least 1).
    pub min_limit: usize,
    /// The limit never goes above this (default 1000).
    pub max_limit: usize,
    /// How long one sample window lasts at least (default 200 ms).
    pub window: Duration,
    /// Completions a window needs before it is evaluated (default 32).
    pub min_samples: usize,
    /// A window's latency above `tolerance × base` cuts the limit (default 1.6, at least 1);
    /// the smoothed latency holds it between `1 + 0.2 (tolerance − 1)` and
    /// `1 + 0.3 (tolerance − 1)` times the base.
    pub tolerance: f64,
    /// Growth per window, before smoothing (default 0.5: 0.1 per 200 ms window).
    pub headroom: f64,
    /// Weight of the newly computed limit (default 0.2, in (0, 1]).
    pub smoothing: f64,
    /// Period of the no-load latency probes once eight have been pooled (default 30 s).
    pub probe_interval: Duration,
    /// Completions one probe collects before it waits for its cohort's slow requests
    /// (default 64).
    pub probe_samples: usize,
}

impl Default for GradientConfig {
    fn default() -> GradientConfig {
        GradientConfig {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            window: Duration::from_millis(200),
            min_samples: 32,
            tolerance: 1.6,
            headroom: 0.5,
            smoothing: 0.2,
            probe_interval: Duration::from_secs(30),
            probe_samples: 64,
        }
    }
}

impl GradientConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_bounds(self.min_limit, self.initial_limit, self.max_limit)?;
        check::non_zero("window", self.window)?;
        check::at_least("min_samples", self.min_samples, 1)?;
        check::at_least_f64("tolerance", self.tolerance, 1.0)?;
        if self.tolerance > 10.0 {
            return Err(ConfigError::new(
                "tolerance",
                format!("must be at most 10 (got {})", self.tolerance),
            ));
        }
        check::at_least_f64("headroom", self.headroom, 0.0)?;
        check::fraction("smoothing", self.smoothing)?;
        check::non_zero("probe_interval", self.probe_interval)?;
        check::at_least("probe_samples", self.probe_samples, 1)?;
        Ok(())
    }
}

/// Settings of the AIMD limit (Netflix `AIMDLimit` style).
///
/// Each successful completion while at least half the permits are in use adds one to the
/// limit; each *drop* multiplies it by `backoff` (once per `window`, so that a burst of
/// failures counts once). A drop is an error from the inner service (when
/// `errors_are_drops`) or a completion slower than `latency_threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct AimdConfig {
    /// Limit before the first samples (default 20).
    pub initial_limit: usize,
    /// The limit never goes below this (default 1, at least 1).
    pub min_limit: usize,
    /// The limit never goes above this (default 1000).
    pub max_limit: usize,
    /// Multiplier applied on a drop (default 0.9, in [0.5, 1)).
    pub backoff: f64,
    /// A completion slower than this is a drop (default none).
    pub latency_threshold: Option<Duration>,
    /// Whether an inner error is a drop (default true).
    pub errors_are_drops: bool,
    /// At most one decrease per window (default 100 ms).
    pub window: Duration,
}

impl Default for AimdConfig {
    fn default() -> AimdConfig {
        AimdConfig {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            backoff: 0.9,
            latency_threshold: None,
            errors_are_drops: true,
            window: Duration::from_millis(100),
        }
    }
}

impl AimdConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_bounds(self.min_limit, self.initial_limit, self.max_limit)?;
        if !(self.backoff.is_finite() && (0.5..1.0).contains(&self.backoff)) {
            return Err(ConfigError::new(
                "backoff",
                format!("must be in [0.5, 1) (got {})", self.backoff),
            ));
        }
        if let Some(t) = self.latency_threshold {
            check::non_zero("latency_threshold", t)?;
        }
        Ok(())
    }
}

/// How a completed request ended, as a limit sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Error,
}

/// One completed request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) started: Instant,
    pub(crate) now: Instant,
    pub(crate) outcome: Outcome,
    pub(crate) in_flight: usize,
}

impl Sample {
    fn rtt(&self) -> Duration {
        self.now.saturating_duration_since(self.started)
    }
}

/// The state of an adaptive algorithm (behind a mutex, touched on completion only).
#[derive(Debug)]
pub(crate) enum Algorithm {
    /// Boxed: its probe and base state are several times the size of AIMD's.
    Gradient(Box<Gradient>),
    Aimd(Aimd),
}

impl Algorithm {
    pub(crate) fn new(limit: &Limit, now: Instant) -> Option<Algorithm> {
        match limit {
            Limit::Fixed(_) => None,
            Limit::Gradient(c) => {
                Some(Algorithm::Gradient(Box::new(Gradient::new(c.clone(), now))))
            }
            Limit::Aimd(c) => Some(Algorithm::Aimd(Aimd::new(c.clone(), now))),
        }
    }

    /// Feeds one sample; returns the limit to enforce.
    pub(crate) fn on_sample(&mut self, sample: Sample) -> usize {
        match self {
            Algorithm::Gradient(g) => g.on_sample(sample),
            Algorithm::Aimd(a) => a.on_sample(sample),
        }
    }

    /// Time one request in this many (a power of two): at high rates a window has far more
    /// completions than it needs, and each timed one costs two clock reads and this lock.
    pub(crate) fn sample_every(&self) -> usize {
        match self {
            Algorithm::Gradient(g) => g.every,
            // Every success counts towards the additive increase.
            Algorithm::Aimd(_) => 1,
        }
    }

    /// The limit to enforce now.
    pub(crate) fn effective(&self) -> usize {
        match self {
            Algorithm::Gradient(g) => g.effective(),
            Algorithm::Aimd(a) => a.limit_usize(),
        }
    }
}

/// Why a probe was started: what its measurement may do to the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    /// The first one, or one that is due (`probe_interval`, or refining a young base): it
    /// joins the base when it agrees with it. One that disagrees by less than a jump or a
    /// fall is set aside; it replaces the base only when the next due probe agrees with it
    /// (a single odd reading does not move the base). One that reads a jump or a fall
    /// replaces the base at once.
    Due,
    /// The window's latency jumped (≥ [`JUMP`] × base) or fell (≤ [`FASTER`] × base): the
    /// window was not judged. The probe replaces the base when it disagrees (the backend
    /// changed); when it agrees, the jump was queueing and the window's cut is made then.
    Change,
    /// The limit fell below [`STALE`] × its peak while it was the bottleneck: a base read
    /// low holds the limit below the knee. Replaces the base when it disagrees.
    Stale,
}

#[derive(Debug)]
struct Probe {
    kind: ProbeKind,
    /// This probe repeats one that straddled a change of the backend.
    retry: bool,
    started: Instant,
    /// Latency of the window that started the probe.
    before: f64,
    /// Requests admitted before this instant (and after `started`) form the probe's cohort:
    /// set once `probe_samples` of them completed.
    cohort_end: Option<Instant>,
    /// When the cohort's stragglers have had time to complete.
    finish_at: Option<Instant>,
}

/// The no-load latency: the probes that agreed with each other, pooled.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Base {
    /// Mean latency, seconds.
    mean: f64,
    /// Variance of one sample, seconds².
    var: f64,
    /// Samples pooled.
    n: f64,
}

impl Base {
    /// The standard error of `mean`, as a share of it.
    fn relative_error(&self) -> f64 {
        if self.mean > 0.0 {
            (self.var / self.n).sqrt() / self.mean
        } else {
            // A backend that answers at once (a mock under paused time): nothing to widen.
            0.0
        }
    }

    /// Whether `other` measured the same backend: the means differ by at most
    /// [`AGREE_SIGMAS`] standard errors (plus [`AGREE_FLOOR`] of the mean, for backends
    /// whose latency hardly varies).
    fn agrees(&self, other: &Base) -> bool {
        let se = (self.var / self.n + other.var / other.n).sqrt();
        !self.changed(other.mean)
            && (self.mean - other.mean).abs() <= AGREE_SIGMAS * se + AGREE_FLOOR * self.mean
    }

    /// The mean and variance of `latencies`.
    fn of(latencies: impl ExactSizeIterator<Item = f64> + Clone) -> Base {
        let n = latencies.len() as f64;
        let mean = latencies.clone().sum::<f64>() / n;
        let var = latencies.map(|l| (l - mean) * (l - mean)).sum::<f64>() / (n - 1.0).max(1.0);
        Base { mean, var, n }
    }

    /// `self` and `other` as one measurement, keeping at most `max` samples' weight (older
    /// probes fade, so the base follows a slow drift).
    fn pool(self, other: Base, max: f64) -> Base {
        let kept = self.n.min((max - other.n).max(0.0));
        let n = kept + other.n;
        let mean = (self.mean * kept + other.mean * other.n) / n;
        let spread = |b: &Base| b.var + (b.mean - mean) * (b.mean - mean);
        Base {
            mean,
            var: (kept * spread(&self) + other.n * spread(&other)) / n,
            n,
        }
    }

    /// Whether `latency` says the backend itself changed: a jump or a fall.
    fn changed(&self, latency: f64) -> bool {
        latency >= JUMP * self.mean || latency <= FASTER * self.mean
    }
}

/// Whether the early and late halves of a probe's cohort (by admission) disagree: the
/// backend changed while the probe ran.
fn straddled(cohort: &mut [(Instant, f64)]) -> bool {
    if cohort.len() < 8 {
        return false;
    }
    cohort.sort_unstable_by_key(|&(admitted, _)| admitted);
    let (early, late) = cohort.split_at(cohort.len() / 2);
    let half = |h: &[(Instant, f64)]| Base::of(h.iter().map(|&(_, latency)| latency));
    !half(early).agrees(&half(late))
}

/// How long a probe waits for its cohort's slow requests, in mean latencies of the first
/// `probe_samples` completions. Those are the cohort's *fastest* requests (with exponential
/// service times their mean is ~17 % low), and the requests still running when they are in
/// are the cohort's longest: with five means the probes of `brownout-sim` (exponential 20 ms)
/// missed a few of them and read 19 %–25 % low (17.8 ms on average instead of 20 ms, seed 4
/// at 8×); with ten they read 19.5 ms. The wait costs nothing: the pin is already lifted.
const STRAGGLER_WAIT: f64 = 10.0;

/// A window whose mean latency is at least this multiple of the base re-probes the base (the
/// backend slowed down or queues).
const JUMP: f64 = 2.0;

/// A window whose mean latency is below this share of the base re-probes the base. The mean
/// of 32 exponential service times is below 0.6× its expectation in ~1 % of windows.
const FASTER: f64 = 0.6;

/// Share of a window's completions that must have found the limit in full use for it to move
/// by the smoothed latency (it is cut on a window above `tolerance` either way).
const BOTTLENECK: f64 = 0.25;

/// A limit cut below this share of its peak since the last probe while it is the bottleneck
/// re-probes the base.
const STALE: f64 = 0.7;

/// A probe agrees with the base when their means differ by at most this many standard errors.
const AGREE_SIGMAS: f64 = 3.0;

/// … plus this share of the base.
const AGREE_FLOOR: f64 = 0.02;

/// The base pools at most this many probes' samples (`× probe_samples`): 512 exponential
/// samples put the mean within ±4.4 % (one standard error) instead of ±12.5 % for 64.
const POOL_PROBES: f64 = 8.0;

/// Until the base pools [`POOL_PROBES`] probes, the next probe comes this many pin
/// durations later (at most `probe_interval`): a probe holds the limit at ¾, so refining
/// costs at most ¼ / 25 = 1 % of the capacity, for as long as eight probes take (≈ 25 s in
/// `brownout-sim`, whose 20 ms probes pin the limit for ≈ 0.13 s; at 60 ms ≈ 0.3 s, and the
/// next probe comes ≈ 8 s later).
const REFINE_SPACING: u32 = 25;

/// The limit grows while the smoothed latency is under `1 + GROW_BELOW × (tolerance − 1)`
/// times the base …
const GROW_BELOW: f64 = 0.2;

/// … and drifts down while it is over `1 + DRIFT_ABOVE × (tolerance − 1)` times the base,
/// widened by the base's own standard error (a young base read low must not walk the limit
/// below the knee).
const DRIFT_ABOVE: f64 = 0.3;

/// The drift down is this share of `headroom` per window (growth is a whole `headroom`): a
/// base read low walks the limit down half as fast as one read high walks it up (capacity
/// lost below the knee costs more than a short backend queue above it).
const DRIFT_SHARE: f64 = 0.5;

/// Weight of a window in the smoothed latency that the growth and the drift follow.
const LATENCY_SMOOTHING: f64 = 0.2;

/// Gradient limit state; latencies in seconds as `f64`.
#[derive(Debug)]
pub(crate) struct Gradient {
    config: GradientConfig,
    limit: f64,
    base: Option<Base>,
    /// A due probe that disagreed with the base, set aside (see [`ProbeKind::Due`]).
    set_aside: Option<Base>,
    /// Windows' mean latencies, smoothed ([`LATENCY_SMOOTHING`]).
    latency: Option<f64>,
    /// The running probe's cohort, what it measures: (admitted, latency in seconds). Kept
    /// between probes, so it allocates only until it has grown to a cohort's size.
    cohort: Vec<(Instant, f64)>,
    window_start: Instant,
    sum: f64,
    count: usize,
    max_in_flight: usize,
    /// Completions of the window that found the limit in full use.
    at_limit: usize,
    /// Highest limit since the last probe.
    peak: f64,
    probe: Option<Probe>,
    next_probe: Option<Instant>,
    /// One request in `every` is timed (a power of two, at most [`MAX_SAMPLE_EVERY`]).
    every: usize,
}

/// The sampling never skips more than this: one request in 64 is timed.
const MAX_SAMPLE_EVERY: usize = 64;

impl Gradient {
    fn new(config: GradientConfig, now: Instant) -> Gradient {
        Gradient {
            limit: config.initial_limit as f64,
            peak: config.initial_limit as f64,
            config,
            base: None,
            set_aside: None,
            latency: None,
            cohort: Vec::new(),
            window_start: now,
            sum: 0.0,
            count: 0,
            max_in_flight: 0,
            at_limit: 0,
            probe: None,
            next_probe: None,
            every: 1,
        }
    }

    /// Adapts the sampling to the completions of the window just evaluated (`count` timed
    /// ones over `elapsed`): about four times `min_samples` timed completions per `window`.
    fn resample(&mut self, count: usize, elapsed: Duration) {
        let per_window = count as f64 * self.every as f64 * self.config.window.as_secs_f64()
            / elapsed.as_secs_f64().max(1e-9);
        let want = (4 * self.config.min_samples) as f64;
        let ratio = (per_window / want).floor().max(1.0) as usize;
        let every = (ratio.min(MAX_SAMPLE_EVERY) + 1).next_power_of_two() / 2;
        self.every = every.clamp(1, MAX_SAMPLE_EVERY);
    }

    fn clamp(&self, value: f64) -> f64 {
        value.clamp(self.config.min_limit as f64, self.config.max_limit as f64)
    }

    fn effective(&self) -> usize {
        let limit = self.limit.round() as usize;
        let limit = limit.clamp(self.config.min_limit, self.config.max_limit);
        // Pinned while the probe's cohort is admitted; once it is closed, its requests are
        // already running and the pin would only cost throughput while the probe waits for
        // their stragglers.
        if self.probe.as_ref().is_some_and(|p| p.cohort_end.is_none()) {
            (limit * 3 / 4).max(self.config.min_limit)
        } else {
            limit
        }
    }

    fn start_probe(&mut self, kind: ProbeKind, now: Instant, before: f64) {
        tracing::debug!(
            limit = self.limit,
            ?kind,
            "admission: probing the no-load latency"
        );
        self.cohort.clear();
        self.probe = Some(Probe {
            kind,
            retry: false,
            started: now,
            before,
            cohort_end: None,
            finish_at: None,
        });
    }

    /// The limit after a window of mean latency `sample` above `tolerance × base`: the
    /// gradient `tolerance × base / sample` (at most halving) plus `headroom`, smoothed.
    fn cut(&self, sample: f64, base: f64) -> f64 {
        let c = &self.config;
        let gradient = (c.tolerance * base / sample).clamp(0.5, 1.0);
        self.limit * (1.0 - c.smoothing) + (self.limit * gradient + c.headroom) * c.smoothing
    }

    /// Ends the probe: its cohort's mean joins the base, replaces it, or is set aside.
    fn settle(&mut self, probe: &Probe, now: Instant) {
        let measured = Base::of(self.cohort.iter().map(|&(_, latency)| latency));
        let max = POOL_PROBES * self.config.probe_samples as f64;
        let old = self.base;
        let agrees = old.is_some_and(|o| o.agrees(&measured));
        let mut base = match old {
            Some(o) if agrees => o.pool(measured, max),
            _ => measured,
        };
        let set_aside = self.set_aside.take();
        if let (ProbeKind::Due, false, Some(o)) = (probe.kind, agrees, old)
            && !o.changed(measured.mean)
        {
            match set_aside {
                // Two due probes in a row agree with each other, not with the base.
                Some(aside) if aside.agrees(&measured) => base = aside.pool(measured, max),
                _ => {
                    self.set_aside = Some(measured);
                    base = o;
                }
            }
        }
        if !agrees && Some(base) != old {
            // A new base: the smoothed latency was judged against the old one.
            self.latency = None;
        }
        tracing::debug!(
            base_s = base.mean,
            measured_s = measured.mean,
            pooled = base.n,
            "admission: no-load latency measured"
        );
        self.base = Some(base);
        if probe.kind == ProbeKind::Change && agrees {
            // The backend measures as it did: the window's jump was queueing. Make the cut
            // it was spared.
            self.limit = self.clamp(self.cut(probe.before, base.mean));
        }
        self.peak = self.limit;
        let pinned = probe
            .cohort_end
            .map_or(self.config.probe_interval, |end| end - probe.started);
        let next = if base.n < max {
            (pinned * REFINE_SPACING).clamp(self.config.window, self.config.probe_interval)
        } else {
            self.config.probe_interval
        };
        self.next_probe = Some(now + next);
        self.reset_window(now);
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        let rtt = s.rtt().as_secs_f64();
        if s.outcome == Outcome::Error {
            // Errors are often fast failures: their latency says nothing about the knee.
            return self.effective();
        }
        if let Some(probe) = &mut self.probe {
            let in_cohort =
                s.started >= probe.started && probe.cohort_end.is_none_or(|end| s.started < end);
            if in_cohort {
                self.cohort.push((s.started, rtt));
            }
            if probe.cohort_end.is_none() && self.cohort.len() >= self.config.probe_samples {
                let mean = self.cohort.iter().map(|&(_, latency)| latency).sum::<f64>()
                    / self.cohort.len() as f64;
                probe.cohort_end = Some(s.now);
                probe.finish_at = Some(s.now + Duration::from_secs_f64(mean * STRAGGLER_WAIT));
            }
            let timed_out = s.now.saturating_duration_since(probe.started)
                >= self.config.probe_interval.min(Duration::from_secs(2));
            let complete = probe.finish_at.is_some_and(|t| s.now >= t);
            if complete || (timed_out && !self.cohort.is_empty()) {
                if let Some(probe) = self.probe.take() {
                    if !probe.retry && straddled(&mut self.cohort) {
                        // The backend changed while the probe ran: its mean is neither the
                        // old base nor the new one. Probe again.
                        tracing::debug!("admission: the probe straddled a change, again");
                        self.start_probe(probe.kind, s.now, probe.before);
                        if let Some(again) = &mut self.probe {
                            again.retry = true;
                        }
                    } else {
                        self.settle(&probe, s.now);
                    }
                }
            } else if timed_out {
                // Nothing completed at the pinned limit: give up, keep the old base.
                self.probe = None;
                self.next_probe = Some(s.now + self.config.probe_interval);
                self.reset_window(s.now);
            }
            return self.effective();
        }

        self.sum += rtt;
        self.count += 1;
        self.max_in_flight = self.max_in_flight.max(s.in_flight);
        if s.in_flight as f64 >= self.limit.round() {
            self.at_limit += 1;
        }
        let elapsed = s.now.saturating_duration_since(self.window_start);
        if elapsed < self.config.window || self.count < self.config.min_samples {
            if self.every > 1 && elapsed >= 4 * self.config.window {
                // The rate fell while sampling: time every request again.
                self.every = 1;
            }
            return self.effective();
        }
        self.resample(self.count, elapsed);
        let sample = self.sum / self.count as f64;
        let limit_unused = (self.max_in_flight as f64) + 1.0 < self.limit.round();
        let bottleneck = self.at_limit as f64 >= BOTTLENECK * self.count as f64;
        self.reset_window(s.now);

        let Some(base) = self.base else {
            self.start_probe(ProbeKind::Due, s.now, sample);
            return self.effective();
        };
        if base.changed(sample) {
            // Twice the base: the backend slowed down or queues. Well under it: the base is
            // stale (the backend got faster, e.g. after a slowdown ended). Either way,
            // measure it again before judging the window.
            self.start_probe(ProbeKind::Change, s.now, sample);
            return self.effective();
        }
        let c = &self.config;
        // The limit moves by the smoothed latency only when it was the bottleneck in the
        // window: a limit nobody uses says nothing about the backend.
        let moves = bottleneck && !limit_unused;
        let latency = match self.latency {
            Some(l) if moves => l + LATENCY_SMOOTHING * (sample - l),
            Some(l) => l,
            None => sample,
        };
        if moves {
            self.latency = Some(latency);
        }
        let excess = c.tolerance - 1.0;
        let grow_below = base.mean * (1.0 + GROW_BELOW * excess);
        let drift_above = base.mean * (1.0 + DRIFT_ABOVE * excess) * (1.0 + base.relative_error());
        let new = if sample > c.tolerance * base.mean {
            self.cut(sample, base.mean)
        } else if !moves {
            self.limit
        } else if latency < grow_below {
            self.limit + c.headroom * c.smoothing
        } else if latency > drift_above {
            self.limit - DRIFT_SHARE * c.headroom * c.smoothing
        } else {
            self.limit
        };
        let old = self.limit;
        self.limit = self.clamp(new);
        if (self.limit.round() - old.round()).abs() >= 1.0 {
            tracing::trace!(
                limit = self.limit,
                sample_s = sample,
                latency_s = latency,
                base_s = base.mean,
                "admission: gradient limit"
            );
        }
        let due = self.next_probe.is_some_and(|t| s.now >= t);
        self.peak = self.peak.max(self.limit);
        let stale = bottleneck && self.limit < STALE * self.peak;
        if stale {
            self.start_probe(ProbeKind::Stale, s.now, sample);
        } else if due {
            self.start_probe(ProbeKind::Due, s.now, sample);
        }
        self.effective()
    }

    fn reset_window(&mut self, now: Instant) {
        self.window_start = now;
        self.sum = 0.0;
        self.count = 0;
        self.max_in_flight = 0;
        self.at_limit = 0;
    }
}

/// AIMD limit state.
#[derive(Debug)]
pub(crate) struct Aimd {
    config: AimdConfig,
    limit: f64,
    last_decrease: Option<Instant>,
}

impl Aimd {
    fn new(config: AimdConfig, _now: Instant) -> Aimd {
        Aimd {
            limit: config.initial_limit as f64,
            config,
            last_decrease: None,
        }
    }

    fn limit_usize(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.config.min_limit, self.config.max_limit)
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        let c = &self.config;
        let slow = c.latency_threshold.is_some_and(|t| s.rtt() > t);
        let drop = slow || (c.errors_are_drops && s.outcome == Outcome::Error);
        if drop {
            let recent = self
                .last_decrease
                .is_some_and(|t| s.now.saturating_duration_since(t) < c.window);
            if !recent {
                self.limit = (self.limit * c.backoff).max(c.min_limit as f64);
                self.last_decrease = Some(s.now);
                tracing::debug!(limit = self.limit, "admission: aimd decrease");
            }
        } else if s.in_flight * 2 >= self.limit_usize() {
            self.limit = (self.limit + 1.0).min(c.max_limit as f64);
        }
        self.limit_usize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(started: Instant, ms: u64, outcome: Outcome, in_flight: usize) -> Sample {
        Sample {
            started,
            now: started + Duration::from_millis(ms),
            outcome,
            in_flight,
        }
    }

    /// Feeds `n` completions of `rtt_ms` each, one every 5 ms from `t`.
    fn feed(g: &mut Gradient, t: &mut Instant, rtt_ms: u64, n: usize) {
        for _ in 0..n {
            *t += Duration::from_millis(5);
            g.on_sample(Sample {
                started: *t - Duration::from_millis(rtt_ms),
                now: *t,
                outcome: Outcome::Success,
                // Every completion finds the limit in use.
                in_flight: usize::MAX,
            });
        }
    }

    /// A gradient (limit 16, defaults otherwise) whose start-up probe measured a 20 ms base.
    fn with_20_ms_base() -> (Gradient, Instant) {
        let config = GradientConfig {
            initial_limit: 16,
            ..GradientConfig::default()
        };
        let mut t = Instant::now();
        let mut g = Gradient::new(config, t);
        feed(&mut g, &mut t, 20, 400);
        assert!(g.probe.is_none());
        assert!((g.base.unwrap().mean - 0.020).abs() < 1e-9);
        (g, t)
    }

    /// [`with_20_ms_base`], then a 75 ms window starts a probe, which reads `probe_ms`.
    /// Returns the gradient, the time of its last sample and the limit before the jump.
    fn jumped_then_probed(probe_ms: u64) -> (Gradient, Instant, f64) {
        let (mut g, mut t) = with_20_ms_base();
        let limit = g.limit;
        while g.probe.is_none() {
            feed(&mut g, &mut t, 75, 1);
        }
        assert_eq!(g.probe.as_ref().unwrap().kind, ProbeKind::Change);
        // The window that jumped is not judged before the probe has measured the base.
        assert_eq!(g.limit, limit);
        assert_eq!(
            g.effective(),
            (limit.round() as usize) * 3 / 4,
            "pinned at 3/4"
        );
        while g.probe.is_some() {
            feed(&mut g, &mut t, probe_ms, 1);
        }
        (g, t, limit)
    }

    #[test]
    fn probe_after_a_jump_that_reads_a_slower_backend_replaces_the_base_without_a_cut() {
        // The backend got three times slower: the window's jump was not queueing.
        let (mut g, mut t, limit) = jumped_then_probed(60);
        assert!((g.base.unwrap().mean - 0.060).abs() < 1e-9, "{:?}", g.base);
        assert_eq!(g.limit, limit);
        // At 60 ms the limit is neither cut nor probed again (it grows: no queueing shows);
        // against the old 20 ms base it would be both.
        for _ in 0..200 {
            feed(&mut g, &mut t, 60, 1);
            assert!(g.probe.is_none());
            assert!(g.limit >= limit);
        }
    }

    #[test]
    fn probe_after_a_jump_that_reads_the_old_base_keeps_it_and_cuts() {
        // The probe reads 20 ms at 3/4 of the limit: the 75 ms were queueing.
        let (g, _, limit) = jumped_then_probed(20);
        assert!((g.base.unwrap().mean - 0.020).abs() < 1e-9, "{:?}", g.base);
        assert!(g.base.unwrap().n > 128.0, "pooled with the start-up probe");
        assert!(g.limit < limit - 0.5, "the spared cut is made: {}", g.limit);
    }

    #[test]
    fn a_due_probe_that_disagrees_is_set_aside_until_the_next_agrees_with_it() {
        let (mut g, mut t) = with_20_ms_base();
        // The backend is 30 % slower: no jump, and no window outside the tolerance.
        let mut probes = 0;
        let mut bases = Vec::new();
        while probes < 2 {
            feed(&mut g, &mut t, 26, 1);
            if g.probe.is_some() && g.cohort.is_empty() {
                assert_eq!(g.probe.as_ref().unwrap().kind, ProbeKind::Due);
                while g.probe.is_some() {
                    feed(&mut g, &mut t, 26, 1);
                }
                probes += 1;
                bases.push(g.base.unwrap().mean);
            }
        }
        assert!((bases[0] - 0.020).abs() < 1e-9, "set aside: {bases:?}");
        assert!((bases[1] - 0.026).abs() < 1e-9, "replaced: {bases:?}");
    }

    #[test]
    fn a_probe_that_straddles_a_change_of_the_backend_is_repeated() {
        let (mut g, mut t) = with_20_ms_base();
        g.next_probe = Some(t);
        while g.probe.is_none() {
            feed(&mut g, &mut t, 20, 1);
        }
        // Half the cohort at 20 ms, then the backend is three times slower.
        feed(&mut g, &mut t, 20, 36);
        while g.probe.as_ref().is_some_and(|p| !p.retry) {
            feed(&mut g, &mut t, 60, 1);
        }
        assert!(g.probe.is_some(), "repeated, not settled");
        assert!((g.base.unwrap().mean - 0.020).abs() < 1e-9, "{:?}", g.base);
        while g.probe.is_some() {
            feed(&mut g, &mut t, 60, 1);
        }
        assert!((g.base.unwrap().mean - 0.060).abs() < 1e-9, "{:?}", g.base);
    }

    /// A backend of `workers` FIFO workers with exponential service times (mean
    /// `service_ms`, drawn from `seed`) behind the gradient's limit, at full load: whenever a
    /// request completes, new ones are admitted up to the limit.
    struct Saturated {
        workers: usize,
        service_ms: f64,
        rng: u64,
        /// Admitted, waiting for a worker: admission times.
        queue: std::collections::VecDeque<Instant>,
        /// Running: (completion, admission).
        running: Vec<(Instant, Instant)>,
    }

    impl Saturated {
        fn new(workers: usize, service_ms: f64, seed: u64) -> Saturated {
            Saturated {
                workers,
                service_ms,
                rng: seed,
                queue: Default::default(),
                running: Vec::new(),
            }
        }

        /// An exponential service time (splitmix64 draws, no dependency).
        fn service(&mut self) -> Duration {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let uniform = ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
            Duration::from_secs_f64(-self.service_ms / 1000.0 * (1.0 - uniform).ln())
        }

        /// Runs until `until`, feeding every completion to `g`.
        fn run(&mut self, g: &mut Gradient, now: &mut Instant, until: Instant) {
            while *now < until {
                let in_flight = self.queue.len() + self.running.len();
                for _ in in_flight..g.effective() {
                    self.queue.push_back(*now);
                }
                while self.running.len() < self.workers {
                    let Some(admitted) = self.queue.pop_front() else {
                        break;
                    };
                    let done = *now + self.service();
                    self.running.push((done, admitted));
                }
                let next = (0..self.running.len())
                    .min_by_key(|&i| self.running[i].0)
                    .expect("the limit is at least 1");
                let (done, admitted) = self.running.swap_remove(next);
                *now = done;
                g.on_sample(Sample {
                    started: admitted,
                    now: done,
                    outcome: Outcome::Success,
                    in_flight: self.queue.len() + self.running.len() + 1,
                });
            }
        }
    }

    #[test]
    fn rel_23_limit_settles_near_the_knee_under_sustained_overload() {
        // 16 workers, 20 ms, exponential: after 10 s the limit stays within 0.7-1.3x the
        // workers for the next 30 s (it used to creep up to 21-23), and the probes have
        // pooled into a base within 10 % of the service time.
        for seed in 1..=5 {
            let mut now = Instant::now();
            let mut g = Gradient::new(
                GradientConfig {
                    initial_limit: 16,
                    ..GradientConfig::default()
                },
                now,
            );
            let mut backend = Saturated::new(16, 20.0, seed);
            let until = now + Duration::from_secs(10);
            backend.run(&mut g, &mut now, until);
            let mut limits = Vec::new();
            for _ in 0..30 {
                let until = now + Duration::from_secs(1);
                backend.run(&mut g, &mut now, until);
                limits.push(g.limit);
            }
            let (lo, hi) = limits
                .iter()
                .fold((f64::MAX, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
            let base = g.base.unwrap();
            assert!(
                lo >= 11.2 && hi <= 20.8,
                "seed {seed}: {limits:?}, base {base:?}"
            );
            assert!(base.n > 256.0, "seed {seed}: the probes pooled: {base:?}");
            assert!((base.mean - 0.020).abs() < 0.002, "seed {seed}: {base:?}");
        }
    }

    #[test]
    fn drift_down_waits_for_a_young_base_to_be_confirmed() {
        // 1.3x the base at the limit: over the drift threshold (1.2x) for a base of 512
        // pooled samples, not for one of 64 exponential samples (±12.5 %: 1.35x).
        for (n, drifts) in [(64.0, false), (512.0, true)] {
            let (mut g, mut t) = with_20_ms_base();
            g.base = Some(Base {
                mean: 0.020,
                var: 0.020 * 0.020,
                n,
            });
            g.next_probe = None;
            let before = g.limit;
            // 40 windows of 200 ms.
            feed(&mut g, &mut t, 26, 1600);
            assert_eq!(g.limit < before, drifts, "base of {n} samples: {}", g.limit);
            // Half the headroom, smoothed, per window at most.
            assert!(
                g.limit >= before - 40.0 * 0.5 * 0.5 * 0.2 - 1e-9,
                "{}",
                g.limit
            );
        }
    }

    #[test]
    fn a_backend_that_answers_at_once_keeps_a_finite_limit() {
        // Mocks under paused time answer in zero time: the base is 0 and every ratio against
        // it degenerate. The limit stays a number within its bounds.
        let mut t = Instant::now();
        let mut g = Gradient::new(GradientConfig::default(), t);
        for _ in 0..5_000 {
            feed(&mut g, &mut t, 0, 1);
            assert!(g.limit.is_finite());
            assert!((1..=1000).contains(&g.effective()));
        }
        assert_eq!(g.base.map(|b| b.relative_error()), Some(0.0));
    }

    #[test]
    fn config_refused_naming_field() {
        let err = Limit::fixed(0).validate().unwrap_err();
        assert_eq!(err.field(), "limit");
        let err = Limit::gradient(GradientConfig {
            min_limit: 0,
            ..GradientConfig::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "limit.gradient.min_limit");
        let err = Limit::gradient(GradientConfig {
            min_limit: 50,
            max_limit: 10,
            initial_limit: 20,
            ..GradientConfig::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "limit.gradient.min_limit");
        let err = Limit::gradient(GradientConfig {
            tolerance: f64::NAN,
            ..GradientConfig::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "limit.gradient.tolerance");
        let err = Limit::aimd(AimdConfig {
            backoff: 1.0,
            ..AimdConfig::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "limit.aimd.backoff");
        assert!(Limit::fixed(usize::MAX).validate().is_err());
        assert!(Limit::default().validate().is_ok());
        assert!(Limit::aimd(AimdConfig::default()).validate().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rel_09_aimd_stays_at_least_min_under_sustained_errors() {
        let mut algo = Algorithm::new(&Limit::aimd(AimdConfig::default()), Instant::now()).unwrap();
        for _ in 0..10_000 {
            let now = Instant::now();
            let limit = algo.on_sample(sample(now, 1, Outcome::Error, 1));
            assert!(limit >= 1);
            tokio::time::advance(Duration::from_millis(150)).await;
        }
        assert_eq!(algo.effective(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rel_09_gradient_stays_at_least_min_under_sustained_latency() {
        let config = GradientConfig::default();
        let mut algo = Algorithm::new(&Limit::gradient(config), Instant::now()).unwrap();
        // Latency grows without bound: the limit shrinks but never below 1.
        for i in 0..5_000u64 {
            let now = Instant::now();
            let limit = algo.on_sample(sample(now, 10 + i, Outcome::Success, 50));
            assert!(limit >= 1);
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        assert!(algo.effective() >= 1);
    }
}
