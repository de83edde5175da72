//! GCRA arithmetic: the server-side lease script, its exact Rust mirror, and the local
//! (fallback) limiter.
//!
//! State is one theoretical arrival time (TAT) per key. With emission interval `T` (one
//! token's worth of time) and burst `b`, `k` tokens conform at `t` when
//! `max(TAT, t) + k·T − t ≤ b·T`; taking them moves `TAT` to `max(TAT, t) + k·T`. A lease asks
//! for up to `n` tokens at once and gets the largest conforming `k ≤ n`; giving `m` unused
//! tokens back moves `TAT` back by `m·T` (never before `t`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The lease script, run atomically by Redis (`EVALSHA`, reloaded on `NOSCRIPT`).
///
/// `KEYS[1]`: the bucket. `ARGV`: interval (µs, may be fractional), burst tolerance (µs,
/// `burst × interval`), tokens wanted (negative: tokens given back), tokens the caller would
/// like to find on its next lease. Time is the server's (`TIME`), so instance clocks never
/// matter. Returns `{granted, wait_one_us, wait_want_us}`: how many tokens were taken, how
/// long until one more conforms, and how long until `want` more conform.
pub(crate) const LEASE_SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local granted = 0
if n < 0 then
  tat = math.max(now, tat + n * interval)
  granted = n
else
  local fit = math.floor((tau - (tat - now)) / interval + 1e-6)
  if fit < 0 then fit = 0 end
  granted = math.min(n, fit)
  tat = tat + granted * interval
