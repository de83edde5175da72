//! The reliability suite (RELIABILITY.md), integrated: every case through the facade's stack.

mod admission;
#[path = "../common/mod.rs"]
mod common;
mod config;
mod dependencies;
mod grpc;
mod headers;
mod queue_prop;
mod shutdown;
mod support;
mod timeouts;
