//! A small circuit breaker guarding the Redis calls.
//!
//! Layer crates meet only through `brownout-core`, so this crate cannot use
//! `brownout-breaker`; this is the minimum the fleet needs (consecutive failures open it, one
//! probe after `open_for`, success closes it). It belongs in core as a reusable primitive.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The state of the breaker in front of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Redis calls go through.
    Closed,
    /// One probe call is allowed to find out whether Redis is back.
    HalfOpen,
    /// Redis calls are refused without being sent; limits are local.
    Open,
}

impl BreakerState {
    /// `closed`, `half_open` or `open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    fn from_u8(v: u8) -> BreakerState {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }
}

/// Consecutive-failure breaker on a nanosecond clock supplied by the caller.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    opened_at_ns: AtomicU64,
    failures_to_open: u32,
    open_for_ns: u64,
}

impl Breaker {
    pub(crate) fn new(failures_to_open: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: AtomicU8::new(0),
            failures: AtomicU32::new(0),
            opened_at_ns: AtomicU64::new(0),
            failures_to_open: failures_to_open.max(1),
            open_for_ns: u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The state now (one atomic load).
    #[inline]
    pub(crate) fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether a call may be sent at `now_ns`. In `Open`, once `open_for` has passed, the
    /// first caller wins the single half-open probe.
    pub(crate) fn allow(&self, now_ns: u64) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open => {
                let opened = self.opened_at_ns.load(Ordering::Acquire);
                now_ns.saturating_sub(opened) >= self.open_for_ns
                    && self
                        .state
                        .compare_exchange(2, 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            }
        }
    }

    /// A call succeeded: closes the breaker. Returns the previous state.
    pub(crate) fn success(&self) -> BreakerState {
        self.failures.store(0, Ordering::Relaxed);
        BreakerState::from_u8(self.state.swap(0, Ordering::AcqRel))
    }

    /// A call failed (error or past its bound). Returns `true` when this opened the breaker.
    pub(crate) fn failure(&self, now_ns: u64) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let state = self.state();
        let open = match state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => failures >= self.failures_to_open,
            BreakerState::Open => false,
        };
        if open {
            self.opened_at_ns.store(now_ns, Ordering::Release);
            let previous = self.state.swap(2, Ordering::AcqRel);
            return previous != 2;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let b = Breaker::new(2, Duration::from_millis(100));
        assert!(b.allow(0));
        assert!(!b.failure(0));
        b.success();
        assert!(!b.failure(1));
        assert!(b.failure(2), "second consecutive failure opens");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(50_000_000));
        assert!(b.allow(200_000_000), "one probe after open_for");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(200_000_001), "only one probe");
        assert!(b.failure(200_000_002), "failed probe reopens");
        assert!(!b.allow(250_000_000));
        assert!(b.allow(400_000_000));
        assert_eq!(b.success(), BreakerState::HalfOpen);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
