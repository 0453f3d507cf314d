//! Everything that talks to the upstream: the HTTP clients, built in one place (`client`), the
//! failover loop that picks a key for each attempt (`failover`), the dump of every attempt
//! (`apidump`), Bedrock's answers in the Anthropic shape (`bedrock`), and the background probe
//! that re-validates disabled keys (`probe`).

pub mod apidump;
pub mod bedrock;
pub mod client;
pub mod failover;
pub mod probe;

pub use client::CallDeadline;
pub use failover::{CallDump, Served, UpstreamCall};
