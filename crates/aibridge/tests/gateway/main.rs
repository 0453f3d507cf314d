//! The gateway's end-to-end tests, one program: the real binary on port 0 against
//! aibridge-mock, over real HTTP. Modules by capability.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

mod apidump;
mod bad_input;
mod bedrock;
mod breaker;
mod cli;
mod dashboard;
mod failover;
mod faults;
mod key_checks;
mod key_lifecycle;
mod mcp;
mod messages;
mod metrics;
mod openai;
mod otlp_receiver;
mod passthrough;
mod recording;
mod recording_postgres;
mod replicas;
mod streaming;
mod traces;
