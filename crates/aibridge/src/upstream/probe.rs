//! Background re-validation of disabled keys: a key taken out of rotation by a 401/403 is tried
//! again with a cheap authenticated call (the provider's model list) on a back-off schedule and
//! comes back by itself once it works.

use std::sync::Arc;
use std::time::Duration;

use aibridge_keypool::{CheckClaim, PoolKey, ProbeOutcome};
use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::provider::{Provider, ProviderKind};
use crate::telemetry::metrics::Transition;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a replica holds the right to probe a key: past the probe's own timeout, shorter
/// than any probe interval.
const PROBE_LEASE: Duration = Duration::from_secs(15);

/// Probes due keys of every provider's pool until `stop`; `initial_interval` is the shortest
/// configured probe interval.
pub async fn run(
    client: reqwest::Client,
    providers: Vec<Arc<Provider>>,
    initial_interval: Duration,
    stop: CancellationToken,
) {
    // Often enough for the shortest configured interval, at most once a second.
    let tick = (initial_interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        for provider in &providers {
            let Some(pool) = &provider.pool else { continue };
            let due = match pool.due_for_probe().await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(provider = %provider.name, error = %e, "cannot read key state for probing");
                    continue;
                }
            };
            for key in due {
                // With shared key state, one replica at a time re-validates a key.
                if !pool.claim_probe(&key, PROBE_LEASE).await {
                    continue;
                }
                let outcome = probe(&client, provider, &key).await;
                if let Err(e) = pool.record_probe(&key, outcome).await {
                    tracing::warn!(provider = %provider.name, error = %e, "cannot record probe result");
                    continue;
                }
                if outcome == ProbeOutcome::Healthy {
                    provider
                        .metrics
                        .transition(key.index, Transition::ReEnabled);
                }
                match outcome {
                    ProbeOutcome::Healthy => tracing::info!(
                        provider = %provider.name,
                        key = %key.hint(),
                        "disabled key works again: back in rotation"
                    ),
                    ProbeOutcome::StillRejected => tracing::info!(
                        provider = %provider.name,
                        key = %key.hint(),
                        "disabled key still rejected; probing again later"
                    ),
                    ProbeOutcome::Inconclusive => tracing::debug!(
                        provider = %provider.name,
                        key = %key.hint(),
                        "probe inconclusive; retrying later"
                    ),
                }
            }
        }
    }
}

async fn probe(client: &reqwest::Client, provider: &Provider, key: &PoolKey) -> ProbeOutcome {
    check_key(client.clone(), provider, key, PROBE_TIMEOUT).await
}

/// How long one replica holds the confirmation of a key's 401/403 (past the check's bound).
const CHECK_LEASE: Duration = Duration::from_secs(6);

/// How long a confirmation's result answers the same question for the other replicas.
const CHECK_RESULT_TTL: Duration = Duration::from_secs(10);

/// How often a replica waiting for another's confirmation looks for its result.
const CHECK_POLL: Duration = Duration::from_millis(50);

/// Confirms a 401/403 of `key` (see [`check_key`]) once for every replica that shares the key
/// state: the first to claim the confirmation runs it and publishes the result; the others wait
/// for that result (at most `timeout`, then check for themselves).
pub fn confirm_key(
    client: reqwest::Client,
    provider: &Provider,
    key: &PoolKey,
    timeout: Duration,
) -> futures_util::future::BoxFuture<'static, ProbeOutcome> {
    let check = check_key(client, provider, key, timeout);
    let Some(pool) = provider.pool.clone() else {
        return check;
    };
    let key = key.clone();
    Box::pin(async move {
        match pool.claim_check(&key, CHECK_LEASE).await {
            CheckClaim::Leader => {
                let outcome = check.await;
                pool.publish_check(&key, outcome, CHECK_RESULT_TTL).await;
                outcome
            }
            CheckClaim::Follower => {
                let deadline = tokio::time::Instant::now() + timeout;
                while tokio::time::Instant::now() < deadline {
                    if let Some(outcome) = pool.checked(&key).await {
                        return outcome;
                    }
                    tokio::time::sleep(CHECK_POLL).await;
                }
                check.await
            }
        }
    })
}

/// The key's cheap authenticated call (the provider's model list) with nothing of any request:
/// whether the provider takes the key itself. Used by the background probe and to confirm a
/// 401/403 before a key is disabled. The future owns what it needs, so concurrent confirmations
/// of one key can share it.
pub fn check_key(
    client: reqwest::Client,
    provider: &Provider,
    key: &PoolKey,
    timeout: Duration,
) -> futures_util::future::BoxFuture<'static, ProbeOutcome> {
    let mut headers = HeaderMap::new();
    let url = format!("{}{}", provider.base_url, provider.kind.probe_path());
    if provider
        .authorize(&mut headers, key, &http::Method::GET, &url, b"")
        .is_err()
    {
        return Box::pin(async { ProbeOutcome::Inconclusive });
    }
    if provider.kind == ProviderKind::Anthropic {
        headers.insert(
            "anthropic-version",
            http::HeaderValue::from_static("2023-06-01"),
        );
    }
    let by_name = provider.kind == ProviderKind::Bedrock;
    Box::pin(async move {
        match client
            .get(url)
            .headers(headers)
            .timeout(timeout)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => ProbeOutcome::Healthy,
            // Bedrock names a refused credential; any other 403 (not allowed to list the
            // models) means the credential itself was taken.
            Ok(response) if by_name && response.status().as_u16() == 403 => {
                match aibridge_protocol::bedrock::exception_name(response.headers())
                    .map(aibridge_protocol::bedrock::classify_exception)
                {
                    Some(aibridge_protocol::bedrock::ExceptionClass::CredentialRefused) | None => {
                        ProbeOutcome::StillRejected
                    }
                    Some(_) => ProbeOutcome::Healthy,
                }
            }
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => {
                ProbeOutcome::StillRejected
            }
            Ok(_) | Err(_) => ProbeOutcome::Inconclusive,
        }
    })
}
