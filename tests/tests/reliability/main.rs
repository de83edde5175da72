//! The reliability suite (RELIABILITY.md), integrated: every case through the facade's stack.

mod admission;
#[path = "../common/mod.rs"]
mod common;
mod config;
mod dependencies;
mod shutdown;
mod support;
mod timeouts;
