//! The admit / release / cancel state machine without a tokio runtime, for the loom model
//! tests (`tests/loom.rs`). Compiled only under `--cfg brownout_loom` (`scripts/loom.sh`).
//!
//! [`Gate::admit`] runs the same code as [`PriorityAdmission::call`](crate::PriorityAdmission)
//! after classification: the lock-free fast path, then the locked queue. A [`Waiting`] is
//! polled through the same `poll_grant` as the response future, and dropping a [`Running`]
//! or a [`Waiting`] runs the same guards (`Permit`, `Waiter`) as dropping the response
//! future. Only the sleep that times out a waiter is left out (the queue timeout is an hour).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use brownout_core::sync::Arc;
use brownout_core::{LoadLevel, Priority, RejectReason};

use crate::future::Waiter;
use crate::shared::{Permit, Shared, Slow, WaitPoll};
use crate::{Limit, NoDeadline, PriorityAdmissionLayer, QueueTimeout};

/// Shared admission state with a fixed limit, a queue and no timers that could fire.
pub struct Gate {
    shared: Arc<Shared>,
}

/// What [`Gate::admit`] decided.
pub enum Admission {
    /// A permit was taken at once.
    Running(Running),
    /// The request waits in the queue.
    Waiting(Waiting),
    /// The request was refused.
    Rejected(RejectReason),
}

/// A held permit; dropping it releases the permit and hands it to the best waiter.
pub struct Running {
    _permit: Permit,
}

/// A queued request; poll it for its permit, drop it to cancel.
pub struct Waiting {
    waiter: Waiter,
}

impl Gate {
    /// A gate of `limit` permits and a queue of `queue_capacity` places.
    ///
    /// # Panics
    ///
    /// When the configuration is refused (`limit == 0`).
    pub fn new(limit: usize, queue_capacity: usize) -> Gate {
        let layer = PriorityAdmissionLayer::builder()
            .limit(Limit::fixed(limit))
            .queue_capacity(queue_capacity)
            .queue_timeout(QueueTimeout::fixed(Duration::from_secs(3600)))
            .classifier(|_: &()| Priority::Medium)
            .deadline(NoDeadline)
            .build()
            .expect("valid model configuration");
        Gate {
            shared: layer.shared,
        }
    }

    /// Admits a request of `class` as `call` does.
    pub fn admit(&self, class: Priority) -> Admission {
        match self.shared.admit(class, LoadLevel::Normal, None) {
            Slow::Admitted => Admission::Running(Running {
                _permit: Permit::new(Arc::clone(&self.shared), class),
            }),
            Slow::Rejected(reason) => Admission::Rejected(reason),
            Slow::Queued { slot, id } => Admission::Waiting(Waiting {
                waiter: Waiter::new(Arc::clone(&self.shared), slot, id, class, LoadLevel::Normal),
            }),
        }
    }

    /// Raises or lowers the limit as an adaptive algorithm's completion does.
    pub fn set_limit(&self, limit: usize) {
        self.shared.set_limit(limit);
    }

    /// Permits held now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Requests queued now.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// Requests queued now, per the queue itself (under its lock).
    pub fn queue_len(&self) -> usize {
        self.shared.queue_len()
    }
}

impl Future for Waiting {
    type Output = Result<Running, RejectReason>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.waiter.poll_grant(cx.waker()) {
            WaitPoll::Granted => Poll::Ready(Ok(Running {
                _permit: self.waiter.take_permit(),
            })),
            WaitPoll::Rejected(reason) => {
                self.waiter.take_rejection(reason);
                Poll::Ready(Err(reason))
            }
            WaitPoll::Pending(_) => Poll::Pending,
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("shared", &self.shared)
            .finish()
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admission::Running(_) => f.write_str("Running"),
            Admission::Waiting(_) => f.write_str("Waiting"),
            Admission::Rejected(reason) => write!(f, "Rejected({reason:?})"),
        }
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Running")
    }
}

impl fmt::Debug for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waiting")
    }
}
