//! What operators see of one request: its series in `/metrics` and its one log line. A tally is
//! started when a provider route takes the request and finished exactly once with the
//! request's outcome; a request dropped before that (its client left) counts as
//! `client_disconnected`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::{ProviderMetrics, RouteMetrics};
use crate::outcome::Outcome;

#[derive(Debug)]
pub struct RequestTally {
    provider: Arc<ProviderMetrics>,
    route: Arc<RouteMetrics>,
    client: usize,
    received: Instant,
    /// Time spent waiting for the upstream (response heads, blocking bodies, a stream's first
    /// event); the rest of the time until the answer is the gateway's own.
    upstream_wait: Duration,
    overhead: Option<Duration>,
    ended: bool,
}

/// How a request ended, for its log line.
#[derive(Debug, Default)]
pub struct Ending<'a> {
    pub request_id: &'a str,
    pub model: Option<&'a str>,
    pub status: Option<u16>,
    pub attempts: u32,
    /// The masked hint of the key that served (or last failed).
    pub key: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl RequestTally {
    /// The request is in flight from now; `client` indexes the gateway's client names.
    pub fn start(
        provider: Arc<ProviderMetrics>,
        route: Arc<RouteMetrics>,
        client: usize,
        received: Instant,
    ) -> Self {
        route.in_flight().inc();
        Self {
            provider,
            route,
            client,
            received,
            upstream_wait: Duration::ZERO,
            overhead: None,
            ended: false,
        }
    }

    pub fn provider(&self) -> &Arc<ProviderMetrics> {
        &self.provider
    }

    pub fn route(&self) -> &'static str {
        self.route.route()
    }

    /// Time the request spent waiting for the upstream.
    pub fn waited(&mut self, duration: Duration) {
        self.upstream_wait += duration;
    }

    /// The answer is in the client's hands (a blocking body whole, a stream's head and first
    /// event): the gateway's own part of the request is over.
    pub fn answered(&mut self) {
        if self.overhead.is_some() {
            return;
        }
        let overhead = self.received.elapsed().saturating_sub(self.upstream_wait);
        self.route.overhead().observe_duration(overhead);
        self.overhead = Some(overhead);
    }

    /// Counts the request and writes its log line; later calls do nothing.
    pub fn finish(&mut self, outcome: Outcome, ending: &Ending<'_>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.answered();
        let duration = self.received.elapsed();
        self.route.request_ended(outcome, self.client);
        self.route.duration().observe_duration(duration);
        self.route.in_flight().dec();
        let overhead = self.overhead.unwrap_or_default();
        tracing::info!(
            request_id = ending.request_id,
            provider = self.provider.name(),
            route = self.route.route(),
            model = ending.model.unwrap_or(""),
            status = ending.status,
            outcome = outcome.as_str(),
            attempts = ending.attempts,
            key = ending.key.unwrap_or(""),
            duration_ms = millis_f64(duration),
            overhead_ms = millis_f64(overhead),
            error = ending.error,
            "request finished"
        );
    }
}

fn millis_f64(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

impl Drop for RequestTally {
    fn drop(&mut self) {
        self.finish(Outcome::ClientDisconnected, &Ending::default());
    }
}
