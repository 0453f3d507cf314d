//! The failover loop shared by every route that calls an upstream with a pool key.
//!
//! One call sequence = one fresh walker. Each attempt sends the same bytes with the next valid
//! key; a key-specific answer (429, 401, 403) marks the key and moves on, anything else — a
//! success, a non-key error, a transport error — ends the loop and is the caller's to relay.
//! Failover happens on the status line alone, before any body byte is read, which is what keeps
//! it possible for streams up to their first event.

use std::time::Duration;

use aibridge_keypool::{Exhausted, MarkOutcome, PoolKey, ProbeOutcome, Verdict, WalkError};
use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::time::Instant;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::error::GatewayError;
use crate::intake::Payer;
use crate::provider::{Provider, ProviderKind};
use crate::record::{AttemptRecord, KeyCheck, Recording};
use crate::telemetry::metrics::{Exhaustion, Transition};
use crate::upstream::apidump::{ApiDump, DumpSubject};
use crate::upstream::client::{CallDeadline, HttpClient, UpstreamResponse};
use crate::upstream::probe::confirm_key;

/// One upstream request, ready to be sent with whichever key the pool hands out.
pub struct UpstreamCall<'a> {
    pub client: &'a HttpClient,
    pub provider: &'a Provider,
    pub method: Method,
    pub url: Box<reqwest::Url>,
    /// Forwardable client headers (see `headers::forwardable`), without a pool key.
    pub headers: HeaderMap,
    /// Replayed byte for byte on every attempt.
    pub body: Bytes,
    pub payer: Payer,
    pub deadline: CallDeadline,
    /// The request is itself the key's check (a passthrough model list without request-scoped
    /// headers): its 401/403 needs no confirmation.
    pub is_key_check: bool,
    /// Set when `AIBRIDGE_APIDUMP_DIR` is: each attempt is dumped.
    pub dump: Option<CallDump<'a>>,
}

/// What names the dump files of a call's attempts.
#[derive(Debug, Clone, Copy)]
pub struct CallDump<'a> {
    pub dump: &'a ApiDump,
    pub subject: DumpSubject<'a>,
    pub request_id: &'a str,
}

/// The upstream answered with something the caller relays (success or non-key error).
#[derive(Debug)]
pub struct Served {
    pub response: UpstreamResponse,
    /// The key that got this answer; `None` for BYOK.
    pub key: Option<PoolKey>,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When the serving attempt was sent: a stream's first event is due within
    /// `first_byte_timeout` of it.
    pub sent_at: Instant,
}

