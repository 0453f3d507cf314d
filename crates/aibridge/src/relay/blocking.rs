//! Blocking answers: a success read whole and relayed, an error relayed with its status and
//! `Retry-After`, in the caller's dialect.

use std::time::Duration;

use aibridge_protocol::{Dialect, ErrorKind};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::{answer, answer_headers};
use crate::error::GatewayError;
use crate::intake::Payer;
use crate::upstream::client::UpstreamResponse;

/// Upstream error bodies are read up to this size before relaying; larger ones are cut.
const MAX_ERROR_BODY: usize = 1024 * 1024;

pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// A success read whole, relayed with its status and headers, and handed back for the record.
pub async fn relay_blocking(
    response: UpstreamResponse,
    payer: Payer,
) -> Result<(Response, Bytes), GatewayError> {
    let status = response.status();
    let headers = answer_headers(response.headers(), payer);
    let body = response
        .bytes()
        .await
        .map_err(|e| GatewayError::from_transport(&e))?;
    Ok((answer(status, headers, Body::from(body.clone())), body))
}

/// Relays a non-success upstream answer. A BYOK answer is the client's own: status, headers and
/// body exactly as they came. A pool answer keeps its status and `Retry-After` (from
/// `retry-after-ms` when that is all there is); a body already in the caller's dialect passes
/// unchanged, anything else, such as an HTML page from a proxy, is wrapped into a dialect-shaped
/// error so SDKs can parse it.
pub async fn relay_error(
    response: UpstreamResponse,
    dialect: Dialect,
    payer: Payer,
    idle: Duration,
) -> Response {
    if payer == Payer::Byok {
        return super::passthrough::relay(response, idle);
    }
    let status = response.status();
    let mut headers = answer_headers(response.headers(), payer);
    if !headers.contains_key(header::RETRY_AFTER)
        && let Some(secs) = retry_after_ms_as_secs(response.headers())
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    let body = read_capped(response, MAX_ERROR_BODY).await;
    let body = if dialect.is_error_body(&body) {
        body
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let message = if snippet.trim().is_empty() {
            format!("upstream returned HTTP {}", status.as_u16())
        } else {
            format!(
                "upstream returned HTTP {}: {}",
                status.as_u16(),
                snippet.trim()
            )
        };
        dialect.error_body(ErrorKind::for_status(status), &message)
    };
    answer(status, headers, Body::from(body))
}

/// `retry-after-ms` (OpenAI's convention) as whole seconds, rounded up.
fn retry_after_ms_as_secs(headers: &HeaderMap) -> Option<u64> {
    let ms: f64 = headers
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (ms.is_finite() && ms > 0.0).then(|| (ms / 1000.0).ceil() as u64)
}

async fn read_capped(mut response: UpstreamResponse, cap: usize) -> Bytes {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_ms_rounds_up() {
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after_ms_as_secs(&h), Some(2));
        h.insert("retry-after-ms", HeaderValue::from_static("-3"));
        assert_eq!(retry_after_ms_as_secs(&h), None);
    }
}
