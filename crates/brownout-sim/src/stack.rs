//! The stacks the harness compares.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::bulkhead::Bulkhead;
use crate::runner::{Instrumented, run_with};
use crate::{Report, Scenario};

/// The stacks compared on identical arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stack {
    /// The backend alone, always ready: every request queues at the workers.
    Unprotected,
    /// tower's `LoadShed` over `ConcurrencyLimit(workers)`: refuses whatever finds every
    /// worker busy, whatever its class.
    Tower,
    /// A bulkhead of `workers` permits whose FIFO wait is bounded at 100 ms
    /// (like `tower-resilience`'s): priority-blind.
    Bulkhead,
}

impl Stack {
    /// Every stack, in the order reports list them.
    pub const ALL: [Stack; 3] = [Stack::Unprotected, Stack::Tower, Stack::Bulkhead];

    /// The short name used in tables, JSON and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Stack::Unprotected => "unprotected",
            Stack::Tower => "tower",
            Stack::Bulkhead => "bulkhead",
        }
    }

    /// One line saying what the stack is.
    pub const fn description(self) -> &'static str {
        match self {
            Stack::Unprotected => {
                "backend alone: every request queues for a worker (FIFO, unbounded)"
            }
            Stack::Tower => {
                "tower LoadShed + ConcurrencyLimit(workers): refuse when all workers are busy"
            }
            Stack::Bulkhead => {
                "bulkhead: workers permits, FIFO wait of at most 100 ms, priority-blind"
            }
        }
    }

    /// The bulkhead's maximum wait.
    pub const BULKHEAD_MAX_WAIT: Duration = Duration::from_millis(100);
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stack {
    type Err = String;

    fn from_str(s: &str) -> Result<Stack, String> {
        Stack::ALL
            .into_iter()
            .find(|stack| stack.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = Stack::ALL.iter().map(|s| s.name()).collect();
                format!("unknown stack {s:?}: expected one of {}", names.join(", "))
            })
    }
}

/// Runs `scenario` through `stack` (on a fresh paused-clock runtime) and reports.
///
/// ```
/// use std::time::Duration;
/// use brownout_sim::{Scenario, Stack, run};
///
/// let report = run(&Scenario::load(2.0).with_duration(Duration::from_secs(2)), Stack::Tower);
/// assert!(report.goodput() > 0.8);
/// ```
pub fn run(scenario: &Scenario, stack: Stack) -> Report {
    let workers = scenario.workers.max(1);
    match stack {
        Stack::Unprotected => run_with(scenario, stack.name(), Instrumented::new),
        Stack::Tower => run_with(scenario, stack.name(), |backend| {
            Instrumented::new(
                tower::ServiceBuilder::new()
                    .load_shed()
                    .concurrency_limit(workers)
                    .service(backend),
            )
        }),
        Stack::Bulkhead => run_with(scenario, stack.name(), |backend| {
            Instrumented::new(Bulkhead::new(backend, workers, Stack::BULKHEAD_MAX_WAIT))
        }),
    }
}
