//! The key pool's integration tests, one program: the reference catalogue (spec §9.1) on a
//! manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
mod cooldown_hints;
mod hint_parsers;
mod pool;
mod redis;
