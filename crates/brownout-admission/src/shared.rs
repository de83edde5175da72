//! The state every clone of the layer shares: permits, the priority queue, the limit.
//!
//! # Concurrency design
//!
//! * `in_flight` is an atomic counter; a permit is taken with a CAS loop against `limit`.
//!   When the queue is empty (`queued == 0`) admission takes no lock (the fast path).
//! * Everything about waiters lives under one `Mutex<Queue>`. A waiter is granted a permit
//!   under that lock (its slot's state becomes `GRANTED` and it is woken), so a waiter that
//!   is dropped at the same moment finds `GRANTED` under the lock and releases the permit,
//!   which passes on to the next waiter.
//! * No lost wake-up between a releaser and an enqueuer (Dekker-style, all `SeqCst`): the
//!   releaser decrements `in_flight` and *then* reads `queued`; the enqueuer increments
//!   `queued` and *then* tries to take a permit. One of them sees the other.

use std::collections::VecDeque;
// Statistics nothing decides on stay std atomics; the state admit / release / cancel
// decide on goes through the loom shim (`scripts/loom.sh`).
use std::sync::atomic::AtomicU64;

use brownout_core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, seq_cst_pair};
use brownout_core::sync::{Arc, Mutex, lock};
use std::task::Waker;
use std::time::Duration;

use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{
    LevelTable, LoadLevel, LoadSignal, Priority, QueueProbe, RejectReason, Rejected,
};
use tokio::time::Instant;

use crate::config::{Promotion, QueueTimeout};
use crate::limit::{Algorithm, Outcome, Sample};
use crate::rate::GlobalRate;
use crate::telemetry::Telemetry;

const CLASSES: usize = Priority::COUNT;

thread_local! {
    /// Counts admissions on this thread, to time one request in `sample_every`.
    static SAMPLE_TICK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(crate) const WAITING: u8 = 0;
pub(crate) const GRANTED: u8 = 1;
pub(crate) const REJECTED_FULL: u8 = 2;
pub(crate) const REJECTED_TIMEOUT: u8 = 3;
pub(crate) const REJECTED_SHUTDOWN: u8 = 4;

/// Where a queued request learns its fate.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) state: AtomicU8,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    enqueued: Instant,
    deadline: Option<Instant>,
    slot: Arc<Slot>,
    waker: Option<Waker>,
}

impl Entry {
    fn expiry(&self, allowed: Duration) -> Instant {
        let by_wait = self
            .enqueued
            .checked_add(allowed)
            .unwrap_or_else(|| self.enqueued + Duration::from_secs(86_400 * 365));
        match self.deadline {
            Some(d) if d < by_wait => d,
            _ => by_wait,
        }
    }
}

#[derive(Debug)]
struct Codel {
    interval_end: Instant,
    /// The queue was empty at some moment of the current interval.
    emptied: bool,
    standing: bool,
}

impl Codel {
    /// Starts a new interval when the current one is over, deciding whether the queue
    /// stands. `len` is the queue's length now.
    fn tick(&mut self, now: Instant, interval: Duration, len: usize) {
        if now >= self.interval_end {
            // Standing: the queue never emptied during the whole interval. (Not the minimum
            // delay above `target`: with priority classes the most important requests wait
            // a millisecond or two ahead of the rest, so that test hardly ever fires.)
            self.standing = !self.emptied && len > 0;
            self.emptied = len == 0;
            self.interval_end = now + interval;
        }
    }
}

#[derive(Debug)]
pub(crate) struct Queue {
    classes: [VecDeque<Entry>; CLASSES],
    len: usize,
    next_id: u64,
    codel: Codel,
    /// The last grant went to a starved request out of priority order: the next one follows
    /// priority order, so starved requests take at most every other permit.
    out_of_order: bool,
}

impl Queue {
    /// One entry left the queue (served, refused or cancelled).
    fn removed(&mut self) {
        self.len -= 1;
        if self.len == 0 {
            self.codel.emptied = true;
        }
    }

    fn position(&self, class: usize, id: u64) -> Option<usize> {
        self.classes[class].binary_search_by_key(&id, |e| e.id).ok()
    }
}

