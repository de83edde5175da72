//! Overload simulation harness: the same open-loop traffic through several tower stacks, in
//! virtual time, scored against a reference scheduler run on the same traffic.
//!
//! A [`Scenario`] describes Poisson arrivals of five request classes at a multiple of the
//! backend's capacity, a mock [`Backend`] of `N` workers whose work cannot be cancelled,
//! client deadlines and an optional slowdown. [`run`] drives one [`Stack`] with it on a
//! current-thread runtime whose clock is paused (`tokio::time::pause`), so ten virtual
//! seconds take a fraction of a real one and every run is deterministic for its seed.
//! The [`Report`] holds goodput, the priority score against a reference scheduler run on
//! the same arrivals (and against the fluid bound, [`water_fill`]), per-class success and
//! latency, rejections by reason and level changes.
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
//!
//! # The command line
//!
//! `cargo run --release -p brownout-sim` runs loads 0.5×, 1×, 2×, 4×, 8× and a 3× backend
//! slowdown through every [`Stack`] and prints one table per scenario with a legend;
//! `--json` prints one JSON object per run, `--quick` makes the runs short for CI, `--help`
//! lists the rest (see [`cli`]). The full default run takes a few seconds.
//!
//! # What the figures mean
//!
//! See [`Report`]: goodput is the share of the backend's worker time spent on requests
//! answered within their deadline; the priority score compares the good answers, weighted
//! 16/8/4/2/1 from Critical to Background ([`WEIGHTS`]), with what a reference scheduler
//! answers of the same arrivals on the same backend: strict priority, no preemption, the
//! best queue timeout chosen in hindsight (see [`Report`]). The fluid bound ([`water_fill`]:
//! serve classes in priority order until the capacity is used) is reported next to it; no
//! real scheduler reaches it when the top classes offer about the capacity left.
//!
//! # The model
//!
//! The engine is the `brownout-test` kit's, the one users test their own stacks with: its
//! [`LoadDriver`](brownout_test::LoadDriver) plans the arrivals and drives each stack, its
//! [`MockBackend`](brownout_test::MockBackend) is the backend ([`backend_for`]). This crate
//! adds the scenarios, the stacks, the scoring and the command line.
//!
//! - Arrivals are drawn once per scenario (seeded), so every stack sees the same requests,
//!   each an `http::Request<()>` carrying its [`Priority`](brownout_core::Priority), its
//!   [`Deadline`](brownout_core::Deadline) and its [`Work`].
//! - The [`Backend`] serves a FIFO queue with `workers` workers; work that reached it runs to
//!   the end even when its caller has given up, as in a real server.
//! - The client drops its future at the deadline; an answer counts only if it came in time.
//! - The brownout stacks are built by [`brownout_stack`] in the `brownout` facade's layer
//!   order, with the configuration of [`BrownoutSettings`] (whose docs say what was tuned
//!   and why).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod bulkhead;
pub mod cli;
mod json;
mod reference;
mod report;
mod runner;
mod scenario;
mod stack;
pub mod table;

pub use backend::{Backend, BackendStats, Served, SimRequest, SimResponse, Work, backend_for};
pub use bulkhead::Bulkhead;
pub use report::{
    ClassStats, GAVE_UP, LevelChange, LimitSample, Report, WEIGHTS, Window, water_fill,
};
pub use runner::{Instrumented, reason_of, run_with, simulate};
pub use scenario::{Scenario, ServiceDist, Slowdown};
pub use stack::{BrownoutSettings, Stack, brownout_stack, run};
