//! The aibridge gateway. A request's path through this crate, one folder per step:
//!
//! `ingress` (where a request enters: the router, the bridged and passthrough handlers, the
//! operator API) → `intake` (who is calling and who pays, headers, the body within its limit) →
//! `upstream` (the HTTP clients, the failover loop that picks a key per attempt, the probe
//! that re-validates disabled keys) → `relay` (the answer back to the client: blocking, streamed
//! event by event, or passed through) → `record` (the request's record and the writer that
//! commits it). `state` holds what every request shares; `serve` runs it; `cli` is the binary's
//! edge.

pub mod bedrock;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod error;
pub mod ingress;
pub mod intake;
pub mod mcp;
pub mod outcome;
pub mod provider;
pub mod record;
pub mod relay;
pub mod serve;
pub mod single_flight;
pub mod state;
pub mod telemetry;
pub mod time;
pub mod upstream;
pub mod usage_report;

#[cfg(test)]
mod test_support {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// A header map from literal pairs.
    pub fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }
}