/// Counters exposed through the handle.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) admitted: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) rejected: [AtomicU64; REJECT_KINDS],
}

pub(crate) const REJECT_KINDS: usize = 4;

pub(crate) fn reject_kind(reason: RejectReason) -> usize {
    match reason {
        RejectReason::QueueFull => 0,
        RejectReason::QueueTimeout => 1,
        RejectReason::RateLimited => 2,
        _ => 3,
    }
}

/// Result of trying to take a permit for one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acquire {
    Ok,
    /// Every permit is taken.
    Full,
    /// Free permits are held back for other classes' reserved shares.
    Reserved,
}

/// What the slow path decided.
#[derive(Debug)]
pub(crate) enum Slow {
    Admitted,
    Queued { slot: Arc<Slot>, id: u64 },
    Rejected(RejectReason),
}

/// What a queued request's poll found.
#[derive(Debug)]
pub(crate) enum WaitPoll {
    Granted,
    Rejected(RejectReason),
    Pending(Instant),
}

/// Static settings of the shared state.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) queue_caps: LevelTable<usize>,
    pub(crate) timeout: QueueTimeout,
    pub(crate) starvation_bound: Duration,
    pub(crate) promotion: Option<Promotion>,
    pub(crate) reserved: Option<[f64; CLASSES]>,
    pub(crate) retry_after: Duration,
    pub(crate) shutdown_retry_after: Duration,
}

