//! Background re-validation of disabled keys: a key taken out of rotation by a 401/403 is tried
//! again with a cheap authenticated call (the provider's model list) on a back-off schedule and
//! comes back by itself once it works.

use std::sync::Arc;
use std::time::Duration;

use aibridge_keypool::{PoolKey, ProbeOutcome};
use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::provider::{Provider, ProviderKind};
use crate::telemetry::metrics::Transition;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

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
    provider.attach_key(&mut headers, key);
    if provider.kind == ProviderKind::Anthropic {
        headers.insert(
            "anthropic-version",
            http::HeaderValue::from_static("2023-06-01"),
        );
    }
    let url = format!("{}{}", provider.base_url, provider.kind.probe_path());
    Box::pin(async move {
        match client
            .get(url)
            .headers(headers)
            .timeout(timeout)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => ProbeOutcome::Healthy,
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => {
                ProbeOutcome::StillRejected
            }
            Ok(_) | Err(_) => ProbeOutcome::Inconclusive,
        }
    })
}
