//! The reliability suite (RELIABILITY.md), integrated: every case through the facade's stack.

mod admission;
mod support;
mod dependencies;
mod config;
mod timeouts;
