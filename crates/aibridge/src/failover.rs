//! The failover loop shared by every route that calls an upstream with a pool key.
//!
//! One call sequence = one fresh walker. Each attempt sends the same bytes with the next valid
//! key; a key-specific answer (429, 401, 403) marks the key and moves on, anything else — a
//! success, a non-key error, a transport error — ends the loop and is the caller's to relay.
//! Failover happens on the status line alone, before any body byte is read, which is what keeps
//! it possible for streams up to their first event.

use std::time::{Duration, Instant};

use aibridge_keypool::{PoolKey, Verdict, WalkError};
use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::auth::Payer;
use crate::error::{GatewayError, describe_transport_error};
use crate::headers::attach_key;
use crate::provider::Provider;

/// One upstream request, ready to be sent with whichever key the pool hands out.
pub struct UpstreamCall<'a> {
    pub client: &'a reqwest::Client,
    pub provider: &'a Provider,
    pub method: Method,
    pub url: String,
    /// Forwardable client headers (see `headers::forwardable`), without a pool key.
    pub headers: HeaderMap,
    /// Replayed byte for byte on every attempt.
    pub body: Bytes,
    pub payer: Payer,
    /// Whole-request limit; `None` for streams, which only have the client's read timeout.
    pub timeout: Option<Duration>,
}

/// What happened on one attempt, for logs and the request record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// 1-based.
    pub number: u32,
    /// Masked hint of the pool key; `None` for BYOK.
    pub key_hint: Option<String>,
    pub status: Option<u16>,
    /// Set when the key was taken out of rotation for this answer.
    pub verdict: Option<Verdict>,
    pub transport_error: Option<String>,
    pub duration: Duration,
}

/// The upstream answered with something the caller relays (success or non-key error).
#[derive(Debug)]
pub struct Served {
    pub response: reqwest::Response,
    /// The key that got this answer; `None` for BYOK.
    pub key: Option<PoolKey>,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug)]
pub struct Failed {
    pub error: GatewayError,
    pub attempts: Vec<AttemptRecord>,
}

impl UpstreamCall<'_> {
    fn request(&self, key: Option<&PoolKey>) -> reqwest::RequestBuilder {
        let mut headers = self.headers.clone();
        if let Some(key) = key {
            attach_key(&mut headers, self.provider.kind, &key.secret);
        }
        let mut request = self
            .client
            .request(self.method.clone(), &self.url)
            .headers(headers)
            .body(self.body.clone());
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        request
    }

    /// Sends the call, failing over between pool keys when the payer is the pool.
    pub async fn send(&self) -> Result<Served, Failed> {
        let served = match self.payer {
            Payer::Byok => self.send_once().await,
            Payer::Pool => self.send_with_failover().await,
        }?;
        tracing::info!(
            status = served.response.status().as_u16(),
            attempts = served.attempts.len(),
            key = served
                .key
                .as_ref()
                .map(PoolKey::hint)
                .unwrap_or_else(|| "byok".into()),
            "upstream answered"
        );
        Ok(served)
    }

    async fn send_once(&self) -> Result<Served, Failed> {
        let started = Instant::now();
        let result = self.request(None).send().await;
        let mut record = AttemptRecord {
            number: 1,
            key_hint: None,
            status: None,
            verdict: None,
            transport_error: None,
            duration: started.elapsed(),
        };
        match result {
            Ok(response) => {
                record.status = Some(response.status().as_u16());
                Ok(Served {
                    response,
                    key: None,
                    attempts: vec![record],
                })
            }
            Err(error) => {
                let error = transport_failure(&error);
                record.transport_error = Some(error.to_string());
                Err(Failed {
                    error,
                    attempts: vec![record],
                })
            }
        }
    }

    async fn send_with_failover(&self) -> Result<Served, Failed> {
        let provider = self.provider;
        let Some(pool) = &provider.pool else {
            return Err(Failed {
                error: GatewayError::NoPool {
                    provider: provider.name.clone(),
                },
                attempts: vec![],
            });
        };
        let mut walker = pool.walker();
        let mut attempts = Vec::new();
        loop {
            let key = match walker.next().await {
                Ok(key) => key,
                Err(WalkError::Exhausted(exhausted)) => {
                    tracing::warn!(
                        provider = %provider.name,
                        attempts = attempts.len(),
                        error = %exhausted,
                        "key pool exhausted"
                    );
                    return Err(Failed {
                        error: exhausted.into(),
                        attempts,
                    });
                }
                Err(WalkError::Store(e)) => {
                    return Err(Failed {
                        error: e.into(),
                        attempts,
                    });
                }
            };
            let started = Instant::now();
            let result = self.request(Some(&key)).send().await;
            let mut record = AttemptRecord {
                number: walker.attempts(),
                key_hint: Some(key.hint()),
                status: None,
                verdict: None,
                transport_error: None,
                duration: started.elapsed(),
            };
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    // Not the key's fault: a connection problem would hit every key alike.
                    let error = transport_failure(&error);
                    record.transport_error = Some(error.to_string());
                    attempts.push(record);
                    return Err(Failed { error, attempts });
                }
            };
            let status = response.status();
            record.status = Some(status.as_u16());
            if status.is_success() {
                attempts.push(record);
                return Ok(Served {
                    response,
                    key: Some(key),
                    attempts,
                });
            }
            let outcome = match pool.mark(&key, status, response.headers()).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    attempts.push(record);
                    return Err(Failed {
                        error: e.into(),
                        attempts,
                    });
                }
            };
            if !outcome.verdict.is_failover() {
                attempts.push(record);
                return Ok(Served {
                    response,
                    key: Some(key),
                    attempts,
                });
            }
            log_failover(
                &provider.name,
                &key,
                status.as_u16(),
                outcome.verdict,
                outcome.transitioned,
            );
            record.verdict = Some(outcome.verdict);
            attempts.push(record);
            discard(response).await;
        }
    }
}

fn transport_failure(error: &reqwest::Error) -> GatewayError {
    if error.is_timeout() {
        GatewayError::UpstreamTimeout
    } else {
        GatewayError::UpstreamUnreachable(describe_transport_error(error))
    }
}

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
async fn discard(mut response: reqwest::Response) {
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
