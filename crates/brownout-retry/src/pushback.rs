//! Parsers for the "come back later" hints servers send: `Retry-After` and
//! `grpc-retry-pushback-ms`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a `grpc-retry-pushback-ms` value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this long.
    After(Duration),
    /// Do not retry: the value was negative or malformed (gRPC retry design, A6).
    DoNotRetry,
}

/// Parses a `grpc-retry-pushback-ms` value: non-negative decimal milliseconds. A negative or
/// malformed value means "do not retry". Never panics; huge values saturate.
///
/// ```
/// use std::time::Duration;
/// use brownout_retry::{parse_grpc_pushback, Pushback};
///
/// assert_eq!(parse_grpc_pushback(b"250"), Pushback::After(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_pushback(b"-1"), Pushback::DoNotRetry);
/// assert_eq!(parse_grpc_pushback(b"soon"), Pushback::DoNotRetry);
/// ```
pub fn parse_grpc_pushback(value: &[u8]) -> Pushback {
    match parse_digits(value) {
        Some(ms) => Pushback::After(Duration::from_millis(ms)),
        None => Pushback::DoNotRetry,
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an IMF-fixdate HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) measured against `now` (the wall clock). A date in the
/// past gives zero. Returns `None` for anything else (including the obsolete RFC 850 and
/// asctime date forms, which are ignored); never panics.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use brownout_retry::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
/// assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(7)));
/// assert_eq!(parse_retry_after(b"-5", now), None);
/// ```
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let trimmed = trim(value);
    if let Some(secs) = parse_digits(trimmed) {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(trimmed)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

/// Decimal digits only (at least one), saturating at `u64::MAX`.
fn parse_digits(value: &[u8]) -> Option<u64> {
    let value = trim(value);
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to seconds since the Unix epoch.
fn parse_http_date(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.split(' ');
    let weekday = parts.next()?;
    if weekday.len() != 4 || !weekday.ends_with(',') {
        return None;
    }
    let day: u64 = two_digits(parts.next()?)?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u64 + 1;
    let year = parts.next()?;
    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: u64 = year.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let hour = two_digits(clock.next()?)?;
    let minute = two_digits(clock.next()?)?;
    let second = two_digits(clock.next()?)?;
    if clock.next().is_some() || parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn two_digits(s: &str) -> Option<u64> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm),
/// for years ≥ 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http_dates() {
        let epoch = UNIX_EPOCH;
        assert_eq!(parse_http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        for bad in [
            &b"Sunday, 06-Nov-94 08:49:37 GMT"[..],
            b"Sun Nov  6 08:49:37 1994",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:49:37 GMT",
            b"",
        ] {
            assert_eq!(parse_retry_after(bad, epoch), None, "{bad:?}");
        }
        // A date in the past means "now".
        let later = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn seconds_and_pushback() {
        assert_eq!(
            parse_retry_after(b" 3 ", UNIX_EPOCH),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(b"99999999999999999999999", UNIX_EPOCH),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_grpc_pushback(b"0"), Pushback::After(Duration::ZERO));
        assert_eq!(parse_grpc_pushback(b""), Pushback::DoNotRetry);
        assert_eq!(parse_grpc_pushback(b"1.5"), Pushback::DoNotRetry);
    }

    proptest! {
        #[test]
        fn rel_25_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), secs in any::<u64>()) {
            let now = UNIX_EPOCH + Duration::from_secs(secs % 10_000_000_000);
            let _ = parse_retry_after(&bytes, now);
            let _ = parse_grpc_pushback(&bytes);
        }

        #[test]
        fn dates_round_trip_through_days(days in 0u64..100_000, secs in 0u64..86_400) {
            // Format a date from the epoch offset and parse it back.
            let total = days * 86_400 + secs;
            let (y, m, d) = civil_from_days(days);
            const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let text = format!("Xxx, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT", MONTHS[(m - 1) as usize], secs / 3600, secs / 60 % 60, secs % 60);
            prop_assume!(y <= 9999);
            prop_assert_eq!(parse_http_date(text.as_bytes()), Some(total));
        }
    }

    fn civil_from_days(z: u64) -> (u64, u64, u64) {
        let z = z + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (if m <= 2 { y + 1 } else { y }, m, d)
    }
}
