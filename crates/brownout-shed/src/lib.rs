//! LoadShed layer: sheds requests by priority according to the load level
#![forbid(unsafe_code)]
#![deny(missing_docs)]
