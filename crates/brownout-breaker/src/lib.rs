//! CircuitBreak layer: circuit breakers with count and time windows, half-open probes and fallbacks
#![forbid(unsafe_code)]
#![deny(missing_docs)]