impl UpstreamCall<'_> {
    /// A trace span for one attempt: a child of the request's, exported but not logged (DEBUG).
    fn attempt_span(&self, number: u32, key: Option<&PoolKey>) -> tracing::Span {
        tracing::debug_span!(
            "upstream_attempt",
            otel.name = %format_args!("{} upstream", self.method),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = %self.method,
            aibridge.attempt = i64::from(number),
            aibridge.key = %key.map_or("byok", PoolKey::hint),
            http.response.status_code = Empty,
            aibridge.verdict = Empty,
            aibridge.key_check = Empty,
            error.type = Empty,
        )
    }

    /// One attempt (`number`, 1-based): the response head, within the call's deadline.
    async fn attempt(
        &self,
        number: u32,
        key: Option<&PoolKey>,
        span: &tracing::Span,
    ) -> Result<UpstreamResponse, GatewayError> {
        let mut headers = self.headers.clone();
        if let Some(key) = key {
            self.provider.authorize(
                &mut headers,
                key,
                &self.method,
                self.url.as_str(),
                &self.body,
            )?;
        }
        // The upstream continues the trace from this attempt (the client's own `traceparent`
        // passes as it came when traces are not exported).
        crate::telemetry::otlp::inject(span, &mut headers);
        let dump = self.dump.map(|call| {
            let dump =
                call.dump
                    .attempt(&self.provider.name, call.subject, call.request_id, number);
            dump.request(&self.method, self.url.as_str(), &headers, &self.body);
            dump
        });
        let sent = self
            .client
            .send(
                self.method.clone(),
                &self.url,
                headers,
                self.body.clone(),
                self.deadline,
            )
            .instrument(span.clone())
            .await
            .map_err(|e| GatewayError::from_transport(&e));
        match (sent, dump) {
            (Ok(response), Some(dump)) => Ok(dump.response(response)),
            (Err(error), Some(dump)) => {
                dump.transport_error(&error.to_string());
                Err(error)
            }
            (sent, None) => sent,
        }
    }

    /// Sends the call, failing over between pool keys when the payer is the pool. Each attempt
    /// is recorded as it ends; a call that fails as a whole ends the record too.
    pub async fn send(&self, recording: &mut Recording) -> Result<Served, GatewayError> {
        let result = match self.payer {
            Payer::Byok => self.send_once(recording).await,
            Payer::Pool => self.send_with_failover(recording).await,
        };
        // What is relayed from Bedrock, in the shape of an Anthropic upstream's answer.
        let result = match result {
            Ok(served) if self.provider.kind == ProviderKind::Bedrock => Ok(Served {
                response: super::bedrock::adapt(served.response).await,
                ..served
            }),
            other => other,
        };
        if let Err(error) = &result {
            recording.failed(error);
        }
        result
    }

    async fn send_once(&self, recording: &mut Recording) -> Result<Served, GatewayError> {
        let started = Instant::now();
        let span = self.attempt_span(1, None);
        let result = self.attempt(1, None, &span).await;
        let mut attempt = AttemptRecord::sent(1, None, started.elapsed());
        let outcome = match result {
            Ok(response) => {
                attempt.status = Some(response.status().as_u16());
                Ok(Served {
                    response,
                    key: None,
                    attempts: 1,
                    sent_at: started,
                })
            }
            Err(error) => {
                attempt.transport_error = Some(error.to_string());
                Err(error)
            }
        };
        attempt_ended(recording, &span, &attempt);
        outcome
    }

    async fn send_with_failover(&self, recording: &mut Recording) -> Result<Served, GatewayError> {
        let provider = self.provider;
        let Some(pool) = &provider.pool else {
            return Err(GatewayError::NoPool {
                provider: provider.name.clone(),
            });
        };
        let mut walker = pool.walker();
        loop {
            let key = match walker.next().await {
                Ok(key) => key,
                Err(WalkError::Exhausted(exhausted)) => {
                    provider.metrics.exhausted(match exhausted {
                        Exhausted::RateLimited { .. } => Exhaustion::RateLimited,
                        Exhausted::AllDisabled => Exhaustion::AuthFailed,
                    });
                    tracing::warn!(
                        provider = %provider.name,
                        attempts = walker.attempts(),
                        error = %exhausted,
                        "key pool exhausted"
                    );
                    return Err(exhausted.into());
                }
                Err(WalkError::Store(e)) => return Err(e.into()),
            };
            let started = Instant::now();
            let span = self.attempt_span(walker.attempts(), Some(&key));
            let result = self.attempt(walker.attempts(), Some(&key), &span).await;
            let mut attempt = AttemptRecord::sent(walker.attempts(), Some(&key), started.elapsed());
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    // Not the key's fault: a connection problem would hit every key alike.
                    attempt.transport_error = Some(error.to_string());
                    attempt_ended(recording, &span, &attempt);
                    return Err(error);
                }
            };
            let status = response.status();
            attempt.status = Some(status.as_u16());
            let served = |response| Served {
                response,
                key: Some(key.clone()),
                attempts: walker.attempts(),
                sent_at: started,
            };
            if status.is_success() {
                pool.note_answer(&key, status, true);
                attempt_ended(recording, &span, &attempt);
                return Ok(served(response));
            }
            let judged = provider.judge(pool, status, response.headers());
            let mut verdict = judged.verdict;
            if judged.named {
                attempt.key_check = Some(KeyCheck::Named);
            } else if matches!(verdict, Verdict::Rejected { .. }) {
                let checking = Instant::now();
                let check = self.check_key(&key).await;
                // The key's check is a wait for the upstream too, not the gateway's own time.
                recording.waited(checking.elapsed());
                attempt.key_check = Some(check);
                if check == KeyCheck::Accepted {
                    // The provider takes the key: this request was at fault (a model its
                    // project may not use, a scope it asked for). Nothing fails over.
                    tracing::info!(
                        provider = %provider.name,
                        key = %key.hint(),
                        status = status.as_u16(),
                        "a 401/403 was the request's, not the key's: relayed, key kept"
                    );
                    verdict = Verdict::NotKeySpecific;
                }
            }
            let transitioned = match pool.apply(&key, verdict, status).await {
                Ok(transitioned) => transitioned,
                Err(e) => {
                    attempt_ended(recording, &span, &attempt);
                    return Err(e.into());
                }
            };
            let outcome = MarkOutcome {
                verdict,
                transitioned,
            };
            if outcome.transitioned
                && let Some(transition) = Transition::entering(outcome.verdict)
            {
                provider.metrics.transition(key.index, transition);
            }
            let fails_over = outcome.verdict.is_failover();
            pool.note_answer(&key, status, !fails_over);
            if !fails_over {
                attempt_ended(recording, &span, &attempt);
                return Ok(served(response));
            }
            log_failover(
                &provider.name,
                &key,
                status.as_u16(),
                outcome.verdict,
                outcome.transitioned,
            );
            attempt.verdict = Some(outcome.verdict);
            attempt_ended(recording, &span, &attempt);
            discard(response).await;
        }
    }
}

