//! Monitor layer: measures latency, errors, in-flight and queueing delay and publishes the load level
#![forbid(unsafe_code)]
#![deny(missing_docs)]
