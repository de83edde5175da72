//! The one rejection error every brownout layer returns.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::{LoadLevel, Priority};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Its class is shed at the current load level (`LoadShed`).
    Shed,
    /// The admission queue was full, or it was evicted by a more important request.
    QueueFull,
    /// It waited in the admission queue past its target or its own deadline.
    QueueTimeout,
    /// A rate limit refused it.
    RateLimited,
    /// A circuit breaker is open for its dependency.
    CircuitOpen,
    /// It ran past its (adaptive) timeout or its caller's deadline.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// A retry was wanted but the retry budget is spent (or a client-side throttle refused it).
    BudgetExhausted,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::Shed,
        RejectReason::QueueFull,
        RejectReason::QueueTimeout,
        RejectReason::RateLimited,
        RejectReason::CircuitOpen,
        RejectReason::Timeout,
        RejectReason::ShuttingDown,
        RejectReason::BudgetExhausted,
    ];

    /// The snake-case name, as used in metrics labels and response bodies.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Shed => "shed",
            RejectReason::QueueFull => "queue_full",
            RejectReason::QueueTimeout => "queue_timeout",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::CircuitOpen => "circuit_open",
            RejectReason::Timeout => "timeout",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::BudgetExhausted => "budget_exhausted",
        }
    }

    /// Whether the request never reached the protected service, so a client may safely
    /// send it again (after `retry_after`), even when it is not idempotent.
    /// `Timeout` is the only reason where the work may have started.
    pub const fn never_started(self) -> bool {
        !matches!(self, RejectReason::Timeout)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request refused by a brownout layer: why, at what level, for which class, and when to
/// come back.
///
/// Layers return it boxed into `tower::BoxError` (as tower's `Overloaded` is); find it again
/// with [`Rejected::find`]. The http and tonic integrations turn it into a status code and a
/// `Retry-After` / `grpc-retry-pushback-ms` header.
///
/// ```
/// use std::time::Duration;
/// use brownout_core::{LoadLevel, Priority, RejectReason, Rejected};
///
/// let err: Box<dyn std::error::Error + Send + Sync> = Rejected::new(RejectReason::Shed, LoadLevel::High)
///     .with_priority(Priority::Low)
///     .with_retry_after(Duration::from_secs(1))
///     .into();
/// let rejected = Rejected::find(&*err).unwrap();
/// assert_eq!(rejected.reason(), RejectReason::Shed);
/// assert_eq!(rejected.retry_after(), Some(Duration::from_secs(1)));
/// assert_eq!(err.to_string(), "request rejected: shed (class low, level high, retry after 1s)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejected {
    reason: RejectReason,
    level: LoadLevel,
    priority: Option<Priority>,
    retry_after: Option<Duration>,
}

impl Rejected {
    /// A rejection for `reason` at `level`.
    #[inline]
    pub const fn new(reason: RejectReason, level: LoadLevel) -> Rejected {
        Rejected {
            reason,
            level,
            priority: None,
            retry_after: None,
        }
    }

    /// Records the class of the refused request.
    #[inline]
    #[must_use]
    pub const fn with_priority(mut self, priority: Priority) -> Rejected {
        self.priority = Some(priority);
        self
    }

    /// Records when the client may try again.
    #[inline]
    #[must_use]
    pub const fn with_retry_after(mut self, retry_after: Duration) -> Rejected {
        self.retry_after = Some(retry_after);
        self
    }

    /// Why the request was refused.
    #[inline]
    pub const fn reason(&self) -> RejectReason {
        self.reason
    }

    /// The load level when it was refused.
    #[inline]
    pub const fn level(&self) -> LoadLevel {
        self.level
    }

    /// The class of the refused request, when the layer knew it.
    #[inline]
    pub const fn priority(&self) -> Option<Priority> {
        self.priority
    }

    /// When the client may try again, when the layer knows.
    #[inline]
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Finds a `Rejected` in `error` or anywhere in its `source()` chain.
    pub fn find<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Rejected> {
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(rejected) = err.downcast_ref::<Rejected>() {
                return Some(rejected);
            }
            current = err.source();
        }
        None
    }

    /// Finds a `Rejected` in a boxed error (`tower::BoxError`) or its `source()` chain.
    pub fn find_in_box<'a>(error: &'a (dyn Error + Send + Sync + 'static)) -> Option<&'a Rejected> {
        Rejected::find(error)
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request rejected: {} (", self.reason)?;
        if let Some(priority) = self.priority {
            write!(f, "class {priority}, ")?;
        }
        write!(f, "level {}", self.level)?;
        if let Some(after) = self.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        f.write_str(")")
    }
}

impl Error for Rejected {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An error whose source is a `Rejected` (the way a client library wraps one).
    #[derive(Debug)]
    pub(crate) struct Wrapper(pub(crate) Rejected);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn found_through_a_source_chain() {
        let inner = Rejected::new(RejectReason::QueueTimeout, LoadLevel::Critical);
        let err: Box<dyn Error + Send + Sync> = Box::new(Wrapper(inner));
        assert_eq!(Rejected::find_in_box(&*err), Some(&inner));
        let other: Box<dyn Error + Send + Sync> = "boom".into();
        assert_eq!(Rejected::find_in_box(&*other), None);
    }

    #[test]
    fn names() {
        assert_eq!(RejectReason::RateLimited.as_str(), "rate_limited");
        assert!(RejectReason::Shed.never_started());
        assert!(!RejectReason::Timeout.never_started());
        assert_eq!(
            Rejected::new(RejectReason::Timeout, LoadLevel::Normal).to_string(),
            "request rejected: timeout (level normal)"
        );
    }
}
