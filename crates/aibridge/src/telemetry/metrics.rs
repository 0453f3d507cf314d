//! The Prometheus metrics of the interface contract, served at `GET /metrics`.
//!
//! Every series a provider can have is created when the gateway starts (0 until something
//! happens), and requests hold handles to their own series: counting a request is an atomic add,
//! with no lock, allocation or label formatting. Only label values that cannot be known at start
//! — a model's tokens, an unusual upstream status, a breaker's model — are looked up when they
//! first occur. Each gateway has its own registry, so tests can run gateways side by side.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use aibridge_keypool::{DisableReason, KeySnapshot, KeyState, Verdict};
use aibridge_protocol::Usage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::histogram::{ATTEMPT_BUCKETS, DURATION_BUCKETS, Histogram, OVERHEAD_BUCKETS};
use crate::outcome::Outcome;

/// The `Content-Type` of `GET /metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upstream statuses whose series exist from the start, beside `transport_error`; others are
/// created when first seen.
const COMMON_STATUSES: [u16; 14] = [
    200, 400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503, 504, 529,
];

/// Distinct models per provider with series of their own; later ones share `_other`, so a
/// client sending random model names cannot grow the scrape without bound.
pub const MAX_MODELS_PER_PROVIDER: usize = 1000;

/// The label of the models beyond [`MAX_MODELS_PER_PROVIDER`].
pub const OTHER_MODEL: &str = "_other";

/// The `key` label of attempts made with the client's own key.
const BYOK_KEY: &str = "byok";

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: String,
    route: &'static str,
    outcome: &'static str,
    client: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    provider: String,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    key: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    provider: String,
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyStateLabels {
    provider: String,
    key: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    provider: String,
    key: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExhaustionLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub provider: String,
    pub route: &'static str,
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    server: String,
    tool: String,
    outcome: &'static str,
}

/// Why a key entered cooling or disabled, or came back (`aibridge_key_pool_transitions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    RateLimited,
    Unauthorized,
    Forbidden,
    /// By the probe or an operator; a cooldown running out is not counted.
    ReEnabled,
}

impl Transition {
    /// The transition a key makes when `verdict` is applied to it (if it was not already out).
    pub fn entering(verdict: Verdict) -> Option<Self> {
        match verdict {
            Verdict::RateLimited { .. } => Some(Self::RateLimited),
            Verdict::Rejected {
                reason: DisableReason::Unauthorized,
            } => Some(Self::Unauthorized),
            Verdict::Rejected {
                reason: DisableReason::Forbidden,
            } => Some(Self::Forbidden),
            Verdict::NotKeySpecific => None,
        }
    }

    const ALL: [Transition; 4] = [
        Self::RateLimited,
        Self::Unauthorized,
        Self::Forbidden,
        Self::ReEnabled,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::ReEnabled => "re_enabled",
        }
    }
}

/// How a walk ran out of keys (`aibridge_key_pool_exhaustions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhaustion {
    RateLimited,
    AuthFailed,
}

const KEY_STATES: [(KeyState, &str); 3] = [
    (KeyState::Valid, "valid"),
    (KeyState::Cooling, "cooling"),
    (KeyState::Disabled, "disabled"),
];

/// The registry and its families; one per gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    in_flight: Family<RouteLabels, Gauge>,
    duration: HistogramFamily<RouteLabels>,
    overhead: HistogramFamily<RouteLabels>,
    attempts: Family<AttemptLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    key_state: Family<KeyStateLabels, Gauge>,
    cooldown_remaining: Family<KeyLabels, FloatGauge>,
    transitions: Family<TransitionLabels, Counter>,
    exhaustions: Family<ExhaustionLabels, Counter>,
    failover_attempts: HistogramFamily<ProviderLabels>,
    pub(crate) breaker_state: Family<BreakerLabels, FloatGauge>,
    pub(crate) breaker_rejections: Family<BreakerLabels, Counter>,
    mcp_tool_calls: Family<ToolLabels, Counter>,
    key_state_store_up: Gauge,
    /// Names of the clients `aibridge_requests_total` counts by, in the caller's index order.
    clients: &'static [&'static str],
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn overhead_histogram() -> Histogram {
    Histogram::new(OVERHEAD_BUCKETS)
}