end
local wait_one = math.max(0, (tat - now) + interval - tau)
local wait_want = math.max(0, (tat - now) + want * interval - tau)
local ttl = math.ceil((tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', ttl)
return {granted, math.ceil(wait_one), math.ceil(wait_want)}
";

/// The result of one lease, as the script computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    /// Tokens taken (negative: tokens given back).
    pub granted: i64,
    /// Time until one more token conforms.
    pub wait_one: Duration,
    /// Time until the `want` tokens the caller asked about conform.
    pub wait_want: Duration,
}

/// The script's arithmetic in Rust, on a TAT in microseconds: returns the lease and the new
/// TAT. Used by the unit and property tests, so the script and the tests share one model.
///
/// `interval_us > 0`, `tau_us ≥ 0`; `n < 0` gives `-n` tokens back.
pub fn lease(
    tat_us: Option<f64>,
    now_us: f64,
    interval_us: f64,
    tau_us: f64,
    n: i64,
    want: u64,
) -> (Lease, f64) {
    let mut tat = tat_us.map_or(now_us, |t| t.max(now_us));
    let granted;
    if n < 0 {
        tat = now_us.max(tat + n as f64 * interval_us);
        granted = n;
    } else {
        let fit = ((tau_us - (tat - now_us)) / interval_us + 1e-6)
            .floor()
            .max(0.0);
        granted = (n as f64).min(fit) as i64;
        tat += granted as f64 * interval_us;
    }
    let wait_one = ((tat - now_us) + interval_us - tau_us).max(0.0).ceil();
    let wait_want = ((tat - now_us) + want as f64 * interval_us - tau_us)
        .max(0.0)
        .ceil();
    (
        Lease {
            granted,
            wait_one: Duration::from_micros(wait_one as u64),
            wait_want: Duration::from_micros(wait_want as u64),
        },
        tat,
    )
}

/// The emission interval and burst tolerance for `rate` tokens per second and `burst`
/// tokens, in microseconds: `(interval, burst × interval)`.
pub fn interval_and_tau_us(rate: f64, burst: f64) -> (f64, f64) {
    let interval = 1e6 / rate;
    (interval, interval * burst.max(1.0))
}

/// A lock-free GCRA on a clock in nanoseconds (the fallback limiter: one CAS per check).
#[derive(Debug, Default)]
pub(crate) struct LocalGcra {
    tat_ns: AtomicU64,
}

impl LocalGcra {
    /// Takes one token at `now_ns` with emission interval `interval_ns` and tolerance
    /// `tau_ns` (`burst × interval`), or says how long until one conforms.
    #[inline]
    pub(crate) fn check(&self, now_ns: u64, interval_ns: u64, tau_ns: u64) -> Result<(), Duration> {
        let mut current = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let start = current.max(now_ns);
            let next = start.saturating_add(interval_ns);
            let ahead = next - now_ns;
            if ahead > tau_ns {
                return Err(Duration::from_nanos(ahead - tau_ns));
            }
            match self.tat_ns.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn burst_then_rate() {
        // 10 tokens/s (100 ms), burst 5: five at once, then one per 100 ms.
        let (interval, tau) = interval_and_tau_us(10.0, 5.0);
        let (l, tat) = lease(None, 0.0, interval, tau, 8, 1);
        assert_eq!(l.granted, 5);
        assert_eq!(l.wait_one, Duration::from_millis(100));
        let (l, tat) = lease(Some(tat), 50_000.0, interval, tau, 8, 1);
        assert_eq!(l.granted, 0);
        assert_eq!(l.wait_one, Duration::from_millis(50));
        let (l, _) = lease(Some(tat), 300_000.0, interval, tau, 8, 4);
        assert_eq!(l.granted, 3);
        assert_eq!(l.wait_want, Duration::from_millis(400));
    }

    #[test]
    fn giving_back_restores_tokens_but_not_past_now() {
        let (interval, tau) = interval_and_tau_us(10.0, 5.0);
        let (_, tat) = lease(None, 0.0, interval, tau, 5, 1);
        let (back, tat) = lease(Some(tat), 0.0, interval, tau, -3, 1);
        assert_eq!(back.granted, -3);
        let (l, tat) = lease(Some(tat), 0.0, interval, tau, 5, 1);
        assert_eq!(l.granted, 3);
        // Giving back more than was taken cannot create credit beyond a full bucket.
        let (_, tat) = lease(Some(tat), 0.0, interval, tau, -100, 1);
        assert_eq!(tat, 0.0);
    }

    #[test]
    fn local_gcra_rate_and_retry() {
        let g = LocalGcra::default();
        let (interval, tau) = (100_000_000, 200_000_000); // 10/s, burst 2
        assert!(g.check(0, interval, tau).is_ok());
        assert!(g.check(0, interval, tau).is_ok());
        assert_eq!(g.check(0, interval, tau), Err(Duration::from_millis(100)));
        assert!(g.check(100_000_000, interval, tau).is_ok());
        assert!(g.check(100_000_000, interval, tau).is_err());
    }

    proptest! {
        /// Over any sequence of leases and give-backs, the tokens held never exceed the
        /// burst plus what the rate produced since the start.
        #[test]
        fn leases_never_exceed_rate_plus_burst(
            rate in 1.0f64..100_000.0,
            burst in 1u32..500,
            steps in proptest::collection::vec((0u64..20_000, -50i64..200), 1..200),
        ) {
            let (interval, tau) = interval_and_tau_us(rate, f64::from(burst));
            let mut tat = None;
            let mut now = 0.0;
            let mut held: i64 = 0;
            for (dt, n) in steps {
                now += dt as f64;
                let n = if n < 0 { -(held.min(-n)) } else { n };
                let (l, next) = lease(tat, now, interval, tau, n, 1);
                tat = Some(next);
                prop_assert!(l.granted <= n.max(0));
                held += l.granted;
                prop_assert!(held >= 0);
                let produced = now / interval + f64::from(burst);
                prop_assert!(held as f64 <= produced + 1e-6, "held {held} > {produced}");
                prop_assert!(next >= now);
            }
        }

        /// After idling long enough, a lease gets exactly min(n, burst).
        #[test]
        fn idle_bucket_grants_min_of_wanted_and_burst(
            rate in 1.0f64..100_000.0, burst in 1u32..1000, n in 0i64..2000,
        ) {
            let (interval, tau) = interval_and_tau_us(rate, f64::from(burst));
            let (l, _) = lease(Some(0.0), 1.7e15, interval, tau, n, 1);
            prop_assert_eq!(l.granted, n.min(i64::from(burst)));
        }
    }
}
