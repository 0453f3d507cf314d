//! Circuit breakers, one per (provider, route, model), judged by the status the client finally
//! got: a run of `failure_threshold` answers of 429 (the pool exhausted), 503, 504 or 529 opens
//! the breaker, and for `open_for` its requests are refused with 503 before any upstream call.
//! Then `half_open_max_requests` requests are let through; as many successes close it, one
//! failure opens it again. Attempts that failed over are not answers, so they never count; a
//! stream that failed after its first event answered 200, so it does not count either.
//!
//! Off unless `[circuit_breaker]` is configured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aibridge_keypool::{Clock, Timestamp};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::telemetry::metrics::{BreakerLabels, MAX_MODELS_PER_PROVIDER, Metrics, OTHER_MODEL};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses requests before letting a few through.
    pub open_for: Duration,
    /// Requests let through at once while half-open; as many successes close the breaker.
    pub half_open_max_requests: u32,
}

/// Whether a status the client got counts against the upstream.
pub fn is_failure(status: u16) -> bool {
    matches!(status, 429 | 503 | 504 | 529)
}

/// A request refused by an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When to come back: until the breaker half-opens (its `open_for` while half-open and
    /// full).
    pub retry_after: Duration,
}

/// Every breaker of a gateway, created as (provider, route, model) first occur.
#[derive(Debug)]
pub struct CircuitBreakers {
    settings: BreakerSettings,
    clock: Arc<dyn Clock>,
    state_gauges: prometheus_client::metrics::family::Family<BreakerLabels, FloatGauge>,
    rejection_counters: prometheus_client::metrics::family::Family<BreakerLabels, Counter>,
    breakers: Mutex<ByProvider>,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// provider → route → model.
type ByProvider = HashMap<String, HashMap<&'static str, HashMap<String, Arc<Breaker>>>>;

impl CircuitBreakers {
    pub fn new(settings: BreakerSettings, clock: Arc<dyn Clock>, metrics: &Metrics) -> Self {
        Self {
            settings,
            clock,
            state_gauges: metrics.breaker_state.clone(),
            rejection_counters: metrics.breaker_rejections.clone(),
            breakers: Mutex::new(HashMap::new()),
        }
    }

    /// Lets a request through (the permit reports its answer) or refuses it.
    pub fn admit(
        &self,
        provider: &str,
        route: &'static str,
        model: &str,
    ) -> Result<Permit, Refused> {
        self.breaker(provider, route, model).admit()
    }