pub(crate) struct Shared {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    class_in_flight: [AtomicUsize; CLASSES],
    queued: AtomicUsize,
    class_queued: [AtomicUsize; CLASSES],
    closed: AtomicBool,
    close_retry_ns: AtomicU64,
    /// `sample_every − 1` of the adaptive limit (a statistics knob: a std atomic).
    sample_mask: std::sync::atomic::AtomicUsize,
    queue: Mutex<Queue>,
    algorithm: Option<Mutex<Algorithm>>,
    settings: Settings,
    pub(crate) signal: LoadSignal,
    probe: Option<QueueProbe>,
    pub(crate) metrics: DecisionMetrics,
    telemetry: Telemetry,
    pub(crate) rate: Option<GlobalRate>,
    pub(crate) totals: Totals,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        initial_limit: usize,
        algorithm: Option<Algorithm>,
        settings: Settings,
        signal: LoadSignal,
        probe: Option<QueueProbe>,
        rate: Option<GlobalRate>,
        metrics: DecisionMetrics,
    ) -> Shared {
        let now = Instant::now();
        let interval = match settings.timeout {
            QueueTimeout::Codel { interval, .. } => interval,
            QueueTimeout::Fixed(d) => d,
        };
        let limit = algorithm
            .as_ref()
            .map_or(initial_limit, Algorithm::effective)
            .max(1);
        Shared {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            class_in_flight: Default::default(),
            queued: AtomicUsize::new(0),
            class_queued: Default::default(),
            closed: AtomicBool::new(false),
            close_retry_ns: AtomicU64::new(0),
            sample_mask: std::sync::atomic::AtomicUsize::new(0),
            queue: Mutex::new(Queue {
                classes: Default::default(),
                len: 0,
                next_id: 0,
                codel: Codel {
                    interval_end: now + interval,
                    emptied: true,
                    standing: false,
                },
                out_of_order: false,
            }),
            algorithm: algorithm.map(Mutex::new),
            settings,
            signal,
            probe,
            metrics,
            telemetry: Telemetry::new(),
            rate,
            totals: Totals::default(),
        }
    }

    // ----- observation -------------------------------------------------------------------

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight_of(&self, class: Priority) -> usize {
        self.class_in_flight[class.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The queue's own length, under its lock (the model tests compare it with `queued`).
    #[cfg(brownout_loom)]
    pub(crate) fn queue_len(&self) -> usize {
        lock(&self.queue).len
    }

    pub(crate) fn queued_of(&self, class: Priority) -> usize {
        self.class_queued[class.index()].load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn queue_capacity(&self, level: LoadLevel) -> usize {
        self.settings.queue_caps[level]
    }

    /// Whether the CoDel controller currently sees a standing queue.
    pub(crate) fn standing_queue(&self) -> bool {
        lock(&self.queue).codel.standing
    }

    /// When an admitted request starts, if its latency is to be timed: always for AIMD, one
    /// request in `sample_every` for the gradient limit, never for a fixed limit.
    #[inline]
    pub(crate) fn sample_start(&self) -> Option<Instant> {
        self.algorithm.as_ref()?;
        let mask = self.sample_mask.load(Ordering::Relaxed);
        if mask != 0 {
            // A per-thread tick: no shared cache line written per request.
            let tick = SAMPLE_TICK.with(|t| {
                let v = t.get().wrapping_add(1);
                t.set(v);
                v
            });
            if tick & mask != 0 {
                return None;
            }
        }
        Some(Instant::now())
    }

    // ----- rejections --------------------------------------------------------------------

    pub(crate) fn rejection(
        &self,
        reason: RejectReason,
        level: LoadLevel,
        class: Priority,
    ) -> Rejected {
        let retry = match reason {
            RejectReason::ShuttingDown => {
                Duration::from_nanos(self.close_retry_ns.load(Ordering::Relaxed))
            }
            _ => self.settings.retry_after,
        };
        self.reject_with(reason, level, class, retry)
    }

    /// The rejection of a queued request, already counted when it was decided.
    pub(crate) fn rejection_counted(
        &self,
        reason: RejectReason,
        level: LoadLevel,
        class: Priority,
    ) -> Rejected {
        let retry = match reason {
            RejectReason::ShuttingDown => {
                Duration::from_nanos(self.close_retry_ns.load(Ordering::Relaxed))
            }
            _ => self.settings.retry_after,
        };
        Rejected::new(reason, level)
            .with_priority(class)
            .with_retry_after(retry)
    }

    pub(crate) fn reject_with(
        &self,
        reason: RejectReason,
        level: LoadLevel,
        class: Priority,
        retry_after: Duration,
    ) -> Rejected {
        let rejected = Rejected::new(reason, level)
            .with_priority(class)
            .with_retry_after(retry_after);
        self.metrics.rejected(&rejected);
        self.totals.rejected[reject_kind(reason)].fetch_add(1, Ordering::Relaxed);
        rejected
    }

    // ----- permits -----------------------------------------------------------------------

    fn unused_reserved_others(
        &self,
        reserved: &[f64; CLASSES],
        class: usize,
        limit: usize,
    ) -> usize {
        let mut unused = 0;
        for (d, share) in reserved.iter().enumerate() {
            if d == class || *share <= 0.0 {
                continue;
            }
            let held = (*share * limit as f64) as usize;
            let used = self.class_in_flight[d].load(Ordering::Relaxed);
            unused += held.saturating_sub(used);
        }
        unused
    }

    #[inline]
    fn try_acquire(&self, class: usize) -> Acquire {
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            let limit = self.limit.load(Ordering::SeqCst);
            if current >= limit {
                return Acquire::Full;
            }
            if let Some(reserved) = &self.settings.reserved
                && current + self.unused_reserved_others(reserved, class, limit) >= limit
            {
                return Acquire::Reserved;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let n = self.class_in_flight[class].fetch_add(1, Ordering::Relaxed) + 1;
        self.telemetry.in_flight(&self.metrics, class, n);
        Acquire::Ok
    }

    /// The lock-free admit path: a permit when nobody waits and one is free.
    #[inline]
    pub(crate) fn try_admit_fast(&self, class: Priority) -> bool {
        self.queued.load(Ordering::SeqCst) == 0 && self.try_acquire(class.index()) == Acquire::Ok
    }

    /// Gives a permit back and hands it on to the best waiter, if any.
    #[inline]
    pub(crate) fn release(&self, class: Priority) {
        let c = class.index();
        let n = self.class_in_flight[c].fetch_sub(1, Ordering::Relaxed);
        self.telemetry
            .in_flight(&self.metrics, c, n.saturating_sub(1));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        seq_cst_pair();
        if self.queued.load(Ordering::SeqCst) != 0 {
            self.dispatch_released();
        }
    }

    /// A permit came back while requests wait: hand it on (out of line, off the fast path).
    #[cold]
    #[inline(never)]
    fn dispatch_released(&self) {
        let mut q = lock(&self.queue);
        self.dispatch(&mut q, Instant::now());
    }

    /// Feeds a completed request's latency to the adaptive limit.
    pub(crate) fn on_complete(&self, started: Instant, outcome: Outcome) {
        let Some(algorithm) = &self.algorithm else {
            return;
        };
        let sample = Sample {
            started,
            now: Instant::now(),
            outcome,
            in_flight: self.in_flight.load(Ordering::Relaxed),
        };
        // Store under the algorithm's lock, so concurrent completions publish in order; most
        // completions leave the limit as it was and skip the store.
        let (new, old) = {
            let mut algorithm = lock(algorithm);
            let new = algorithm.on_sample(sample).max(1);
            let every = algorithm.sample_every() - 1;
            if self.sample_mask.load(Ordering::Relaxed) != every {
                self.sample_mask.store(every, Ordering::Relaxed);
            }
            (new, self.store_limit(new))
        };
        self.limit_changed(new, old);
    }

    /// Publishes `new` as the limit; returns the previous one. Called under the algorithm's
    /// lock, so concurrent completions publish in order.
    fn store_limit(&self, new: usize) -> usize {
        let old = self.limit.load(Ordering::Relaxed);
        if new != old {
            self.limit.store(new, Ordering::SeqCst);
        }
        old
    }

    /// After [`store_limit`](Self::store_limit): a raised limit hands its new permits to
    /// waiters. Dekker pair with an enqueuer (it increments `queued`, then reads the limit).
    fn limit_changed(&self, new: usize, old: usize) {
        if new != old {
            self.telemetry.limit(&self.metrics, new);
            tracing::trace!(limit = new, previous = old, "admission: limit changed");
        }
        seq_cst_pair();
        if new > old && self.queued.load(Ordering::SeqCst) != 0 {
            let mut q = lock(&self.queue);
            self.dispatch(&mut q, Instant::now());
        }
    }

    /// Sets the limit as an adaptive algorithm would (the model tests' entry point).
    #[cfg(brownout_loom)]
    pub(crate) fn set_limit(&self, new: usize) {
        let old = self.store_limit(new.max(1));
        self.limit_changed(new.max(1), old);
    }

    // ----- the queue ---------------------------------------------------------------------

    /// The longest a request may wait (a fixed maximum, or CoDel's interval).
    fn longest_wait(&self) -> Duration {
        match self.settings.timeout {
            QueueTimeout::Fixed(d) => d,
            QueueTimeout::Codel { interval, .. } => interval,
        }
    }

    /// A newcomer was refused for lack of room in the queue: the monitor hears the longest
    /// wait allowed, as if it had waited and timed out.
    pub(crate) fn record_refused_full(&self) {
        if let Some(probe) = &self.probe {
            probe.record_delay(self.longest_wait());
        }
    }

    fn allowed_wait(&self, q: &mut Queue, now: Instant) -> Duration {
        match self.settings.timeout {
            QueueTimeout::Fixed(d) => d,
            QueueTimeout::Codel { target, interval } => {
                q.codel.tick(now, interval, q.len);
                if q.codel.standing { target } else { interval }
            }
        }
    }

    fn record_dequeue(
        &self,
        q: &mut Queue,
        class: usize,
        now: Instant,
        waited: Duration,
        reported: Duration,
    ) {
        q.removed();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.dequeued(class, waited, reported);
        if let QueueTimeout::Codel { interval, .. } = self.settings.timeout {
            q.codel.tick(now, interval, q.len);
        }
    }

    /// Finishes a removed entry with `state` and wakes it.
    fn finish(&self, q: &mut Queue, class: usize, entry: Entry, state: u8, now: Instant) {
        let waited = now.saturating_duration_since(entry.enqueued);
        self.finish_reporting(q, class, entry, state, now, waited);
    }

    /// [`finish`](Self::finish), reporting `reported` to the monitor's probe as the wait.
    fn finish_reporting(
        &self,
        q: &mut Queue,
        class: usize,
        mut entry: Entry,
        state: u8,
        now: Instant,
        reported: Duration,
    ) {
        let waited = now.saturating_duration_since(entry.enqueued);
        self.record_dequeue(q, class, now, waited, reported);
        let level = self.signal.level();
        let priority = Priority::ALL[class];
        match state {
            GRANTED => {
                self.metrics.admitted(Some(priority), level);
                self.totals.admitted.fetch_add(1, Ordering::Relaxed);
            }
            REJECTED_FULL => {
                self.rejection(RejectReason::QueueFull, level, priority);
            }
            REJECTED_TIMEOUT => {
                self.rejection(RejectReason::QueueTimeout, level, priority);
            }
            _ => {
                self.rejection(RejectReason::ShuttingDown, level, priority);
            }
        }
        entry.slot.state.store(state, Ordering::Release);
        if let Some(waker) = entry.waker.take() {
            waker.wake();
        }
    }

    /// The classes to try, best first: heads that waited past the starvation bound, or that
    /// may be promoted (see [`Promotion`]), oldest first; then every non-empty class by
    /// priority.
    fn candidates(&self, q: &Queue, now: Instant) -> ([usize; CLASSES], usize) {
        let mut order = [0; CLASSES];
        let mut n = 0;
        let mut starved: [(Instant, usize); CLASSES] = [(now, 0); CLASSES];
        let mut s = 0;
        for c in 0..CLASSES {
            if q.out_of_order {
                break;
            }
            if let Some(head) = q.classes[c].front() {
                let age = now.saturating_duration_since(head.enqueued);
                let promoted = self
                    .settings
                    .promotion
                    .is_some_and(|p| self.may_promote(q, c, age, &p, now));
                if promoted || age >= self.settings.starvation_bound {
                    starved[s] = (head.enqueued, c);
                    s += 1;
                }
            }
        }
        starved[..s].sort_unstable();
        for &(_, c) in &starved[..s] {
            order[n] = c;
            n += 1;
        }
        for c in 0..CLASSES {
            if !q.classes[c].is_empty() && !order[..n].contains(&c) {
                order[n] = c;
                n += 1;
            }
        }
        (order, n)
    }

    /// Whether the head of class `c`, waiting for `age`, may be served before the more
    /// important classes: it waited `promotion.after`, the queue is less than half full at
    /// the current level, and no more important class's oldest request waited its patience.
    fn may_promote(
        &self,
        q: &Queue,
        c: usize,
        age: Duration,
        promotion: &Promotion,
        now: Instant,
    ) -> bool {
        let level = self.signal.level();
        age >= promotion.after
            && level <= promotion.up_to
            && 2 * q.len < self.settings.queue_caps[level]
            && q.classes[..c]
                .iter()
                .zip(promotion.patience)
                .all(|(d, patience)| {
                    d.front()
                        .is_none_or(|h| now.saturating_duration_since(h.enqueued) < patience)
                })
    }

    /// Refuses (and wakes) the heads that waited past `allowed` or their deadline.
    fn expire(&self, q: &mut Queue, now: Instant, allowed: Duration) {
        for c in 0..CLASSES {
            while q.classes[c]
                .front()
                .is_some_and(|e| now >= e.expiry(allowed))
            {
                if let Some(entry) = q.classes[c].pop_front() {
                    self.finish(q, c, entry, REJECTED_TIMEOUT, now);
                }
            }
        }
    }

    /// Hands free permits to the best waiters; rejects waiters that waited too long.
    fn dispatch(&self, q: &mut Queue, now: Instant) {
        while q.len > 0 {
            let allowed = self.allowed_wait(q, now);
            self.expire(q, now, allowed);
            let (order, n) = self.candidates(q, now);
            let mut granted = false;
            for &c in &order[..n] {
                match self.try_acquire(c) {
                    Acquire::Ok => {
                        let best = q.classes.iter().position(|d| !d.is_empty());
                        q.out_of_order = best != Some(c);
                        // The monitor hears the wait of the most important waiting request
                        // (this one, unless it was served out of priority order).
                        let top = best
                            .and_then(|b| q.classes[b].front())
                            .map(|h| now.saturating_duration_since(h.enqueued));
                        if let Some(entry) = q.classes[c].pop_front() {
                            let waited = now.saturating_duration_since(entry.enqueued);
                            let reported = top.unwrap_or(waited);
                            self.finish_reporting(q, c, entry, GRANTED, now, reported);
                        }
                        granted = true;
                        break;
                    }
                    Acquire::Full => return,
                    Acquire::Reserved => {}
                }
            }
            if !granted {
                return;
            }
        }
    }

    /// Takes a permit (lock-free when one is free and nobody waits), or queues / refuses.
    #[inline]
    pub(crate) fn admit(
        &self,
        class: Priority,
        level: LoadLevel,
        deadline: Option<Instant>,
    ) -> Slow {
        if self.try_admit_fast(class) {
            return Slow::Admitted;
        }
        self.admit_slow(class, level, deadline)
    }

    /// The locked admit path: serve waiters first, then admit, queue (maybe evicting a
    /// lower class) or refuse.
    pub(crate) fn admit_slow(
        &self,
        class: Priority,
        level: LoadLevel,
        deadline: Option<Instant>,
    ) -> Slow {
        let c = class.index();
        // Refuse without the lock when the queue is full and nobody below us could be
        // evicted (racy by nature: the answer was true a moment ago).
        let cap = self.settings.queue_caps[level];
        if cap == 0 {
            return Slow::Rejected(RejectReason::QueueFull);
        }
        if self.queued.load(Ordering::SeqCst) >= cap
            && self.class_queued[c + 1..]
                .iter()
                .all(|n| n.load(Ordering::Relaxed) == 0)
        {
            self.record_refused_full();
            return Slow::Rejected(RejectReason::QueueFull);
        }
        let now = Instant::now();
        let mut q = lock(&self.queue);
        if self.is_closed() {
            return Slow::Rejected(RejectReason::ShuttingDown);
        }
        self.dispatch(&mut q, now);
        let nobody_before = q.classes[..=c].iter().all(VecDeque::is_empty);
        if nobody_before && self.try_acquire(c) == Acquire::Ok {
            return Slow::Admitted;
        }
        // Full (or over a capacity that shrank with the level): evict the newest requests
        // of the lowest classes below ours, or refuse the newcomer.
        while q.len >= cap {
            let Some(d) = (c + 1..CLASSES).rev().find(|&d| !q.classes[d].is_empty()) else {
                self.record_refused_full();
                return Slow::Rejected(RejectReason::QueueFull);
            };
            if let Some(entry) = q.classes[d].pop_back() {
                self.totals.evicted.fetch_add(1, Ordering::Relaxed);
                // No room to wait: the monitor hears the longest wait allowed.
                let reported = self.longest_wait();
                self.finish_reporting(&mut q, d, entry, REJECTED_FULL, now, reported);
            }
        }
        let slot = Arc::new(Slot {
            state: AtomicU8::new(WAITING),
        });
        let id = q.next_id;
        q.next_id += 1;
        q.classes[c].push_back(Entry {
            id,
            enqueued: now,
            deadline,
            slot: Arc::clone(&slot),
            waker: None,
        });
        q.len += 1;
        let depth = self.class_queued[c].fetch_add(1, Ordering::Relaxed) + 1;
        self.telemetry.queue_depth(&self.metrics, c, depth);
        self.queued.fetch_add(1, Ordering::SeqCst);
        seq_cst_pair();
        self.totals.queued.fetch_add(1, Ordering::Relaxed);
        if let Some(probe) = &self.probe {
            probe.enqueued();
        }
        // A permit may have been released between our attempt and the increment above.
        self.dispatch(&mut q, now);
        Slow::Queued { slot, id }
    }

    /// Polls a queued request: its fate, or when to check again (and stores its waker).
    pub(crate) fn poll_waiter(
        &self,
        class: Priority,
        id: u64,
        slot: &Slot,
        waker: &Waker,
    ) -> WaitPoll {
        let c = class.index();
        let now = Instant::now();
        let mut q = lock(&self.queue);
        match slot.state.load(Ordering::Acquire) {
            WAITING => {}
            GRANTED => return WaitPoll::Granted,
            REJECTED_FULL => return WaitPoll::Rejected(RejectReason::QueueFull),
            REJECTED_TIMEOUT => return WaitPoll::Rejected(RejectReason::QueueTimeout),
            _ => return WaitPoll::Rejected(RejectReason::ShuttingDown),
        }
        let allowed = self.allowed_wait(&mut q, now);
        // Other waiters' allowance may just have shrunk (the queue started standing): refuse
        // those now rather than when their own timers fire.
        self.expire(&mut q, now, allowed);
        if slot.state.load(Ordering::Acquire) == REJECTED_TIMEOUT {
            return WaitPoll::Rejected(RejectReason::QueueTimeout);
        }
        let Some(pos) = q.position(c, id) else {
            // Unreachable while WAITING; treat as a timeout rather than hang.
            return WaitPoll::Rejected(RejectReason::QueueTimeout);
        };
        let expiry = q.classes[c][pos].expiry(allowed);
        if now >= expiry {
            if let Some(entry) = q.classes[c].remove(pos) {
                self.finish(&mut q, c, entry, REJECTED_TIMEOUT, now);
            }
            return WaitPoll::Rejected(RejectReason::QueueTimeout);
        }
        let entry = &mut q.classes[c][pos];
        match &entry.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => entry.waker = Some(waker.clone()),
        }
        WaitPoll::Pending(expiry)
    }

    /// A queued request's future was dropped: free its slot, or pass on a permit that was
    /// granted to it at the same moment.
    pub(crate) fn cancel_waiter(&self, class: Priority, id: u64, slot: &Slot) {
        let c = class.index();
        let mut q = lock(&self.queue);
        match slot.state.load(Ordering::Acquire) {
            WAITING => {
                if let Some(pos) = q.position(c, id)
                    && let Some(entry) = q.classes[c].remove(pos)
                {
                    let now = Instant::now();
                    let waited = now.saturating_duration_since(entry.enqueued);
                    q.removed();
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    self.dequeued(c, waited, waited);
                }
            }
            GRANTED => {
                drop(q);
                self.release(class);
            }
            _ => {}
        }
    }

    /// Refuses every queued request and every new one.
    pub(crate) fn close(&self, retry_after: Duration) {
        let ns = u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX);
        self.close_retry_ns.store(ns, Ordering::Relaxed);
        let mut q = lock(&self.queue);
        let was_closed = self.closed.swap(true, Ordering::SeqCst);
        let now = Instant::now();
        let mut rejected = 0usize;
        for c in 0..CLASSES {
            while let Some(entry) = q.classes[c].pop_front() {
                self.finish(&mut q, c, entry, REJECTED_SHUTDOWN, now);
                rejected += 1;
            }
        }
        if !was_closed {
            tracing::info!(rejected, "admission: closed, queued requests rejected");
        }
    }

    /// A request of `class` was admitted without waiting.
    #[inline]
    pub(crate) fn record_immediate(&self, class: Priority) {
        self.telemetry
            .queue_delay(&self.metrics, class.index(), Duration::ZERO);
        if let Some(probe) = &self.probe {
            probe.record_delay(Duration::ZERO);
        }
    }

    /// A request of `class` left the queue (admitted, refused or cancelled) after `waited`;
    /// the per-class metrics get `waited`, the monitor's probe `reported` (see the crate
    /// docs: the wait of the most important waiting request for a grant, the longest wait
    /// allowed for an eviction).
    fn dequeued(&self, class: usize, waited: Duration, reported: Duration) {
        let depth = self.class_queued[class].fetch_sub(1, Ordering::Relaxed);
        self.telemetry
            .queue_depth(&self.metrics, class, depth.saturating_sub(1));
        self.telemetry.queue_delay(&self.metrics, class, waited);
        if let Some(probe) = &self.probe {
            probe.dequeued(reported);
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// A permit held by an admitted request; dropping it gives the permit back.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    class: Priority,
    started: Option<Instant>,
}

impl Permit {
    #[inline]
    pub(crate) fn new(shared: Arc<Shared>, class: Priority) -> Permit {
        let started = shared.sample_start();
        Permit {
            shared,
            class,
            started,
        }
    }

    /// The request completed: feed its latency to the limit (the permit is released on drop).
    #[inline]
    pub(crate) fn complete(&self, outcome: Outcome) {
        if let Some(started) = self.started {
            self.shared.on_complete(started, outcome);
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.shared.release(self.class);
    }
}
