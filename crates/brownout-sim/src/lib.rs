//! Overload simulation harness: the same open-loop traffic through several tower stacks, in
//! virtual time, scored against the best any scheduler could do.
//!
//! A [`Scenario`] describes Poisson arrivals of five request classes at a multiple of the
//! backend's capacity, a mock [`Backend`] of `N` workers whose work cannot be cancelled,
//! client deadlines and an optional slowdown. [`run`] drives one [`Stack`] with it on a
//! current-thread runtime whose clock is paused (`tokio::time::pause`), so ten virtual
//! seconds take a fraction of a real one and every run is deterministic for its seed.
//! The [`Report`] holds goodput, the priority score against the strict-priority ideal
//! ([`water_fill`]), per-class success and latency, rejections by reason and level changes.
//!
//! ```
//! use std::time::Duration;
//! use brownout_core::Priority;
//! use brownout_sim::{Scenario, Stack, run};
//!
//! let scenario = Scenario::load(2.0).with_duration(Duration::from_secs(2)).with_seed(1);
//! let unprotected = run(&scenario, Stack::Unprotected);
//! let tower = run(&scenario, Stack::Tower);
//! assert!(unprotected.goodput() < 0.5); // the queue grows, answers come too late
//! assert!(tower.goodput() > 0.8);
//! println!("{}", brownout_sim::table::render(&[unprotected, tower]));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod bulkhead;
pub mod cli;
mod json;
mod report;
mod runner;
mod scenario;
mod stack;
pub mod table;

pub use backend::{Backend, BackendFuture, BackendStats, SimRequest, SimResponse, Work, Worked};
pub use bulkhead::Bulkhead;
pub use report::{
    ClassStats, GAVE_UP, LevelChange, LimitSample, Report, WEIGHTS, Window, water_fill,
};
pub use runner::{Instrumented, reason_of, run_with, simulate};
pub use scenario::{Scenario, ServiceDist, Slowdown};
pub use stack::{BrownoutSettings, Stack, brownout_stack, run};
