//! A test kit for overload control: mock backends, fault injection and open-loop load in
//! virtual time, with assertions that name the numbers.
//!
//! ```
//! use std::time::Duration;
//! use brownout_core::Priority;
//! use brownout_test::{LoadDriver, MockBackend, assert_success_at_least};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let backend = MockBackend::new(8, Duration::from_millis(20)); // 400 req/s
//! let driver = LoadDriver::builder()
//!     .rate(0.5 * backend.capacity())
//!     .duration(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! let summary = driver.run(backend.clone(), |_class: Priority| ()).await;
//! assert_success_at_least(&summary, Priority::Critical, 0.999);
//! assert!(backend.stats().peak_concurrency <= 8);
//! # }
//! ```
//!
//! # Why it exists
//!
//! Overload behaviour is hard to test with ordinary unit tests: it needs many concurrent
//! requests, a server that gets slow, and time — seconds of it. `tower-test`'s mock
//! answers one request at a time by hand. This kit runs the whole thing in tokio's paused
//! clock instead: a [`LoadDriver`] sends open-loop Poisson traffic with a class mix into
//! any `tower::Service`, a [`MockBackend`] serves it with `N` workers and a seeded latency
//! distribution, and ten virtual seconds take a fraction of a real one, with the same
//! result on every run. It is the engine of the `brownout-sim` harness.
//!
//! | piece | what it does |
//! |---|---|
//! | [`MockBackend`] | a `Service` for any request type (and [`http`](MockBackend::http) flavour): workers with a FIFO queue, fixed / uniform / exponential / log-normal latency, failures, hangs, panics; timed [`Phase`]s and a [`BackendHandle`] change them mid-test; [`BackendStats`] |
//! | [`ChaosLayer`] | a seeded fault-injection layer for any stack position: added latency, errors, panics, hangs, per class or per route; off until enabled |
//! | [`LoadDriver`] / [`drive`] | open-loop arrivals at a rate with a class mix, client deadlines, a [`Judge`] for the answers; returns a [`Summary`] |
//! | [`Summary`] | per class ([`ClassSummary`]): sent, ok, failed, timed out, refused by [`RejectReason`](brownout_core::RejectReason), p50/p99/max; totals; goodput; level changes |
//! | [`assert`](mod@assert) | [`assert_sheds_before`], [`assert_success_at_least`], [`assert_priority_order`], [`assert_level_reached`] (on a monitor [`Snapshot`](brownout_monitor::Snapshot)), … — failures print the numbers |
//!
//! # Determinism
//!
//! Run under `#[tokio::test(start_paused = true)]` (a current-thread runtime): the clock
//! only moves when every task waits, so timings are exact. Every random draw comes from a
//! seeded [`Draw`]: the arrivals (driver seed), the service times and faults (backend seed)
//! and the chaos (layer seed). Service times are whole milliseconds, tokio's timer
//! resolution. Assert ranges (goodput ≥ x), not exact traces, so a test survives a tuning
//! change in the stack it tests.
//!
//! # Testing an axum router
//!
//! "My router sheds Low before High at 4× load": an axum `Router` whose handler calls a
//! `MockBackend`, behind the `brownout` facade's stack, driven at four times the backend's
//! capacity. This is `tests/axum_sheds_low_before_high.rs`, which runs with
//! `cargo test -p brownout-test`:
//!
#![doc = concat!("```rust,ignore\n", include_str!("../tests/axum_sheds_low_before_high.rs"), "```")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod assert;
mod backend;
mod chaos;
mod draw;
mod driver;
mod summary;

pub use assert::*;
pub use backend::{
    BackendHandle, BackendStats, HttpBackend, HttpFuture, MockBackend, MockBackendBuilder,
    MockFailure, MockFuture, Phase, Served, Work,
};
pub use chaos::{
    Chaos, ChaosBuilder, ChaosError, ChaosFuture, ChaosLayer, ChaosStats, Everything, Fault,
    Faults, Target,
};
pub use draw::{Draw, Latency};
pub use driver::{
    Arrival, ByError, HttpJudge, Judge, JudgeFn, Judged, LoadDriver, LoadDriverBuilder, Planned,
    Verdict, drive,
};
pub use summary::{ClassSummary, LevelChange, Outcome, Record, Summary};
