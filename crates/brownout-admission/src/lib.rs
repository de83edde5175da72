//! PriorityAdmission layer: concurrency limit with a priority queue, queueing-delay control and rate limits
#![forbid(unsafe_code)]
#![deny(missing_docs)]
