//! Retry layer with budgets, jittered back-off and load-aware suppression, and client-side throttling
#![forbid(unsafe_code)]
#![deny(missing_docs)]
