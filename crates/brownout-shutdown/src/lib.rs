//! ShutdownGuard layer: graceful shutdown with draining, hooks and a report
#![forbid(unsafe_code)]
#![deny(missing_docs)]