    /// Every breaker as it stands now, by provider, route and model.
    pub fn states(&self) -> Vec<BreakerState> {
        let now = self.clock.now();
        let all = self
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<BreakerState> = all
            .iter()
            .flat_map(|(provider, routes)| {
                routes.iter().flat_map(move |(route, models)| {
                    models.iter().map(move |(model, breaker)| {
                        let mode = breaker.lock().mode;
                        let (state, failures, half_opens_in) = match mode {
                            Mode::Closed { failures } => ("closed", failures, None),
                            Mode::Open { until } => {
                                ("open", 0, Some(until.saturating_duration_since(now)))
                            }
                            Mode::HalfOpen { .. } => ("half-open", 0, None),
                        };
                        BreakerState {
                            provider: provider.clone(),
                            route,
                            model: model.clone(),
                            state,
                            failures,
                            half_opens_in,
                        }
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.provider, a.route, &a.model).cmp(&(&b.provider, b.route, &b.model)));
        out
    }

    fn breaker(&self, provider: &str, route: &'static str, model: &str) -> Arc<Breaker> {
        let mut all = self
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let routes = all.entry(provider.to_string()).or_default();
        let models_seen: usize = routes.values().map(HashMap::len).sum();
        let models = routes.entry(route).or_default();
        if let Some(found) = models.get(model) {
            return found.clone();
        }
        // Models are the client's to name: past the bound, new ones share one breaker.
        let model = if models_seen < MAX_MODELS_PER_PROVIDER {
            model
        } else {
            OTHER_MODEL
        };
        models
            .entry(model.to_string())
            .or_insert_with(|| {
                let labels = BreakerLabels {
                    provider: provider.to_string(),
                    route,
                    model: model.to_string(),
                };
                Arc::new(Breaker {
                    name: format!("{provider}:{route}:{model}"),
                    settings: self.settings,
                    clock: self.clock.clone(),
                    state_gauge: self.state_gauges.get_or_create_owned(&labels),
                    rejections: self.rejection_counters.get_or_create_owned(&labels),
                    state: Mutex::new(State {
                        mode: Mode::Closed { failures: 0 },
                        generation: 0,
                    }),
                })
            })
            .clone()
    }
}

/// One breaker as [`CircuitBreakers::states`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerState {
    pub provider: String,
    pub route: &'static str,
    pub model: String,
    /// `closed`, `open` or `half-open`.
    pub state: &'static str,
    /// Consecutive failures counted while closed.
    pub failures: u32,
    /// While open: the time until it half-opens.
    pub half_opens_in: Option<Duration>,
}

#[derive(Debug)]
pub struct Breaker {
    name: String,
    settings: BreakerSettings,
    clock: Arc<dyn Clock>,
    state_gauge: FloatGauge,
    rejections: Counter,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Bumped on every change of mode: a permit from an earlier mode reports nothing.
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed { failures: u32 },
    Open { until: Timestamp },
    HalfOpen { admitted: u32, succeeded: u32 },
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(self: Arc<Self>) -> Result<Permit, Refused> {
        let now = self.clock.now();
        let mut state = self.lock();
        let refused = match state.mode {
            Mode::Closed { .. } => None,
            Mode::Open { until } if now >= until => {
                self.change(
                    &mut state,
                    Mode::HalfOpen {
                        admitted: 1,
                        succeeded: 0,
                    },
                );
                None
            }
            Mode::Open { until } => Some(until.saturating_duration_since(now)),
            Mode::HalfOpen {
                admitted,
                succeeded,
            } if admitted < self.settings.half_open_max_requests => {
                state.mode = Mode::HalfOpen {
                    admitted: admitted + 1,
                    succeeded,
                };
                None
            }
            Mode::HalfOpen { .. } => Some(self.settings.open_for),
        };
        if let Some(retry_after) = refused {
            drop(state);
            self.rejections.inc();
            return Err(Refused { retry_after });
        }
        let generation = state.generation;
        drop(state);
        Ok(Permit {
            breaker: self,
            generation,
            reported: false,
        })
    }

    fn change(&self, state: &mut State, mode: Mode) {
        state.mode = mode;
        state.generation += 1;
        let (gauge, word) = match mode {
            Mode::Closed { .. } => (0.0, "closed"),
            Mode::HalfOpen { .. } => (0.5, "half-open"),
            Mode::Open { .. } => (1.0, "open"),
        };
        self.state_gauge.set(gauge);
        match mode {
            Mode::Open { .. } => tracing::warn!(
                breaker = %self.name,
                open_for_secs = self.settings.open_for.as_secs_f64(),
                "circuit breaker open: requests are refused with 503 until it half-opens"
            ),
            _ => tracing::info!(breaker = %self.name, state = word, "circuit breaker {word}"),
        }
    }

    fn report(&self, generation: u64, failed: bool) {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let open = Mode::Open {
            until: now.saturating_add(self.settings.open_for),
        };
        match (state.mode, failed) {
            (Mode::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.settings.failure_threshold {
                    self.change(&mut state, open);
                } else {
                    state.mode = Mode::Closed { failures };
                }
            }
            (Mode::Closed { .. }, false) => state.mode = Mode::Closed { failures: 0 },
            (Mode::HalfOpen { .. }, true) => self.change(&mut state, open),
            (
                Mode::HalfOpen {
                    admitted,
                    succeeded,
                },
                false,
            ) => {
                let succeeded = succeeded + 1;
                if succeeded >= self.settings.half_open_max_requests {
                    self.change(&mut state, Mode::Closed { failures: 0 });
                } else {
                    state.mode = Mode::HalfOpen {
                        admitted: admitted.saturating_sub(1),
                        succeeded,
                    };
                }
            }
            (Mode::Open { .. }, _) => {}
        }
    }

    /// A permit given back without an answer (the client left first): its half-open slot is
    /// free again, nothing is counted.
    fn release(&self, generation: u64) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        if let Mode::HalfOpen {
            admitted,
            succeeded,
        } = state.mode
        {
            state.mode = Mode::HalfOpen {
                admitted: admitted.saturating_sub(1),
                succeeded,
            };
        }
    }
}

/// A request let through by its breaker; it reports the status the client got, once.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    reported: bool,
}

impl Permit {
    /// The status the client got (a stream's is its head's: 200).
    pub fn answered(&mut self, status: u16) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        self.breaker.report(self.generation, is_failure(status));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.release(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aibridge_keypool::ManualClock;

    const SETTINGS: BreakerSettings = BreakerSettings {
        failure_threshold: 3,
        open_for: Duration::from_secs(30),
        half_open_max_requests: 2,
    };

    fn breakers() -> (CircuitBreakers, Arc<ManualClock>, Metrics) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_micros(1_000_000_000)));
        let metrics = Metrics::new(&["Unknown"]);
        let breakers = CircuitBreakers::new(SETTINGS, clock.clone(), &metrics);
        (breakers, clock, metrics)
    }