fn attempts_histogram() -> Histogram {
    Histogram::new(ATTEMPT_BUCKETS)
}

impl Metrics {
    /// A registry with every family of the contract; `clients` are the values of the `client`
    /// label, indexed as callers will pass them.
    pub fn new(clients: &'static [&'static str]) -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            requests: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            overhead: Family::new_with_constructor(overhead_histogram),
            attempts: Family::default(),
            tokens: Family::default(),
            key_state: Family::default(),
            cooldown_remaining: Family::default(),
            transitions: Family::default(),
            exhaustions: Family::default(),
            failover_attempts: Family::new_with_constructor(attempts_histogram),
            breaker_state: Family::default(),
            breaker_rejections: Family::default(),
            mcp_tool_calls: Family::default(),
            key_state_store_up: Gauge::default(),
            clients,
            registry: Registry::default(),
        };
        registry.register(
            "aibridge_requests",
            "Requests to provider routes, by how they ended",
            metrics.requests.clone(),
        );
        registry.register(
            "aibridge_requests_in_flight",
            "Requests being served (streams until their last event)",
            metrics.in_flight.clone(),
        );
        registry.register(
            "aibridge_request_duration_seconds",
            "Time from a request's arrival to its end (a stream's last event)",
            metrics.duration.clone(),
        );
        registry.register(
            "aibridge_gateway_overhead_seconds",
            "The gateway's own time per request: until the answer is handed to the client (a stream's first event), minus the wait for the upstream",
            metrics.overhead.clone(),
        );
        registry.register(
            "aibridge_upstream_attempts",
            "Upstream calls by key (masked hint, or byok) and HTTP status",
            metrics.attempts.clone(),
        );
        registry.register(
            "aibridge_tokens",
            "Tokens the upstream reported, by model and type",
            metrics.tokens.clone(),
        );
        registry.register(
            "aibridge_key_state",
            "1 for the key's state at scrape time, 0 for the others",
            metrics.key_state.clone(),
        );
        registry.register(
            "aibridge_key_cooldown_remaining_seconds",
            "Seconds until a cooling key is usable again (0 when it is not cooling)",
            metrics.cooldown_remaining.clone(),
        );
        registry.register(
            "aibridge_key_pool_transitions",
            "Keys entering cooling or disabled, and keys re-enabled by the probe or an operator",
            metrics.transitions.clone(),
        );
        registry.register(
            "aibridge_key_pool_exhaustions",
            "Requests that found no usable key",
            metrics.exhaustions.clone(),
        );
        registry.register(
            "aibridge_key_pool_failover_attempts",
            "Keys tried per pool-paid request, failed ones included",
            metrics.failover_attempts.clone(),
        );
        registry.register(
            "aibridge_circuit_breaker_state",
            "0 closed, 0.5 half-open, 1 open",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "aibridge_circuit_breaker_rejections",
            "Requests refused by an open circuit breaker",
            metrics.breaker_rejections.clone(),
        );
        registry.register(
            "aibridge_mcp_tool_calls",
            "Calls of injected MCP tools",
            metrics.mcp_tool_calls.clone(),
        );
        registry.register(
            "aibridge_key_state_store_up",
            "1 when the key-state store answers",
            metrics.key_state_store_up.clone(),
        );
        metrics.key_state_store_up.set(1);
        Self {
            registry,
            ..metrics
        }
    }

    /// The series of one provider: its routes and its keys (by masked hint, in pool order).
    pub fn provider(
        &self,
        name: &str,
        routes: &[&'static str],
        key_hints: &[String],
        pool_paid: bool,
    ) -> ProviderMetrics {
        let provider = name.to_string();
        let routes = routes
            .iter()
            .map(|&route| {
                let labels = RouteLabels {
                    provider: provider.clone(),
                    route,
                };
                let requests = Outcome::ALL
                    .iter()
                    .flat_map(|outcome| {
                        self.clients.iter().map(|client| {
                            self.requests.get_or_create_owned(&RequestLabels {
                                provider: provider.clone(),
                                route,
                                outcome: outcome.as_str(),
                                client,
                            })
                        })
                    })
                    .collect();
                let metrics = RouteMetrics {
                    route,
                    clients: self.clients.len(),
                    requests,
                    in_flight: self.in_flight.get_or_create_owned(&labels),
                    duration: self.duration.get_or_create_owned(&labels),
                    overhead: self.overhead.get_or_create_owned(&labels),
                };
                (route, Arc::new(metrics))
            })
            .collect();
        let keys = key_hints
            .iter()
            .map(|hint| self.key(&provider, hint))
            .collect();
        let exhaustion = |outcome| {
            self.exhaustions.get_or_create_owned(&ExhaustionLabels {
                provider: provider.clone(),
                outcome,
            })
        };
        let (exhausted_rate_limited, exhausted_auth_failed, failover_attempts) = if pool_paid {
            (
                exhaustion("rate_limited"),
                exhaustion("auth_failed"),
                self.failover_attempts.get_or_create_owned(&ProviderLabels {
                    provider: provider.clone(),
                }),
            )
        } else {
            // A provider without a pool never exhausts one: no series.
            (Counter::default(), Counter::default(), attempts_histogram())
        };
        ProviderMetrics {
            byok_attempts: self.attempt_counters(&provider, BYOK_KEY),
            name: provider,
            routes,
            keys,
            exhausted_rate_limited,
            exhausted_auth_failed,
            failover_attempts,
            attempts: self.attempts.clone(),
            tokens: self.tokens.clone(),
            models: RwLock::new(HashMap::new()),
        }
    }

    fn attempt_counters(&self, provider: &str, key: &str) -> AttemptCounters {
        let counter = |status: String| {
            self.attempts.get_or_create_owned(&AttemptLabels {
                provider: provider.to_string(),
                key: key.to_string(),
                status,
            })
        };
        AttemptCounters {
            key: key.to_string(),
            common: COMMON_STATUSES.map(|status| counter(status.to_string())),
            transport_error: counter("transport_error".to_string()),
        }
    }

    fn key(&self, provider: &str, hint: &str) -> KeyMetrics {
        let key_labels = KeyLabels {
            provider: provider.to_string(),
            key: hint.to_string(),
        };
        KeyMetrics {
            attempts: self.attempt_counters(provider, hint),
            transitions: Transition::ALL.map(|transition| {
                self.transitions.get_or_create_owned(&TransitionLabels {
                    provider: provider.to_string(),
                    key: hint.to_string(),
                    reason: transition.as_str(),
                })
            }),
            state: KEY_STATES.map(|(_, state)| {
                self.key_state.get_or_create_owned(&KeyStateLabels {
                    provider: provider.to_string(),
                    key: hint.to_string(),
                    state,
                })
            }),
            cooldown_remaining: self.cooldown_remaining.get_or_create_owned(&key_labels),
        }
    }

    /// One call of an injected MCP tool (`tool`: its own name).
    pub fn mcp_tool_call(&self, server: &str, tool: &str, ok: bool) {
        self.mcp_tool_calls
            .get_or_create(&ToolLabels {
                server: server.to_string(),
                tool: tool.to_string(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Sets whether the key-state store answered the last read.
    pub fn set_key_state_store_up(&self, up: bool) {
        self.key_state_store_up.set(i64::from(up));
    }

    /// The text of `GET /metrics`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// One provider's series, held by the provider for its requests.
#[derive(Debug)]
pub struct ProviderMetrics {
    name: String,
    routes: Vec<(&'static str, Arc<RouteMetrics>)>,
    /// By the key's index in the pool.
    keys: Vec<KeyMetrics>,
    byok_attempts: AttemptCounters,
    exhausted_rate_limited: Counter,
    exhausted_auth_failed: Counter,
    failover_attempts: Histogram,
    attempts: Family<AttemptLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    models: RwLock<HashMap<String, Arc<ModelTokens>>>,
}

#[derive(Debug)]
struct AttemptCounters {
    key: String,
    common: [Counter; COMMON_STATUSES.len()],
    transport_error: Counter,
}

#[derive(Debug)]
struct KeyMetrics {
    attempts: AttemptCounters,
    transitions: [Counter; 4],
    /// Valid, cooling, disabled.
    state: [Gauge; 3],
    cooldown_remaining: FloatGauge,
}

/// One route's series, held by each of its requests.
#[derive(Debug)]
pub struct RouteMetrics {
    route: &'static str,
    clients: usize,
    /// By outcome, then client.
    requests: Vec<Counter>,
    in_flight: Gauge,
    duration: Histogram,
    overhead: Histogram,
}

impl RouteMetrics {
    pub fn route(&self) -> &'static str {
        self.route
    }

    pub(crate) fn request_ended(&self, outcome: Outcome, client: usize) {
        let client = client.min(self.clients.saturating_sub(1));
        if let Some(counter) = self.requests.get(outcome.index() * self.clients + client) {
            counter.inc();
        }
    }

    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    pub(crate) fn duration(&self) -> &Histogram {
        &self.duration
    }

    pub(crate) fn overhead(&self) -> &Histogram {
        &self.overhead
    }
}

/// A model's token counters.
#[derive(Debug)]
struct ModelTokens {
    model: String,
    input: Counter,
    output: Counter,
    cache_read: Counter,
    cache_write: Counter,
}

impl ProviderMetrics {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every route's series, in the order the provider's routes were given.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<RouteMetrics>> {
        self.routes.iter().map(|(_, metrics)| metrics)
    }

    /// How often the key at `key_index` entered cooling or disabled, or came back, since this
    /// process started: `[rate_limited, unauthorized, forbidden, re_enabled]`.
    pub fn key_transitions(&self, key_index: usize) -> Option<[u64; 4]> {
        self.keys
            .get(key_index)
            .map(|key| key.transitions.each_ref().map(Counter::get))
    }

    /// Requests that found no usable key since this process started: (every key cooling, every
    /// key disabled).
    pub fn exhaustions(&self) -> (u64, u64) {
        (
            self.exhausted_rate_limited.get(),
            self.exhausted_auth_failed.get(),
        )
    }

    /// The series of a route the provider serves (every route passed at start has them).
    pub fn route(&self, route: &str) -> Option<&Arc<RouteMetrics>> {
        self.routes
            .iter()
            .find(|(name, _)| *name == route)
            .map(|(_, metrics)| metrics)
    }

    /// One upstream attempt: with the pool's key at `key_index` (or BYOK when `None`), and the
    /// status it got (or `None` for a transport error).
    pub fn attempt(&self, key_index: Option<usize>, status: Option<u16>) {
        let counters = match key_index {
            Some(index) => match self.keys.get(index) {
                Some(key) => &key.attempts,
                None => return,
            },
            None => &self.byok_attempts,
        };
        let Some(status) = status else {
            counters.transport_error.inc();
            return;
        };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(position) => {
                counters.common[position].inc();
            }
            None => {
                self.attempts
                    .get_or_create(&AttemptLabels {
                        provider: self.name.clone(),
                        key: counters.key.clone(),
                        status: status.to_string(),
                    })
                    .inc();
            }
        }
    }

    pub fn transition(&self, key_index: usize, transition: Transition) {
        if let Some(key) = self.keys.get(key_index) {
            key.transitions[transition as usize].inc();
        }
    }

    pub fn exhausted(&self, how: Exhaustion) {
        match how {
            Exhaustion::RateLimited => self.exhausted_rate_limited.inc(),
            Exhaustion::AuthFailed => self.exhausted_auth_failed.inc(),
        };
    }

    /// Keys tried by one pool-paid request.
    pub fn failover_attempts(&self, attempts: u32) {
        self.failover_attempts.observe(f64::from(attempts));
    }

    /// Tokens one upstream answer reported for `model` (the client's).
    pub fn tokens(&self, model: &str, usage: &Usage) {
        let counters = self.model_tokens(model);
        for (counter, count) in [
            (&counters.input, usage.input),
            (&counters.output, usage.output),
            (&counters.cache_read, usage.cache_read),
            (&counters.cache_write, usage.cache_write),
        ] {
            if let Ok(count) = u64::try_from(count) {
                counter.inc_by(count);
            }
        }
        for (kind, count) in &usage.extra {
            if let Ok(count) = u64::try_from(*count) {
                self.tokens
                    .get_or_create(&TokenLabels {
                        provider: self.name.clone(),
                        model: counters.model.clone(),
                        r#type: kind.clone(),
                    })
                    .inc_by(count);
            }
        }
    }

    fn model_tokens(&self, model: &str) -> Arc<ModelTokens> {
        if let Ok(models) = self.models.read()
            && let Some(found) = models.get(model)
        {
            return found.clone();
        }
        let Ok(mut models) = self.models.write() else {
            return Arc::new(self.new_model_tokens(OTHER_MODEL));
        };
        if let Some(found) = models.get(model) {
            return found.clone();
        }
        let label = if models.len() < MAX_MODELS_PER_PROVIDER {
            model
        } else {
            OTHER_MODEL
        };
        models
            .entry(label.to_string())
            .or_insert_with(|| Arc::new(self.new_model_tokens(label)))
            .clone()
    }

    fn new_model_tokens(&self, model: &str) -> ModelTokens {
        let counter = |kind: &str| {
            self.tokens.get_or_create_owned(&TokenLabels {
                provider: self.name.clone(),
                model: model.to_string(),
                r#type: kind.to_string(),
            })
        };
        ModelTokens {
            model: model.to_string(),
            input: counter("input"),
            output: counter("output"),
            cache_read: counter("cache_read"),
            cache_write: counter("cache_write"),
        }
    }

    /// Sets the key gauges from a read of the key-state store (in pool order).
    pub fn set_key_states(&self, snapshots: &[KeySnapshot]) {
        for (key, snapshot) in self.keys.iter().zip(snapshots) {
            for (gauge, (state, _)) in key.state.iter().zip(KEY_STATES) {
                gauge.set(i64::from(snapshot.state == state));
            }
            key.cooldown_remaining.set(
                snapshot
                    .cooldown_remaining
                    .map_or(0.0, |remaining| remaining.as_secs_f64()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway_metrics() -> (Metrics, ProviderMetrics) {
        let metrics = Metrics::new(&["Unknown", "Claude Code"]);
        let provider = metrics.provider(
            "anthropic",
            &["/v1/messages", "/v1/models"],
            &["sk-a...1111".to_string(), "sk-a...2222".to_string()],
            true,
        );
        (metrics, provider)
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[test]
    fn every_series_of_a_provider_exists_from_the_start() {
        let (metrics, _provider) = gateway_metrics();
        let text = metrics.render();
        // 2 routes x 7 outcomes x 2 clients.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("aibridge_requests_total{"))
                .count(),
            28
        );
        assert_eq!(
            line(
                &text,
                "aibridge_requests_total{provider=\"anthropic\",route=\"/v1/messages\",outcome=\"rejected\",client=\"Claude Code\"}"
            )
            .rsplit(' ')
            .next(),
            Some("0")
        );
        for family in [
            "aibridge_key_state{",
            "aibridge_key_cooldown_remaining_seconds{",
            "aibridge_key_pool_transitions_total{",
            "aibridge_key_pool_exhaustions_total{",
            "aibridge_key_pool_failover_attempts_bucket{",
            "aibridge_upstream_attempts_total{",
            "aibridge_request_duration_seconds_bucket{",
            "aibridge_gateway_overhead_seconds_bucket{",
            "aibridge_requests_in_flight{",
            "aibridge_key_state_store_up 1",
        ] {
            assert!(text.contains(family), "{family} missing");
        }
        // Families whose labels cannot be known at start (a breaker's model, a model's tokens, an
        // MCP tool) have no series until their first one.
        assert!(!text.contains("aibridge_tokens_total{"));
    }

    #[test]
    fn requests_count_by_outcome_and_client() {
        let (metrics, provider) = gateway_metrics();
        let route = provider.route("/v1/messages").unwrap();
        route.request_ended(Outcome::Exhausted, 1);
        route.request_ended(Outcome::Exhausted, 1);
        route.request_ended(Outcome::Completed, 0);
        let text = metrics.render();
        assert!(text.contains("aibridge_requests_total{provider=\"anthropic\",route=\"/v1/messages\",outcome=\"exhausted\",client=\"Claude Code\"} 2\n"));
        assert!(text.contains("aibridge_requests_total{provider=\"anthropic\",route=\"/v1/messages\",outcome=\"completed\",client=\"Unknown\"} 1\n"));
        assert!(text.contains("aibridge_requests_total{provider=\"anthropic\",route=\"/v1/messages\",outcome=\"completed\",client=\"Claude Code\"} 0\n"));
    }

    #[test]
    fn attempts_count_common_and_unusual_statuses_and_byok() {
        let (metrics, provider) = gateway_metrics();
        provider.attempt(Some(0), Some(429));
        provider.attempt(Some(1), Some(200));
        provider.attempt(Some(1), Some(418));
        provider.attempt(None, Some(200));
        provider.attempt(Some(0), None);
        let text = metrics.render();
        for expected in [
            "aibridge_upstream_attempts_total{provider=\"anthropic\",key=\"sk-a...1111\",status=\"429\"} 1",
            "aibridge_upstream_attempts_total{provider=\"anthropic\",key=\"sk-a...2222\",status=\"200\"} 1",
            "aibridge_upstream_attempts_total{provider=\"anthropic\",key=\"sk-a...2222\",status=\"418\"} 1",
            "aibridge_upstream_attempts_total{provider=\"anthropic\",key=\"byok\",status=\"200\"} 1",
            "aibridge_upstream_attempts_total{provider=\"anthropic\",key=\"sk-a...1111\",status=\"transport_error\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
    }

    #[test]
    fn tokens_by_model_and_type_with_a_bound_on_models() {
        let (metrics, provider) = gateway_metrics();
        let mut usage = Usage {
            input: 10,
            output: 5,
            cache_read: 2,
            cache_write: 0,
            ..Usage::default()
        };
        usage.extra.insert("reasoning_tokens".into(), 3);
        provider.tokens("claude-x", &usage);
        provider.tokens("claude-x", &usage);
        let text = metrics.render();
        for expected in [
            "aibridge_tokens_total{provider=\"anthropic\",model=\"claude-x\",type=\"input\"} 20",
            "aibridge_tokens_total{provider=\"anthropic\",model=\"claude-x\",type=\"output\"} 10",
            "aibridge_tokens_total{provider=\"anthropic\",model=\"claude-x\",type=\"cache_read\"} 4",
            "aibridge_tokens_total{provider=\"anthropic\",model=\"claude-x\",type=\"cache_write\"} 0",
            "aibridge_tokens_total{provider=\"anthropic\",model=\"claude-x\",type=\"reasoning_tokens\"} 6",
        ] {
            assert!(text.contains(expected), "{expected} missing");
        }
        for n in 0..MAX_MODELS_PER_PROVIDER + 5 {
            provider.tokens(&format!("m{n}"), &usage);
        }
        let text = metrics.render();
        let models = text
            .lines()
            .filter(|l| l.starts_with("aibridge_tokens_total{") && l.contains("type=\"input\""))
            .count();
        assert_eq!(
            models,
            MAX_MODELS_PER_PROVIDER + 1,
            "each model, then `_other`"
        );
        assert!(text.contains(
            "aibridge_tokens_total{provider=\"anthropic\",model=\"_other\",type=\"input\"} 60"
        ));
    }

    #[test]
    fn two_registries_do_not_share_counts() {
        let (first, first_provider) = gateway_metrics();
        let (second, _) = gateway_metrics();
        first_provider.exhausted(Exhaustion::RateLimited);
        let expected = "aibridge_key_pool_exhaustions_total{provider=\"anthropic\",outcome=\"rate_limited\"} 1";
        assert!(first.render().contains(expected));
        assert!(!second.render().contains(expected));
    }
}
