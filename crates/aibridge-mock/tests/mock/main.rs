//! The fake upstream's tests, one program, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod anthropic;
mod bedrock;
mod control;
mod load_mode;
mod openai;
mod tool_calls;