impl UpstreamCall<'_> {
    /// After a 401/403: is it the key? A request that is itself the key's check says so by its
    /// answer; otherwise the key's own model list is asked, once per key however many requests
    /// wait for it, within [`KEY_CHECK_TIMEOUT`].
    async fn check_key(&self, key: &PoolKey) -> KeyCheck {
        if self.is_key_check {
            return KeyCheck::Implied;
        }
        let provider = self.provider;
        let client = self.client.general().clone();
        let outcome = provider
            .key_checks
            .run(key.index, || {
                confirm_key(client, provider, key, KEY_CHECK_TIMEOUT)
            })
            .await;
        match outcome {
            ProbeOutcome::Healthy => KeyCheck::Accepted,
            ProbeOutcome::StillRejected => KeyCheck::Rejected,
            ProbeOutcome::Inconclusive => KeyCheck::Inconclusive,
        }
    }
}

/// An attempt has ended: on the record, in the metrics, and on its trace span.
fn attempt_ended(recording: &mut Recording, span: &tracing::Span, attempt: &AttemptRecord) {
    if let Some(status) = attempt.status {
        // As i64: tracing-opentelemetry exports unsigned integers as text.
        span.record("http.response.status_code", i64::from(status));
    }
    if let Some(verdict) = attempt.verdict {
        span.record(
            "aibridge.verdict",
            match verdict {
                Verdict::RateLimited { .. } => "rate_limited",
                Verdict::Rejected { reason } => reason.as_str(),
                Verdict::NotKeySpecific => "relayed",
            },
        );
    }
    if let Some(check) = attempt.key_check {
        span.record("aibridge.key_check", check.as_str());
    }
    if attempt.transport_error.is_some() {
        span.record("error.type", "transport_error");
        span.record("otel.status_code", "error");
    }
    recording.attempt(attempt);
}

/// How long a 401/403 waits for the key's check; no answer by then counts as the key's fault.
const KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

fn log_failover(provider: &str, key: &PoolKey, status: u16, verdict: Verdict, transitioned: bool) {
    let hint = key.hint();
    match verdict {
        Verdict::RateLimited { cooldown, source } if transitioned => tracing::info!(
            provider,
            key = %hint,
            status,
            cooldown_secs = cooldown.as_secs_f64(),
            cooldown_source = ?source,
            "key rate-limited: cooling down, failing over to the next key"
        ),
        Verdict::Rejected { reason } if transitioned => tracing::warn!(
            provider,
            key = %hint,
            status,
            reason = ?reason,
            "key rejected by the provider: disabled until a probe or an operator re-enables it"
        ),
        _ => {
            tracing::debug!(provider, key = %hint, status, "key already out of rotation, failing over")
        }
    }
}

/// Reads a little of a discarded error body so the connection can be reused, without letting a
/// slow or huge body hold up the next attempt.
async fn discard(mut response: UpstreamResponse) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut read = 0usize;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > 64 * 1024 {
                break;
            }
        }
    })
    .await;
}
