//! State shared by every clone of a retry layer, and the retry decision.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brownout_core::telemetry::DecisionMetrics;
use brownout_core::{Deadline, RejectReason, Rejected};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::budget::BudgetToken;
use crate::classify::{RetryClassifier, RetryDecision};
use crate::config::RetryConfig;

/// Counters shared by every service a [`RetryLayer`](crate::RetryLayer) builds.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) retries: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) suppressed_by_level: AtomicU64,
    pub(crate) attempts_exhausted: AtomicU64,
    pub(crate) not_idempotent: AtomicU64,
    pub(crate) not_cloneable: AtomicU64,
    pub(crate) deadline: AtomicU64,
    pub(crate) retry_after_too_long: AtomicU64,
    pub(crate) seq: AtomicU64,
    pub(crate) metrics: DecisionMetrics,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            retries: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            suppressed_by_level: AtomicU64::new(0),
            attempts_exhausted: AtomicU64::new(0),
            not_idempotent: AtomicU64::new(0),
            not_cloneable: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            retry_after_too_long: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            metrics: DecisionMetrics::new("retry"),
        }
    }

    pub(crate) fn stats(&self) -> RetryStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RetryStats {
            retries: get(&self.retries),
            budget_exhausted: get(&self.budget_exhausted),
            suppressed_by_level: get(&self.suppressed_by_level),
            attempts_exhausted: get(&self.attempts_exhausted),
            not_idempotent: get(&self.not_idempotent),
            not_cloneable: get(&self.not_cloneable),
            deadline: get(&self.deadline),
            retry_after_too_long: get(&self.retry_after_too_long),
        }
    }
}

/// What a retry layer did so far, over all its clones. (Requests are not counted here, to
/// keep a shared counter off the success path; the budget and the `metrics` facade see them.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryStats {
    /// Retries made.
    pub retries: u64,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: u64,
    /// Retries refused because the load level was at or above `suppress_at`.
    pub suppressed_by_level: u64,
    /// Retryable failures returned because `max_attempts` were made.
    pub attempts_exhausted: u64,
    /// Retryable failures of requests that are not idempotent.
    pub not_idempotent: u64,
    /// Retryable failures of requests that could not be copied (streaming bodies).
    pub not_cloneable: u64,
    /// Retries refused because the caller's deadline was closer than the back-off.
    pub deadline: u64,
    /// Retries refused because the server asked to wait longer than `max_retry_after`.
    pub retry_after_too_long: u64,
}

/// The configuration and strategies of one retry service, shared by its clones.
pub(crate) struct Shared<K, C, I> {
    pub(crate) config: RetryConfig,
    pub(crate) classifier: K,
    pub(crate) cloner: C,
    pub(crate) requests: I,
    pub(crate) state: Arc<State>,
}

/// Why the future holds no copy of its request for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoCopy {
    /// A copy is held (or not needed yet).
    Held,
    NotIdempotent,
    NotCloneable,
    LastAttempt,
    /// The load level was at or above `suppress_at` when the request was sent: no copy
    /// was made, and a failure is not retried even if the level dropped meanwhile.
    SuppressedByLevel,
}

/// A retry to make: after `delay`, holding `token` until the attempt starts.
pub(crate) struct Scheduled {
    pub(crate) delay: Duration,
    pub(crate) token: Option<BudgetToken>,
}

/// The per-request inputs to a retry decision.
pub(crate) struct Attempt<'a> {
    pub(crate) retries: u32,
    pub(crate) copy: NoCopy,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) previous: Duration,
    pub(crate) rng: &'a mut Option<SmallRng>,
}

impl<K, C, I> Shared<K, C, I> {
    /// Whether (and after how long) to retry after `result`.
    pub(crate) fn decide<Res, E>(
        &self,
        result: &Result<Res, E>,
        attempt: Attempt<'_>,
    ) -> Option<Scheduled>
    where
        K: RetryClassifier<Res, E>,
    {
        let after = match self.classifier.classify(result) {
            RetryDecision::Success | RetryDecision::Fail => return None,
            RetryDecision::Retry { after } => after,
        };
        let state = &*self.state;
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let level = self.config.signal.level();
        match attempt.copy {
            NoCopy::Held if level < self.config.suppress_at => {}
            NoCopy::Held | NoCopy::SuppressedByLevel => {
                count(&state.suppressed_by_level);
                state
                    .metrics
                    .rejected(&Rejected::new(RejectReason::Shed, level));
                tracing::trace!(%level, "retry suppressed by the load level");
                return None;
            }
            NoCopy::NotIdempotent => {
                count(&state.not_idempotent);
                return None;
            }
            NoCopy::NotCloneable => {
                count(&state.not_cloneable);
                return None;
            }
            NoCopy::LastAttempt => {
                count(&state.attempts_exhausted);
                return None;
            }
        }
        if after.is_some_and(|after| after > self.config.max_retry_after) {
            count(&state.retry_after_too_long);
            return None;
        }
        let rng = attempt.rng.get_or_insert_with(|| {
            let seq = state.seq.fetch_add(1, Ordering::Relaxed);
            SmallRng::seed_from_u64(splitmix64(self.config.seed ^ splitmix64(seq)))
        });
        let backoff = self
            .config
            .backoff
            .delay(attempt.retries, attempt.previous, rng);
        let delay = backoff.max(after.unwrap_or_default());
        if attempt
            .deadline
            .is_some_and(|deadline| deadline.remaining() <= delay)
        {
            count(&state.deadline);
            return None;
        }
        let token = match &self.config.budget {
            None => None,
            Some(budget) => match budget.try_withdraw() {
                Some(token) => Some(token),
                None => {
                    count(&state.budget_exhausted);
                    state
                        .metrics
                        .rejected(&Rejected::new(RejectReason::BudgetExhausted, level));
                    tracing::trace!("retry budget exhausted");
                    return None;
                }
            },
        };
        count(&state.retries);
        state.metrics.admitted(None, level);
        Some(Scheduled { delay, token })
    }
}

/// SplitMix64's finaliser: spreads a counter over 64 bits.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
