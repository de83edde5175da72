//! The error of a request aborted at the drain deadline.

use std::error::Error;
use std::fmt;

use brownout_core::Rejected;

/// A request that was running at the drain deadline and was aborted.
///
/// Its response future resolves to this error (boxed into `BoxError`); the inner future is
/// dropped. Its [`source`](Error::source) is a [`Rejected`] with reason
/// [`ShuttingDown`](brownout_core::RejectReason::ShuttingDown), so
/// [`Rejected::find`] finds it and the http / tonic integrations answer 503 /
/// `UNAVAILABLE` like for any refusal. Unlike a plain refusal, the work **had started**:
/// downcast to `Aborted` before retrying a non-idempotent request.
///
/// ```
/// use brownout_core::{LoadLevel, RejectReason, Rejected};
/// use brownout_shutdown::Aborted;
///
/// let err: Box<dyn std::error::Error + Send + Sync> =
///     Aborted::new(Rejected::new(RejectReason::ShuttingDown, LoadLevel::Normal)).into();
/// assert_eq!(Rejected::find(&*err).unwrap().reason(), RejectReason::ShuttingDown);
/// assert!(err.downcast_ref::<Aborted>().is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted {
    rejected: Rejected,
}

impl Aborted {
    /// Wraps the rejection carried by the aborted request.
    pub const fn new(rejected: Rejected) -> Aborted {
        Aborted { rejected }
    }

    /// The `ShuttingDown` rejection.
    pub const fn rejected(&self) -> &Rejected {
        &self.rejected
    }
}

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request aborted at the shutdown drain deadline")
    }
}

impl Error for Aborted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.rejected)
    }
}
