//! The store's tests, one program, each run against SQLite and the real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[macro_use]
mod common;
mod store;
mod throughput;