    fn answer(breakers: &CircuitBreakers, status: u16) {
        breakers
            .admit("anthropic", "/v1/messages", "m")
            .unwrap()
            .answered(status);
    }

    fn admit(breakers: &CircuitBreakers) -> Result<Permit, Refused> {
        breakers.admit("anthropic", "/v1/messages", "m")
    }

    #[test]
    fn states_read_every_breaker() {
        let (breakers, clock, _) = breakers();
        assert!(breakers.states().is_empty());
        answer(&breakers, 429);
        breakers
            .admit("anthropic", "/v1/messages", "other")
            .unwrap()
            .answered(200);
        let states = breakers.states();
        assert_eq!(
            states
                .iter()
                .map(|b| (b.model.as_str(), b.state, b.failures))
                .collect::<Vec<_>>(),
            [("m", "closed", 1), ("other", "closed", 0)]
        );
        answer(&breakers, 503);
        answer(&breakers, 504);
        clock.advance(Duration::from_secs(10));
        let open = &breakers.states()[0];
        assert_eq!(open.state, "open");
        assert_eq!(open.half_opens_in, Some(Duration::from_secs(20)));
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let (breakers, _, _) = breakers();
        answer(&breakers, 429);
        answer(&breakers, 503);
        answer(&breakers, 200);
        answer(&breakers, 504);
        answer(&breakers, 529);
        assert!(admit(&breakers).is_ok(), "two failures after a success");
        answer(&breakers, 429);
        let refused = admit(&breakers).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(30));
    }

    #[test]
    fn other_statuses_are_not_failures() {
        let (breakers, _, _) = breakers();
        for status in [400, 401, 404, 500, 502, 200] {
            answer(&breakers, status);
        }
        for status in [400, 500, 502] {
            for _ in 0..5 {
                answer(&breakers, status);
            }
        }
        assert!(admit(&breakers).is_ok());
    }

    #[test]
    fn full_cycle_open_half_open_closed_and_reopened() {
        let (breakers, clock, metrics) = breakers();
        for _ in 0..3 {
            answer(&breakers, 503);
        }
        let gauge = "aibridge_circuit_breaker_state{provider=\"anthropic\",route=\"/v1/messages\",model=\"m\"}";
        assert!(metrics.render().contains(&format!("{gauge} 1")));
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            admit(&breakers).unwrap_err().retry_after,
            Duration::from_secs(20),
            "retry after the time left until half-open"
        );
        clock.advance(Duration::from_secs(20));
        // Half-open: two at once, the third refused.
        let mut first = admit(&breakers).unwrap();
        let mut second = admit(&breakers).unwrap();
        assert!(metrics.render().contains(&format!("{gauge} 0.5")));
        assert!(admit(&breakers).is_err());
        first.answered(200);
        second.answered(200);
        assert!(metrics.render().contains(&format!("{gauge} 0")));
        assert!(admit(&breakers).is_ok(), "closed again");
        for _ in 0..3 {
            answer(&breakers, 529);
        }
        clock.advance(Duration::from_secs(30));
        let mut probe = admit(&breakers).unwrap();
        probe.answered(504);
        assert!(
            admit(&breakers).is_err(),
            "a half-open failure opens it again"
        );
        let rejections = "aibridge_circuit_breaker_rejections_total{provider=\"anthropic\",route=\"/v1/messages\",model=\"m\"} 3";
        assert!(
            metrics.render().contains(rejections),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn a_permit_dropped_without_an_answer_frees_its_half_open_slot() {
        let (breakers, clock, _) = breakers();
        for _ in 0..3 {
            answer(&breakers, 429);
        }
        clock.advance(Duration::from_secs(30));
        let first = admit(&breakers).unwrap();
        let _second = admit(&breakers).unwrap();
        assert!(admit(&breakers).is_err());
        drop(first);
        assert!(admit(&breakers).is_ok());
    }

    #[test]
    fn answers_from_before_a_change_count_for_nothing() {
        let (breakers, clock, _) = breakers();
        let mut late = admit(&breakers).unwrap();
        for _ in 0..3 {
            answer(&breakers, 429);
        }
        clock.advance(Duration::from_secs(30));
        let mut probe = admit(&breakers).unwrap();
        late.answered(503);
        probe.answered(200);
        let mut second = admit(&breakers).unwrap();
        second.answered(200);
        assert!(admit(&breakers).is_ok());
    }

    #[test]
    fn breakers_are_per_provider_route_and_model() {
        let (breakers, _, _) = breakers();
        for _ in 0..3 {
            answer(&breakers, 429);
        }
        assert!(breakers.admit("anthropic", "/v1/messages", "other").is_ok());
        assert!(breakers.admit("openai", "/v1/messages", "m").is_ok());
        assert!(breakers.admit("anthropic", "/v1/models", "m").is_ok());
    }
}
