//! The caller's deadline, carried in request extensions and parsed from `grpc-timeout`.

use std::time::Duration;

use tokio::time::Instant;

/// The instant by which the caller stops waiting for the answer.
///
/// Any layer (or the http integration, from a `grpc-timeout` header) may put one in an
/// `http::Request`'s extensions. Admission drops requests whose deadline passed while
/// queued, the adaptive timeout never waits past it, and retry never backs off past it.
/// An earlier deadline always wins: use [`Deadline::tighten`] to set one.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut req = http::Request::new(());
/// Deadline::after(Duration::from_millis(500)).tighten(req.extensions_mut());
/// Deadline::after(Duration::from_secs(5)).tighten(req.extensions_mut()); // later: ignored
/// let deadline = Deadline::of(req.extensions()).unwrap();
/// assert_eq!(deadline.remaining(), Duration::from_millis(500));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Deadline {
        Deadline(instant)
    }

    /// A deadline `timeout` from now (saturating far in the future for huge timeouts).
    pub fn after(timeout: Duration) -> Deadline {
        let now = Instant::now();
        Deadline(now.checked_add(timeout).unwrap_or_else(|| far_future(now)))
    }

    /// The instant.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// The time left, zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// The deadline stored in `extensions`, if any.
    pub fn of(extensions: &http::Extensions) -> Option<Deadline> {
        extensions.get::<Deadline>().copied()
    }

    /// Stores this deadline in `extensions` unless an earlier one is there; returns the
    /// deadline in force.
    pub fn tighten(self, extensions: &mut http::Extensions) -> Deadline {
        // Updated in place when one is there: `insert` would box the value again and free
        // the old box.
        match extensions.get_mut::<Deadline>() {
            Some(existing) if *existing <= self => *existing,
            Some(existing) => {
                *existing = self;
                self
            }
            None => {
                extensions.insert(self);
                self
            }
        }
    }

    /// A deadline from a `grpc-timeout` header value (see [`parse_grpc_timeout`]).
    pub fn from_grpc_timeout(value: &[u8]) -> Option<Deadline> {
        parse_grpc_timeout(value).map(Deadline::after)
    }
}

/// About thirty years from `now`: what "no deadline" saturates to.
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365 * 30)
}

/// Parses a gRPC `grpc-timeout` value: up to 8 ASCII digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`). Returns `None` for anything else; never panics.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
/// assert_eq!(parse_grpc_timeout(b"123456789S"), None); // more than 8 digits
/// assert_eq!(parse_grpc_timeout(b"-1S"), None);
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount.saturating_mul(3600)),
        b'M' => Duration::from_secs(amount.saturating_mul(60)),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats `timeout` as a `grpc-timeout` value (at most 8 digits, the finest unit that fits).
pub fn format_grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
        ('H', 3_600_000_000_000),
    ] {
        let amount = nanos.div_ceil(per);
        if amount <= MAX {
            return format!("{amount}{unit}");
        }
    }
    format!("{MAX}H")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"10s",
            b"1.5S",
            b" 1S",
            b"1S ",
            b"\xff1S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(5),
            Duration::from_millis(250),
            Duration::from_secs(100_000),
            Duration::MAX,
        ] {
            let text = format_grpc_timeout(d);
            let back = parse_grpc_timeout(text.as_bytes()).unwrap();
            assert!(
                back >= d.min(Duration::from_secs(99_999_999 * 3600)),
                "{d:?} -> {text}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines() {
        let d = Deadline::after(Duration::MAX);
        assert!(!d.is_expired());
        let past = Deadline::at(Instant::now());
        assert!(past.is_expired());
        assert_eq!(past.remaining(), Duration::ZERO);
        let mut ext = http::Extensions::new();
        assert_eq!(d.tighten(&mut ext), d);
        assert_eq!(past.tighten(&mut ext), past);
        assert_eq!(Deadline::of(&ext), Some(past));
        assert!(Deadline::from_grpc_timeout(b"5m").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn tighten_keeps_the_earliest_whatever_the_order() {
        let early = Deadline::after(Duration::from_millis(100));
        let late = Deadline::after(Duration::from_secs(5));
        for order in [[early, late], [late, early]] {
            let mut ext = http::Extensions::new();
            ext.insert(7_u8);
            for d in order {
                d.tighten(&mut ext);
            }
            assert_eq!(Deadline::of(&ext), Some(early), "{order:?}");
            assert_eq!(ext.len(), 2, "one deadline, updated in place");
            assert_eq!(late.tighten(&mut ext), early);
            assert_eq!(early.tighten(&mut ext), early);
        }
    }

    proptest! {
        #[test]
        fn grpc_timeout_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_grpc_timeout(&bytes);
        }
    }
}
