//! Integration tests of the store, on real databases: SQLite files by default, PostgreSQL scratch
//! databases (one per test) when `MANDATE_TEST_DATABASE_URL` names a server, e.g.
//!
//! ```text
//! cargo test -p mandate-store
//! MANDATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test -p mandate-store
//! ```
//!
//! One test binary for the crate; the tests live in `tests/it/`. A few are SQLite-only and run on
//! SQLite in both cases; those of `it/postgres.rs` need the server and return at once without it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod it;
