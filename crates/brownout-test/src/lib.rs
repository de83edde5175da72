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
