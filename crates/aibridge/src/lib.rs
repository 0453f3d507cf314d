//! The aibridge gateway. A request's path through this crate:
//!
//! `routes` (entry, split by provider name) → `bridge` for bridged APIs, `passthrough` for
//! allow-listed endpoints (body checks, who pays via `auth`, headers via `headers`) →
//! `failover` (key walker, one attempt per key) → `bridge` / `stream_relay` / `passthrough`
//! (the answer relayed to the client). `probe` re-validates disabled keys in the
//! background; `server` wires it together; `cli` is the binary's edge.

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod failover;
pub mod headers;
pub mod passthrough;
pub mod probe;
pub mod provider;
pub mod recorder;
pub mod routes;
pub mod server;
pub mod stream_relay;
pub mod telemetry;
pub mod upstream;
