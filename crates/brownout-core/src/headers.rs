//! The header names brownout's layers, clients and integrations agree on, defined once.
//!
//! A server stamps its load level on responses ([`LOAD_LEVEL`]); a client-side retry or
//! throttle reads it back ([`load_level`]) to stop sending what the server would shed
//! anyway. gRPC's own names sit beside ours so no crate spells a header twice.
//!
//! ```
//! use brownout_core::{LoadLevel, headers};
//!
//! let mut map = http::HeaderMap::new();
//! map.insert(headers::LOAD_LEVEL, headers::level_value(LoadLevel::High));
//! assert_eq!(headers::load_level(&map), Some(LoadLevel::High));
//!
//! map.insert(headers::LOAD_LEVEL, http::HeaderValue::from_static("not-a-level"));
//! assert_eq!(headers::load_level(&map), None);
//! ```

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{LoadLevel, RejectReason};

/// `x-load-level`: the server's load level (`normal` … `emergency`) on its responses.
pub const LOAD_LEVEL: HeaderName = HeaderName::from_static("x-load-level");

/// `x-reject-reason`: on a refusal, why (`shed`, `queue_full`, `rate_limited`, … — the
/// [`RejectReason::as_str`] names), so clients and tests need not parse the body.
pub const REJECT_REASON: HeaderName = HeaderName::from_static("x-reject-reason");

/// `x-priority`: the request's class (`critical` … `background`, or `0`–`4`).
pub const PRIORITY: HeaderName = HeaderName::from_static("x-priority");

/// `grpc-timeout`: the caller's deadline in gRPC's wire format (see
/// [`parse_grpc_timeout`](crate::parse_grpc_timeout)).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `grpc-retry-pushback-ms`: how long a gRPC client should wait before retrying; a
/// negative value means "do not retry".
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The value brownout writes in [`LOAD_LEVEL`] for `level` (its lower-case name).
///
/// Each value is made at compile time: `HeaderValue::from_static` checks every byte when it
/// runs, and this is stamped on every response.
pub const fn level_value(level: LoadLevel) -> HeaderValue {
    const fn named(level: LoadLevel) -> HeaderValue {
        HeaderValue::from_static(level.as_str())
    }
    match level {
        LoadLevel::Normal => const { named(LoadLevel::Normal) },
        LoadLevel::Elevated => const { named(LoadLevel::Elevated) },
        LoadLevel::High => const { named(LoadLevel::High) },
        LoadLevel::Critical => const { named(LoadLevel::Critical) },
        LoadLevel::Emergency => const { named(LoadLevel::Emergency) },
    }
}

/// The load level a server reported in its [`LOAD_LEVEL`] header (a level name or digit);
/// `None` when the header is absent or malformed.
pub fn load_level(headers: &HeaderMap) -> Option<LoadLevel> {
    headers.get(LOAD_LEVEL)?.to_str().ok()?.parse().ok()
}

/// The value brownout writes in [`REJECT_REASON`] for `reason` (its snake-case name), made
/// at compile time like [`level_value`]'s.
pub const fn reason_value(reason: RejectReason) -> HeaderValue {
    const fn named(reason: RejectReason) -> HeaderValue {
        HeaderValue::from_static(reason.as_str())
    }
    match reason {
        RejectReason::Shed => const { named(RejectReason::Shed) },
        RejectReason::QueueFull => const { named(RejectReason::QueueFull) },
        RejectReason::QueueTimeout => const { named(RejectReason::QueueTimeout) },
        RejectReason::RateLimited => const { named(RejectReason::RateLimited) },
        RejectReason::CircuitOpen => const { named(RejectReason::CircuitOpen) },
        RejectReason::Timeout => const { named(RejectReason::Timeout) },
        RejectReason::ShuttingDown => const { named(RejectReason::ShuttingDown) },
        RejectReason::BudgetExhausted => const { named(RejectReason::BudgetExhausted) },
    }
}

/// The reason a server gave in its [`REJECT_REASON`] header; `None` when absent or unknown.
pub fn reject_reason(headers: &HeaderMap) -> Option<RejectReason> {
    let value = headers.get(REJECT_REASON)?.as_bytes();
    RejectReason::ALL
        .into_iter()
        .find(|reason| reason.as_str().as_bytes() == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_time_values_are_the_names() {
        for level in LoadLevel::ALL {
            assert_eq!(level_value(level), HeaderValue::from_static(level.as_str()));
        }
        for reason in RejectReason::ALL {
            assert_eq!(
                reason_value(reason),
                HeaderValue::from_static(reason.as_str())
            );
        }
    }

    #[test]
    fn every_level_round_trips_through_its_header_value() {
        for level in LoadLevel::ALL {
            let mut map = HeaderMap::new();
            map.insert(LOAD_LEVEL, level_value(level));
            assert_eq!(load_level(&map), Some(level));
        }
    }

    #[test]
    fn every_reason_round_trips_through_its_header_value() {
        for reason in RejectReason::ALL {
            let mut map = HeaderMap::new();
            map.insert(REJECT_REASON, reason_value(reason));
            assert_eq!(reject_reason(&map), Some(reason));
        }
        let mut map = HeaderMap::new();
        assert_eq!(reject_reason(&map), None);
        map.insert(REJECT_REASON, HeaderValue::from_static("tired"));
        assert_eq!(reject_reason(&map), None);
    }

    #[test]
    fn absent_or_malformed_level_is_none() {
        let mut map = HeaderMap::new();
        assert_eq!(load_level(&map), None);
        map.insert(LOAD_LEVEL, HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(load_level(&map), None);
        map.insert(LOAD_LEVEL, HeaderValue::from_static("9"));
        assert_eq!(load_level(&map), None);
    }
}
