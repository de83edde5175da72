//! Cross-crate integration and reliability tests for brownout; the tests live in `tests/tests/`.
