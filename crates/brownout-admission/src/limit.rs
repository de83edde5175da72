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
/// completed requests (`sample`) is compared with the no-load latency (`base`):
///
/// ```text
/// gradient = clamp(tolerance × base / sample, 0.5, 1.0)
/// new      = limit × gradient + headroom
/// limit    = limit × (1 − smoothing) + new × smoothing      (within [min_limit, max_limit])
/// ```
///
/// Below the backend's knee `K` the latency does not depend on concurrency (`gradient = 1`)
/// and the limit grows by `headroom` per window; above it the latency grows with
/// concurrency (`sample ≈ base × limit / K`) and shrinks the limit. The limit grows only
/// when it was the bottleneck during the window: at least a quarter of the window's
/// completions found it in full use (a limit touched now and then says nothing about the
/// backend: below capacity it crept by `smoothing × headroom` per window, to 1.4× the knee
/// after 30 s in `brownout-sim` at 0.8× load). And it grows only while
/// `sample ≤ base × (1 + 0.4 × (tolerance − 1))`: between that and `tolerance × base` the
/// latency already shows backend queueing and the limit holds. So it settles between
/// `(1 + 0.4 × (tolerance − 1)) × K` and `tolerance × K`.
///
/// A limit cut below 0.7× its highest value since the last probe while it is the bottleneck
/// re-probes the base: a probe that read the base low (64 exponential samples are ±12 %
/// noisy) puts the real no-load latency above the growth threshold, and a limit cut below
/// the knee by noisy windows would never grow again.
///
/// The no-load latency `base` is not a running minimum (which inflates as soon as the limit
/// sits above the knee, as every sample then includes backend queueing). It is measured by a
/// **probe**, as Envoy does: the limit is pinned to ¾ of its value; the requests admitted
/// after the pin until `probe_samples` of them completed form the probe's cohort, and the
/// probe waits five of their mean latencies for the cohort's slow requests (the first
/// completions alone are the fastest: with exponential service times their mean is ~17 %
/// low). The cohort's mean latency is the new `base`. The pin is lifted as soon as the
/// cohort is complete: its slow requests are already running, and holding the limit at ¾
/// while waiting for them only idles the backend (after a 3× slowdown the pin lasted 0.7 s
/// instead of about 0.35 s, and with `brownout-sim`'s seed 7 the slow phase, from one second
/// after the change, used 96.5 % of the capacity left instead of 98.3 %). A backend whose requests share a CPU sees the
/// stragglers slow down a little once the limit is back; the base may then read a few
/// percent high.
/// A probe runs at start-up (after the first window), every `probe_interval`, and at once
/// when a window's latency exceeds twice `base` or falls below 0.6 × `base`. After a rise,
/// if the latency did not fall although concurrency was cut, the backend itself became
/// slower and `base` follows it; if it fell by 30 % or more, the excess was queueing and
/// `base` is kept, unless the probe itself read twice `base` or more: then the backend
/// became slower *and* queued (a slowdown while the limit sat above the knee), and `base`
/// follows the probe. (Keeping it cut the limit again and started a second probe, its ¾ pin
/// a second time at the new latency: `brownout-sim` seed 11, whose probe read 51 ms after a
/// 74 ms window on a 20 ms base, used 96.6 % of the capacity left from one second after a
/// 3× slowdown instead of 98.2 %.) After a fall (the backend got faster again, e.g. a
/// slowdown ended) `base` follows it down, so the limit does not grow unchecked on a stale
/// `base`.
///
/// The defaults come from the overload simulation (`brownout-sim`, 16 workers with
/// exponential 20 ms service times): windows of 200 ms with at least 32 samples and 64-sample
/// probes keep the noise of the means (±35 % for 8 exponential samples) from shrinking the
/// limit below the knee; with smoothing 0.2 and a tolerance of 1.2 the limit's median stays
/// within 1.1×–1.3× the knee at 1×–8× load (seeds 1, 3, 42). A deterministic backend has no
/// such noise: there a lower tolerance (1.05) keeps the backend queue shorter.
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
    /// Latency tolerated above `base` before the limit shrinks (default 1.2, at least 1);
    /// the limit stops growing at 40 % of the excess (`1 + 0.4 × (tolerance − 1)`).
    pub tolerance: f64,
    /// Added per window (default 1.0; growth speed and the small standing backend queue).
    pub headroom: f64,
    /// Weight of the newly computed limit (default 0.2, in (0, 1]).
    pub smoothing: f64,
    /// Period of the no-load latency probes (default 30 s).
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
            tolerance: 1.2,
            headroom: 1.0,
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
    Gradient(Gradient),
    Aimd(Aimd),
}

