//! Passthrough routes: allow-listed provider endpoints (model lists, token counting, stored
//! responses) reverse-proxied with the pool's key, failing over like the bridged routes. The body
//! is read once and replayed byte for byte on each attempt; the answer streams back as it comes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method};

use aibridge_keypool::PoolKey;
use aibridge_store::RequestKind;

use crate::bridge::{Incoming, Intake, NewRequest, begin_recording, in_request_span, intake};
use crate::error::GatewayError;
use crate::failover::{Failed, Served, UpstreamCall};
use crate::provider::Provider;
use crate::recorder::Ending;
use crate::server::AppState;

pub async fn handle(
    state: &Arc<AppState>,
    provider: &Arc<Provider>,
    method: Method,
    upstream_path: &str,
    client_addr: Option<SocketAddr>,
    incoming: Incoming,
) -> Result<Response, GatewayError> {
    let Intake { caller, meta, body } = intake(state, provider, incoming).await?;
    let mut headers = crate::headers::forwardable(&meta.headers, caller.payer);
    append_forwarded_for(&mut headers, client_addr);
    let span = tracing::info_span!(
        "passthrough",
        request_id = %meta.request_id,
        provider = %provider.name,
        method = %method,
        path = %upstream_path,
        user = %caller.user,
        payer = ?caller.payer,
    );
    let call = UpstreamCall {
        client: &state.client,
        provider,
        method,
        url: provider.upstream_url(upstream_path, meta.query.as_deref()),
        headers,
        body,
        payer: caller.payer,
        // Some of these answers stream (a stored response replayed with ?stream=true): only the
        // client's per-read timeout applies.
        timeout: None,
    };
    let mut recording = begin_recording(state, provider, &meta, &caller, || NewRequest {
        kind: RequestKind::Passthrough,
        method: call.method.as_str(),
        route: upstream_path,
        model: None,
        streaming: false,
        client: crate::client::identify(&meta.headers, &call.body),
        prompt: None,
    })
    .await?;
    in_request_span(span, async {
        // The record ends when the answer's head is relayed; its body streams on unobserved.
        match call.send().await {
            Ok(Served {
                response,
                key,
                attempts,
            }) => {
                recording.attempts(&attempts);
                recording.end(Ending {
                    status: Some(response.status().as_u16()),
                    outcome: if response.status().is_success() {
                        "completed"
                    } else {
                        "upstream_error"
                    },
                    key_hint: key.as_ref().map(PoolKey::hint),
                    attempts: attempts.len() as u32,
                    error: None,
                });
                Ok(relay(response))
            }
            Err(Failed { error, attempts }) => {
                recording.failed(&error, &attempts);
                Err(error)
            }
        }
    })
    .await
}

/// The upstream's status, headers (minus hop-by-hop) and body, streamed as it arrives.
fn relay(response: reqwest::Response) -> Response {
    let status = response.status();
    let mut headers = response.headers().clone();
    let hop_by_hop: Vec<_> = headers
        .keys()
        .filter(|name| crate::headers::is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop_by_hop {
        headers.remove(name);
    }
    let mut out = Response::new(Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Appends the client's address to the `X-Forwarded-For` chain it brought, if any.
fn append_forwarded_for(headers: &mut HeaderMap, client: Option<SocketAddr>) {
    let Some(client) = client else { return };
    let ip = client.ip().to_string();
    let chain = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .chain(std::iter::once(ip.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, Some("127.0.0.9:5000".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
        );
        append_forwarded_for(&mut h, Some("[::1]:1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, ::1");
    }
}
