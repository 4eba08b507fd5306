//! Integration tests of the authorization server: the real server, started in-process on an
//! ephemeral loopback port with a temporary data directory, driven over HTTP the way agents,
//! administrators and outside JWT libraries use it.
//!
//! One test binary for the crate; the tests live in `tests/it/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod it;