impl Algorithm {
    pub(crate) fn new(limit: &Limit, now: Instant) -> Option<Algorithm> {
        match limit {
            Limit::Fixed(_) => None,
            Limit::Gradient(c) => Some(Algorithm::Gradient(Gradient::new(c.clone(), now))),
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

#[derive(Debug)]
struct Probe {
    started: Instant,
    /// Latency of the window that triggered the probe (or the last window).
    before: Option<f64>,
    sum: f64,
    count: usize,
    /// Requests admitted before this instant (and after `started`) form the probe's cohort:
    /// set once `probe_samples` of them completed.
    cohort_end: Option<Instant>,
    /// When the cohort's stragglers have had time to complete.
    finish_at: Option<Instant>,
}

/// How long a probe waits for its cohort's slow requests, in mean latencies. The first
/// `probe_samples` completions are the cohort's *fastest* requests (with exponential service
/// times their mean is ~17 % below the true mean); waiting five means for the rest leaves
/// out under 2 % of the cohort.
const STRAGGLER_WAIT: f64 = 5.0;

/// A window whose mean latency is at least this multiple of the base re-probes the base (the
/// backend slowed down or queues).
const JUMP: f64 = 2.0;

/// A window whose mean latency is below this share of the base re-probes the base. The mean
/// of 32 exponential service times is below 0.6× its expectation in ~1 % of windows.
const FASTER: f64 = 0.6;

/// Share of the tolerance's excess below which the limit may grow (`sample ≤ base × (1 +
/// (tolerance − 1) × GROW_BELOW)`).
const GROW_BELOW: f64 = 0.4;

/// Share of a window's completions that must have found the limit in full use for it to grow.
/// (A half held the limit at the 16 workers in `brownout-sim`'s slowdown, whose load shedding
/// keeps the admitted rate near capacity: 95-97 % efficiency in the slow phase instead of
/// 98 % and more.)
const BOTTLENECK: f64 = 0.25;

/// A limit cut below this share of its peak since the last probe while it is the bottleneck
/// re-probes the base.
const STALE: f64 = 0.7;

/// Gradient limit state; latencies in seconds as `f64`.
#[derive(Debug)]
pub(crate) struct Gradient {
    config: GradientConfig,
    limit: f64,
    base: Option<f64>,
    window_start: Instant,
    sum: f64,
    count: usize,
    max_in_flight: usize,
    /// Completions of the window that found the limit in full use.
    at_limit: usize,
    /// Highest limit since the last probe.
    peak: f64,
    last_sample: Option<f64>,
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
            window_start: now,
            sum: 0.0,
            count: 0,
            max_in_flight: 0,
            at_limit: 0,
            last_sample: None,
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

    fn start_probe(&mut self, now: Instant, before: Option<f64>) {
        tracing::debug!(limit = self.limit, "admission: probing the no-load latency");
        self.probe = Some(Probe {
            started: now,
            before,
            sum: 0.0,
            count: 0,
            cohort_end: None,
            finish_at: None,
        });
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
                probe.sum += rtt;
                probe.count += 1;
            }
            if probe.cohort_end.is_none() && probe.count >= self.config.probe_samples {
                let mean = probe.sum / probe.count as f64;
                probe.cohort_end = Some(s.now);
                probe.finish_at = Some(s.now + Duration::from_secs_f64(mean * STRAGGLER_WAIT));
            }
            let timed_out = s.now.saturating_duration_since(probe.started)
                >= self.config.probe_interval.min(Duration::from_secs(2));
            let complete = probe.finish_at.is_some_and(|t| s.now >= t);
            if complete || (timed_out && probe.count > 0) {
                let measured = probe.sum / probe.count as f64;
                let fell = probe.before.is_some_and(|b| measured < b * 0.7);
                self.base = Some(match self.base {
                    // A probe that reads twice the old base or more would itself start a
                    // probe against it: whatever queueing the fall removed, the old base no
                    // longer explains the backend.
                    Some(old) if fell && measured < JUMP * old => old.min(measured),
                    _ => measured,
                });
                tracing::debug!(
                    base_s = measured,
                    fell,
                    "admission: no-load latency measured"
                );
                self.probe = None;
                self.peak = self.limit;
                self.next_probe = Some(s.now + self.config.probe_interval);
                self.reset_window(s.now);
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
        // Grow only when the limit was reached in the window: a limit nobody uses says
        // nothing about the backend and would creep upwards for ever.
        let limit_unused = (self.max_in_flight as f64) + 1.0 < self.limit.round();
        let bottleneck = self.at_limit as f64 >= BOTTLENECK * self.count as f64;
        self.reset_window(s.now);
        self.last_sample = Some(sample);

        let Some(base) = self.base else {
            self.base = Some(sample);
            self.start_probe(s.now, Some(sample));
            return self.effective();
        };
        let c = &self.config;
        let gradient = (c.tolerance * base / sample).clamp(0.5, 1.0);
        let mut new = self.limit * gradient + c.headroom;
        // Between 40 % of the tolerance's excess and the tolerance the limit holds: the
        // latency already shows backend queueing, just not enough to shrink. (A third missed
        // brownout-sim's slowdown targets, tolerance 1.6: slow-phase efficiency 97.4 %.)
        let queueing = sample > base * (1.0 + (c.tolerance - 1.0) * GROW_BELOW);
        if (limit_unused || !bottleneck || queueing) && new > self.limit {
            new = self.limit;
        }
        let old = self.limit;
        self.limit = self.clamp(self.limit * (1.0 - c.smoothing) + new * c.smoothing);
        if (self.limit.round() - old.round()).abs() >= 1.0 {
            tracing::trace!(
                limit = self.limit,
                sample_s = sample,
                base_s = base,
                "admission: gradient limit"
            );
        }
        let due = self.next_probe.is_some_and(|t| s.now >= t);
        // Twice the base: the backend slowed down or queues. Well under it: the base is stale
        // (the backend got faster, e.g. after a slowdown ended) and would let the limit grow
        // unchecked. Either way, measure it again.
        self.peak = self.peak.max(self.limit);
        let stale = bottleneck && self.limit < STALE * self.peak;
        if sample >= JUMP * base || sample <= FASTER * base || due || stale {
            self.start_probe(s.now, Some(sample));
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
                in_flight: 16,
            });
        }
    }

    /// A gradient (limit 16, tolerance 1.4) whose start-up probe measured a 20 ms base;
    /// then the backend slows down and queues: a 75 ms window starts a probe, which reads
    /// `probe_ms`. Returns the gradient and the time of its last sample.
    fn slowed_down_then_probed(probe_ms: u64) -> (Gradient, Instant) {
        let config = GradientConfig {
            initial_limit: 16,
            tolerance: 1.4,
            ..GradientConfig::default()
        };
        let mut g = Gradient::new(config, Instant::now());
        let mut t = Instant::now();
        feed(&mut g, &mut t, 20, 400);
        assert!(g.probe.is_none());
        assert!((g.base.unwrap() - 0.020).abs() < 1e-9);
        while g.probe.is_none() {
            feed(&mut g, &mut t, 75, 1);
        }
        while g.probe.is_some() {
            feed(&mut g, &mut t, probe_ms, 1);
        }
        (g, t)
    }

    #[test]
    fn probe_reading_twice_the_base_replaces_it_even_when_latency_fell() {
        // The probe reads 45 ms, 40 % lower than the window (the queueing it removed) but
        // still over twice the old base.
        let (mut g, mut t) = slowed_down_then_probed(45);
        assert!((g.base.unwrap() - 0.045).abs() < 1e-9, "{:?}", g.base);
        let limit = g.limit;
        // At 60 ms (1.33x the new base: hold) the limit is neither cut nor pinned by a
        // second probe; against the old 20 ms base it would be both.
        for _ in 0..200 {
            feed(&mut g, &mut t, 60, 1);
            assert!(g.probe.is_none());
            assert_eq!(g.effective(), limit.round() as usize);
        }
    }

    #[test]
    fn probe_after_queueing_keeps_the_base() {
        // A 75 ms window whose probe reads 30 ms: the excess was queueing, the base stays.
        let (g, _) = slowed_down_then_probed(30);
        assert!((g.base.unwrap() - 0.020).abs() < 1e-9, "{:?}", g.base);
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
