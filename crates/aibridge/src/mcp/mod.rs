//! MCP tool injection: the tools of the configured MCP servers (`client` speaks to one server,
//! `tools` keeps every server's tool list current and calls them), added to bridged requests and
//! run by the gateway's inner agentic loop (`ingress/bridged.rs`).

pub mod client;
pub mod tools;
