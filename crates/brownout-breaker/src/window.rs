//! Sliding windows of call outcomes (resilience4j style): a ring of the last N outcomes, or
//! time buckets whose aggregate is kept by subtracting the bucket that ages out.
//!
//! Both are O(1) per record and per snapshot. They live behind a short, uncontended lock in
//! the breaker (recording happens once per completed call, never on the admit path).

use std::time::Duration;

use crate::config::Window;

/// One recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sample {
    pub(crate) failed: bool,
    pub(crate) slow: bool,
}

/// Totals over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Totals {
    fn add(&mut self, s: Sample) {
        self.calls += 1;
        self.failures += u64::from(s.failed);
        self.slow += u64::from(s.slow);
    }

    fn sub(&mut self, other: Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    fn sub_sample(&mut self, s: Sample) {
        self.calls -= 1;
        self.failures -= u64::from(s.failed);
        self.slow -= u64::from(s.slow);
    }

    /// Failures / calls (0 when empty).
    pub(crate) fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }

    /// Whether `count / calls >= rate` (without dividing; false when empty).
    #[inline]
    pub(crate) fn reaches(count: u64, calls: u64, rate: f64) -> bool {
        calls > 0 && count as f64 >= rate * calls as f64
    }

    /// Slow calls / calls (0 when empty).
    pub(crate) fn slow_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.slow as f64 / self.calls as f64
        }
    }
}

#[derive(Debug)]
pub(crate) enum Outcomes {
    Count {
        ring: Box<[Option<Sample>]>,
        next: usize,
        totals: Totals,
    },
    Time {
        buckets: Box<[Totals]>,
        /// Width of one bucket in nanoseconds.
        width: u64,
        /// Absolute index (time / width) of the newest bucket.
        head: u64,
        totals: Totals,
    },
}

impl Outcomes {
    pub(crate) fn new(window: Window) -> Outcomes {
        match window {
            Window::Count(n) => Outcomes::Count {
                ring: vec![None; n.max(1) as usize].into_boxed_slice(),
                next: 0,
                totals: Totals::default(),
            },
            Window::Time(d) => {
                let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
                // About one-second buckets; at least 4 so a short window still slides,
                // at most one hour's worth so memory stays small.
                let n = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
                let n = n.clamp(4, 3600).min(nanos);
                Outcomes::Time {
                    buckets: vec![Totals::default(); n as usize].into_boxed_slice(),
                    width: (nanos / n).max(1),
                    head: 0,
                    totals: Totals::default(),
                }
            }
        }
    }

    /// Drops buckets that aged out by `now_ns` (time windows only).
    fn advance(&mut self, now_ns: u64) {
        if let Outcomes::Time {
            buckets,
            width,
            head,
            totals,
        } = self
        {
            let abs = now_ns / *width;
            if abs <= *head {
                return;
            }
            let n = buckets.len() as u64;
            if abs - *head >= n {
                buckets.fill(Totals::default());
                *totals = Totals::default();
            } else {
                for i in (*head + 1)..=abs {
                    let b = &mut buckets[(i % n) as usize];
                    totals.sub(*b);
                    *b = Totals::default();
                }
            }
            *head = abs;
        }
    }

    /// Records one outcome at `now_ns` and returns the window totals.
    pub(crate) fn record(&mut self, now_ns: u64, sample: Sample) -> Totals {
        self.advance(now_ns);
        match self {
            Outcomes::Count { ring, next, totals } => {
                if let Some(old) = ring[*next].replace(sample) {
                    totals.sub_sample(old);
                }
                totals.add(sample);
                *next += 1;
                if *next == ring.len() {
                    *next = 0;
                }
                *totals
            }
            Outcomes::Time {
                buckets,
                head,
                totals,
                ..
            } => {
                let n = buckets.len() as u64;
                buckets[(*head % n) as usize].add(sample);
                totals.add(sample);
                *totals
            }
        }
    }

    /// Whether recording one more success (neither failed nor slow) would leave the window
    /// exactly as it is: a count window that is full and holds only successes. Its entries
    /// are then all alike, so where the ring's cursor stands does not matter.
    pub(crate) fn only_successes(&self) -> bool {
        match self {
            Outcomes::Count { ring, totals, .. } => {
                totals.calls == ring.len() as u64 && totals.failures == 0 && totals.slow == 0
            }
            Outcomes::Time { .. } => false,
        }
    }

    /// The totals at `now_ns`, after aging out old buckets.
    pub(crate) fn snapshot(&mut self, now_ns: u64) -> Totals {
        self.advance(now_ns);
        match self {
            Outcomes::Count { totals, .. } | Outcomes::Time { totals, .. } => *totals,
        }
    }

    /// Forgets every outcome.
    pub(crate) fn clear(&mut self) {
        match self {
            Outcomes::Count { ring, next, totals } => {
                ring.fill(None);
                *next = 0;
                *totals = Totals::default();
            }
            Outcomes::Time {
                buckets, totals, ..
            } => {
                buckets.fill(Totals::default());
                *totals = Totals::default();
            }
        }
    }
}

