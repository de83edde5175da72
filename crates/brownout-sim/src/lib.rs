//! Overload simulation harness in virtual time comparing brownout with tower and no protection
#![forbid(unsafe_code)]
#![deny(missing_docs)]
