//! The shared vocabulary of the brownout overload-control layers.
//!
//! One [`Monitor`](https://docs.rs/brownout-monitor) publishes a [`LoadLevel`] through a
//! [`LoadSignal`]; every other layer reads it (one atomic load) and looks up what to do in a
//! per-level [`Policy`]. Requests carry a [`Priority`] decided once by a [`Classify`]
//! implementation; refusals are a [`Rejected`] with a reason, the level, the class and a
//! `retry_after`.
//!
//! ```
//! use brownout_core::{LoadLevel, LoadSignal, Policy, Priority};
//!
//! let (publisher, signal) = LoadSignal::channel(LoadLevel::Normal);
//! let policy = Policy::default();
//!
//! publisher.publish(LoadLevel::High);
//! let shed = policy.shed[signal.level()];
//! assert!(shed.contains(Priority::Low));
//! assert!(!shed.contains(Priority::Medium));
//! assert_eq!(policy.timeout_scale[signal.level()], 0.5);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod classify;
pub mod clock;
pub mod config;
mod deadline;
mod future;
pub mod headers;
mod level;
mod macros;
pub mod outcome;
mod priority;
mod probe;
mod rejected;
mod signal;
pub mod sync;
mod table;
pub mod telemetry;

pub use classify::{Classify, ClassifyLayer, ClassifyService, Fixed, FromExtensions};
pub use config::ConfigError;
pub use deadline::{Deadline, format_grpc_timeout, parse_grpc_timeout};
pub use future::MaybeRejected;
pub use level::{LoadLevel, ParseLevelError};
pub use outcome::{ClassifyOutcome, ErrIsFailure, HttpOutcome, Outcome};
pub use priority::{ParsePriorityError, Priority, PrioritySet};
pub use probe::{PressureSource, QueueProbe, QueueWindow, Thresholds};
pub use rejected::{RejectReason, Rejected};
pub use signal::{LoadPublisher, LoadSignal};
pub use table::{LevelTable, Policy, WorkMode};

/// The boxed error type tower layers use (`tower::BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
