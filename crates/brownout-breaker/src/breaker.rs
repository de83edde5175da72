//! One breaker's state machine (Closed → Open → HalfOpen) and the state shared by every
//! breaker of a layer.
//!
//! The state, its generation and the probe permits are atomics: admitting a call while
//! closed is one atomic load; rejecting while open is one atomic load, one clock read and a
//! comparison. Outcomes go into the window under a short lock; transitions (rare) take a
//! second lock so each fires exactly once, and bump the generation so late outcomes from a
//! previous state are ignored.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use brownout_core::telemetry::{BREAKER_STATE, DecisionMetrics};
use brownout_core::{LoadSignal, Outcome, RejectReason, Rejected};
use tokio::time::Instant;

use crate::config::{CircuitBreakConfig, Window};
use crate::window::{Outcomes, Sample, Totals, nanos};

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass; outcomes are recorded.
    Closed,
    /// Calls fail fast (or go to the fallback) until the open duration elapses.
    Open,
    /// A fixed number of probe calls pass; the rest fail fast.
    HalfOpen,
    /// Opened by an operator: calls fail fast until `force_closed` or `reset`.
    ForcedOpen,
    /// Closed by an operator: calls pass, nothing is recorded, it never trips.
    ForcedClosed,
}

impl BreakerState {
    /// The value of the `brownout_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub const fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed | BreakerState::ForcedClosed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open | BreakerState::ForcedOpen => 2.0,
        }
    }

    /// The snake-case name (`closed`, `open`, `half_open`, `forced_open`, `forced_closed`).
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }

    /// Whether calls are refused (open or forced open).
    pub const fn is_open(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }

    fn from_code(code: u64) -> BreakerState {
        match code {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            FORCED_OPEN => BreakerState::ForcedOpen,
            FORCED_CLOSED => BreakerState::ForcedClosed,
            _ => BreakerState::Closed,
        }
    }

    fn code(self) -> u64 {
        match self {
            BreakerState::Closed => CLOSED,
            BreakerState::Open => OPEN,
            BreakerState::HalfOpen => HALF_OPEN,
            BreakerState::ForcedOpen => FORCED_OPEN,
            BreakerState::ForcedClosed => FORCED_CLOSED,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state transition, as passed to `on_state_change` callbacks.
#[derive(Debug, Clone, Copy)]
pub struct StateChange<'a> {
    /// The breaker's name (the `breaker` metrics label).
    pub name: &'static str,
    /// The key of the per-key breaker (`()` for a single breaker).
    pub key: &'a (dyn fmt::Debug + Send + Sync),
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// For transitions to `Open`: how long it stays open.
    pub open_for: Option<Duration>,
}

/// A callback run on every state transition.
pub(crate) type Callback = Arc<dyn Fn(&StateChange<'_>) + Send + Sync>;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;
const CODE_BITS: u32 = 3;
const CODE_MASK: u64 = (1 << CODE_BITS) - 1;
const NOT_FORCED: u8 = 0;

#[inline]
fn code(word: u64) -> u64 {
    word & CODE_MASK
}

#[inline]
fn next_word(word: u64, code: u64) -> u64 {
    ((word >> CODE_BITS).wrapping_add(1) << CODE_BITS) | code
}

/// The probe word: the low 32 bits of the generation, then the permits taken.
#[inline]
fn probe_word(state_word: u64, taken: u64) -> u64 {
    ((state_word >> CODE_BITS) << 32) | taken
}

/// What every breaker of one layer shares: configuration, telemetry, callbacks, counts.
pub(crate) struct Core {
    pub(crate) config: CircuitBreakConfig,
    pub(crate) name: &'static str,
    pub(crate) signal: LoadSignal,
    pub(crate) metrics: DecisionMetrics,
    callbacks: Vec<Callback>,
    epoch: Instant,
    /// Breakers open or forced open now.
    pub(crate) open: AtomicUsize,
    /// Breakers half-open now.
    pub(crate) half_open: AtomicUsize,
    /// Breakers that exist now.
    pub(crate) slots: AtomicUsize,
    /// The operator override new breakers start in.
    forced: AtomicU8,
    gauge: metrics::Gauge,
    /// Whether calls must be timed (a slow-call rate is configured).
    pub(crate) times_calls: bool,
    slow_ns: u64,
    probe_timeout: Duration,
    effective_minimum: u64,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("open", &self.open.load(Ordering::Relaxed))
            .field("slots", &self.slots.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(
        config: CircuitBreakConfig,
        name: &'static str,
        signal: LoadSignal,
        callbacks: Vec<Callback>,
    ) -> Core {
        let effective_minimum = match config.window {
            Window::Count(n) => config.minimum_calls.min(n),
            Window::Time(_) => config.minimum_calls,
        };
        let gauge = metrics::gauge!(BREAKER_STATE, "breaker" => name);
        gauge.set(0.0);
        Core {
            times_calls: config.slow_call_rate.is_some(),
            slow_ns: nanos(config.slow_call_duration),
            probe_timeout: config.probe_timeout,
            effective_minimum: u64::from(effective_minimum),
            config,
            name,
            signal,
            metrics: DecisionMetrics::new("breaker"),
            callbacks,
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            half_open: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            forced: AtomicU8::new(NOT_FORCED),
            gauge,
        }
    }

    /// Nanoseconds from the layer's creation to `now`.
    #[inline]
    pub(crate) fn ns(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    pub(crate) fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }

    /// The worst state over all breakers (what the gauge shows).
    pub(crate) fn worst_state(&self) -> BreakerState {
        if self.open.load(Ordering::Relaxed) > 0 {
            BreakerState::Open
        } else if self.half_open.load(Ordering::Relaxed) > 0 {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        }
    }

    fn count(&self, state: BreakerState, delta: isize) {
        let counter = match state {
            BreakerState::Open | BreakerState::ForcedOpen => &self.open,
            BreakerState::HalfOpen => &self.half_open,
            _ => return,
        };
        if delta > 0 {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            counter
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                .ok();
        }
    }

    pub(crate) fn set_forced(&self, state: Option<BreakerState>) {
        let v = match state {
            Some(BreakerState::ForcedOpen) => FORCED_OPEN as u8,
            Some(BreakerState::ForcedClosed) => FORCED_CLOSED as u8,
            _ => NOT_FORCED,
        };
        self.forced.store(v, Ordering::Relaxed);
    }
}

/// The outcome of asking a breaker to admit a call.
#[derive(Debug)]
pub(crate) enum Admit {
    /// A normal call (closed or forced closed); `word` is the state it was admitted under.
    Call { word: u64 },
    /// A half-open probe holding one permit of generation `word`.
    Probe { word: u64 },
    /// Refused.
    Reject(Rejected),
}

#[derive(Debug)]
struct Stats {
    outcomes: Outcomes,
    consecutive_failures: u32,
}

#[derive(Debug)]
struct Control {
    /// Trips since the breaker last closed.
    trips: u32,
    /// Successful probes in the current half-open round.
    probe_successes: u32,
    /// Removed from the key map: no longer counted in the core's totals.
    evicted: bool,
}

/// One circuit breaker (the single one of a layer, or one per key), with the per-key
/// fallback memory `M`.
pub(crate) struct Slot<K, M> {
    pub(crate) key: K,
    pub(crate) core: Arc<Core>,
    pub(crate) memo: M,
    /// Generation << 3 | state code.
    state: AtomicU64,
    /// When the open state ends (ns since the core's epoch).
    open_until: AtomicU64,
    /// Generation (low 32 bits) << 32 | half-open permits taken.
    probes: AtomicU64,
    /// When the newest probe of this round was let through.
    last_probe_at: AtomicU64,
    /// Last use (ns since epoch), for idle expiry and LRU eviction of keyed breakers.
    pub(crate) last_used: AtomicU64,
    /// Whether the window is a full count window holding only successes (written under the
    /// stats lock, only when it changes). A success recorded into such a window changes
    /// nothing, so it skips the lock: the closed-state success path takes no lock.
    only_successes: AtomicBool,
    /// Written on every completed call: on its own cache line, away from the read-mostly
    /// state above.
    stats: CachePadded<Mutex<Stats>>,
    control: Mutex<Control>,
}

/// Keeps a value on its own cache line(s) (128 bytes covers adjacent-line prefetching).
#[derive(Debug)]
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<K: fmt::Debug + Send + Sync, M> fmt::Debug for Slot<K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("key", &self.key)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panic in a callback does not
    // break it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A point-in-time view of one breaker (or, summed, of all breakers of a layer).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The state (for a keyed layer: the worst state over its keys).
    pub state: BreakerState,
    /// Calls in the window.
    pub calls: u64,
    /// Failures in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Failures / calls in the window (0 when empty).
    pub failure_rate: f64,
    /// Slow calls / calls in the window (0 when empty).
    pub slow_call_rate: f64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Trips since the breaker last closed (drives the open-duration growth).
    pub trips: u32,
    /// While open: the time left until half-open.
    pub retry_after: Option<Duration>,
}

impl<K, M> Slot<K, M>
where
    K: fmt::Debug + Send + Sync,
{
    pub(crate) fn new(key: K, core: Arc<Core>, memo: M, now_ns: u64) -> Slot<K, M> {
        let forced = u64::from(core.forced.load(Ordering::Relaxed));
        let initial = if forced == NOT_FORCED as u64 {
            CLOSED
        } else {
            forced
        };
        core.slots.fetch_add(1, Ordering::Relaxed);
        core.count(BreakerState::from_code(initial), 1);
        Slot {
            key,
            stats: CachePadded(Mutex::new(Stats {
                outcomes: Outcomes::new(core.config.window),
                consecutive_failures: 0,
            })),
            core,
            memo,
            state: AtomicU64::new(initial),
            open_until: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            last_probe_at: AtomicU64::new(0),
            last_used: AtomicU64::new(now_ns),
            only_successes: AtomicBool::new(false),
            control: Mutex::new(Control {
                trips: 0,
                probe_successes: 0,
                evicted: false,
            }),
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> BreakerState {
        BreakerState::from_code(code(self.state.load(Ordering::Acquire)))
    }

    /// Decides whether a call may go through. Lock-free unless a transition is due.
    #[inline]
    pub(crate) fn admit(&self) -> Admit {
        let word = self.state.load(Ordering::Acquire);
        if matches!(code(word), CLOSED | FORCED_CLOSED) {
            return Admit::Call { word };
        }
        self.admit_slow(word)
    }

    #[cold]
    fn admit_slow(&self, mut word: u64) -> Admit {
        loop {
            match code(word) {
                CLOSED | FORCED_CLOSED => return Admit::Call { word },
                OPEN => {
                    let now = self.core.now_ns();
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return self.reject(Some(Duration::from_nanos(until - now)));
                    }
                    self.to_half_open(word, now);
                }
                HALF_OPEN => {
                    let gen_word = probe_word(word, 0);
                    let limit = u64::from(self.core.config.half_open_probes);
                    let taken =
                        self.probes
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                                (p & !0xFFFF_FFFF == gen_word && (p & 0xFFFF_FFFF) < limit)
                                    .then(|| p + 1)
                            });
                    let now = self.core.now_ns();
                    if taken.is_ok() {
                        self.last_probe_at.fetch_max(now, Ordering::Relaxed);
                        return Admit::Probe { word };
                    }
                    let current = self.state.load(Ordering::Acquire);
                    if current != word {
                        // A transition happened meanwhile: decide again under the new state.
                        word = current;
                        continue;
                    }
                    // Every permit is out. If even the newest probe is past its timeout, the
                    // round is stuck (probes hung or never polled): count it as a failure.
                    let deadline = self
                        .last_probe_at
                        .load(Ordering::Relaxed)
                        .saturating_add(nanos(self.core.probe_timeout));
                    if now >= deadline {
                        self.probe_failed(word, now);
                    } else {
                        return self.reject(Some(Duration::from_nanos(deadline - now)));
                    }
                }
                _ => return self.reject(None),
            }
            word = self.state.load(Ordering::Acquire);
        }
    }

    fn reject(&self, retry_after: Option<Duration>) -> Admit {
        let mut rejected = Rejected::new(RejectReason::CircuitOpen, self.core.signal.level());
        if let Some(after) = retry_after {
            rejected = rejected.with_retry_after(after);
        }
        Admit::Reject(rejected)
    }

    /// Records the outcome of a call admitted under `word` that took `elapsed`.
    pub(crate) fn on_call_result(&self, word: u64, outcome: Outcome, elapsed: Option<Duration>) {
        if code(word) != CLOSED || outcome == Outcome::Rejected {
            return;
        }
        if self.state.load(Ordering::Acquire) != word {
            // The breaker moved on (opened, reset): this outcome belongs to an old window.
            return;
        }
        let sample = Sample {
            failed: outcome == Outcome::Failure,
            slow: self.core.times_calls && elapsed.is_some_and(|e| nanos(e) >= self.core.slow_ns),
        };
        if sample == Sample::default() && self.only_successes.load(Ordering::Relaxed) {
            // The window is a full ring of successes: recording one more would replace a
            // success by a success (totals, rates and consecutive failures unchanged, and
            // it cannot trip). Linearised at the load above: a failure recorded
            // concurrently clears the flag under the lock after it.
            return;
        }
        let now = match self.core.config.window {
            Window::Time(_) => self.core.now_ns(),
            Window::Count(_) => 0,
        };
        let trip = {
            let mut stats = lock(&self.stats.0);
            let totals = stats.outcomes.record(now, sample);
            if sample.failed {
                stats.consecutive_failures = stats.consecutive_failures.saturating_add(1);
            } else {
                stats.consecutive_failures = 0;
            }
            self.note_only_successes(&stats);
            self.should_trip(&totals, stats.consecutive_failures)
        };
        if trip {
            let now = self.core.now_ns();
            let mut control = lock(&self.control);
            if self.state.load(Ordering::Acquire) == word {
                self.open_locked(&mut control, word, now);
            }
        }
    }

    fn should_trip(&self, totals: &Totals, consecutive: u32) -> bool {
        let c = &self.core.config;
        if c.consecutive_failures.is_some_and(|n| consecutive >= n) {
            return true;
        }
        totals.calls >= self.core.effective_minimum
            && (c
                .failure_rate
                .is_some_and(|r| Totals::reaches(totals.failures, totals.calls, r))
                || c.slow_call_rate
                    .is_some_and(|r| Totals::reaches(totals.slow, totals.calls, r)))
    }

    /// Records the outcome of a probe admitted under `word`.
    pub(crate) fn on_probe_result(&self, word: u64, outcome: Outcome, elapsed: Option<Duration>) {
        let slow = self.core.times_calls && elapsed.is_some_and(|e| nanos(e) >= self.core.slow_ns);
        match outcome {
            Outcome::Rejected => self.release_probe(word),
            Outcome::Failure => self.probe_failed(word, self.core.now_ns()),
            Outcome::Success if slow => self.probe_failed(word, self.core.now_ns()),
            Outcome::Success => {
                let mut control = lock(&self.control);
                if self.state.load(Ordering::Acquire) != word {
                    return;
                }
                control.probe_successes += 1;
                if control.probe_successes >= self.core.config.success_threshold {
                    control.trips = 0;
                    self.clear_stats();
                    self.transition_locked(&control, word, CLOSED, None);
                }
            }
        }
    }

    /// A probe failed (or the round is stuck): reopen, with a longer open duration.
    fn probe_failed(&self, word: u64, now: u64) {
        let mut control = lock(&self.control);
        if self.state.load(Ordering::Acquire) == word {
            self.open_locked(&mut control, word, now);
        }
    }

    /// Gives a probe permit of generation `word` back (its future was dropped).
    pub(crate) fn release_probe(&self, word: u64) {
        let gen_word = probe_word(word, 0);
        self.probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p & !0xFFFF_FFFF == gen_word && (p & 0xFFFF_FFFF) > 0).then(|| p - 1)
            })
            .ok();
    }

    fn open_locked(&self, control: &mut Control, word: u64, now: u64) {
        control.trips = control.trips.saturating_add(1);
        let open_for = self.core.config.open_duration_for(control.trips);
        self.open_until
            .store(now.saturating_add(nanos(open_for)), Ordering::Release);
        self.transition_locked(control, word, OPEN, Some(open_for));
    }

    fn to_half_open(&self, word: u64, now: u64) {
        let control = &mut *lock(&self.control);
        if self.state.load(Ordering::Acquire) != word {
            return;
        }
        let next = next_word(word, HALF_OPEN);
        control.probe_successes = 0;
        self.probes.store(probe_word(next, 0), Ordering::Release);
        self.last_probe_at.store(now, Ordering::Relaxed);
        self.transition_locked(control, word, HALF_OPEN, None);
    }

    fn clear_stats(&self) {
        let mut stats = lock(&self.stats.0);
        stats.outcomes.clear();
        stats.consecutive_failures = 0;
        self.note_only_successes(&stats);
    }

    /// Publishes whether the window holds only successes (the caller holds the stats lock).
    /// Written only when it changes, so the flag's cache line stays shared while closed.
    fn note_only_successes(&self, stats: &Stats) {
        let now = stats.outcomes.only_successes();
        if self.only_successes.load(Ordering::Relaxed) != now {
            self.only_successes.store(now, Ordering::Relaxed);
        }
    }

    /// Moves from `word` to `to` (the caller holds the control lock and checked `word`),
    /// then updates counts, the gauge, tracing and the callbacks, once.
    fn transition_locked(&self, control: &Control, word: u64, to: u64, open_for: Option<Duration>) {
        let next = next_word(word, to);
        self.state.store(next, Ordering::Release);
        let from = BreakerState::from_code(code(word));
        let to = BreakerState::from_code(to);
        let core = &self.core;
        if !control.evicted {
            core.count(from, -1);
            core.count(to, 1);
        }
        core.gauge.set(core.worst_state().gauge_value());
        match to {
            BreakerState::Open | BreakerState::ForcedOpen => tracing::warn!(
                target: "brownout::breaker",
                breaker = core.name,
                key = ?self.key,
                from = from.as_str(),
                to = to.as_str(),
                open_for = ?open_for,
                trips = control.trips,
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                target: "brownout::breaker",
                breaker = core.name,
                key = ?self.key,
                from = from.as_str(),
                to = to.as_str(),
                "circuit breaker state change"
            ),
        }
        let change = StateChange {
            name: core.name,
            key: &self.key,
            from,
            to,
            open_for,
        };
        for callback in &core.callbacks {
            callback(&change);
        }
    }

    /// Operator override: forced open, forced closed, or back to a fresh closed breaker.
    pub(crate) fn force(&self, target: Option<BreakerState>) {
        let mut control = lock(&self.control);
        let word = self.state.load(Ordering::Acquire);
        let to = target.unwrap_or(BreakerState::Closed);
        if target.is_none() {
            control.trips = 0;
            self.clear_stats();
        }
        if BreakerState::from_code(code(word)) == to {
            return;
        }
        self.transition_locked(&control, word, to.code(), None);
    }

    /// Removes this breaker from the core's counts (it was evicted from the key map).
    pub(crate) fn evict(&self) {
        let mut control = lock(&self.control);
        if control.evicted {
            return;
        }
        control.evicted = true;
        let core = &self.core;
        core.count(self.state(), -1);
        core.slots
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
            .ok();
        core.gauge.set(core.worst_state().gauge_value());
    }

    /// A snapshot of this breaker at `now_ns`.
    pub(crate) fn snapshot(&self, now_ns: u64) -> BreakerSnapshot {
        let (totals, consecutive) = {
            let mut stats = lock(&self.stats.0);
            (stats.outcomes.snapshot(now_ns), stats.consecutive_failures)
        };
        let trips = lock(&self.control).trips;
        let state = self.state();
        let retry_after = (state == BreakerState::Open).then(|| {
            Duration::from_nanos(
                self.open_until
                    .load(Ordering::Acquire)
                    .saturating_sub(now_ns),
            )
        });
        BreakerSnapshot {
            state,
            calls: totals.calls,
            failures: totals.failures,
            slow_calls: totals.slow,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_rate(),
            consecutive_failures: consecutive,
            trips,
            retry_after,
        }
    }
}

impl BreakerSnapshot {
    /// An empty snapshot in `state`, to sum others into.
    pub(crate) fn empty(state: BreakerState) -> BreakerSnapshot {
        BreakerSnapshot {
            state,
            calls: 0,
            failures: 0,
            slow_calls: 0,
            failure_rate: 0.0,
            slow_call_rate: 0.0,
            consecutive_failures: 0,
            trips: 0,
            retry_after: None,
        }
    }

    /// Adds `other`'s counts into `self` (rates recomputed from the sums, maxima kept).
    pub(crate) fn absorb(&mut self, other: &BreakerSnapshot) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow_calls += other.slow_calls;
        self.consecutive_failures = self.consecutive_failures.max(other.consecutive_failures);
        self.trips = self.trips.max(other.trips);
        if self.calls > 0 {
            self.failure_rate = self.failures as f64 / self.calls as f64;
            self.slow_call_rate = self.slow_calls as f64 / self.calls as f64;
        }
    }
}