/// Nanoseconds in `d`, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failed: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failed: true,
        slow: false,
    };
    const SLOW: Sample = Sample {
        failed: false,
        slow: true,
    };

    #[test]
    fn count_window_keeps_the_last_n() {
        let mut w = Outcomes::new(Window::Count(4));
        for _ in 0..4 {
            w.record(0, FAIL);
        }
        assert_eq!(w.snapshot(0).failures, 4);
        let t = w.record(0, OK);
        assert_eq!((t.calls, t.failures), (4, 3));
        for _ in 0..3 {
            w.record(0, SLOW);
        }
        let t = w.snapshot(u64::MAX);
        assert_eq!((t.calls, t.failures, t.slow), (4, 0, 3));
        assert_eq!(t.slow_rate(), 0.75);
        w.clear();
        assert_eq!(w.snapshot(0), Totals::default());
    }

    #[test]
    fn only_successes_needs_a_full_count_window_without_failures_or_slow_calls() {
        let mut w = Outcomes::new(Window::Count(3));
        for _ in 0..2 {
            w.record(0, OK);
            assert!(!w.only_successes(), "not full yet");
        }
        w.record(0, OK);
        assert!(w.only_successes());
        w.record(0, SLOW);
        assert!(!w.only_successes());
        w.record(0, OK);
        w.record(0, OK);
        assert!(!w.only_successes(), "the slow call is still in the window");
        w.record(0, OK);
        assert!(w.only_successes());
        w.record(0, FAIL);
        assert!(!w.only_successes());
        w.clear();
        assert!(!w.only_successes());
        let mut t = Outcomes::new(Window::Time(Duration::from_secs(1)));
        for _ in 0..10 {
            t.record(0, OK);
        }
        assert!(!t.only_successes(), "a time window counts every call");
    }

    #[test]
    fn time_window_ages_out_bucket_by_bucket() {
        let sec = 1_000_000_000u64;
        let mut w = Outcomes::new(Window::Time(Duration::from_secs(10)));
        w.record(0, FAIL);
        w.record(sec / 2, FAIL);
        w.record(3 * sec, OK);
        assert_eq!(w.snapshot(9 * sec).calls, 3);
        // At t = 10 s the bucket [0, 1 s) ages out.
        let t = w.snapshot(10 * sec);
        assert_eq!((t.calls, t.failures), (1, 0));
        assert_eq!(w.snapshot(13 * sec - 1).calls, 1);
        assert_eq!(w.snapshot(13 * sec).calls, 0);
        // A long gap clears everything at once.
        w.record(15 * sec, FAIL);
        assert_eq!(w.snapshot(1000 * sec), Totals::default());
    }

    #[test]
    fn short_time_window_still_slides() {
        let ms = 1_000_000u64;
        let mut w = Outcomes::new(Window::Time(Duration::from_millis(400)));
        w.record(0, FAIL);
        w.record(250 * ms, FAIL);
        assert_eq!(w.snapshot(399 * ms).calls, 2);
        assert_eq!(w.snapshot(400 * ms).calls, 1);
        assert_eq!(w.snapshot(700 * ms).calls, 0);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        fn naive(events: &[(u64, Sample)], keep: impl Fn(usize, u64) -> bool) -> Totals {
            let mut t = Totals::default();
            for (i, (at, s)) in events.iter().enumerate() {
                if keep(i, *at) {
                    t.add(*s);
                }
            }
            t
        }

        fn sample() -> impl Strategy<Value = Sample> {
            (any::<bool>(), any::<bool>()).prop_map(|(failed, slow)| Sample { failed, slow })
        }

        proptest! {
            #[test]
            fn count_window_equals_the_last_n(n in 1u32..20, samples in proptest::collection::vec(sample(), 0..100)) {
                let mut w = Outcomes::new(Window::Count(n));
                let mut events = Vec::new();
                for s in samples {
                    events.push((0, s));
                    let got = w.record(0, s);
                    let len = events.len();
                    prop_assert_eq!(got, naive(&events, |i, _| i + n as usize >= len));
                }
            }

            #[test]
            fn time_window_equals_the_buckets_of_the_last_t(
                secs in 1u64..12,
                steps in proptest::collection::vec((0u64..3_000_000_000, sample()), 0..60),
            ) {
                let window = Duration::from_secs(secs);
                let mut w = Outcomes::new(Window::Time(window));
                let Outcomes::Time { width, ref buckets, .. } = w else { unreachable!() };
                let n = buckets.len() as u64;
                let mut now = 0u64;
                let mut events = Vec::new();
                for (gap, s) in steps {
                    now += gap;
                    events.push((now, s));
                    let got = w.record(now, s);
                    // Kept: every event whose bucket is one of the n newest.
                    let head = now / width;
                    prop_assert_eq!(got, naive(&events, |_, at| at / width + n > head));
                    prop_assert!(got.calls >= 1);
                }
            }
        }
    }
}
