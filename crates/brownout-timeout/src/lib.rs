//! AdaptiveTimeout layer: deadlines from observed latency, scaled by the load level
#![forbid(unsafe_code)]
#![deny(missing_docs)]
