//! Integration tests of the SQLite store, on real database files.
//!
//! One test binary for the crate; the tests live in `tests/it/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod it;
