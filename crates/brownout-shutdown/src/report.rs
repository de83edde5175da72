//! What a shutdown did: counts, durations and each hook's outcome.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Live counters of a [`Shutdown`](crate::Shutdown), shared by every guard built from it.
///
/// `admitted == completed + aborted + cancelled + in_flight` at any quiet moment, and every
/// request a guard saw was either admitted or rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Requests passed to the inner service.
    pub admitted: u64,
    /// Admitted requests whose inner future resolved (`Ok` or `Err`).
    pub completed: u64,
    /// Requests refused because the shutdown had stopped admitting.
    pub rejected: u64,
    /// Admitted requests aborted at the drain deadline.
    pub aborted: u64,
    /// Admitted requests whose response future was dropped (or whose inner future
    /// panicked) before it resolved.
    pub cancelled: u64,
    /// Admitted requests still running.
    pub in_flight: u64,
}

impl Counts {
    /// Every request a guard saw: `admitted + rejected`.
    pub fn sent(&self) -> u64 {
        self.admitted.saturating_add(self.rejected)
    }
}

/// How one shutdown hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookOutcome {
    /// It returned `Ok(())` within its timeout.
    Completed,
    /// It returned an error (its `Display` text).
    Failed(String),
    /// It ran past its timeout (given here) and was cancelled.
    TimedOut(Duration),
    /// It panicked (the panic message, when it was a string).
    Panicked(String),
}

impl HookOutcome {
    /// Whether the hook completed successfully.
    pub fn is_ok(&self) -> bool {
        matches!(self, HookOutcome::Completed)
    }
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookOutcome::Completed => f.write_str("completed"),
            HookOutcome::Failed(err) => write!(f, "failed: {err}"),
            HookOutcome::TimedOut(after) => write!(f, "timed out after {after:?}"),
            HookOutcome::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// One hook's name, outcome and duration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookReport {
    /// The name it was registered with.
    pub name: Cow<'static, str>,
    /// How it ended.
    pub outcome: HookOutcome,
    /// How long it ran.
    pub duration: Duration,
}

/// What a shutdown did, returned by [`Shutdown::wait`](crate::Shutdown::wait).
///
/// The counts add up: `completed + rejected + aborted + cancelled + unfinished` is every
/// request the guards saw up to the report ([`sent`](Self::sent)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Requests passed to the inner service, since the handle was built.
    pub admitted: u64,
    /// Admitted requests that resolved, since the handle was built.
    pub completed: u64,
    /// Of those, the ones that resolved after the trigger.
    pub completed_during_drain: u64,
    /// Requests running at the trigger.
    pub in_flight_at_trigger: u64,
    /// Requests running when new requests started being refused (after the readiness delay).
    pub in_flight_at_drain_start: u64,
    /// Requests refused because the shutdown had stopped admitting.
    pub rejected: u64,
    /// Requests aborted at the drain deadline (their futures resolved to a `ShuttingDown`
    /// rejection).
    pub aborted: u64,
    /// Admitted requests dropped (or panicked) before they resolved.
    pub cancelled: u64,
    /// Requests still running when the report was written: aborted at the deadline but not
    /// polled again within the abort grace. Zero unless something holds a response future
    /// without polling it.
    pub unfinished: u64,
    /// Whether every in-flight request finished before the drain deadline.
    pub drained: bool,
    /// From the trigger to the start of refusals (the readiness delay actually waited).
    pub readiness_delay: Duration,
    /// From the start of refusals until no request was running, or until the deadline
    /// (plus the abort grace actually used).
    pub drain_duration: Duration,
    /// Each hook, in the order it ran.
    pub hooks: Vec<HookReport>,
    /// From the trigger to the end of the last hook.
    pub total_duration: Duration,
}

impl ShutdownReport {
    /// Every request the guards saw up to the report.
    pub fn sent(&self) -> u64 {
        self.admitted.saturating_add(self.rejected)
    }

    /// No request aborted or left unfinished and every hook completed.
    pub fn is_clean(&self) -> bool {
        self.drained && self.unfinished == 0 && self.hooks.iter().all(|h| h.outcome.is_ok())
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shutdown in {:?}: {} completed ({} during drain), {} rejected, {} aborted, \
             {} cancelled, {} unfinished; drain {:?}",
            self.total_duration,
            self.completed,
            self.completed_during_drain,
            self.rejected,
            self.aborted,
            self.cancelled,
            self.unfinished,
            self.drain_duration,
        )?;
        for hook in &self.hooks {
            write!(
                f,
                "; hook {} {} in {:?}",
                hook.name, hook.outcome, hook.duration
            )?;
        }
        Ok(())
    }
}
